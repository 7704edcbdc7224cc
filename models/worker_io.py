"""The camera worker's two hand-overs between threads: frames from the decoding thread to
the analytics (``Reader``), and lines from any thread to stdout (``Output``).

Why a reader thread: decoding is paced by the camera while the analytics take what they
take; a bounded queue between them drops the oldest frame when a live or realtime source
gets ahead (counted as ``skipped``), and a file read as fast as possible simply waits.
"""

from __future__ import annotations

import contextlib
import queue
import sys
import threading
from collections.abc import Callable
from typing import Final

import structlog

from smartpole.agent.config.camera_worker import WorkerMessage, encode
from smartpole.models.frames import VideoFrame
from smartpole.models.source import VideoSource

#: Frames waiting between the reader and the analytics; a live source beyond this drops.
QUEUE_FRAMES: Final = 2
#: What the reader hands over after the last frame of a finite source.
END: Final = "end"

log = structlog.get_logger("smartpole.worker")


class Output:
    """JSON lines on stdout, whole lines only, from any thread."""

    def __init__(self, camera: str) -> None:
        self.camera = camera
        self._lock = threading.Lock()
        self.closed = False

    def send(self, message: WorkerMessage) -> None:
        try:
            line = encode(message)
        except ValueError:  # NaN or infinity: not JSON; the supervisor could not read it
            log.error("unserialisable_line", message=repr(message)[:500])
            return
        with self._lock:
            if self.closed:
                return
            try:
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
            except (BrokenPipeError, ValueError):
                self.closed = True  # the supervisor is gone; SIGTERM or SIGPIPE follows


class Reader:
    """Decodes in a thread and hands frames over a small queue (see the module docstring).

    ``on_frame`` is called on the reader thread with each frame as it is captured, before
    it is queued (and whether or not the analytics keep up with it): the V2X snapshot,
    whose latency budget cannot wait in the queue behind the analytics.
    """

    def __init__(
        self,
        source: VideoSource,
        drop_when_behind: bool,
        on_frame: Callable[[VideoFrame], None] | None = None,
    ) -> None:
        self.source = source
        self._on_frame = on_frame
        self.frames: queue.Queue[VideoFrame | str | Exception] = queue.Queue(QUEUE_FRAMES)
        self.skipped = 0
        self._drop = drop_when_behind
        # Daemon: a read blocked in FFmpeg (a FIFO nobody writes) must not keep the process.
        self._thread = threading.Thread(target=self._run, name="reader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        item: VideoFrame | str | Exception = END
        try:
            for frame in self.source.frames():
                if self._on_frame is not None:
                    self._on_frame(frame)
                self._put(frame)
        except Exception as exc:  # noqa: BLE001 - handed to the main thread, which reports it
            item = exc
        self._put(item, final=True)

    def _put(self, item: VideoFrame | str | Exception, *, final: bool = False) -> None:
        """Hand one item over, until the source is closed (then nobody is listening).

        A frame of a paced source takes the place of the oldest waiting one when the queue
        is full; anything else (a file read flat out, the final item) waits for room.
        """
        while not self.source.closed:
            if self._drop and not final:
                try:
                    self.frames.put_nowait(item)
                    return
                except queue.Full:
                    with contextlib.suppress(queue.Empty):
                        self.frames.get_nowait()
                        self.skipped += 1
                    continue
            try:
                self.frames.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def join(self, timeout: float) -> bool:
        """Wait for the thread to end; False if it is still blocked (inside FFmpeg)."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

"""Video frames from a file or a camera stream through PyAV, kept alive through bad networks.

A worker process runs one ``VideoSource.frames()`` loop per camera. What it guarantees:

* Frames come out as ``VideoFrame`` YUV 4:2:0 planes copied from the decoder's buffers
  (stride removed), so the motion stage reads luma with no colour conversion at all. Only a
  camera sending some other pixel format pays for a whole-frame conversion, to yuv420p.
* ``pts_s`` is the stream's own clock, made monotonic for the source's whole life: a looped
  file continues where the previous pass ended, and after a reconnect the gap is the wall
  time the stream was away (a speed measured across it stays honest).
* Nothing blocks forever: PyAV's interrupt timeouts (``open_timeout_s``, ``read_timeout_s``)
  and the protocols' own socket timeouts make a stalled stream raise, and a live source
  then reconnects with exponential backoff and jitter (so a street of cameras that lost
  one switch does not reconnect in lock-step). ``close()`` from any thread ends
  ``frames()`` promptly, even during a backoff wait.
* A packet the decoder rejects, or a frame it flags corrupt, is skipped and counted
  (``stats.corrupt_skipped``); only a file that cannot be opened (an empty one included),
  has no video stream, has one no decoder here can read, or breaks off mid-way raises
  ``SourceError`` (after the frames it could deliver).
* The frames' own timestamps are the clock, not the rate the container declares: a clip
  muxed at "25 fps" whose timestamps are 0.1 s apart runs at 10 fps, and speeds, dwell
  times and the tracker's gates must see 10. When the two disagree by more than
  ``RATE_TOLERANCE`` the source says so once (``stats.warnings``, with ``stats.measured_fps``).
  Frames without a timestamp are timed at the declared rate and counted
  (``stats.untimed``); with neither, the frames cannot be timed and ``SourceError`` says so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import random
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, cast

import av
import av.container
import av.error
import av.video.codeccontext
import av.video.frame
import av.video.plane
import av.video.stream
import numpy as np
from numpy.typing import NDArray

from smartpole.models.errors import SourceError
from smartpole.models.frames import VideoFrame, usual_interval

#: URL schemes served by a network peer: these reconnect instead of failing.
LIVE_SCHEMES: Final = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "srt"})
#: Schemes read as a finite file (a bare path has none).
FILE_SCHEMES: Final = frozenset({"file"})
#: Pixel formats whose planes are used as they are; anything else is converted to yuv420p.
_YUV420: Final = frozenset({"yuv420p", "yuvj420p"})
#: FFmpeg's AVCOL_RANGE_JPEG: full-range samples.
_RANGE_FULL: Final = 2
#: When the consumer falls this far behind a realtime-paced file, pacing restarts from now
#: rather than replaying the backlog as a burst.
_REALTIME_SLACK_S: Final = 1.0
_DEFAULT_FPS: Final = 25.0
#: A live stream's timestamps may run ahead of the wall clock by this much (buffered
#: frames arriving in a burst); a bigger forward jump is a clock jump and is re-anchored.
_MAX_BURST_S: Final = 5.0
#: The frame intervals of a session's first this many frames measure its real rate.
RATE_SAMPLE_FRAMES: Final = 20
#: A declared rate further than this share from the measured one is a warning: real
#: cameras jitter by a few percent, a wrong container rate is off by 20 % or (usually) 2x.
RATE_TOLERANCE: Final = 0.15


@dataclass(slots=True)
class SourceStats:
    """Counters for health reporting; ``VideoSource.stats`` hands out a snapshot copy."""

    decoded: int = 0
    corrupt_skipped: int = 0
    reconnects: int = 0
    last_error: str | None = None
    nominal_fps: float = 0.0
    width: int = 0
    height: int = 0
    loops: int = 0
    #: The rate the frames' timestamps give (intervals of a session's first frames).
    measured_fps: float = 0.0
    #: Frames that carried no timestamp and were timed at the declared rate.
    untimed: int = 0
    #: Frames of a file timed at the declared rate because its timestamps ran backwards.
    rate_timed: int = 0
    #: Each distinct problem with the stream's timing, once, oldest first.
    warnings: tuple[str, ...] = ()

    def all_warnings(self) -> list[str]:
        """The timing warnings and, if any were skipped, the corrupt packets or frames: what
        may make counts less than they seem (analyze's ``warnings``, the health line's)."""
        out = list(self.warnings)
        if self.corrupt_skipped:
            out.append(f"{self.corrupt_skipped} corrupt packets or frames skipped")
        return out


def _scheme(url: str) -> str:
    """The URL scheme in lower case, or "" for a plain path."""
    head, sep, _ = url.partition("://")
    return head.lower() if sep else ""


def _plane(plane: av.video.plane.VideoPlane, width: int, height: int) -> NDArray[np.uint8]:
    """Copy one plane out of the decoder's buffer without its line padding."""
    buf = np.frombuffer(memoryview(plane), np.uint8)
    stride = plane.line_size
    if buf.size >= stride * height:
        return buf[: stride * height].reshape(height, stride)[:, :width].copy()
    # Some decoders leave the last line unpadded; take the rows one by one.
    out = np.empty((height, width), np.uint8)
    for row in range(height):
        out[row] = buf[row * stride : row * stride + width]
    return out


def to_video_frame(frame: av.video.frame.VideoFrame, index: int, pts_s: float) -> VideoFrame:
    """A ``VideoFrame`` from a decoded PyAV frame (yuv420p/yuvj420p planes used directly)."""
    full_range = frame.format.name == "yuvj420p" or frame.color_range == _RANGE_FULL
    if frame.format.name not in _YUV420:
        frame = frame.reformat(format="yuv420p")
        full_range = False
    w, h = frame.width, frame.height
    cw, ch = (w + 1) // 2, (h + 1) // 2
    planes = frame.planes
    return VideoFrame(
        index=index,
        pts_s=pts_s,
        y=_plane(planes[0], w, h),
        u=_plane(planes[1], cw, ch),
        v=_plane(planes[2], cw, ch),
        full_range=full_range,
    )


class _BrokenError(Exception):
    """A session ended abnormally (open failed, read failed or timed out)."""


class VideoSource:
    """Frames from a file path or a live stream URL; one instance per camera.

    ``loop`` replays a file endlessly (a stand-in for a live camera); ``realtime`` paces a
    file's frames to the wall clock by their timestamps. Live sources are paced by the
    camera and never end on their own: they reconnect until ``close()``. A bad URL scheme
    raises ``SourceError`` here; everything else is reported by ``frames()``.
    """

    def __init__(
        self,
        url: str,
        *,
        loop: bool = False,
        realtime: bool = False,
        reconnect_initial_s: float = 1.0,
        reconnect_max_s: float = 30.0,
        open_timeout_s: float = 10.0,
        read_timeout_s: float = 5.0,
    ) -> None:
        scheme = _scheme(url)
        if scheme and scheme not in LIVE_SCHEMES | FILE_SCHEMES:
            known = ", ".join(sorted(LIVE_SCHEMES | FILE_SCHEMES))
            raise SourceError(
                f"unsupported URL scheme {scheme!r} in {url!r} (use a path or {known})"
            )
        if not 0 < reconnect_initial_s <= reconnect_max_s:
            raise SourceError("reconnect delays must satisfy 0 < initial <= max")
        if open_timeout_s <= 0 or read_timeout_s <= 0:
            raise SourceError("timeouts must be positive")
        self.url = url
        self.live = scheme in LIVE_SCHEMES
        self.loop = loop and not self.live
        self.realtime = realtime and not self.live
        self._initial_s = reconnect_initial_s
        self._max_s = reconnect_max_s
        self._open_timeout_s = open_timeout_s
        self._read_timeout_s = read_timeout_s
        self._stats = SourceStats()
        self._stop = threading.Event()
        self._rng = random.Random()  # noqa: S311 - backoff jitter, not cryptography
        self._index = 0
        self._last_pts: float | None = None
        self._last_wall = 0.0
        self._pace_anchor: tuple[float, float] | None = None
        self._declared_fps: float | None = None

    @property
    def stats(self) -> SourceStats:
        """A snapshot of the counters (safe to read from another thread)."""
        return dataclasses.replace(self._stats)

    def close(self) -> None:
        """Make ``frames()`` return at its next step; safe from any thread or a signal handler."""
        self._stop.set()

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""
        return self._stop.is_set()

    def _options(self) -> dict[str, str]:
        """Demuxer/protocol options: TCP for RTSP, socket timeouts so a stall raises."""
        if not self.live:
            return {}
        timeout_us = str(int(self._read_timeout_s * 1_000_000))
        options = {"rw_timeout": timeout_us}
        if _scheme(self.url) in ("rtsp", "rtsps"):
            options.update({"rtsp_transport": "tcp", "timeout": timeout_us})
        return options

    def _open(self) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
        """Open the URL and pick its first video stream; SourceError on either failing."""
        try:
            container = av.open(
                self.url,
                options=self._options(),
                timeout=(self._open_timeout_s, self._read_timeout_s),
            )
        except (av.error.FFmpegError, OSError) as exc:
            raise SourceError(f"cannot open {self.url!r}: {exc}") from exc
        if not container.streams.video:
            container.close()
            raise SourceError(f"{self.url!r} has no video stream")
        stream = container.streams.video[0]
        # PyAV leaves the codec context out when FFmpeg has no decoder for the codec.
        context = cast("av.video.codeccontext.VideoCodecContext | None", stream.codec_context)
        if context is None:
            container.close()
            raise SourceError(
                f"{self.url!r}: no decoder here reads its video codec; re-encode it as H.264"
            )
        rate = stream.average_rate or stream.guessed_rate or context.framerate
        self._declared_fps = float(rate) if rate else None
        self._stats.nominal_fps = self._declared_fps or _DEFAULT_FPS
        return container, stream

    def _check_not_empty(self) -> None:
        """A zero-length file says so, not FFmpeg's "Invalid data found"."""
        if self.live or _scheme(self.url):
            return
        with contextlib.suppress(OSError):
            status = Path(self.url).stat()
            # Only a regular file: a FIFO or a device has no size and may still send.
            if stat.S_ISREG(status.st_mode) and status.st_size == 0:
                raise SourceError(f"{self.url!r} is empty (0 bytes)")

    def _warn(self, text: str) -> None:
        if text not in self._stats.warnings:
            self._stats.warnings = (*self._stats.warnings, text)

    def _timestamp(self, frame: av.video.frame.VideoFrame, count: int, interval: float) -> float:
        """The frame's time in the stream; the declared rate's when it carries none."""
        # PyAV's stub says float, but a raw H.264 stream's frames have no time at all.
        time_s = cast("float | None", frame.time)
        if time_s is not None:
            return time_s
        if self._declared_fps is None:
            raise SourceError(
                f"{self.url!r}: its frames carry no timestamps and it declares no frame rate, "
                "so they cannot be timed"
            )
        self._stats.untimed += 1
        self._warn(f"frames without timestamps: timed at the declared {self._declared_fps:g} fps")
        return count * interval

    def _check_rate(self, times: list[float]) -> None:
        """The rate the timestamps give, and a warning when the declared one disagrees."""
        interval = usual_interval(b - a for a, b in itertools.pairwise(times))
        if interval is None:
            return
        measured = 1.0 / interval
        self._stats.measured_fps = measured
        declared = self._declared_fps
        if declared is not None and abs(declared / measured - 1.0) > RATE_TOLERANCE:
            self._warn(
                f"declared frame rate {declared:.3g} fps disagrees with the timestamps "
                f"({measured:.3g} fps): the timestamps are the clock"
            )

    def frames(self) -> Iterator[VideoFrame]:
        """Yield frames until the file ends (never, with ``loop``, or live) or ``close()``.

        Raises SourceError for a file that cannot be opened, has no video stream, breaks
        off with a read error, or (looping) yields no frame in a whole pass. One consumer
        at a time; a second call continues the same index and timestamps.
        """
        delay = self._initial_s
        first = True
        while not self._stop.is_set():
            if not first:
                self._stats.reconnects += 1
            first = False
            delivered = 0
            try:
                for frame in self._session():
                    delivered += 1
                    yield frame
                    delay = self._initial_s
            except (SourceError, _BrokenError) as exc:
                self._stats.last_error = str(exc)
                if not self.live:
                    if isinstance(exc, SourceError):
                        raise
                    raise SourceError(str(exc)) from exc
            else:
                if not self.live:
                    if not self.loop or self._stop.is_set():
                        return
                    if delivered == 0:
                        raise SourceError(f"{self.url!r}: a whole pass gave no frame")
                    self._stats.loops += 1
                    first = True  # a replay is not a reconnect
                    continue
                self._stats.last_error = "stream ended"
            wait = delay * self._rng.uniform(0.5, 1.0)
            delay = min(delay * 2.0, self._max_s)
            if self._stop.wait(wait):
                return

    def _session(self) -> Iterator[VideoFrame]:
        """Frames of one open-to-end pass; raises _BrokenError or SourceError when it breaks."""
        self._check_not_empty()
        container, stream = self._open()
        times: list[float] = []
        try:
            interval = 1.0 / (self._stats.nominal_fps or _DEFAULT_FPS)
            base: float | None = None
            offset = 0.0
            count = 0
            last_raw: float | None = None
            by_rate = False  # this file's timestamps are out of order: count frames instead
            demux = container.demux(stream)
            while True:
                try:
                    packet = next(demux)
                except StopIteration:
                    if len(times) < RATE_SAMPLE_FRAMES and not by_rate:  # a short pass
                        self._check_rate(times)
                    return
                except av.error.FFmpegError as exc:
                    raise _BrokenError(f"{self.url!r}: read failed: {exc}") from exc
                if packet.is_corrupt:
                    self._stats.corrupt_skipped += 1
                    continue
                try:
                    decoded = packet.decode()
                except av.error.FFmpegError as exc:  # usually InvalidDataError
                    self._stats.corrupt_skipped += 1
                    self._stats.last_error = f"corrupt packet: {exc}"
                    continue
                for frame in decoded:
                    if self._stop.is_set():
                        return
                    if frame.is_corrupt:
                        self._stats.corrupt_skipped += 1
                        continue
                    raw = self._timestamp(frame, count, interval)
                    count += 1
                    if not self.live and last_raw is not None and raw <= last_raw:
                        # A file's clock does not run backwards: these are decode-order
                        # stamps (an AVI's packed B-frames), off by a frame or two each
                        # way. Re-anchoring on each would stretch time by a third.
                        if not by_rate:
                            self._stats.measured_fps = 1.0 / interval
                            self._warn(
                                "timestamps run backwards: timed at the declared "
                                f"{1.0 / interval:.3g} fps"
                            )
                        by_rate = True
                    last_raw = raw
                    if len(times) < RATE_SAMPLE_FRAMES and not self._stats.untimed:
                        times.append(raw)
                        if len(times) == RATE_SAMPLE_FRAMES and not by_rate:
                            self._check_rate(times)
                    if by_rate and self._last_pts is not None:
                        pts_s = self._last_pts + interval
                        self._stats.rate_timed += 1
                    else:
                        if base is None:
                            base = raw
                            offset = self._session_start(interval)
                        pts_s = offset + (raw - base)
                        jump = self._clock_jump(pts_s, interval)
                        if jump is not None:
                            base, offset, pts_s = raw, jump, jump
                    try:
                        out = to_video_frame(frame, self._index, pts_s)
                    except (av.error.FFmpegError, ValueError) as exc:
                        raise SourceError(f"{self.url!r}: cannot use its frames: {exc}") from exc
                    self._stats.width, self._stats.height = out.width, out.height
                    if self.realtime and not self._pace(pts_s):
                        return
                    self._index += 1
                    self._last_pts = pts_s
                    self._last_wall = time.monotonic()
                    self._stats.decoded += 1
                    yield dataclasses.replace(out, captured_s=self._last_wall)
        finally:
            container.close()

    def _clock_jump(self, pts_s: float, interval: float) -> float | None:
        """Where to re-anchor when the stream's clock jumped; None when it did not.

        Backwards (a wrap, a camera reset) always is a jump; forwards only on a live stream,
        by more than the wall time since the last frame plus a generous buffer allowance.
        """
        if self._last_pts is None:
            return None
        wall_gap = time.monotonic() - self._last_wall
        if pts_s <= self._last_pts:
            return self._last_pts + interval
        if self.live and pts_s - self._last_pts > wall_gap + _MAX_BURST_S:
            return self._last_pts + max(interval, wall_gap)
        return None

    def _session_start(self, interval: float) -> float:
        """The pts of a session's first frame: 0, or continuing after the last one."""
        if self._last_pts is None:
            return 0.0
        gap = interval
        if self.live:
            gap = max(interval, time.monotonic() - self._last_wall)
        return self._last_pts + gap

    def _pace(self, pts_s: float) -> bool:
        """Wait until ``pts_s`` is due on the wall clock; False if closed meanwhile."""
        now = time.monotonic()
        if self._pace_anchor is None:
            self._pace_anchor = (now, pts_s)
            return True
        wall0, pts0 = self._pace_anchor
        due = wall0 + (pts_s - pts0)
        if now - due > _REALTIME_SLACK_S:
            self._pace_anchor = (now, pts_s)
            return True
        return due <= now or not self._stop.wait(due - now)

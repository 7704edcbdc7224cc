"""VideoSource on the real street clip, on damaged copies of it, and on local HTTP streams.

Live behaviour (reconnect, stall timeout, backoff) is exercised with a real HTTP server on
localhost serving an MPEG-TS remux of the clip, which FFmpeg reads as a live network stream.
"""

from __future__ import annotations

import contextlib
import http.server
import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import bad_clips
from helpers.paths import SHARED_DATA
from helpers.waiting import wait_until
from smartpole.models.errors import SourceError
from smartpole.models.frames import FrameInterval, VideoFrame, usual_interval
from smartpole.models.source import VideoSource

VIDEO_DIR = SHARED_DATA / "video"
CLIP = VIDEO_DIR / "street-2lane-640x352.mp4"
CLIP_FRAMES = 905
needs_clip = pytest.mark.skipif(
    not VIDEO_DIR.is_dir(), reason=f"shared test video folder {VIDEO_DIR} is absent"
)


def remux_ts(src: Path, dst: Path) -> None:
    """Copy the clip's H.264 into MPEG-TS, a container that streams over HTTP as it is."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream = inp.streams.video[0]
        out_stream = out.add_stream_from_template(stream)
        for packet in inp.demux(stream):
            if packet.dts is None:
                continue
            packet.stream = out_stream
            out.mux(packet)


@pytest.fixture(scope="module")
def clip_ts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ts") / "clip.ts"
    remux_ts(CLIP, path)
    return path


# --- files -----------------------------------------------------------------------------


@needs_clip
def test_every_frame_arrives_with_the_decoders_own_planes() -> None:
    source = VideoSource(str(CLIP))
    wanted = {0, 1, 100, 904}
    ours: dict[int, VideoFrame] = {}
    count, last_pts = 0, -1.0
    for frame in source.frames():
        assert frame.index == count
        assert frame.pts_s > last_pts
        last_pts = frame.pts_s
        count += 1
        if frame.index in wanted:
            ours[frame.index] = frame
    assert count == CLIP_FRAMES
    stats = source.stats
    assert (stats.decoded, stats.width, stats.height) == (CLIP_FRAMES, 640, 352)
    assert stats.nominal_fps == pytest.approx(24.0, abs=0.1)
    assert ours[0].pts_s == 0.0
    assert last_pts == pytest.approx(37.65, abs=0.05)
    with av.open(str(CLIP)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in ours:
                planes = frame.to_ndarray()  # yuv420p: Y rows, then U and V rows stacked
                mine = ours[i]
                assert mine.y.flags.c_contiguous
                np.testing.assert_array_equal(mine.gray, planes[:352])
                np.testing.assert_array_equal(mine.u.reshape(-1), planes[352:440].reshape(-1))
                np.testing.assert_array_equal(mine.v.reshape(-1), planes[440:].reshape(-1))
                assert (mine.width, mine.height, mine.full_range) == (640, 352, False)


@needs_clip
def test_bgr_crop_matches_pyavs_own_conversion() -> None:
    frame = next(itertools.islice(VideoSource(str(CLIP)).frames(), 130, None))
    with av.open(str(CLIP)) as container:
        reference = next(itertools.islice(container.decode(video=0), 130, None))
    expected = reference.to_ndarray(format="bgr24").astype(int)
    for x0, y0, x1, y1 in [(0, 0, 640, 352), (101, 33, 377, 250), (300, 150, 301, 151)]:
        crop = frame.bgr_crop(x0, y0, x1, y1)
        assert crop.shape == (y1 - y0, x1 - x0, 3)
        diff = np.abs(crop.astype(int) - expected[y0:y1, x0:x1])
        assert diff.max() <= 4
        assert diff.mean() < 1.5
    with pytest.raises(ValueError, match="outside"):
        frame.bgr_crop(600, 0, 641, 10)


@needs_clip
def test_loop_replays_the_file_with_timestamps_that_keep_increasing() -> None:
    source = VideoSource(str(CLIP), loop=True)
    frames = list(itertools.islice(source.frames(), 2 * CLIP_FRAMES + 100))
    pts = np.array([f.pts_s for f in frames])
    assert (np.diff(pts) > 0).all()
    assert [f.index for f in frames] == list(range(len(frames)))
    step = np.diff(pts).max()
    assert step < 0.1  # no jump at the seams: one frame interval
    assert source.stats.loops == 2
    assert source.stats.reconnects == 0


@needs_clip
def test_realtime_paces_a_file_to_its_timestamps() -> None:
    source = VideoSource(str(CLIP), realtime=True)
    started = time.monotonic()
    frames = list(itertools.islice(source.frames(), 13))
    elapsed = time.monotonic() - started
    span = frames[-1].pts_s - frames[0].pts_s
    assert span == pytest.approx(0.5, abs=0.02)
    assert elapsed >= span * 0.95


@needs_clip
def test_close_ends_frames_promptly() -> None:
    source = VideoSource(str(CLIP), loop=True, realtime=True)
    got = 0
    for frame in source.frames():
        got += 1
        if frame.index == 3:
            source.close()
    assert got == 4
    assert source.closed


def test_a_missing_file_raises_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="cannot open"):
        next(VideoSource(str(tmp_path / "nope.mp4")).frames())


def test_a_file_that_is_no_video_raises_source_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 100)
    with pytest.raises(SourceError):
        next(VideoSource(str(path)).frames())


def test_a_file_without_a_video_stream_raises_source_error(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    with av.open(str(path), "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    with pytest.raises(SourceError, match="no video stream"):
        next(VideoSource(str(path)).frames())


@pytest.mark.parametrize("url", ["bogus://camera/1", "ftp://10.0.0.9/cam.mp4", "HTTPX://a/b"])
def test_a_wrong_url_scheme_raises_source_error(url: str) -> None:
    with pytest.raises(SourceError, match="unsupported URL scheme"):
        VideoSource(url)


def damage(data: bytes, how: str) -> bytes:
    if how == "cut in half":
        return data[: len(data) // 2]
    garbled = bytearray(data)
    mid = len(garbled) // 2
    rng = np.random.default_rng(7)
    garbled[mid : mid + 20_000] = rng.integers(0, 256, 20_000, dtype=np.uint8).tobytes()
    return bytes(garbled)


@needs_clip
@pytest.mark.parametrize("container", ["mp4", "ts"])
@pytest.mark.parametrize("how", ["cut in half", "garbled in the middle"])
def test_a_damaged_file_gives_frames_then_ends_or_raises_cleanly(
    tmp_path: Path, clip_ts: Path, container: str, how: str
) -> None:
    original = CLIP if container == "mp4" else clip_ts
    path = tmp_path / f"damaged.{container}"
    path.write_bytes(damage(original.read_bytes(), how))
    source = VideoSource(str(path))
    frames = 0
    error: SourceError | None = None
    try:
        for _ in source.frames():
            frames += 1
    except SourceError as exc:
        error = exc
    if error is not None:
        # The mp4 keeps its index at the end: cut in half, nothing is playable.
        assert (container, how, frames) == ("mp4", "cut in half", 0)
        assert str(error) == source.stats.last_error
    else:
        assert 0 < frames <= CLIP_FRAMES
        if how == "cut in half":
            assert frames < CLIP_FRAMES * 0.6
        else:
            assert frames > CLIP_FRAMES * 0.9  # the damage costs a few frames, not the rest
            assert source.stats.corrupt_skipped > 0  # ... and they are counted
    assert source.stats.decoded == frames


# --- live streams ----------------------------------------------------------------------


class _Server:
    """A local HTTP server; ``behave(n, handler)`` answers its n-th request (from 1)."""

    def __init__(self, behave: Callable[[int, http.server.BaseHTTPRequestHandler], None]):
        self.requests = 0
        self.release = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                # The source hanging up on a stalled answer is expected.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    behave(outer.requests, self)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = False  # server_close() joins the handlers
        self.thread = threading.Thread(target=self.httpd.serve_forever)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/clip.ts"

    def stop(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def serve() -> Iterator[Callable[..., _Server]]:
    servers: list[_Server] = []

    def start(behave: Callable[[int, http.server.BaseHTTPRequestHandler], None]) -> _Server:
        servers.append(_Server(behave))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@needs_clip
def test_a_live_stream_reconnects_after_a_stall_and_after_its_end(
    clip_ts: Path, serve: Callable[..., _Server]
) -> None:
    data = clip_ts.read_bytes()
    server: _Server

    def behave(n: int, handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "video/mp2t")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if n == 1:  # half the stream, then silence with the connection held open
            handler.wfile.write(data[: len(data) // 2])
            handler.wfile.flush()
            server.release.wait(60)
        else:
            handler.wfile.write(data)

    server = serve(behave)
    source = VideoSource(server.url, reconnect_initial_s=0.02, read_timeout_s=0.5)
    pts: list[float] = []
    started = time.monotonic()
    for frame in source.frames():
        pts.append(frame.pts_s)
        if source.stats.reconnects >= 2 and frame.index > CLIP_FRAMES:
            source.close()
    elapsed = time.monotonic() - started
    stats = source.stats
    assert stats.reconnects == 2  # once for the stall, once for the end of the stream
    assert server.requests == 3
    assert (np.diff(pts) > 0).all()
    assert len(pts) > CLIP_FRAMES
    assert elapsed < 20
    assert stats.last_error == "stream ended"


def test_an_unreachable_camera_is_retried_with_backoff_until_closed() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    source = VideoSource(
        f"rtsp://127.0.0.1:{port}/stream1", reconnect_initial_s=0.02, reconnect_max_s=0.1
    )
    result: list[object] = []

    def consume() -> None:
        result.extend(source.frames())

    consumer = threading.Thread(target=consume)
    consumer.start()
    try:
        wait_until(lambda: source.stats.reconnects >= 4, 20, "four reconnect attempts")
    finally:
        source.close()
        consumer.join(10)
    assert not consumer.is_alive()
    assert result == []
    assert f"127.0.0.1:{port}" in (source.stats.last_error or "")


# --- timing and codec problems (tests/helpers/bad_clips.py) ------------------------------


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad-clips")
    return {
        "slow": bad_clips.slow_clip(CLIP, folder),
        "clean": bad_clips.clean_clip(CLIP, folder),
        "untimed": bad_clips.untimed_clip(CLIP, folder),
        "undecodable": bad_clips.undecodable_clip(CLIP, folder),
        "empty": bad_clips.empty_clip(folder),
    }


def _all(source: VideoSource) -> list[VideoFrame]:
    return list(source.frames())


@needs_clip
def test_a_declared_rate_the_timestamps_contradict_is_one_warning_and_pts_is_the_clock(
    bad: dict[str, Path],
) -> None:
    source = VideoSource(str(bad["slow"]), loop=True)
    frames: list[VideoFrame] = []
    for frame in source.frames():
        frames.append(frame)
        if len(frames) == 75:  # two and a half passes: the warning is given once
            source.close()
    stats = source.stats
    assert stats.nominal_fps == pytest.approx(24.0, abs=0.1)  # what the container says
    real = 24.0 / bad_clips.SLOWDOWN
    assert stats.measured_fps == pytest.approx(real, rel=0.02)
    (warning,) = stats.warnings
    assert warning.startswith("declared frame rate 24 fps disagrees with the timestamps (10 fps)")
    steps = [b.pts_s - a.pts_s for a, b in itertools.pairwise(frames[:30])]
    assert sorted(steps)[len(steps) // 2] == pytest.approx(1 / real, rel=0.02)
    assert stats.untimed == 0


@needs_clip
def test_a_clip_whose_rate_agrees_has_no_warning(bad: dict[str, Path]) -> None:
    source = VideoSource(str(bad["clean"]))
    assert len(_all(source)) == 30
    assert source.stats.warnings == ()
    assert source.stats.measured_fps == pytest.approx(24.0, rel=0.02)


@needs_clip
def test_frames_without_timestamps_are_timed_at_the_declared_rate_and_counted(
    bad: dict[str, Path],
) -> None:
    source = VideoSource(str(bad["untimed"]))
    frames = _all(source)
    assert len(frames) == 30
    stats = source.stats
    assert stats.untimed == 30
    assert stats.warnings == ("frames without timestamps: timed at the declared 25 fps",)
    assert [f.pts_s for f in frames[:3]] == pytest.approx([0.0, 0.04, 0.08])


@needs_clip
@pytest.mark.parametrize(
    ("clip", "message"),
    [
        ("empty", r"'.*empty\.mp4' is empty \(0 bytes\)"),
        ("undecodable", "no decoder here reads its video codec"),
    ],
)
def test_an_empty_file_or_unknown_codec_raises_a_clear_source_error(
    bad: dict[str, Path], clip: str, message: str
) -> None:
    with pytest.raises(SourceError, match=message):
        next(VideoSource(str(bad[clip])).frames())


AVI = VIDEO_DIR / "arterial-overpass-320x240-60fps.avi"


@pytest.mark.skipif(not AVI.is_file(), reason=f"shared test data {AVI} is absent")
def test_decode_order_timestamps_are_replaced_by_the_declared_rate_with_one_warning() -> None:
    """The arterial AVI's frames carry decode-order stamps (1, 4, 6, 5, 7, 9, 8, ...): taken
    as they are, or re-anchored at each step back, they stretched 28 s of video to 46 s."""
    source = VideoSource(str(AVI))
    times = []
    for frame in source.frames():
        times.append(frame.pts_s)
        if len(times) == 120:
            source.close()
    steps = [b - a for a, b in itertools.pairwise(times)]
    assert min(steps) > 0
    # From the first step back on, one frame is 1/60 s; the few before it keep their own
    # stamps (off by up to three frames, an offset that never grows).
    assert steps[5:] == pytest.approx([1 / 60.0] * len(steps[5:]), rel=1e-4)
    assert times[-1] == pytest.approx(119 / 60.0, abs=3 / 60.0)
    stats = source.stats
    assert stats.measured_fps == pytest.approx(60.0, rel=1e-3)
    assert stats.rate_timed > 100
    assert stats.warnings == ("timestamps run backwards: timed at the declared 60 fps",)


@given(
    gap=st.floats(0.005, 1.0),
    count=st.integers(4, 30),
    dropped=st.integers(0, 29),
    jitter=st.floats(0.0, 0.3),
)
def test_the_usual_interval_ignores_a_dropped_frame_and_averages_jitter(
    gap: float, count: int, dropped: int, jitter: float
) -> None:
    # Stamps alternate gap*(1-jitter), gap*(1+jitter); one interval doubled by a drop.
    gaps = [gap * (1 - jitter if i % 2 else 1 + jitter) for i in range(2 * count)]
    gaps[dropped % len(gaps)] = 2 * gap
    assert usual_interval(gaps) == pytest.approx(gap, rel=0.3 / count + 1e-9)
    interval = FrameInterval()
    for i in range(2 * count):
        interval.update(i * gap)
    assert interval.seconds == pytest.approx(gap)
    assert usual_interval([]) is None
    assert usual_interval([0.0, -1.0]) is None

"""Small damaged videos cut from a real clip: the timing and codec problems real files have.

Each is a few dozen packets of the clip's own H.264, re-muxed (no re-encoding, so a second
or two to build), with one thing wrong: the container's declared rate contradicting the
timestamps, no timestamps at all, or a codec no decoder reads.
"""

from __future__ import annotations

from pathlib import Path

import av

#: How much slower the "slow" clip's timestamps run than the rate its stream declares.
SLOWDOWN = 2.4


def remux(
    src: Path, dst: Path, *, fmt: str, frames: int = 30, scale: float = 1.0, stamps: bool = True
) -> None:
    """The first ``frames`` packets of ``src`` into ``dst``, timestamps times ``scale``.

    Matroska keeps the stream's declared rate (the H.264 header's 24 fps) whatever the
    packets' timestamps say, so a scaled copy is a clip whose container rate is wrong;
    ``fmt="h264"`` (a raw elementary stream) carries no timestamps at all.
    """
    with av.open(str(src)) as inp, av.open(str(dst), "w", format=fmt) as out:
        stream = inp.streams.video[0]
        copy = out.add_stream_from_template(stream)
        muxed = 0
        for packet in inp.demux(stream):
            if packet.dts is None or packet.pts is None:
                continue
            if muxed == frames:
                break
            if stamps:
                packet.pts, packet.dts = round(packet.pts * scale), round(packet.dts * scale)
            packet.stream = copy
            out.mux(packet)
            muxed += 1


def slow_clip(src: Path, folder: Path) -> Path:
    """Timestamps 1/(24/SLOWDOWN) s apart in a stream that declares 24 fps."""
    path = folder / "declared-24-runs-10.mkv"
    remux(src, path, fmt="matroska", scale=SLOWDOWN)
    return path


def clean_clip(src: Path, folder: Path) -> Path:
    """The same cut with its timestamps as they were: no warning is due."""
    path = folder / "clean.mkv"
    remux(src, path, fmt="matroska")
    return path


def untimed_clip(src: Path, folder: Path) -> Path:
    """A raw H.264 stream: frames without timestamps, the demuxer's declared 25 fps."""
    path = folder / "untimed.h264"
    remux(src, path, fmt="h264", stamps=False)
    return path


def undecodable_clip(src: Path, folder: Path) -> Path:
    """An MP4 whose sample entry names a codec ('zzzz') no FFmpeg decoder knows."""
    cut = folder / "cut.mp4"
    remux(src, cut, fmt="mp4")
    path = folder / "undecodable.mp4"
    data = cut.read_bytes()
    assert data.count(b"avc1") >= 1, "the MP4 has no avc1 sample entry to rename"
    path.write_bytes(data.replace(b"avc1", b"zzzz"))
    return path


def empty_clip(folder: Path) -> Path:
    path = folder / "empty.mp4"
    path.write_bytes(b"")
    return path

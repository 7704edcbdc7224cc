#!/usr/bin/env python3
"""Write the seed corpus of the C fuzz target (firmware-bridge/c/fuzz/) from the vectors.

Each seed is one file: the frame streams and frames of frames.json and the message bytes
of messages.json as they are (for the frame and message decoders), and every session of
sessions.json turned into the target's MCU script (fuzz_target.c describes the records:
host frames become "payload in a frame with the expected seq", so that mutations keep a
valid CRC; ticks, time and inputs become their records). Plain python3, standard library
only; run at build time into the build directory.

    gen_fuzz_corpus.py OUTPUT_DIR [--vectors DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

BRIDGE = Path(__file__).resolve().parents[1]
INPUT_FIELDS = (
    "door",
    "water",
    "photocell",
    "tilt_x",
    "tilt_y",
    "leakage_ua",
    "temp_cdeg",
    "supply_mv",
    "accel_peak_mg",
)
OP_FRAME, OP_TICK, OP_INPUT, OP_RAW, OP_LONG_TICK = 0, 2, 3, 4, 6


def load(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def ticks(dt: int) -> bytes:
    """Records that advance the clock by ``dt`` ms (rounded to the records' units) and tick."""
    out = bytearray()
    while dt >= 100 * 0xFFFF:
        out += bytes((OP_LONG_TICK, 0xFF, 0xFF))
        dt -= 100 * 0xFFFF
    if dt >= 1024:
        hundreds = dt // 100
        out += bytes((OP_LONG_TICK, hundreds & 0xFF, hundreds >> 8))
        dt -= hundreds * 100
    while dt > 0:
        step = min(dt // 4 or 1, 0xFF)
        out += bytes((OP_TICK, step))
        dt -= step * 4
    return bytes(out)


def rx_records(data: bytes) -> bytes:
    """Whole frames as payload records, anything else as raw chunks."""
    out = bytearray()
    pos = 0
    while pos < len(data):
        length = data[pos]
        end = pos + length
        if 5 <= length <= 64 and end <= len(data) and data[end - 1] == 0x7E:
            payload = data[pos + 2 : end - 3]
            out += bytes((OP_FRAME, len(payload))) + payload
            pos = end
            continue
        chunk = data[pos : pos + 63]
        out += bytes((OP_RAW, len(chunk))) + chunk
        pos += len(chunk)
    return bytes(out)


def session_script(session: Any) -> bytes:
    out = bytearray()
    now = 0
    for step in session["steps"]:
        if "expect" in step:
            continue
        t = int(step["t"])
        if "inputs" in step:
            for index, field in enumerate(INPUT_FIELDS):
                if field in step["inputs"]:
                    value = int(step["inputs"][field]) & 0xFFFFFFFF
                    out += bytes((OP_INPUT | index << 3,)) + value.to_bytes(4, "little")
            continue
        if t > now:
            if step.get("tick"):
                out += ticks(t - now)
                now = t
                continue
            out += ticks(t - now)
            now = t
        if step.get("tick"):
            out += bytes((OP_TICK, 0))
        elif "rx" in step:
            out += rx_records(bytes.fromhex(step["rx"]))
    return bytes(out)


def seeds(vectors: Path) -> list[bytes]:
    found: list[bytes] = []
    frames = load(vectors / "frames.json") or {}
    found += [bytes.fromhex(item["stream"]) for item in frames.get("streams", [])]
    found += [bytes.fromhex(item["frame"]) for item in frames.get("encode", [])]
    messages = load(vectors / "messages.json") or {}
    for key in ("valid", "invalid"):
        found += [bytes.fromhex(item["bytes"]) for item in messages.get(key, [])]
    for session in load(vectors / "sessions.json") or []:
        found.append(session_script(session))
        rx = b"".join(bytes.fromhex(s["rx"]) for s in session["steps"] if "rx" in s)
        found.append(rx)
    return [seed for seed in found if seed]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("output", type=Path)
    parser.add_argument("--vectors", type=Path, default=BRIDGE / "vectors")
    options = parser.parse_args(argv)
    try:
        corpus = seeds(options.vectors)
    except (KeyError, TypeError, ValueError) as exc:
        print(f"gen_fuzz_corpus: {options.vectors}: {exc!r}", file=sys.stderr)
        return 2
    # A fixed seed so that the corpus is never empty, vectors or not.
    corpus.append(bytes((OP_FRAME, 2, 0x10, 0x01, OP_TICK, 5)))
    options.output.mkdir(parents=True, exist_ok=True)
    for old in options.output.iterdir():
        old.unlink()
    for seed in corpus:
        name = hashlib.sha1(seed, usedforsecurity=False).hexdigest()
        (options.output / name).write_bytes(seed)
    print(f"gen_fuzz_corpus: {len(list(options.output.iterdir()))} seeds in {options.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

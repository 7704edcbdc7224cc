#!/usr/bin/env python3
"""Turn the shared JSON vectors (firmware-bridge/vectors/*.json) into a C header.

The C vector test (firmware-bridge/c/tests/test_vectors.c) includes the header this script
writes; the Makefile runs it at build time into the build directory, so nothing generated
from the vectors is committed. Plain python3, standard library only. A vector file that is
missing gives an empty table (the C test then says so); a file in an unexpected shape is
an error, not something to skip.

    gen_c_vectors.py OUTPUT.h [--vectors DIR]
"""

from __future__ import annotations

import argparse
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
EXPECT_FIELDS = ("level", "relays", "source", "fallback", "tripped", "configured")


class VectorError(Exception):
    """A vector file is not in the shape this script knows."""


def c_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(ch if 32 <= ord(ch) < 127 else f"\\x{ord(ch):02x}" for ch in escaped) + '"'


def direction(value: object) -> int:
    if value not in ("host", "mcu"):
        raise VectorError(f"direction {value!r}")
    return 1 if value == "mcu" else 0


class Writer:
    """Collects byte arrays and tables, then renders one header."""

    def __init__(self) -> None:
        self.arrays: list[str] = []
        self.tables: list[str] = []
        self.count = 0

    def blob(self, hex_text: str) -> tuple[str, int]:
        """A static array for the bytes of ``hex_text``: (expression, length)."""
        data = bytes.fromhex(hex_text)
        if not data:
            return "0", 0
        self.count += 1
        name = f"vb_{self.count}"
        body = ", ".join(f"0x{b:02x}" for b in data)
        self.arrays.append(f"static const uint8_t {name}[{len(data)}] = {{{body}}};\n")
        return name, len(data)

    def table(self, ctype: str, name: str, rows: list[str]) -> None:
        """``static const ctype name[]`` with a terminating zero row; ``name_n`` its count."""
        body = "".join(f"    {row},\n" for row in rows)
        self.tables.append(
            f"static const {ctype} {name}[] = {{\n{body}    {{0}}\n}};\n"
            f"static const size_t {name}_n = {len(rows)};\n\n"
        )

    def subtable(self, ctype: str, rows: list[str]) -> str:
        if not rows:
            return "0"
        self.count += 1
        name = f"vt_{self.count}"
        body = "".join(f"    {row},\n" for row in rows)
        self.tables.append(f"static const {ctype} {name}[] = {{\n{body}}};\n")
        return name


def load(path: Path) -> Any:
    if not path.exists():
        return None
    return json.loads(path.read_text())


def crc_rows(w: Writer, doc: Any) -> list[str]:
    rows = []
    for item in doc or []:
        data, n = w.blob(item["data"])
        rows.append(f"{{{data}, {n}, {int(item['crc16'])}u, {int(item['crc32'])}u}}")
    return rows


def result_row(w: Writer, item: Any) -> str:
    payloads = []
    for hex_text in item["payloads"]:
        data, n = w.blob(hex_text)
        payloads.append(f"{{{data}, {n}}}")
    frames = [
        f"{{{p[1:-1]}, {int(seq)}, {int(bool(nak))}}}"
        for p, seq, nak in zip(payloads, item["seqs"], item["naks"], strict=True)
    ]
    table = w.subtable("struct v_frame", frames)
    return (
        f"{{{table}, {len(frames)}, {int(item['discarded'])}u, {int(item['discards'])}u, "
        f"{int(item['remainder'])}u}}"
    )


def frame_rows(w: Writer, doc: Any) -> tuple[list[str], list[str]]:
    encode, streams = [], []
    for item in (doc or {}).get("encode", []):
        payload, pn = w.blob(item["payload"])
        frame, fn = w.blob(item["frame"])
        encode.append(
            f"{{{c_string(item['name'])}, {direction(item['direction'])}, {int(item['seq'])}, "
            f"{int(bool(item['nak']))}, {payload}, {pn}, {frame}, {fn}}}"
        )
    for item in (doc or {}).get("streams", []):
        stream, n = w.blob(item["stream"])
        whole = result_row(w, item)
        bytewise = result_row(w, item["bytewise"])
        streams.append(
            f"{{{c_string(item['name'])}, {direction(item['direction'])}, {stream}, {n}, "
            f"{whole}, {bytewise}}}"
        )
    return encode, streams


def message_rows(w: Writer, doc: Any) -> tuple[list[str], list[str]]:
    valid, invalid = [], []
    for item in (doc or {}).get("valid", []):
        args = []
        for name, value in item["args"].items():
            if isinstance(value, str):
                data, n = w.blob(value)
                args.append(f"{{{c_string(name)}, {n}u, {data}, 1}}")
            else:
                args.append(f"{{{c_string(name)}, {int(value) & 0xFFFFFFFF}u, 0, 0}}")
        table = w.subtable("struct v_arg", args)
        data, n = w.blob(item["bytes"])
        valid.append(
            f"{{{c_string(item['name'])}, {direction(item['direction'])}, {table}, "
            f"{len(args)}, {data}, {n}}}"
        )
    for item in (doc or {}).get("invalid", []):
        if item["error"] not in ("unknown", "malformed"):
            raise VectorError(f"error {item['error']!r}")
        data, n = w.blob(item["bytes"])
        invalid.append(
            f"{{{c_string(item['name'])}, {direction(item['direction'])}, {data}, {n}, "
            f"{int(item['error'] == 'unknown')}, {int(item['decoded'])}}}"
        )
    return valid, invalid


def step_row(w: Writer, step: Any) -> str:
    if "expect" in step:
        expect = step["expect"]
        unknown = set(expect) - set(EXPECT_FIELDS)
        if unknown:
            raise VectorError(f"expect fields {sorted(unknown)}")
        mask = sum(1 << i for i, key in enumerate(EXPECT_FIELDS) if key in expect)
        values = ", ".join(str(int(expect.get(key, 0))) for key in EXPECT_FIELDS)
        return f"{{V_EXPECT, 0, {mask}u, {{0}}, 0, 0, 0, 0, {{{values}}}}}"
    t = int(step["t"])
    if "inputs" in step:
        inputs = step["inputs"]
        unknown = set(inputs) - set(INPUT_FIELDS)
        if unknown:
            raise VectorError(f"input fields {sorted(unknown)}")
        mask = sum(1 << i for i, key in enumerate(INPUT_FIELDS) if key in inputs)
        values = ", ".join(f"{int(inputs.get(key, 0))}LL" for key in INPUT_FIELDS)
        return f"{{V_INPUTS, {t}u, {mask}u, {{{values}}}, 0, 0, 0, 0, {{0}}}}"
    tx, txn = w.blob(step.get("tx", ""))
    if step.get("tick"):
        return f"{{V_TICK, {t}u, 0, {{0}}, 0, 0, {tx}, {txn}, {{0}}}}"
    if "rx" in step:
        rx, rxn = w.blob(step["rx"])
        return f"{{V_RX, {t}u, 0, {{0}}, {rx}, {rxn}, {tx}, {txn}, {{0}}}}"
    raise VectorError(f"step {step!r}")


def session_rows(w: Writer, doc: Any) -> list[str]:
    rows = []
    for session in doc or []:
        steps = [step_row(w, step) for step in session["steps"]]
        table = w.subtable("struct v_step", steps)
        rows.append(
            f"{{{c_string(session['name'])}, {int(session['boot_id']) & 0xFFFFFFFF}u, "
            f"{table}, {len(steps)}}}"
        )
    return rows


HEAD = """/* Generated by firmware-bridge/tools/gen_c_vectors.py from the JSON files in
 * firmware-bridge/vectors/ at build time; do not edit, do not commit. */
#ifndef VECTORS_H
#define VECTORS_H

#include <stddef.h>
#include <stdint.h>

#define V_INPUT_FIELDS 9
#define V_EXPECT_FIELDS 6
enum v_step_kind { V_INPUTS = 1, V_RX, V_TICK, V_EXPECT };

struct v_crc { const uint8_t *data; size_t len; uint16_t crc16; uint32_t crc32; };
struct v_encode {
    const char *name; int from_mcu; uint8_t seq; uint8_t nak;
    const uint8_t *payload; size_t payload_len; const uint8_t *frame; size_t frame_len;
};
struct v_frame { const uint8_t *payload; size_t len; uint8_t seq; uint8_t nak; };
struct v_result {
    const struct v_frame *frames; size_t n; uint32_t discarded, discards, remainder;
};
struct v_stream {
    const char *name; int from_mcu; const uint8_t *stream; size_t len;
    struct v_result whole, bytewise;
};
struct v_arg { const char *name; uint32_t value; const uint8_t *data; int is_bytes; };
struct v_valid {
    const char *name; int from_mcu; const struct v_arg *args; size_t nargs;
    const uint8_t *bytes; size_t len;
};
struct v_invalid {
    const char *name; int from_mcu; const uint8_t *bytes; size_t len; int unknown;
    unsigned decoded;
};
/* inputs: door water photocell tilt_x tilt_y leakage_ua temp_cdeg supply_mv accel_peak_mg;
 * expect: level relays source fallback tripped configured; mask: which are given. */
struct v_step {
    int kind; uint32_t t; uint32_t mask; long long inputs[V_INPUT_FIELDS];
    const uint8_t *rx; size_t rx_len; const uint8_t *tx; size_t tx_len;
    long long expect[V_EXPECT_FIELDS];
};
struct v_session { const char *name; uint32_t boot_id; const struct v_step *steps; size_t n; };

"""


def render(vectors: Path) -> str:
    w = Writer()
    crc = crc_rows(w, load(vectors / "crc.json"))
    encode, streams = frame_rows(w, load(vectors / "frames.json"))
    valid, invalid = message_rows(w, load(vectors / "messages.json"))
    sessions = session_rows(w, load(vectors / "sessions.json"))
    w.table("struct v_crc", "v_crcs", crc)
    w.table("struct v_encode", "v_encodes", encode)
    w.table("struct v_stream", "v_streams", streams)
    w.table("struct v_valid", "v_valids", valid)
    w.table("struct v_invalid", "v_invalids", invalid)
    w.table("struct v_session", "v_sessions", sessions)
    return HEAD + "".join(w.arrays) + "\n" + "".join(w.tables) + "#endif /* VECTORS_H */\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("output", type=Path)
    parser.add_argument("--vectors", type=Path, default=BRIDGE / "vectors")
    options = parser.parse_args(argv)
    try:
        text = render(options.vectors)
    except (VectorError, KeyError, TypeError, ValueError) as exc:
        print(f"gen_c_vectors: {options.vectors}: {exc!r}", file=sys.stderr)
        return 2
    options.output.parent.mkdir(parents=True, exist_ok=True)
    if not options.output.exists() or options.output.read_text() != text:
        options.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

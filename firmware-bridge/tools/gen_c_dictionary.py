#!/usr/bin/env python3
"""Generate the C dictionary (c/sp_dictionary.h and c/sp_dictionary.c) from dictionary.json.

The MCU serves the exact bytes of firmware-bridge/dictionary.json through ``identify`` and
encodes and decodes its messages by the ids and formats written there. This script turns
that file into C: the bytes as an array, a table of the messages with their argument types
and names, and constants for every id (``SP_ID_SET_RELAY``), argument position
(``SP_A_SET_RELAY_CHANNEL``) and table index (``SP_M_SET_RELAY``) that the C code uses.

Plain python3, standard library only. ``--check`` writes nothing and fails when a generated
file is missing or differs from what this script would write (the C tests run it).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

BRIDGE = Path(__file__).resolve().parents[1]
DICTIONARY_JSON = BRIDGE / "dictionary.json"
OUT_H = BRIDGE / "c" / "sp_dictionary.h"
OUT_C = BRIDGE / "c" / "sp_dictionary.c"

TYPES = {
    "%u": "SP_T_U32",
    "%hu": "SP_T_U16",
    "%c": "SP_T_U8",
    "%i": "SP_T_I32",
    "%*s": "SP_T_BYTES",
}
HEAD = (
    "/* Generated from firmware-bridge/dictionary.json by\n"
    " * firmware-bridge/tools/gen_c_dictionary.py. Do not edit: change dictionary.json\n"
    " * and rerun the script (`make -C firmware-bridge/c gen`). */\n"
)
NAME = re.compile(r"^[a-z][a-z0-9_]*$")

# (name, id, is_response, [(argument, format), ...])
Message = tuple[str, int, bool, list[tuple[str, str]]]


class DictionaryError(Exception):
    """dictionary.json does not describe messages this generator can turn into C."""


def parse_key(key: str) -> tuple[str, list[tuple[str, str]]]:
    """``"set_relay tag=%c channel=%c"`` -> ``("set_relay", [("tag", "%c"), ...])``."""
    name, *fields = key.split(" ")
    if not NAME.match(name):
        raise DictionaryError(f"bad message name in {key!r}")
    args = []
    for field in fields:
        arg, sep, fmt = field.partition("=")
        if not sep or not NAME.match(arg) or fmt not in TYPES:
            raise DictionaryError(f"bad argument {field!r} in {key!r}")
        args.append((arg, fmt))
    if len({arg for arg, _ in args}) != len(args):
        raise DictionaryError(f"repeated argument name in {key!r}")
    if sum(fmt == "%*s" for _, fmt in args) > 1:
        raise DictionaryError(f"more than one %*s argument in {key!r}")
    return name, args


def load(raw: bytes) -> tuple[dict[str, object], list[Message]]:
    doc = json.loads(raw.decode("utf-8"))
    messages: list[Message] = []
    for section, is_response in (("commands", False), ("responses", True)):
        for key, msg_id in doc[section].items():
            name, args = parse_key(key)
            if not isinstance(msg_id, int) or not 0 <= msg_id <= 0xFFFFFFFF:
                raise DictionaryError(f"bad id for {key!r}")
            messages.append((name, msg_id, is_response, args))
    names = [m[0] for m in messages]
    ids = [m[1] for m in messages]
    if len(set(names)) != len(names) or len(set(ids)) != len(ids):
        raise DictionaryError("message names and ids must be unique")
    fixed = {m[0]: m[1] for m in messages}
    if fixed.get("identify") != 0 or fixed.get("identify_response") != 1:
        raise DictionaryError("identify must be id 0 and identify_response id 1")
    return doc, messages


def render(raw: bytes) -> tuple[str, str]:
    doc, messages = load(raw)
    max_args = max(len(m[3]) for m in messages)
    h = [HEAD, "#ifndef SP_DICTIONARY_H\n#define SP_DICTIONARY_H\n\n#include <stdint.h>\n\n"]
    h.append(f'#define SP_DICT_PROTOCOL "{doc["protocol"]}"\n')
    for key in ("version", "max_frame", "window", "relays", "events"):
        h.append(f"#define SP_DICT_{key.upper()} {int(doc[key])}\n")
    h.append(f"#define SP_DICT_JSON_LEN {len(raw)}u\n")
    h.append(f"#define SP_DICT_MESSAGES {len(messages)}\n")
    h.append(f"#define SP_DICT_MAX_ARGS {max_args}\n\n")
    h.append("/* Argument types, one per format of PROTOCOL.md section 1. */\n")
    h.append("enum sp_arg_type { SP_T_U32, SP_T_U16, SP_T_U8, SP_T_I32, SP_T_BYTES };\n\n")
    h.append(
        "struct sp_msg_def {\n"
        "    const char *name;\n"
        "    uint32_t id;\n"
        "    uint8_t is_response; /* 1: MCU to host, 0: host to MCU */\n"
        "    uint8_t nargs;\n"
        "    uint8_t types[SP_DICT_MAX_ARGS]; /* enum sp_arg_type */\n"
        "    const char *const *arg_names;\n"
        "};\n\n"
    )
    h.append("/* Message ids. */\n")
    for name, msg_id, _, _ in messages:
        h.append(f"#define SP_ID_{name.upper()} {msg_id}u\n")
    h.append("\n/* Index of each message in sp_dict_messages. */\n")
    for index, (name, _, _, _) in enumerate(messages):
        h.append(f"#define SP_M_{name.upper()} {index}\n")
    h.append("\n/* Argument positions and counts. */\n")
    for name, _, _, args in messages:
        h.append(f"#define SP_N_{name.upper()} {len(args)}\n")
        for pos, (arg, _) in enumerate(args):
            h.append(f"#define SP_A_{name.upper()}_{arg.upper()} {pos}\n")
    h.append(
        "\n/* The exact bytes of dictionary.json, served by identify. */\n"
        "extern const uint8_t sp_dict_json[SP_DICT_JSON_LEN];\n"
        "extern const struct sp_msg_def sp_dict_messages[SP_DICT_MESSAGES];\n\n"
        "#endif /* SP_DICTIONARY_H */\n"
    )

    c = [HEAD, '#include "sp_dictionary.h"\n\n']
    c.append("const uint8_t sp_dict_json[SP_DICT_JSON_LEN] = {\n")
    for start in range(0, len(raw), 12):
        chunk = ", ".join(f"0x{b:02x}" for b in raw[start : start + 12])
        c.append(f"    {chunk},\n")
    c.append("};\n\n")
    for name, _, _, args in messages:
        if args:
            names = ", ".join(f'"{arg}"' for arg, _ in args)
            c.append(f"static const char *const args_{name}[] = {{{names}}};\n")
    c.append("\nconst struct sp_msg_def sp_dict_messages[SP_DICT_MESSAGES] = {\n")
    for name, msg_id, is_response, args in messages:
        types = ", ".join(TYPES[fmt] for _, fmt in args) or "0"
        arg_names = f"args_{name}" if args else "0"
        c.append(
            f'    {{"{name}", {msg_id}u, {int(is_response)}, {len(args)}, {{{types}}}, '
            f"{arg_names}}},\n"
        )
    c.append("};\n")
    return "".join(h), "".join(c)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if a generated file is stale")
    options = parser.parse_args(argv)
    try:
        header, source = render(DICTIONARY_JSON.read_bytes())
    except (DictionaryError, KeyError, ValueError) as exc:
        print(f"gen_c_dictionary: {DICTIONARY_JSON}: {exc}", file=sys.stderr)
        return 2
    outputs = {OUT_H: header, OUT_C: source}
    stale = [p for p, text in outputs.items() if not p.exists() or p.read_text() != text]
    if options.check:
        for path in stale:
            print(
                f"gen_c_dictionary: {path.relative_to(BRIDGE)} is stale; "
                "run python3 firmware-bridge/tools/gen_c_dictionary.py",
                file=sys.stderr,
            )
        return 1 if stale else 0
    for path in stale:
        path.write_text(outputs[path])
        print(f"gen_c_dictionary: wrote {path.relative_to(BRIDGE)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

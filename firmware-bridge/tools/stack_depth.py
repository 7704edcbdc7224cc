#!/usr/bin/env python3
"""Worst-case stack depth of a firmware image, from GCC's -fcallgraph-info=su files.

The RAM the linker script reserves for the stack (firmware-bridge/c/mcu/cortex-m.ld) is a
budget only if something checks it: this script takes the call graph and per-function frame
sizes GCC writes beside each object (``*.ci``), follows every path from the entry point and
the interrupt handlers and prints the deepest. An indirect call is resolved by the caller:
``--indirect CALLER=TARGET`` (the library has two, the frame callback and the write
callback); one left unresolved is an error, as is recursion or a frame GCC could not bound
(``dynamic``): then no bound exists. A callee GCC drew no frame for (newlib's memcpy and
friends, libgcc's division: not compiled here) counts ``--leaf`` bytes. Plain python3.

    stack_depth.py CI_FILE... --entry Reset_Handler --interrupt UART_IRQHandler \
        --indirect sp_rx_feed=sp_mcu.c:on_frame [--budget BYTES]

Static functions are named ``file.c:name``, as GCC titles them.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

NODE = re.compile(r'node: \{ title: "([^"]+)" label: "([^"]*)"')
EDGE = re.compile(r'edge: \{ sourcename: "([^"]+)" targetname: "([^"]+)"')
FRAME = re.compile(r"\\n(\d+) bytes \(([a-z,]+)\)")
INDIRECT = "__indirect_call"
# What the core pushes on taking an exception: the basic frame (no FPU state; the images are
# soft-float) of 32 bytes, plus 4 when it realigns the stack to 8 bytes.
EXCEPTION_FRAME = 36


class StackError(Exception):
    """The graph has no bound: recursion, or a frame of unknown size."""


def read_graph(files: list[Path]) -> tuple[dict[str, int | None], dict[str, set[str]]]:
    """Frame size per function (None: drawn without one) and the calls each one makes."""
    frames: dict[str, int | None] = {}
    calls: dict[str, set[str]] = {}
    for path in files:
        text = path.read_text()
        for title, label in NODE.findall(text):
            match = FRAME.search(label)
            if match is None:
                frames.setdefault(title, None)
                continue
            if match.group(2) != "static":
                raise StackError(f"{title}: frame is {match.group(2)} ({path})")
            frames[title] = int(match.group(1))
        for source, target in EDGE.findall(text):
            calls.setdefault(source, set()).add(target)
    return frames, calls


def deepest(
    name: str,
    frames: dict[str, int | None],
    calls: dict[str, set[str]],
    indirect: dict[str, list[str]],
    leaf: int,
    path: tuple[str, ...] = (),
) -> tuple[int, tuple[str, ...]]:
    """Bytes of the deepest chain from name, and that chain."""
    if name in path:
        raise StackError("recursion: " + " -> ".join((*path, name)))
    path = (*path, name)
    own = frames.get(name)
    best: tuple[int, tuple[str, ...]] = (0, ())
    for callee in sorted(calls.get(name, ())):
        if callee == INDIRECT and name not in indirect:
            raise StackError(f"{name} calls through a pointer: say where with --indirect")
        targets = indirect[name] if callee == INDIRECT else [callee]
        for target in targets:
            depth, chain = deepest(target, frames, calls, indirect, leaf, path)
            if depth > best[0]:
                best = (depth, chain)
    return (leaf if own is None else own) + best[0], (name, *best[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="+", type=Path, help="the image's .ci files")
    parser.add_argument("--entry", default="main")
    parser.add_argument("--interrupt", action="append", default=[], help="handler; repeat")
    parser.add_argument("--indirect", action="append", default=[], help="CALLER=TARGET; repeat")
    parser.add_argument("--leaf", type=int, default=32, help="bytes for a frameless callee")
    parser.add_argument("--budget", type=int, help="fail if the worst case exceeds this")
    args = parser.parse_args()
    indirect: dict[str, list[str]] = {}
    for pair in args.indirect:
        caller, sep, target = pair.partition("=")
        if not sep:
            parser.error(f"--indirect {pair}: expected CALLER=TARGET")
        indirect.setdefault(caller, []).append(target)
    try:
        frames, calls = read_graph(args.files)
        for name in (args.entry, *args.interrupt):
            if name not in frames:
                raise StackError(f"{name}: not in the call graph")
        depth, chain = deepest(args.entry, frames, calls, indirect, args.leaf)
        # Interrupts do not nest here (one priority), so the deepest one stacks on top.
        irq = max(
            (deepest(h, frames, calls, indirect, args.leaf) for h in args.interrupt),
            default=(0, ()),
        )
    except StackError as e:
        print(f"stack_depth: {e}", file=sys.stderr)
        return 1
    total = depth + (irq[0] + EXCEPTION_FRAME if irq[1] else 0)
    print(f"stack: {total} bytes worst case = {depth} ({' -> '.join(chain)})", end="")
    if irq[1]:
        print(f" + {EXCEPTION_FRAME} exception frame + {irq[0]} ({' -> '.join(irq[1])})", end="")
    print()
    if args.budget is not None and total > args.budget:
        print(f"stack_depth: {total} bytes exceed the {args.budget}-byte stack", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

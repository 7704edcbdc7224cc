"""Commands added to ``smartpole diag`` beside the daemon's views, and who owns which option.

``diag scan``/``readdress`` (on the bus directly) and ``diag bundle`` (for support) are not
API calls, but a technician finds them under ``diag``. Each registration adds its names to
the ``what`` choices and its options in a group of their own; one dispatcher then sends a
command to its owner and refuses an option given to a command it does not apply to, naming
the commands it does apply to (``--port applies to diag scan and diag readdress only``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from smartpole.agent.core.errors import UsageError

Run = Callable[[argparse.Namespace], int]
_REGISTRY = "_diag_extensions"


@dataclass(frozen=True)
class _Extension:
    commands: tuple[str, ...]
    options: tuple[str, ...]  # argparse dests
    run: Run


def add_diag_commands(
    diag: argparse.ArgumentParser,
    commands: Sequence[str],
    *,
    options: Sequence[str],
    run: Run,
    title: str,
    description: str,
) -> argparse._ArgumentGroup:
    """Register ``commands`` (run by ``run``) with the options they take (by dest); returns
    the argument group to add those options to. The diag parser's own handler, set before
    the first call, keeps every other command."""
    extensions: list[_Extension] | None = diag.get_default(_REGISTRY)
    if extensions is None:
        daemon_handler: Run | None = diag.get_default("handler")
        if daemon_handler is None:
            raise RuntimeError("add_diag_commands needs the diag parser's handler set first")
        extensions = []
        diag.set_defaults(
            handler=lambda args: _dispatch(args, extensions, daemon_handler),
            **{_REGISTRY: extensions},
        )
    # argparse has no public way to reach an action once added; the positional is found by
    # its dest and fails loudly here if the diag parser's shape changes.
    what = next(a for a in diag._actions if a.dest == "what")
    if what.choices is None:
        raise RuntimeError("the diag parser's 'what' has no choices")
    what.choices = [*what.choices, *commands]
    extensions.append(_Extension(tuple(commands), tuple(options), run))
    return diag.add_argument_group(title, description)


def _dispatch(
    args: argparse.Namespace, extensions: Sequence[_Extension], daemon_handler: Run
) -> int:
    owner = next((e for e in extensions if args.what in e.commands), None)
    for dest in dict.fromkeys(o for e in extensions for o in e.options):
        if getattr(args, dest, None) is None:
            continue
        takers = [c for e in extensions if dest in e.options for c in e.commands]
        if args.what not in takers:
            flag = "--" + dest.removesuffix("_unit").replace("_", "-")
            raise UsageError(f"{flag} applies to {' and '.join(f'diag {c}' for c in takers)} only")
    return owner.run(args) if owner is not None else daemon_handler(args)

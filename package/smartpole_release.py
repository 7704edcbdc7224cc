#!/usr/bin/python3.11
"""Placeholder for the release switcher, which helper "release" writes in its own branch.

It exists so the package builds and its layout can be tested on this branch; every command
fails loudly, so a package built with it can never look installed and working.
"""

from __future__ import annotations

import sys


def main() -> int:
    print("smartpole-release: placeholder, the real switcher is not merged yet", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())

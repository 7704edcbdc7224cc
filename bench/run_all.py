"""Run every ``bench/bench_*.py`` in turn; each prints ``BENCH <name> <value> <unit>`` lines.

Benchmarks are programs, not timed unit tests: they measure against a baseline run side by
side and report numbers; deciding what is too slow is a human's call on the trend.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def main() -> int:
    here = Path(__file__).resolve().parent
    failed = []
    for script in sorted(here.glob("bench_*.py")):
        print(f"# {script.name}", flush=True)
        if subprocess.run([sys.executable, str(script), *sys.argv[1:]], check=False).returncode:
            failed.append(script.name)
    if failed:
        print(f"# failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

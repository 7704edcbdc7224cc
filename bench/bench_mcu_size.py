"""Flash and RAM of the MCU's C library on a Cortex-M0+ and a Cortex-M4, against a small part.

The budget is a 32 KiB-flash / 4 KiB-RAM microcontroller. ``make -C firmware-bridge/c mcu``
links the library into a whole firmware image per CPU (firmware-bridge/c/mcu/: a UART ring
in, the write callback's ring out, SysTick, a vector table; ``-Os``, ``--gc-sections``,
newlib-nano), so only what a port reaches is counted, the C library and libgcc included.
Flash is ``text + data`` (the initial values of ``.data`` live in flash), RAM is
``data + bss``, which includes the stack the linker script reserves (``MCU_STACK``, 1 KiB).
The worst-case stack depth comes from GCC's call graph (firmware-bridge/tools/stack_depth.py,
an interrupt on top of the deepest path from reset) and must fit in that reserve. The build
fails when an image or its stack does not fit, so these numbers say how much room is left.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Final

C_DIR: Final = Path(__file__).resolve().parent.parent / "firmware-bridge" / "c"
CPUS: Final = {"cortex-m0plus": "m0plus", "cortex-m4": "m4"}
FLASH_BUDGET: Final = 32 * 1024
RAM_BUDGET: Final = 4 * 1024
STACK: Final = 1024


def sizes(elf: Path) -> tuple[int, int, int]:
    """text, data and bss of one image, as ``arm-none-eabi-size`` (Berkeley format) counts."""
    out = subprocess.run(
        ["arm-none-eabi-size", str(elf)], check=True, capture_output=True, text=True
    ).stdout
    text, data, bss = (int(field) for field in out.splitlines()[1].split()[:3])
    return text, data, bss


def worst_stack(cpu: str) -> int:
    """The worst case ``make mcu`` wrote: ``stack: <n> bytes worst case = ...``."""
    line = (C_DIR / "build" / "mcu" / cpu / "stack.txt").read_text()
    return int(line.split()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.parse_known_args()  # run_all.py hands every bench the same arguments
    if shutil.which("arm-none-eabi-gcc") is None:
        print("bench_mcu_size: no arm-none-eabi-gcc (`make system` installs it)", file=sys.stderr)
        return 1
    build = subprocess.run(
        ["make", "--no-print-directory", "-C", str(C_DIR), "mcu", f"MCU_STACK={STACK}"],
        check=False,
        capture_output=True,
        text=True,
    )
    if build.returncode:
        print(build.stdout + build.stderr, file=sys.stderr)
        return 1
    print(f"BENCH mcu_stack_reserved_bytes {STACK} bytes")
    for cpu, short in CPUS.items():
        text, data, bss = sizes(C_DIR / "build" / "mcu" / cpu / "firmware.elf")
        flash, ram = text + data, data + bss
        print(f"BENCH mcu_flash_bytes_{short} {flash} bytes")
        print(f"BENCH mcu_ram_bytes_{short} {ram} bytes")
        print(f"BENCH mcu_flash_share_of_32k_{short} {flash / FLASH_BUDGET:.3f} ratio")
        print(f"BENCH mcu_ram_share_of_4k_{short} {ram / RAM_BUDGET:.3f} ratio")
        print(f"BENCH mcu_stack_worst_bytes_{short} {worst_stack(cpu)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The daemon imports asyncua only for a pole with an ``opcua:`` section.

asyncua costs about 25 MB of resident memory; issue 7 budgets the whole gateway at 60 MB.
"""

from __future__ import annotations

import subprocess
import sys


def test_loading_the_daemon_and_a_config_does_not_import_asyncua() -> None:
    code = (
        "import sys\n"
        "import smartpole.agent.daemon\n"
        "import smartpole.agent.config.loader\n"
        "heavy = sorted(m for m in ('asyncua', 'cryptography') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == ""

"""``python -m smartpole.agent`` is the ``smartpole`` command (used by the demo and tests)."""

import sys

from smartpole.agent.cli import main

sys.exit(main())

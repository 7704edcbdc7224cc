"""The published limits of a platform command, one constant each.

A platform builds its sender from ``schemas/uplink/command-request.schema.json`` and
``docs/uplink.md``; the pole enforces these numbers in ``uplink/command_schema.py``,
``uplink/command_answers.py`` and the ``uplink.commands`` config. They used to be written
out in each of those places and had drifted apart (128 characters in the schema, 64 in the
code; 16 KiB in the docs, 4,096 bytes enforced), so they live here once and tests hold the
schema's and the docs' numbers to them (``tests/agent/uplink/test_contract_limits.py``).
"""

from __future__ import annotations

import re
from typing import Final

# A command id: printable ASCII without spaces, safe in logs, JSON keys and the state file.
MAX_ID_CHARS: Final = 64
ID_PATTERN: Final = rf"^[!-~]{{1,{MAX_ID_CHARS}}}$"
# Who sent it (an allow-list glob matches it); the same length bound as an id.
MAX_ACTOR_CHARS: Final = 64
ACTOR_PATTERN: Final = rf"^[A-Za-z0-9][A-Za-z0-9_.@:+/=-]{{0,{MAX_ACTOR_CHARS - 1}}}$"
# The hex HMAC-SHA256 of the canonical JSON.
SIGNATURE_PATTERN: Final = r"^[0-9a-fA-F]{64}$"

# The payload on the cmd topic, in bytes (``uplink.commands.max_payload_bytes``).
DEFAULT_MAX_PAYLOAD_BYTES: Final = 4096
MIN_MAX_PAYLOAD_BYTES: Final = 256
MAX_MAX_PAYLOAD_BYTES: Final = 1_048_576

# |pole clock - issued_at| accepted, in seconds (``uplink.commands.max_skew_s``).
DEFAULT_MAX_SKEW_S: Final = 300.0
MAX_MAX_SKEW_S: Final = 86400.0

# The key file: its bytes without surrounding whitespace, at least this long.
MIN_KEY_BYTES: Final = 16

_ID = re.compile(ID_PATTERN)


def valid_id(value: object) -> bool:
    """Whether ``value`` is a command id the pole would accept (and so may echo)."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def limits() -> dict[str, object]:
    """The numbers as the command schema states them (``x-limits``)."""
    return {
        "max_id_chars": MAX_ID_CHARS,
        "max_actor_chars": MAX_ACTOR_CHARS,
        "max_payload_bytes_default": DEFAULT_MAX_PAYLOAD_BYTES,
        "max_payload_bytes_range": [MIN_MAX_PAYLOAD_BYTES, MAX_MAX_PAYLOAD_BYTES],
        "max_skew_s_default": DEFAULT_MAX_SKEW_S,
        "max_skew_s_max": MAX_MAX_SKEW_S,
        "min_key_bytes": MIN_KEY_BYTES,
    }

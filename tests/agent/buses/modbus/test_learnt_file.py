"""What a Modbus bus learnt of its devices, in ``modbus_learnt.json``: why each cap was
learnt is kept, and a file written before reasons were kept is still read (its caps all
came from exception 3, the only lesson there was)."""

from __future__ import annotations

import json
from pathlib import Path

from smartpole.agent.buses.modbus.learnt import FILE_NAME, LearntFile, learnt_view
from smartpole.drivers.modbus.learning import CapReason, Learnt
from smartpole.drivers.modbus.points import RegisterKind

IDENTITY = "quiet-meter unit 1"


def test_why_a_cap_was_learnt_is_kept_across_restarts(tmp_path: Path) -> None:
    learnt = Learnt(
        caps={RegisterKind.INPUT: 38, RegisterKind.HOLDING: 20},
        reasons={
            RegisterKind.INPUT: CapReason.TIMEOUT,
            RegisterKind.HOLDING: CapReason.EXCEPTION_3,
        },
        accepted={RegisterKind.INPUT: 38},
    )
    assert LearntFile(tmp_path, "lan").save({"meter": (IDENTITY, learnt)})
    back = LearntFile(tmp_path, "lan").load("meter", IDENTITY)
    assert back.caps == learnt.caps
    assert back.reasons == learnt.reasons
    assert learnt_view(back)["max_per_read_reason"] == {
        "holding": "exception 3",
        "input": "timeout",
    }


def test_a_file_from_before_reasons_reads_as_exception_3(tmp_path: Path) -> None:
    old = {
        "version": 1,
        "buses": {
            "lan": {
                "meter": {
                    "identity": IDENTITY,
                    "caps": {"input": 38},
                    "barriers": [["input", 70]],
                    "accepted": {"input": 38},
                }
            }
        },
    }
    (tmp_path / FILE_NAME).write_text(json.dumps(old))
    learnt = LearntFile(tmp_path, "lan").load("meter", IDENTITY)
    assert learnt.caps == {RegisterKind.INPUT: 38}
    assert learnt.reasons == {RegisterKind.INPUT: CapReason.EXCEPTION_3}
    assert learnt.barriers == {(RegisterKind.INPUT, 70)}


def test_an_unknown_reason_is_read_as_exception_3(tmp_path: Path) -> None:
    entry = {"identity": IDENTITY, "caps": {"input": 38}, "reasons": {"input": "gremlins"}}
    (tmp_path / FILE_NAME).write_text(json.dumps({"version": 1, "buses": {"lan": {"m": entry}}}))
    learnt = LearntFile(tmp_path, "lan").load("m", IDENTITY)
    assert learnt.reasons == {RegisterKind.INPUT: CapReason.EXCEPTION_3}

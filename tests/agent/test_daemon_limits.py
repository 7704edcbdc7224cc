"""The daemon lifts its soft descriptor limit to the hard one, and says so once."""

from __future__ import annotations

import resource

from structlog.testing import capture_logs

from smartpole.agent.daemon import raise_open_files_limit


def test_the_soft_descriptor_limit_is_raised_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowered = min(1024, hard - 1)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard))
    try:
        with capture_logs() as logs:
            raise_open_files_limit()
            raise_open_files_limit()  # already there: nothing to do, nothing to say
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert [(e["event"], e["soft"], e["to"]) for e in logs] == [
        ("open_files_limit_raised", lowered, hard)
    ]

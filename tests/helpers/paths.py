"""Where the tests find the repository, the shipped profiles and the data they check against."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROFILES = REPO / "configs" / "profiles"
# Small files made for the tests, such as labels made by eye for a clip.
TEST_DATA = REPO / "tests" / "data"
# Large shared inputs (the street clip, the detector model) sit beside the repository, not in
# it; tests that need them skip when they are not there.
SHARED_DATA = REPO.parent / "shared" / "data"

"""Shared fixtures: the location of ../shared (CI has it; a user's
clone may not, and then the tests that need it skip)."""

from __future__ import annotations

from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture
def shared_data() -> Path:
    data = SHARED / "data"
    if not data.is_dir():
        pytest.skip("../shared/data is absent (a user's clone); CI has it")
    return data

"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of the ``shared/data`` folder next to the repository root.

    Tests that use it are skipped (with the reason) when the folder does not exist, and fail
    instead when ``SERVESIM_REQUIRE_DATA=1`` (CI with the data checked out).
    """
    path = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not path.is_dir():
        message = f"shared data folder {path} not found"
        if os.environ.get("SERVESIM_REQUIRE_DATA") == "1":
            pytest.fail(f"{message} and SERVESIM_REQUIRE_DATA=1")
        pytest.skip(f"{message} (set SERVESIM_REQUIRE_DATA=1 to make this a failure)")
    return path

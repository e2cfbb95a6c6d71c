"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

#: The optional folder of public test data beside the project (``../shared/data`` from the project root).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ``../shared/data``; the test is skipped when that folder is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA}")
    return SHARED_DATA

"""Shared pytest fixtures: the public test data folder, and a real MRML scene for the Slicer module tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

#: The optional folder of public test data beside the project (``../shared/data`` from the project root).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

#: Why the real-MRML tests cannot run on this interpreter (slicer-core, the `slicer` extra, needs Python >= 3.10).
SLICER_CORE_SKIP = ("slicer-core (the 'slicer' extra: Slicer's MRML libraries) needs Python >= 3.10; "
                    f"this is Python {sys.version_info.major}.{sys.version_info.minor}, so the real-MRML tests are skipped")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ``../shared/data``; the test is skipped when that folder is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def real_slicer(monkeypatch, tmp_path):
    """A real MRML scene per test (Testing/slicer_real.py): slicer-core's ``slicer`` package with a new vtkMRMLScene
    as ``slicer.mrmlScene``, the real module logics, and this project's stand-ins for what slicer-core lacks.

    Skipped only where slicer-core cannot be installed (Python 3.9); on Python >= 3.10 a missing slicer-core is an
    error, so that these tests never skip silently (scripts/setup_env.sh installs the 'slicer' extra)."""
    if sys.version_info < (3, 10):
        pytest.skip(SLICER_CORE_SKIP)
    try:
        import slicer  # noqa: F401
    except ImportError as exc:
        pytest.fail(f"slicer-core is not installed ({exc}): pip install -e '.[dev,slicer]' (scripts/setup_env.sh "
                    "does); the real-MRML tests need it", pytrace=False)
    from slicer_real import RealSlicer

    real = RealSlicer(monkeypatch, tmp_path / "slicer")
    yield real
    real.close()


def pytest_collection_modifyitems(config, items):
    """Every test on the real scene is marked ``slicer_real`` (``pytest -m slicer_real`` runs them)."""
    for item in items:
        if "real_slicer" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slicer_real)

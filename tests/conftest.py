"""Shared fixtures. Real LHCO data lives in ../shared/data/lhco (never copied into the project)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LHCO_DIR = REPO.parent / "shared" / "data" / "lhco"


@pytest.fixture(scope="session")
def lhco_dir() -> Path:
    if not LHCO_DIR.is_dir():
        pytest.skip(f"shared LHCO data not found at {LHCO_DIR} (../shared/data/lhco next to the repo)")
    return LHCO_DIR


@pytest.fixture(scope="session")
def lhco_tiny(lhco_dir) -> Path:
    return lhco_dir / "raw" / "events_anomalydetection_tiny.h5"

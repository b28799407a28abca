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


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tests run in parallel (pytest -n 2) on small machines: one intra-op thread per test process
    avoids oversubscription (measured: 103 s → 18 s wall for the flow tests on 2 busy cores)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

"""The run directory of a search: ``RUN/<method>/inj_<injection>/seed_<seed>/`` with ``scores.parquet``,
``test_scores.parquet``, ``template.parquet``, ``models/`` and ``metrics.json`` (written last: a finished unit).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


def _injection_tag(injection: float | None) -> str:
    if injection is None:
        return "inj_asis"
    value = float(injection)
    return f"inj_{int(value)}" if value.is_integer() else f"inj_{value:g}"


def unit_dir(run_dir: Path, method: str, injection: float | None, seed: int) -> Path:
    return Path(run_dir) / method / _injection_tag(injection) / f"seed_{seed}"


def load_scores(
    run_dir: str | Path, method: str, injection: float | None, seed: int, test: bool = False
) -> pd.DataFrame:
    """Scores of one finished unit: data (``mjj, score, label, weight, in_sr, role``) or the test set."""
    path = unit_dir(Path(run_dir), method, injection, seed) / (
        "test_scores.parquet" if test else "scores.parquet"
    )
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no scores for ({method}, {injection}, seed {seed}); is the unit finished?"
        )
    from radar.analysis.report import load_scores as read_scores_file

    return read_scores_file(path)  # checked: mjj and score present, mjj finite


def unit_finished(run_dir: Path, method: str, injection: float | None, seed: int) -> bool:
    return (unit_dir(run_dir, method, injection, seed) / "metrics.json").exists()


# ------------------------------------------------------------------------------------------ the run

TEMPLATE_SAMPLE = "template.parquet"


def load_template_sample(
    run_dir: str | Path, method: str, injection: float | None, seed: int
) -> tuple[pd.DataFrame, np.ndarray]:
    """The saved template of a finished template unit: (events with ``mjj``, the features and ``fold``,
    the template's fold: whose classifier trained on it; weights)."""
    path = unit_dir(Path(run_dir), method, injection, seed) / TEMPLATE_SAMPLE
    if not path.exists() or not unit_finished(Path(run_dir), method, injection, seed):
        raise FileNotFoundError(
            f"{path}: no template of a finished unit ({method}, {injection}, seed {seed})"
        )
    frame = pd.read_parquet(path)
    return frame.drop(columns="weight"), frame["weight"].to_numpy(dtype="float64")

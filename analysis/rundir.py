"""The run directory of a search: ``RUN/<method>/inj_<injection>/seed_<seed>/`` with ``scores.parquet``,
``test_scores.parquet``, ``template.parquet``, ``models/`` and ``metrics.json`` (written last: a finished unit).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from radar.processors.io import pid_alive

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


LOCK_NAME = ".radar.lock"


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``RUN/.radar.lock`` (this process's pid) while a search or scan writes into ``run_dir``: a second
    one into the same directory is refused with the first one's pid; a lock left by a process that no longer
    runs (killed) is taken over."""
    lock = Path(run_dir) / LOCK_NAME
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and pid != os.getpid() and pid_alive(pid):
                raise ValueError(
                    f"{run_dir}: another radar process (pid {pid}) is writing into this directory; wait for it, "
                    f"or remove {lock} if it is gone"
                ) from None
            log.warning(
                "%s: taking over the lock left by process %s, which no longer runs", run_dir, pid or "?"
            )
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(str(os.getpid()))
        break
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def record_stop(manifest_path: Path, manifest: dict, error: BaseException) -> None:
    """A run stopped by ``error``: its manifest says ``interrupted`` (Ctrl-C, SIGTERM) or ``failed``, with the
    error and when (finished units stay valid; units still running elsewhere then write nothing)."""
    import datetime

    from radar.processors.io import write_json

    write_json(
        manifest_path,
        {
            **manifest,
            "status": "interrupted" if isinstance(error, KeyboardInterrupt) else "failed",
            "error": f"{type(error).__name__}: {error}",
            "stopped": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        },
    )

"""Datasets for the search: signal injection, splits, the standard LHCO test set, CATHODE SR arrays.

Every table here is a radar feature table (:data:`radar.processors.features.FEATURE_COLUMNS`, GeV). Every
random step takes a seed: the same seed gives the same events.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from radar.analysis.regions import Regions, SearchRegions

log = logging.getLogger(__name__)

CATHODE_SR_FILES = {
    "train": "innerdata_train.npy",
    "test": "innerdata_test.npy",
    "extrasig": "innerdata_extrasig.npy",
    "extrabkg_test": "innerdata_extrabkg_test.npy",
}


def check_features(table: pd.DataFrame, features: tuple[str, ...] | list[str], source: str = "table") -> None:
    """Raise ValueError naming the column and rows if a feature is missing or NaN/inf."""
    missing = [f for f in features if f not in table.columns]
    if missing:
        raise ValueError(f"{source}: missing feature columns {missing} (has {list(table.columns)})")
    for name in features:
        values = np.asarray(table[name], dtype="float64")
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            raise ValueError(
                f"{source}: feature {name!r} is NaN/inf in {len(bad)} of {len(values)} events "
                f"(first rows {bad[:5].tolist()}); fill or drop them before the search"
            )


def feature_matrix(
    table: pd.DataFrame, features: tuple[str, ...] | list[str], source: str = "table"
) -> np.ndarray:
    """(N, len(features)) float64 array of ``features`` (checked for NaN)."""
    check_features(table, features, source)
    return table[list(features)].to_numpy("float64")


def load_cathode_sr(directory: str | Path) -> dict[str, pd.DataFrame]:
    """Read the CATHODE SR arrays of ``directory`` (GeV feature tables).

    Returns ``{"data": train+test (all SR R&D background + the 772 standard SR signal),
    "extrasig": extra SR signal, "test": the standard test set (innerdata_extrabkg_test)}``; keys whose
    file is absent are left out (``data`` needs both train and test).
    """
    from radar.processors.features import read_feature_table

    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such CATHODE SR directory")
    out: dict[str, pd.DataFrame] = {}
    paths = {k: directory / v for k, v in CATHODE_SR_FILES.items()}
    if paths["train"].exists() and paths["test"].exists():
        out["data"] = pd.concat(
            [read_feature_table(paths["train"]), read_feature_table(paths["test"])], ignore_index=True
        )
    if paths["extrasig"].exists():
        out["extrasig"] = read_feature_table(paths["extrasig"])
    if paths["extrabkg_test"].exists():
        out["test"] = read_feature_table(paths["extrabkg_test"])
    if not out:
        raise FileNotFoundError(f"{directory}: none of the CATHODE files {sorted(CATHODE_SR_FILES.values())}")
    return out


def standard_test_set(directory: str | Path) -> pd.DataFrame:
    """The standard LHCO SR test set (``innerdata_extrabkg_test.npy``: 40k background + 20k signal)."""
    from radar.processors.features import read_feature_table

    path = Path(directory) / CATHODE_SR_FILES["extrabkg_test"]
    return read_feature_table(path)


@dataclass
class Injection:
    """Result of :func:`inject_signal`.

    table: background + injected signal (labels kept: 1 signal, 0 background), shuffled.
    signal_used: indices (into the signal pool) of the injected events.
    n_injected: signal events injected in total; n_sig_sr / n_bkg_sr: signal / background in the SR.
    """

    table: pd.DataFrame
    signal_used: np.ndarray
    n_injected: int
    n_sig_sr: int
    n_bkg_sr: int
    info: dict = field(default_factory=dict)

    @property
    def s_over_b_sr(self) -> float:
        return self.n_sig_sr / self.n_bkg_sr if self.n_bkg_sr else float("nan")


def inject_signal(
    background: pd.DataFrame,
    signal: pd.DataFrame,
    *,
    n_sig: int | None = None,
    s_over_b: float | None = None,
    regions: SearchRegions | None = None,
    seed: int = 0,
) -> Injection:
    """Add signal events drawn at random (without replacement) from ``signal`` to ``background``.

    Exactly one of ``n_sig`` (total number of injected events, anywhere in m_JJ) or ``s_over_b``
    (S/B in the SR: signal events are drawn until the SR holds round(s_over_b * n_bkg_SR)) is given.
    The returned table is shuffled with ``seed``.
    """
    regions = regions or Regions()
    if (n_sig is None) == (s_over_b is None):
        raise ValueError("inject_signal: give exactly one of n_sig or s_over_b")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(signal))
    sig_in_sr = regions.sr_mask(signal)
    n_bkg_sr = int(regions.sr_mask(background).sum())
    if n_sig is not None:
        if n_sig < 0 or n_sig > len(signal):
            raise ValueError(f"n_sig={n_sig} but the signal pool holds {len(signal)} events")
        used = order[: int(n_sig)]
    else:
        target = int(round(float(s_over_b) * n_bkg_sr))
        cum = np.cumsum(sig_in_sr[order])
        if target > (cum[-1] if len(cum) else 0):
            raise ValueError(
                f"S/B={s_over_b} needs {target} SR signal events; the pool has {int(sig_in_sr.sum())}"
            )
        used = order[: int(np.searchsorted(cum, target) + 1)] if target > 0 else order[:0]
    injected = signal.iloc[used].copy()
    if "label" in injected.columns:
        injected["label"] = 1.0
    table = pd.concat([background, injected], ignore_index=True)
    table = table.iloc[rng.permutation(len(table))].reset_index(drop=True)
    n_sig_sr = int(sig_in_sr[used].sum())
    log.info(
        "injected %d signal events (%d in the %s; S/B_SR = %.3g%%)",
        len(used),
        n_sig_sr,
        regions.describe(),
        100 * n_sig_sr / max(n_bkg_sr, 1),
    )
    return Injection(
        table=table, signal_used=np.sort(used), n_injected=len(used), n_sig_sr=n_sig_sr, n_bkg_sr=n_bkg_sr
    )


def drop_shared_events(
    table: pd.DataFrame,
    reference: pd.DataFrame,
    source: str = "table",
    columns: tuple[str, ...] = ("mjj", "mj1", "delta_mj", "tau21_j1", "tau21_j2"),
) -> pd.DataFrame:
    """``table`` without the events that also appear in ``reference`` (same values in ``columns``).

    Guards against training on test events: the standard LHCO test set's 20,000 signal events are a subset
    of ``innerdata_extrasig``, the pool used for injection and supervised training. Logged when it acts.
    """
    if table is None or reference is None or not len(table) or not len(reference):
        return table
    cols = [c for c in columns if c in table.columns and c in reference.columns]
    shared = pd.MultiIndex.from_frame(table[cols]).isin(pd.MultiIndex.from_frame(reference[cols]))
    if shared.any():
        log.warning(
            "%s: dropping %d of %d events that are also in the test set (never train on test events)",
            source,
            int(shared.sum()),
            len(table),
        )
    return table[~shared].reset_index(drop=True)


def split_indices(n: int, fractions: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """Random disjoint index sets of ``range(n)`` with the given fractions (summing to <= 1), sorted."""
    fractions = tuple(float(f) for f in fractions)
    if any(f < 0 for f in fractions) or sum(fractions) > 1 + 1e-9:
        raise ValueError(f"split fractions must be >= 0 and sum to <= 1, got {fractions}")
    order = np.random.default_rng(seed).permutation(n)
    edges = np.round(np.cumsum((0.0,) + fractions) * n).astype(int)
    return [np.sort(order[a:b]) for a, b in zip(edges[:-1], edges[1:])]


def train_val_test_split(
    table: pd.DataFrame, fractions: tuple[float, float, float] = (0.6, 0.2, 0.2), seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Split ``table`` at random into train / validation / test tables (index reset)."""
    parts = split_indices(len(table), fractions, seed)
    return tuple(table.iloc[p].reset_index(drop=True) for p in parts)  # type: ignore[return-value]


def half_split(table: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two random halves of ``table`` (the idealized-AD split: template half, data half)."""
    a, b = split_indices(len(table), (0.5, 0.5), seed)
    return table.iloc[a].reset_index(drop=True), table.iloc[b].reset_index(drop=True)


def toy_lhco_like(
    n_background: int, n_signal: int = 0, seed: int = 0, mjj_range: tuple[float, float] = (1500.0, 5500.0)
) -> pd.DataFrame:
    """A small synthetic LHCO-like feature table (GeV) for tests and examples — not physics.

    Background: m_JJ falling exponentially over ``mjj_range``; jet masses and tau ratios independent of
    m_JJ (so CWoLa Hunting has nothing to find without signal). Signal: m_JJ ~ N(3500, 100),
    mj1 ~ N(100, 10), mj2 ~ N(500, 30), small tau21. Columns: :data:`FEATURE_COLUMNS`, shuffled rows.
    """
    from radar.processors.features import conform

    rng = np.random.default_rng(seed)
    lo, hi = mjj_range
    u = rng.uniform(size=n_background)
    scale = 800.0
    mjj_b = lo - scale * np.log(1 - u * (1 - np.exp(-(hi - lo) / scale)))
    ma, mb = rng.gamma(2.0, 60.0, n_background), rng.gamma(2.0, 60.0, n_background)
    bkg = pd.DataFrame(
        {
            "mjj": mjj_b,
            "mj1": np.minimum(ma, mb),
            "mj2": np.maximum(ma, mb),
            "tau21_j1": rng.beta(5, 3, n_background),
            "tau21_j2": rng.beta(5, 3, n_background),
            "label": 0.0,
        }
    )
    sig = pd.DataFrame(
        {
            "mjj": rng.normal(3500, 100, n_signal),
            "mj1": rng.normal(100, 10, n_signal),
            "mj2": rng.normal(500, 30, n_signal),
            "tau21_j1": rng.beta(3, 6, n_signal),
            "tau21_j2": rng.beta(3, 6, n_signal),
            "label": 1.0,
        }
    )
    table = pd.concat([bkg, sig], ignore_index=True)
    table["delta_mj"] = table["mj2"] - table["mj1"]
    for name in ("tau32_j1", "tau32_j2"):
        table[name] = rng.beta(6, 3, len(table))
    table["delta_r_jj"] = rng.normal(3.0, 0.3, len(table))
    table["pt_j1"] = table["pt_j2"] = table["mjj"] / 2.2
    table["eta_j1"], table["eta_j2"] = rng.normal(0, 1, len(table)), rng.normal(0, 1, len(table))
    table["ht"] = table["pt_j1"] + table["pt_j2"]
    table["met"] = rng.exponential(50.0, len(table))
    return conform(table.iloc[rng.permutation(len(table))].reset_index(drop=True), "toy")


def hand_tuned_simulation(table: pd.DataFrame) -> pd.DataFrame:
    """The seed's hand-tuned (deliberately mismodelled) simulation of a feature table: HT unchanged,
    MET → MET (1 + MET/500 GeV), m_JJ → m_JJ (1 + m_JJ/6000 GeV), every τ ratio (``tau*`` columns) → τ^1.1.
    Columns that a table lacks are left out; returns a new table."""
    out = table.copy()
    if "met" in out:
        out["met"] = out["met"] * (1.0 + out["met"] / 500.0)
    if "mjj" in out:
        out["mjj"] = out["mjj"] * (1.0 + out["mjj"] / 6000.0)
    for name in out.columns:
        if name.startswith("tau"):
            out[name] = np.power(np.clip(out[name].to_numpy(dtype="float64"), 0.0, None), 1.1)
    return out

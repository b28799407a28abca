"""Synthetic dijet spectra and toy datasets; reading saved results."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from radar.analysis.bumphunt.constants import SQRT_S
from radar.analysis.bumphunt.fit import (
    _BinIntegrator,
    dijet_function,
)

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ synthetic
def sample_dijet_mjj(
    n: int,
    params: Sequence[float] = (1.0, 10.0, 5.0),
    mjj_range: tuple[float, float] = (2500.0, 7000.0),
    seed: int = 0,
    sqrt_s: float = SQRT_S,
) -> np.ndarray:
    """Draw ``n`` m_JJ values (GeV) from the dijet function shape within ``mjj_range`` (inverse CDF on a
    1 GeV grid; for tests and benchmarks). Returns (n,) GeV."""
    rng = np.random.default_rng(seed)
    grid = np.arange(mjj_range[0], mjj_range[1] + 1.0, 1.0)
    mid = 0.5 * (grid[1:] + grid[:-1])
    dens = dijet_function(mid, (1.0, *params[1:]), sqrt_s)
    cdf = np.concatenate([[0.0], np.cumsum(dens)])
    cdf /= cdf[-1]
    return np.interp(rng.random(n), cdf, grid)


def toy_dataset(
    n_background: int,
    n_signal: int = 0,
    *,
    signal_mass: float = 3500.0,
    signal_width: float = 170.0,
    signal_score_shift: float = 3.0,
    sculpting: float = 0.0,
    sculpting_kind: str = "peaked",
    params: Sequence[float] = (1.0, 10.0, 1.5),
    mjj_range: tuple[float, float] = (2500.0, 7000.0),
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """A synthetic search sample for tests and benchmarks (GeV).

    Background m_JJ follows the dijet function ``params`` in ``mjj_range``; signal m_JJ is Gaussian
    (``signal_mass``, ``signal_width``). Scores: background N(0, 1) independent of m_JJ, signal
    N(signal_score_shift, 1). ``sculpting`` > 0 correlates the background score with m_JJ:
    ``"peaked"`` adds sculpting * exp(-(m - 3500)^2 / (2 * 300^2)) (a classifier that learned m_JJ near the
    SR, which fakes a bump), ``"monotonic"`` adds sculpting * (m - 3500) / 1000 (a smooth bias the fit can
    absorb). Returns dict of (N,) arrays: mjj, score, label (1 signal / 0 background), weight.
    """
    if sculpting_kind not in ("peaked", "monotonic"):
        raise ValueError(f"sculpting_kind must be 'peaked' or 'monotonic', got {sculpting_kind!r}")
    rng = np.random.default_rng(seed)
    m_bkg = sample_dijet_mjj(n_background, params, mjj_range, seed=int(rng.integers(2**31)))
    m_sig = rng.normal(signal_mass, signal_width, n_signal)
    s_bkg = rng.normal(0.0, 1.0, n_background)
    if sculpting:
        shape = (
            np.exp(-0.5 * ((m_bkg - 3500.0) / 300.0) ** 2)
            if sculpting_kind == "peaked"
            else (m_bkg - 3500.0) / 1000.0
        )
        s_bkg = s_bkg + sculpting * shape
    s_sig = rng.normal(signal_score_shift, 1.0, n_signal)
    return {
        "mjj": np.r_[m_bkg, m_sig],
        "score": np.r_[s_bkg, s_sig],
        "label": np.r_[np.zeros(n_background), np.ones(n_signal)],
        "weight": np.ones(n_background + n_signal),
    }


def expected_counts(edges: np.ndarray, params: Sequence[float], sqrt_s: float = SQRT_S) -> np.ndarray:
    """(nbins,) integral of the dijet function with ``params`` (p0 in events/GeV, ...) over the bins."""
    p = np.zeros(4)
    p[: len(params)] = params
    theta = np.array([math.log(p[0]), p[1], p[2], p[3]])
    return _BinIntegrator(np.asarray(edges, dtype=float), sqrt_s).expected(theta)


def result_from_dict(data: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a saved bump-hunt or scan JSON (``kind`` radar.bumphunt / radar.scan) and return it."""
    kind = data.get("kind")
    if kind not in ("radar.bumphunt", "radar.scan"):
        raise ValueError(
            f"not a radar bump-hunt result (kind={kind!r}, expected radar.bumphunt or radar.scan)"
        )
    return dict(data)

"""Background-template methods behind one interface, selectable by name.

A *template* learns the background in the sidebands (SB) and produces background-like events in the
signal region (SR); the CWoLa classifier then separates the template from SR data. Every method is a
class registered under a name::

    from radar.models import templates
    cls = templates.get("cathode")            # every module in this package is imported on first use
    template = cls(seed=1).fit(sideband, simulation=None)
    mjj = templates.draw_mjj_kde(signal_region["mjj"].to_numpy(), n=400_000, seed=1)
    events, weights = template.sample(len(mjj), mjj)

A new method is one module in ``models/templates/`` whose class carries ``@register("name")``; nothing
else changes (``available()`` lists it, ``radar search`` finds it by name, the registry tests run it).

The :class:`Template` protocol
------------------------------
``__init__(features=LHCO_FEATURES, *, seed=0, device="auto", **kwargs)``
    ``features``: feature-table columns the template models (m_JJ is always the conditional, never one of
    them). ``kwargs`` configure the method's networks (e.g. ``epochs``, ``n_blocks``, ``hidden``).
``fit(sideband, simulation=None) -> self``
    ``sideband``: a feature table (:mod:`radar.processors.features`, GeV) holding only SB events, with the
    ``features`` columns and ``mjj``. ``simulation``: a feature table of simulated background covering SB
    and SR (needed by SALAD and FETA, ignored by CATHODE and CURTAINs).
``sample(n, mjj) -> (events, weights)``
    ``mjj`` (n,) GeV: the SR masses of the requested events (usually :func:`draw_mjj_kde`). Returns a
    DataFrame of ``n`` rows with columns ``features + ["mjj"]`` and per-event weights of shape (n,)
    (ones for sampling methods; likelihood-ratio weights for SALAD).
``TINY_KWARGS`` (class attribute, optional)
    kwargs that make ``fit`` run in seconds on a few hundred events; used by the registry tests.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from radar.models.registry import Registry
from radar.processors.features import LHCO_FEATURES

log = logging.getLogger(__name__)

__all__ = [
    "Registry",
    "Template",
    "available",
    "checked_weights",
    "draw_mjj_kde",
    "get",
    "refuse_weights",
    "register",
    "stacked_weights",
    "table_arrays",
    "table_weights",
]


_registry = Registry("template method", __name__)
register = _registry.register
get = _registry.get
available = _registry.available


@runtime_checkable
class Template(Protocol):
    """Background template (see the module docstring for the full contract)."""

    def __init__(
        self, features: Sequence[str] = LHCO_FEATURES, *, seed: int = 0, device: str = "auto", **kwargs: Any
    ) -> None: ...

    def fit(self, sideband: pd.DataFrame, simulation: pd.DataFrame | None = None) -> Template: ...

    def sample(self, n: int, mjj: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]: ...


def draw_mjj_kde(
    mjj_sr: np.ndarray,
    n: int,
    seed: int,
    *,
    bounds: tuple[float, float] | None = None,
    bw_method: str | float | None = None,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Draw ``n`` m_JJ values (GeV) from a Gaussian KDE of the SR masses ``mjj_sr`` (N,).

    Draws that land outside ``bounds`` (default: the min and max of ``mjj_sr``, i.e. the SR edges as
    populated) are redrawn a few times and the last stragglers clipped to the edges, so every value lies
    inside the SR without a pile-up at its edges. ``bw_method``: as :class:`scipy.stats.gaussian_kde`
    (Scott's rule by default). ``weights`` (N,): the SR events' weights (a weighted KDE). Returns (n,) float64.
    """
    from scipy.stats import gaussian_kde

    mjj_sr = np.asarray(mjj_sr, dtype=np.float64).reshape(-1)
    if len(mjj_sr) < 2 or not np.isfinite(mjj_sr).all():
        raise ValueError(
            f"draw_mjj_kde: need >= 2 finite SR m_JJ values, got {len(mjj_sr)} "
            f"({int((~np.isfinite(mjj_sr)).sum())} non-finite)"
        )
    if n < 0:
        raise ValueError(f"draw_mjj_kde: n must be >= 0, got {n}")
    lo, hi = bounds if bounds is not None else (float(mjj_sr.min()), float(mjj_sr.max()))
    rng = np.random.default_rng(seed)
    kde = gaussian_kde(mjj_sr, bw_method=bw_method, weights=weights)
    out = kde.resample(n, seed=rng).reshape(-1)
    for _ in range(10):
        outside = np.flatnonzero((out < lo) | (out > hi))
        if not outside.size:
            break
        out[outside] = kde.resample(outside.size, seed=rng).reshape(-1)
    return np.clip(out, lo, hi)


def table_weights(table: pd.DataFrame, what: str) -> np.ndarray | None:
    """The events' weights (N,) from the table's ``weight`` column, or None when there is none or every
    weight is 1 (then a fit is exactly the unweighted one). Raises ValueError naming ``what`` and the rows
    when a weight is not finite or not > 0."""
    if "weight" not in table.columns:
        return None
    weights = checked_weights(
        table["weight"].to_numpy(dtype=np.float64), len(table), f"{what}: column 'weight'"
    )
    return None if np.all(weights == 1.0) else weights


def checked_weights(weights, n: int, what: str) -> np.ndarray:
    """Event weights as (n,) float64; ValueError naming ``what`` and the rows unless finite and > 0. The one
    check of event weights (tables, flows, the search's inputs)."""
    weights = np.asarray(weights, dtype=np.float64).reshape(-1)
    if weights.shape != (n,):
        raise ValueError(f"{what}: {weights.size} weights for {n} events")
    bad = np.flatnonzero(~(np.isfinite(weights) & (weights > 0)))
    if bad.size:
        raise ValueError(
            f"{what} must be finite and > 0; {bad.size} rows are not "
            f"(e.g. rows {bad[:5].tolist()}: {weights[bad[:5]].tolist()})"
        )
    return weights


def stacked_weights(w_a: np.ndarray | None, n_a: int, w_b: np.ndarray | None, n_b: int) -> np.ndarray | None:
    """The weights of two tables' events (``n_a`` then ``n_b``) side by side, 1 where a table has none; None
    when neither carries weights."""
    if w_a is None and w_b is None:
        return None
    return np.concatenate([np.ones(n_a) if w_a is None else w_a, np.ones(n_b) if w_b is None else w_b])


def refuse_weights(table: pd.DataFrame | None, method: str, what: str) -> None:
    """For a method whose training has no event weights yet: ValueError when ``table`` carries non-unit
    weights (a silently unweighted fit would be wrong physics)."""
    if table is not None and table_weights(table, what) is not None:
        raise ValueError(
            f"{method}: {what} has non-unit event weights, which {method} does not support yet; use "
            "cathode, lacathode, cwola_hunting, anode, ranode, iad or supervised, or unweighted events"
        )


def table_arrays(
    table: pd.DataFrame, features: Sequence[str], what: str, *, min_events: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Features (N, D) and m_JJ (N,) GeV of a feature table, validated for a training.

    Raises ValueError naming ``what`` (e.g. "CATHODE sideband"), the column and the event rows when a
    column is missing, a value is NaN/inf, m_JJ is not positive, or there are fewer than ``min_events``.
    """
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"{what}: expected a pandas DataFrame feature table, got {type(table).__name__}")
    features = list(features)
    if "mjj" in features:
        raise ValueError(f"{what}: 'mjj' is the conditional and cannot also be a modelled feature")
    missing = [c for c in [*features, "mjj"] if c not in table.columns]
    if missing:
        raise ValueError(f"{what}: missing columns {missing}; has {list(table.columns)}")
    if len(table) < min_events:
        raise ValueError(f"{what}: {len(table)} events, need at least {min_events}")
    x = table[features].to_numpy(dtype=np.float64)
    m = table["mjj"].to_numpy(dtype=np.float64)
    for name, col in zip([*features, "mjj"], [*x.T, m]):
        bad = ~np.isfinite(col) if name != "mjj" else ~(np.isfinite(col) & (col > 0))
        if bad.any():
            rows = np.flatnonzero(bad)
            raise ValueError(
                f"{what}: column {name!r} has {rows.size} {'non-positive or ' if name == 'mjj' else ''}"
                f"NaN/inf values (rows {rows[:5].tolist()}{' ...' if rows.size > 5 else ''})"
            )
    return x, m

"""SALAD (Andreassen, Nachman, Shih; arXiv:2001.05001): simulation reweighted into data.

A classifier (:mod:`radar.models.classifiers`) learns to separate data (label 1) from simulation (label 0) in
the sidebands, with m_JJ as an extra input so that the learnt ratio can be interpolated into the signal
region. Its output ``f`` gives the likelihood ratio ``w = f / (1 - f) ≈ p_data(x | m) / p_sim(x | m)``
that reweights SR simulation into the background template.

- Mass balance (``mass_balance=True``): before training, simulation sideband events get per-bin
  weights that make their m_JJ histogram equal to the data's, so the classifier learns the ratio of the
  *conditional* densities p(x | m) only. The template's masses then come from the caller (the SR data
  KDE), as for every other template.
- Sampling: up to :attr:`SaladTemplate.max_distinct` (the number of SR simulation events) requests get
  distinct events, a random subset given to the requested masses in rank order; beyond that each
  requested mass takes an SR simulation event of nearby mass (one of the ``match_window`` neighbours
  either side in the mass-sorted SR simulation, seeded) and events repeat, which lets a k-fold
  classifier recognise them — `radar search` therefore asks for at most ``max_distinct``. The returned ``mjj`` column is the requested mass;
  the weight is evaluated at the simulated event's own mass.
- Weights are clipped at the ``clip_quantile`` quantile of the SR simulation weights and at
  ``max_weight``; how many were clipped is logged and kept in :attr:`SaladTemplate.n_clipped`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from radar.models.classifiers import get_classifier
from radar.models.persistence import load_state, save_state
from radar.models.templates import refuse_weights, register, table_arrays
from radar.models.templates.curtains import infer_signal_region
from radar.processors.features import LHCO_FEATURES

log = logging.getLogger(__name__)

__all__ = ["SaladTemplate", "mass_balance_weights", "mass_matched_rows"]


def mass_matched_rows(
    pool_mjj_sorted: np.ndarray, mjj: np.ndarray, window: int, rng: np.random.Generator
) -> np.ndarray:
    """For each requested mass in ``mjj`` (n,) GeV, the index of a pool event of nearby mass.

    ``pool_mjj_sorted`` (P,) must be sorted ascending. The index is the requested mass's insertion point
    plus a random offset in ``[-window, window]`` (clipped to the pool), so events are resampled with
    replacement while following the requested mass spectrum. Returns (n,) int64.
    """
    if len(pool_mjj_sorted) == 0:
        raise ValueError("mass_matched_rows: the pool of events is empty")
    pos = np.searchsorted(pool_mjj_sorted, np.asarray(mjj, dtype=np.float64))
    pos = pos + rng.integers(-window, window + 1, size=len(pos))
    return np.clip(pos, 0, len(pool_mjj_sorted) - 1).astype(np.int64)


def mass_balance_weights(m_sim: np.ndarray, m_data: np.ndarray, n_bins: int = 20) -> np.ndarray:
    """Per-event weights (N_sim,) making the simulation m_JJ histogram equal to the data's.

    Bins are quantiles of ``m_data`` (GeV); simulation outside them, or in bins without data, gets 0.
    Weights are scaled so that they sum to the number of simulated events.
    """
    m_sim, m_data = np.asarray(m_sim, dtype=np.float64), np.asarray(m_data, dtype=np.float64)
    n_bins = int(max(1, min(n_bins, len(m_data) // 20)))
    edges = np.unique(np.quantile(m_data, np.linspace(0.0, 1.0, n_bins + 1)))
    h_data, _ = np.histogram(m_data, edges)
    h_sim, _ = np.histogram(m_sim, edges)
    ratio = np.divide(h_data, h_sim, out=np.zeros(len(h_data)), where=h_sim > 0)
    which = np.clip(np.searchsorted(edges, m_sim, side="right") - 1, 0, len(ratio) - 1)
    inside = (m_sim >= edges[0]) & (m_sim <= edges[-1])
    w = np.where(inside, ratio[which], 0.0)
    if w.sum() <= 0:
        raise ValueError("mass_balance_weights: simulation and data sideband m_JJ ranges do not overlap")
    return w * (len(w) / w.sum())


@register("salad")
class SaladTemplate:
    """SALAD background template.

    Parameters
    ----------
    features, seed, device:
        As every template (the classifier is seeded with ``seed``).
    classifier, classifier_kwargs:
        :func:`radar.models.classifiers.get_classifier` name ("mlp" | "hgb") and settings.
    clip_quantile, max_weight:
        Weight clipping (None disables either).
    mass_balance:
        Reweight the simulation m_JJ spectrum to the data's in the sidebands before training.
    match_window:
        Neighbours either side in mass among which an SR simulation event is drawn per requested mass.
    signal_region:
        (lo, hi) GeV; default: the gap between the sidebands (:func:`~radar.models.templates.curtains.infer_signal_region`).
    """

    TINY_KWARGS: dict[str, Any] = {"classifier_kwargs": {"epochs": 1, "hidden": (16,), "n_best_epochs": 1}}
    EPS = 1e-6

    def __init__(
        self,
        features: Sequence[str] = LHCO_FEATURES,
        *,
        seed: int = 0,
        device: str = "auto",
        classifier: str = "mlp",
        classifier_kwargs: dict[str, Any] | None = None,
        clip_quantile: float | None = 0.999,
        max_weight: float | None = 100.0,
        mass_balance: bool = True,
        match_window: int = 5,
        signal_region: tuple[float, float] | None = None,
    ) -> None:
        if clip_quantile is not None and not 0.0 < clip_quantile <= 1.0:
            raise ValueError(f"clip_quantile must lie in (0, 1], got {clip_quantile}")
        self.features = list(features)
        self.seed = int(seed)
        self.device = device
        self.classifier_name = classifier
        self.classifier_kwargs = dict(classifier_kwargs or {})
        self.clip_quantile = clip_quantile
        self.max_weight = max_weight
        self.mass_balance = bool(mass_balance)
        self.match_window = int(match_window)
        self.signal_region = signal_region
        self.classifier = None
        self.n_clipped = 0
        self.clip_value: float | None = None
        self._x_sr: np.ndarray | None = None
        self._m_sr: np.ndarray | None = None
        self._w_sr: np.ndarray | None = None
        self._n_sample_calls = 0

    @property
    def max_distinct(self) -> int | None:
        """How many distinct events :meth:`sample` can return (the SR simulation events); None unfitted."""
        return None if self._m_sr is None else len(self._m_sr)

    def _inputs(self, x: np.ndarray, m: np.ndarray) -> np.ndarray:
        return np.column_stack([x, m])

    def fit(self, sideband: pd.DataFrame, simulation: pd.DataFrame | None = None) -> SaladTemplate:
        """Train the data-vs-simulation classifier in the sidebands and weight the SR simulation."""
        refuse_weights(sideband, "salad", "the sideband data")
        refuse_weights(simulation, "salad", "the simulation")
        if simulation is None:
            raise ValueError(
                "SALAD needs a simulation feature table covering the sidebands and the SR "
                "(fit(sideband, simulation=...); `input.simulation` in the search config)"
            )
        x_sb, m_sb = table_arrays(sideband, self.features, "SALAD sideband")
        x_sim, m_sim = table_arrays(simulation, self.features, "SALAD simulation")
        lo, hi = self.signal_region or infer_signal_region(m_sb)
        in_sr = (m_sim >= lo) & (m_sim <= hi)
        in_sb = ~in_sr & (m_sim >= m_sb.min()) & (m_sim <= m_sb.max())
        if in_sr.sum() < 1 or in_sb.sum() < 10:
            raise ValueError(
                f"SALAD simulation: {int(in_sb.sum())} events in the sidebands and {int(in_sr.sum())} "
                f"in the SR [{lo:.0f}, {hi:.0f}] GeV; need >= 10 and >= 1"
            )
        w_sim = mass_balance_weights(m_sim[in_sb], m_sb) if self.mass_balance else np.ones(int(in_sb.sum()))
        keep = w_sim > 0
        X = np.concatenate([self._inputs(x_sim[in_sb][keep], m_sim[in_sb][keep]), self._inputs(x_sb, m_sb)])
        y = np.concatenate([np.zeros(int(keep.sum())), np.ones(len(x_sb))])
        w = np.concatenate([w_sim[keep], np.ones(len(x_sb))])
        kwargs = {"seed": self.seed, **self.classifier_kwargs}
        if self.classifier_name == "mlp":
            kwargs.setdefault("device", self.device)
        self.classifier = get_classifier(self.classifier_name, **kwargs).fit(X, y, sample_weight=w)
        order = np.argsort(m_sim[in_sr], kind="stable")
        self._x_sr, self._m_sr = x_sim[in_sr][order], m_sim[in_sr][order]
        self._w_sr = self._clip(self.likelihood_ratio(self._x_sr, self._m_sr))
        log.info(
            "SALAD: %d SR simulation events, mean weight %.3f (%d clipped at %.3g)",
            len(self._w_sr),
            self._w_sr.mean(),
            self.n_clipped,
            self.clip_value if self.clip_value is not None else np.inf,
        )
        return self

    def likelihood_ratio(self, x: np.ndarray, m: np.ndarray) -> np.ndarray:
        """Unclipped w = f / (1 - f) for features ``x`` (N, D) at masses ``m`` (N,) GeV → (N,)."""
        if self.classifier is None:
            raise RuntimeError("SaladTemplate is not fitted: call fit(sideband, simulation) first")
        f = np.clip(self.classifier.predict_proba(self._inputs(x, m)), self.EPS, 1.0 - self.EPS)
        return f / (1.0 - f)

    def _clip(self, w: np.ndarray) -> np.ndarray:
        limit = np.inf
        if self.clip_quantile is not None and self.clip_quantile < 1.0:
            limit = float(np.quantile(w, self.clip_quantile))
        if self.max_weight is not None:
            limit = min(limit, float(self.max_weight))
        self.clip_value = None if not np.isfinite(limit) else limit
        self.n_clipped = int((w > limit).sum())
        if self.n_clipped:
            log.info(
                "SALAD: clipped %d of %d weights at %.4g (quantile %s, max %s)",
                self.n_clipped,
                len(w),
                limit,
                self.clip_quantile,
                self.max_weight,
            )
        return np.minimum(w, limit)

    def sample(self, n: int, mjj: np.ndarray, *, seed: int | None = None) -> tuple[pd.DataFrame, np.ndarray]:
        """``n`` SR simulation events matched to the masses ``mjj`` (n,) GeV → (DataFrame
        ``features + ["mjj"]``, clipped weights (n,))."""
        if self._w_sr is None:
            raise RuntimeError("SaladTemplate is not fitted: call fit(sideband, simulation) first")
        mjj = np.asarray(mjj, dtype=np.float64).reshape(-1)
        if len(mjj) != n:
            raise ValueError(f"SaladTemplate.sample: n = {n} but {len(mjj)} m_JJ values given")
        if seed is None:
            seed = self.seed * 7_777_777 + 5 + self._n_sample_calls
            self._n_sample_calls += 1
        rng = np.random.default_rng(seed)
        if n <= len(self._m_sr):
            # distinct events: a random subset of the SR simulation (sorted by mass, as the pool) given to the
            # requested masses in rank order, so no event is repeated (repeats let a k-fold classifier
            # recognise template events in its held-out fold)
            rows = np.sort(rng.choice(len(self._m_sr), size=n, replace=False))
            rows = rows[np.argsort(np.argsort(mjj, kind="stable"), kind="stable")]
        else:
            log.warning(
                "SALAD: %d events requested from %d SR simulation events: events are repeated (ask for at "
                "most max_distinct)",
                n,
                len(self._m_sr),
            )
            rows = mass_matched_rows(self._m_sr, mjj, self.match_window, rng)
        events = pd.DataFrame(self._x_sr[rows], columns=self.features)
        events["mjj"] = mjj
        return events, self._w_sr[rows].copy()

    # -- persistence -------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write what sampling needs (SR simulation events and their clipped weights) atomically; the
        classifier itself is not kept."""
        if self._w_sr is None:
            raise RuntimeError("SaladTemplate is not fitted: nothing to save")
        state = {
            "method": "salad",
            "features": self.features,
            "seed": self.seed,
            "match_window": self.match_window,
            "x_sr": torch.tensor(np.array(self._x_sr)),
            "m_sr": torch.tensor(np.array(self._m_sr)),
            "w_sr": torch.tensor(np.array(self._w_sr)),
            "n_clipped": self.n_clipped,
            "clip_value": self.clip_value,
        }
        return save_state(state, path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto") -> SaladTemplate:
        state = load_state(path, "salad", "SALAD template")
        out = cls(state["features"], seed=state["seed"], device=device, match_window=state["match_window"])
        out._x_sr, out._m_sr, out._w_sr = state["x_sr"].numpy(), state["m_sr"].numpy(), state["w_sr"].numpy()
        out.n_clipped, out.clip_value = int(state["n_clipped"]), state["clip_value"]
        return out

"""CATHODE (Hallin et al., arXiv:2109.00546): a conditional flow p(x | m_JJ) learnt on sideband data,
sampled at signal-region masses to give the background template.

The masses come from the caller (a KDE of SR data: :func:`radar.models.templates.draw_mjj_kde`), so the
template has the SR m_JJ spectrum while the features follow the flow interpolated from the sidebands.
Samples outside the training range of the features (the flow's support extends a hair beyond it, see
:mod:`radar.models.preprocessing`) or non-finite are redrawn at the same mass, as CATHODE drops them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from radar.models.flows import ConditionalFlow
from radar.models.persistence import load_state, save_state
from radar.models.preprocessing import Preprocessor
from radar.models.templates import register, table_arrays, table_weights
from radar.processors.features import LHCO_FEATURES

log = logging.getLogger(__name__)


@register("cathode")
class CathodeTemplate:
    """CATHODE background template.

    Parameters
    ----------
    features:
        Feature-table columns to model (default: the four LHCO features); m_JJ is the conditional.
    seed, device:
        Passed to the flow (training and sampling are reproducible for a given seed).
    **flow_kwargs:
        :class:`radar.models.flows.ConditionalFlow` options (``kind``, ``n_blocks``, ``hidden``, ``epochs``,
        ``batch_size``, ``lr``, ``patience``, ``n_best_epochs``, ``progress`` ...). Defaults are
        CATHODE's: MAF, 15 MADE blocks × 128, Adam 1e-4, an ensemble of the 10 best epochs.
    """

    TINY_KWARGS: dict[str, Any] = {"n_blocks": 2, "hidden": 16, "epochs": 1, "batch_size": 128}
    MAX_ROUNDS = 50

    def __init__(
        self,
        features: Sequence[str] = LHCO_FEATURES,
        *,
        seed: int = 0,
        device: str = "auto",
        **flow_kwargs: Any,
    ) -> None:
        self.features = list(features)
        self.seed = int(seed)
        self.device = device
        self.flow_kwargs = dict(flow_kwargs)
        self.flow: ConditionalFlow | None = None
        self.n_resampled = 0
        self._n_sample_calls = 0

    @property
    def n_failed(self) -> int:
        """Flow trainings that hit a non-finite loss and were restarted."""
        return 0 if self.flow is None else self.flow.n_failed

    def fit(
        self,
        sideband: pd.DataFrame,
        simulation: pd.DataFrame | None = None,
        *,
        init: dict[str, Any] | None = None,
    ) -> CathodeTemplate:
        """Train the flow on the sideband events, weighted by their ``weight`` column when it is not all 1
        (``simulation`` is not used by CATHODE). ``init``: warm start from these flow weights
        (:meth:`radar.models.flows.ConditionalFlow.warm_start_weights`)."""
        x, m = table_arrays(sideband, self.features, "CATHODE sideband")
        self.flow = ConditionalFlow(
            len(self.features), seed=self.seed, device=self.device, **self.flow_kwargs
        )
        weights = table_weights(sideband, "CATHODE sideband")
        self.flow.fit(x, m, preprocessor=Preprocessor(names=self.features), sample_weight=weights, init=init)
        return self

    def sample(self, n: int, mjj: np.ndarray, *, seed: int | None = None) -> tuple[pd.DataFrame, np.ndarray]:
        """``n`` template events at the masses ``mjj`` (n,) GeV → (DataFrame ``features + ["mjj"]``,
        weights (n,) of ones)."""
        if self.flow is None:
            raise RuntimeError("CathodeTemplate is not fitted: call fit(sideband) first")
        mjj = np.asarray(mjj, dtype=np.float64).reshape(-1)
        if len(mjj) != n:
            raise ValueError(f"CathodeTemplate.sample: n = {n} but {len(mjj)} m_JJ values given")
        if seed is None:
            seed = self.seed * 7_777_777 + 1 + self._n_sample_calls
            self._n_sample_calls += 1
        lo, hi = self.flow.preprocessor.lo, self.flow.preprocessor.hi
        x = self.flow.sample(mjj, seed=seed)
        todo = np.flatnonzero(~_inside(x, lo, hi))
        redrawn = 0
        for round_ in range(1, self.MAX_ROUNDS + 1):
            if not todo.size:
                break
            redrawn += todo.size
            x[todo] = self.flow.sample(mjj[todo], seed=seed + 104_729 * round_)
            todo = todo[~_inside(x[todo], lo, hi)]
        if todo.size:
            raise RuntimeError(
                f"CathodeTemplate.sample: {todo.size} of {n} samples still outside the training range "
                f"after {self.MAX_ROUNDS} redraws (masses e.g. {mjj[todo[:3]].tolist()} GeV); "
                "the flow is badly trained"
            )
        if redrawn:
            log.info("CATHODE: redrew %d of %d samples that fell outside the training range", redrawn, n)
        self.n_resampled += redrawn
        events = pd.DataFrame(x, columns=self.features)
        events["mjj"] = mjj
        return events, np.ones(n)

    # -- persistence -------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the fitted template (features, seed and the flow) to ``path`` atomically."""
        if self.flow is None:
            raise RuntimeError("CathodeTemplate is not fitted: nothing to save")
        state = {
            "method": "cathode",
            "features": self.features,
            "seed": self.seed,
            "flow_kwargs": self.flow_kwargs,
            "flow": self.flow.state_dict(),
        }
        return save_state(state, path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto") -> CathodeTemplate:
        state = load_state(path, "cathode", "CATHODE template")
        template = cls(state["features"], seed=state["seed"], device=device, **state["flow_kwargs"])
        template.flow = ConditionalFlow.from_state_dict(state["flow"], device=device)
        return template


def _inside(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return np.isfinite(x).all(axis=1) & (x >= lo).all(axis=1) & (x <= hi).all(axis=1)

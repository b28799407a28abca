"""ANODE (Nachman & Shih, arXiv:2001.04990): the likelihood ratio of two conditional flows.

p_bkg(x | m) is learnt on sideband data and interpolated into the signal region; p_data(x | m) is
learnt on SR data. The anomaly score is ``log p_data(x | m) - log p_bkg(x | m)``. Both flows share one
preprocessing fitted on SB ∪ SR features, so they describe densities on the same support and the
ratio stays finite (its Jacobian cancels).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from radar.models.densities import register
from radar.models.flows import ConditionalFlow
from radar.models.persistence import load_state, save_state
from radar.models.preprocessing import Preprocessor
from radar.models.templates import stacked_weights, table_arrays, table_weights
from radar.processors.features import LHCO_FEATURES

log = logging.getLogger(__name__)


@register("anode")
class AnodeDensity:
    """ANODE density ratio.

    Parameters
    ----------
    features, seed, device:
        As for templates; the data flow uses ``seed + 1``.
    bkg_kwargs, data_kwargs:
        Options for only the background (SB) or only the data (SR) flow, on top of ``flow_kwargs``.
    **flow_kwargs:
        :class:`radar.models.flows.ConditionalFlow` options for both flows (default: CATHODE-size MAF).
    """

    TINY_KWARGS: dict[str, Any] = {"n_blocks": 2, "hidden": 16, "epochs": 1, "batch_size": 128}

    def __init__(
        self,
        features: Sequence[str] = LHCO_FEATURES,
        *,
        seed: int = 0,
        device: str = "auto",
        bkg_kwargs: dict[str, Any] | None = None,
        data_kwargs: dict[str, Any] | None = None,
        **flow_kwargs: Any,
    ) -> None:
        self.features = list(features)
        self.seed = int(seed)
        self.device = device
        self.flow_kwargs = dict(flow_kwargs)
        self.bkg_kwargs = {**flow_kwargs, **(bkg_kwargs or {})}
        self.data_kwargs = {**flow_kwargs, **(data_kwargs or {})}
        self.bkg: ConditionalFlow | None = None
        self.data: ConditionalFlow | None = None

    @property
    def n_failed(self) -> int:
        """Flow trainings (of both flows) that hit a non-finite loss and were restarted."""
        return sum(flow.n_failed for flow in (self.bkg, self.data) if flow is not None)

    def fit(self, sideband: pd.DataFrame, signal_region: pd.DataFrame) -> AnodeDensity:
        x_sb, m_sb = table_arrays(sideband, self.features, "ANODE sideband")
        x_sr, m_sr = table_arrays(signal_region, self.features, "ANODE signal region")
        w_sb, w_sr = (
            table_weights(sideband, "ANODE sideband"),
            table_weights(signal_region, "ANODE signal region"),
        )
        both = stacked_weights(w_sb, len(x_sb), w_sr, len(x_sr))
        shared = Preprocessor(names=self.features).fit(np.concatenate([x_sb, x_sr]), weights=both)
        n = len(self.features)
        self.bkg = ConditionalFlow(n, seed=self.seed, device=self.device, **self.bkg_kwargs)
        self.bkg.fit(x_sb, m_sb, preprocessor=shared, sample_weight=w_sb)
        self.data = ConditionalFlow(n, seed=self.seed + 1, device=self.device, **self.data_kwargs)
        self.data.fit(x_sr, m_sr, preprocessor=shared, sample_weight=w_sr)
        return self

    def score(self, x: pd.DataFrame) -> np.ndarray:
        """log p_data(x | m) - log p_bkg(x | m) for the events of table ``x`` (N,)."""
        if self.bkg is None or self.data is None:
            raise RuntimeError("AnodeDensity is not fitted: call fit(sideband, signal_region) first")
        feats, m = table_arrays(x, self.features, "ANODE score input", min_events=0)
        return self.data.log_prob(feats, m) - self.bkg.log_prob(feats, m)

    def save(self, path: str | os.PathLike) -> Path:
        """Write both fitted flows and the configuration to ``path`` atomically."""
        if self.bkg is None or self.data is None:
            raise RuntimeError("AnodeDensity is not fitted: nothing to save")
        state = {
            "method": "anode",
            "features": self.features,
            "seed": self.seed,
            "bkg": self.bkg.state_dict(),
            "data": self.data.state_dict(),
        }
        return save_state(state, path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto") -> AnodeDensity:
        state = load_state(path, "anode", "ANODE model")
        out = cls(state["features"], seed=state["seed"], device=device)
        out.bkg = ConditionalFlow.from_state_dict(state["bkg"], device=device)
        out.data = ConditionalFlow.from_state_dict(state["data"], device=device)
        return out

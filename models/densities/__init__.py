"""Density-ratio methods behind one interface, selectable by name (ANODE; R-ANODE in issue 6).

A density-ratio method scores events directly instead of producing a template::

    from radar.models import densities
    method = densities.get("anode")(seed=1).fit(sideband, signal_region)
    scores = method.score(test_events)        # (N,): higher = more signal-like

A new method is one module in ``models/densities/`` whose class carries ``@register("name")``.

The :class:`DensityRatio` protocol
----------------------------------
``__init__(features=LHCO_FEATURES, *, seed=0, device="auto", **kwargs)``
    as for templates (:mod:`radar.models.templates`).
``fit(sideband, signal_region) -> self``
    feature tables (GeV) of SB events and of SR data, each with the ``features`` columns and ``mjj``.
``score(x) -> np.ndarray``
    anomaly score (N,) of the events in table ``x`` (uses ``x["mjj"]``), e.g. log p_data - log p_bkg.
``TINY_KWARGS`` (class attribute, optional)
    kwargs that make ``fit`` run in seconds on a few hundred events; used by the registry tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from radar.models.registry import Registry
from radar.processors.features import LHCO_FEATURES

__all__ = ["DensityRatio", "available", "get", "register"]

_registry = Registry("density method", __name__)
register = _registry.register
get = _registry.get
available = _registry.available


@runtime_checkable
class DensityRatio(Protocol):
    """Density-ratio anomaly score (see the module docstring for the full contract)."""

    def __init__(
        self, features: Sequence[str] = LHCO_FEATURES, *, seed: int = 0, device: str = "auto", **kwargs: Any
    ) -> None: ...

    def fit(self, sideband: pd.DataFrame, signal_region: pd.DataFrame) -> DensityRatio: ...

    def score(self, x: pd.DataFrame) -> np.ndarray: ...

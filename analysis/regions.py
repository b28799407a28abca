"""The regions a search trains on: a signal region (SR) and the background-only region around it.

Two kinds behind one interface (:class:`SearchRegions`): :class:`Regions`, the resonant search's SR as an
m_JJ interval with its sidebands (SB), and :class:`ContextRegions`, the SR as cuts on any context
variables (the non-resonant search: e.g. HT > 800 GeV and MET > 75 GeV) with the control region (CR)
as the rest. A :class:`Regions` is the special case "context = (m_JJ), SR = an interval": every method
that asks only for ``context``, ``sr_mask``, ``cr_mask`` and ``range_mask`` runs with either.

The scan's windows (SR + fit range) are :class:`radar.analysis.bumphunt.ScanWindow` from
:func:`radar.analysis.bumphunt.sliding_windows`, the one window grid of ``radar bumphunt --scan`` and ``radar scan``;
a :class:`Regions` is accepted wherever a window is.

The default follows the LHCO literature: SR 3300-3700 GeV, SB = the rest of 1500-5500 GeV. CWoLa
Hunting uses narrow sidebands instead: ``sideband_width`` GeV on each side of the SR.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd


@runtime_checkable
class SearchRegions(Protocol):
    """What a search needs of its regions, on feature tables (masks of shape (N,))."""

    @property
    def context(self) -> list[str]:
        """The context (conditioning) variables: the columns the regions are cuts on."""
        ...

    def sr_mask(self, table: pd.DataFrame) -> np.ndarray:
        """Events in the SR."""
        ...

    def cr_mask(self, table: pd.DataFrame) -> np.ndarray:
        """Events in the background-only region a template learns from (sidebands / control region)."""
        ...

    def range_mask(self, table: pd.DataFrame) -> np.ndarray:
        """Events inside the analysed range (the others are not used)."""
        ...

    def describe(self) -> str:
        """The SR in words, for logs and errors."""
        ...


def _column(table: pd.DataFrame, name: str, what: str) -> np.ndarray:
    if name not in table:
        raise ValueError(f"{what}: the table has no column {name!r} (columns: {list(table)})")
    return table[name].to_numpy(dtype="float64")


@dataclass(frozen=True)
class Regions:
    """One SR window with its sidebands (GeV).

    sr: (low, high) edges of the signal region, half-open ``[low, high)``.
    mjj_range: (low, high) of the whole analysed m_JJ range; events outside are not used.
    sideband_width: None → SB is all of ``mjj_range`` outside the SR; a number → only that many GeV
        on each side of the SR (narrow sidebands, as in CWoLa Hunting), clipped to ``mjj_range``.
    """

    sr: tuple[float, float] = (3300.0, 3700.0)
    mjj_range: tuple[float, float] = (1500.0, 5500.0)
    sideband_width: float | None = None

    def __post_init__(self) -> None:
        lo, hi = (float(v) for v in self.sr)
        rlo, rhi = (float(v) for v in self.mjj_range)
        object.__setattr__(self, "sr", (lo, hi))
        object.__setattr__(self, "mjj_range", (rlo, rhi))
        if not lo < hi:
            raise ValueError(f"signal region {self.sr}: low edge must be below high edge (GeV)")
        if not rlo < rhi:
            raise ValueError(f"m_JJ range {self.mjj_range}: low edge must be below high edge (GeV)")
        if lo < rlo or hi > rhi:
            raise ValueError(f"signal region {self.sr} GeV lies outside the m_JJ range {self.mjj_range} GeV")
        if self.sideband_width is not None and self.sideband_width <= 0:
            raise ValueError(f"sideband_width must be positive (GeV), got {self.sideband_width}")

    @property
    def sidebands(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """(low SB, high SB) windows in GeV (either may be empty: low == high)."""
        (lo, hi), (rlo, rhi) = self.sr, self.mjj_range
        if self.sideband_width is None:
            return (rlo, lo), (hi, rhi)
        return (max(rlo, lo - self.sideband_width), lo), (hi, min(rhi, hi + self.sideband_width))

    def in_range(self, mjj: np.ndarray) -> np.ndarray:
        """Boolean mask (N,): event inside the analysed m_JJ range."""
        mjj = np.asarray(mjj)
        return (mjj >= self.mjj_range[0]) & (mjj < self.mjj_range[1])

    def signal_region(self, mjj: np.ndarray) -> np.ndarray:
        """Boolean mask (N,): event in the SR."""
        mjj = np.asarray(mjj)
        return (mjj >= self.sr[0]) & (mjj < self.sr[1])

    def sideband(self, mjj: np.ndarray) -> np.ndarray:
        """Boolean mask (N,): event in either sideband."""
        mjj = np.asarray(mjj)
        (a, b), (c, d) = self.sidebands
        return ((mjj >= a) & (mjj < b)) | ((mjj >= c) & (mjj < d))

    # -- the table interface shared with ContextRegions (context = (m_JJ)) ------------------------------
    @property
    def context(self) -> list[str]:
        return ["mjj"]

    def sr_mask(self, table: pd.DataFrame) -> np.ndarray:
        return self.signal_region(_column(table, "mjj", "signal region"))

    def cr_mask(self, table: pd.DataFrame) -> np.ndarray:
        return self.sideband(_column(table, "mjj", "sidebands"))

    def range_mask(self, table: pd.DataFrame) -> np.ndarray:
        return self.in_range(_column(table, "mjj", "m_JJ range"))

    def describe(self) -> str:
        return f"SR m_JJ {self.sr[0]:g}-{self.sr[1]:g} GeV"

    def to_dict(self) -> dict:
        return asdict(self)


Cuts = dict[str, tuple[float | None, float | None]]


def _cut_mask(table: pd.DataFrame, cuts: Cuts, what: str) -> np.ndarray:
    """Events passing every cut ``name: (lo, hi)`` (lo <= value < hi; None: open)."""
    missing = [name for name in cuts if name not in table]
    if missing:
        raise ValueError(f"{what}: the table has no column {missing} (columns: {list(table)})")
    mask = np.ones(len(table), bool)
    for name, (lo, hi) in cuts.items():
        values = table[name].to_numpy(dtype="float64")
        if lo is not None:
            mask &= values >= lo
        if hi is not None:
            mask &= values < hi
    return mask


def check_cuts(cuts: Cuts, what: str) -> Cuts:
    """``cuts`` with float edges; a ValueError naming ``what`` and the column for a cut without edges or with
    lo >= hi."""
    out = {}
    for name, edges in cuts.items():
        lo, hi = (None if v is None else float(v) for v in edges)
        if lo is None and hi is None:
            raise ValueError(f"{what}: the cut on {name!r} has neither a lower nor an upper edge")
        if lo is not None and hi is not None and not lo < hi:
            raise ValueError(f"{what}: the cut on {name!r} needs lo < hi, got ({lo}, {hi})")
        out[str(name)] = (lo, hi)
    return out


@dataclass(frozen=True)
class ContextRegions:
    """The SR as cuts on context variables: ``cuts = {"ht": (800, None), "met": (75, None)}`` means
    HT >= 800 and MET >= 75 (``None``: open); an event is in the SR when every cut holds, else in the
    control region (CR). ``range``: optional cuts of the analysed range (events outside it are in neither).
    """

    cuts: Cuts
    range: Cuts | None = None

    def __post_init__(self) -> None:
        if not self.cuts:
            raise ValueError("ContextRegions: give at least one cut, e.g. {'met': (75, None)}")
        object.__setattr__(self, "cuts", check_cuts(self.cuts, "ContextRegions"))
        object.__setattr__(self, "range", check_cuts(self.range or {}, "ContextRegions range") or None)

    @property
    def context(self) -> list[str]:
        return list(self.cuts)

    def signal_region(self, table: pd.DataFrame) -> np.ndarray:
        return _cut_mask(table, self.cuts, "ContextRegions") & self.range_mask(table)

    def control_region(self, table: pd.DataFrame) -> np.ndarray:
        return ~_cut_mask(table, self.cuts, "ContextRegions") & self.range_mask(table)

    def range_mask(self, table: pd.DataFrame) -> np.ndarray:
        return np.ones(len(table), bool) if not self.range else _cut_mask(table, self.range, "analysed range")

    sr_mask = signal_region
    cr_mask = control_region

    def describe(self) -> str:
        def one(name: str, lo: float | None, hi: float | None) -> str:
            if hi is None:
                return f"{name} >= {lo:g}"
            return f"{name} < {hi:g}" if lo is None else f"{lo:g} <= {name} < {hi:g}"

        return "SR " + " and ".join(one(n, lo, hi) for n, (lo, hi) in self.cuts.items())

    def to_dict(self) -> dict:
        return {"context": {k: list(v) for k, v in self.cuts.items()}, "range": dict(self.range or {})}


def search_regions(config: Any, narrow: bool = False) -> SearchRegions:
    """The regions of a search config's ``regions`` section (:class:`radar.analysis.config.RegionsConfig`):
    its context cuts (:class:`ContextRegions`) or its m_JJ window (:class:`Regions`; ``narrow``: with CWoLa
    Hunting's narrow sidebands, ``cwola_sideband_width``)."""
    if config.context is not None:
        return ContextRegions(dict(config.context), dict(config.range or {}))
    width = config.cwola_sideband_width if narrow else config.sideband_width
    return Regions(sr=tuple(config.sr), mjj_range=tuple(config.mjj_range), sideband_width=width)

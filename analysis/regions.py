"""Signal region (SR) and sideband (SB) windows in m_JJ (all GeV): what a search trains on.

The scan's windows (SR + fit range) are :class:`radar.analysis.bumphunt.ScanWindow` from
:func:`radar.analysis.bumphunt.sliding_windows`, the one window grid of ``radar bumphunt --scan`` and ``radar scan``;
a :class:`Regions` is accepted wherever a window is.

The default follows the LHCO literature: SR 3300-3700 GeV, SB = the rest of 1500-5500 GeV. CWoLa
Hunting uses narrow sidebands instead: ``sideband_width`` GeV on each side of the SR.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


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

    def to_dict(self) -> dict:
        return asdict(self)

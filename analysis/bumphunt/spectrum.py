"""Binning, the fit range from the data, score cuts and m_JJ histograms."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------- binning, cuts
def mass_bin_edges(
    fit_range: tuple[float, float], signal_region: tuple[float, float], bin_width: float = 100.0
) -> np.ndarray:
    """Bin edges (GeV) of width ``bin_width`` covering ``fit_range`` that contain both SR edges.

    Sidebands are tiled outwards from the SR edges (a partial bin at either end of the range is dropped);
    the SR is split into round(width / bin_width) equal bins. Returns (nbins+1,) increasing edges.
    """
    lo, hi = map(float, fit_range)
    sr_lo, sr_hi = map(float, signal_region)
    if not (lo <= sr_lo < sr_hi <= hi):
        raise ValueError(f"signal region {signal_region} GeV must lie inside the fit range {fit_range} GeV")
    if bin_width <= 0:
        raise ValueError(f"bin_width must be positive (GeV), got {bin_width}")
    n_left = int(math.floor((sr_lo - lo) / bin_width + 1e-9))
    n_right = int(math.floor((hi - sr_hi) / bin_width + 1e-9))
    n_sr = max(1, round((sr_hi - sr_lo) / bin_width))
    left = sr_lo - bin_width * np.arange(n_left, 0, -1)
    right = sr_hi + bin_width * np.arange(1, n_right + 1)
    return np.concatenate([left, np.linspace(sr_lo, sr_hi, n_sr + 1), right])


TURN_ON_MARGIN: float = 200.0
"""GeV between the peak of the m_JJ spectrum (the end of the trigger turn-on) and the start of the fit."""

MIN_SIDEBAND: float = 400.0
"""Shortest sideband (GeV) on either side of the SR inside the fit range; shorter ones are refused. Measured on
background-only surrogate data (benchmarks/null_chain.py): with 300 GeV of lower sideband above the trigger
turn-on the uncut fit over-states (mean local Z 0.63 on 150 spectra, null 0.40) and trained cuts gave 3.2-3.6σ
fakes (CWoLa Hunting, LaCATHODE, 1 of 10 datasets each); with 400 GeV neither."""


def auto_fit_range(
    mjj: np.ndarray,
    signal_region: tuple[float, float],
    bin_width: float = 100.0,
    margin: float = TURN_ON_MARGIN,
) -> tuple[float, float]:
    """The fit range that the data allow (GeV): from the bin after the peak of the m_JJ spectrum (where it
    starts to fall: above the trigger turn-on, whose rising and bending edge the dijet function cannot
    describe) plus ``margin``, to the upper edge of the last occupied bin. Bin edges lie on
    the grid of the SR edges; a spectrum that falls from its first whole bin on (turn-on cut away) is fitted
    from there. mjj (N,) GeV of all events (no cut)."""
    mjj = np.asarray(mjj, dtype=float)
    mjj = mjj[np.isfinite(mjj)]
    if mjj.size == 0:
        raise ValueError("auto_fit_range: no events with a finite m_JJ")
    sr_lo = float(signal_region[0])
    lo = sr_lo - bin_width * math.ceil((sr_lo - mjj.min()) / bin_width)
    hi = sr_lo + bin_width * math.ceil((mjj.max() - sr_lo) / bin_width + 1e-9)
    edges = np.arange(lo, hi + 0.5 * bin_width, bin_width)
    counts = np.histogram(mjj, edges)[0].astype(float)
    first_full = 0 if mjj.min() - edges[0] < 1e-6 * bin_width else 1  # the first bin may be cut by the range
    # a 3-bin running mean: one noisy bin does not move the peak
    whole = counts[first_full:]
    smooth = np.convolve(np.pad(whole, 1, mode="edge"), np.ones(3) / 3, mode="valid")
    peak = int(np.argmax(smooth)) + first_full
    if peak == first_full:  # falling from the first whole bin on: no turn-on inside the data
        start = float(edges[first_full])
    else:
        start = float(edges[peak + 1]) + bin_width * math.ceil(margin / bin_width - 1e-9)
    top = float(edges[np.flatnonzero(counts)[-1] + 1])
    log.info(
        "fit range from the data: spectrum peaks at %.0f-%.0f GeV; fit %.0f-%.0f GeV",
        edges[peak],
        edges[peak + 1],
        start,
        top,
    )
    return float(start), top


def resolve_fit_range(
    mjj: np.ndarray,
    signal_region: tuple[float, float],
    fit_range: Sequence[float] | None = None,
    bin_width: float = 100.0,
) -> tuple[float, float]:
    """The fit range of a bump hunt on scored events ``mjj`` (N,) GeV: ``fit_range`` clipped to the events'
    m_JJ range (a scores file covers the search's range only: beyond it the spectrum is empty, not falling),
    or, when None, the range the data allow (:func:`auto_fit_range`)."""
    mjj = np.asarray(mjj, dtype=float)
    if fit_range is None:
        return auto_fit_range(mjj, signal_region, bin_width)
    lo, hi = map(float, fit_range)
    top = float(np.ceil(np.nanmax(mjj) / bin_width) * bin_width)
    # whole empty bins below the first event are dropped; the range stays on the bin grid of ``lo``
    bottom = lo + bin_width * max(0.0, math.floor((float(np.nanmin(mjj)) - lo) / bin_width + 1e-9))
    clipped = (bottom, min(hi, top))
    if clipped != (lo, hi):
        log.info(
            "fit range %.0f-%.0f GeV clipped to the scored events' m_JJ range: %.0f-%.0f GeV",
            lo,
            hi,
            *clipped,
        )
    return clipped


def fit_window(
    fit_range: Sequence[float],
    signal_region: tuple[float, float],
    fit_sideband: float | None,
    bin_width: float = 100.0,
) -> tuple[float, float]:
    """``fit_range`` (GeV) narrowed to at most ``fit_sideband`` GeV on each side of the SR (rounded out to whole
    bins); None or 0 keeps the whole range. The default of the bump hunt
    (:data:`radar.analysis.bumphunt.constants.DEFAULT_FIT_SIDEBAND`): a short window, where the dijet function
    describes a cut spectrum whose efficiency bends with m_JJ."""
    lo, hi = map(float, fit_range)
    if not fit_sideband:
        return lo, hi
    if fit_sideband < 0:
        raise ValueError(f"fit sideband must be positive (GeV), got {fit_sideband}")
    reach = bin_width * math.ceil(float(fit_sideband) / bin_width - 1e-9)
    return max(lo, float(signal_region[0]) - reach), min(hi, float(signal_region[1]) + reach)


def check_sidebands(
    fit_range: tuple[float, float], signal_region: tuple[float, float], min_sideband: float = MIN_SIDEBAND
) -> None:
    """Refuse an SR whose sideband on either side inside ``fit_range`` is shorter than ``min_sideband`` GeV:
    the fit would extrapolate into the SR instead of interpolating (next to the trigger turn-on, the dijet
    function then over-predicts or under-predicts by several σ)."""
    lower, upper = signal_region[0] - fit_range[0], fit_range[1] - signal_region[1]
    if min(lower, upper) < min_sideband:
        raise ValueError(
            f"signal region {signal_region[0]:.0f}-{signal_region[1]:.0f} GeV leaves {lower:.0f} GeV of lower and "
            f"{upper:.0f} GeV of upper sideband inside the fit range {fit_range[0]:.0f}-{fit_range[1]:.0f} GeV "
            f"(minimum {min_sideband:.0f} GeV); the fit starts above the trigger turn-on: choose an SR from "
            f"{fit_range[0] + min_sideband:.0f} GeV on, or set the fit range / minimum sideband explicitly"
        )


def score_threshold(score_sr: np.ndarray, efficiency: float) -> float:
    """Score cut keeping the top ``efficiency`` fraction of SR events (events pass with score > cut).

    score_sr: (N_SR,) scores of SR events (finite). efficiency in (0, 1]; 1 returns -inf (no cut).
    """
    if not 0 < efficiency <= 1:
        raise ValueError(f"working point efficiency must be in (0, 1], got {efficiency}")
    if efficiency >= 1:
        return -math.inf
    score_sr = np.asarray(score_sr, dtype=float)
    if score_sr.size == 0:
        raise ValueError("no signal-region events to define a score threshold on")
    if not np.all(np.isfinite(score_sr)):
        raise ValueError(f"{np.sum(~np.isfinite(score_sr))} signal-region events have a non-finite score")
    return float(np.quantile(score_sr, 1.0 - efficiency))


def score_cut(
    score: np.ndarray,
    in_fit: np.ndarray,
    in_sr: np.ndarray,
    efficiency: float,
    where: str,
    *,
    empty_sr_selects_nothing: bool = False,
) -> tuple[np.ndarray, float]:
    """Events kept by a working point: ``in_fit`` events with score above the cut that keeps ``efficiency``
    of the SR events. Returns (selected mask, threshold). Every event in the fit range must have a finite
    score (``where`` names the spectrum in the error). With no SR events the cut is undefined: an error,
    or (``empty_sr_selects_nothing``, for scan windows) nothing is selected and the fit is flagged later.
    """
    if efficiency >= 1:
        return in_fit, score_threshold(score[in_sr], efficiency)
    bad = in_fit & ~np.isfinite(score)
    if bad.any():
        raise ValueError(
            f"{where}: {int(bad.sum())} events inside the fit range have a non-finite score; the bump "
            "hunt needs every event (sidebands too) scored"
        )
    if not in_sr.any() and empty_sr_selects_nothing:
        log.warning("%s holds no signal-region events: nothing selected", where)
        return np.zeros_like(in_fit), math.inf
    threshold = score_threshold(score[in_sr], efficiency)
    return in_fit & (score > threshold), threshold


def mjj_histogram(mjj: np.ndarray, edges: np.ndarray, weight: np.ndarray | None = None):
    """A ``hist.Hist`` of m_JJ (GeV) with Weight storage on the given edges."""
    import hist

    h = hist.Hist(
        hist.axis.Variable(edges, name="mjj", label=r"$m_{JJ}$ [GeV]"), storage=hist.storage.Weight()
    )
    h.fill(mjj=np.asarray(mjj, dtype=float), weight=weight if weight is None else np.asarray(weight, float))
    return h

"""Working points and the bump hunt of one SR (:func:`bump_hunt`)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from radar.analysis.bumphunt.constants import DEFAULT_EFFICIENCIES, DEFAULT_FIT_RANGE
from radar.analysis.bumphunt.fit import (
    DijetFit,
    FitConfig,
    fit_sidebands,
)
from radar.analysis.bumphunt.significance import local_significance
from radar.analysis.bumphunt.spectrum import (
    MIN_SIDEBAND,
    check_sidebands,
    mass_bin_edges,
    mjj_histogram,
    score_cut,
)
from radar.analysis.sculpting import DEFAULT_SCULPTING, SculptingConfig, efficiency_diagnostics

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- working points
@dataclass
class WorkingPoint:
    """The bump hunt at one score cut.

    efficiency: target fraction of SR events kept; threshold: the score cut (score > threshold).
    edges (nbins+1,) GeV, counts (nbins,) selected events, sr_mask (nbins,) bins in the SR,
    expected (nbins,) fitted/predicted background, expected_err (nbins,) its fit uncertainty,
    pulls (nbins,) (counts - expected) / sqrt(expected).
    n_obs: selected SR events; b, sigma_b: predicted SR background and its fit uncertainty;
    z_local, p_local: one-sided local significance (:func:`local_significance`).
    truth: counts of true signal/background in the SR after the cut (when labels are known).
    histogram: the ``hist.Hist`` of selected events (not serialised).
    """

    efficiency: float
    threshold: float
    edges: np.ndarray
    counts: np.ndarray
    sr_mask: np.ndarray
    fit: DijetFit
    expected: np.ndarray
    expected_err: np.ndarray
    pulls: np.ndarray
    n_obs: float
    b: float
    sigma_b: float
    z_local: float
    p_local: float
    n_selected: float
    truth: dict[str, Any] = field(default_factory=dict)
    signal_counts: np.ndarray | None = None
    histogram: Any = None
    #: what the cut did to the background (:func:`radar.analysis.sculpting.efficiency_diagnostics`); None: no cut
    sculpting: dict[str, Any] | None = None

    @property
    def sculpted(self) -> bool:
        return bool(self.sculpting and self.sculpting["sculpted"])

    @property
    def usable(self) -> bool:
        """A good fit of a cut that did not sculpt: the only kind that may become the headline."""
        return self.fit.ok and not self.sculpted and bool(np.isfinite(self.z_local))

    def to_dict(self) -> dict[str, Any]:
        return {
            "efficiency": self.efficiency,
            "threshold": self.threshold,
            "edges": self.edges.tolist(),
            "counts": self.counts.tolist(),
            "sr_mask": self.sr_mask.tolist(),
            "expected": self.expected.tolist(),
            "expected_err": self.expected_err.tolist(),
            "pulls": self.pulls.tolist(),
            "fit": self.fit.to_dict(),
            "n_obs": self.n_obs,
            "b": self.b,
            "sigma_b": self.sigma_b,
            "z_local": self.z_local,
            "p_local": self.p_local,
            "n_selected": self.n_selected,
            "fit_ok": self.fit.ok,
            "usable": self.usable,
            "flags": list(self.fit.flags) + (["sculpted"] if self.sculpted else []),
            "sculpting": self.sculpting,
            "truth": self.truth,
            "signal_counts": None if self.signal_counts is None else self.signal_counts.tolist(),
        }


def hunt_spectrum(
    counts: np.ndarray,
    edges: np.ndarray,
    signal_region: tuple[float, float],
    config: FitConfig = FitConfig(),
    starts: Sequence[Sequence[float]] | None = None,
) -> tuple[DijetFit, dict[str, Any]]:
    """Fit the sidebands of one binned spectrum and evaluate the SR: the core of every working point.

    counts (nbins,), edges (nbins+1,) GeV; the SR edges must be bin edges. Returns the fit and a dict with
    sr_mask, expected, expected_err, pulls, n_obs, b, sigma_b, z_local, p_local.
    """
    counts = np.asarray(counts, dtype=float)
    edges = np.asarray(edges, dtype=float)
    sr_mask = _sr_bins(edges, signal_region)
    fit = fit_sidebands(counts, edges, sr_mask, config, starts=starts)
    if np.all(np.isfinite(fit.theta)):
        expected, cov = fit.expected_with_covariance(edges)
        cov = np.where(np.isfinite(cov), cov, 0.0)
        b = float(expected[sr_mask].sum())
        sigma_b = float(math.sqrt(max(cov[np.ix_(sr_mask, sr_mask)].sum(), 0.0)))
        expected_err = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    else:
        expected = np.full(counts.size, np.nan)
        expected_err = np.full(counts.size, np.nan)
        b, sigma_b = float("nan"), float("nan")
    n_obs = float(counts[sr_mask].sum())
    if np.isfinite(b):
        z, p, _ = local_significance(n_obs, b, sigma_b)
        z, p = float(z), float(p)
    else:
        z, p = float("nan"), float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        pulls = np.where(expected > 0, (counts - expected) / np.sqrt(expected), 0.0)
    return fit, {
        "sr_mask": sr_mask,
        "expected": expected,
        "expected_err": expected_err,
        "pulls": pulls,
        "n_obs": n_obs,
        "b": b,
        "sigma_b": sigma_b,
        "z_local": z,
        "p_local": p,
    }


def _sr_bins(edges: np.ndarray, signal_region: tuple[float, float]) -> np.ndarray:
    sr_lo, sr_hi = map(float, signal_region)
    for edge in (sr_lo, sr_hi):
        if not np.any(np.isclose(edges, edge, rtol=0, atol=1e-6)):
            raise ValueError(f"signal-region edge {edge} GeV is not a bin edge of {edges.tolist()}")
    centres = 0.5 * (edges[:-1] + edges[1:])
    return (centres > sr_lo) & (centres < sr_hi)


@dataclass
class BumpHuntResult:
    """The bump hunt at every working point, with what was done (JSON-ready through :meth:`to_dict`)."""

    signal_region: tuple[float, float]
    fit_range: tuple[float, float]
    bin_width: float
    config: FitConfig
    working_points: list[WorkingPoint]
    n_events: int
    n_sr: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "radar.bumphunt",
            "version": 1,
            "signal_region": list(self.signal_region),
            "fit_range": list(self.fit_range),
            "bin_width": self.bin_width,
            "fit_config": asdict(self.config),
            "n_events": self.n_events,
            "n_sr": self.n_sr,
            "working_points": [wp.to_dict() for wp in self.working_points],
        }

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON, atomically."""
        from radar.processors.io import write_json

        return write_json(path, self.to_dict())

    @property
    def best(self) -> WorkingPoint | None:
        """The working point with the largest local significance among usable ones (good fit, no sculpting
        flag); None when there is none."""
        usable = [wp for wp in self.working_points if wp.usable]
        return max(usable, key=lambda wp: wp.z_local) if usable else None


def bump_hunt(
    mjj: np.ndarray,
    score: np.ndarray,
    *,
    in_sr: np.ndarray | None = None,
    signal_region: tuple[float, float] = (3300.0, 3700.0),
    efficiencies: Sequence[float] = DEFAULT_EFFICIENCIES,
    fit_range: tuple[float, float] = DEFAULT_FIT_RANGE,
    bin_width: float = 100.0,
    weight: np.ndarray | None = None,
    label: np.ndarray | None = None,
    config: FitConfig = FitConfig(),
    sculpting_config: SculptingConfig = DEFAULT_SCULPTING,
    min_sideband: float = MIN_SIDEBAND,
) -> BumpHuntResult:
    """Bump hunt at several score working points.

    mjj (N,) GeV; score (N,) anomaly score, higher = more signal-like (must be finite for events inside
    ``fit_range`` when a cut is applied); in_sr (N,) bool, the events whose score distribution defines the
    efficiencies (default: ``signal_region`` on mjj); weight (N,) optional event weights; label (N,)
    optional truth (1 signal, 0 background, -1 unknown) used only to report S and B after each cut.
    efficiencies: fractions of SR events kept (1 = no cut). Every cut also gets the efficiency per m_JJ
    bin and the sculpting tests (:mod:`radar.analysis.sculpting`); a sculpted working point is never the
    :attr:`BumpHuntResult.best`. An SR with less than ``min_sideband`` GeV of sideband on either side inside
    the fit range is refused (:func:`check_sidebands`). Returns a :class:`BumpHuntResult`.
    """
    mjj = np.asarray(mjj, dtype=float)
    score = np.asarray(score, dtype=float)
    n = mjj.size
    if score.shape != (n,):
        raise ValueError(f"bump_hunt: score has shape {score.shape}, expected ({n},) like mjj")
    sr_from_mass = (mjj >= signal_region[0]) & (mjj < signal_region[1])
    if in_sr is None:
        in_sr = sr_from_mass
    else:
        in_sr = np.asarray(in_sr, dtype=bool)
        if in_sr.shape != (n,):
            raise ValueError(f"bump_hunt: in_sr has shape {in_sr.shape}, expected ({n},)")
        disagree = int(np.sum(in_sr != sr_from_mass))
        if disagree:
            log.warning(
                "in_sr disagrees with signal region %s GeV for %d of %d events; efficiencies use "
                "in_sr, the fit masks %s",
                signal_region,
                disagree,
                n,
                signal_region,
            )
    if weight is not None:
        weight = np.asarray(weight, dtype=float)
        if weight.shape != (n,):
            raise ValueError(f"bump_hunt: weight has shape {weight.shape}, expected ({n},)")
        if not np.allclose(weight, 1.0):
            log.warning("non-unit event weights: the Poisson likelihood treats weighted sums as counts")
    check_sidebands(tuple(map(float, fit_range)), signal_region, min_sideband)
    edges = mass_bin_edges(fit_range, signal_region, bin_width)
    in_fit = (mjj >= edges[0]) & (mjj < edges[-1])

    wps = []
    for eff in efficiencies:
        selected, threshold = score_cut(
            score, in_fit, in_sr, eff, f"bump hunt over {edges[0]:.0f}-{edges[-1]:.0f} GeV"
        )
        h = mjj_histogram(mjj[selected], edges, None if weight is None else weight[selected])
        counts = h.values()
        fit, sr = hunt_spectrum(counts, edges, signal_region, config)
        sculpting = None
        if eff < 1 and in_sr.any():
            sculpting = efficiency_diagnostics(
                mjj, score, in_sr, edges, sr["sr_mask"], threshold, eff, weight, sculpting_config
            )
            if sculpting["sculpted"]:
                log.warning("working point eff=%g is sculpted: %s", eff, "; ".join(sculpting["reasons"]))
        truth: dict[str, Any] = {}
        signal_counts = None
        if label is not None:
            lab = np.asarray(label)
            known = selected & (lab >= 0)
            if known.any():
                w = np.ones(n) if weight is None else weight
                sr_sel = selected & sr_from_mass
                s = float(w[sr_sel & (lab == 1)].sum())
                bkg = float(w[sr_sel & (lab == 0)].sum())
                truth = {
                    "s_sr": s,
                    "b_sr": bkg,
                    "s_over_b": s / bkg if bkg > 0 else float("nan"),
                    "s_over_sqrt_b": s / math.sqrt(bkg) if bkg > 0 else float("nan"),
                    # expected Z for a perfectly known background (Asimov), bounded where B is tiny
                    "z_asimov": math.sqrt(2 * ((s + bkg) * math.log1p(s / bkg) - s))
                    if bkg > 0
                    else float("nan"),
                }
                sig = selected & (lab == 1)
                signal_counts = np.histogram(
                    mjj[sig], bins=edges, weights=None if weight is None else weight[sig]
                )[0].astype(float)
        wp = WorkingPoint(
            efficiency=float(eff),
            threshold=float(threshold),
            edges=edges,
            counts=counts,
            fit=fit,
            n_selected=float(counts.sum()),
            truth=truth,
            signal_counts=signal_counts,
            histogram=h,
            sculpting=sculpting,
            **sr,
        )
        log.info(
            "working point eff=%g: n_SR=%.0f, b=%.1f±%.1f, Z_local=%.2f, fit %s (%s)",
            eff,
            wp.n_obs,
            wp.b,
            wp.sigma_b,
            wp.z_local,
            "ok" if fit.ok else fit.flags,
            fit.choice,
        )
        wps.append(wp)
    return BumpHuntResult(
        signal_region=tuple(map(float, signal_region)),
        fit_range=(float(edges[0]), float(edges[-1])),
        bin_width=float(bin_width),
        config=config,
        working_points=wps,
        n_events=n,
        n_sr=int(in_sr.sum()),
    )

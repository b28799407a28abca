"""The sliding-window scan and its global significance from background-only toys."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from radar.analysis.bumphunt.constants import DEFAULT_FIT_RANGE
from radar.analysis.bumphunt.fit import (
    DijetFit,
    FitConfig,
    fit_sidebands,
)
from radar.analysis.bumphunt.spectrum import (
    MIN_SIDEBAND,
    score_cut,
)
from radar.analysis.bumphunt.workingpoints import (
    hunt_spectrum,
)
from radar.analysis.sculpting import efficiency_diagnostics

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------------ scan
@dataclass(frozen=True)
class ScanWindow:
    """One scan window (GeV): SR [sr_low, sr_high) and the fit range around it (its sidebands).

    ``analysis.regions.Regions`` windows are accepted wherever a ScanWindow is (see :func:`as_window`).
    """

    sr_low: float
    sr_high: float
    fit_low: float
    fit_high: float

    @property
    def center(self) -> float:
        return 0.5 * (self.sr_low + self.sr_high)

    @property
    def signal_region(self) -> tuple[float, float]:
        return (self.sr_low, self.sr_high)


def as_window(window: Any, fit_range: tuple[float, float] | None = None) -> ScanWindow:
    """A :class:`ScanWindow` from a ScanWindow or an ``analysis.regions.Regions`` (SR + sidebands),
    clipped to ``fit_range`` (GeV) when given."""
    if isinstance(window, ScanWindow):
        out = window
    elif hasattr(window, "sr") and hasattr(window, "sidebands"):
        (a, _), (_, d) = window.sidebands
        out = ScanWindow(float(window.sr[0]), float(window.sr[1]), float(a), float(d))
    else:
        raise TypeError(f"cannot use {type(window).__name__} as a scan window (need ScanWindow or Regions)")
    if fit_range is not None:
        out = ScanWindow(
            out.sr_low, out.sr_high, max(out.fit_low, fit_range[0]), min(out.fit_high, fit_range[1])
        )
    return out


def sliding_windows(
    fit_range: tuple[float, float] = DEFAULT_FIT_RANGE,
    sr_width: float = 400.0,
    step: float = 200.0,
    sideband_width: float = 1000.0,
    min_sideband: float = MIN_SIDEBAND,
) -> list[ScanWindow]:
    """SR windows of ``sr_width`` GeV stepped by ``step`` across ``fit_range``, each fitted over
    ``sideband_width`` GeV on either side (clipped to the range), with at least ``min_sideband`` GeV of
    sideband below and above. Returns windows in increasing m_JJ."""
    lo, hi = fit_range
    first = lo + min_sideband
    out = []
    k = 0
    while first + k * step + sr_width <= hi - min_sideband + 1e-9:
        a = first + k * step
        out.append(
            ScanWindow(a, a + sr_width, max(lo, a - sideband_width), min(hi, a + sr_width + sideband_width))
        )
        k += 1
    if not out:
        raise ValueError(
            f"no scan window of {sr_width} GeV fits in {fit_range} GeV with {min_sideband} GeV sidebands"
        )
    return out


@dataclass
class ScanResult:
    """Sliding-window scan at one working point.

    windows: the scan windows; per window (arrays over windows): z_local, p_local, n_obs, b, sigma_b,
    fit_ok (a good fit of a cut that did not sculpt: :mod:`radar.analysis.sculpting`), flags (the fit's, plus
    ``sculpted``), efficiency_realised (selected fraction of all events in the window's fit range),
    fits (the DijetFit per window), spectra (edges, counts, expected per window, for plots).
    max_window: index of the most significant usable window; z_max its local Z.
    toys_max_z (n_toys,) the largest local Z per background-only toy; p_global, z_global the global
    significance of z_max (look-elsewhere effect: the toys while >= 10 reach z_max, Gross–Vitells calibrated on
    them beyond; ``global_significance`` says which); None when no toys were run.
    """

    efficiency: float
    windows: list[ScanWindow]
    z_local: np.ndarray
    p_local: np.ndarray
    n_obs: np.ndarray
    b: np.ndarray
    sigma_b: np.ndarray
    fit_ok: np.ndarray
    flags: list[list[str]]
    efficiency_realised: np.ndarray
    fits: list[DijetFit]
    spectra: list[dict[str, list[float]]]
    max_window: int
    z_max: float
    toys_max_z: np.ndarray | None = None
    p_global: float | None = None
    z_global: float | None = None
    toy_generator: dict[str, Any] = field(default_factory=dict)
    #: :func:`radar.analysis.bumphunt.globalsig.global_significance` of z_max (toys, or Gross–Vitells beyond them)
    global_significance: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "radar.scan",
            "version": 1,
            "efficiency": self.efficiency,
            "windows": [asdict(w) | {"center": w.center} for w in self.windows],
            "z_local": self.z_local.tolist(),
            "p_local": self.p_local.tolist(),
            "n_obs": self.n_obs.tolist(),
            "b": self.b.tolist(),
            "sigma_b": self.sigma_b.tolist(),
            "fit_ok": self.fit_ok.tolist(),
            "flags": self.flags,
            "efficiency_realised": self.efficiency_realised.tolist(),
            "fits": [f.to_dict() for f in self.fits],
            "spectra": self.spectra,
            "max_window": self.max_window,
            "z_max": self.z_max,
            "max_window_sr": list(self.windows[self.max_window].signal_region),
            "toys_max_z": None if self.toys_max_z is None else self.toys_max_z.tolist(),
            "n_toys": 0 if self.toys_max_z is None else int(self.toys_max_z.size),
            "p_global": self.p_global,
            "z_global": self.z_global,
            "toy_generator": self.toy_generator,
            "global": self.global_significance,
        }

    def save(self, path: str | Path) -> Path:
        from radar.processors.io import write_json

        return write_json(path, self.to_dict())


ScoreSource = Callable[[ScanWindow], np.ndarray] | Sequence[np.ndarray] | np.ndarray


def _window_scores(scores: ScoreSource, index: int, window: ScanWindow, n: int) -> np.ndarray:
    if callable(scores):
        out = scores(window)
    elif isinstance(scores, np.ndarray) and scores.ndim == 1:
        out = scores
    else:
        out = scores[index]
    out = np.asarray(out, dtype=float)
    if out.shape != (n,):
        raise ValueError(
            f"scan window {index} (SR {window.sr_low:.0f}-{window.sr_high:.0f} GeV): scores have "
            f"shape {out.shape}, expected ({n},) aligned with mjj"
        )
    return out


def scan(
    mjj: np.ndarray,
    scores: ScoreSource,
    windows: Sequence[Any] | None = None,
    *,
    efficiency: float = 0.01,
    bin_width: float = 100.0,
    fit_range: tuple[float, float] = DEFAULT_FIT_RANGE,
    weight: np.ndarray | None = None,
    n_toys: int = 100,
    seed: int = 0,
    config: FitConfig = FitConfig(),
    progress: bool = False,
) -> ScanResult:
    """Sliding-window bump hunt over m_JJ with the global significance from background-only toys.

    mjj (N,) GeV. scores: a callable ``score_window(window) -> (N,) scores`` (e.g. retrain a classifier
    for that window; NaN allowed outside the window's fit range), a sequence of (N,) arrays (one per
    window), or one (N,) array used for every window. windows: ScanWindow or ``analysis.regions.Regions``
    objects (default :func:`sliding_windows` over ``fit_range``); SR edges must lie on the
    ``bin_width`` grid starting at ``fit_range[0]``. efficiency: SR efficiency of each window's cut.

    Global significance: the uncut spectrum over ``fit_range`` is fitted with the dijet function (all bins);
    each toy draws Poisson counts from that fit, and for each window the selected spectrum is a binomial
    thinning of the toy with the window's realised cut efficiency (under the background-only hypothesis
    the score is independent of m_JJ — the assumption the method rests on; benchmarks/bumphunt_null.py
    checks it). Every window of every toy is refitted exactly as on data (same function choice rule, the
    data fit as starting point) and its local Z computed; windows whose toy fit is flagged do not count,
    as on data. p_global from the toys while at least 10 reach the observed max Z; beyond, the Gross–Vitells
    extrapolation calibrated on the toys' up-crossings (:func:`radar.analysis.bumphunt.globalsig.global_significance`).
    """
    mjj = np.asarray(mjj, dtype=float)
    n = mjj.size
    w_all = np.ones(n) if weight is None else np.asarray(weight, dtype=float)
    grid = fit_range[0] + bin_width * np.arange(
        int(math.floor((fit_range[1] - fit_range[0]) / bin_width + 1e-9)) + 1
    )
    windows = sliding_windows(fit_range) if windows is None else windows
    wins = [as_window(w, (grid[0], grid[-1])) for w in windows]

    def on_grid(value: float) -> int:
        idx = int(round((value - grid[0]) / bin_width))
        if idx < 0 or idx >= grid.size or abs(grid[idx] - value) > 1e-6:
            raise ValueError(
                f"scan window edge {value} GeV is not on the {bin_width} GeV grid from {grid[0]} GeV"
            )
        return idx

    rng = np.random.default_rng(seed)
    iterator = range(len(wins))
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="scan windows", unit="window")
    slices, fits, spectra, rows, eff_real, flags = [], [], [], [], [], []
    for i in iterator:
        win = wins[i]
        a, b_ = on_grid(win.sr_low), on_grid(win.sr_high)
        lo_i = int(math.ceil((win.fit_low - grid[0]) / bin_width - 1e-9))
        hi_i = int(math.floor((win.fit_high - grid[0]) / bin_width + 1e-9))
        if not lo_i <= a < b_ <= hi_i:
            raise ValueError(f"scan window {i}: SR {win.signal_region} GeV outside its fit range")
        edges = grid[lo_i : hi_i + 1]
        score = _window_scores(scores, i, win, n)
        in_fit = (mjj >= edges[0]) & (mjj < edges[-1])
        in_sr = (mjj >= win.sr_low) & (mjj < win.sr_high)
        selected, threshold = score_cut(
            score,
            in_fit,
            in_sr,
            efficiency,
            f"scan window {i} (SR {win.sr_low:.0f}-{win.sr_high:.0f} GeV)",
            empty_sr_selects_nothing=True,
        )
        counts = np.histogram(mjj[selected], bins=edges, weights=w_all[selected])[0].astype(float)
        total = float(w_all[in_fit].sum())
        eff_real.append(float(counts.sum() / total) if total > 0 else float("nan"))
        fit, sr = hunt_spectrum(counts, edges, win.signal_region, config)
        sculpted = False
        if efficiency < 1 and in_sr.any():  # a sculpted window is never the most significant one
            sculpted = efficiency_diagnostics(
                mjj, score, in_sr, edges, sr["sr_mask"], threshold, efficiency, w_all
            )["sculpted"]
        fits.append(fit)
        flags.append(list(fit.flags) + (["sculpted"] if sculpted else []))
        slices.append((lo_i, hi_i))
        rows.append(
            (sr["z_local"], sr["p_local"], sr["n_obs"], sr["b"], sr["sigma_b"], fit.ok and not sculpted)
        )
        spectra.append(
            {"edges": edges.tolist(), "counts": counts.tolist(), "expected": sr["expected"].tolist()}
        )
    z, p, n_obs, b, sigma_b, ok = (np.array(col) for col in zip(*rows))
    z_usable = np.where(ok & np.isfinite(z), z, -np.inf)
    max_window = (
        int(np.argmax(z_usable))
        if np.isfinite(z_usable).any()
        else int(np.nanargmax(np.nan_to_num(z, nan=-1)))
    )
    z_max = float(z[max_window])
    result = ScanResult(
        efficiency=float(efficiency),
        windows=wins,
        z_local=z,
        p_local=p,
        n_obs=n_obs,
        b=b,
        sigma_b=sigma_b,
        fit_ok=ok.astype(bool),
        flags=flags,
        efficiency_realised=np.array(eff_real),
        fits=fits,
        spectra=spectra,
        max_window=max_window,
        z_max=z_max,
    )
    log.info(
        "scan at eff=%g: max local Z = %.2f in SR %s GeV", efficiency, z_max, wins[max_window].signal_region
    )
    if n_toys > 0:
        _scan_toys(result, mjj, w_all, grid, slices, n_toys, rng, config, progress)
    return result


def _scan_toys(
    result: ScanResult,
    mjj: np.ndarray,
    weight: np.ndarray,
    grid: np.ndarray,
    slices: list[tuple[int, int]],
    n_toys: int,
    rng: np.random.Generator,
    config: FitConfig,
    progress: bool,
) -> None:
    from radar.analysis.bumphunt.globalsig import global_significance, toy_scans

    full = np.histogram(mjj, bins=grid, weights=weight)[0].astype(float)
    generator = fit_sidebands(full, grid, None, config)
    result.toy_generator = {"fit": generator.to_dict(), "edges": grid.tolist(), "counts": full.tolist()}
    if not np.all(np.isfinite(generator.theta)):
        log.error(
            "scan toys: the background-only fit of the full spectrum failed %s; no global significance",
            generator.flags,
        )
        return
    if not generator.ok:
        log.warning(
            "scan toys: the toy generator fit is flagged %s; the global significance is approximate",
            generator.flags,
        )
    key = "no cut" if result.efficiency >= 1 else f"score {result.efficiency:g}"
    windows = []
    for k, (lo_i, hi_i) in enumerate(slices):
        theta = (
            [float(t) for t in result.fits[k].theta] if np.all(np.isfinite(result.fits[k].theta)) else None
        )
        entry = {
            "index": k,
            "sr": list(result.windows[k].signal_region),
            "slice": [lo_i, hi_i],
            "no_cut": None,
            "methods": {},
        }
        if result.efficiency >= 1:
            entry["no_cut"] = {"theta": theta}
        else:
            entry["methods"]["score"] = [
                {"efficiency": result.efficiency, "eff": float(result.efficiency_realised[k]), "theta": theta}
            ]
        windows.append(entry)
    spec = {
        "grid": grid.tolist(),
        "mu": generator.expected(grid).tolist(),
        "windows": windows,
        "n_windows": len(slices),
        "sequences": [key],
        "z0": 1.0,
    }
    seeds = rng.integers(0, 2**63 - 1, size=n_toys)
    if progress:
        from tqdm import tqdm

        pairs = [p for s in tqdm(seeds, desc="scan toys", unit="toy") for p in toy_scans(spec, [int(s)])]
    else:
        pairs = toy_scans(spec, [int(s) for s in seeds])
    result.toys_max_z = np.array([p[0] for p in pairs])
    glob = global_significance(result.z_max, result.toys_max_z, [p[1] for p in pairs], z0=1.0, n_scans=1)
    result.global_significance = glob
    result.p_global, result.z_global = glob["p_global"], glob["z_global"]
    log.info(
        "scan global significance: %d of %d toys with max Z >= %.2f -> p_global = %.3g, Z_global = %.2f (%s)",
        glob["n_toys_above"],
        n_toys,
        result.z_max,
        result.p_global,
        result.z_global,
        glob["method"],
    )

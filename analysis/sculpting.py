"""What a score cut did to the background: cut efficiency versus m_JJ, and the ``sculpted`` flag.

A working point keeps the fraction ``eff`` of SR events (the top of the SR score distribution) and
applies the same threshold everywhere. The bump hunt then trusts the sidebands to tell how many
background events the cut keeps inside the SR. That fails when the cut does not act on the background
in the same way on both sides of the SR edges — the score distribution differs between SR and
sidebands (e.g. scores made by different models: a fake bump of 13σ), or the features follow m_JJ so
that the cut efficiency bends (a trigger turn-on). Both are visible in the efficiency per m_JJ bin.

A real signal also raises the SR efficiency of the top cut, so a step of the *top* cut at the SR edges
cannot tell sculpting from a discovery. The step test uses the *control tail* instead: the events
below the ``eff`` quantile of SR scores (the lowest-scoring ``eff`` of the SR). A signal can only lower
that fraction in the SR (its events score high), while a score distribution that is wider or shifted in
the SR raises it exactly like it raises the top tail. Three tests, each on binned counts:

- ``control_step``: the control-tail efficiency in the SR against the straight line fitted to the
  sideband bins and integrated over the SR; flagged when the SR exceeds it by more than ``z_max`` σ
  (one-sided: only an excess in the SR can fake a bump).
- ``control_shape``: the control-tail efficiency in the sidebands is not a straight line in m_JJ
  (binomial deviance p-value below ``p_min``).
- ``cut_shape``: the same for the top cut, leaving out ``guard`` GeV of sideband next to each SR edge
  (where a real resonance leaks out of the SR).

Sideband bins are merged (within each side, from the SR outwards) until each group expects at least
``min_expected`` passing and failing events, so the deviance follows its χ² distribution.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize, stats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SculptingConfig:
    """Thresholds of the sculpting tests (see the module docstring)."""

    z_max: float = 3.0
    p_min: float = 1e-3
    min_expected: float = 5.0
    #: GeV of sideband next to each SR edge left out of ``cut_shape`` (None: half the SR width)
    guard: float | None = None


DEFAULT_SCULPTING = SculptingConfig()


def _groups(n_total: np.ndarray, side_bins: list[np.ndarray], efficiency: float, min_expected: float) -> list:
    """Bins of each sideband side merged outwards from the SR until every group expects ``min_expected``
    passing and failing events; a short last group joins the one before."""
    need = min_expected / max(min(efficiency, 1 - efficiency), 1e-12)
    groups = []
    for bins in side_bins:
        current, total, side = [], 0.0, []
        for b in bins:
            current.append(b)
            total += n_total[b]
            if total >= need:
                side.append(current)
                current, total = [], 0.0
        if current:
            if side:
                side[-1] = side[-1] + current
            elif total > 0:
                side.append(current)
        groups += side
    return [np.asarray(g) for g in groups if n_total[g].sum() > 0]


def _line_fit(k: np.ndarray, n: np.ndarray, x: np.ndarray) -> dict[str, Any]:
    """Binomial maximum-likelihood fit of p(x) = a + b x to ``k`` passes of ``n`` per group; returns the
    parameters, covariance, deviance against the saturated model, ndf and p-value."""
    eps = 1e-9

    def p_of(theta: np.ndarray) -> np.ndarray:
        return np.clip(theta[0] + theta[1] * x, eps, 1 - eps)

    def nll(theta: np.ndarray) -> float:
        p = p_of(theta)
        return -float(np.sum(k * np.log(p) + (n - k) * np.log1p(-p)))

    # starts that are feasible everywhere: the pooled efficiency (flat), and a least-squares line weighted with
    # the pooled variance when it stays inside (0, 1). (Weights from each group's own k/n gave a group with
    # k = 0 an infinite pull: the start left (0, 1) and the clipped likelihood stalled the simplex there,
    # e.g. a deviance of 126 for groups a flat 0.7 % describes.)
    pooled = float(np.clip(k.sum() / n.sum(), eps, 1 - eps))
    starts = [np.array([pooled, 0.0])]
    if len(n) > 1:
        wls = np.polyfit(x, k / n, 1, w=np.sqrt(n / (pooled * (1 - pooled))))[::-1]
        if np.all((wls[0] + wls[1] * x > 0) & (wls[0] + wls[1] * x < 1)):
            starts.append(wls)
    fits = [
        optimize.minimize(
            nll, start, method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-10, "maxiter": 4000}
        )
        for start in starts
    ]
    theta = min(fits, key=lambda fit: fit.fun).x
    p = p_of(theta)
    design = np.stack([np.ones_like(x), x], axis=1)
    fisher = design.T @ (design * (n / (p * (1 - p)))[:, None])
    cov = np.linalg.pinv(fisher)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(k > 0, k * np.log(k / (n * p)), 0.0) + np.where(
            n - k > 0, (n - k) * np.log((n - k) / (n * (1 - p))), 0.0
        )
    deviance = float(2 * np.sum(terms))
    ndf = len(n) - 2
    return {
        "theta": theta,
        "cov": cov,
        "deviance": deviance,
        "ndf": ndf,
        "p_value": float(stats.chi2.sf(deviance, ndf)) if ndf > 0 else float("nan"),
    }


def _curve(
    n_pass: np.ndarray,
    n_total: np.ndarray,
    edges: np.ndarray,
    sr_mask: np.ndarray,
    efficiency: float,
    config: SculptingConfig,
    exclude: np.ndarray | None = None,
) -> dict[str, Any]:
    """Straight-line fit of one efficiency curve over the sideband groups, its shape test, and its
    prediction for the SR (mean of the line over the SR bins, weighted by their events)."""
    centres = 0.5 * (edges[:-1] + edges[1:])
    scale = 1000.0  # x in TeV around the SR centre: a well-conditioned line
    sr_centre = 0.5 * (edges[:-1][sr_mask].min() + edges[1:][sr_mask].max())
    usable = ~sr_mask & (n_total > 0) & (np.ones_like(sr_mask) if exclude is None else ~exclude)
    first_sr = int(np.flatnonzero(sr_mask)[0])
    below = np.flatnonzero(usable & (np.arange(len(sr_mask)) < first_sr))[::-1]  # outwards from the SR
    above = np.flatnonzero(usable & (np.arange(len(sr_mask)) > first_sr))
    groups = _groups(n_total, [below, above], efficiency, config.min_expected)
    out: dict[str, Any] = {"n_groups": len(groups)}
    if len(groups) < 3:
        out.update({"fitted": False, "p_value": None, "reason": f"{len(groups)} sideband groups (need 3)"})
        return out
    k = np.array([n_pass[g].sum() for g in groups])
    n = np.array([n_total[g].sum() for g in groups])
    x = np.array([np.average(centres[g], weights=n_total[g]) for g in groups])
    fit = _line_fit(k, n, (x - sr_centre) / scale)
    w_sr = n_total[sr_mask]
    xs = (centres[sr_mask] - sr_centre) / scale
    grad = np.array([1.0, float(np.average(xs, weights=w_sr)) if w_sr.sum() > 0 else 0.0])
    pred = float(fit["theta"] @ grad)
    sigma_pred = float(math.sqrt(max(grad @ fit["cov"] @ grad, 0.0)))
    line = fit["theta"][0] + fit["theta"][1] * (centres - sr_centre) / scale
    out.update(
        {
            "fitted": True,
            "deviance": fit["deviance"],
            "ndf": fit["ndf"],
            "p_value": fit["p_value"],
            "sr_predicted": pred,
            "sr_predicted_err": sigma_pred,
            "line": line.tolist(),
            "slope_per_tev": float(fit["theta"][1]),
        }
    )
    return out


def efficiency_diagnostics(
    mjj: np.ndarray,
    score: np.ndarray,
    in_sr: np.ndarray,
    edges: np.ndarray,
    sr_mask: np.ndarray,
    threshold: float,
    efficiency: float,
    weight: np.ndarray | None = None,
    config: SculptingConfig = DEFAULT_SCULPTING,
) -> dict[str, Any]:
    """Cut efficiency per m_JJ bin over the fit range and the three sculpting tests of one working point.

    mjj, score (N,); in_sr (N,) the events whose scores define the cuts; edges (nbins+1,) GeV; sr_mask
    (nbins,) SR bins; threshold: the working point's cut (score > threshold passes); efficiency its SR
    efficiency in (0, 1). The control tail is score <= the ``efficiency`` quantile of SR scores.
    Returns a JSON-ready dict: per-bin ``n_total``, ``n_pass``, ``efficiency``, ``efficiency_err``,
    ``control_efficiency`` (+ err), the fits, ``tests`` {name: {value, threshold, failed}}, ``sculpted``
    (bool) and ``reasons`` (the failed tests, in words).
    """
    w = np.ones_like(mjj, dtype=float) if weight is None else np.asarray(weight, float)
    in_fit = (mjj >= edges[0]) & (mjj < edges[-1])
    control_cut = float(np.quantile(score[in_sr], efficiency))
    n_total = np.histogram(mjj[in_fit], edges, weights=w[in_fit])[0]
    passed = in_fit & (score > threshold)
    control = in_fit & (score <= control_cut)
    n_pass = np.histogram(mjj[passed], edges, weights=w[passed])[0]
    n_ctrl = np.histogram(mjj[control], edges, weights=w[control])[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        eff = np.where(n_total > 0, n_pass / n_total, np.nan)
        ctrl = np.where(n_total > 0, n_ctrl / n_total, np.nan)
        eff_err = np.sqrt(eff * (1 - eff) / n_total)
        ctrl_err = np.sqrt(ctrl * (1 - ctrl) / n_total)
    sr_lo, sr_hi = edges[:-1][sr_mask].min(), edges[1:][sr_mask].max()
    guard = config.guard if config.guard is not None else 0.5 * (sr_hi - sr_lo)
    centres = 0.5 * (edges[:-1] + edges[1:])
    near = ~sr_mask & (centres > sr_lo - guard) & (centres < sr_hi + guard)
    cut_fit = _curve(n_pass, n_total, edges, sr_mask, efficiency, config, exclude=near)
    ctrl_fit = _curve(n_ctrl, n_total, edges, sr_mask, efficiency, config)
    tests: dict[str, dict[str, Any]] = {}
    reasons = []
    n_sr = float(n_total[sr_mask].sum())
    if ctrl_fit["fitted"] and n_sr > 0:
        observed = float(n_ctrl[sr_mask].sum()) / n_sr
        sigma = math.sqrt(observed * (1 - observed) / n_sr + ctrl_fit["sr_predicted_err"] ** 2)
        z = (observed - ctrl_fit["sr_predicted"]) / sigma if sigma > 0 else 0.0
        tests["control_step"] = {
            "observed": observed,
            "predicted": ctrl_fit["sr_predicted"],
            "z": z,
            "threshold": config.z_max,
            "failed": bool(z > config.z_max),
        }
        if z > config.z_max:
            reasons.append(
                f"control tail {100 * observed:.2f} % in the SR vs {100 * ctrl_fit['sr_predicted']:.2f} % "
                f"from the sidebands ({z:.1f}σ): the scores are distributed differently in the SR"
            )
    for name, fit, what in (("control_shape", ctrl_fit, "control-tail"), ("cut_shape", cut_fit, "cut")):
        if fit["fitted"]:
            failed = bool(fit["p_value"] < config.p_min)
            tests[name] = {
                "deviance": fit["deviance"],
                "ndf": fit["ndf"],
                "p_value": fit["p_value"],
                "threshold": config.p_min,
                "failed": failed,
            }
            if failed:
                reasons.append(
                    f"{what} efficiency not linear in m_JJ over the sidebands (χ² {fit['deviance']:.1f}/"
                    f"{fit['ndf']}, p = {fit['p_value']:.2g})"
                )
    return {
        "efficiency": efficiency,
        "threshold": threshold,
        "control_threshold": control_cut,
        "n_total": n_total.tolist(),
        "n_pass": n_pass.tolist(),
        "n_control": n_ctrl.tolist(),
        "cut_efficiency": eff.tolist(),
        "cut_efficiency_err": eff_err.tolist(),
        "control_efficiency": ctrl.tolist(),
        "control_efficiency_err": ctrl_err.tolist(),
        "guard": guard,
        "cut_fit": cut_fit,
        "control_fit": ctrl_fit,
        "tests": tests,
        "sculpted": bool(reasons),
        "reasons": reasons,
    }

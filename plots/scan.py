"""The sliding-window scan: local p-value versus the SR window's centre (from a saved scan result)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.ticker import FixedLocator, NullFormatter
from scipy import stats

from radar.plots.style import COLORS, experiment_label, percent, style_context, subplots

log = logging.getLogger(__name__)


def _sigma_lines(ax, p_min: float) -> float:
    """Dashed 1σ, 2σ, ... reference lines down to the axis bottom (p_min / 20, at least 3.2σ deep), labelled
    at the right edge; returns the bottom."""
    bottom = min(p_min / 20.0, stats.norm.sf(3.2))
    for z in range(1, 9):
        level = stats.norm.sf(z)
        if level < bottom:
            break
        ax.axhline(level, color="0.5", ls="--", lw=0.8, zorder=0)
        ax.text(
            1.01,
            level,
            f"{z}\u03c3",
            transform=ax.get_yaxis_transform(),
            va="center",
            fontsize=12,
            color="0.4",
        )
    return bottom


def plot_scan(
    scan: Mapping[str, Any],
    style: str = "atlas",
    injected_mass: float | None = None,
    injected_label: str = "Injected mass",
):
    """Local p-value per scan window versus the SR centre (GeV), with 1-5 sigma reference lines.

    scan: the dict written by ``ScanResult.save`` (windows, p_local, z_local, fit_ok, z_max, max_window,
    optional p_global / z_global / n_toys). Windows whose fit was flagged are drawn as open red markers.
    injected_mass (GeV): draws a vertical line labelled ``injected_label``.
    Returns the figure.
    """
    windows = scan["windows"]
    centre = np.array([w["center"] for w in windows], float)
    p = np.clip(np.array(scan["p_local"], float), 1e-300, 1.0)
    ok = np.array(scan["fit_ok"], bool)
    with style_context(style):
        fig, ax = subplots(style, figsize=(9, 6.5))
        ax.plot(centre, p, color=COLORS[0], lw=1.2, zorder=1)
        ax.plot(centre[ok], p[ok], "o", color=COLORS[0], ms=6, zorder=2, label="Local p-value (fit ok)")
        if (~ok).any():
            ax.plot(
                centre[~ok],
                p[~ok],
                "o",
                mfc="none",
                color=COLORS[2],
                ms=8,
                mew=2,
                zorder=2,
                label="Local p-value (fit flagged)",
            )
        bottom = _sigma_lines(ax, float(np.nanmin(p)) if np.isfinite(p).any() else 1e-3)
        if injected_mass is not None:
            ax.axvline(
                injected_mass,
                color=COLORS[1],
                ls=":",
                lw=2,
                label=f"{injected_label} {injected_mass:.0f} GeV",
            )
        ax.set_yscale("log")
        # p = 1 sits at 70 % of the height, leaving the top free for the label, legend and summary; no
        # ticks above p = 1 (a p-value cannot be larger)
        ax.set_ylim(bottom, 10 ** (np.log10(1.0 / bottom) * 0.3 / 0.7))
        ax.axhline(1.0, color="k", lw=0.8)
        decades = np.arange(int(np.floor(np.log10(bottom))), 1)
        # at most ~7 labelled decades (a deep minimum would otherwise label every decade); minor ticks only
        # on short axes, where they help reading values
        step = max(1, int(np.ceil(len(decades) / 7)))
        ax.yaxis.set_major_locator(FixedLocator(10.0 ** decades[::-1][::step]))
        if step == 1:
            minor = (np.arange(2, 10)[None, :] * 10.0 ** decades[:-1, None]).ravel()
            ax.yaxis.set_minor_locator(FixedLocator(minor[minor >= bottom]))
        else:
            ax.yaxis.set_minor_locator(FixedLocator(10.0**decades))
            ax.yaxis.set_minor_formatter(NullFormatter())
        pad = 0.5 * (windows[0]["sr_high"] - windows[0]["sr_low"])
        ax.set_xlim(centre.min() - pad, centre.max() + pad)
        ax.set_xlabel(r"SR centre $m_{JJ}$ [GeV]")
        ax.set_ylabel("Local p-value")
        experiment_label(ax, style)
        width = windows[0]["sr_high"] - windows[0]["sr_low"]
        text = [f"Score cut: {percent(scan['efficiency'])} of each SR ({width:.0f} GeV windows)"]
        best = windows[scan["max_window"]]
        text.append(
            f"Max local Z = {scan['z_max']:.2f} (SR {best['sr_low']:.0f}\u2013{best['sr_high']:.0f} GeV)"
        )
        if scan.get("z_global") is not None:
            how = "toys" if (scan.get("global") or {}).get("method", "toys") == "toys" else "asymptotic"
            text.append(
                f"Global Z = {scan['z_global']:.2f} (p = {scan['p_global']:.3g}, {how}, {scan['n_toys']} toys)"
            )
        ax.text(0.03, 0.9, "\n".join(text), transform=ax.transAxes, fontsize=12, va="top")
        ax.legend(loc="upper right", fontsize=12, bbox_to_anchor=(1.0, 0.9))
    return fig


def plot_blind_scan(scan: Mapping[str, Any], style: str = "atlas", injected_mass: float | None = None):
    """The blind scan (``radar scan``'s ``scan.json``): per method, the local p-value of each window's most
    significant usable working point versus the SR centre (GeV); windows without one (failed, or every
    working point flagged) as crosses at p = 1. 1-5 sigma reference lines; the best window and the global
    significance in the legend box. Returns the figure."""
    windows = scan["windows"]
    centre = np.array([0.5 * (w["sr"][0] + w["sr"][1]) for w in windows], float)
    methods = sorted({m for w in windows for m in w.get("methods", {})})
    with style_context(style):
        fig, ax = subplots(style, figsize=(9, 6.5))
        p_all = []
        for i, method in enumerate(methods):
            z = np.array(
                [(w.get("methods", {}).get(method) or {}).get("local_z") for w in windows], dtype=float
            )
            p = np.clip(stats.norm.sf(z), 1e-300, 1.0)
            good = np.isfinite(z)
            ax.plot(centre[good], p[good], "o-", color=COLORS[i % len(COLORS)], ms=5, lw=1.2, label=method)
            if (~good).any():
                ax.plot(
                    centre[~good], np.ones((~good).sum()), "x", color=COLORS[i % len(COLORS)], ms=8, mew=2
                )
            p_all.extend(p[good])
        bottom = _sigma_lines(ax, min(p_all) if p_all else 1e-3)
        if injected_mass is not None:
            ax.axvline(injected_mass, color="0.3", ls=":", lw=2, label=f"True mass {injected_mass:.0f} GeV")
        ax.set_yscale("log")
        ax.set_ylim(bottom, 10 ** (np.log10(1.0 / bottom) * 0.3 / 0.7))
        ax.axhline(1.0, color="k", lw=0.8)
        width = windows[0]["sr"][1] - windows[0]["sr"][0]
        ax.set_xlim(centre.min() - width / 2, centre.max() + width / 2)
        ax.set_xlabel(r"SR centre $m_{JJ}$ [GeV]")
        ax.set_ylabel("Local p-value (best usable cut)")
        experiment_label(ax, style)
        text = [f"Retrained per window ({width:.0f} GeV SRs)"]
        best = scan.get("best")
        if best:
            text.append(
                f"Max local Z = {best['local_z']:.2f} (SR {best['sr'][0]:.0f}\u2013{best['sr'][1]:.0f} GeV)"
            )
        glob = scan.get("global") or {}
        if glob.get("z_global") is not None:
            how = "toys" if glob["method"] == "toys" else "asymptotic"
            text.append(f"Global Z = {glob['z_global']:.2f} ({how}, {glob['n_toys']} toys)")
        ax.text(0.03, 0.9, "\n".join(text), transform=ax.transAxes, fontsize=12, va="top")
        ax.legend(loc="upper right", fontsize=12, bbox_to_anchor=(1.0, 0.9))
    return fig

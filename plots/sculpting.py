"""What a score cut did to the background: the cut efficiency (top tail) and the control-tail efficiency
per m_JJ bin over the fit range, with the straight lines fitted to the sidebands (saved results only:
the ``sculpting`` dict of a working point written by ``analysis.bumphunt``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from radar.plots.style import COLORS, experiment_label, percent, ratio_axes, style_context


def plot_cut_efficiency(wp: Mapping[str, Any], signal_region: Sequence[float], style: str = "atlas"):
    """Upper panel: cut efficiency per m_JJ bin (passing / all events) with the sideband line; lower panel:
    the control tail (the lowest-scoring ``eff`` of the SR) likewise. The SR is shaded; a sculpted working
    point says so in the legend. Returns the figure."""
    diag = wp["sculpting"]
    edges = np.asarray(wp["edges"], float)
    centres = 0.5 * (edges[1:] + edges[:-1])
    half = 0.5 * np.diff(edges)
    sr_lo, sr_hi = signal_region
    panels = (
        ("cut_efficiency", "cut_fit", f"{percent(wp['efficiency'])}: pass", COLORS[0]),
        ("control_efficiency", "control_fit", "control tail: pass", COLORS[1]),
    )
    with style_context(style):
        fig, ax, low = ratio_axes(style, height_ratios=(1.0, 1.0), figsize=(9.0, 8.5))
        for axis, (key, fit_key, label, color) in zip((ax, low), panels):
            eff = np.asarray(diag[key], float)
            err = np.asarray(diag[key + "_err"], float)
            ok = np.isfinite(eff)
            axis.axvspan(sr_lo, sr_hi, color="0.92", zorder=0)
            axis.errorbar(
                centres[ok], eff[ok], yerr=err[ok], xerr=half[ok], fmt="o", ms=4, color=color, label=label
            )
            fit = diag[fit_key]
            if fit.get("fitted"):
                axis.plot(
                    centres,
                    fit["line"],
                    "-",
                    color="k",
                    lw=1.2,
                    label=f"sideband line, χ²/ndf {fit['deviance']:.1f}/{fit['ndf']}",
                )
            axis.axhline(wp["efficiency"], color="0.5", ls=":", lw=1)
            top = np.nanmax(np.where(ok, eff + err, np.nan)) if ok.any() else 1.0
            axis.set_ylim(0, max(top * 1.6, 1.8 * wp["efficiency"]))
            axis.legend(loc="upper right", fontsize=11)
        ax.set_ylabel("Cut efficiency")
        low.set_ylabel("Control-tail efficiency")
        failed = [name for name, test in diag["tests"].items() if test["failed"]]
        step = diag["tests"].get("control_step")
        verdict = ("SCULPTED (" + ", ".join(failed) + ")") if diag["sculpted"] else "no sculpting found"
        if step:
            verdict += f"\ncontrol tail in the SR vs sidebands: {step['z']:+.1f}σ"
        ax.text(
            0.03,
            0.80,
            verdict,
            transform=ax.transAxes,
            va="top",
            fontsize=12,
            color="firebrick" if diag["sculpted"] else "0.2",
        )
        low.set_xlabel(r"$m_{JJ}$ [GeV]")
        low.set_xlim(edges[0], edges[-1])
        experiment_label(ax, style)
    return fig

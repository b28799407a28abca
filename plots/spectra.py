"""m_JJ spectra with the sideband fit and pulls, significance per working point, and feature marginals of
a background template against data with ratio panels. Inputs are saved results (the JSON dicts written by
``analysis.bumphunt``) or plain tables, never live fit objects.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mplhep as hep
import numpy as np
from matplotlib.ticker import NullLocator

from radar.plots.style import (
    COLORS,
    com_label,
    experiment_label,
    percent,
    ratio_axes,
    save_figure,
    style_context,
    subplots,
)

log = logging.getLogger(__name__)

FEATURE_LABELS: dict[str, str] = {
    "mjj": r"$m_{JJ}$ [GeV]",
    "mj1": r"$m_{J_1}$ [GeV]",
    "mj2": r"$m_{J_2}$ [GeV]",
    "delta_mj": r"$\Delta m_{J}$ [GeV]",
    "tau21_j1": r"$\tau_{21}^{J_1}$",
    "tau21_j2": r"$\tau_{21}^{J_2}$",
    "tau32_j1": r"$\tau_{32}^{J_1}$",
    "tau32_j2": r"$\tau_{32}^{J_2}$",
    "delta_r_jj": r"$\Delta R_{JJ}$",
    "pt_j1": r"$p_{T}^{J_1}$ [GeV]",
    "pt_j2": r"$p_{T}^{J_2}$ [GeV]",
    "eta_j1": r"$\eta^{J_1}$",
    "eta_j2": r"$\eta^{J_2}$",
    "ht": r"$H_{T}$ [GeV]",
    "met": r"$E_{T}^{miss}$ [GeV]",
}


def poisson_interval(counts: np.ndarray, cl: float = 0.682689) -> tuple[np.ndarray, np.ndarray]:
    """Garwood central Poisson interval: (lower, upper) error bar lengths for (nbins,) counts."""
    from scipy import stats

    counts = np.asarray(counts, float)
    alpha = 1.0 - cl
    lower = np.where(counts > 0, stats.chi2.ppf(alpha / 2, 2 * counts) / 2, 0.0)
    upper = stats.chi2.ppf(1 - alpha / 2, 2 * (counts + 1)) / 2
    return counts - lower, upper - counts


def plot_spectrum(
    wp: Mapping[str, Any], signal_region: Sequence[float], style: str = "atlas", title: str | None = None
):
    """m_JJ spectrum of one working point with the sideband fit, its uncertainty and a pull panel.

    wp: one entry of ``result["working_points"]`` (edges, counts, expected, expected_err, pulls, sr_mask,
    fit, n_obs, b, sigma_b, z_local, efficiency, optional signal_counts). Returns the figure.
    """
    edges = np.asarray(wp["edges"], float)
    counts = np.asarray(wp["counts"], float)
    expected = np.asarray(wp["expected"], float)
    err = np.asarray(wp["expected_err"], float)
    pulls = np.asarray(wp["pulls"], float)
    centres = 0.5 * (edges[1:] + edges[:-1])
    fit = wp["fit"]
    sr_lo, sr_hi = signal_region
    with style_context(style):
        fig, ax, low = ratio_axes(style, figsize=(9.0, 8.5))
        ax.axvspan(sr_lo, sr_hi, color="0.92", zorder=0, label="Signal region")
        if np.all(np.isfinite(expected)):
            hep.histplot(
                expected,
                edges,
                ax=ax,
                color=COLORS[0],
                lw=2,
                label=f"Dijet fit ({fit['n_params']} par.), sidebands",
            )
            ax.stairs(
                expected + err,
                edges,
                baseline=expected - err,
                fill=True,
                color=COLORS[0],
                alpha=0.3,
                label="Fit uncertainty",
            )
        signal = wp.get("signal_counts")
        if signal is not None and np.sum(signal) > 0:
            hep.histplot(
                np.asarray(signal, float),
                edges,
                ax=ax,
                color=COLORS[2],
                ls="--",
                lw=1.5,
                label="True signal (selected)",
            )
        # Garwood (exact Poisson 68 %) intervals; empty bins are not drawn on the log scale
        filled = counts > 0
        low_err, high_err = poisson_interval(counts)
        ax.errorbar(
            centres[filled],
            counts[filled],
            yerr=(low_err[filled], high_err[filled]),
            fmt="o",
            color="k",
            ms=4,
            label="Data",
        )
        ax.set_yscale("log")
        positive = counts[counts > 0]
        top = max(
            positive.max() if positive.size else 1.0,
            np.nanmax(expected) if np.any(np.isfinite(expected)) else 1.0,
        )
        floor = positive.min() if positive.size else 1.0
        if signal is not None and np.sum(signal) > 0:
            floor = min(floor, np.max(signal) / 5.0)  # keep the true-signal peak in view
        bottom = max(0.5 * floor, 0.3)
        ax.set_ylim(bottom, top * 10 ** (0.45 * np.log10(top / bottom) + 0.5))
        ax.set_ylabel(f"Events / {edges[1] - edges[0]:.0f} GeV")
        experiment_label(ax, style)
        flags = wp.get("flags") or fit.get("flags") or []
        lines = [
            f"{percent(wp['efficiency'])} of SR events" if wp["efficiency"] < 1 else "No score cut",
            rf"SB fit $\chi^2$/ndf = {fit['deviance']:.1f}/{fit['ndf']}",
            f"SR: obs {wp['n_obs']:.0f}, exp {wp['b']:.1f} ± {wp['sigma_b']:.1f}",
            f"Local Z = {wp['z_local']:.2f}",
        ]
        if flags:
            lines.append(f"FIT FLAGGED: {', '.join(flags)}")
        if fit.get("warnings"):
            lines.append(f"Fit warning: {', '.join(fit['warnings'])}")
        if title:
            lines.insert(0, title)
        ax.text(
            0.03,
            0.88,
            "\n".join(lines),
            transform=ax.transAxes,
            va="top",
            fontsize=12,
            color="firebrick" if flags else "k",
        )
        ax.legend(loc="upper right", fontsize=12, bbox_to_anchor=(1.0, 0.90))

        low.axvspan(sr_lo, sr_hi, color="0.92", zorder=0)
        low.bar(
            centres,
            np.nan_to_num(pulls),
            width=np.diff(edges),
            color=np.where((centres > sr_lo) & (centres < sr_hi), COLORS[2], COLORS[3]),
            edgecolor="none",
        )
        low.axhline(0, color="k", lw=0.8)
        lim = max(3.5, float(np.nanmax(np.abs(pulls))) * 1.15 if np.any(np.isfinite(pulls)) else 3.5)
        low.set_ylim(-lim, lim)
        low.set_ylabel("(Data − Fit) / \u221aFit", fontsize=13)
        low.set_xlabel(r"$m_{JJ}$ [GeV]")
        low.set_xlim(edges[0], edges[-1])
    return fig


def plot_significance_vs_efficiency(result: Mapping[str, Any], style: str = "atlas"):
    """Local Z in the SR versus the working point's SR efficiency. Flagged fits: open red markers; working
    points without a prediction (no valid fit): red crosses at Z = 0. With truth labels, the Asimov
    expectation from the true S and B in the SR (no fit uncertainty) is overlaid. Returns the figure."""
    wps = result["working_points"]
    eff = np.array([wp["efficiency"] for wp in wps], float)
    z = np.array([np.nan if wp["z_local"] is None else wp["z_local"] for wp in wps], float)
    ok = np.array([wp["fit"]["ok"] for wp in wps]) & np.isfinite(z)
    missing = ~np.isfinite(z)
    with style_context(style):
        fig, ax = subplots(style, figsize=(8, 6))
        ax.plot(eff[np.isfinite(z)], z[np.isfinite(z)], color=COLORS[0], lw=1.5, zorder=1)
        ax.scatter(eff[ok], z[ok], color=COLORS[0], s=50, zorder=2, label="Fit ok")
        flagged = ~ok & ~missing
        if flagged.any():
            ax.scatter(
                eff[flagged],
                z[flagged],
                facecolors="none",
                edgecolors=COLORS[2],
                s=70,
                zorder=2,
                label="Fit flagged",
            )
        if missing.any():
            ax.scatter(
                eff[missing],
                np.zeros(missing.sum()),
                marker="x",
                color=COLORS[2],
                s=70,
                zorder=2,
                clip_on=False,
                label="No valid fit",
            )
        expected = np.array([(wp.get("truth") or {}).get("z_asimov", np.nan) for wp in wps], float)
        if np.isfinite(expected).any():
            good = np.isfinite(expected)
            ax.plot(
                eff[good],
                expected[good],
                color=COLORS[1],
                ls="--",
                marker="s",
                label="Expected (true S, B; Asimov)",
            )
        ax.set_xscale("log")
        ax.set_xlim(eff.max() * 1.6, eff.min() / 1.6)  # tighter cuts to the right
        ax.set_xticks(eff, [percent(e).replace("top ", "") for e in eff])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("Score cut (fraction of SR events kept)")
        ax.set_ylabel("Local significance Z")
        top = np.nanmax(np.r_[z, expected, 1.0])
        ax.set_ylim(0, top * 1.5 + 0.5)
        experiment_label(ax, style)
        ax.legend(loc="upper left", bbox_to_anchor=(0.0, 0.9), fontsize=13)
    return fig


def plot_bumphunt(
    result: Mapping[str, Any], outdir: str | Path, style: str = "atlas", prefix: str = "mjj"
) -> list[Path]:
    """Every bump-hunt figure of a saved result: one spectrum per working point, the cut efficiency vs m_JJ
    of every cut (``efficiency_<tag>``), and Z vs efficiency.

    result: the dict written by ``BumpHuntResult.save``. Writes PNG + PDF into ``outdir``; returns the PNGs.
    """
    outdir = Path(outdir)
    paths = []
    for wp in result["working_points"]:
        tag = "nocut" if wp["efficiency"] >= 1 else f"eff{wp['efficiency']:g}".replace(".", "p")
        fig = plot_spectrum(wp, result["signal_region"], style)
        paths.append(save_figure(fig, outdir / f"{prefix}_{tag}")[0])
        if wp.get("sculpting"):
            from radar.plots.sculpting import plot_cut_efficiency

            fig = plot_cut_efficiency(wp, result["signal_region"], style)
            paths.append(save_figure(fig, outdir / f"efficiency_{tag}")[0])
    fig = plot_significance_vs_efficiency(result, style)
    paths.append(save_figure(fig, outdir / f"{prefix}_significance")[0])
    return paths


def plot_feature_marginals(
    data,
    template,
    features: Sequence[str],
    *,
    data_weight=None,
    template_weight=None,
    bins: int = 40,
    style: str = "atlas",
    data_label: str = "SR data",
    template_label: str = "Background template",
):
    """Normalised marginals of ``features`` for data and a background template, with data/template ratios.

    data, template: mappings (e.g. DataFrames) of feature name -> (N,) values (GeV for masses); optional
    per-event weights. Bins span the central 99.8 % of the data; each histogram is normalised to unit sum.
    Returns the figure (one column per feature).
    """
    n = len(features)
    if n == 0:
        raise ValueError("plot_feature_marginals needs at least one feature")
    with style_context(style):
        fig, axes = subplots(
            style,
            2,
            n,
            figsize=(5.5 * n, 6.5),
            squeeze=False,
            sharex="col",
            gridspec_kw={"height_ratios": (3, 1), "hspace": 0.06, "wspace": 0.38},
        )
        for j, name in enumerate(features):
            if name not in data or name not in template:
                raise KeyError(
                    f"feature {name!r} missing from the {'data' if name not in data else 'template'} table"
                )
            x = np.asarray(data[name], float)
            y = np.asarray(template[name], float)
            wx = None if data_weight is None else np.asarray(data_weight, float)
            wy = None if template_weight is None else np.asarray(template_weight, float)
            finite = x[np.isfinite(x)]
            lo, hi = np.quantile(finite, [0.001, 0.999]) if finite.size else (0.0, 1.0)
            edges = np.linspace(lo, hi, bins + 1)
            hx, _ = np.histogram(x, edges, weights=wx)
            hx2, _ = np.histogram(x, edges, weights=None if wx is None else wx**2)
            hy, _ = np.histogram(y, edges, weights=wy)
            hy2, _ = np.histogram(y, edges, weights=None if wy is None else wy**2)
            nx, ny = max(hx.sum(), 1e-300), max(hy.sum(), 1e-300)
            ax, low = axes[0, j], axes[1, j]
            hep.histplot(hy / ny, edges, ax=ax, color=COLORS[0], lw=2, label=template_label)
            ax.stairs(
                (hy + np.sqrt(hy2)) / ny,
                edges,
                baseline=(hy - np.sqrt(hy2)) / ny,
                fill=True,
                color=COLORS[0],
                alpha=0.3,
            )
            centres = 0.5 * (edges[1:] + edges[:-1])
            ax.errorbar(centres, hx / nx, yerr=np.sqrt(hx2) / nx, fmt="o", ms=3, color="k", label=data_label)
            ax.set_ylabel("Fraction of events / bin")
            ax.set_ylim(0, ax.get_ylim()[1] * 1.45)
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = (hx / nx) / (hy / ny)
                ratio_err = np.sqrt(hx2) / nx / (hy / ny)
            finite = np.isfinite(ratio) & np.isfinite(ratio_err)  # empty template bins have no ratio
            low.errorbar(centres[finite], ratio[finite], yerr=ratio_err[finite], fmt="o", ms=3, color="k")
            low.axhline(1, color=COLORS[0], lw=1)
            low.set_ylim(0.5, 1.5)
            low.set_ylabel("Data / Templ.", fontsize=13)
            low.set_xlabel(FEATURE_LABELS.get(name, name))
            low.set_xlim(edges[0], edges[-1])
            if j == 0:
                experiment_label(ax, style, show_com=n == 1)
                ax.legend(loc="upper right", bbox_to_anchor=(1.0, 0.88), fontsize=12)
            if j == n - 1 and n > 1:
                com_label(ax)
    return fig

"""Figures of the template comparison studies (:mod:`radar.analysis.compare`).

Each function takes the table its study returns and gives back a matplotlib figure (save it with
:func:`radar.plots.style.save_figure`, which writes PNG and PDF atomically):

- :func:`plot_template_ks`: KS distance per feature and template (grouped bars).
- :func:`plot_correlation_matrices`: score correlations on background and on signal side by side.
- :func:`plot_top_overlap`: top-p % overlap per method pair versus p, with the random baseline.
- :func:`plot_auc_vs_truth`: template-vs-truth AUCs against the truth-vs-truth band.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from radar.plots.style import COLORS, experiment_label, style_context, subplots

log = logging.getLogger(__name__)

__all__ = ["plot_auc_vs_truth", "plot_correlation_matrices", "plot_template_ks", "plot_top_overlap"]


def plot_template_ks(ks: pd.DataFrame, style: str = "atlas"):
    """Grouped bars of the KS distance (``ks`` table of :func:`radar.analysis.compare.template_ks`: columns
    ``method, feature, ks``), one group per feature, one bar per template. Returns the figure."""
    missing = {"method", "feature", "ks"} - set(ks.columns)
    if missing:
        raise ValueError(f"plot_template_ks: table lacks columns {sorted(missing)}")
    methods = list(dict.fromkeys(ks["method"]))
    features = list(dict.fromkeys(ks["feature"]))
    width = 0.8 / max(len(methods), 1)
    with style_context(style):
        fig, ax = subplots(style, figsize=(max(8, 2 * len(features) + 4), 6), layout="constrained")
        x = np.arange(len(features))
        for k, method in enumerate(methods):
            part = ks[ks["method"] == method].set_index("feature").reindex(features)
            ax.bar(
                x + (k - (len(methods) - 1) / 2) * width,
                part["ks"].to_numpy(),
                width,
                color=COLORS[k % len(COLORS)],
                label=method,
            )
        ax.set_xticks(x, features)
        ax.minorticks_off()
        ax.set_ylabel("KS distance to true SR background")
        ax.ticklabel_format(axis="y", style="plain")  # no "x10^-2" offset text under the experiment label
        ax.set_ylim(0, ax.get_ylim()[1] * 1.35)
        ax.legend(loc="upper right", ncols=2, fontsize=12)
        experiment_label(ax, style)
    return fig


def plot_correlation_matrices(corr: Mapping[str, pd.DataFrame], style: str = "atlas"):
    """Annotated correlation matrices (``{"background": DataFrame, "signal": DataFrame}`` of
    :func:`radar.analysis.compare.score_correlations`) side by side. Returns the figure."""
    if not corr:
        raise ValueError("plot_correlation_matrices: no matrices given")
    names = list(next(iter(corr.values())).columns)
    n = len(names)
    with style_context(style):
        fig, axes = subplots(
            style,
            1,
            len(corr),
            squeeze=False,
            layout="constrained",
            figsize=((1.4 * n + 5) * len(corr), 1.3 * n + 3.5),
        )
        for ax, (title, frame) in zip(axes[0], corr.items()):
            matrix = frame.to_numpy(dtype=np.float64)
            image = ax.imshow(matrix, vmin=-1.0, vmax=1.0, cmap="RdBu_r")
            for a in range(n):
                for b in range(n):
                    value = matrix[a, b]
                    text = "n/a" if not np.isfinite(value) else f"{value:.2f}"
                    ax.text(
                        b,
                        a,
                        text,
                        ha="center",
                        va="center",
                        fontsize=13,
                        color="white" if np.isfinite(value) and abs(value) > 0.6 else "black",
                    )
            ax.set_xticks(range(n), names, rotation=30, ha="right")
            ax.set_yticks(range(n), names)
            ax.minorticks_off()
            ax.tick_params(top=False, right=False)
            fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label=f"Score correlation ({title})")
            experiment_label(ax, style)
    return fig


def plot_top_overlap(overlap: pd.DataFrame, style: str = "atlas"):
    """Overlap of the top p % events per method pair versus p (table of
    :func:`radar.analysis.compare.top_overlap`), with the random-selection baseline. Returns the figure."""
    missing = {"method_a", "method_b", "percent", "overlap", "random"} - set(overlap.columns)
    if missing:
        raise ValueError(f"plot_top_overlap: table lacks columns {sorted(missing)}")
    with style_context(style):
        fig, ax = subplots(style, figsize=(9, 7), layout="constrained")
        pairs = list(dict.fromkeys(zip(overlap["method_a"], overlap["method_b"])))
        for k, (a, b) in enumerate(pairs):
            part = overlap[(overlap["method_a"] == a) & (overlap["method_b"] == b)].sort_values("percent")
            ax.plot(
                part["percent"],
                part["overlap"],
                marker="o",
                color=COLORS[k % len(COLORS)],
                label=f"{a} & {b}",
            )
        base = overlap.drop_duplicates("percent").sort_values("percent")
        ax.plot(base["percent"], base["random"], ls="--", color="black", label="random")
        ax.set_xscale("log")
        ax.set_xlabel("Top p [%] of most signal-like events")
        ax.set_ylabel("Fraction selected by both")
        ax.set_ylim(0, 1.35)
        ax.legend(loc="upper left", ncols=2, fontsize=11, bbox_to_anchor=(0.0, 0.92))
        experiment_label(ax, style)
    return fig


def plot_auc_vs_truth(results: Mapping[str, Mapping[str, Any]], style: str = "atlas"):
    """Template-vs-truth AUC per template (points: repeats; marker: median) against the truth-vs-truth
    band (mean ± 2 std), from ``{template: auc_vs_truth(...)}``. Returns the figure."""
    if not results:
        raise ValueError("plot_auc_vs_truth: no results given")
    names = list(results)
    with style_context(style):
        fig, ax = subplots(style, figsize=(max(8, 1.5 * len(names) + 4), 6), layout="constrained")
        for k, name in enumerate(names):
            r = results[name]
            lo, hi = r["band"]
            ax.fill_between(
                [k - 0.4, k + 0.4],
                lo,
                hi,
                color="grey",
                alpha=0.3,
                label="truth vs truth (mean ± 2σ)" if k == 0 else None,
            )
            ax.plot([k - 0.4, k + 0.4], [r["truth_mean"]] * 2, color="grey")
            ax.plot(
                np.full(len(r["template_auc"]), k),
                r["template_auc"],
                "o",
                color=COLORS[k % len(COLORS)],
                alpha=0.5,
            )
            ax.plot(
                [k],
                [r["template_median"]],
                "D",
                color=COLORS[k % len(COLORS)],
                markersize=10,
                markeredgecolor="black",
            )
        ax.axhline(0.5, ls=":", color="black")
        ax.set_xticks(range(len(names)), names)
        ax.minorticks_off()
        ax.set_ylabel("AUC vs true SR background")
        low, high = ax.get_ylim()
        ax.set_ylim(low, high + 0.35 * (high - low))
        ax.legend(loc="upper right", fontsize=12)
        experiment_label(ax, style)
    return fig

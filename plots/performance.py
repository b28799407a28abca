"""Classifier-performance figures: ROC (background rejection) and SIC curves with bands over seeds, max SIC
and SIC at fixed rejection versus the injected S/B, and score correlations between methods.

Inputs are saved results: per-seed curves as arrays (``{"tpr": ..., "fpr": ...}``), metric tables as
DataFrames (one row per method x injection x seed, e.g. flattened ``metrics.json`` files via
:func:`metrics_frame`) and score tables (one column per method, rows aligned on the same events).
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from radar.plots.style import COLORS, experiment_label, style_context, subplots

log = logging.getLogger(__name__)

Curve = Mapping[str, np.ndarray]


def _band(curves: Sequence[Curve], grid: np.ndarray, fpr_floor: float | None) -> dict[str, np.ndarray]:
    """Rejection and SIC of each seed on a common TPR grid; median and 16-84 % (or min-max for < 3 seeds)."""
    rejection, sic = [], []
    for curve in curves:
        tpr = np.asarray(curve["tpr"], float)
        fpr = np.asarray(curve["fpr"], float)
        order = np.argsort(tpr, kind="stable")
        tpr, fpr = tpr[order], fpr[order]
        # np.interp needs increasing x: keep the smallest fpr reached at each tpr
        utpr, first = np.unique(tpr, return_index=True)
        ufpr = np.minimum.reduceat(fpr, first)
        f = np.interp(grid, utpr, ufpr, left=np.nan, right=np.nan)
        bad = ~(f > 0)
        if fpr_floor is not None:
            bad |= f < fpr_floor
        f = np.where(bad, np.nan, f)
        rejection.append(1.0 / f)
        sic.append(grid / np.sqrt(f))
    out = {}
    for name, values in (("rejection", np.array(rejection)), ("sic", np.array(sic))):
        lo_q, hi_q = (16, 84) if len(curves) >= 3 else (0, 100)
        # where fewer than half of the seeds reach this efficiency (beyond the floor) show nothing
        sparse = np.isfinite(values).sum(axis=0) < max(1, (len(curves) + 1) // 2)
        values = np.where(sparse[None, :], np.nan, values)
        with warnings.catch_warnings():  # all-NaN columns are expected
            warnings.simplefilter("ignore", RuntimeWarning)
            out[name] = np.nanmedian(values, axis=0)
            out[name + "_lo"] = np.nanpercentile(values, lo_q, axis=0)
            out[name + "_hi"] = np.nanpercentile(values, hi_q, axis=0)
    return out


def plot_roc_sic(
    curves: Mapping[str, Sequence[Curve]],
    style: str = "atlas",
    fpr_floor: float | None = None,
    title: str | None = None,
):
    """Background rejection 1/ε_B and SIC = ε_S/√ε_B versus signal efficiency ε_S, median over seeds with
    a 16-84 % band (min-max for fewer than 3 seeds), one colour per method; dotted: a random classifier.

    curves: method -> list over seeds of ``{"tpr": (K,), "fpr": (K,)}``. fpr_floor: points with a smaller
    background efficiency are dropped (the statistical floor of the test set). Returns the figure.
    """
    grid = np.linspace(0.005, 1.0, 400)
    with style_context(style):
        fig, (ax_roc, ax_sic) = subplots(style, 1, 2, figsize=(16, 7))
        for i, (method, seeds) in enumerate(curves.items()):
            if not seeds:
                continue
            band = _band(seeds, grid, fpr_floor)
            color = COLORS[i % len(COLORS)]
            label = f"{method} ({len(seeds)} seed{'s' if len(seeds) > 1 else ''})"
            for ax, key in ((ax_roc, "rejection"), (ax_sic, "sic")):
                ax.plot(grid, band[key], color=color, lw=2, label=label)
                ax.fill_between(grid, band[key + "_lo"], band[key + "_hi"], color=color, alpha=0.25, lw=0)
        ax_roc.plot(grid, 1.0 / grid, color="k", ls=":", label="Random")
        ax_sic.plot(grid, np.sqrt(grid), color="k", ls=":", label="Random")
        ax_roc.set_yscale("log")
        ax_roc.set_ylabel(r"Background rejection $1/\epsilon_B$")
        ax_sic.set_ylabel("SIC = $\\epsilon_S$ / \u221a$\\epsilon_B$")
        for ax in (ax_roc, ax_sic):
            ax.set_xlabel(r"Signal efficiency $\epsilon_S$")
            ax.set_xlim(0, 1)
            experiment_label(ax, style)
        top = ax_sic.get_ylim()[1]
        ax_sic.set_ylim(0, top * 1.35)
        lo, hi = ax_roc.get_ylim()
        ax_roc.set_ylim(max(lo, 0.8), hi * 6)
        ax_roc.legend(loc="upper right", fontsize=12, bbox_to_anchor=(1.0, 0.9))
        if title:
            ax_sic.text(0.04, 0.88, title, transform=ax_sic.transAxes, fontsize=13, va="top")
    return fig


def metrics_frame(sources: Iterable[str | Path | Mapping[str, Any]]) -> pd.DataFrame:
    """Flatten per-unit ``metrics.json`` files (or dicts) into one row each: top-level scalars plus the
    ``test`` sub-dict's scalars (``max_sic``, ``sic_at_rejection``, ``auc`` ...). Returns a DataFrame."""
    rows = []
    for source in sources:
        data = source if isinstance(source, Mapping) else json.loads(Path(source).read_text())
        row = {k: v for k, v in data.items() if np.isscalar(v) or v is None}
        for key, value in (data.get("test") or {}).items():
            if np.isscalar(value):
                row[key] = value
        rows.append(row)
    return pd.DataFrame(rows)


def plot_metrics_vs_injection(
    table: pd.DataFrame,
    metrics: Sequence[str] = ("max_sic", "sic_at_rejection"),
    x: str = "s_over_b",
    method: str = "method",
    style: str = "atlas",
    x_label: str = "S/B in the SR",
    log_x: bool = True,
):
    """Metrics versus the injected signal: median over seeds with a 16-84 % band, one panel per metric.

    table: one row per method x injection x seed with columns ``method``, ``x`` and each metric.
    Returns the figure.
    """
    missing = [c for c in (x, method, *metrics) if c not in table.columns]
    if missing:
        raise KeyError(f"metric table lacks columns {missing} (has {list(table.columns)})")
    labels = {"max_sic": "max SIC", "sic_at_rejection": "SIC at fixed rejection", "auc": "AUC"}
    if "rejection" in table.columns and table["rejection"].nunique() == 1:
        labels["sic_at_rejection"] = f"SIC at $1/\\epsilon_B$ = {table['rejection'].iloc[0]:g}"
    with style_context(style):
        fig, axes = subplots(style, 1, len(metrics), figsize=(8 * len(metrics), 6.5), squeeze=False)
        for j, metric in enumerate(metrics):
            ax = axes[0, j]
            for i, (name, group) in enumerate(table.groupby(method, sort=False)):
                stats = group.groupby(x)[metric].agg(
                    median="median",
                    lo=lambda v: np.nanpercentile(v, 16),
                    hi=lambda v: np.nanpercentile(v, 84),
                )
                stats = stats.sort_index()
                xs = stats.index.to_numpy(float)
                color = COLORS[i % len(COLORS)]
                # beyond the palette, the colours repeat with another line style and marker
                cycle = i // len(COLORS)
                ax.plot(xs, stats["median"], ("o-", "s--", "^:")[cycle % 3], color=color, lw=2, label=name)
                ax.fill_between(xs, stats["lo"], stats["hi"], color=color, alpha=0.25, lw=0)
            if metric != "auc":
                ax.axhline(1.0, color="k", ls=":", lw=1, label="No improvement")
            xs_all = table[x].to_numpy(float)
            xs_all = xs_all[np.isfinite(xs_all) & ((xs_all > 0) if log_x else True)]
            if log_x:
                ax.set_xscale("log")
                if xs_all.size:
                    ax.set_xlim(xs_all.min() / 1.4, xs_all.max() * 1.4)
                    values = np.unique(xs_all)
                    if len(values) <= 8:  # ticks at the injections: log minor labels overlap within a decade
                        from matplotlib.ticker import NullFormatter

                        ax.set_xticks(values, [f"{v:.3g}" for v in values])
                        ax.xaxis.set_minor_formatter(NullFormatter())
            elif xs_all.size:
                pad = 0.05 * (xs_all.max() - xs_all.min() or 1.0)
                ax.set_xlim(xs_all.min() - pad, xs_all.max() + pad)
            ax.set_xlabel(x_label)
            ax.set_ylabel(labels.get(metric, metric))
            n_lines = table[method].nunique()
            ax.set_ylim(0, ax.get_ylim()[1] * (1.35 if n_lines <= 5 else 1.8))
            experiment_label(ax, style)
            if j == 0:
                ax.legend(
                    loc="upper left",
                    fontsize=12 if n_lines <= 5 else 10,
                    bbox_to_anchor=(0.0, 0.92),
                    ncols=1 if n_lines <= 5 else 3,
                )
    return fig


def plot_score_correlations(
    scores: pd.DataFrame, style: str = "atlas", method: str = "spearman", top_fraction: float | None = None
):
    """Correlation matrix of the anomaly scores of several methods (columns of ``scores``, rows the same
    events), annotated. ``top_fraction``: also show, in a second panel, the overlap of the top
    ``top_fraction`` events (|A∩B| / |A|). Returns the figure."""
    if scores.shape[1] < 2:
        raise ValueError(f"score correlations need at least two methods, got columns {list(scores.columns)}")
    corr = scores.corr(method=method).to_numpy()
    names = list(scores.columns)
    panels = [(corr, f"{method.capitalize()} correlation", -1.0, 1.0)]
    if top_fraction is not None:
        k = max(1, int(round(top_fraction * len(scores))))
        top = [set(np.argsort(-scores[c].to_numpy(), kind="stable")[:k]) for c in names]
        overlap = np.array([[len(a & b) / k for b in top] for a in top])
        panels.append((overlap, f"Overlap of top {100 * top_fraction:.3g}%", 0.0, 1.0))
    n = len(names)
    with style_context(style):
        fig, axes = subplots(
            style,
            1,
            len(panels),
            squeeze=False,
            layout="constrained",
            figsize=((1.4 * n + 5) * len(panels), 1.3 * n + 3.5),
        )
        for ax, (matrix, title, vmin, vmax) in zip(axes[0], panels):
            image = ax.imshow(matrix, vmin=vmin, vmax=vmax, cmap="RdBu_r" if vmin < 0 else "Blues")
            for a in range(n):
                for b in range(n):
                    value = matrix[a, b]
                    ax.text(
                        b,
                        a,
                        f"{value:.2f}",
                        ha="center",
                        va="center",
                        fontsize=13,
                        color="white" if abs(value) > 0.6 else "black",
                    )
            ax.set_xticks(range(n), names, rotation=30, ha="right")
            ax.set_yticks(range(n), names)
            ax.minorticks_off()
            ax.tick_params(top=False, right=False)
            fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label=title)
            experiment_label(ax, style)
    return fig

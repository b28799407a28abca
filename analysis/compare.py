"""Comparison studies of background-template methods (the interplay paper, sections 3-4).

- :func:`template_ks`: per-feature Kolmogorov-Smirnov distance (and an approximate p-value) of each
  template against the true SR background (needs truth labels).
- :func:`score_correlations`: Pearson or Spearman correlation matrices of the anomaly scores of the
  methods, separately on true background and on true signal events.
- :func:`top_overlap`: for each pair of methods, the fraction of the top ``p`` % most signal-like
  events that both select, with the random baseline (``p`` itself: two independent random selections
  of a fraction p of the events share a fraction p of them).
- :func:`auc_vs_truth`: AUC of a classifier separating a template from true SR background at zero
  injection, against the spread of the same classifier separating two halves of the true background
  ("truth vs truth"): a template whose AUC sits inside that spread leaks no fake signal.

All inputs are plain arrays/tables; nothing here trains a template. :func:`write_comparison` runs the
studies that its inputs allow and writes their tables (CSV + Markdown) atomically.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from radar.analysis.metrics import effective_size

log = logging.getLogger(__name__)

__all__ = [
    "auc_vs_truth",
    "compare_run",
    "effective_size",
    "score_correlations",
    "template_ks",
    "top_overlap",
    "truth_auc_spread",
    "write_comparison",
]

Sample = tuple[pd.DataFrame, np.ndarray | None]


def _check_sample(
    name: str, events: pd.DataFrame, weights: np.ndarray | None, features: Sequence[str]
) -> np.ndarray:
    missing = [f for f in features if f not in events.columns]
    if missing:
        raise ValueError(f"{name}: missing columns {missing}; has {list(events.columns)}")
    w = np.ones(len(events)) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape != (len(events),) or not np.isfinite(w).all() or (w < 0).any():
        raise ValueError(
            f"{name}: weights must be finite, >= 0 and one per event ({len(events)}), got {w.shape}"
        )
    return w


def template_ks(
    templates: Mapping[str, Sample], true_background: pd.DataFrame, features: Sequence[str]
) -> pd.DataFrame:
    """KS distance per feature of each (weighted) template vs the true SR background.

    Returns a long table with columns ``method, feature, ks, p_value, n_eff`` (the p-value uses the
    asymptotic Kolmogorov distribution with the templates' Kish effective sizes).
    """
    from scipy.special import kolmogorov

    from radar.analysis.metrics import weighted_ks

    features = list(features)
    _check_sample("true background", true_background, None, features)
    n_b = len(true_background)
    rows = []
    for name, (events, weights) in templates.items():
        w = _check_sample(f"template {name}", events, weights, features)
        n_eff = effective_size(w, len(events))
        scale = np.sqrt(n_eff * n_b / (n_eff + n_b)) if n_eff + n_b > 0 else 0.0
        for f in features:
            d = weighted_ks(events[f].to_numpy(), true_background[f].to_numpy(), w, None)
            rows.append(
                {
                    "method": name,
                    "feature": f,
                    "ks": d,
                    "p_value": float(kolmogorov(scale * d)),
                    "n_eff": n_eff,
                }
            )
    return pd.DataFrame(rows)


def score_correlations(
    scores: Mapping[str, np.ndarray] | pd.DataFrame, labels: np.ndarray, method: str = "spearman"
) -> dict[str, pd.DataFrame]:
    """Correlation matrices of the methods' scores (one entry per method, aligned on the same events)
    on true background (``labels == 0``) and on true signal (``labels == 1``).

    Returns ``{"background": DataFrame, "signal": DataFrame}`` (methods x methods); a class with fewer
    than 3 events gives an all-NaN matrix.
    """
    if method not in ("pearson", "spearman", "kendall"):
        raise ValueError(f"score_correlations: unknown method {method!r}")
    frame = pd.DataFrame({k: np.asarray(v, dtype=np.float64) for k, v in dict(scores).items()})
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != len(frame):
        raise ValueError(f"score_correlations: {len(labels)} labels for {len(frame)} scored events")
    out = {}
    for name, value in (("background", 0), ("signal", 1)):
        part = frame[labels == value]
        out[name] = (
            part.corr(method=method)
            if len(part) >= 3
            else pd.DataFrame(np.nan, index=frame.columns, columns=frame.columns)
        )
    return out


def top_overlap(
    scores: Mapping[str, np.ndarray] | pd.DataFrame,
    percents: Sequence[float] = (1.0, 5.0, 10.0),
    mask: np.ndarray | None = None,
) -> pd.DataFrame:
    """Overlap of the top ``p`` % most signal-like events between every pair of methods.

    ``scores``: one array per method over the same N events; ``mask`` (N,) bool restricts the events
    (e.g. SR data, or true background only). Returns columns ``method_a, method_b, percent, n_top,
    overlap`` (fraction of method a's top events also in method b's) and ``random`` (the expectation for
    two independent random selections, p / 100).
    """
    frame = pd.DataFrame({k: np.asarray(v, dtype=np.float64) for k, v in dict(scores).items()})
    if mask is not None:
        mask = np.asarray(mask, dtype=bool).reshape(-1)
        if len(mask) != len(frame):
            raise ValueError(f"top_overlap: mask has {len(mask)} entries for {len(frame)} events")
        frame = frame[mask]
    n = len(frame)
    rows = []
    for p in percents:
        if not 0.0 < p <= 100.0:
            raise ValueError(f"top_overlap: percent must lie in (0, 100], got {p}")
        k = max(1, int(round(n * p / 100.0)))
        # ties broken by event order (stable sort) so the selection is deterministic
        top = {m: set(np.argsort(-frame[m].to_numpy(), kind="stable")[:k]) for m in frame.columns}
        for a, b in combinations(frame.columns, 2):
            rows.append(
                {
                    "method_a": a,
                    "method_b": b,
                    "percent": float(p),
                    "n_top": k,
                    "overlap": len(top[a] & top[b]) / k,
                    "random": k / n,
                }
            )
    return pd.DataFrame(rows)


def _auc_kfold(
    X0: np.ndarray,
    w0: np.ndarray | None,
    X1: np.ndarray,
    *,
    classifier: str,
    k_folds: int,
    seed: int,
    **clf_kwargs: Any,
) -> float:
    """Out-of-fold AUC of class 0 (weights ``w0``) vs class 1 (:func:`radar.analysis.cwola.kfold_scores`)."""
    from radar.analysis.cwola import kfold_scores
    from radar.analysis.metrics import auc

    res = kfold_scores(X0, X1, w0, None, classifier=classifier, k_folds=k_folds, seed=seed, **clf_kwargs)
    y = np.concatenate([np.zeros(len(X0)), np.ones(len(X1))])
    w = np.concatenate([np.ones(len(X0)) if w0 is None else w0, np.ones(len(X1))])
    return auc(y, np.concatenate([res.scores0, res.scores1]), w)


def _truth_halves(n: int, seed: int) -> tuple[np.random.Generator, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    return rng, perm[: n // 2], perm[n // 2 :]


def truth_auc_spread(
    true_background: pd.DataFrame,
    features: Sequence[str],
    *,
    n_repeats: int = 5,
    seed: int = 0,
    classifier: str = "hgb",
    k_folds: int = 5,
    **clf_kwargs: Any,
) -> dict[str, Any]:
    """The truth-vs-truth AUC spread: for each repeat r (seed ``seed + r``) the true SR background is split
    into halves H1, H2 and the out-of-fold AUC of H1 vs H2 is computed. Returns ``truth_auc`` (list), its
    median, mean, std, ``band`` = mean ± 2 std and ``null_sigma`` (the AUC's standard deviation expected
    for two samples of one distribution)."""
    from radar.analysis.datasets import feature_matrix
    from radar.analysis.metrics import auc_null_sigma

    X_b = feature_matrix(true_background, list(features), "true background")
    if len(X_b) < 4 * k_folds:
        raise ValueError(f"auc_vs_truth: {len(X_b)} true background events, need >= {4 * k_folds}")
    if n_repeats < 2:
        raise ValueError(f"auc_vs_truth: need n_repeats >= 2 for a spread, got {n_repeats}")
    truth = []
    for r in range(n_repeats):
        _, h1, h2 = _truth_halves(len(X_b), seed + r)
        truth.append(
            _auc_kfold(
                X_b[h1], None, X_b[h2], classifier=classifier, k_folds=k_folds, seed=seed + r, **clf_kwargs
            )
        )
    mean, std = float(np.mean(truth)), float(np.std(truth, ddof=1))
    return {
        "truth_auc": truth,
        "truth_median": float(np.median(truth)),
        "truth_mean": mean,
        "truth_std": std,
        "band": (mean - 2.0 * std, mean + 2.0 * std),
        "null_sigma": auc_null_sigma(len(X_b) - len(X_b) // 2, len(X_b) // 2),
    }


def auc_vs_truth(
    template: Sample,
    true_background: pd.DataFrame,
    features: Sequence[str],
    *,
    n_repeats: int = 5,
    seed: int = 0,
    classifier: str = "hgb",
    k_folds: int = 5,
    truth: Mapping[str, Any] | None = None,
    **clf_kwargs: Any,
) -> dict[str, Any]:
    """Template-vs-true-background AUC against the truth-vs-truth spread, at equal sample sizes.

    For each repeat r (seed ``seed + r``) the true SR background is split in halves H1, H2. The
    truth-vs-truth AUC is the out-of-fold AUC (``k_folds``-fold, :func:`radar.analysis.cwola.kfold_scores`)
    of H1 vs H2 (:func:`truth_auc_spread`; pass its result as ``truth`` to reuse it for several templates);
    the template AUC that of a random |H1|-event subsample of the template (weights kept) vs H2. Returns
    ``template_auc`` and ``truth_auc`` (lists), their medians, the truth mean and std, ``band`` = truth
    mean ± 2 std and ``inside`` (template median <= upper band edge: a template that leaks signal-like or
    unphysical structure is *more* separable than truth).
    """
    from radar.analysis.datasets import feature_matrix

    events, weights = template
    w_t = _check_sample("template", events, weights, features)
    X_t = feature_matrix(events, list(features), "template")
    X_b = feature_matrix(true_background, list(features), "true background")
    if truth is None:
        truth = truth_auc_spread(
            true_background,
            features,
            n_repeats=n_repeats,
            seed=seed,
            classifier=classifier,
            k_folds=k_folds,
            **clf_kwargs,
        )
    tmpl = []
    for r in range(n_repeats):
        rng, h1, h2 = _truth_halves(len(X_b), seed + r)
        sub = rng.choice(len(X_t), size=len(h1), replace=len(h1) > len(X_t))
        tmpl.append(
            _auc_kfold(
                X_t[sub],
                w_t[sub],
                X_b[h2],
                classifier=classifier,
                k_folds=k_folds,
                seed=seed + r,
                **clf_kwargs,
            )
        )
    median_t = float(np.median(tmpl))
    return {
        **dict(truth),
        "template_auc": tmpl,
        "template_median": median_t,
        "inside": bool(median_t <= truth["band"][1]),
    }


def write_comparison(
    out_dir: str | Path,
    *,
    features: Sequence[str],
    templates: Mapping[str, Sample] | None = None,
    true_background: pd.DataFrame | None = None,
    scores: Mapping[str, np.ndarray] | None = None,
    labels: np.ndarray | None = None,
    percents: Sequence[float] = (1.0, 5.0, 10.0),
    overlap_mask: np.ndarray | None = None,
    auc_repeats: int = 0,
    seed: int = 0,
    plots: bool = True,
    style: str = "atlas",
    **clf_kwargs: Any,
) -> dict[str, Path]:
    """Run the studies the inputs allow and write ``template_ks``, ``score_correlations_{background,signal}``,
    ``top_overlap`` and ``auc_vs_truth`` tables (CSV and Markdown) plus, with ``plots``, their figures
    (:mod:`radar.plots.compare`) into ``out_dir``. ``auc_repeats`` > 1 runs :func:`auc_vs_truth` per template;
    ``overlap_mask`` restricts the top-p % overlap to some events (e.g. ``labels == 0``: background only).
    Returns {name: path} of the files written.
    """
    from radar.analysis.metrics import markdown_table
    from radar.processors.io import atomic_output, write_json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}

    def table(name: str, frame: pd.DataFrame, index: bool = False) -> None:
        with atomic_output(out_dir / f"{name}.csv") as tmp:
            frame.to_csv(tmp, index=index)
        shown = frame.reset_index() if index else frame
        with atomic_output(out_dir / f"{name}.md") as tmp:
            tmp.write_text(markdown_table(shown.round(4).astype(object).to_dict("records")))
        written[name] = out_dir / f"{name}.csv"

    ks = corr = overlap = None
    aucs: dict[str, dict] = {}
    if templates and true_background is not None:
        ks = template_ks(templates, true_background, features)
        table("template_ks", ks)
        if auc_repeats > 1:
            for name, sample in templates.items():
                aucs[name] = auc_vs_truth(
                    sample, true_background, features, n_repeats=auc_repeats, seed=seed, **clf_kwargs
                )
            written["auc_vs_truth"] = write_json(out_dir / "auc_vs_truth.json", aucs)
    if scores and labels is not None and len(scores) >= 2:
        corr = score_correlations(scores, labels)
        for part, frame in corr.items():
            table(f"score_correlations_{part}", frame, index=True)
        overlap = top_overlap(scores, percents, mask=overlap_mask)
        table("top_overlap", overlap)
    if plots:
        from radar.plots import compare as plots_compare
        from radar.plots.style import save_figure

        figures = []
        if ks is not None:
            figures.append(("template_ks", plots_compare.plot_template_ks(ks, style=style)))
        if corr is not None:
            figures.append(("score_correlations", plots_compare.plot_correlation_matrices(corr, style=style)))
            figures.append(("top_overlap", plots_compare.plot_top_overlap(overlap, style=style)))
        if aucs:
            figures.append(("auc_vs_truth", plots_compare.plot_auc_vs_truth(aucs, style=style)))
        for stem, fig in figures:
            for path in save_figure(fig, out_dir / stem):
                written[f"figure:{path.name}"] = path
    return written


def compare_run(run_dir: str | Path, cfg) -> dict[str, Path]:
    """The comparison studies of a finished ``radar search`` run, written into ``RUN/comparison/``.

    For every injection (first seed): the per-feature KS of each template method's saved template
    against the true SR background of the data, the score correlations of all methods on the SR data's
    true background and signal, and the top-p % overlap of the most signal-like SR data events
    (``comparison/inj_<x>/``). At zero injection, with ``cfg.compare_auc_repeats`` >= 2: every template
    of every seed against the true SR background, next to one truth-vs-truth spread
    (``comparison/auc_vs_truth.{json,csv,md,png,pdf}``). Needs truth labels in the data; without them
    (real data) it writes nothing and says so. Returns {name: path}.
    """
    from radar.analysis.context_methods import CONTEXT_TEMPLATE_METHODS
    from radar.analysis.methods import TEMPLATE_METHODS
    from radar.analysis.metrics import markdown_table, summarise
    from radar.analysis.preparation import load_inputs, prepare_data
    from radar.analysis.rundir import _injection_tag, load_scores, load_template_sample, unit_finished
    from radar.analysis.units import classifier_settings, regions_for
    from radar.processors.io import atomic_output, write_json

    run_dir = Path(run_dir)
    out_root = run_dir / "comparison"
    features = list(cfg.features)
    regions = regions_for(cfg, "cathode")
    templates_run = [
        m for m in cfg.methods if cfg.base_method(m) in (*TEMPLATE_METHODS, *CONTEXT_TEMPLATE_METHODS)
    ]
    written: dict[str, Path] = {}
    clf = classifier_settings(cfg)
    inputs = load_inputs(cfg)
    for injection in cfg.injections:
        prepared = prepare_data(cfg, injection, inputs)
        data = prepared.data
        labels = data["label"].to_numpy()
        sr = regions.sr_mask(data)
        true_bkg = data[sr & (labels == 0)].reset_index(drop=True)
        if not len(true_bkg):
            log.info("comparison: injection %s: no truth-labelled SR background; studies skipped", injection)
            continue
        seed = cfg.seeds[0]
        templates = {
            m: load_template_sample(run_dir, m, injection, seed)
            for m in templates_run
            if unit_finished(run_dir, m, injection, seed)
        }
        scores = {}
        for m in cfg.methods:
            if unit_finished(run_dir, m, injection, seed):
                frame = load_scores(run_dir, m, injection, seed)
                if len(frame) == len(data):
                    scores[m] = frame["score"].to_numpy()[sr]
        tag = _injection_tag(injection)
        files = write_comparison(
            out_root / tag,
            features=features,
            templates=templates or None,
            true_background=true_bkg,
            scores=scores or None,
            labels=labels[sr],
            seed=seed,
        )
        written.update({f"{tag}/{k}": v for k, v in files.items()})
        if injection is None or float(injection) != 0.0 or cfg.compare_auc_repeats < 2 or not templates_run:
            continue
        repeats = int(cfg.compare_auc_repeats)
        k = min(cfg.k_folds, 5)
        truth = truth_auc_spread(
            true_bkg,
            features,
            n_repeats=2 * repeats,
            seed=cfg.data_seed,
            classifier=cfg.classifier.name,
            k_folds=k,
            **clf,
        )
        results: dict[str, dict[str, Any]] = {}
        rows = []
        for m in templates_run:
            per_seed = []
            for s in cfg.seeds:
                if not unit_finished(run_dir, m, injection, s):
                    continue
                r = auc_vs_truth(
                    load_template_sample(run_dir, m, injection, s),
                    true_bkg,
                    features,
                    n_repeats=repeats,
                    seed=cfg.data_seed,
                    classifier=cfg.classifier.name,
                    k_folds=k,
                    truth=truth,
                    **clf,
                )
                per_seed.append(r["template_median"])
                results.setdefault(m, {**truth, "template_auc": [], "per_seed": {}})
                results[m]["template_auc"] += r["template_auc"]
                results[m]["per_seed"][str(s)] = r["template_median"]
            if not per_seed:
                continue
            summary = summarise(per_seed)
            results[m]["template_median"] = summary["median"]
            results[m]["inside"] = bool(summary["median"] <= truth["band"][1])
            rows.append(
                {
                    "method": m,
                    "seeds": len(per_seed),
                    "template AUC (median [16, 84] over seeds)": f"{summary['median']:.3f} [{summary['p16']:.3f}, {summary['p84']:.3f}]",
                    "seeds inside band": f"{sum(v <= truth['band'][1] for v in per_seed)}/{len(per_seed)}",
                    "truth vs truth (mean ± std)": f"{truth['truth_mean']:.3f} ± {truth['truth_std']:.3f}",
                    "band upper edge (mean + 2 std)": f"{truth['band'][1]:.3f}",
                    "inside": "yes" if results[m]["inside"] else "NO",
                }
            )
        if not rows:
            continue
        out = out_root / "auc_vs_truth.json"
        written["auc_vs_truth"] = write_json(
            out, {"n_true_background": len(true_bkg), "repeats": repeats, "truth": truth, "methods": results}
        )
        with atomic_output(out_root / "auc_vs_truth.md") as tmp:
            tmp.write_text(markdown_table(rows))
        with atomic_output(out_root / "auc_vs_truth.csv") as tmp:
            pd.DataFrame(rows).to_csv(tmp, index=False)
        from radar.plots import compare as plots_compare
        from radar.plots.style import save_figure

        for path in save_figure(plots_compare.plot_auc_vs_truth(results), out_root / "auc_vs_truth"):
            written[f"figure:{path.name}"] = path
        log.info("comparison: zero-injection AUC vs truth of %s written to %s", list(results), out_root)
    return written

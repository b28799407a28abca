"""Classifier metrics for anomaly detection: ROC/AUC, SIC, max SIC with a statistical floor, SIC at a
fixed background rejection, medians and 16-84 % bands over seeds, and per-feature KS distances.

Conventions: ``labels`` (N,) 1 = signal, 0 = background; ``scores`` (N,) larger = more signal-like;
optional ``weights`` (N,). TPR = signal efficiency, FPR = background efficiency, SIC = TPR/sqrt(FPR).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np

log = logging.getLogger(__name__)


def _check(labels, scores, weights=None):
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype="float64")
    if labels.shape != scores.shape or labels.ndim != 1:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} must be 1-d of equal length")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"labels must be 0/1 (got values {np.unique(labels)[:10]}); drop unlabelled events")
    if not ((labels == 1).any() and (labels == 0).any()):
        raise ValueError("metrics need both signal (1) and background (0) events")
    if not np.isfinite(scores).all():
        raise ValueError(f"{int((~np.isfinite(scores)).sum())} scores are NaN/inf")
    w = None if weights is None else np.asarray(weights, dtype="float64")
    return labels, scores, w


def roc_curve(labels, scores, weights=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), each (K,), fpr increasing (sklearn convention)."""
    from sklearn.metrics import roc_curve as _roc

    labels, scores, w = _check(labels, scores, weights)
    fpr, tpr, thr = _roc(labels, scores, sample_weight=w, drop_intermediate=False)
    return fpr, tpr, thr


def roc_points(labels, scores, weights=None) -> dict[str, np.ndarray]:
    """The ROC curve as ``{"tpr": (K,), "fpr": (K,)}``: what :func:`radar.plots.performance.plot_roc_sic`
    draws (labels 1 signal / 0 background)."""
    fpr, tpr, _ = roc_curve(labels, scores, weights)
    return {"tpr": tpr, "fpr": fpr}


def auc(labels, scores, weights=None) -> float:
    """Area under the ROC curve (0.5 = no separation)."""
    from sklearn.metrics import roc_auc_score

    labels, scores, w = _check(labels, scores, weights)
    return float(roc_auc_score(labels, scores, sample_weight=w))


def auc_null_sigma(n_signal: int, n_background: int) -> float:
    """Standard deviation of the AUC of a random classifier (Mann-Whitney, no ties)."""
    n1, n0 = float(n_signal), float(n_background)
    return float(np.sqrt((n1 + n0 + 1.0) / (12.0 * n1 * n0)))


def default_fpr_floor(n_background: int, rel_error: float = 0.4) -> float:
    """Smallest FPR trusted for SIC: 1/(rel_error^2 * N_bkg), i.e. >= 1/rel_error^2 background events pass
    (rel_error = 0.4 → at least ~6 events, a 40 % statistical uncertainty on the background efficiency)."""
    if n_background <= 0:
        raise ValueError("default_fpr_floor needs a positive number of background events")
    return 1.0 / (rel_error**2 * n_background)


def sic_curve(
    labels, scores, weights=None, fpr_floor: float | str | None = "auto", rel_error: float = 0.4
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tpr, fpr, sic), keeping only points with fpr > 0 and fpr >= ``fpr_floor``.

    ``fpr_floor="auto"`` uses :func:`default_fpr_floor` on the number of background events; ``None``
    keeps every point with fpr > 0.
    """
    labels_arr = np.asarray(labels).astype(int)
    fpr, tpr, _ = roc_curve(labels, scores, weights)
    if fpr_floor == "auto":
        fpr_floor = default_fpr_floor(int((labels_arr == 0).sum()), rel_error)
    keep = fpr > 0
    if fpr_floor is not None:
        keep &= fpr >= float(fpr_floor)
    tpr, fpr = tpr[keep], fpr[keep]
    return tpr, fpr, tpr / np.sqrt(fpr)


def max_sic(
    labels, scores, weights=None, fpr_floor: float | str | None = "auto", rel_error: float = 0.4
) -> float:
    """Maximum of the SIC curve above the FPR floor (see :func:`sic_curve`)."""
    _, _, sic = sic_curve(labels, scores, weights, fpr_floor, rel_error)
    return float(sic.max()) if len(sic) else float("nan")


def sic_at_rejection(labels, scores, rejection: float = 1000.0, weights=None) -> float:
    """SIC at background rejection ``rejection`` = 1/FPR (TPR interpolated linearly at that FPR).

    NaN when the test set has fewer than ``rejection`` background events (that FPR is not measurable).
    """
    fpr, tpr, _ = roc_curve(labels, scores, weights)
    target = 1.0 / float(rejection)
    n_background = int((np.asarray(labels).astype(int) == 0).sum())
    if n_background * target < 1.0:
        log.warning(
            "sic_at_rejection: %d background events cannot measure rejection %g", n_background, rejection
        )
        return float("nan")
    # roc points are sorted by fpr; np.interp needs strictly increasing x: take the best tpr per fpr
    ufpr, first = np.unique(fpr, return_index=True)
    utpr = np.maximum.reduceat(tpr, first)
    return float(np.interp(target, ufpr, utpr) / np.sqrt(target))


def summarise(values: Iterable[float]) -> dict[str, float]:
    """Median and 16/84 % percentiles (a 68 % band) of finite ``values`` over seeds."""
    arr = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype="float64")
    if not len(arr):
        return {"median": float("nan"), "p16": float("nan"), "p84": float("nan"), "n": 0}
    p16, med, p84 = np.percentile(arr, [16, 50, 84])
    return {"median": float(med), "p16": float(p16), "p84": float(p84), "n": int(len(arr))}


def classifier_metrics(
    labels,
    scores,
    weights=None,
    fpr_floor: float | str | None = "auto",
    rel_error: float = 0.4,
    rejection: float = 1000.0,
) -> dict[str, float]:
    """The standard set: auc, max_sic, sic_at_rejection (at ``rejection``), counts, the floor used."""
    labels_arr = np.asarray(labels).astype(int)
    n_bkg = int((labels_arr == 0).sum())
    floor = default_fpr_floor(n_bkg, rel_error) if fpr_floor == "auto" else fpr_floor
    return {
        "auc": auc(labels, scores, weights),
        "max_sic": max_sic(labels, scores, weights, floor),
        "sic_at_rejection": sic_at_rejection(labels, scores, rejection, weights),
        "rejection": float(rejection),
        "fpr_floor": float(floor) if floor is not None else 0.0,
        "n_signal": int((labels_arr == 1).sum()),
        "n_background": n_bkg,
    }


def weighted_ks(
    a: np.ndarray, b: np.ndarray, wa: np.ndarray | None = None, wb: np.ndarray | None = None
) -> float:
    """Two-sample Kolmogorov-Smirnov distance between (weighted) samples ``a`` and ``b``."""
    a, b = np.asarray(a, dtype="float64"), np.asarray(b, dtype="float64")
    wa = np.ones(len(a)) if wa is None else np.asarray(wa, dtype="float64")
    wb = np.ones(len(b)) if wb is None else np.asarray(wb, dtype="float64")
    grid = np.sort(np.concatenate([a, b]))
    ia, ib = np.argsort(a), np.argsort(b)
    cdf_a = np.concatenate([[0.0], np.cumsum(wa[ia])]) / wa.sum()
    cdf_b = np.concatenate([[0.0], np.cumsum(wb[ib])]) / wb.sum()
    fa = cdf_a[np.searchsorted(a[ia], grid, side="right")]
    fb = cdf_b[np.searchsorted(b[ib], grid, side="right")]
    return float(np.max(np.abs(fa - fb)))


def ks_per_feature(a, b, features: Iterable[str], wa=None, wb=None) -> dict[str, float]:
    """KS distance per feature between two tables (e.g. a background template and true SR background)."""
    return {f: weighted_ks(np.asarray(a[f]), np.asarray(b[f]), wa, wb) for f in features}


def markdown_table(rows: list[dict]) -> str:
    """A GitHub-Markdown table of ``rows`` (list of dicts with the same keys), no extra dependency."""
    if not rows:
        return ""
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "|".join("---" for _ in keys) + "|"]
    lines += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def effective_size(weights: np.ndarray | None, n: int) -> float:
    """Kish effective number of events (sum w)^2 / sum w^2 (n for unit weights)."""
    if weights is None:
        return float(n)
    w = np.asarray(weights, dtype=np.float64)
    return float(w.sum() ** 2 / np.sum(w * w)) if np.sum(w * w) > 0 else 0.0

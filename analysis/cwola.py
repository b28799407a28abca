"""Classification without labels (CWoLa): background template (label 0) vs SR data (label 1).

k-fold scheme: both classes are cut into ``k_folds`` random folds; the model trained on the other
``k - 1`` folds scores fold i, so every training event gets exactly one out-of-fold score from a model
that never saw it. Further events (``X_extra``: sideband data, a test set) are scored by the mean of
the ``k`` fold models. Each fold model does its own early-stopping validation split inside its
training folds (``val_fraction``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.classifiers import classifier_suffix, get_classifier

log = logging.getLogger(__name__)


@dataclass
class KFoldResult:
    """Scores of a k-fold training: out-of-fold for both classes, fold-mean for ``X_extra``."""

    scores0: np.ndarray
    scores1: np.ndarray
    scores_extra: np.ndarray | None
    models: list = field(default_factory=list)
    folds0: np.ndarray | None = None
    folds1: np.ndarray | None = None


def fold_assignment(n: int, k_folds: int, seed: int) -> np.ndarray:
    """Fold index (0..k-1) of each of ``n`` events, balanced and random with ``seed``."""
    rng = np.random.default_rng(seed)
    return rng.permutation(np.arange(n) % k_folds)


def kfold_scores(X0: np.ndarray, X1: np.ndarray, w0: np.ndarray | None = None, w1: np.ndarray | None = None, *,
                 classifier: str = "mlp", k_folds: int = 5, seed: int = 0, X_extra: np.ndarray | None = None,
                 save_dir: str | Path | None = None, keep_models: bool = False,
                 **clf_kwargs: Any) -> KFoldResult:
    """Train ``k_folds`` classifiers of class 0 (``X0`` (N0, F), weights ``w0``) vs class 1 (``X1``).

    Returns out-of-fold P(class 1) for every event of both classes and the fold-mean for ``X_extra``.
    With ``save_dir`` each fold model is saved as ``fold{i}.pt|.pkl``.
    """
    if k_folds < 2:
        raise ValueError(f"k_folds must be >= 2 (got {k_folds}): out-of-fold scores need a held-out fold")
    X0, X1 = np.asarray(X0, dtype="float64"), np.asarray(X1, dtype="float64")
    if X0.ndim != 2 or X1.ndim != 2 or X0.shape[1] != X1.shape[1]:
        raise ValueError(f"template {X0.shape} and data {X1.shape} must be (N, F) with the same F")
    if min(len(X0), len(X1)) < k_folds:
        raise ValueError(f"too few events for {k_folds} folds: {len(X0)} template, {len(X1)} data")
    w0 = np.ones(len(X0)) if w0 is None else np.asarray(w0, dtype="float64")
    w1 = np.ones(len(X1)) if w1 is None else np.asarray(w1, dtype="float64")
    f0 = fold_assignment(len(X0), k_folds, seed * 7 + 1)
    f1 = fold_assignment(len(X1), k_folds, seed * 7 + 2)
    s0, s1 = np.full(len(X0), np.nan), np.full(len(X1), np.nan)
    extra = None if X_extra is None else np.zeros(len(X_extra))
    models = []
    for fold in range(k_folds):
        tr0, tr1 = f0 != fold, f1 != fold
        X = np.concatenate([X0[tr0], X1[tr1]])
        y = np.concatenate([np.zeros(tr0.sum()), np.ones(tr1.sum())])
        w = np.concatenate([w0[tr0], w1[tr1]])
        clf = get_classifier(classifier, seed=seed * 100 + fold, **clf_kwargs).fit(X, y, sample_weight=w)
        s0[~tr0] = clf.predict_proba(X0[~tr0])
        s1[~tr1] = clf.predict_proba(X1[~tr1])
        if extra is not None and len(X_extra):
            extra += clf.predict_proba(X_extra) / k_folds
        if save_dir is not None:
            clf.save(Path(save_dir) / f"fold{fold}{classifier_suffix(classifier)}")
        if keep_models:
            models.append(clf)
        log.debug("fold %d/%d trained (%d template, %d data events)", fold + 1, k_folds, tr0.sum(), tr1.sum())
    return KFoldResult(scores0=s0, scores1=s1, scores_extra=extra, models=models, folds0=f0, folds1=f1)


def out_of_fold_scores(X_template: np.ndarray, w_template: np.ndarray | None, X_data: np.ndarray, *,
                       classifier: str = "mlp", k_folds: int = 5, seed: int = 0,
                       X_extra: np.ndarray | None = None, **clf_kwargs: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """Template (label 0, weights) vs SR data (label 1) → (scores_data (N_data,), scores_extra or None).

    Every SR data event is scored once by the model that did not train on it; ``X_extra`` is scored by
    the mean of the k models.
    """
    result = kfold_scores(X_template, X_data, w_template, None, classifier=classifier, k_folds=k_folds,
                          seed=seed, X_extra=X_extra, **clf_kwargs)
    return result.scores1, result.scores_extra

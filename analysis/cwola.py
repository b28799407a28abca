"""Classification without labels (CWoLa): background template (label 0) vs SR data (label 1).

The k-fold scheme of the ATLAS CWoLa-hunting search. Every event is given a fold (0..k-1); model i is
trained on the events of the other folds and scores every event of fold i — class 0, class 1 and any
further event that enters a spectrum (``X_fold``: sideband data, data outside the training classes). So
every such event gets exactly ONE score from a model that never trained on it, and all those models
are trained alike: the score has the same distribution inside and outside the signal region.

Only events that never enter a spectrum (``X_mean``: the labelled test set for SIC curves) get the mean of
the k models. That mean is a narrower distribution than one model's score, so it must never be mixed
with out-of-fold scores in an m_JJ spectrum: a tail cut would pass fewer mean-scored events and carve a
fake bump where the single-model scores are (13σ on background-only data before this scheme).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from radar.models.classifiers import classifier_suffix, get_classifier

log = logging.getLogger(__name__)


@dataclass
class KFoldResult:
    """Scores of a k-fold training.

    scores0 / scores1: out-of-fold P(class 1) of the class-0 / class-1 events; scores_fold: ``X_fold``
    scored by the model of each event's fold; scores_fold_mean: ``X_fold`` scored by the mean of the k
    models (a diagnostic of the unsafe pre-fix scheme, never for a spectrum); scores_mean: ``X_mean``
    scored by the mean of the k models.
    """

    scores0: np.ndarray
    scores1: np.ndarray
    scores_fold: np.ndarray | None = None
    scores_fold_mean: np.ndarray | None = None
    scores_mean: np.ndarray | None = None
    models: list = field(default_factory=list)
    folds0: np.ndarray | None = None
    folds1: np.ndarray | None = None


def fold_assignment(n: int, k_folds: int, seed: int) -> np.ndarray:
    """Fold index (0..k-1) of each of ``n`` events, balanced and random with ``seed``."""
    rng = np.random.default_rng(seed)
    return rng.permutation(np.arange(n) % k_folds)


def _checked_folds(folds: np.ndarray | None, n: int, k_folds: int, seed: int, what: str) -> np.ndarray:
    if folds is None:
        return fold_assignment(n, k_folds, seed)
    folds = np.asarray(folds, dtype=np.int64)
    if folds.shape != (n,) or (n and (folds.min() < 0 or folds.max() >= k_folds)):
        raise ValueError(
            f"{what}: need one fold in 0..{k_folds - 1} per event ({n}), got shape {folds.shape}"
        )
    return folds


def fit_fold_classifiers(
    classifier: str, seeds: list[int], training_sets: list[tuple], **clf_kwargs: Any
) -> list:
    """The k fold classifiers of a unit, ``seeds[i]`` trained on ``training_sets[i] = (X, y, w)``: MLPs with
    ``batched_folds`` (the default) as one batched ensemble (:func:`radar.models.ensemble.fit_mlp_ensemble`:
    the same models as k separate fits, several times faster), anything else one fit after another."""
    classifiers = [get_classifier(classifier, seed=seed, **clf_kwargs) for seed in seeds]
    if all(getattr(clf, "batched_folds", False) for clf in classifiers):
        from radar.models.ensemble import fit_mlp_ensemble

        return fit_mlp_ensemble(classifiers, training_sets)
    for clf, (X, y, w) in zip(classifiers, training_sets):
        clf.fit(X, y, sample_weight=w)
    return classifiers


def kfold_scores(
    X0: np.ndarray,
    X1: np.ndarray,
    w0: np.ndarray | None = None,
    w1: np.ndarray | None = None,
    *,
    classifier: str = "mlp",
    k_folds: int = 5,
    seed: int = 0,
    folds0: np.ndarray | None = None,
    folds1: np.ndarray | None = None,
    X_fold: np.ndarray | None = None,
    folds_fold: np.ndarray | None = None,
    X_mean: np.ndarray | None = None,
    save_dir: str | Path | None = None,
    keep_models: bool = False,
    **clf_kwargs: Any,
) -> KFoldResult:
    """Train ``k_folds`` classifiers of class 0 (``X0`` (N0, F), weights ``w0``) vs class 1 (``X1``).

    folds0 / folds1 / folds_fold: the fold of each event (default: balanced random folds from ``seed``).
    Give the events that are rows of one table (e.g. the search data: SR, sidebands) folds from ONE
    assignment over that table, so that a table row's score never depends on which class it was in.
    Returns out-of-fold P(class 1) for the events of both classes and of ``X_fold`` (N_fold, F), and the
    fold-mean for ``X_mean`` (never mix the two in one spectrum). With ``save_dir`` each fold model is
    saved as ``fold{i}.pt|.npz``.
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
    f0 = _checked_folds(folds0, len(X0), k_folds, seed * 7 + 1, "folds0")
    f1 = _checked_folds(folds1, len(X1), k_folds, seed * 7 + 2, "folds1")
    s0, s1 = np.full(len(X0), np.nan), np.full(len(X1), np.nan)
    s_fold = s_fold_mean = ff = None
    if X_fold is not None:
        X_fold = np.asarray(X_fold, dtype="float64")
        ff = _checked_folds(folds_fold, len(X_fold), k_folds, seed * 7 + 3, "folds_fold")
        s_fold, s_fold_mean = np.full(len(X_fold), np.nan), np.zeros(len(X_fold))
    s_mean = None if X_mean is None else np.zeros(len(X_mean))
    training_sets = []
    for fold in range(k_folds):
        tr0, tr1 = f0 != fold, f1 != fold
        if not tr0.any() or not tr1.any() or tr0.all() or tr1.all():
            raise ValueError(
                f"fold {fold} leaves a class without training or held-out events "
                f"({int(tr0.sum())}/{len(X0)} template, {int(tr1.sum())}/{len(X1)} data in training)"
            )
        X = np.concatenate([X0[tr0], X1[tr1]])
        y = np.concatenate([np.zeros(tr0.sum()), np.ones(tr1.sum())])
        w = np.concatenate([w0[tr0], w1[tr1]])
        training_sets.append((X, y, w))
    classifiers = fit_fold_classifiers(
        classifier, [seed * 100 + fold for fold in range(k_folds)], training_sets, **clf_kwargs
    )
    models = []
    for fold, clf in enumerate(classifiers):
        tr0, tr1 = f0 != fold, f1 != fold
        s0[~tr0] = clf.predict_proba(X0[~tr0])
        s1[~tr1] = clf.predict_proba(X1[~tr1])
        if X_fold is not None and len(X_fold):
            p = clf.predict_proba(X_fold)
            s_fold[ff == fold] = p[ff == fold]
            s_fold_mean += p / k_folds
        if s_mean is not None and len(X_mean):
            s_mean += clf.predict_proba(np.asarray(X_mean, dtype="float64")) / k_folds
        if save_dir is not None:
            clf.save(Path(save_dir) / f"fold{fold}{classifier_suffix(classifier)}")
        if keep_models:
            models.append(clf)
        log.debug("fold %d/%d trained (%d template, %d data events)", fold + 1, k_folds, tr0.sum(), tr1.sum())
    return KFoldResult(
        scores0=s0,
        scores1=s1,
        scores_fold=s_fold,
        scores_fold_mean=s_fold_mean,
        scores_mean=s_mean,
        models=models,
        folds0=f0,
        folds1=f1,
    )

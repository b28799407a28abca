"""Every registered classifier on tiny data: shapes, learning, seed determinism, save/load, errors."""

from __future__ import annotations

import numpy as np
import pytest

from radar.analysis.cwola import fold_assignment, kfold_scores
from radar.analysis.metrics import auc
from radar.models.classifiers import (
    MLPClassifier,
    available,
    balanced_weights,
    get_classifier,
    load_classifier,
    stratified_validation_split,
)

TINY = {
    "mlp": {"epochs": 3, "batch_size": 64, "patience": 2, "n_best_epochs": 2, "hidden": (16, 16)},
    "hgb": {"n_models": 2, "max_iter": 30, "n_threads": 1},
}


def two_blobs(n: int = 600, shift: float = 1.5, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(0, 1, (n, 3)), rng.normal(shift, 1, (n, 3))])
    y = np.concatenate([np.zeros(n), np.ones(n)])
    return X, y


@pytest.mark.parametrize("name", available())
def test_classifier_learns_separable_blobs(name):
    X, y = two_blobs()
    clf = get_classifier(name, seed=1, **TINY[name]).fit(X, y)
    p = clf.predict_proba(X[:50])
    assert p.shape == (50,)
    assert np.all((p >= 0) & (p <= 1))
    Xt, yt = two_blobs(seed=5)
    assert auc(yt, clf.predict_proba(Xt)) > 0.85


@pytest.mark.parametrize("name", available())
def test_classifier_same_seed_same_scores(name):
    X, y = two_blobs(300)
    a = get_classifier(name, seed=3, **TINY[name]).fit(X, y).predict_proba(X)
    b = get_classifier(name, seed=3, **TINY[name]).fit(X, y).predict_proba(X)
    c = get_classifier(name, seed=4, **TINY[name]).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("name", available())
def test_classifier_save_load_round_trip(name, tmp_path):
    X, y = two_blobs(300)
    clf = get_classifier(name, seed=0, **TINY[name]).fit(X, y)
    path = clf.save(tmp_path / f"model.{name}")
    loaded = load_classifier(name, path, device="cpu")
    np.testing.assert_allclose(loaded.predict_proba(X), clf.predict_proba(X), rtol=1e-6)


@pytest.mark.parametrize("name", available())
def test_classifier_rejects_nan_features(name):
    X, y = two_blobs(100)
    X[7, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        get_classifier(name, **TINY[name]).fit(X, y)


def test_unknown_classifier_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown classifier 'bdt'"):
        get_classifier("bdt")


def test_balanced_weights_give_each_class_half():
    y = np.array([0] * 30 + [1] * 10)
    w = balanced_weights(y, np.linspace(0.5, 2, 40))
    assert w[y == 0].sum() == pytest.approx(20) and w[y == 1].sum() == pytest.approx(20)
    with pytest.raises(ValueError, match="class 1 has no events"):
        balanced_weights(np.zeros(5))


def test_validation_split_is_stratified_and_reproducible():
    y = np.array([0] * 100 + [1] * 20)
    tr, va = stratified_validation_split(y, 0.25, seed=2)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == 120
    assert (y[va] == 1).sum() == 5 and (y[va] == 0).sum() == 25
    tr2, va2 = stratified_validation_split(y, 0.25, seed=2)
    np.testing.assert_array_equal(va, va2)


def test_mlp_keeps_best_epochs_and_respects_patience():
    X, y = two_blobs(200)
    clf = MLPClassifier(
        epochs=40, patience=2, n_best_epochs=3, hidden=(8,), batch_size=32, lr=0.05, seed=0
    ).fit(X, y)
    n_run = len(clf.history_["val_loss"])
    assert n_run <= 40 and len(clf.states_) == min(3, n_run)
    best = np.argsort(clf.history_["val_loss"], kind="stable")[:3]
    assert clf.best_epochs_ == sorted(best.tolist())


def test_mlp_follows_the_one_rule_for_failed_trainings(monkeypatch):
    """A training whose loss turns NaN is restarted with another seed and counted (the loop every torch
    model of radar shares), instead of silently keeping what it had."""
    import torch

    X, y = two_blobs(200)
    original, calls = MLPClassifier._build, {"n": 0}

    def poisoned_first(self, n_features):
        model = original(self, n_features)
        calls["n"] += 1
        if calls["n"] == 1:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))
        return model

    monkeypatch.setattr(MLPClassifier, "_build", poisoned_first)
    clf = MLPClassifier(epochs=3, hidden=(8,), seed=0).fit(X, y)
    assert clf.n_failed_ == 1 and np.isfinite(clf.predict_proba(X)).all()


def test_mlp_uses_explicit_validation_set():
    X, y = two_blobs(200)
    Xv, yv = two_blobs(50, seed=9)
    clf = MLPClassifier(epochs=2, hidden=(8,), seed=0).fit(X, y, X_val=Xv, y_val=yv)
    assert len(clf.history_["val_loss"]) == 2


def test_out_of_fold_scores_use_models_that_did_not_see_the_event():
    X0, _ = two_blobs(200, seed=1)
    X1 = X0[:150] + 0.0  # identical copies in both classes: a memorising model would score them 0.5
    folds = fold_assignment(100, 5, 0)
    assert np.bincount(folds).tolist() == [20] * 5
    X_fold, folds_fold = X0[:9], np.arange(9) % 3
    result = kfold_scores(
        X0,
        X1,
        classifier="hgb",
        k_folds=3,
        seed=0,
        keep_models=True,
        X_fold=X_fold,
        folds_fold=folds_fold,
        X_mean=X0[:7],
        **TINY["hgb"],
    )
    assert result.scores1.shape == (150,) and result.scores_mean.shape == (7,)
    assert np.isfinite(result.scores1).all() and np.isfinite(result.scores_fold).all()
    # event i of class 1 is scored by the model of its own fold, which did not train on fold i
    for i in np.flatnonzero(result.folds1 == 0)[:3]:
        assert result.models[0].predict_proba(X1[i : i + 1])[0] == pytest.approx(result.scores1[i])
    # an event outside the classes is scored by ONE model (its fold's), not by the mean of the k models
    for i in range(9):
        one = result.models[folds_fold[i]].predict_proba(X_fold[i : i + 1])[0]
        mean = np.mean([m.predict_proba(X_fold[i : i + 1])[0] for m in result.models])
        assert result.scores_fold[i] == pytest.approx(one)
        assert result.scores_fold_mean[i] == pytest.approx(mean)
    np.testing.assert_allclose(result.scores_mean, result.scores_fold_mean[:7])
    with pytest.raises(ValueError, match="k_folds must be >= 2"):
        kfold_scores(X0, X1, k_folds=1)


def test_hgb_models_are_saved_without_pickle_and_a_pickle_cannot_run_code(tmp_path):
    """A saved model from someone else must not execute code when loaded (it did: HGB models were pickles)."""
    import pickle

    X, y = two_blobs(400)
    clf = get_classifier("hgb", seed=1, n_models=2, max_iter=30).fit(X, y)
    path = clf.save(tmp_path / "fold0.npz")
    loaded = load_classifier("hgb", path)
    np.testing.assert_allclose(loaded.predict_proba(X), clf.predict_proba(X), rtol=1e-12)
    again = load_classifier("hgb", loaded.save(tmp_path / "again.npz"))  # a loaded ensemble saves the same
    np.testing.assert_allclose(again.predict_proba(X), clf.predict_proba(X), rtol=1e-12)
    marker = tmp_path / "code_ran"

    class Evil:
        def __reduce__(self):
            return (marker.touch, ())

    evil = tmp_path / "evil.npz"
    evil.write_bytes(pickle.dumps({"params": Evil()}))
    with pytest.raises(ValueError):
        load_classifier("hgb", evil)
    assert not marker.exists()


def _fold_sets(k: int = 3, n: int = 600):
    rng = np.random.default_rng(3)
    sets = []
    for i in range(k):
        X = rng.normal(size=(n + 7 * i, 3))  # unequal sizes: padded batches, different remainders
        y = (rng.random(len(X)) < 0.4).astype(float)
        X[y == 1, 0] += 1.0
        sets.append((X, y, None))
    return sets


def test_batched_fold_ensemble_trains_the_same_models_as_sequential_fits():
    """The k fold MLPs trained as one vmap-ed ensemble follow each model's own recipe (init, batches,
    AdamW, early stopping, best epochs): they agree with k separate fits up to float reassociation."""
    from radar.models.ensemble import fit_mlp_ensemble

    sets = _fold_sets()
    settings = {"epochs": 4, "batch_size": 64, "hidden": (16, 16), "patience": 2, "n_best_epochs": 2}
    sequential = [MLPClassifier(seed=10 + i, **settings).fit(X, y) for i, (X, y, _) in enumerate(sets)]
    batched = fit_mlp_ensemble([MLPClassifier(seed=10 + i, **settings) for i in range(3)], sets)
    X_test = np.random.default_rng(4).normal(size=(500, 3))
    for one, other in zip(sequential, batched):
        assert len(other.history_["val_loss"]) == len(one.history_["val_loss"])
        np.testing.assert_allclose(other.history_["val_loss"], one.history_["val_loss"], atol=2e-3)
        np.testing.assert_allclose(other.predict_proba(X_test), one.predict_proba(X_test), atol=0.02)
        assert other.n_failed_ == 0 and len(other.states_) == 2
    # different seeds give different models (the ensemble did not share one model across folds)
    assert not np.allclose(batched[0].predict_proba(X_test), batched[1].predict_proba(X_test), atol=1e-3)
    with pytest.raises(ValueError, match="ensemble members differ in lr"):
        fit_mlp_ensemble([MLPClassifier(lr=1e-3), MLPClassifier(lr=1e-2)], sets[:2])


def test_batched_fold_ensemble_retrains_a_failed_model_alone(monkeypatch):
    import torch

    from radar.models.ensemble import fit_mlp_ensemble

    original, calls = MLPClassifier._build, {"n": 0}

    def poisoned_second(self, n_features):
        model = original(self, n_features)
        calls["n"] += 1
        if calls["n"] == 2:  # the second member of the ensemble starts with NaN weights
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))
        return model

    monkeypatch.setattr(MLPClassifier, "_build", poisoned_second)
    sets = _fold_sets()
    fitted = fit_mlp_ensemble([MLPClassifier(epochs=2, hidden=(8,), seed=i) for i in range(3)], sets)
    assert [clf.n_failed_ for clf in fitted] == [0, 1, 0]
    for clf, (X, _, _) in zip(fitted, sets):
        assert np.isfinite(clf.predict_proba(X)).all()


def test_kfold_scores_batched_and_sequential_mlps_agree():
    X0, _ = two_blobs(300, seed=1)
    X1, _ = two_blobs(300, seed=2)
    X1 = X1 + 0.3
    common = {"classifier": "mlp", "k_folds": 3, "seed": 1, "epochs": 3, "hidden": (8,), "batch_size": 64}
    fast = kfold_scores(X0, X1, **common)
    slow = kfold_scores(X0, X1, batched_folds=False, **common)
    np.testing.assert_allclose(fast.scores1, slow.scores1, atol=0.02)
    np.testing.assert_allclose(fast.scores0, slow.scores0, atol=0.02)

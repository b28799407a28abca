"""Event weights from the feature table's ``weight`` column reach every flow, template and classifier: a
weighted sample is worth its unweighted duplicate (exactly for the losses and the preprocessing,
statistically for trained models), and a method that cannot use weights is refused before training."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from radar.analysis.config import config_from_dict
from radar.analysis.datasets import toy_lhco_like
from radar.analysis.search import run_search
from radar.analysis.validation import validate_config, validate_data
from radar.models.flows import ConditionalFlow, mean_nll
from radar.models.preprocessing import MassScaler, Preprocessor
from radar.processors.features import write_feature_table


@pytest.fixture(scope="module")
def weighted_sample():
    """Two features, x0 weighted 3 where it is positive: the weighted mean of x0 is 0.40, the unweighted 0."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3000, 2))
    m = rng.uniform(3000.0, 4000.0, 3000)
    w = np.where(x[:, 0] > 0, 3, 1)
    return x, m, w


def test_weighted_preprocessing_and_loss_equal_the_duplicated_sample(weighted_sample):
    x, m, w = weighted_sample
    xd, md = np.repeat(x, w, axis=0), np.repeat(m, w)
    weighted, duplicated = Preprocessor().fit(x, weights=w), Preprocessor().fit(xd)
    for name in ("lo", "hi", "mu", "sigma"):
        np.testing.assert_allclose(getattr(weighted, name), getattr(duplicated, name), rtol=1e-12)
    a, b = MassScaler().fit(m, weights=w), MassScaler().fit(md)
    assert a.loc == pytest.approx(b.loc, rel=1e-12) and a.scale == pytest.approx(b.scale, rel=1e-12)
    log_prob = torch.as_tensor(np.random.default_rng(1).normal(size=len(x)))
    loss_w = mean_nll(log_prob, torch.as_tensor(w, dtype=log_prob.dtype))
    loss_d = mean_nll(torch.as_tensor(np.repeat(log_prob.numpy(), w)))
    assert float(loss_w) == pytest.approx(float(loss_d), rel=1e-12)


def test_a_weighted_flow_learns_what_the_duplicated_sample_teaches(weighted_sample):
    x, m, w = weighted_sample
    settings = {"n_blocks": 2, "hidden": 16, "epochs": 25, "batch_size": 256, "lr": 3e-3, "patience": 0}
    weighted = ConditionalFlow(2, seed=1, **settings).fit(x, m, sample_weight=w)
    duplicated = ConditionalFlow(2, seed=1, **settings).fit(np.repeat(x, w, axis=0), np.repeat(m, w))
    unweighted = ConditionalFlow(2, seed=1, **settings).fit(x, m)
    masses = np.random.default_rng(2).uniform(3000.0, 4000.0, 20_000)
    mean = {
        name: flow.sample(masses, seed=3)[:, 0].mean()
        for name, flow in (("weighted", weighted), ("duplicated", duplicated), ("unweighted", unweighted))
    }
    target = np.average(x[:, 0], weights=w)  # 0.40
    assert abs(mean["weighted"] - mean["duplicated"]) < 0.08, mean
    assert abs(mean["weighted"] - target) < 0.1, (mean, target)
    assert abs(mean["unweighted"] - x[:, 0].mean()) < 0.1, mean  # and the weights are what moved it
    with pytest.raises(ValueError, match="finite and > 0"):
        ConditionalFlow(2, **settings).fit(x, m, sample_weight=np.where(w == 3, -1.0, 1.0))


def _tables(tmp_path, weights):
    data = toy_lhco_like(12_000, 0, seed=21)
    data["weight"] = weights(len(data))
    write_feature_table(data, tmp_path / "data.parquet")
    write_feature_table(toy_lhco_like(0, 2000, seed=22), tmp_path / "signal.parquet")
    write_feature_table(toy_lhco_like(6000, 0, seed=23), tmp_path / "simulation.parquet")
    return data


def _config(tmp_path, methods, **extra):
    return config_from_dict(
        {
            "input": {
                "data": [str(tmp_path / "data.parquet")],
                "signal": str(tmp_path / "signal.parquet"),
                "simulation": str(tmp_path / "simulation.parquet"),
            },
            "methods": methods,
            "injections": [300],
            "seeds": [0],
            "k_folds": 3,
            "classifier": {"name": "hgb", "settings": {"n_models": 1, "max_iter": 30}},
            "execution": {"mode": "sync"},
            "output": str(tmp_path / "run"),
            **extra,
        }
    )


def test_the_search_trains_with_the_data_weights_and_writes_them(tmp_path, monkeypatch):
    """CWoLa Hunting: every fold classifier gets the data events' weights (class-balanced), and the scores
    file carries them to the bump hunt."""
    from radar.models import classifiers

    data = _tables(tmp_path, lambda n: np.random.default_rng(6).uniform(0.5, 2.0, n))
    seen = []
    fit = classifiers.HGBClassifier.fit

    def spy(self, X, y, sample_weight=None, **kwargs):
        seen.append((np.asarray(X), np.asarray(y), np.asarray(sample_weight)))
        return fit(self, X, y, sample_weight=sample_weight, **kwargs)

    monkeypatch.setattr(classifiers.HGBClassifier, "fit", spy)
    cfg = _config(tmp_path, ["cwola_hunting"])
    assert run_search(cfg, progress=False)["n_failed"] == 0
    assert len(seen) == cfg.k_folds
    by_features = {tuple(row): w for row, w in zip(data[list(cfg.features)].to_numpy(), data["weight"])}
    for X, y, w in seen:
        known = [
            (by_features[tuple(row)], wi, yi) for row, wi, yi in zip(X, w, y) if tuple(row) in by_features
        ]
        for label in (0, 1):  # within a class the classifier's weights are the events' weights, rescaled
            given = np.array([k for k, _, yi in known if yi == label])
            used = np.array([u for _, u, yi in known if yi == label])
            np.testing.assert_allclose(used / used.sum(), given / given.sum(), rtol=1e-9)
    scores = pd.read_parquet(next((tmp_path / "run").rglob("scores.parquet")))
    assert not np.allclose(scores["weight"], 1.0) and scores["weight"].between(0.5, 2.0).all()


def test_cathode_trains_its_flow_with_the_sideband_weights(tmp_path, monkeypatch):
    calls = []
    fit = ConditionalFlow.fit

    def spy(self, x, m, *args, sample_weight=None, **kwargs):
        calls.append(sample_weight)
        return fit(self, x, m, *args, sample_weight=sample_weight, **kwargs)

    monkeypatch.setattr(ConditionalFlow, "fit", spy)
    _tables(tmp_path, lambda n: np.random.default_rng(7).uniform(0.5, 2.0, n))
    cfg = _config(
        tmp_path, ["cathode"], flow={"n_blocks": 1, "hidden": 8, "epochs": 1}, cathode_oversampling=1.0
    )
    assert run_search(cfg, progress=False)["n_failed"] == 0
    assert len(calls) == cfg.k_folds and all(w is not None and np.ptp(w) > 0 for w in calls)


@pytest.mark.parametrize("method", ["curtains", "salad", "feta", "combined_events"])
def test_methods_without_weights_are_refused_before_training(tmp_path, method):
    data = _tables(tmp_path, lambda n: np.full(n, 2.0))
    cfg = _config(tmp_path, [method])
    validate_config(cfg)
    with pytest.raises(ValueError, match=rf"non-unit event weights.*\['{method}'\]"):
        validate_data(cfg, data)


def test_unit_weights_change_nothing_and_bad_weights_are_named(tmp_path):
    data = _tables(tmp_path, lambda n: np.ones(n))
    validate_data(_config(tmp_path, ["curtains"]), data)  # all 1: nothing to refuse
    data.loc[[5, 9], "weight"] = [np.nan, -1.0]
    with pytest.raises(
        ValueError, match=r"input.data: column 'weight' must be finite and > 0; 2 rows.*\[5, 9\]"
    ):
        validate_data(_config(tmp_path, ["cwola_hunting"]), data)

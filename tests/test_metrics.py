"""Metrics against distributions with known answers (two unit Gaussians: analytic ROC)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ks_2samp, norm

from radar.analysis.metrics import (
    auc,
    auc_null_sigma,
    classifier_metrics,
    default_fpr_floor,
    ks_per_feature,
    markdown_table,
    max_sic,
    roc_curve,
    sic_at_rejection,
    sic_curve,
    summarise,
    weighted_ks,
)

MU = 2.0


def analytic_tpr(fpr, mu=MU):
    """Score = x, background N(0,1), signal N(mu,1): cut c = Phi^-1(1-fpr), tpr = 1 - Phi(c - mu)."""
    return norm.sf(norm.isf(fpr) - mu)


@pytest.fixture(scope="module")
def gaussians():
    rng = np.random.default_rng(0)
    n_bkg, n_sig = 200_000, 50_000
    scores = np.concatenate([rng.normal(0, 1, n_bkg), rng.normal(MU, 1, n_sig)])
    labels = np.concatenate([np.zeros(n_bkg), np.ones(n_sig)])
    return labels, scores


def test_auc_matches_analytic(gaussians):
    labels, scores = gaussians
    assert auc(labels, scores) == pytest.approx(norm.cdf(MU / np.sqrt(2)), abs=0.003)


def test_roc_matches_analytic(gaussians):
    fpr, tpr, _ = roc_curve(*gaussians)
    for target in (0.01, 0.1, 0.5):
        assert np.interp(target, fpr, tpr) == pytest.approx(analytic_tpr(target), abs=0.01)


def test_sic_at_rejection_matches_analytic(gaussians):
    expected = analytic_tpr(1e-3) / np.sqrt(1e-3)
    assert sic_at_rejection(*gaussians, rejection=1000) == pytest.approx(expected, rel=0.05)


def test_max_sic_respects_the_floor(gaussians):
    labels, scores = gaussians
    floor = default_fpr_floor(int((labels == 0).sum()))
    assert floor == pytest.approx(1 / (0.16 * 200_000))
    tpr, fpr, sic = sic_curve(labels, scores)
    assert fpr.min() >= floor
    # analytic SIC grows as fpr falls for this pair, so the max sits at the floor
    grid = np.logspace(np.log10(floor), 0, 400)
    expected = (analytic_tpr(grid) / np.sqrt(grid)).max()
    assert max_sic(labels, scores) == pytest.approx(expected, rel=0.1)
    # without a floor, low-statistics points can only raise the maximum
    assert max_sic(labels, scores, fpr_floor=None) >= max_sic(labels, scores)
    assert max_sic(labels, scores, fpr_floor=0.1) < max_sic(labels, scores)


def test_random_scores_have_auc_half_and_sic_sqrt_fpr():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 100_000)
    scores = rng.uniform(size=100_000)
    m = classifier_metrics(labels, scores)
    assert abs(m["auc"] - 0.5) < 4 * auc_null_sigma((labels == 1).sum(), (labels == 0).sum())
    # a random cut keeps eps_s = eps_b: SIC = sqrt(eps_b)
    assert m["sic_at_rejection"] == pytest.approx(np.sqrt(1e-3), rel=0.3)


def test_auc_null_sigma_matches_toys():
    rng = np.random.default_rng(2)
    aucs = [auc(np.r_[np.zeros(200), np.ones(100)], rng.uniform(size=300)) for _ in range(300)]
    assert np.std(aucs) == pytest.approx(auc_null_sigma(100, 200), rel=0.15)


def test_weights_equal_duplicated_events():
    rng = np.random.default_rng(3)
    labels = np.r_[np.zeros(500), np.ones(300)]
    scores = rng.normal(labels, 1.0)
    w = rng.integers(1, 3, 800).astype(float)
    rep = np.repeat(np.arange(800), w.astype(int))
    assert auc(labels, scores, w) == pytest.approx(auc(labels[rep], scores[rep]))


def test_sic_at_rejection_needs_enough_background():
    labels = np.r_[np.zeros(200), np.ones(200)]
    assert np.isnan(sic_at_rejection(labels, np.arange(400.0), rejection=1000))


def test_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="both signal"):
        auc(np.zeros(10), np.arange(10.0))
    with pytest.raises(ValueError, match="NaN"):
        auc(np.r_[0, 1, 1], np.array([0.1, np.nan, 0.3]))
    with pytest.raises(ValueError, match="0/1"):
        auc(np.r_[0, 1, -1], np.array([0.1, 0.2, 0.3]))


def test_summarise_gives_median_and_68_band():
    s = summarise(np.arange(101.0))
    assert (s["median"], s["p16"], s["p84"], s["n"]) == (50.0, 16.0, 84.0, 101)
    assert summarise([np.nan, None])["n"] == 0


def test_ks_matches_scipy_and_uses_weights():
    rng = np.random.default_rng(4)
    a, b = rng.normal(0, 1, 3000), rng.normal(0.2, 1, 2000)
    assert weighted_ks(a, b) == pytest.approx(ks_2samp(a, b).statistic, abs=1e-12)
    # weights that double the events above 0 move the cdf: distance changes
    assert weighted_ks(a, a, wa=np.where(a > 0, 2.0, 1.0)) > 0.1
    import pandas as pd

    out = ks_per_feature(pd.DataFrame({"x": a}), pd.DataFrame({"x": b}), ["x"])
    assert set(out) == {"x"}


def test_markdown_table():
    text = markdown_table([{"a": 1, "b": "x"}, {"a": 2, "b": "y"}])
    assert text.splitlines()[0] == "| a | b |" and len(text.splitlines()) == 4

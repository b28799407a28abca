"""Comparison studies (analysis.compare) and their figures (plots.compare) on known distributions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from radar.analysis.compare import (
    auc_vs_truth,
    effective_size,
    score_correlations,
    template_ks,
    top_overlap,
    write_comparison,
)

FEATURES = ["a", "b"]
FAST_HGB = {"classifier": "hgb", "n_models": 1, "max_iter": 30, "n_threads": 1}


def gaussian_table(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"a": rng.normal(shift, 1.0, n), "b": rng.normal(0.0, 1.0, n)})


def test_template_ks_matches_the_analytic_distance_of_shifted_gaussians():
    truth = gaussian_table(20_000, 0)
    ks = template_ks(
        {"same": (gaussian_table(20_000, 1), None), "shifted": (gaussian_table(20_000, 2, 0.5), None)},
        truth,
        FEATURES,
    ).set_index(["method", "feature"])
    # KS distance of N(0,1) and N(d,1) is 2 Phi(d/2) - 1
    assert ks.loc[("shifted", "a"), "ks"] == pytest.approx(2 * norm.cdf(0.25) - 1, abs=0.02)
    assert ks.loc[("shifted", "b"), "ks"] < 0.03 and ks.loc[("same", "a"), "ks"] < 0.03
    assert ks.loc[("shifted", "a"), "p_value"] < 1e-6 < ks.loc[("same", "a"), "p_value"]


def test_template_ks_uses_weights():
    truth = gaussian_table(20_000, 0)
    template = gaussian_table(20_000, 3, 0.5)
    # importance weights N(0,1)/N(0.5,1) turn the shifted template into the truth
    w = np.exp(-0.5 * template["a"] ** 2 + 0.5 * (template["a"] - 0.5) ** 2)
    ks = template_ks({"weighted": (template, w.to_numpy()), "raw": (template, None)}, truth, ["a"])
    assert ks.set_index("method").loc["weighted", "ks"] < 0.3 * ks.set_index("method").loc["raw", "ks"]
    assert effective_size(w.to_numpy(), len(w)) < len(w) == effective_size(None, len(w))
    with pytest.raises(ValueError, match="weights"):
        template_ks({"bad": (template, -w.to_numpy())}, truth, ["a"])


def test_score_correlations_recover_known_correlations_per_class():
    rng = np.random.default_rng(4)
    n = 20_000
    labels = np.repeat([0, 1], n // 2)
    x, e = rng.normal(size=n), rng.normal(size=n)
    rho = np.where(labels == 0, 0.8, 0.2)
    y = rho * x + np.sqrt(1 - rho**2) * e
    corr = score_correlations({"m1": x, "m2": y}, labels, method="pearson")
    assert corr["background"].loc["m1", "m2"] == pytest.approx(0.8, abs=0.02)
    assert corr["signal"].loc["m1", "m2"] == pytest.approx(0.2, abs=0.03)
    assert (
        np.isnan(score_correlations({"m1": x[:4], "m2": y[:4]}, np.array([0, 0, 0, 1]))["signal"]).all().all()
    )
    with pytest.raises(ValueError, match="labels"):
        score_correlations({"m1": x, "m2": y}, labels[:10])


def test_top_overlap_identical_independent_and_opposite_scores():
    rng = np.random.default_rng(5)
    s = rng.normal(size=50_000)
    out = top_overlap(
        {"a": s, "same": s, "indep": rng.normal(size=50_000), "opposite": -s}, percents=(1.0, 10.0)
    ).set_index(["method_a", "method_b", "percent"])
    assert out.loc[("a", "same", 10.0), "overlap"] == 1.0
    assert out.loc[("a", "indep", 10.0), "overlap"] == pytest.approx(0.10, abs=0.015)
    assert out.loc[("a", "indep", 1.0), "random"] == pytest.approx(0.01)
    assert out.loc[("a", "opposite", 10.0), "overlap"] == 0.0
    masked = top_overlap({"a": s, "b": s}, percents=(10.0,), mask=s > 0)
    assert masked["n_top"].iloc[0] == pytest.approx(0.1 * (s > 0).sum(), abs=1)


def test_auc_vs_truth_flags_a_leaky_template_and_passes_a_faithful_one():
    truth = gaussian_table(800, 6)
    good = auc_vs_truth(
        (gaussian_table(800, 7), None), truth, FEATURES, n_repeats=3, k_folds=2, seed=1, **FAST_HGB
    )
    bad = auc_vs_truth(
        (gaussian_table(800, 8, 1.5), None), truth, FEATURES, n_repeats=3, k_folds=2, seed=1, **FAST_HGB
    )
    assert good["inside"] and not bad["inside"]
    assert abs(good["truth_mean"] - 0.5) < 0.08 and bad["template_median"] > 0.7
    assert len(good["template_auc"]) == len(good["truth_auc"]) == 3
    with pytest.raises(ValueError, match="n_repeats"):
        auc_vs_truth((truth, None), truth, FEATURES, n_repeats=1)


def test_write_comparison_writes_tables_and_figures(tmp_path):
    rng = np.random.default_rng(9)
    truth = gaussian_table(300, 10)
    labels = np.repeat([0, 1], 150)
    scores = {"cathode": rng.normal(size=300), "salad": rng.normal(size=300) + labels}
    written = write_comparison(
        tmp_path,
        features=FEATURES,
        templates={"t1": (gaussian_table(300, 11), None)},
        true_background=truth,
        scores=scores,
        labels=labels,
        auc_repeats=2,
        k_folds=2,
        **FAST_HGB,
    )
    for name in ("template_ks", "score_correlations_background", "score_correlations_signal", "top_overlap"):
        assert (tmp_path / f"{name}.csv").exists() and (tmp_path / f"{name}.md").exists()
    assert (tmp_path / "auc_vs_truth.json").exists()
    figures = [p for k, p in written.items() if k.startswith("figure:")]
    assert {p.name for p in figures} >= {
        "template_ks.png",
        "score_correlations.png",
        "top_overlap.png",
        "auc_vs_truth.png",
    }
    assert all(p.stat().st_size > 1000 for p in figures)

"""Every background-template and density method of issue 6 selectable by name in `radar search`,
and the score-level combination written as a method of its own."""

from __future__ import annotations

import json

import numpy as np
import pytest

from analysis.config import config_from_dict
from analysis.datasets import toy_lhco_like
from analysis.search import load_scores, run_search, unit_dir
from models.densities import get as get_density
from models.templates import get as get_template
from processors.features import write_feature_table

METHODS = ["cathode", "salad", "curtains", "feta", "ranode", "combined_scores"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("toy6")
    write_feature_table(toy_lhco_like(5_000, 0, seed=21), d / "bkg.parquet")
    write_feature_table(toy_lhco_like(0, 800, seed=22), d / "sig.parquet")
    simulation = toy_lhco_like(5_000, 0, seed=23)
    simulation["mj1"] *= 1.05  # a mismodelled "simulation"
    simulation["delta_mj"] = simulation["mj2"] - simulation["mj1"]
    write_feature_table(simulation, d / "sim.parquet")
    tiny = {name: dict(get_template(name).TINY_KWARGS) for name in ("salad", "curtains", "feta")}
    tiny["ranode"] = dict(get_density("ranode").TINY_KWARGS)
    cfg = config_from_dict({
        "name": "issue6", "output": str(d / "run"),
        "input": {"data": [str(d / "bkg.parquet")], "signal": str(d / "sig.parquet"),
                  "simulation": str(d / "sim.parquet")},
        "methods": METHODS, "injections": [300], "seeds": [0], "k_folds": 2, "min_events": 20,
        "classifier": {"name": "hgb", "settings": {"n_models": 1, "max_iter": 30}},
        "flow": {"epochs": 1, "n_blocks": 2, "hidden": 16, "batch_size": 128},
        "method_settings": tiny, "execution": {"mode": "sync"},
    })
    return cfg, run_search(cfg)


def test_every_method_runs_and_scores_every_event(run):
    cfg, manifest = run
    assert manifest["n_failed"] == 0, manifest["failures"]
    for method in METHODS:
        metrics = json.loads((unit_dir(cfg.output_dir, method, 300, 0) / "metrics.json").read_text())
        assert np.isfinite(metrics["test"]["auc"]), method
        scores = load_scores(cfg.output_dir, method, 300, 0)
        assert np.isfinite(scores["score"]).all(), method
    table = (cfg.output_dir / "metrics_table.md").read_text()
    assert all(f"| {method} |" in table for method in METHODS)


def test_score_combination_is_the_mean_of_its_members(run):
    cfg, _ = run
    combined = load_scores(cfg.output_dir, "combined_scores", 300, 0, test=True)
    members = [load_scores(cfg.output_dir, m, 300, 0, test=True) for m in ("cathode", "salad", "curtains", "feta")]
    assert len(combined) == len(members[0])
    # a combination of per-method scores must rank like the members' mean (mean of scores or of ranks)
    mean = np.mean([m["score"].to_numpy() for m in members], axis=0)
    from scipy.stats import spearmanr

    assert spearmanr(mean, combined["score"]).statistic > 0.9


def test_simulation_methods_need_a_simulation(tmp_path):
    write_feature_table(toy_lhco_like(500, 0, seed=1), tmp_path / "bkg.parquet")
    cfg = config_from_dict({"input": {"data": [str(tmp_path / "bkg.parquet")]}, "methods": ["salad"],
                            "output": str(tmp_path / "run")})
    with pytest.raises(ValueError, match=r"methods \['salad'\] need a simulation sample"):
        run_search(cfg)
    cfg = config_from_dict({"input": {"data": [str(tmp_path / "bkg.parquet")]},
                            "methods": ["cathode", "combined_scores"], "output": str(tmp_path / "run")})
    with pytest.raises(ValueError, match="combined_scores: needs >= 2 member methods"):
        run_search(cfg)

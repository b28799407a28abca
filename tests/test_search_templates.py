"""Every background-template and density method of issue 6 selectable by name in `radar search`,
and the score-level combination written as a method of its own."""

from __future__ import annotations

import json

import numpy as np
import pytest

from radar.analysis.config import config_from_dict
from radar.analysis.datasets import toy_lhco_like
from radar.analysis.search import load_scores, run_search, unit_dir
from radar.models.densities import get as get_density
from radar.models.templates import get as get_template
from radar.processors.features import write_feature_table

METHODS = ["cathode", "salad", "curtains", "feta", "combined_events", "ranode", "combined_scores"]
TEMPLATES = ["salad", "cathode", "curtains", "feta"]


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
    cfg = config_from_dict(
        {
            "name": "issue6",
            "output": str(d / "run"),
            "input": {
                "data": [str(d / "bkg.parquet")],
                "signal": str(d / "sig.parquet"),
                "simulation": str(d / "sim.parquet"),
            },
            "methods": METHODS,
            "injections": [0, 300],
            "seeds": [0],
            "k_folds": 2,
            "min_events": 20,
            "compare_auc_repeats": 2,
            "classifier": {"name": "hgb", "settings": {"n_models": 1, "max_iter": 30}},
            "flow": {"epochs": 1, "n_blocks": 2, "hidden": 16, "batch_size": 128},
            "method_settings": tiny,
            "execution": {"mode": "sync"},
        }
    )
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
    assert (cfg.output_dir / "figures" / "sic_vs_injection.png").exists()
    header = table.splitlines()[0]
    assert "| s/unit |" in header and "| failed trainings |" in header and "SIC@R=1000" in header


def test_table_reports_wall_time_and_failed_trainings(run):
    cfg, _ = run
    import pandas as pd

    table = pd.read_csv(cfg.output_dir / "metrics_table.csv").set_index(["method", "injection"])
    assert (table["seconds_median"] > 0).all()
    ranode = table.loc[("ranode", 300)]
    assert ranode["flow_trainings"] >= 2 * 2  # k_folds = 2 density folds, background + signal flow each
    assert 0 <= ranode["flow_trainings_failed"] <= ranode["flow_trainings"]
    # a combination's own time is small; with its members it costs their sum
    combined = table.loc[("combined_scores", 300)]
    members = sum(table.loc[(m, 300), "seconds_median"] for m in TEMPLATES)
    assert combined["seconds_with_members"] == pytest.approx(combined["seconds_median"] + members, rel=1e-6)


def test_combined_events_reuses_the_member_templates_in_equal_shares(run):
    cfg, _ = run
    from radar.analysis.search import load_template_sample

    metrics = json.loads((unit_dir(cfg.output_dir, "combined_events", 300, 0) / "metrics.json").read_text())
    assert metrics["members_reused"] == TEMPLATES
    events, weights = load_template_sample(cfg.output_dir, "combined_events", 300, 0)
    members = {m: load_template_sample(cfg.output_dir, m, 300, 0) for m in TEMPLATES}
    features = list(cfg.features)
    assert len(events) == metrics["n_template"]
    assert sorted(set(events["fold"])) == list(range(cfg.k_folds))
    for fold in range(cfg.k_folds):  # every fold's combination is made of the members' templates of that fold
        own = (events["fold"] == fold).to_numpy()
        member_fold = {m: e[e["fold"] == fold] for m, (e, _) in members.items()}
        share = min(len(e) for e in member_fold.values())
        assert own.sum() == len(TEMPLATES) * share
        rows = [tuple(np.round(r, 9)) for r in events.loc[own, features].to_numpy()]
        assert len(set(rows)) == len(rows)  # no event twice
        source = np.full(len(rows), -1)
        for k, e in enumerate(member_fold.values()):
            member_rows = {tuple(np.round(r, 9)) for r in e[features].to_numpy()}
            source[[i for i, r in enumerate(rows) if r in member_rows and source[i] < 0]] = k
        assert (source >= 0).all()  # every combined event is an event of that fold's template of one member
        counts = np.bincount(source, minlength=len(TEMPLATES))
        assert (counts == share).all()  # equal shares
        shares = np.bincount(source, weights=weights[own], minlength=len(TEMPLATES))
        np.testing.assert_allclose(shares, counts, rtol=1e-9)  # each member carries weight = its event count


def test_salad_template_repeats_no_simulation_event(run):
    """A template with repeated events lets the k-fold classifier recognise them in its held-out fold."""
    cfg, _ = run
    from radar.analysis.search import load_template_sample

    events, _ = load_template_sample(cfg.output_dir, "salad", 300, 0)
    metrics = json.loads((unit_dir(cfg.output_dir, "salad", 300, 0) / "metrics.json").read_text())
    for fold in range(cfg.k_folds):  # one template per fold (from the same simulation pool)
        own = events[events["fold"] == fold]
        assert len(own) and not own[list(cfg.features)].duplicated().any()
        assert len(own) < metrics["n_data_sr"] * cfg.cathode_oversampling
    assert metrics["n_template"] == len(events)


def test_comparison_studies_are_written_by_the_search(run):
    cfg, _ = run
    root = cfg.output_dir / "comparison"
    import pandas as pd

    ks = pd.read_csv(root / "inj_300" / "template_ks.csv")
    assert set(ks["method"]) == set(TEMPLATES) | {"combined_events"}
    assert ((ks["ks"] >= 0) & (ks["ks"] <= 1)).all()
    corr = pd.read_csv(root / "inj_300" / "score_correlations_signal.csv", index_col=0)
    assert "iad" not in corr.columns and {"cathode", "ranode", "combined_scores"} <= set(corr.columns)
    assert (root / "inj_0" / "top_overlap.csv").exists()
    summary = json.loads((root / "auc_vs_truth.json").read_text())
    assert set(summary["methods"]) == set(TEMPLATES) | {"combined_events"}
    truth = summary["truth"]
    assert len(truth["truth_auc"]) == 4 and truth["band"][0] < truth["truth_mean"] < truth["band"][1]
    for result in summary["methods"].values():
        assert len(result["template_auc"]) == 2 and set(result["per_seed"]) == {"0"}
    assert (root / "auc_vs_truth.md").read_text().startswith("| method |")
    assert (root / "auc_vs_truth.png").exists()
    assert not (root / "auc_vs_truth_inj_300.json").exists()  # the AUC study runs at zero injection only


def test_score_combination_is_the_mean_of_its_members(run):
    cfg, _ = run
    combined = load_scores(cfg.output_dir, "combined_scores", 300, 0, test=True)
    members = [
        load_scores(cfg.output_dir, m, 300, 0, test=True) for m in ("cathode", "salad", "curtains", "feta")
    ]
    assert len(combined) == len(members[0])
    # a combination of per-method scores must rank like the members' mean (mean of scores or of ranks)
    mean = np.mean([m["score"].to_numpy() for m in members], axis=0)
    from scipy.stats import spearmanr

    assert spearmanr(mean, combined["score"]).statistic > 0.9


def test_simulation_methods_need_a_simulation(tmp_path):
    write_feature_table(toy_lhco_like(500, 0, seed=1), tmp_path / "bkg.parquet")
    cfg = config_from_dict(
        {
            "input": {"data": [str(tmp_path / "bkg.parquet")]},
            "methods": ["salad"],
            "output": str(tmp_path / "run"),
        }
    )
    with pytest.raises(ValueError, match=r"methods \['salad'\] need a simulation sample"):
        run_search(cfg)
    cfg = config_from_dict(
        {
            "input": {"data": [str(tmp_path / "bkg.parquet")]},
            "methods": ["cathode", "combined_scores"],
            "output": str(tmp_path / "run"),
        }
    )
    with pytest.raises(ValueError, match="combined_scores: needs >= 2 member methods"):
        run_search(cfg)

"""`radar search` with context regions (the non-resonant search, issue 15) and the context-template methods
(generate, reweight, morph, mc) — through the search's own units, folds and metrics — and the resonant
search as their special case (context m_JJ, SR an interval)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from radar.analysis.config import config_from_dict
from radar.analysis.datasets import toy_lhco_like
from radar.analysis.nonresonant import cut_excess, toy_samples
from radar.analysis.regions import ContextRegions, Regions, SearchRegions
from radar.analysis.search import run_search, unit_dir
from radar.analysis.validation import load_config, validate_config
from radar.processors.features import write_feature_table

FLOW = {"epochs": 6, "n_blocks": 2, "hidden": 16, "batch_size": 512, "lr": 2e-3, "device": "cpu"}
RATIO = {"settings": {"epochs": 6, "batch_size": 512, "device": "cpu"}}


def _as_feature_table(toy: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The non-resonant toy (context m1, m2; feature x) as a radar feature table: HT = 400 m1, MET = 40 m2,
    x in delta_r_jj; the other columns an LHCO-like filler."""
    table = toy_lhco_like(len(toy), 0, seed=seed)
    table["ht"], table["met"] = 400.0 * toy["m1"].to_numpy(), 40.0 * toy["m2"].to_numpy()
    table["delta_r_jj"], table["label"] = toy["x"].to_numpy(), toy["label"].to_numpy()
    return table


@pytest.fixture(scope="module")
def context_run(tmp_path_factory):
    """Background-only and injected units of every context method on the toy, SR = HT >= 1000 and
    MET >= 100 GeV (= the toy's m1, m2 >= 2.5)."""
    d = tmp_path_factory.mktemp("context")
    toy = toy_samples(120_000, 60_000, 0, seed=3)  # generate needs ~60k CR events per fold
    for name, key, seed in (("data", "data", 1), ("mc", "mc", 2), ("sig", "signal", 3)):
        write_feature_table(_as_feature_table(toy[key], seed), d / f"{name}.parquet")
    cfg = {
        "name": "context",
        "output": str(d / "run"),
        "input": {"data": "data.parquet", "signal": "sig.parquet", "simulation": "mc.parquet"},
        "regions": {"context": {"ht": [1000, None], "met": [100, None]}},
        "features": ["delta_r_jj"],
        "methods": ["generate", "reweight", "morph", "mc", "iad"],
        "injections": [0, 300],
        "seeds": [0],
        "data_seed": 1,
        "k_folds": 3,
        "classifier": {"name": "hgb", "settings": {"n_models": 1}},
        "flow": FLOW,
        "method_settings": {
            "reweight": RATIO,
            "generate": RATIO,
            "morph": {**RATIO, "transport": {"epochs": 6, "batch_size": 512, "lr": 2e-3}},
        },
        "compare": False,
        "execution": {"mode": "sync"},
    }
    path = d / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    config = load_config(path)
    manifest = run_search(config)
    return config, manifest


def _metrics(cfg, method, injection, seed=0):
    return json.loads((unit_dir(cfg.output_dir, method, injection, seed) / "metrics.json").read_text())


def test_context_templates_invent_no_signal_on_background_only_data(context_run):
    """The real chain (templates extrapolated from the CR, k-fold CWoLa classifiers) on background only:
    the SR data are as the templates predict — classification AUC near 0.5 and no excess after a cut on
    the trained score — while the raw simulation, which the extrapolation corrects, is caught."""
    cfg, manifest = context_run
    assert manifest["n_failed"] == 0
    for method in ("generate", "reweight", "morph"):
        m = _metrics(cfg, method, 0)
        assert m["n_sig_sr"] == 0 and m["context"] == ["ht", "met"]
        assert abs(m["classification_auc"] - 0.5) < 0.035, (method, m["classification_auc"])
        assert len(m["cut_excess"]) == 2
        for check in m["cut_excess"]:
            assert abs(check["z"]) < 3.0, (method, check)
    raw = _metrics(cfg, "mc", 0)
    assert raw["classification_auc"] > 0.56 and raw["cut_excess"][0]["z"] > 3.0, raw["cut_excess"]


def test_context_templates_find_an_injected_signal(context_run):
    cfg, _ = context_run
    for method in ("generate", "reweight", "morph", "iad"):
        m = _metrics(cfg, method, 300)
        assert m["n_sig_sr"] == 300  # S/B 5 % in the SR
        assert m["test"]["max_sic"] > 3.0, (method, m["test"])
        if method != "iad":
            assert max(check["z"] for check in m["cut_excess"]) > 4.0, (method, m["cut_excess"])
    table = (cfg.output_dir / "metrics_table.md").read_text()
    assert "| cut-excess Z |" in table and "top 10 / 1 %" in table  # the null check in the run's table
    # the unit's saved template carries the context variables and the folds
    template = pd.read_parquet(unit_dir(cfg.output_dir, "reweight", 0, 0) / "template.parquet")
    assert {"ht", "met", "delta_r_jj", "weight", "fold"} <= set(template.columns)
    assert (template["ht"] >= 1000).all() and (template["met"] >= 100).all()  # SR simulation events only


def test_the_resonant_search_runs_the_context_templates(tmp_path):
    """An m_JJ window is context (m_JJ): ``generate`` without a simulation is CATHODE's template, through
    the same method code as the non-resonant search."""
    d = tmp_path
    write_feature_table(toy_lhco_like(12_000, 0, seed=11), d / "bkg.parquet")
    write_feature_table(toy_lhco_like(0, 2_000, seed=12), d / "sig.parquet")
    cfg = config_from_dict(
        {
            "output": str(d / "run"),
            "input": {"data": str(d / "bkg.parquet"), "signal": str(d / "sig.parquet")},
            "features": ["mj1", "delta_mj", "tau21_j1", "tau21_j2"],
            "methods": ["generate"],
            "injections": [0, 300],
            "k_folds": 3,
            "classifier": {"name": "hgb", "settings": {"n_models": 1, "max_iter": 40}},
            "flow": {"epochs": 3, "n_blocks": 2, "hidden": 16, "batch_size": 256, "device": "cpu"},
            "cathode_oversampling": 2,
            "compare": False,
            "execution": {"mode": "sync"},
        }
    )
    validate_config(cfg)
    assert run_search(cfg)["n_failed"] == 0
    null, signal = _metrics(cfg, "generate", 0), _metrics(cfg, "generate", 300)
    assert null["context"] == ["mjj"]
    assert abs(null["classification_auc"] - 0.5) < 4 * null["classification_auc_null_sigma"] + 0.01
    assert signal["test"]["auc"] > 0.8 and signal["cut_excess"][0]["z"] > 4.0
    template = pd.read_parquet(unit_dir(cfg.output_dir, "generate", 0, 0) / "template.parquet")
    sr = (template["mjj"] >= 3300) & (template["mjj"] < 3700)
    assert sr.all()  # sampled at the SR data's own masses


def test_both_kinds_of_regions_are_one_interface():
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"mjj": rng.uniform(1000, 6000, 500), "met": rng.exponential(80, 500)})
    window = Regions(sr=(3300, 3700), mjj_range=(1500, 5500))
    as_cuts = ContextRegions({"mjj": (3300, 3700)}, range={"mjj": (1500, 5500)})
    for regions in (window, as_cuts):
        assert isinstance(regions, SearchRegions) and regions.context == ["mjj"]
    assert (window.sr_mask(table) == as_cuts.sr_mask(table)).all()
    assert (window.cr_mask(table) == as_cuts.cr_mask(table)).all()  # sidebands = the CR in the range
    assert (window.range_mask(table) == as_cuts.range_mask(table)).all()
    met = ContextRegions({"met": (75, None)})
    assert (met.sr_mask(table) == (table["met"] >= 75)).all() and met.describe() == "SR met >= 75"
    with pytest.raises(ValueError, match="no column \\['ht'\\]"):
        ContextRegions({"ht": (800, None)}).sr_mask(table)


def test_context_configs_are_checked_before_training(tmp_path):
    write_feature_table(toy_lhco_like(2_000, 0, seed=1), tmp_path / "bkg.parquet")
    base = {"input": {"data": str(tmp_path / "bkg.parquet")}, "regions": {"context": {"met": [75, None]}}}
    with pytest.raises(ValueError, match="describe an m_JJ window"):
        config_from_dict({**base, "regions": {"context": {"met": [75, None]}, "sr": [3000, 3400]}})
    with pytest.raises(ValueError, match="neither a lower nor an upper"):
        config_from_dict({**base, "regions": {"context": {"met": [None, None]}}})
    with pytest.raises(ValueError, match="give context too"):
        config_from_dict({**base, "regions": {"range": {"met": [0, 500]}}})
    with pytest.raises(ValueError, match="need an m_JJ window with sidebands"):
        validate_config(config_from_dict({**base, "methods": ["cathode", "generate"]}))
    with pytest.raises(ValueError, match="need a simulation sample"):
        validate_config(config_from_dict({**base, "methods": ["reweight"]}))
    with pytest.raises(ValueError, match="no feature-table columns"):
        validate_config(config_from_dict({**base, "regions": {"context": {"nope": [1, None]}}}))
    # with context regions m_JJ is a legitimate classifier input (the non-resonant reference uses it)
    validate_config(config_from_dict({**base, "methods": ["generate"], "features": ["mjj", "tau21_j1"]}))


def test_cut_excess_compares_each_classifier_with_its_own_template_events():
    """Two classifiers with different calibrations: the expected count is the sum over classifiers of
    their own SR data times their own template's passing fraction, not a pooled fraction."""
    rng = np.random.default_rng(1)
    n = 20_000
    data = np.concatenate([rng.uniform(0, 1, n), rng.uniform(0, 1, n) ** 3])  # classifier 1 scores lower
    template = np.concatenate([rng.uniform(0, 1, 2 * n), rng.uniform(0, 1, 2 * n) ** 3])
    groups = (np.repeat([0, 1], n), np.repeat([0, 1], 2 * n))
    paired = cut_excess(data, template, np.ones(4 * n), 0.1, groups=groups)
    assert abs(paired["z"]) < 3.0 and abs(paired["n_exp"] - paired["n_obs"]) < 0.05 * paired["n_obs"]
    # with the template of group 0 only (the other classifier's calibration) the prediction is off
    shifted = cut_excess(data, template[: 2 * n], np.ones(2 * n), 0.1)
    assert abs(shifted["n_exp"] - shifted["n_obs"]) > 0.3 * shifted["n_obs"]


def test_the_hand_tuned_simulation_is_an_input_option(tmp_path):
    from radar.analysis.preparation import load_inputs

    table = toy_lhco_like(500, 0, seed=2)
    write_feature_table(table, tmp_path / "sim.parquet")
    raw = {"input": {"data": str(tmp_path / "sim.parquet"), "simulation": str(tmp_path / "sim.parquet")}}
    tuned = {"input": {**raw["input"], "simulation_transform": "hand_tuned"}}
    assert "simulation_transform" not in config_from_dict(raw).to_dict()["input"]  # old runs keep their hash
    sim = load_inputs(config_from_dict(tuned))["simulation"]
    assert np.allclose(sim["met"], table["met"] * (1 + table["met"] / 500.0))
    assert np.allclose(sim["tau21_j1"], table["tau21_j1"] ** 1.1) and np.allclose(sim["ht"], table["ht"])
    assert np.allclose(load_inputs(config_from_dict(tuned))["data"]["met"], table["met"])  # data untouched
    with pytest.raises(ValueError, match="no input.simulation to transform"):
        validate_config(
            config_from_dict(
                {"input": {**raw["input"], "simulation": None, "simulation_transform": "hand_tuned"}}
            )
        )


def test_cut_excess_counts_tied_top_scores():
    """Discrete scores whose top 1 % is one tied value: the cut keeps the tie instead of passing nothing."""
    data = np.concatenate([np.full(50, 0.9), np.linspace(0.0, 0.5, 950)])
    template = np.concatenate([np.full(100, 0.9), np.linspace(0.0, 0.5, 1900)])
    check = cut_excess(data, template, np.ones(len(template)), 0.01)
    assert check["n_obs"] == 50 and abs(check["n_exp"] - 50) < 1e-9 and abs(check["z"]) < 1e-9


@pytest.mark.parametrize("name", ["search_svj_context", "study_peer_real_generate"])
def test_the_shipped_context_configs_are_valid_search_configs(name):
    """The two configs of the context-template studies parse as search configs (their inputs are study
    samples: checked by their runs, not here)."""
    from pathlib import Path

    from radar.analysis.units import method_info

    path = Path(__file__).resolve().parents[1] / "configs" / f"{name}.yaml"
    cfg = config_from_dict(yaml.safe_load(path.read_text()))
    assert {"generate"} <= set(cfg.methods)
    if not cfg.regions.resonant:
        assert all(method_info(m).context_regions for m in cfg.methods)

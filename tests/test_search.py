"""`radar search` end to end on a tiny toy sample: zero-signal sanity, outputs, resume, determinism, the
Dask path, config validation, and the flow-based methods (CATHODE, ANODE) with tiny flows."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from radar.analysis.cli import main as radar_main
from radar.analysis.config import config_from_dict
from radar.analysis.datasets import toy_lhco_like
from radar.analysis.search import available_methods, load_scores, run_search, unit_dir
from radar.analysis.validation import load_config
from radar.processors.features import write_feature_table

HGB = {"name": "hgb", "settings": {"n_models": 1, "max_iter": 40}}
MLP = {
    "name": "mlp",
    "settings": {"epochs": 2, "batch_size": 128, "patience": 2, "n_best_epochs": 2, "hidden": [16, 16]},
}


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("toy")
    write_feature_table(toy_lhco_like(12_000, 0, seed=11), d / "bkg.parquet")
    write_feature_table(toy_lhco_like(0, 2_000, seed=12), d / "sig.parquet")
    return d


def write_config(toy_dir, tmp_path, name="cfg.yaml", **overrides):
    cfg = {
        "name": "toy",
        "output": str(tmp_path / "run"),
        "input": {"data": str(toy_dir / "bkg.parquet"), "signal": str(toy_dir / "sig.parquet")},
        "methods": ["iad", "cwola_hunting"],
        "injections": [0, 300],
        "seeds": [0, 1],
        "k_folds": 3,
        "classifier": HGB,
        "execution": {"mode": "sync"},
    }
    cfg.update(overrides)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def finished_run(toy_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    cfg = load_config(write_config(toy_dir, tmp, methods=["iad", "cwola_hunting", "supervised"]))
    return cfg, run_search(cfg)


def _metrics(cfg, method, injection, seed):
    return json.loads((unit_dir(cfg.output_dir, method, injection, seed) / "metrics.json").read_text())


def test_zero_signal_auc_is_consistent_with_half(finished_run):
    cfg, manifest = finished_run
    assert manifest["n_failed"] == 0
    for method in ("iad", "cwola_hunting"):
        for seed in cfg.seeds:
            m = _metrics(cfg, method, 0, seed)
            assert m["n_sig_sr"] == 0
            assert abs(m["classification_auc"] - 0.5) < 4 * m["classification_auc_null_sigma"], (method, m)


def test_injected_signal_is_found(finished_run):
    cfg, _ = finished_run
    for method in ("iad", "cwola_hunting"):
        m = _metrics(cfg, method, 300, 0)
        assert m["n_injected"] == 300 and 0 < m["n_sig_sr"] <= 300
        assert m["classification_auc"] - 0.5 > 4 * m["classification_auc_null_sigma"]
        assert m["test"]["auc"] > 0.9 and m["auc_sr_data_truth"] > 0.9
    assert _metrics(cfg, "supervised", 0, 0)["test"]["auc"] > 0.95


def test_every_data_event_gets_a_score(finished_run):
    cfg, _ = finished_run
    scores = load_scores(cfg.output_dir, "cwola_hunting", 300, 1)
    assert list(scores.columns) == ["mjj", "score", "label", "weight", "in_sr", "role", "score_fold_mean"]
    assert np.isfinite(scores["score"]).all() and scores["score"].between(0, 1).all()
    assert scores["mjj"].between(1500, 5500).all()
    np.testing.assert_array_equal(scores["in_sr"], scores["mjj"].between(3300, 3700, inclusive="left"))
    # SR events out-of-fold as data, narrow SB events out-of-fold as template, the rest by its fold's model
    assert set(scores.loc[scores["in_sr"], "role"]) == {"data"}
    sb = scores["mjj"].between(3100, 3300, inclusive="left") | scores["mjj"].between(
        3700, 3900, inclusive="left"
    )
    assert set(scores.loc[sb, "role"]) == {"template"}
    rest = ~sb & ~scores["in_sr"]
    assert set(scores.loc[rest, "role"]) == {"fold"}
    # only the diagnostic column keeps the pre-fix fold mean, and only for events in no class
    np.testing.assert_array_equal(scores.loc[~rest, "score"], scores.loc[~rest, "score_fold_mean"])
    assert (scores.loc[rest, "score"] != scores.loc[rest, "score_fold_mean"]).mean() > 0.9
    test = load_scores(cfg.output_dir, "cwola_hunting", 300, 1, test=True)
    assert set(test["label"]) == {0.0, 1.0} and np.isfinite(test["score"]).all()
    assert len(list((unit_dir(cfg.output_dir, "iad", 0, 0) / "models").glob("fold*.npz"))) == 3


def test_run_level_table_and_manifest(finished_run):
    cfg, manifest = finished_run
    table = pd.read_csv(cfg.output_dir / "metrics_table.csv")
    assert len(table) == 3 * 2 and set(table["n_seeds"]) == {2}
    assert {"max_sic_median", "max_sic_p16", "max_sic_p84", "sic_at_rejection_median"} <= set(table.columns)
    assert (cfg.output_dir / "metrics_table.md").read_text().startswith("| method |")
    saved = json.loads((cfg.output_dir / "manifest.json").read_text())
    assert saved["status"] == "finished" and saved["seeds"] == [0, 1]
    assert all(len(h) == 64 for h in saved["inputs"].values()) and len(saved["inputs"]) == 2
    assert "numpy" in saved["versions"]
    resolved = yaml.safe_load((cfg.output_dir / "config.yaml").read_text())
    assert resolved["methods"] == ["iad", "cwola_hunting", "supervised"]


def test_resume_skips_finished_units(toy_dir, tmp_path):
    cfg = load_config(write_config(toy_dir, tmp_path, methods=["iad"], injections=[300]))
    run_search(cfg)
    keep = unit_dir(cfg.output_dir, "iad", 300, 0) / "metrics.json"
    redo = unit_dir(cfg.output_dir, "iad", 300, 1) / "metrics.json"
    before = keep.stat().st_mtime_ns
    redo.unlink()
    with pytest.raises(ValueError, match="use --resume"):
        run_search(cfg)
    manifest = run_search(cfg, resume=True)
    assert manifest["units_run"] == [["iad", 300, 1]] and manifest["units_skipped"] == [["iad", 300, 0]]
    assert keep.stat().st_mtime_ns == before and redo.exists()
    # a changed config must not be resumed into the same directory
    changed = load_config(
        write_config(toy_dir, tmp_path, name="changed.yaml", methods=["iad"], injections=[300], k_folds=4)
    )
    with pytest.raises(ValueError, match="different config"):
        run_search(changed, resume=True)
    # more methods, injections or seeds extend the run: only the new units are trained
    extended = load_config(
        write_config(
            toy_dir,
            tmp_path,
            name="extended.yaml",
            methods=["iad", "cwola_hunting"],
            injections=[300, 0],
            seeds=[0, 1, 2],
        )
    )
    manifest = run_search(extended, resume=True)
    assert len(manifest["units_skipped"]) == 2 and len(manifest["units_run"]) == 2 * 2 * 3 - 2
    assert keep.stat().st_mtime_ns == before
    table = pd.read_csv(cfg.output_dir / "metrics_table.csv")
    assert len(table) == 4 and set(table["n_seeds"]) == {3}


def test_same_seed_same_scores_sync_and_dask(toy_dir, tmp_path):
    common = {"methods": ["iad"], "injections": [300], "seeds": [3], "classifier": MLP}
    a = load_config(write_config(toy_dir, tmp_path, name="a.yaml", output=str(tmp_path / "a"), **common))
    b = load_config(
        write_config(
            toy_dir,
            tmp_path,
            name="b.yaml",
            output=str(tmp_path / "b"),
            execution={"mode": "dask", "workers": 1, "processes": False},
            **common,
        )
    )
    run_search(a)
    manifest = run_search(b)
    assert manifest["n_failed"] == 0
    sa = pd.read_parquet(unit_dir(a.output_dir, "iad", 300, 3) / "scores.parquet")
    sb = pd.read_parquet(unit_dir(b.output_dir, "iad", 300, 3) / "scores.parquet")
    pd.testing.assert_frame_equal(sa, sb)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"methods": ["iad", "salsa"]}, "unknown \\['salsa'\\]"),
        ({"regions": {"sr": [5300, 5800]}}, "outside the m_JJ range"),
        ({"regions": {"sr": [6000, 6400], "mjj_range": [1000, 7000]}}, "outside the data's m_JJ range"),
        ({"min_events": 10**6}, "only .* data events in the SR"),
        (
            {"methods": ["cwola_hunting"], "regions": {"cwola_sideband_width": 1.0}, "min_events": 50},
            "in the sidebands",
        ),
        ({"classifier": {"name": "xgb"}}, "classifier.name 'xgb' unknown"),
        ({"bogus_key": 1}, "bogus_key: unknown key"),
        ({"input": {"data": "bkg.parquet"}}, "injections given but input.signal"),
        ({"features": ["mj1", "mjj"]}, "features"),
        ({"variants": {"iad": {"method": "cwola_hunting"}}}, "variants.iad: the name of a registered method"),
        ({"variants": {"v": {"method": "salsa"}}}, "variants.v: method 'salsa' is not a trained method"),
        ({"variants": {"v": {"method": "combined_scores"}}}, "not a trained method"),
        ({"variants": {"v": {"method": "iad", "setings": {}}}}, "variants.v: must be a mapping"),
        ({"methods": ["iad", "v2"], "variants": {"v": {"method": "iad"}}}, "unknown \\['v2'\\]"),
    ],
)
def test_bad_configs_fail_before_training(toy_dir, tmp_path, overrides, message):
    if "input" in overrides:
        overrides = {"input": {"data": str(toy_dir / "bkg.parquet")}}
    path = write_config(toy_dir, tmp_path, **overrides)
    with pytest.raises(ValueError, match=message):
        run_search(load_config(path))
    assert not (tmp_path / "run" / "iad").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"seeds": "10"}, "seeds: Input should be a valid list (got '10')"),
        (
            {"seeds": [1.7]},
            "seeds.0: Input should be a valid integer, got a number with a fractional part (got 1.7)",
        ),
        ({"seeds": [-1]}, "seeds.0: Input should be greater than or equal to 0 (got -1)"),
        ({"seeds": [1, 1]}, "seeds: Value error, duplicates in [1, 1]"),
        (
            {"k_folds": "five"},
            "k_folds: Input should be a valid integer, unable to parse string as an integer (got 'five')",
        ),
        ({"regions": {"sr": [3300]}}, "regions.sr.1: Field required"),
        ({"execution": {"mode": "cluster"}}, "execution.mode: Input should be 'dask' or 'sync'"),
        (
            {"classifier": {"name": "hgb", "settings": {"epochs": 5}}},
            "classifier.settings: unknown keys ['epochs']",
        ),
        ({"flow": {"n_block": 4}}, "flow: unknown keys ['n_block']"),
        ({"flow": {"seed": 4}}, "flow: unknown keys ['seed']"),
        ({"method_settings": {"cathode": {"hiden": 4}}}, "method_settings.cathode: unknown keys ['hiden']"),
        (
            {"method_settings": {"cwola_hunting": {"x": 1}}},
            "method_settings.cwola_hunting: cwola_hunting takes no settings",
        ),
        (
            {"variants": {"v": {"method": "ranode", "settings": {"ww": 0.1}}}, "methods": ["iad", "v"]},
            "variants.v.settings: unknown keys ['ww']",
        ),
        ({"injections": [5000]}, "injections: 5000.0: n_sig=5000 but the signal pool holds"),
    ],
)
def test_every_config_error_is_one_line_naming_the_key_and_dry_run_catches_it(
    toy_dir, tmp_path, capsys, caplog, monkeypatch, overrides, message
):
    from radar.analysis import cli

    # the command's own handler (rich) replaces pytest's log capture: keep the capture, check the records
    monkeypatch.setattr(cli, "setup_logging", lambda verbose=0, quiet=False: None)
    path = write_config(toy_dir, tmp_path, **overrides)
    with caplog.at_level("ERROR", logger="radar"):
        assert cli.main(["search", str(path), "--dry-run"]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0] and message in errors[0], errors
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    assert not (tmp_path / "run").exists()


def test_numbers_given_as_strings_are_read_as_numbers(toy_dir, tmp_path):
    """YAML ``min_events: "50"`` is the number 50 (it showed a traceback)."""
    path = write_config(toy_dir, tmp_path, min_events="50", cathode_oversampling="2.5")
    cfg = load_config(path)
    assert cfg.min_events == 50 and cfg.cathode_oversampling == 2.5


def test_the_config_schema_names_every_key(capsys):
    from radar.analysis.cli import main as radar_main

    assert radar_main(["search", "--schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert {"input", "regions", "methods", "seeds", "k_folds", "flow", "execution"} <= set(
        schema["properties"]
    )
    assert "base_dir" not in schema["properties"] and schema["additionalProperties"] is False


def test_nan_features_fail_before_training(toy_dir, tmp_path):
    table = pd.read_parquet(toy_dir / "bkg.parquet")
    table.loc[table.index[:3], "delta_mj"] = np.nan
    table.loc[table.index[:3], "mjj"] = 3500.0
    write_feature_table(table, tmp_path / "nan.parquet")
    path = write_config(
        toy_dir,
        tmp_path,
        input={"data": str(tmp_path / "nan.parquet"), "signal": str(toy_dir / "sig.parquet")},
    )
    with pytest.raises(ValueError, match="'delta_mj' is NaN/inf in 3"):
        run_search(load_config(path))


def test_an_empty_input_table_is_named(toy_dir, tmp_path):
    """A 0-row table failed with "zero-size array to reduction operation", naming no file."""
    write_feature_table(toy_lhco_like(100, 0, seed=1).iloc[:0], tmp_path / "empty.parquet")
    path = write_config(
        toy_dir,
        tmp_path,
        input={"data": str(tmp_path / "empty.parquet"), "signal": str(toy_dir / "sig.parquet")},
    )
    with pytest.raises(ValueError, match=r"empty\.parquet: the feature table holds no events"):
        run_search(load_config(path))


def test_missing_input_file_is_named(toy_dir, tmp_path):
    path = write_config(toy_dir, tmp_path, input={"data": "nowhere.parquet"})
    with pytest.raises(FileNotFoundError, match="nowhere.parquet"):
        load_config(path)


def test_cli_search_dry_run_and_error_codes(toy_dir, tmp_path, capsys):
    path = write_config(toy_dir, tmp_path, methods=["iad"], injections=[300], seeds=[0])
    assert radar_main(["search", str(path), "--dry-run"]) == 0
    assert "1 units" in capsys.readouterr().out
    assert radar_main(["-q", "search", str(path), "--sync"]) == 0
    assert radar_main(["-q", "search", str(path), "--sync"]) == 1  # finished units, no --resume
    assert radar_main(["-q", "search", str(path), "--sync", "--resume"]) == 0
    bad = write_config(toy_dir, tmp_path, name="bad.yaml", methods=["nope"])
    assert radar_main(["-q", "search", str(bad)]) == 1


def test_config_round_trip():
    cfg = config_from_dict({"input": {"data": "x.parquet"}, "methods": ["iad"], "seeds": [1, 2]})
    again = config_from_dict(cfg.to_dict())
    assert again.to_dict() == cfg.to_dict() and again.digest() == cfg.digest()
    assert set(available_methods()) == {
        "anode",
        "cathode",
        "cwola_hunting",
        "iad",
        "supervised",  # issue 4
        "salad",
        "curtains",
        "feta",
        "combined_events",
        "ranode",  # issue 6
        "combined_scores",
        "lacathode",  # issue 10
        "autoencoder",
        "nae",  # issue 16
        "generate",
        "reweight",
        "morph",
        "mc",  # issue 15: the context templates
    }
    # a context-region config round-trips with its own keys (no m_JJ window saved next to it)
    ctx = config_from_dict({"input": {"data": "x.parquet"}, "regions": {"context": {"met": [75, None]}}})
    assert "sr" not in ctx.to_dict()["regions"] and config_from_dict(ctx.to_dict()).digest() == ctx.digest()


def _flow_kwargs(kind):
    import importlib

    registry = importlib.import_module(f"radar.models.{kind}")
    cls = registry.get("cathode" if kind == "templates" else "anode")
    return dict(getattr(cls, "TINY_KWARGS", {"epochs": 1, "n_blocks": 2, "hidden": 16}))


@pytest.mark.parametrize(("method", "kind"), [("cathode", "templates"), ("anode", "densities")])
def test_flow_methods_run_with_tiny_flows(toy_dir, tmp_path, method, kind):
    flow = _flow_kwargs(kind)
    path = write_config(
        toy_dir,
        tmp_path,
        methods=[method],
        injections=[300],
        seeds=[0],
        flow=flow,
        cathode_oversampling=1.0,
        classifier=MLP,
    )
    cfg = load_config(path)
    manifest = run_search(cfg)
    assert manifest["n_failed"] == 0, manifest["failures"]
    m = _metrics(cfg, method, 300, 0)
    assert m["flow_trainings_failed"] >= 0 and m["test"]["n_signal"] > 0
    scores = pd.read_parquet(unit_dir(cfg.output_dir, method, 300, 0) / "scores.parquet")
    assert np.isfinite(scores["score"]).all() and len(scores) == m["n_data"]
    if method == "cathode":
        # one template per fold, of oversampling x the SR data outside that fold
        assert m["n_template"] == (cfg.k_folds - 1) * m["n_data_sr"] and set(m["template_ks"]) == set(
            cfg.features
        )
        assert set(scores.loc[scores["in_sr"], "role"]) == {"data"}
    assert any((unit_dir(cfg.output_dir, method, 300, 0) / "models").iterdir())


def test_variants_run_a_method_with_other_settings_next_to_it(toy_dir, tmp_path):
    """An R-ANODE scan of fixed w next to the learnt w: one run, the same data and seeds."""
    from radar.models.densities import get as get_density

    tiny = dict(get_density("ranode").TINY_KWARGS)
    path = write_config(
        toy_dir,
        tmp_path,
        methods=["ranode", "ranode_w0p05", "ranode_w0p2"],
        injections=[300],
        seeds=[0],
        k_folds=2,
        method_settings={"ranode": tiny},
        variants={
            "ranode_w0p05": {"method": "ranode", "settings": {"w": 0.05}},
            "ranode_w0p2": {"method": "ranode", "settings": {"w": 0.2}},
        },
    )
    cfg = load_config(path)
    manifest = run_search(cfg)
    assert manifest["n_failed"] == 0, manifest["failures"]
    fixed = {name: _metrics(cfg, name, 300, 0) for name in ("ranode_w0p05", "ranode_w0p2")}
    assert fixed["ranode_w0p05"]["signal_fraction"] == pytest.approx(0.05)
    assert fixed["ranode_w0p2"]["signal_fraction"] == pytest.approx(0.2)
    learnt = _metrics(cfg, "ranode", 300, 0)["signal_fraction"]
    assert learnt not in (pytest.approx(0.05), pytest.approx(0.2))
    scores = [load_scores(cfg.output_dir, name, 300, 0)["score"].to_numpy() for name in cfg.methods]
    assert not np.allclose(scores[1], scores[2])  # the fixed w changes the fitted signal density
    table = (cfg.output_dir / "metrics_table.md").read_text()
    assert "| ranode_w0p05 |" in table and "| ranode_w0p2 |" in table


def test_every_method_has_one_record_of_its_properties():
    """Method properties live in one record (they were string literals in three files, and disagreed)."""
    from radar.analysis.units import _INFO, _METHODS, method_info, regions_for, register_method

    names = available_methods()
    kinds = {m: method_info(m).kind for m in names}
    assert set(kinds.values()) <= {"classifier", "template", "density", "combination", "outlier"}
    assert {m for m in names if method_info(m).needs_simulation} == {
        "salad",
        "feta",
        "reweight",
        "morph",
        "mc",
    }
    context = {
        "iad",
        "supervised",
        "autoencoder",
        "nae",
        "combined_scores",
        "generate",
        "reweight",
        "morph",
        "mc",
    }
    assert {m for m in names if method_info(m).context_regions} == context
    assert {m for m in names if method_info(m).sidebands == "narrow"} == {"cwola_hunting"}
    assert {m for m in names if method_info(m).truth_labels} == {"iad", "supervised"}
    assert kinds["combined_scores"] == "combination" and kinds["anode"] == kinds["ranode"] == "density"
    cfg = config_from_dict({})
    assert regions_for(cfg, "cwola_hunting").sideband_width == cfg.regions.cwola_sideband_width
    assert regions_for(cfg, "cathode").sideband_width is None
    try:  # a new method declares its properties where it registers, and the config follows them
        register_method("my_narrow", sidebands="narrow")(lambda ctx: None)
        assert "my_narrow" in available_methods()
        assert regions_for(cfg, "my_narrow").sideband_width == cfg.regions.cwola_sideband_width
    finally:
        _METHODS.pop("my_narrow", None)
        _INFO.pop("my_narrow", None)
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        method_info("nope")

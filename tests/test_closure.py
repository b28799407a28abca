"""Closure of the trained chain on background-only data: a tail cut on the out-of-fold scores passes the
same fraction of events inside and outside the signal region (the efficiency step that made fake 8-13σ
bumps cannot come back), while the pre-fix fold-mean scores of the same models show the step."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from radar.analysis.config import config_from_dict
from radar.analysis.datasets import toy_lhco_like
from radar.analysis.rundir import unit_dir
from radar.analysis.search import load_scores, run_search
from radar.processors.features import write_feature_table

TINY_FLOW = {"n_blocks": 2, "hidden": 16, "epochs": 8, "batch_size": 256, "patience": 3, "n_best_epochs": 2}


@pytest.fixture(scope="module")
def null_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("closure")
    write_feature_table(toy_lhco_like(40_000, 0, seed=5), d / "bkg.parquet")
    cfg = config_from_dict(
        {
            "name": "closure",
            "output": str(d / "run"),
            "input": {"data": [str(d / "bkg.parquet")]},
            "methods": ["cwola_hunting", "cathode", "lacathode"],
            "injections": [None],
            "seeds": [0],
            "k_folds": 5,
            "classifier": {"name": "hgb", "settings": {"n_models": 1, "max_iter": 60}},
            "flow": TINY_FLOW,
            "compare": False,
            "save_models": False,
            "execution": {"mode": "sync"},
        }
    )
    run_search(cfg, progress=False)
    return cfg


def _pass_fractions(scores, column, efficiency):
    """(SR pass fraction, SB pass fraction, sigma of their difference) of the cut that keeps ``efficiency``
    of the SR events."""
    sr = scores["in_sr"].to_numpy()
    s = scores[column].to_numpy()
    cut = np.quantile(s[sr], 1 - efficiency)
    f_sr, f_sb = float((s[sr] > cut).mean()), float((s[~sr] > cut).mean())
    sigma = math.sqrt(efficiency * (1 - efficiency) * (1 / sr.sum() + 1 / (~sr).sum()))
    return f_sr, f_sb, sigma


@pytest.mark.parametrize("method", ["cwola_hunting", "cathode", "lacathode"])
def test_tail_cut_passes_the_same_fraction_in_and_outside_the_sr(null_run, method):
    scores = load_scores(null_run.output_dir, method, None, 0)
    assert set(scores["role"]) <= {"data", "template", "fold"}
    for efficiency in (0.2, 0.05):
        f_sr, f_sb, sigma = _pass_fractions(scores, "score", efficiency)
        assert abs(f_sb - f_sr) < 4 * sigma, (method, efficiency, f_sr, f_sb, sigma)
    # the same models with the pre-fix scheme (events outside the training classes scored by the mean of
    # the k models): fewer of them pass a tail cut — the step this test guards against is real
    f_sr, f_sb, sigma = _pass_fractions(scores, "score_fold_mean", 0.2)
    assert f_sr - f_sb > 3 * sigma, (method, f_sr, f_sb, sigma)


@pytest.mark.parametrize("method", ["cathode", "lacathode"])
def test_no_sideband_event_is_scored_against_a_template_that_learnt_it(tmp_path, monkeypatch, method):
    """A template fitted on all sideband data makes the sideband events' scores depend on themselves (the
    flow reproduces its training events a little, so they look template-like and pass a tail cut less
    often: a bump in the SR). Every fold's template must be fitted without the events its classifier
    scores, and with all the other folds' sideband events."""
    from radar.analysis.preparation import prepare_data
    from radar.analysis.units import REPLICA_SEED_STEP, UnitContext, _data_folds
    from radar.models.templates.cathode import CathodeTemplate

    fitted: list[set[float]] = []
    original = CathodeTemplate.fit

    def spy(self, sideband, simulation=None):
        fitted.append(set(sideband["mjj"].round(9)))
        return original(self, sideband, simulation)

    monkeypatch.setattr(CathodeTemplate, "fit", spy)
    write_feature_table(toy_lhco_like(6_000, 0, seed=9), tmp_path / "bkg.parquet")
    cfg = config_from_dict(
        {
            "name": "folds",
            "output": str(tmp_path / "run"),
            "input": {"data": [str(tmp_path / "bkg.parquet")]},
            "methods": [method],
            "injections": [None],
            "seeds": [3],
            "k_folds": 4,
            "classifier": {"name": "hgb", "settings": {"n_models": 1, "max_iter": 20}},
            "flow": {**TINY_FLOW, "epochs": 1},
            "compare": False,
            "save_models": False,
            "execution": {"mode": "sync"},
        }
    )
    run_search(cfg, progress=False)
    replicas = cfg.replicas_for(method)  # lacathode: 3 by default, each with its own folds
    assert replicas == (3 if method == "lacathode" else 1)
    assert len(fitted) == cfg.k_folds * replicas
    prepared = prepare_data(cfg, None)
    for r in range(replicas):
        ctx = UnitContext(
            cfg=cfg,
            prepared=prepared,
            method=method,
            seed=3 + REPLICA_SEED_STEP * r,
            model_dir=None,
            replica=r,
        )
        mjj = prepared.data["mjj"].to_numpy()
        sr, sb = ctx.regions.signal_region(mjj), ctx.regions.sideband(mjj)
        folds = _data_folds(ctx, None, np.flatnonzero(sr))
        for f, seen in enumerate(fitted[r * cfg.k_folds : (r + 1) * cfg.k_folds]):
            own = set(np.round(mjj[sb & (folds == f)], 9))
            others = set(np.round(mjj[sb & (folds != f)], 9))
            assert own and not own & seen  # fold f's sideband events never trained the template scoring them
            assert seen == others
    if replicas > 1:  # the replicas' folds differ: their mean is not a fold-mean of one split
        first = _data_folds(
            UnitContext(cfg=cfg, prepared=prepared, method=method, seed=3, model_dir=None),
            None,
            np.flatnonzero(sr),
        )
        assert (folds != first).any()
    scores = load_scores(cfg.output_dir, method, None, 3)
    assert np.isfinite(scores["score"]).all() and len(scores) == len(mjj)


def test_replicas_average_independently_trained_units(tmp_path):
    """``replicas: N``: a unit's scores are the mean of N trainings whose seeds are the unit's seed and
    seed + REPLICA_SEED_STEP·r — the same numbers as N one-replica units run with those seeds."""
    from radar.analysis.units import REPLICA_SEED_STEP

    write_feature_table(toy_lhco_like(8_000, 0, seed=4), tmp_path / "bkg.parquet")
    base = {
        "input": {"data": [str(tmp_path / "bkg.parquet")]},
        "methods": ["cwola_hunting"],
        "injections": [None],
        "k_folds": 3,
        "classifier": {"name": "hgb", "settings": {"n_models": 1, "max_iter": 20}},
        "compare": False,
        "save_models": False,
        "execution": {"mode": "sync"},
    }
    averaged = config_from_dict(
        {**base, "output": str(tmp_path / "avg"), "seeds": [1], "replicas": {"cwola_hunting": 2}}
    )
    single = config_from_dict(
        {**base, "output": str(tmp_path / "one"), "seeds": [1, 1 + REPLICA_SEED_STEP], "replicas": 1}
    )
    run_search(averaged, progress=False)
    run_search(single, progress=False)
    mean = load_scores(averaged.output_dir, "cwola_hunting", None, 1)
    parts = [load_scores(single.output_dir, "cwola_hunting", None, s)["score"] for s in single.seeds]
    assert not np.allclose(parts[0], parts[1])  # the replicas are different trainings
    np.testing.assert_allclose(mean["score"], (parts[0] + parts[1]) / 2, rtol=1e-12, atol=1e-15)
    metrics = json.loads(
        (unit_dir(averaged.output_dir, "cwola_hunting", None, 1) / "metrics.json").read_text()
    )
    assert metrics["replicas"] == 2 and len(metrics["classification_auc_replicas"]) == 2


@pytest.mark.parametrize(
    ("replicas", "message"),
    [
        ({"cathdoe": 2}, "replicas: unknown methods ['cathdoe']"),
        ({"combined_scores": 2}, "combine other methods"),
    ],
)
def test_replicas_setting_is_checked(tmp_path, replicas, message):
    from radar.analysis.validation import validate_config

    write_feature_table(toy_lhco_like(2_000, 0, seed=4), tmp_path / "bkg.parquet")
    cfg = config_from_dict(
        {
            "input": {"data": [str(tmp_path / "bkg.parquet")]},
            "methods": ["cwola_hunting"],
            "replicas": replicas,
        }
    )
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        validate_config(cfg)

"""Closure of the trained chain on background-only data: a tail cut on the out-of-fold scores passes the
same fraction of events inside and outside the signal region (the efficiency step that made fake 8-13σ
bumps cannot come back), while the pre-fix fold-mean scores of the same models show the step."""

from __future__ import annotations

import math

import numpy as np
import pytest

from radar.analysis.config import config_from_dict
from radar.analysis.datasets import toy_lhco_like
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
    from radar.analysis.units import UnitContext, _data_folds
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
    assert len(fitted) == cfg.k_folds
    prepared = prepare_data(cfg, None)
    ctx = UnitContext(cfg=cfg, prepared=prepared, method=method, seed=3, model_dir=None)
    mjj = prepared.data["mjj"].to_numpy()
    sr, sb = ctx.regions.signal_region(mjj), ctx.regions.sideband(mjj)
    folds = _data_folds(ctx, None, np.flatnonzero(sr))
    for f, seen in enumerate(fitted):
        own = set(np.round(mjj[sb & (folds == f)], 9))
        others = set(np.round(mjj[sb & (folds != f)], 9))
        assert own and not own & seen  # fold f's sideband events never trained the template that scores them
        assert seen == others
    scores = load_scores(cfg.output_dir, method, None, 3)
    assert np.isfinite(scores["score"]).all() and len(scores) == len(mjj)

"""What a search must never do: train on test events, or resume on input files that changed."""

from __future__ import annotations

import pandas as pd
import pytest

from radar.analysis.config import config_from_dict
from radar.analysis.datasets import drop_shared_events, toy_lhco_like
from radar.analysis.preparation import _CACHE, prepare_data
from radar.analysis.search import run_search
from radar.processors.features import write_feature_table

KEY = ["mjj", "mj1", "delta_mj", "tau21_j1", "tau21_j2"]


def _shared(a: pd.DataFrame, b: pd.DataFrame) -> int:
    return int(pd.MultiIndex.from_frame(a[KEY]).isin(pd.MultiIndex.from_frame(b[KEY])).sum())


def test_drop_shared_events():
    pool = toy_lhco_like(0, 100, seed=3)
    out = drop_shared_events(pool, pool.iloc[:40], "pool")
    assert len(out) == 60 and _shared(out, pool.iloc[:40]) == 0


def test_signal_pool_overlapping_the_test_set_is_never_trained_on(tmp_path):
    """LHCO's standard test signal is a subset of innerdata_extrasig: injection and supervised training
    must not use those events."""
    background, signal = toy_lhco_like(6000, 0, seed=4), toy_lhco_like(0, 1500, seed=5)
    in_sr = signal["mjj"].between(3300, 3700)
    test = pd.concat([toy_lhco_like(2000, 0, seed=6), signal[in_sr].iloc[:300]], ignore_index=True)
    for name, table in (("bkg", background), ("sig", signal), ("test", test)):
        write_feature_table(table, tmp_path / f"{name}.parquet")
    cfg = config_from_dict(
        {
            "input": {
                "data": [str(tmp_path / "bkg.parquet")],
                "signal": str(tmp_path / "sig.parquet"),
                "test": str(tmp_path / "test.parquet"),
            },
            "methods": ["supervised"],
            "output": str(tmp_path / "run"),
        }
    )
    _CACHE.clear()
    prepared = prepare_data(cfg, 400)
    injected = prepared.data[prepared.data["label"] == 1]
    assert len(injected) == 400
    assert _shared(injected, test) == 0
    assert _shared(prepared.signal_supervised, test) == 0
    assert len(prepared.test) == len(test[test["mjj"].between(3300, 3700, inclusive="left")])


def test_resume_refuses_changed_inputs(tmp_path):
    write_feature_table(toy_lhco_like(4000, 0, seed=7), tmp_path / "bkg.parquet")
    write_feature_table(toy_lhco_like(0, 600, seed=8), tmp_path / "sig.parquet")
    values = {
        "input": {"data": [str(tmp_path / "bkg.parquet")], "signal": str(tmp_path / "sig.parquet")},
        "methods": ["iad"],
        "injections": [0],
        "seeds": [0],
        "k_folds": 2,
        "classifier": {"name": "hgb", "settings": {"n_models": 1, "max_iter": 20}},
        "execution": {"mode": "sync"},
        "output": str(tmp_path / "run"),
    }
    assert run_search(config_from_dict(values))["n_failed"] == 0
    assert run_search(config_from_dict(values), resume=True)["units_skipped"]  # unchanged: reused
    write_feature_table(toy_lhco_like(4000, 0, seed=9), tmp_path / "bkg.parquet")  # new data, same config
    with pytest.raises(ValueError, match="input files changed"):
        run_search(config_from_dict(values), resume=True)
    manifest = run_search(config_from_dict(values), overwrite=True)
    assert manifest["n_failed"] == 0 and not manifest["units_skipped"]


class _Memoriser:
    """A 'density' that scores 1 for every event it was fitted on and 0 otherwise."""

    def __init__(self, features, seed=0, **kwargs):
        self.seen: set = set()

    def fit(self, sideband, signal_region):
        both = pd.concat([sideband, signal_region])
        self.seen = set(map(tuple, both[KEY].to_numpy()))
        return self

    def score(self, x):
        return [float(tuple(row) in self.seen) for row in x[KEY].to_numpy()]


@pytest.mark.parametrize("method", ["anode", "ranode"])
def test_density_scores_are_out_of_fold(tmp_path, monkeypatch, method):
    """No data event may be scored by a density fitted on it (the bump hunt cuts on these scores)."""
    import radar.models.densities

    monkeypatch.setattr(radar.models.densities, "get", lambda name: _Memoriser)
    write_feature_table(toy_lhco_like(3000, 0, seed=10), tmp_path / "bkg.parquet")
    write_feature_table(toy_lhco_like(0, 400, seed=11), tmp_path / "sig.parquet")
    cfg = config_from_dict(
        {
            "input": {"data": [str(tmp_path / "bkg.parquet")], "signal": str(tmp_path / "sig.parquet")},
            "methods": [method],
            "injections": [100],
            "seeds": [0],
            "k_folds": 3,
            "save_models": False,
            "execution": {"mode": "sync"},
            "output": str(tmp_path / "run"),
        }
    )
    _CACHE.clear()
    assert run_search(cfg)["n_failed"] == 0
    from radar.analysis.search import load_scores

    scores = load_scores(cfg.output_dir, method, 100, 0)
    assert len(scores) > 2000 and (scores["score"] == 0).all()


def test_injected_signal_stays_inside_the_mjj_range(tmp_path):
    """A signal pool reaching below the search's m_JJ range must not put events there: they would enter the
    scores file and the bump hunt's spectrum (whose fit range follows the data) although the data there
    were cut away."""
    background = toy_lhco_like(6000, 0, seed=4)
    signal = toy_lhco_like(0, 1500, seed=5)
    signal.loc[signal.index[:500], "mjj"] = 2000.0  # a third of the pool below the range
    for name, table in (("bkg", background), ("sig", signal)):
        write_feature_table(table, tmp_path / f"{name}.parquet")
    cfg = config_from_dict(
        {
            "input": {"data": [str(tmp_path / "bkg.parquet")], "signal": str(tmp_path / "sig.parquet")},
            "regions": {"sr": [3300, 3700], "mjj_range": [2800, 6000]},
            "methods": ["cwola_hunting"],
            "output": str(tmp_path / "run"),
        }
    )
    _CACHE.clear()
    prepared = prepare_data(cfg, 400)
    injected = prepared.data[prepared.data["label"] == 1]
    assert len(injected) == 400 == prepared.injection["n_injected"]
    assert prepared.data["mjj"].between(2800, 6000).all()


def _tiny_search(tmp_path):
    write_feature_table(toy_lhco_like(4000, 0, seed=7), tmp_path / "bkg.parquet")
    return config_from_dict(
        {
            "input": {"data": [str(tmp_path / "bkg.parquet")]},
            "methods": ["cwola_hunting"],
            "injections": [None],
            "seeds": [0],
            "k_folds": 2,
            "classifier": {"name": "hgb", "settings": {"n_models": 1, "max_iter": 20}},
            "execution": {"mode": "sync"},
            "output": str(tmp_path / "run"),
        }
    )


def test_two_searches_never_write_into_one_run_directory(tmp_path):
    import subprocess
    import sys

    cfg = _tiny_search(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / ".radar.lock").write_text(str(holder.pid))  # a live process holds the directory
        with pytest.raises(ValueError, match=rf"another radar process \(pid {holder.pid}\) is writing"):
            run_search(cfg, progress=False)
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone: its stale lock is taken over, and released at the end
    assert run_search(cfg, progress=False)["n_failed"] == 0
    assert not (run / ".radar.lock").exists()


def test_a_crashed_search_says_so_in_its_manifest(tmp_path, monkeypatch):
    import json

    import radar.analysis.search as search

    cfg = _tiny_search(tmp_path)

    def crash(*args, **kwargs):
        raise RuntimeError("worker lost")

    monkeypatch.setattr(search, "_execute", crash)
    with pytest.raises(RuntimeError, match="worker lost"):
        run_search(cfg, progress=False)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["error"] == "RuntimeError: worker lost"
    assert not (tmp_path / "run" / ".radar.lock").exists()


def test_a_unit_of_a_stopped_run_writes_nothing(tmp_path):
    """A unit still running on a cluster after its search stopped (SIGTERM, failure, --overwrite by another
    search) finds the manifest changed and discards its outputs instead of writing into the run."""
    import json

    from radar.analysis.rundir import unit_dir
    from radar.analysis.search import run_unit

    cfg = _tiny_search(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    args = (cfg.to_dict(), cfg.base_dir, str(run), "cwola_hunting", None, 0)
    out = unit_dir(run, "cwola_hunting", None, 0)
    for manifest in ({"run_id": "abc", "status": "interrupted"}, {"run_id": "other", "status": "running"}):
        (run / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(RuntimeError, match="no longer running.*outputs are discarded"):
            run_unit(*args, "abc")
        assert not any(p.is_file() for p in out.rglob("*")), sorted(out.rglob("*"))
    (run / "manifest.json").write_text(json.dumps({"run_id": "abc", "status": "running"}))
    run_unit(*args, "abc")  # the run that sent it is still running: written
    assert (out / "metrics.json").exists() and (out / "scores.parquet").exists()


@pytest.mark.parametrize("workers", [0, 1])
def test_sigterm_stops_a_search_cleanly(tmp_path, workers):
    """SIGTERM to ``radar search`` (sync, or on a LocalCluster): exit 143 with one line, the manifest says
    "interrupted", queued units are cancelled and write nothing, the lock is released, --resume finishes."""
    import json
    import signal
    import subprocess
    import sys
    import time

    import yaml

    write_feature_table(toy_lhco_like(6000, 0, seed=7), tmp_path / "bkg.parquet")
    config = {
        "input": {"data": [str(tmp_path / "bkg.parquet")]},
        "methods": ["cathode", "cwola_hunting"],
        "injections": [None],
        "seeds": [0, 1, 2],
        "k_folds": 2,
        "classifier": {"name": "hgb", "settings": {"n_models": 1, "max_iter": 20}},
        "flow": {"n_blocks": 1, "hidden": 8, "epochs": 40, "batch_size": 256, "patience": 100},
        "compare": False,
        "save_models": False,
        "output": str(tmp_path / "run"),
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "radar.analysis.cli", "-q", "search", str(tmp_path / "c.yaml")]
    command += ["--sync"] if workers == 0 else ["--workers", str(workers)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    manifest_path = tmp_path / "run" / "manifest.json"
    deadline = time.time() + 120
    while time.time() < deadline and not (
        manifest_path.exists() and json.loads(manifest_path.read_text()).get("status") == "running"
    ):
        time.sleep(0.2)
    time.sleep(3 if workers else 1)  # units are training
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "interrupted (signal SIGTERM)" in err and "Traceback" not in err, err
    manifest = json.loads(manifest_path.read_text())
    assert manifest["status"] == "interrupted", manifest
    assert not (tmp_path / "run" / ".radar.lock").exists()
    finished = sorted(p.parent.name for p in (tmp_path / "run").rglob("metrics.json"))
    assert len(finished) < 6, finished  # stopped before the end
    time.sleep(1)  # anything still running somewhere would write now
    assert sorted(p.parent.name for p in (tmp_path / "run").rglob("metrics.json")) == finished
    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert len(list((tmp_path / "run").rglob("metrics.json"))) == 6

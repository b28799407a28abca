"""`radar run`: the whole chain on a tiny generated sample, and stage caching."""

from __future__ import annotations

import json

import pytest
import yaml

from radar.analysis.cli import main
from radar.analysis.pipeline import load_run_config

TINY_RUN = {
    "name": "tiny",
    "output": "run",
    "generate": {
        "qcd": {"events": 400, "seed": 1, "pthat_min": 1100, "events_per_task": 200},
        "signal": {"events": 80, "seed": 2, "events_per_task": 80},
    },
    "process": {"chunk_size": 200},
    "search": {
        "regions": {"sr": [3300, 3700], "mjj_range": [2600, 5000]},
        "methods": ["cathode", "cwola_hunting"],
        "injections": [40],
        "seeds": [0],
        "k_folds": 3,
        "min_events": 5,
        "classifier": {"name": "hgb"},
        "flow": {"epochs": 2, "n_blocks": 2, "hidden": 16},
        "execution": {"mode": "sync"},
    },
    # 400 events: too few for the turn-on to be found from the data; the fit range is given
    "bumphunt": {
        "method": "cathode",
        "working_points": [1.0, 0.2],
        "scan": True,
        "n_toys": 5,
        "fit_range": [2600, 5000],
    },
}


@pytest.mark.slow
def test_radar_run_end_to_end_and_cached(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(TINY_RUN))
    assert main(["-q", "run", str(config), "--workers", "0"]) == 0
    run = tmp_path / "run"
    for path in (
        "events/qcd.h5",
        "events/signal.h5",
        "features/qcd.parquet",
        "features/signal.parquet",
        "search/metrics_table.md",
        "bumphunt/bumphunt.json",
        "bumphunt/report.md",
        "report.md",
    ):
        assert (run / path).exists(), path
    bumphunt = json.loads((run / "bumphunt" / "bumphunt.json").read_text())
    assert [wp["efficiency"] for wp in bumphunt["working_points"]] == [1.0, 0.2]
    assert list((run / "bumphunt" / "figures").glob("*.png"))
    report = (run / "report.md").read_text()
    assert "cathode" in report and "Bump hunt" in report
    stages = {p.name: p.stat().st_mtime_ns for p in (run / "stages").iterdir()}
    assert set(stages) == {
        "generate_qcd.json",
        "generate_signal.json",
        "process_qcd.json",
        "process_signal.json",
        "search.json",
        "bumphunt.json",
    }
    # unchanged inputs: every stage is reused, nothing is recomputed
    assert main(["-q", "run", str(config), "--workers", "0"]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (run / "stages").iterdir()} == stages
    # a changed bump-hunt setting reruns only the bump hunt
    changed = dict(TINY_RUN, bumphunt=dict(TINY_RUN["bumphunt"], working_points=[1.0, 0.5]))
    config.write_text(yaml.safe_dump(changed))
    assert main(["-q", "run", str(config), "--workers", "0"]) == 0
    after = {p.name: p.stat().st_mtime_ns for p in (run / "stages").iterdir()}
    assert [name for name in stages if after[name] != stages[name]] == ["bumphunt.json"]


def test_run_config_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "x", "generate": {"qcd": {"events": 1}}, "colour": "red"}))
    with pytest.raises(ValueError, match=r"unknown keys \['colour'\]"):
        load_run_config(bad)
    bad.write_text(yaml.safe_dump({"name": "x"}))
    with pytest.raises(ValueError, match="exactly one of 'generate'"):
        load_run_config(bad)
    bad.write_text(yaml.safe_dump({"generate": {"qcd": {"events": 1}}, "search": {"output": "elsewhere"}}))
    with pytest.raises(ValueError, match="search.output is set by the pipeline"):
        load_run_config(bad)
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_run_config(tmp_path / "missing.yaml")
    context = {"generate": {"qcd": {"events": 1}}, "search": {"regions": {"context": {"met": [75, None]}}}}
    bad.write_text(yaml.safe_dump(context))
    with pytest.raises(ValueError, match="no m_JJ bump to hunt"):
        load_run_config(bad)

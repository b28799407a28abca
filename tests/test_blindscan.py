"""``radar scan``: the blind search (windows retrained one by one, bump hunt per window, global significance)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from radar.analysis.blindscan import ScanSettings, plan_windows, run_scan, window_tag
from radar.analysis.bumphunt.globalsig import global_significance, gross_vitells, upcrossings
from radar.analysis.cli import main
from radar.analysis.datasets import toy_lhco_like
from radar.analysis.rundir import load_scores
from radar.processors.features import write_feature_table

HGB = {"settings": {"n_models": 1, "max_iter": 60}}
# the box's background in 4500-4900 GeV (the last window): 499 events, below min_events = 500
SEARCH = {"classifier": HGB, "min_events": 500, "execution": {"mode": "sync"}}
# scan 2000-5600 GeV with 500 GeV minimum sidebands: SRs 2500-2900, ..., 3300-3700 (the resonance), ..., 4500-4900
SCAN = [
    "--mjj-range",
    "2000",
    "5600",
    "--min-sideband",
    "500",
    "--width",
    "400",
    "--step",
    "400",
    "--sideband",
    "600",
]


def black_box(n_background: int, n_signal: int, seed: int) -> pd.DataFrame:
    """The toy features with a dijet-function m_JJ spectrum for the background (2-5.6 TeV) and a resonance at
    3500 GeV; no truth labels (a black box)."""
    from radar.analysis.bumphunt.synthetic import sample_dijet_mjj

    table = toy_lhco_like(n_background, n_signal, seed=seed)
    bkg = (table["label"] == 0).to_numpy()
    table.loc[bkg, "mjj"] = sample_dijet_mjj(int(bkg.sum()), (1, 8, 2), (2000, 5600), seed=seed)
    table["label"] = -1.0
    return table


def _settings(**kw) -> ScanSettings:
    base = dict(
        methods=("cwola_hunting",),
        mjj_range=(2000, 5600),
        min_sideband=500,
        width=400,
        step=400,
        sideband=600,
        toys=40,
        figures=False,
        search=dict(SEARCH),
    )
    return ScanSettings(**{**base, **kw})


@pytest.fixture(scope="module")
def signal_scan(tmp_path_factory):
    """A black box: toy background + 150 resonance events at 3500 GeV (S/B ≈ 5 % in 3300-3700 GeV),
    scanned through the command line (figures on)."""
    d = tmp_path_factory.mktemp("scan")
    write_feature_table(black_box(40_000, 150, seed=3), d / "box.parquet")
    out = d / "out"
    code = main(
        [
            "-q",
            "scan",
            str(d / "box.parquet"),
            "-o",
            str(out),
            "--methods",
            "cwola_hunting",
            *SCAN,
            "--toys",
            "40",
            "--sync",
            "--config",
            str(_write_config(d)),
        ]
    )
    assert code == 0
    return d, out, json.loads((out / "scan.json").read_text())


def _write_config(d):
    import yaml

    path = d / "search.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in SEARCH.items() if k != "execution"}))
    return path


def test_windows_lie_on_the_bin_grid_and_cover_the_range():
    rng = np.random.default_rng(0)
    mjj = 1500 + rng.exponential(800, 50_000)
    mjj = mjj[mjj < 5500]
    (lo, hi), windows = plan_windows(mjj, ScanSettings(width=400, step=200, sideband=600, min_sideband=300))
    assert 1500 <= lo <= 1600 and hi <= 5500  # from the first whole bin of the falling spectrum
    starts = np.array([w.sr_low for w in windows])
    assert starts[0] == lo + 300 and np.allclose(np.diff(starts), 200)  # overlapping windows, one step apart
    assert windows[-1].sr_high <= hi - 300 < windows[-1].sr_high + 200  # up to the last that fits
    for w in windows:
        assert w.sr_high - w.sr_low == 400
        assert (w.sr_low - lo) % 100 == 0
        assert w.fit_low == max(lo, w.sr_low - 600) and w.fit_high == min(hi, w.sr_high + 600)


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"width": 350}, "--width 350"),
        ({"sideband": 200}, "--sideband"),
        ({"working_points": (0.0,)}, "working points"),
        ({"mjj_range": (2050, 5600)}, "multiple of the 100 GeV bin width"),
        ({"methods": ("combined_scores",)}, "combinations"),
    ],
)
def test_bad_settings_are_refused_before_anything_trains(tmp_path, kw, message):
    write_feature_table(toy_lhco_like(2_000, 0, seed=1), tmp_path / "d.parquet")
    with pytest.raises(ValueError, match=message):
        run_scan([tmp_path / "d.parquet"], tmp_path / "out", _settings(**kw), progress=False)
    assert not (tmp_path / "out" / "windows").exists()


def test_scan_json_schema_and_the_resonance_is_found(signal_scan):
    _, out, scan = signal_scan
    assert scan["kind"] == "radar.blind_scan"
    for key in ("windows", "best", "global_z", "global_p", "trials_factor", "toys", "timing"):
        assert key in scan
    for w in scan["windows"]:
        assert {"sr", "local_z", "flags", "status", "methods"} <= set(w)
        if w["status"] == "ok":
            wps = w["methods"]["cwola_hunting"]["working_points"]
            assert [wp["efficiency"] for wp in wps] == [1.0, 0.2, 0.05, 0.01]
    best = scan["best"]
    assert best["sr"] == [3300.0, 3700.0]  # the resonance's window
    assert best["local_z"] > 3
    # beyond the toys' reach: the asymptotic value, and the toys' bound reported as a bound
    glob = scan["global"]
    assert glob["n_toys"] == 40
    if glob["n_toys_above"] == 0:
        assert glob["method"].startswith("asymptotic") and glob["z_toys_is_lower_bound"]
        assert scan["global_z"] > glob["z_toys"]
    assert scan["global_z"] < best["local_z"] and scan["trials_factor"] > 1
    report = (out / "report.md").read_text().splitlines()
    assert "Most significant window: SR 3300-3700 GeV" in report[2]
    assert "global Z" in report[2]
    assert (out / "figures" / "scan_local_p.png").exists()
    tag = window_tag(tuple(best["sr"]))
    assert (out / "windows" / tag / "bumphunt" / "cwola_hunting" / "bumphunt.json").exists()


def test_each_event_is_scored_once_per_window(signal_scan):
    d, out, scan = signal_scan
    data = pd.read_parquet(d / "box.parquet")
    for w in scan["windows"]:
        if w["status"] != "ok":
            continue
        lo, hi = w["fit_range"]
        scores = load_scores(out / "windows" / w["tag"], "cwola_hunting", None, 0)
        expected = np.sort(data["mjj"].to_numpy()[(data["mjj"] >= lo) & (data["mjj"] < hi)])
        assert np.array_equal(np.sort(scores["mjj"].to_numpy()), expected)
        assert np.isfinite(scores["score"]).all()
        assert np.array_equal(
            scores["in_sr"].to_numpy(), (scores["mjj"] >= w["sr"][0]) & (scores["mjj"] < w["sr"][1])
        )


def test_a_window_that_cannot_run_is_reported_not_dropped(signal_scan):
    _, out, scan = signal_scan
    skipped = [w for w in scan["windows"] if w["status"] == "skipped"]
    assert [w["sr"] for w in skipped] == [[4500.0, 4900.0]]
    assert "min_events" in skipped[0]["error"] and "not run" in skipped[0]["error"]
    assert scan["n_skipped_windows"] == 1 and scan["n_failed_windows"] == 0
    report = (out / "report.md").read_text()
    assert "1 of 6 windows not run" in report and "sr_4500_4900" in report


def test_resume_redoes_nothing_and_a_second_scan_needs_resume(signal_scan, tmp_path, monkeypatch):
    import shutil

    import radar.analysis.search as search

    d, out, scan = signal_scan
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    settings = _settings(toys=40)
    with pytest.raises(ValueError, match="--resume"):
        run_scan([d / "box.parquet"], copy, settings, progress=False)
    calls = []
    monkeypatch.setattr(search, "run_unit", lambda *a: calls.append(a) or {})
    again = run_scan([d / "box.parquet"], copy, settings, resume=True, progress=False)
    assert calls == []
    assert again["best"]["local_z"] == pytest.approx(scan["best"]["local_z"])
    with pytest.raises(ValueError, match="different settings"):
        run_scan([d / "box.parquet"], copy, _settings(width=600, step=200), resume=True, progress=False)


def test_a_failed_training_fails_its_window_only(tmp_path, monkeypatch):
    import radar.analysis.search as search

    write_feature_table(black_box(20_000, 0, seed=2), tmp_path / "bkg.parquet")
    real = search.run_unit

    def flaky(cfg, base, run_dir, method, injection, seed, *token):
        if "sr_2900_3300" in run_dir:
            raise RuntimeError("the flow diverged")
        return real(cfg, base, run_dir, method, injection, seed, *token)

    monkeypatch.setattr(search, "run_unit", flaky)
    scan = run_scan(
        [tmp_path / "bkg.parquet"],
        tmp_path / "out",
        _settings(toys=0, search={**SEARCH, "min_events": 50}),
        progress=False,
    )
    by_tag = {w["tag"]: w for w in scan["windows"]}
    assert by_tag["sr_2900_3300"]["status"] == "failed"
    assert "the flow diverged" in by_tag["sr_2900_3300"]["error"]
    assert sum(w["status"] == "ok" for w in scan["windows"]) == len(scan["windows"]) - 1
    assert scan["global"]["method"] == "none"


@pytest.mark.parametrize(
    "args, message",
    [
        (["MISSING"], "missing.parquet: no such file"),
        (["DATA", "--width", "350"], "--width 350 GeV must be a positive multiple"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, capsys, caplog, monkeypatch, args, message):
    from radar.analysis import cli

    monkeypatch.setattr(cli, "setup_logging", lambda verbose=0, quiet=False: None)
    write_feature_table(toy_lhco_like(2_000, 0, seed=1), tmp_path / "d.parquet")
    names = {"MISSING": str(tmp_path / "missing.parquet"), "DATA": str(tmp_path / "d.parquet")}
    with caplog.at_level("ERROR", logger="radar"):
        assert cli.main(["scan", *[names.get(a, a) for a in args], "-o", str(tmp_path / "o"), "--sync"]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and message in errors[0], errors
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err


# ------------------------------------------------------------------------------------------ global significance
def _gaussian_process_scans(n: int, rng) -> np.ndarray:
    """Local Z of a smooth unit-variance Gaussian process along a scan: Z(θ) = a cos θ + b sin θ, θ ∈ [0, π]
    (one-sided: clipped at 0, as radar's local Z)."""
    theta = np.linspace(0, np.pi, 200)
    a, b = rng.standard_normal((2, n))
    return np.maximum(a[:, None] * np.cos(theta) + b[:, None] * np.sin(theta), 0.0)


def test_upcrossings_count_rises_through_the_level():
    assert upcrossings(np.array([0, 2, 0, 2, 2, 0]), 1.0) == 2
    assert upcrossings(np.array([2, 0, np.nan, 2]), 1.0) == 1


def test_gross_vitells_beyond_the_toy_floor_matches_the_known_tail():
    """200 toys reach Z ≈ 2.5; the asymptotic formula calibrated on them must give the tail at Z = 4 (p ≈ 2e-4,
    known here in closed form: max over [0, π] is R if the phase lies in [0, π], else R|cos φ|)."""
    rng = np.random.default_rng(7)
    z = _gaussian_process_scans(200, rng)
    toys_max = z.max(axis=1)
    toys_up = np.array([upcrossings(row, 1.0) for row in z])
    r = np.sqrt(-2 * np.log(rng.uniform(size=2_000_000)))
    phi = rng.uniform(0, 2 * np.pi, size=r.size)
    exact = float(np.mean(np.where(phi <= np.pi, r, r * np.abs(np.cos(phi))) >= 4.0))
    glob = global_significance(4.0, toys_max, toys_up, z0=1.0)
    assert glob["n_toys_above"] == 0 and glob["z_toys_is_lower_bound"]
    assert glob["method"].startswith("asymptotic")
    assert glob["p_global"] == pytest.approx(exact, rel=0.35)
    assert glob["z_toys"] < glob["z_global"]  # the toys alone only bound it
    # where toys reach, the toys answer
    mid = global_significance(1.5, toys_max, toys_up, z0=1.0)
    assert mid["method"] == "toys" and mid["p_global"] == pytest.approx(np.mean(toys_max >= 1.5))
    assert gross_vitells(4.0, 0.0, 1.0, n_scans=3) == pytest.approx(3 * 3.167e-5, rel=1e-3)


def test_radar_run_with_a_scan_block(tmp_path):
    """``radar run`` with ``scan:`` runs the blind scan on its data sample (here a feature table) into RUN/scan."""
    import yaml

    write_feature_table(black_box(20_000, 0, seed=4), tmp_path / "box.parquet")
    run = {
        "name": "blind",
        "output": "run",
        "events": {"data": ["box.parquet"]},
        "search": {"classifier": HGB, "min_events": 50, "execution": {"mode": "sync"}},
        "scan": {
            "methods": ["cwola_hunting"],
            "mjj_range": [2000, 5600],
            "min_sideband": 500,
            "width": 400,
            "step": 400,
            "sideband": 600,
            "toys": 8,
            "figures": False,
        },
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    assert main(["-q", "run", str(tmp_path / "run.yaml")]) == 0
    scan = json.loads((tmp_path / "run" / "scan" / "scan.json").read_text())
    assert len(scan["windows"]) == 6 and scan["global"]["n_toys"] == 8
    assert "Most significant window" in (tmp_path / "run" / "report.md").read_text()
    run["scan"]["colour"] = "red"
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    assert main(["-q", "run", str(tmp_path / "run.yaml")]) == 1  # one clear error line, no traceback


def test_event_files_are_processed_first_and_reused(lhco_tiny, tmp_path):
    """Raw LHCO events given to the scan become a feature table in OUT/features (once per file content)."""
    from radar.analysis.blindscan import prepare_inputs

    write_feature_table(toy_lhco_like(500, 0, seed=1), tmp_path / "table.parquet")
    tables = prepare_inputs(
        [str(lhco_tiny), str(tmp_path / "table.parquet")], tmp_path / "out", {"workers": 0}
    )
    target = tmp_path / "out" / "features" / f"{lhco_tiny.stem}.parquet"
    assert tables == [str(target), str(tmp_path / "table.parquet")]
    features = pd.read_parquet(target)
    assert len(features) > 900 and {"mjj", "mj1", "tau21_j1"} <= set(features.columns)
    stamp = target.stat().st_mtime_ns
    prepare_inputs([str(lhco_tiny)], tmp_path / "out", {"workers": 0})
    assert target.stat().st_mtime_ns == stamp  # unchanged events: not processed again


def test_warm_start_sources_share_no_event_with_their_window():
    from radar.analysis.blindscan import warm_sources

    rng = np.random.default_rng(0)
    mjj = 2000 + rng.exponential(900, 80_000)
    settings = ScanSettings(width=400, step=200, sideband=600, min_sideband=400, mjj_range=(2000, 7000))
    _, windows = plan_windows(mjj, settings)
    sources = warm_sources(windows, "up")
    assert sources[0] is None and any(s is not None for s in sources)
    for k, j in enumerate(sources):
        if j is None:  # no lower window lies wholly below this one's training range
            assert all(w.fit_high > windows[k].fit_low for w in windows[:k])
            continue
        assert windows[j].fit_high <= windows[k].fit_low  # no shared event
        assert all(w.fit_high > windows[k].fit_low for w in windows[j + 1 : k])  # the nearest such
    down = warm_sources(windows, "down")  # the default: from above, so the low (busy) windows start warm
    assert down[-1] is None and down[0] is not None
    for k, j in enumerate(down):
        if j is not None:
            assert j > k and windows[j].fit_low >= windows[k].fit_high
            assert all(w.fit_low < windows[k].fit_high for w in windows[k + 1 : j])


@pytest.mark.parametrize("direction", ["down", "up"])
def test_warm_started_scan_starts_each_window_from_its_source(tmp_path, direction):
    """With --warm-start a window's CATHODE flows begin from the flows of the window below that shares no
    event with it, train the warm epochs, and the scan records which windows were warm-started."""
    import yaml

    from radar.analysis.rundir import unit_dir
    from radar.models.templates.cathode import CathodeTemplate

    write_feature_table(black_box(12_000, 0, seed=6), tmp_path / "box.parquet")
    flow = {"n_blocks": 1, "hidden": 8, "epochs": 3, "batch_size": 256, "lr": 3e-3, "patience": 5}
    settings = _settings(
        methods=("cathode",),
        sideband=400,
        min_sideband=400,
        toys=4,
        warm_start=True,
        warm_direction=direction,
        warm_epochs=1,
        search={**SEARCH, "min_events": 50, "k_folds": 2, "flow": flow},
    )
    scan = run_scan([tmp_path / "box.parquet"], tmp_path / "out", settings, progress=False)
    windows = {w["tag"]: w for w in scan["windows"] if w["status"] == "ok"}
    assert len(windows) >= 5
    warm = set(scan["timing"]["cathode"]["warm_started_windows"])
    assert warm and warm != set(windows)
    for tag, window in windows.items():
        run = tmp_path / "out" / "windows" / tag
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        unit = unit_dir(run, "cathode", None, 0)
        metrics = json.loads((unit / "metrics.json").read_text())
        models = unit / "models"
        epochs = [
            len(CathodeTemplate.load(models / f"cathode_template_fold{f}.pt").flow.history["val_loss"])
            for f in range(2)
        ]
        if tag in warm:
            source_run = tmp_path / "out" / "windows" / Path(cfg["warm_start"]["run"]).name
            lo, hi = yaml.safe_load((source_run / "config.yaml").read_text())["regions"]["mjj_range"]
            if direction == "up":
                assert hi <= window["fit_range"][0]
            else:
                assert lo >= window["fit_range"][1]
            assert metrics["warm_started_folds"] == 2 and epochs == [1, 1]
        else:
            assert cfg.get("warm_start") is None and not metrics.get("warm_started_folds")
            assert epochs == [3, 3]


def test_warm_start_from_an_overlapping_run_is_refused(tmp_path):
    import yaml

    from radar.analysis.config import config_from_dict
    from radar.analysis.validation import check_warm_start

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.yaml").write_text(
        yaml.safe_dump({"regions": {"mjj_range": [2000, 3600]}, "save_models": True})
    )
    cfg = config_from_dict(
        {"regions": {"sr": [3300, 3700], "mjj_range": [2700, 4300]}, "warm_start": {"run": "other"}},
        base_dir=tmp_path,
    )
    with pytest.raises(ValueError, match="overlaps this run's 2700-4300 GeV"):
        check_warm_start(cfg)
    cfg = config_from_dict({"warm_start": {"run": "nowhere"}}, base_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        check_warm_start(cfg)

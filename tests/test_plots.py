"""Every figure is made from saved results, in both styles, as PNG + PDF; the report and the CLI work."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from radar.analysis import bumphunt as bh


@pytest.fixture(scope="module")
def saved_results(tmp_path_factory):
    """A bump hunt and a scan on a small synthetic sample, saved to JSON and read back."""
    out = tmp_path_factory.mktemp("results")
    data = bh.toy_dataset(20_000, 150, signal_score_shift=2.5, seed=1)
    result = bh.bump_hunt(data["mjj"], data["score"], label=data["label"], efficiencies=(1.0, 0.05))
    scan = bh.scan(
        data["mjj"],
        data["score"],
        bh.sliding_windows((2800.0, 6000.0), step=400.0),
        efficiency=0.05,
        n_toys=3,
        seed=0,
    )
    hunt_path, scan_path = result.save(out / "bumphunt.json"), scan.save(out / "scan.json")
    return json.loads(hunt_path.read_text()), json.loads(scan_path.read_text())


def _check_written(paths, stem_dir):
    for png in paths:
        assert png.suffix == ".png" and png.parent == stem_dir
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"
    assert not list(stem_dir.glob("*.part"))  # atomic writes leave no temporaries


@pytest.mark.parametrize("style", ["atlas", "cms"])
def test_bumphunt_and_scan_figures(saved_results, tmp_path, style):
    from radar.plots.scan import plot_scan
    from radar.plots.spectra import plot_bumphunt
    from radar.plots.style import save_figure

    hunt, scan = saved_results
    paths = plot_bumphunt(hunt, tmp_path, style)
    n_cuts = sum(wp["efficiency"] < 1 for wp in hunt["working_points"])
    assert len(paths) == len(hunt["working_points"]) + n_cuts + 1  # spectra, cut efficiencies, Z vs cut
    assert sum(p.name.startswith("efficiency_") for p in paths) == n_cuts
    paths += save_figure(plot_scan(scan, style, injected_mass=3500.0), tmp_path / "scan")[:1]
    _check_written(paths, tmp_path)


def test_spectrum_shows_flagged_fit_and_label(saved_results):
    import matplotlib.pyplot as plt

    from radar.plots.spectra import plot_spectrum

    hunt, _ = saved_results
    wp = json.loads(json.dumps(hunt["working_points"][1]))
    wp["fit"]["flags"] = wp["flags"] = ["bad_gof"]
    fig = plot_spectrum(wp, hunt["signal_region"], "cms")
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "CMS" in texts
    assert any("FIT FLAGGED: bad_gof" in t for t in texts)
    assert any("13 TeV" in t for t in texts)
    plt.close(fig)


def test_performance_figures(tmp_path):
    from radar.analysis.metrics import roc_points
    from radar.plots.performance import (
        metrics_frame,
        plot_metrics_vs_injection,
        plot_roc_sic,
        plot_score_correlations,
    )
    from radar.plots.spectra import plot_feature_marginals
    from radar.plots.style import save_figure

    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(300), np.zeros(3000)]
    curves = {
        m: [roc_points(labels, np.r_[rng.normal(shift, 1, 300), rng.normal(0, 1, 3000)]) for _ in range(3)]
        for m, shift in (("cathode", 2.0), ("cwola", 1.0))
    }
    paths = save_figure(plot_roc_sic(curves, fpr_floor=1e-3), tmp_path / "roc_sic")[:1]
    units = [
        {
            "method": m,
            "seed": s,
            "s_over_b": sb,
            "test": {"max_sic": 1 + 10 * sb + s, "sic_at_rejection": 2.0, "rejection": 1000.0},
        }
        for m in ("cathode", "cwola")
        for sb in (0.003, 0.01)
        for s in range(3)
    ]
    table = metrics_frame(units)
    assert {"max_sic", "sic_at_rejection", "method"} <= set(table.columns) and len(table) == 12
    paths += save_figure(plot_metrics_vs_injection(table, style="cms"), tmp_path / "sic_vs_sb")[:1]
    scores = pd.DataFrame({"a": rng.normal(size=500)})
    scores["b"] = scores["a"] + rng.normal(size=500)
    scores["c"] = rng.normal(size=500)
    paths += save_figure(plot_score_correlations(scores, top_fraction=0.1), tmp_path / "corr")[:1]
    data = pd.DataFrame({"mj1": rng.gamma(3, 50, 800), "tau21_j1": rng.beta(5, 3, 800)})
    template = pd.DataFrame({"mj1": rng.gamma(3, 50, 1600), "tau21_j1": rng.beta(5, 3, 1600)})
    paths += save_figure(
        plot_feature_marginals(data, template, ["mj1", "tau21_j1"], template_weight=np.full(1600, 0.5)),
        tmp_path / "marginals",
    )[:1]
    _check_written(paths, tmp_path)
    with pytest.raises(KeyError, match="delta_mj"):
        plot_feature_marginals(data, template, ["delta_mj"])
    with pytest.raises(ValueError, match="at least two"):
        plot_score_correlations(scores[["a"]])


def test_unknown_style_is_an_error():
    from radar.plots.style import style_context

    with pytest.raises(ValueError, match="unknown plot style"):
        with style_context("lhcb"):
            pass


def test_report_lists_results_and_figures(saved_results, tmp_path):
    from radar.analysis.report import write_report

    hunt, scan = saved_results
    fig = tmp_path / "figures" / "mjj_nocut.png"
    fig.parent.mkdir()
    fig.write_bytes(b"png")
    path = write_report(tmp_path, hunt, scan, [fig], notes=["synthetic"])
    text = path.read_text()
    assert "| no cut |" in text and "| top 5 % |" in text
    assert "Sliding-window scan" in text and "⟵ max" in text
    assert "](figures/mjj_nocut.png)" in text and "synthetic" in text


def test_cli_bumphunt_end_to_end(tmp_path):
    from radar.analysis.cli import main

    data = bh.toy_dataset(15_000, 100, seed=2)
    frame = pd.DataFrame(data)
    frame["in_sr"] = (frame["mjj"] >= 3300) & (frame["mjj"] < 3700)
    frame.to_parquet(tmp_path / "scores.parquet")
    out = tmp_path / "out"
    rc = main(
        [
            "-q",
            "bumphunt",
            str(tmp_path / "scores.parquet"),
            "-o",
            str(out),
            "--working-points",
            "1,0.02",
            "--style",
            "cms",
            "--scan",
            "--scan-step",
            "400",
            "--toys",
            "2",
        ]
    )
    assert rc == 0
    saved = json.loads((out / "bumphunt.json").read_text())
    assert [wp["efficiency"] for wp in saved["working_points"]] == [1.0, 0.02]
    assert json.loads((out / "scan.json").read_text())["n_toys"] == 2
    assert (out / "report.md").exists()
    assert (out / "figures" / "mjj_eff0p02.pdf").exists() and (out / "figures" / "scan_pvalue.png").exists()
    assert main(["-q", "bumphunt", str(tmp_path / "missing.parquet"), "-o", str(out)]) == 1

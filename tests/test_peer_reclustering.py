"""The LHCO peer-reclustering reader: the real 100k-event files as radar feature tables."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from radar.processors.features import (
    FEATURE_COLUMNS,
    PEER_RECLUSTERING_PROVENANCE,
    from_peer_reclustering,
    peer_reclustering_files,
    read_feature_table,
)


@pytest.fixture(scope="module")
def peer_dir(lhco_dir):
    return lhco_dir / "peer_reclustering"


@pytest.fixture(scope="module")
def peer_table(peer_dir):
    return read_feature_table(peer_dir)


def test_directory_reads_every_event_background_first(peer_dir, peer_table, caplog):
    assert list(peer_table.columns) == list(FEATURE_COLUMNS)
    labels = peer_table["label"].to_numpy()
    assert (labels == 0).sum() == 90_941 and (labels == 1).sum() == 9_059
    assert (np.diff(labels) >= 0).all()  # all background, then all signal
    names = [p.name for p in peer_reclustering_files(peer_dir)]
    assert names == [f"scalars_{kind}{k:02d}.h5" for kind in ("bkg", "sig") for k in range(1, 11)]
    # file order 01..10: the first rows are those of scalars_bkg01.h5, the first signal rows scalars_sig01.h5
    pd.testing.assert_frame_equal(peer_table.iloc[:9128], from_peer_reclustering(peer_dir / names[0]))
    first_sig = from_peer_reclustering(peer_dir / "scalars_sig01.h5")
    pd.testing.assert_frame_equal(
        peer_table.iloc[90_941 : 90_941 + len(first_sig)].reset_index(drop=True), first_sig
    )
    with caplog.at_level(logging.INFO, logger="radar.processors.features"):
        read_feature_table(peer_dir / "scalars_sig10.h5")
    assert PEER_RECLUSTERING_PROVENANCE in caplog.text


def test_feature_ranges(peer_table):
    t = peer_table
    assert (t["delta_mj"] >= 0).all()
    np.testing.assert_allclose(t["mj2"] - t["mj1"], t["delta_mj"])
    assert (t["weight"] == 1).all() and t["met"].isna().all()
    for name in ("tau21_j1", "tau21_j2", "tau32_j1", "tau32_j2"):
        ratio = t[name].to_numpy()
        assert np.isfinite(ratio).all() and (ratio >= 0).all(), name  # 0 where the denominator τ is 0
        # the peer's τ (exclusive-kt axes, not minimised) exceeds the lower-N τ for about 3 % of jets
        assert 0.01 < (ratio > 1).mean() < 0.05, name
    # jets of one or two constituents (all the lighter jet): τ2 = 0 in 20, τ3 = 0 in 22, 12 of them with
    # τ1 = 0 as well; the undefined 0/0 ratios are 0, as in radar's own processing (never NaN)
    zeros = (t[["tau21_j1", "tau21_j2", "tau32_j1", "tau32_j2"]] == 0).sum().to_dict()
    assert zeros == {"tau21_j1": 20, "tau21_j2": 0, "tau32_j1": 22, "tau32_j2": 0}
    assert t["delta_r_jj"].between(0, np.hypot(5.0, np.pi)).all()
    # ht: the two leading jets only (the file has no others), each above 30 GeV and inside |η| < 2.5 here
    np.testing.assert_allclose(t["ht"], t["pt_j1"] + t["pt_j2"])


def test_matches_radar_processing_of_the_raw_events(lhco_tiny, peer_table):
    """Row k of the background is the k-th background event of the raw file: radar's own clustering of
    the first 120 raw events gives the same m_JJ, jet masses, kinematics and (in the peer's τ
    convention) τ ratios."""
    from radar.processors.dijet import extract_features
    from radar.processors.jets import JetConfig
    from radar.processors.sources import lhco_raw_events

    events = lhco_raw_events(lhco_tiny, chunk_size=120).partitions[0].compute()
    ours, _ = extract_features(
        events.particles, np.asarray(events.label), config=JetConfig(tau_convention="lhco_peer")
    )
    ours = ours[ours["label"] == 0].reset_index(drop=True)
    assert len(ours) > 100
    peer = peer_table.iloc[: len(ours)].reset_index(drop=True)
    for name in (
        "mjj",
        "mj1",
        "mj2",
        "pt_j1",
        "pt_j2",
        "eta_j1",
        "eta_j2",
        "delta_r_jj",
        "tau21_j1",
        "tau21_j2",
        "tau32_j1",
        "tau32_j2",
    ):
        np.testing.assert_allclose(ours[name], peer[name], rtol=1e-9, atol=1e-9, err_msg=name)


def test_missing_column_names_the_file(tmp_path, peer_dir):
    frame = pd.read_hdf(peer_dir / "scalars_sig01.h5").head(5).drop(columns=["tau3_2"])
    path = tmp_path / "scalars_sig99.h5"
    frame.to_hdf(path, key="sig")
    with pytest.raises(
        ValueError, match=r"scalars_sig99\.h5.*peer-reclustering.*missing columns \['tau3_2'\]"
    ):
        read_feature_table(path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty: no peer-reclustering files"):
        read_feature_table(tmp_path / "empty")


def test_label_from_file_name_then_key(tmp_path, peer_dir):
    frame = pd.read_hdf(peer_dir / "scalars_bkg01.h5").head(4)
    frame.to_hdf(tmp_path / "renamed.h5", key="sig")  # no telling name: the key decides
    assert (read_feature_table(tmp_path / "renamed.h5")["label"] == 1).all()
    frame.to_hdf(tmp_path / "scalars_bkg07.h5", key="events")
    assert (read_feature_table(tmp_path / "scalars_bkg07.h5")["label"] == 0).all()


def test_study_config_injects_only_the_directorys_signal(peer_dir):
    """configs/study_peer_real.yaml names the peer directory (background and signal) as data AND signal
    pool: the pool is its 9,059 label-1 events, the data its background, the test set disjoint from both."""
    from radar.analysis.preparation import load_inputs, prepare_data
    from radar.analysis.validation import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "study_peer_real.yaml")
    inputs = load_inputs(cfg)
    assert len(inputs["signal"]) == 9_059 and (inputs["signal"]["label"] == 1).all()
    prepared = prepare_data(cfg, 0.0064, inputs)
    data, test = prepared.data, prepared.test
    in_sr = data["mjj"].between(3300, 3700)
    n_sig, n_bkg = int((in_sr & (data["label"] == 1)).sum()), int((in_sr & (data["label"] == 0)).sum())
    assert n_sig / n_bkg == pytest.approx(0.0064, rel=0.05)
    assert n_bkg == pytest.approx(0.7 * 12_881, rel=0.02)  # 30 % of the SR background is the test set
    assert (test["label"] == 0).sum() == pytest.approx(0.3 * 12_881, rel=0.03)
    key = ["mjj", "mj1", "delta_mj", "tau21_j1", "tau21_j2"]
    shared = data[key].merge(test[key], how="inner")
    assert len(shared) == 0

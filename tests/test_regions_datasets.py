"""Regions, the sliding-window scan, signal injection, splits and the real CATHODE SR arrays."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from radar.analysis.datasets import (
    check_features,
    half_split,
    inject_signal,
    load_cathode_sr,
    split_indices,
    standard_test_set,
    toy_lhco_like,
    train_val_test_split,
)
from radar.analysis.regions import Regions


def test_default_regions_partition_the_range():
    r = Regions()
    mjj = np.array([1400.0, 1500.0, 3299.9, 3300.0, 3699.9, 3700.0, 5499.0, 5500.0])
    np.testing.assert_array_equal(r.signal_region(mjj), [0, 0, 0, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(r.sideband(mjj), [0, 1, 1, 0, 0, 1, 1, 0])
    np.testing.assert_array_equal(r.in_range(mjj), r.signal_region(mjj) | r.sideband(mjj))


def test_narrow_sidebands():
    r = Regions(sideband_width=200.0)
    assert r.sidebands == ((3100.0, 3300.0), (3700.0, 3900.0))
    assert not r.sideband(np.array([3000.0, 4000.0])).any()
    assert r.sideband(np.array([3150.0, 3850.0])).all()
    # clipped to the analysed range
    assert Regions(sr=(1600, 2000), sideband_width=300.0).sidebands[0] == (1500.0, 1600.0)


def test_bad_regions_are_errors():
    with pytest.raises(ValueError, match="outside the m_JJ range"):
        Regions(sr=(5300, 5700))
    with pytest.raises(ValueError, match="low edge must be below"):
        Regions(sr=(3700, 3300))
    with pytest.raises(ValueError, match="sideband_width"):
        Regions(sideband_width=-1)


@pytest.fixture(scope="module")
def toy():
    return toy_lhco_like(5000, 0, seed=1), toy_lhco_like(0, 2000, seed=2)


def test_inject_by_n_sig_counts_and_reproducibility(toy):
    bkg, sig = toy
    inj = inject_signal(bkg, sig, n_sig=300, seed=4)
    assert len(inj.table) == 5300 and inj.n_injected == 300
    assert (inj.table["label"] == 1).sum() == 300
    in_sr = Regions().signal_region(sig["mjj"].to_numpy()[inj.signal_used])
    assert inj.n_sig_sr == in_sr.sum() and 0 < inj.n_sig_sr <= 300
    assert inj.n_bkg_sr == Regions().signal_region(bkg["mjj"].to_numpy()).sum()
    again = inject_signal(bkg, sig, n_sig=300, seed=4)
    pd.testing.assert_frame_equal(inj.table, again.table)
    other = inject_signal(bkg, sig, n_sig=300, seed=5)
    assert not np.array_equal(inj.signal_used, other.signal_used)
    # a smaller injection with the same seed is a subset (nested injections)
    assert np.isin(inject_signal(bkg, sig, n_sig=100, seed=4).signal_used, inj.signal_used).all()


def test_inject_by_s_over_b(toy):
    bkg, sig = toy
    inj = inject_signal(bkg, sig, s_over_b=0.05, seed=0)
    assert inj.n_sig_sr == round(0.05 * inj.n_bkg_sr)
    assert inj.s_over_b_sr == pytest.approx(0.05, abs=1 / inj.n_bkg_sr)
    with pytest.raises(ValueError, match="exactly one"):
        inject_signal(bkg, sig, n_sig=1, s_over_b=0.1)
    with pytest.raises(ValueError, match="pool holds"):
        inject_signal(bkg, sig, n_sig=10**6)


def test_splits_are_disjoint_and_seeded(toy):
    bkg, _ = toy
    parts = split_indices(1000, (0.6, 0.2, 0.2), seed=3)
    assert [len(p) for p in parts] == [600, 200, 200]
    assert len(np.unique(np.concatenate(parts))) == 1000
    tr, va, te = train_val_test_split(bkg, seed=1)
    assert len(tr) + len(va) + len(te) == len(bkg)
    a, b = half_split(bkg, seed=0)
    assert abs(len(a) - len(b)) <= 1
    pd.testing.assert_frame_equal(half_split(bkg, seed=0)[0], a)


def test_nan_feature_error_names_the_column(toy):
    bkg, _ = toy
    bad = bkg.copy()
    bad.loc[[3, 8], "tau21_j2"] = np.nan
    with pytest.raises(ValueError, match=r"'tau21_j2' is NaN/inf in 2 .*rows \[3, 8\]"):
        check_features(bad, ["mj1", "tau21_j2"], "bkg.parquet")


def test_real_cathode_sr_arrays(lhco_dir):
    tables = load_cathode_sr(lhco_dir / "cathode_sr")
    data = tables["data"]
    assert (data["label"] == 0).sum() == 121_352 and (data["label"] == 1).sum() == 772
    assert Regions().signal_region(data["mjj"].to_numpy()).all()  # GeV, all inside 3.3-3.7 TeV
    test = standard_test_set(lhco_dir / "cathode_sr")
    assert (test["label"] == 0).sum() == 40_000 and (test["label"] == 1).sum() == 20_000
    assert len(tables["extrasig"]) == 74_527
    check_features(data, ["mj1", "delta_mj", "tau21_j1", "tau21_j2"], "cathode_sr")


def test_signal_pool_keeps_the_signal_of_a_mixed_table():
    """A signal file that also holds background (labels 0 and 1) gives only its label-1 events; a pure or
    unlabelled pool is taken whole (injection labels it 1)."""
    import pandas as pd

    from radar.analysis.preparation import signal_pool

    mixed = pd.DataFrame({"mjj": [1.0, 2.0, 3.0, 4.0], "label": [0.0, 1.0, 0.0, 1.0]})
    pool = signal_pool(mixed, "mixed.h5")
    assert pool["mjj"].tolist() == [2.0, 4.0] and (pool["label"] == 1).all()
    for labels in ([1.0, 1.0], [-1.0, -1.0], [0.0, 0.0]):
        table = pd.DataFrame({"mjj": [1.0, 2.0], "label": labels})
        assert len(signal_pool(table, "pure.h5")) == 2
    assert signal_pool(None, None) is None

"""The closure benchmark's background surrogate (benchmarks/null_surrogate.py) on a small synthetic table."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from radar.processors.features import FEATURE_COLUMNS

REPO = Path(__file__).resolve().parents[1]
TINY_FLOW = {"n_blocks": 2, "hidden": 16, "epochs": 2, "batch_size": 128, "n_best_epochs": 1}
#: a spectrum close to the one fitted to the real LHCO background
TRUE_PARAMS, TRUE_TURN_ON = (1.0, -4.1, 22.3, 6.1), (2400.0, 60.0, 6.7)


@pytest.fixture(scope="module")
def ns():
    """benchmarks/ is not a package on the path of the tests: load the module from its file."""
    name = "null_surrogate_under_test"
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / "null_surrogate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    yield module
    del sys.modules[name]


def _synthetic_background(ns, n: int, seed: int) -> pd.DataFrame:
    """n events: m_JJ from the true spectrum, jet masses rising with m_JJ, τ21 in (0, 1)."""
    rng = np.random.default_rng(seed)
    truth = ns.MjjSpectrum(TRUE_PARAMS, TRUE_TURN_ON, ns.FIT_RANGE, n)
    mjj = truth.sample(n, rng)
    mj1 = rng.gamma(4.0, 20.0, n) + 0.01 * mjj
    delta = rng.gamma(2.0, 60.0, n)
    return pd.DataFrame(
        {
            "mjj": mjj,
            "mj1": mj1,
            "mj2": mj1 + delta,
            "delta_mj": delta,
            "tau21_j1": rng.beta(5, 3, n),
            "tau21_j2": rng.beta(4, 4, n),
            "label": 0.0,
        }
    )


@pytest.fixture(scope="module")
def fitted(ns, tmp_path_factory):
    out = tmp_path_factory.mktemp("surrogate")
    table = _synthetic_background(ns, 3000, seed=1)
    return ns.fit_surrogate(table, out, seed=0, device="cpu", **TINY_FLOW), out


def test_spectrum_sampler_follows_density(ns):
    truth = ns.MjjSpectrum(TRUE_PARAMS, TRUE_TURN_ON, ns.FIT_RANGE, 1)
    lo, hi = 2300.0, 6500.0
    mjj = truth.sample(20_000, np.random.default_rng(0), (lo, hi))
    assert mjj.min() >= lo and mjj.max() <= hi
    grid = np.linspace(lo, hi, 4201)
    cdf = np.r_[0.0, np.cumsum(truth.expected(grid))]
    result = stats.kstest(mjj, lambda m: np.interp(m, grid, cdf / cdf[-1]))
    assert result.pvalue > 1e-3
    assert ns.log_turn_on(np.array([1800.0, 2400.0, 5000.0]), *TRUE_TURN_ON) == pytest.approx(
        [np.log(1 / (1 + np.exp(2400 * (1 - (0.75) ** 6.7) / (6.7 * 60)))), np.log(0.5), 0.0], abs=1e-6
    )


def test_spectrum_fit_recovers_the_truth(ns, fitted):
    surrogate, _ = fitted
    spectrum = surrogate.spectrum
    assert spectrum.n_events == 3000 and spectrum.ndf > 0
    assert spectrum.chi2 / spectrum.ndf < 2.0
    truth = ns.MjjSpectrum(TRUE_PARAMS, TRUE_TURN_ON, ns.FIT_RANGE, 1)
    edges = np.array([1800.0, 2300.0, 2800.0, 3500.0, 7000.0])
    true_fraction = truth.expected(edges) / truth.expected(edges).sum()
    np.testing.assert_allclose(spectrum.expected(edges) / 3000, true_fraction, atol=0.03)


def test_draw_schema_range_and_determinism(fitted):
    surrogate, _ = fitted
    data = surrogate.draw(2000, seed=3, mjj_range=(2300.0, 6500.0))
    assert list(data.columns) == list(FEATURE_COLUMNS) and len(data) == 2000
    assert data["mjj"].between(2300.0, 6500.0).all()
    assert (data["label"] == 0).all() and (data["weight"] == 1).all()
    np.testing.assert_allclose(data["mj2"], data["mj1"] + data["delta_mj"])
    lo, hi = surrogate.template.flow.preprocessor.lo, surrogate.template.flow.preprocessor.hi
    inside = data[surrogate.features].to_numpy()
    assert ((inside >= lo) & (inside <= hi)).all()  # out-of-range flow samples were redrawn
    pd.testing.assert_frame_equal(data, surrogate.draw(2000, seed=3, mjj_range=(2300.0, 6500.0)))
    other = surrogate.draw(2000, seed=4, mjj_range=(2300.0, 6500.0))
    assert not np.isin(other["mjj"], data["mjj"]).any()
    # independent: no shared values (float32 flow noise may coincide by chance) and no correlation
    for name in ("mj1", "tau21_j1"):
        assert np.isin(other[name], data[name]).mean() < 0.005, name
        assert abs(np.corrcoef(other[name], data[name])[0, 1]) < 0.1, name
    with pytest.raises(ValueError, match="not inside the surrogate's fit range"):
        surrogate.draw(10, seed=0, mjj_range=(1000.0, 3000.0))


def test_mass_shift_moves_both_jet_masses_with_mjj(fitted):
    surrogate, _ = fitted
    base = surrogate.draw(500, seed=7)
    shifted = surrogate.draw(500, seed=7, mass_shift=0.05)
    np.testing.assert_array_equal(shifted["mjj"], base["mjj"])
    np.testing.assert_allclose(shifted["mj1"] - base["mj1"], 0.05 * base["mjj"])
    np.testing.assert_allclose(shifted["mj2"] - base["mj2"], 0.05 * base["mjj"])
    np.testing.assert_allclose(shifted["delta_mj"], base["delta_mj"])


def test_save_load_round_trip(ns, fitted):
    surrogate, out = fitted
    assert {p.name for p in out.iterdir()} >= {"spectrum.json", "flow.pt", "surrogate.json"}
    loaded = ns.Surrogate.load(out, device="cpu")
    assert loaded.spectrum == surrogate.spectrum
    assert loaded.info["flow_epochs_run"] == surrogate.info["flow_epochs_run"]
    pd.testing.assert_frame_equal(
        loaded.draw(300, seed=11, mass_shift=0.02), surrogate.draw(300, seed=11, mass_shift=0.02)
    )


def test_ks_table_and_bad_inputs(ns, fitted, tmp_path):
    surrogate, _ = fitted
    reference = _synthetic_background(ns, 2000, seed=2)
    ks = ns.ks_table(surrogate, reference, slices=((2300.0, 2800.0), (2800.0, 7000.0)), draw_factor=1)
    assert set(ks["slice"]) == {"2.3-2.8", "2.8-7.0"}
    assert (ks["floor"] > 0).all() and ks["ks"].between(0, 1).all()
    auc, auc_null, n = ns.classifier_auc(surrogate, reference, _synthetic_background(ns, 2000, seed=3))
    assert n > 1000 and 0 <= auc <= 1 and abs(auc_null - 0.5) < 0.1
    signal = reference.assign(label=np.r_[np.ones(5), np.zeros(len(reference) - 5)])
    with pytest.raises(ValueError, match="5 signal rows"):
        ns.fit_surrogate(signal, None, **TINY_FLOW)
    with pytest.raises(FileNotFoundError, match="spectrum.json"):
        ns.Surrogate.load(tmp_path)


def test_smooth_marginals_follow_mjj_smoothly_and_round_trip(ns, fitted, tmp_path):
    fitted, _ = fitted
    smooth = ns.SmoothMarginals.fit(fitted, n=20_000, seed=1, n_bins=10, degree=2)
    q = smooth.quantiles(np.log(np.array([2800.0, 3500.0, 4500.0]) / 3500.0))
    assert q.shape == (4, 3, len(ns.QUANTILE_LEVELS)) and (np.diff(q, axis=2) >= 0).all()
    a = ns.draw_smooth(fitted, smooth, 5_000, seed=3, mjj_range=(2800.0, 5000.0))
    b = ns.draw_smooth(fitted, smooth, 5_000, seed=3, mjj_range=(2800.0, 5000.0))
    pd.testing.assert_frame_equal(a, b)
    assert list(a.columns) == list(FEATURE_COLUMNS) and (a["label"] == 0).all()
    assert a["mjj"].between(2800.0, 5000.0).all() and (a["delta_mj"] >= 0).all()
    np.testing.assert_allclose(a["mj2"], a["mj1"] + a["delta_mj"])
    assert not a.duplicated(subset=["mj1", "delta_mj", "tau21_j1", "tau21_j2"]).any()  # no repeated events
    path = smooth.save(tmp_path / "smooth.npz")
    again = ns.SmoothMarginals.load(path)
    np.testing.assert_array_equal(again.coefficients, smooth.coefficients)
    pd.testing.assert_frame_equal(ns.draw_smooth(fitted, again, 5_000, seed=3, mjj_range=(2800.0, 5000.0)), a)

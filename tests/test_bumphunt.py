"""The bump hunt on synthetic spectra drawn from the dijet function (seeded): fit closure, pulls,
significance with and without an injected bump, the scan, and failure flags."""

from __future__ import annotations

import json

import numpy as np
import pytest

from radar.analysis import bumphunt as bh

SR = (3300.0, 3700.0)
TRUE = (1.0, 10.0, 1.5)  # (p0 placeholder, p1, p2): a falling QCD-like spectrum
EDGES = bh.mass_bin_edges((2800.0, 6000.0), SR, 100.0)


def _expected(total: float, params=TRUE, edges=EDGES) -> np.ndarray:
    mu = bh.expected_counts(edges, params)
    return mu * total / mu.sum()


def test_mass_bin_edges_contain_signal_region_and_reject_misaligned_sr():
    assert np.isclose(EDGES, 3300.0).any() and np.isclose(EDGES, 3700.0).any()
    assert np.allclose(np.diff(EDGES), 100.0)
    edges = bh.mass_bin_edges((2800.0, 6000.0), (3350.0, 3650.0), 100.0)
    assert np.isclose(edges, 3350.0).any() and np.isclose(edges, 3650.0).any()
    with pytest.raises(ValueError, match="not a bin edge"):
        bh.hunt_spectrum(np.ones(EDGES.size - 1), EDGES, (3350.0, 3650.0))
    with pytest.raises(ValueError, match="inside the fit range"):
        bh.mass_bin_edges((2800.0, 3500.0), SR)


def test_fit_recovers_generated_parameters():
    mu = _expected(200_000)
    # Asimov spectrum: the exact parameters come back
    fit = bh.fit_sidebands(mu, EDGES, None, bh.FitConfig(n_params=3))
    assert fit.ok, fit.flags
    assert fit.params[1:] == pytest.approx(TRUE[1:], rel=1e-3)
    assert fit.expected(EDGES) == pytest.approx(mu, rel=1e-4)
    # a Poisson draw: parameters within 3 sigma of the truth, reasonable goodness of fit
    counts = np.random.default_rng(11).poisson(mu)
    fit = bh.fit_sidebands(counts, EDGES, bh._sr_bins(EDGES, SR), bh.FitConfig(n_params=3))
    assert fit.ok, fit.flags
    errors = np.sqrt(np.diag(fit.covariance))
    assert np.all(np.abs(fit.theta[1:] - np.array(TRUE[1:])) < 3 * errors[1:])
    assert fit.gof_pvalue > 1e-3


def test_poisson_deviance_keeps_its_precision_near_a_perfect_fit():
    """2 (mu - n + n ln(n / mu)) per bin against a 50-digit reference, for mu within 10⁻⁸–10⁻⁶ of n: the
    direct form loses most digits there (the numerical Hessian of an exact dijet4 fit came out indefinite)."""
    from decimal import Decimal, getcontext

    from radar.analysis.bumphunt.fit import _deviance_terms

    getcontext().prec = 50
    counts = np.array([1e5, 37.0, 5e4, 0.0, 2.0])
    mu = counts * (1.0 + np.array([1e-7, -3e-6, 2e-8, 0.0, 0.5]))
    mu[3] = 0.3
    reference = [
        2 * (Decimal(m) - Decimal(c) + (Decimal(c) * (Decimal(c) / Decimal(m)).ln() if c > 0 else 0))
        for c, m in zip(counts, mu, strict=True)
    ]
    np.testing.assert_allclose(_deviance_terms(counts, mu), [float(r) for r in reference], rtol=1e-6)


def test_four_parameter_function_chosen_only_when_needed():
    four = (1.0, 8.0, 12.0, 3.0)  # a strongly curved spectrum a 3-parameter function cannot follow
    fit4 = bh.fit_sidebands(_expected(500_000, four), EDGES, bh._sr_bins(EDGES, SR))
    assert fit4.n_params == 4 and "Wilks" in fit4.choice
    fit3 = bh.fit_sidebands(_expected(500_000), EDGES, bh._sr_bins(EDGES, SR))
    assert fit3.n_params == 3
    assert set(fit3.alternatives) == {"dijet3", "dijet4"}


def test_sideband_fit_pulls_have_unit_width_on_background_only_toys():
    mu = _expected(30_000)
    rng = np.random.default_rng(5)
    sr_pulls, bin_pulls, flagged = [], [], 0
    for _ in range(60):
        fit, sr = bh.hunt_spectrum(rng.poisson(mu), EDGES, SR)
        flagged += not fit.ok
        sr_pulls.append((sr["n_obs"] - sr["b"]) / np.sqrt(sr["b"] + sr["sigma_b"] ** 2))
        bin_pulls.append(sr["pulls"][~sr["sr_mask"]])
    sr_pulls = np.array(sr_pulls)
    assert flagged <= 3
    assert 0.75 < sr_pulls.std() < 1.3
    assert abs(sr_pulls.mean()) < 0.35
    # per-bin sideband pulls: unit width minus the fitted degrees of freedom (~3/28)
    assert 0.8 < np.concatenate(bin_pulls).std() < 1.1


def test_local_significance_properties():
    z, p, q0 = bh.local_significance(150.0, 100.0, 0.0)
    assert z == pytest.approx(np.sqrt(2 * (150 * np.log(1.5) - 50)))
    assert p == pytest.approx(0.5 * (1 - __import__("math").erf(z / np.sqrt(2))))
    assert bh.local_significance(80.0, 100.0, 5.0)[0] == 0.0  # deficit -> 0
    zs = bh.local_significance(np.array([150.0, 150.0, 150.0]), 100.0, np.array([0.0, 10.0, 30.0]))[0]
    assert zs[0] > zs[1] > zs[2] > 0  # prediction uncertainty reduces the significance
    # large counts: close to (n - b) / sqrt(b + sigma^2)
    z_big = bh.local_significance(10_300.0, 10_000.0, 50.0)[0]
    assert z_big == pytest.approx(300 / np.sqrt(10_000 + 2500), rel=0.03)


def test_score_threshold_keeps_requested_sr_fraction():
    scores = np.random.default_rng(0).normal(size=10_000)
    for eff in (0.1, 0.01):
        cut = bh.score_threshold(scores, eff)
        assert np.mean(scores > cut) == pytest.approx(eff, rel=0.05)
    assert bh.score_threshold(scores, 1.0) == -np.inf
    with pytest.raises(ValueError, match="efficiency"):
        bh.score_threshold(scores, 0.0)


def test_injected_bump_is_significant_after_cut_and_scan_finds_it():
    data = bh.toy_dataset(120_000, 450, signal_score_shift=2.5, seed=2)
    result = bh.bump_hunt(data["mjj"], data["score"], label=data["label"], efficiencies=(1.0, 0.1, 0.01))
    no_cut, best = result.working_points[0], result.best
    assert best.efficiency < 1 and best.fit.ok
    assert best.z_local >= 3.0
    assert best.z_local >= 2 * max(no_cut.z_local, 0.5)
    # the excess sits at the injected mass: the largest positive pulls are in the SR bins
    assert np.argmax(best.pulls) in np.flatnonzero(best.sr_mask)
    assert best.truth["s_sr"] > 0 and best.truth["z_asimov"] > 0
    windows = bh.sliding_windows(
        (2800.0, 6000.0), sr_width=400.0, step=200.0, min_sideband=500.0
    )  # 3300-3700 is one
    scan = bh.scan(data["mjj"], data["score"], windows, efficiency=0.01, n_toys=8, seed=1)
    top = scan.windows[scan.max_window]
    assert top.sr_low <= 3500.0 <= top.sr_high
    assert scan.z_max >= 3.0
    assert scan.toys_max_z.shape == (8,) and 0 < scan.p_global <= 1
    # 8 toys cannot reach p < 1/9: beyond them the Gross-Vitells value, labelled as such, with the toys' bound
    glob = scan.to_dict()["global"]
    assert glob["method"].startswith("asymptotic") and glob["n_toys"] == 8
    if glob["n_toys_above"] == 0:
        assert glob["z_toys_is_lower_bound"] and scan.p_global < 1 / 9
    assert json.loads(json.dumps(scan.to_dict()))["max_window_sr"] == [top.sr_low, top.sr_high]


def test_background_only_is_consistent_with_the_null():
    z = []
    for seed in range(4):
        data = bh.toy_dataset(60_000, 0, seed=100 + seed)
        result = bh.bump_hunt(data["mjj"], data["score"], efficiencies=(1.0, 0.1, 0.01))
        z += [wp.z_local for wp in result.working_points if wp.fit.ok]
    z = np.array(z)
    assert z.size >= 10
    assert np.all(z < 3.5)
    assert np.mean(z > 2.0) <= 0.25
    assert np.mean(z == 0.0) > 0.2  # deficits happen about half the time


def test_scan_takes_a_per_window_callable_and_regions_windows():
    from radar.analysis.regions import Regions

    data = bh.toy_dataset(30_000, 0, seed=9)
    windows = [
        Regions(sr=(lo, lo + 400.0), mjj_range=(2800.0, 6000.0), sideband_width=800.0)
        for lo in np.arange(3600.0, 5200.0, 400.0)
    ]
    seen = []

    def score_window(window: bh.ScanWindow) -> np.ndarray:
        seen.append(window.signal_region)
        return data["score"]

    scan = bh.scan(data["mjj"], score_window, windows, efficiency=0.1, n_toys=0)
    assert seen == [w.sr for w in windows]
    assert scan.toys_max_z is None and scan.z_global is None
    assert len(scan.z_local) == len(windows)
    with pytest.raises(ValueError, match="shape"):
        bh.scan(data["mjj"], lambda w: data["score"][:10], windows, n_toys=0)


def test_failed_fits_are_flagged_not_hidden():
    # a step in the spectrum no smooth dijet function can follow
    step = _expected(40_000)
    step[EDGES[:-1] >= 4500] *= 4.0
    fit, sr = bh.hunt_spectrum(np.random.default_rng(1).poisson(step), EDGES, SR)
    assert not fit.ok and "bad_gof" in fit.flags
    assert np.isfinite(sr["b"])  # the prediction is still reported, with the flag
    # (almost) no events
    empty = np.zeros(EDGES.size - 1)
    empty[3] = 2
    fit, sr = bh.hunt_spectrum(empty, EDGES, SR)
    assert not fit.ok and "insufficient_data" in fit.flags
    # a smoothly rising spectrum fits, but is not a QCD background: warned, not failed
    rising = _expected(20_000, (1.0, -5.0, -3.0))
    fit, _ = bh.hunt_spectrum(rising, EDGES, SR)
    assert "not_falling" in fit.warnings and fit.ok
    assert "not_falling" not in bh.hunt_spectrum(_expected(20_000), EDGES, SR)[0].warnings
    # in a full bump hunt the flagged working point stays in the results
    data = bh.toy_dataset(3_000, 0, seed=4)
    result = bh.bump_hunt(data["mjj"], data["score"], efficiencies=(1.0, 0.001))
    tight = result.to_dict()["working_points"][1]
    assert tight["flags"] and tight["fit_ok"] is False


def test_bump_hunt_errors_name_the_problem():
    data = bh.toy_dataset(2_000, 0, seed=1)
    with pytest.raises(ValueError, match="score has shape"):
        bh.bump_hunt(data["mjj"], data["score"][:-1])
    score = data["score"].copy()
    score[np.flatnonzero((data["mjj"] < 3300) & (data["mjj"] > 2900))[:3]] = np.nan
    with pytest.raises(ValueError, match="3 events inside the fit range"):
        bh.bump_hunt(data["mjj"], score, efficiencies=(0.1,))


def test_results_are_reproducible_and_serialisable(tmp_path):
    data = bh.toy_dataset(20_000, 100, seed=3)
    a = bh.bump_hunt(data["mjj"], data["score"], label=data["label"], efficiencies=(1.0, 0.1))
    b = bh.bump_hunt(data["mjj"], data["score"], label=data["label"], efficiencies=(1.0, 0.1))
    assert [wp.z_local for wp in a.working_points] == [wp.z_local for wp in b.working_points]
    path = a.save(tmp_path / "bumphunt.json")
    saved = bh.result_from_dict(json.loads(path.read_text()))
    assert saved["kind"] == "radar.bumphunt"
    assert len(saved["working_points"]) == 2
    assert saved["working_points"][1]["counts"] == a.working_points[1].counts.tolist()
    assert np.array_equal(bh.toy_dataset(1000, 10, seed=7)["mjj"], bh.toy_dataset(1000, 10, seed=7)["mjj"])


def test_real_lhco_background_spectrum_closes(lhco_dir):
    pd = pytest.importorskip("pandas")
    files = sorted((lhco_dir / "peer_reclustering").glob("scalars_bkg0[1-3].h5"))
    if not files:
        pytest.skip("peer reclustering files not present")
    mjj = np.concatenate([pd.read_hdf(f)["mjj"].to_numpy() for f in files])
    counts = np.histogram(mjj, EDGES)[0]
    fit, sr = bh.hunt_spectrum(counts, EDGES, SR)
    assert fit.ok, fit.flags
    assert abs(sr["n_obs"] - sr["b"]) < 3 * np.sqrt(sr["b"] + sr["sigma_b"] ** 2)

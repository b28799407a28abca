"""Pythia 8 generation: settings validation, determinism, decay chain, signal peaks, files, resume."""

from __future__ import annotations

import json

import awkward as ak
import numpy as np
import pandas as pd
import pytest

pytest.importorskip("pythia8mc")

from radar.processors import generate as gen  # noqa: E402
from radar.processors.detector import DetectorConfig, detector_response  # noqa: E402
from radar.processors.generate import (  # noqa: E402
    X_ID,
    Y_ID,
    ZR_ID,
    GeneratorConfig,
    generate_events,
    generate_to_file,
    make_pythia,
    plan_tasks,
    trigger_mask,
    visible_final_state,
)
from radar.processors.sources import particles_from_padded  # noqa: E402
from radar.processors.writers import part_path  # noqa: E402

SIGNAL = GeneratorConfig(process="resonance", batch_size=50)
# a high pT-hat threshold keeps QCD tests fast (the default 700 GeV passes only ~6 % of events)
FAST_QCD = GeneratorConfig(process="qcd", pthat_min=1100.0, batch_size=50)


@pytest.fixture(scope="module")
def signal_events() -> gen.GeneratedChunk:
    return generate_events(SIGNAL, seed=4242, n_events=200)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"process": "wprime"}, "unknown process"),
        ({"process": "resonance", "mx": 3000.0, "my": 600.0}, "must be below mres"),
        ({"process": "resonance", "mx": 500.0, "my": 5.0}, "cannot decay"),
        ({"process": "resonance", "mres": 14000.0, "mx": 500.0}, "above the collision energy"),
        ({"process": "qcd", "pthat_min": -5.0}, "pthat_min"),
    ],
)
def test_bad_settings_fail_before_generation(settings, message, tmp_path, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("generation started despite bad settings")

    monkeypatch.setattr(gen, "generate_events", never)
    config = GeneratorConfig(**settings)
    with pytest.raises(ValueError, match=message):
        generate_to_file(config, 10, 1, tmp_path / "out.h5", workers=0, progress=False)
    assert not (tmp_path / "out.h5").exists() and not part_path(tmp_path / "out.h5").exists()


def test_unknown_pythia_setting_names_it():
    config = GeneratorConfig(process="qcd", extra_settings=("HardQCD:doesNotExist = on",))
    with pytest.raises(ValueError, match="doesNotExist"):
        make_pythia(config, 1)


def test_same_seed_gives_identical_events():
    a = generate_events(SIGNAL, seed=77, n_events=15)
    b = generate_events(SIGNAL, seed=77, n_events=15)
    c = generate_events(SIGNAL, seed=78, n_events=15)
    for field in ("pt", "eta", "phi"):
        assert ak.to_list(a.particles[field]) == ak.to_list(b.particles[field])
    assert ak.to_list(a.particles.pt) != ak.to_list(c.particles.pt)


def test_task_plan_depends_only_on_seed_and_sizes():
    plan = plan_tasks(2500, 9, 1000)
    assert [n for _, _, n in plan] == [1000, 1000, 500]
    assert plan == plan_tasks(2500, 9, 1000)
    assert len({s for _, s, _ in plan}) == 3 and all(1 <= s <= 900_000_000 for _, s, _ in plan)
    assert plan_tasks(2500, 10, 1000) != plan


def test_resonance_decay_chain_in_event_record():
    pythia = make_pythia(SIGNAL, 31)
    batch = pythia.nextBatch(20)
    assert len(batch) == 20
    prt = batch.prt
    for event in range(len(batch)):
        ids = ak.to_numpy(prt.id[event])
        first = ak.to_numpy(prt.daughter1[event])
        last = ak.to_numpy(prt.daughter2[event])
        zr = np.nonzero(ids == ZR_ID)[0]
        assert len(zr), "no Z_R in the event record"
        final_zr = zr[-1]  # the last copy (after recoil) decays
        daughters = sorted(ids[first[final_zr] : last[final_zr] + 1].tolist())
        assert daughters == [X_ID, Y_ID]
        for scalar, mass in ((X_ID, SIGNAL.mx), (Y_ID, SIGNAL.my)):
            copies = np.nonzero(ids == scalar)[0]
            i = copies[-1]
            quarks = ids[first[i] : last[i] + 1]
            assert len(quarks) == 2 and quarks[0] == -quarks[1] and 1 <= abs(quarks[0]) <= 5
            assert abs(ak.to_numpy(prt.m[event])[i] - mass) < 5 * SIGNAL.width_fraction * mass + 1e-6


def test_three_prong_y_decays_to_quarks_and_gluon():
    config = GeneratorConfig(process="resonance", three_prong_y=True, batch_size=10)
    batch = make_pythia(config, 5).nextBatch(10)
    prt = batch.prt
    for event in range(len(batch)):
        ids = ak.to_numpy(prt.id[event])
        i = np.nonzero(ids == Y_ID)[0][-1]
        products = sorted(ids[prt.daughter1[event][i] : prt.daughter2[event][i] + 1].tolist())
        assert len(products) == 3 and 21 in products


def test_signal_peaks_at_the_chosen_masses(signal_events):
    """200 signal events with the detector response: m_JJ, heavier and lighter jet masses.

    Resolution (measured on 1000 such events, detector on): m_JJ median 3466 GeV with a 68 % half-width
    of 149 GeV (4.3 %), 97 % of events within ±20 % of mres; heavier jet 498 ± 21 GeV for the 78 % of
    events whose X jet lies within ±30 % of mX; lighter jet 112 ± 29 GeV (underlying event and ISR in
    the R = 1 jet push it ~10 % above mY). The test allows 5 % (m_JJ), 10 % (mX) and 20 % (mY) on the
    medians of 200 events.
    """
    from radar.processors.dijet import extract_features

    table, cutflow = extract_features(signal_events.particles)
    assert len(table) == len(signal_events.particles)  # the generator kept only triggered events
    near_peak = table[np.abs(table.mjj / SIGNAL.mres - 1) < 0.2]
    assert len(near_peak) > 0.6 * len(table)
    assert abs(np.median(near_peak.mjj) / SIGNAL.mres - 1) < 0.05
    heavy_ok = near_peak[np.abs(near_peak.mj2 / SIGNAL.mx - 1) < 0.3]
    assert len(heavy_ok) > 0.5 * len(near_peak)
    assert abs(np.median(heavy_ok.mj2) / SIGNAL.mx - 1) < 0.10
    assert abs(np.median(heavy_ok.mj1) / SIGNAL.my - 1) < 0.20


def test_trigger_mask_matches_jets_module():
    from radar.processors.jets import cluster_chunk

    pythia = make_pythia(FAST_QCD, 3)
    visible = visible_final_state(pythia.nextBatch(60))
    particles = ak.zip({"pt": visible.pt, "eta": visible.eta, "phi": visible.phi})
    mask = trigger_mask(particles, FAST_QCD)
    status = ak.to_numpy(cluster_chunk(particles).status)
    np.testing.assert_array_equal(mask, status == 0)
    assert 0 < mask.sum() < len(mask)


def test_detector_response_is_seeded_visible_and_coarser():
    pythia = make_pythia(FAST_QCD, 8)
    visible = visible_final_state(pythia.nextBatch(20))
    assert not np.isin(np.abs(ak.to_numpy(ak.flatten(visible.id))), [12, 14, 16]).any()
    args = (visible.id, visible.pt, visible.eta, visible.phi)
    a = detector_response(*args, np.random.default_rng(1))
    b = detector_response(*args, np.random.default_rng(1))
    c = detector_response(*args, np.random.default_rng(2))
    assert ak.to_list(a) == ak.to_list(b)
    assert ak.to_list(a) != ak.to_list(c)
    assert (ak.to_numpy(ak.num(a)) < ak.to_numpy(ak.num(visible))).all()
    assert ak.all(abs(a.eta) < DetectorConfig().calo_eta) and ak.all(a.pt > 0)
    # visible energy is roughly conserved inside the calorimeter acceptance (resolution, thresholds)
    inside = abs(visible.eta) < 4.5
    ratio = ak.sum(a.pt * np.cosh(a.eta), axis=1) / ak.sum(
        (visible.pt * np.cosh(visible.eta))[inside], axis=1
    )
    assert np.all(np.abs(ak.to_numpy(ratio) - 1) < 0.3)


def _single_particle_events(pid: int, pt: float, eta: float, n: int) -> tuple[ak.Array, ...]:
    one = lambda value: ak.Array(np.full((n, 1), value))  # noqa: E731
    return one(pid), one(pt), one(eta), one(0.3)


def test_eflow_neutral_hadron_makes_one_unbiased_tower():
    """A lone 50 GeV K_L: one neutral tower per event (its 1σ significance is always met), the
    log-normal smearing keeps the mean energy and has the HCAL's resolution."""
    events = _single_particle_events(130, 50.0, 0.4, 4000)
    out = detector_response(*events, np.random.default_rng(3))
    assert (ak.to_numpy(ak.num(out)) == 1).all()
    energy = ak.to_numpy(ak.flatten(out.pt * np.cosh(out.eta)))
    e_true = 50.0 * np.cosh(0.4)
    sigma = np.sqrt((0.05 * e_true) ** 2 + 1.5**2 * e_true)
    assert abs(energy.mean() / e_true - 1) < 0.01
    assert abs(energy.std() / sigma - 1) < 0.05
    assert abs(ak.to_numpy(ak.flatten(out.eta)).mean() - 0.4) < 0.087  # inside its 0.087 cell


def test_eflow_charged_hadron_calorimeter_fluctuations_reach_the_jet():
    """A lone 100 GeV π+: always its track; in the calorimeter its energy fluctuates, and an upward
    fluctuation above 1σ of √(σ²_track + σ²_calo) becomes a fake neutral tower (then the track keeps its
    measured pT, here exact: resolution 0); otherwise the track is rescaled to the combined estimate."""
    config = DetectorConfig(track_res_const=0.0, track_res_slope=1e-9, track_eff_high=1.0)
    events = _single_particle_events(211, 100.0, 0.2, 4000)
    out = detector_response(*events, np.random.default_rng(5), config)
    n = ak.to_numpy(ak.num(out))
    assert set(np.unique(n)) == {1, 2}
    fake = n == 2
    # P(log-normal upward fluctuation > 1σ) ≈ 0.15 for a 100 GeV hadron in a 150 %/√E calorimeter
    assert 0.08 < fake.mean() < 0.25
    track_pt = ak.to_numpy(out.pt[:, 0])
    np.testing.assert_allclose(track_pt[fake], 100.0, rtol=1e-6)
    # without a significant excess the track is pulled to the calorimeter only by its tiny weight
    assert np.abs(track_pt[~fake] / 100.0 - 1).max() < 1e-3
    # the old model: the tracked pion never reaches the calorimeter
    plain = detector_response(*events, np.random.default_rng(5), DetectorConfig(eflow=False, **_no_res()))
    assert (ak.to_numpy(ak.num(plain)) == 1).all()


def _no_res() -> dict:
    return {"track_res_const": 0.0, "track_res_slope": 1e-9, "track_eff_high": 1.0}


def test_eflow_rescales_a_poorly_measured_track_and_ignores_muons():
    """With a track resolution as poor as the calorimeter's, cells without a significant excess average the
    two measurements: the track pT moves toward the calorimeter. Muons never deposit."""
    events = _single_particle_events(211, 100.0, 0.2, 2000)
    poor = DetectorConfig(track_res_const=0.3, track_res_slope=1e-9, track_eff_high=1.0)
    out = detector_response(*events, np.random.default_rng(7), poor)
    single = ak.to_numpy(ak.num(out)) == 1
    rescaled = ak.to_numpy(out.pt[:, 0])[single]
    # the track alone has σ = 30 GeV, the calorimeter ≈ 16 GeV, their combination 14.1 GeV
    assert np.std(rescaled) < 15.0 and abs(np.mean(rescaled) / 100.0 - 1) < 0.05
    muons = detector_response(*_single_particle_events(13, 50.0, 3.5, 200), np.random.default_rng(1))
    assert ak.sum(ak.num(muons)) == 0  # outside the tracker and never in a calorimeter
    old = DetectorConfig(eflow=False)
    plain = detector_response(*_single_particle_events(13, 50.0, 3.5, 200), np.random.default_rng(1), old)
    assert ak.sum(ak.num(plain)) > 0  # radar's old model put untracked muons in the forward calorimeter


def test_detector_before_the_eflow_is_reproduced():
    """``eflow=False, hcal_cell=0.0174`` is radar's detector before the e-flow model, draw for draw: the
    numbers below were produced by that code (commit c47f23a) on these synthetic events."""
    rng = np.random.default_rng(5)
    counts = rng.integers(50, 400, 200)
    total = int(counts.sum())
    pids = rng.choice([211, -211, 22, 130, 2112, 321, 11, 13, 12, 2212], total)
    pt, eta = rng.exponential(8, total) + 0.2, rng.normal(0, 2, total)
    phi = rng.uniform(-np.pi, np.pi, total)
    jag = [ak.unflatten(x, counts) for x in (pids, pt, eta, phi)]
    old = DetectorConfig(eflow=False, hcal_cell=0.0174)
    out = detector_response(*jag, np.random.default_rng(1), old)
    assert int(ak.sum(ak.num(out))) == 35699
    assert float(ak.sum(out.pt)) == pytest.approx(323976.1786526245, rel=1e-12)
    assert float(ak.sum(out.pt * out.eta)) == pytest.approx(1666.2105453880845, rel=1e-9)


def test_longitudinal_decay_angles_are_sin2_and_isotropic_is_pythias():
    """Pythia decays Z_R → X Y as 1 + cos²θ and X, Y isotropically; the default reshaping gives sin²θ for
    all three (⟨cos²θ⟩ = 1/5), and generate_events applies it reproducibly, counting the rejected events."""
    pythia = make_pythia(GeneratorConfig(process="resonance", decay_angles="isotropic"), 11)
    cos = {k: [] for k in ("zprime", "x", "y")}
    for _ in range(6):
        for k, v in gen.decay_cos_theta(pythia.nextBatch(200).prt).items():
            cos[k].append(v)
    cos = {k: np.concatenate(v) for k, v in cos.items()}
    assert not any(np.isnan(v).any() for v in cos.values())
    assert abs(np.mean(cos["zprime"] ** 2) - 0.4) < 0.03 and abs(np.mean(cos["x"] ** 2) - 1 / 3) < 0.03
    keep = np.random.default_rng(0).random(len(cos["x"])) < gen.longitudinal_weight(cos)
    for k in cos:
        assert abs(np.mean(cos[k][keep] ** 2) - 0.2) < 0.035, k
    weight_3prong = gen.longitudinal_weight(cos, three_prong_y=True)
    assert (weight_3prong >= gen.longitudinal_weight(cos)).all()
    config = GeneratorConfig(process="resonance", batch_size=50, detector=False)
    a, b = generate_events(config, 5, 30), generate_events(config, 5, 30)
    assert a.n_rejected > 0 and a.n_rejected == b.n_rejected
    assert ak.to_list(a.particles[:3]) == ak.to_list(b.particles[:3])
    with pytest.raises(ValueError, match="decay_angles"):
        GeneratorConfig(process="resonance", decay_angles="transverse").validate()


def test_simulation_variant_uses_other_settings():
    nominal = GeneratorConfig(process="qcd").pythia_settings(1)
    simulation = GeneratorConfig(process="simulation").pythia_settings(1)
    changed = set(simulation) - set(nominal)
    assert {s.split("=")[0].strip() for s in changed} >= {"TimeShower:alphaSvalue", "StringZ:aLund"}
    assert "HardQCD:all = on" in simulation


def test_file_output_and_resume_after_a_kill(tmp_path, monkeypatch):
    config = GeneratorConfig(process="resonance", batch_size=20)
    clean = tmp_path / "clean.h5"
    summary = generate_to_file(config, 25, 5, clean, workers=0, events_per_task=10, progress=False)
    frame = pd.read_hdf(clean)
    assert frame.shape == (25, 2101) and (frame[2100] == 1).all()
    assert (
        summary["n_written"] == 25 and json.loads(clean.with_name("clean.h5.json").read_text())["seed"] == 5
    )
    particles, _ = particles_from_padded(frame.to_numpy())
    assert (ak.to_numpy(ak.num(particles)) > 50).all()

    original = gen.generate_events
    calls = []

    def dies_on_third_task(config, seed, n_events, task=0):
        calls.append(task)
        if task == 2:
            raise KeyboardInterrupt("killed")
        return original(config, seed, n_events, task)

    out = tmp_path / "resumed.h5"
    monkeypatch.setattr(gen, "generate_events", dies_on_third_task)
    with pytest.raises(KeyboardInterrupt):
        generate_to_file(config, 25, 5, out, workers=0, events_per_task=10, progress=False)
    assert not out.exists() and part_path(out).exists()
    calls.clear()
    monkeypatch.setattr(gen, "generate_events", original)
    monkeypatch.setattr(gen, "generate_events", lambda *a, **k: (calls.append(a[3]), original(*a, **k))[1])
    generate_to_file(config, 25, 5, out, workers=0, events_per_task=10, progress=False)
    assert calls == [2]  # only the missing task ran again
    pd.testing.assert_frame_equal(pd.read_hdf(out), frame)


def test_dask_workers_give_the_same_file(tmp_path):
    """Parallel generation over a 2-process LocalCluster writes the same bytes as in-process."""
    config = GeneratorConfig(process="resonance", batch_size=20)
    serial = generate_to_file(
        config, 12, 11, tmp_path / "serial.h5", workers=0, events_per_task=4, progress=False
    )
    parallel = generate_to_file(
        config, 12, 11, tmp_path / "dask.h5", workers=2, events_per_task=4, progress=False
    )
    assert serial["n_written"] == parallel["n_written"] == 12
    pd.testing.assert_frame_equal(pd.read_hdf(tmp_path / "serial.h5"), pd.read_hdf(tmp_path / "dask.h5"))


def test_cli_generate_and_dataset(tmp_path):
    from radar.analysis.cli import main

    out = tmp_path / "sig.root"
    assert (
        main(
            [
                "generate",
                "resonance",
                "--events",
                "6",
                "--seed",
                "2",
                "-o",
                str(out),
                "--workers",
                "0",
                "--no-progress",
            ]
        )
        == 0
    )
    uproot = pytest.importorskip("uproot")
    assert uproot.open(out)["events"].num_entries == 6
    assert (
        main(
            [
                "generate",
                "resonance",
                "--events",
                "5",
                "--mx",
                "3000",
                "--my",
                "600",
                "-o",
                str(tmp_path / "bad.h5"),
            ]
        )
        == 1
    )

    dataset = tmp_path / "rnd"
    # scale 2e-5: 20 QCD + 2 signal + 20 simulation events; a high pT-hat threshold keeps it fast
    assert (
        main(
            [
                "dataset",
                "lhco-rnd",
                "--scale",
                "2e-5",
                "-o",
                str(dataset),
                "--workers",
                "0",
                "--pthat-min",
                "1100",
                "--no-progress",
            ]
        )
        == 0
    )
    manifest = json.loads((dataset / "dataset.json").read_text())
    for name, n_events in (("qcd", 20), ("signal", 2), ("simulation", 20)):
        assert manifest["samples"][name]["n_events"] == n_events
        assert pd.read_hdf(dataset / f"{name}.h5").shape == (n_events, 2101)
        table = pd.read_parquet(dataset / f"{name}_features.parquet")
        assert len(table) == n_events  # every generated event passes the processors' trigger
        assert (table["label"] == (1.0 if name == "signal" else 0.0)).all()
    # rerun: same settings reuse the samples; other settings are refused, not silently reused
    assert (
        main(
            [
                "dataset",
                "lhco-rnd",
                "--scale",
                "2e-5",
                "-o",
                str(dataset),
                "--workers",
                "0",
                "--pthat-min",
                "1100",
                "--no-progress",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "dataset",
                "lhco-rnd",
                "--scale",
                "2e-5",
                "-o",
                str(dataset),
                "--workers",
                "0",
                "--pthat-min",
                "1000",
                "--no-progress",
            ]
        )
        == 1
    )


def test_svj_decay_chain_rinv_and_missing_energy():
    """Semi-visible jets (the seed's 2 TeV point): Z' → dark quarks in the event record, the dark mesons
    at Λ_D decaying invisibly with the share r_inv = 1/3, the invisible states kept out of the visible
    final state (they make the MET)."""
    from radar.processors.generate import DARK_INVISIBLE, DARK_MESONS, QV_ID, ZV_ID

    config = GeneratorConfig(
        process="svj", mres=2000.0, dark_scale=200.0, dark_quark_mass=100.0, batch_size=40
    )
    assert config.label == 1.0
    batch = make_pythia(config, 11).nextBatch(80)
    prt = batch.prt
    n_invisible = n_visible = 0
    for event in range(len(batch)):
        ids = ak.to_numpy(prt.id[event])
        first, last = ak.to_numpy(prt.daughter1[event]), ak.to_numpy(prt.daughter2[event])
        zv = np.nonzero(ids == ZV_ID)[0]
        assert len(zv), "no Z' in the event record"
        assert sorted(ids[first[zv[-1]] : last[zv[-1]] + 1].tolist()) == [-QV_ID, QV_ID]
        mesons = np.nonzero(np.isin(np.abs(ids), DARK_MESONS))[0]
        masses = ak.to_numpy(prt.m[event])[mesons]
        assert np.allclose(masses, 200.0, rtol=0.05)
        for i in mesons:
            if first[i] <= 0:
                continue
            if abs(ids[first[i]]) == DARK_INVISIBLE:
                n_invisible += 1
            elif abs(ids[first[i]]) in (1, 2, 3, 4, 5, 91, 92):
                n_visible += 1
    n = n_invisible + n_visible
    assert n > 300
    share = n_invisible / n
    assert abs(share - 1 / 3) < 3.5 * np.sqrt(share * (1 - share) / n), share
    visible = visible_final_state(batch)
    visible_ids = np.abs(ak.to_numpy(ak.flatten(visible.id)))
    assert not np.isin(visible_ids, (DARK_INVISIBLE, 12, 14, 16)).any() and (visible_ids < 4_900_000).all()


def test_svj_settings_are_checked_and_the_cli_uses_the_seeds_benchmarks():
    with pytest.raises(ValueError, match="rinv is a fraction"):
        GeneratorConfig(process="svj", rinv=1.5).validate()
    with pytest.raises(ValueError, match="cannot decay to two dark quarks"):
        GeneratorConfig(process="svj", mres=200.0, dark_quark_mass=150.0).validate()
    import argparse

    from radar.processors.cli_generate import _config

    args = argparse.Namespace(
        config=None,
        mres=2000.0,
        mx=None,
        my=None,
        three_prong_y=None,
        decay_angles=None,
        detector=None,
        pthat_min=None,
        dark_scale=None,
        dark_quark_mass=None,
        rinv=None,
        trigger_pt=None,
    )
    config = _config(args, "svj")
    assert (config.mres, config.dark_scale, config.dark_quark_mass) == (2000.0, 200.0, 100.0)
    args.mres = None
    config = _config(args, "svj")
    assert (config.mres, config.dark_scale, config.dark_quark_mass) == (3000.0, 300.0, 150.0)
    assert _config(args, "resonance").decay_angles == "longitudinal"  # the default
    args.decay_angles = "isotropic"
    assert _config(args, "resonance").decay_angles == "isotropic"

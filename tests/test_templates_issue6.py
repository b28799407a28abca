"""SALAD, CURTAINs, FETA, the combinations and R-ANODE (issue 6) on tiny synthetic data.

The generic registry checks (sample shapes, finite weights, seed determinism, bad inputs) run for every
registered method in tests/test_templates.py; here: save/load round trips over the registries and what
is specific to each method.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from radar.analysis.combine import combine_samples, combine_scores, combined_unit_scores
from radar.models import densities, templates
from radar.models.densities.ranode import RAnodeDensity
from radar.models.templates import draw_mjj_kde
from radar.models.templates.combined import stack_equal_weight
from radar.models.templates.curtains import (
    identity_maf,
    infer_signal_region,
    mmd2,
    sinkhorn_divergence,
)
from radar.models.templates.salad import mass_balance_weights, mass_matched_rows
from radar.models.training import train_model
from radar.processors.features import conform

SR = (3300.0, 3700.0)


def synthetic_table(
    n: int,
    seed: int,
    region: str = "all",
    shift: float = 0.0,
    slope: float = 0.02,
    mjj_range: tuple[float, float] = (2800.0, 4200.0),
) -> pd.DataFrame:
    """LHCO-like feature table (GeV): mj1 rises with m_JJ; ``shift`` moves mj1 (the "simulation" variant)."""
    rng = np.random.default_rng(seed)
    mjj = rng.uniform(*mjj_range, 3 * n)
    inside = (mjj > SR[0]) & (mjj < SR[1])
    keep = {"sideband": ~inside, "signal": inside, "all": np.ones_like(inside)}[region]
    mjj = mjj[keep][:n]
    k = len(mjj)
    mj1 = 100.0 + slope * (mjj - 3500.0) + rng.normal(0.0, 10.0, k) + shift
    delta_mj = 50.0 + rng.gamma(2.0, 10.0, k)  # one gap: delta_mj = mj2 - mj1, as in a real feature table
    return conform(
        pd.DataFrame(
            {
                "mjj": mjj,
                "mj1": mj1,
                "mj2": mj1 + delta_mj,
                "delta_mj": delta_mj,
                "tau21_j1": rng.beta(4.0, 3.0, k),
                "tau21_j2": rng.beta(3.0, 3.0, k),
            }
        )
    )


@pytest.fixture(scope="module")
def sideband():
    return synthetic_table(400, 1, "sideband")


@pytest.fixture(scope="module")
def signal_region():
    return synthetic_table(300, 2, "signal")


@pytest.fixture(scope="module")
def simulation():
    return synthetic_table(600, 3, shift=15.0)


def tiny(cls) -> dict:
    return dict(getattr(cls, "TINY_KWARGS", {"epochs": 1}))


# -- registries -------------------------------------------------------------------------------------------------
def test_issue6_methods_are_registered():
    assert {"salad", "curtains", "feta", "combined_events", "cathode"} <= set(templates.available())
    assert "ranode" in densities.available()


@pytest.mark.parametrize("name", [n for n in templates.available() if hasattr(templates.get(n), "load")])
def test_template_save_load_round_trip(name, sideband, simulation, signal_region, tmp_path):
    cls = templates.get(name)
    template = cls(seed=4, **tiny(cls)).fit(sideband, simulation=simulation)
    mjj = draw_mjj_kde(signal_region["mjj"].to_numpy(), 60, seed=1)
    again = cls.load(template.save(tmp_path / f"{name}.pt"))
    a, b = template.sample(60, mjj, seed=5), again.sample(60, mjj, seed=5)
    pd.testing.assert_frame_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("name", [n for n in densities.available() if hasattr(densities.get(n), "load")])
def test_density_save_load_round_trip(name, sideband, signal_region, tmp_path):
    cls = densities.get(name)
    model = cls(seed=4, **tiny(cls)).fit(sideband, signal_region)
    again = cls.load(model.save(tmp_path / f"{name}.pt"))
    np.testing.assert_allclose(again.score(signal_region), model.score(signal_region), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["salad", "feta"])
def test_simulation_methods_require_simulation(name, sideband):
    cls = templates.get(name)
    with pytest.raises(ValueError, match="simulation"):
        cls(**tiny(cls)).fit(sideband, simulation=None)


# -- shared helpers -----------------------------------------------------------------------------------------------
def test_infer_signal_region_finds_the_gap_between_the_sidebands(sideband):
    lo, hi = infer_signal_region(sideband["mjj"].to_numpy())
    assert SR[0] - 20 < lo <= SR[0] and SR[1] <= hi < SR[1] + 20


def test_identity_maf_starts_as_the_identity():
    transform = identity_maf(3, n_blocks=3, hidden=8, context_features=2)
    z = torch.randn(50, 3)
    out, logdet = transform(z, context=torch.randn(50, 2))
    assert torch.allclose(out, z, atol=0.05) and torch.allclose(logdet, torch.zeros(50), atol=0.05)
    back, _ = transform.inverse(out, context=torch.zeros(50, 2))
    assert back.shape == z.shape


def test_mmd_is_zero_for_equal_samples_and_grows_with_a_shift():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(300, 2, generator=gen), torch.randn(300, 2, generator=gen)
    assert float(mmd2(a, a, [1.0])) == pytest.approx(0.0, abs=1e-6)
    near, far = float(mmd2(a, b, [1.0])), float(mmd2(a, b + 1.5, [1.0]))
    assert near < 0.02 < far


def test_mmd_and_its_gradient_equal_the_autograd_definition():
    """The fused MMD² (gradient computed in the forward pass) against the plain formula through autograd,
    with unequal sample sizes, several bandwidths and distances far enough for the clamped exponents."""
    gen = torch.Generator().manual_seed(1)
    a = (torch.randn(70, 3, generator=gen) * 2.0).double().requires_grad_()
    b = (torch.randn(50, 3, generator=gen) * 1.5 + 0.7).double().requires_grad_()
    bandwidths = [0.1, 0.5, 2.0]

    def plain(x, y):
        both = torch.cat([x, y])
        d2 = ((both[:, None, :] - both[None, :, :]) ** 2).sum(-1)
        k = sum(torch.exp(-d2 / (2.0 * h * h)) for h in bandwidths)
        n = len(x)
        return k[:n, :n].mean() + k[n:, n:].mean() - 2.0 * k[:n, n:].mean()

    fused, reference = mmd2(a, b, bandwidths), plain(a, b)
    assert float(fused.detach()) == pytest.approx(float(reference.detach()), rel=1e-10, abs=1e-12)
    for got, want in zip(torch.autograd.grad(fused, [a, b]), torch.autograd.grad(reference, [a, b])):
        assert torch.allclose(got, want, rtol=1e-8, atol=1e-12)
    assert torch.autograd.gradcheck(lambda x, y: mmd2(x, y, bandwidths), (a[:12], b[:9]))
    with pytest.raises(ValueError, match="both samples"):
        mmd2(a[:0], b, bandwidths)


def test_sinkhorn_divergence_is_zero_for_equal_samples_grows_with_a_shift_and_has_exact_gradients():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(200, 3, generator=gen).double(), torch.randn(200, 3, generator=gen).double()
    assert float(sinkhorn_divergence(a, a)) == pytest.approx(0.0, abs=1e-9)
    shifts = [float(sinkhorn_divergence(a, b + d)) for d in (0.0, 0.5, 1.0, 2.0)]
    assert shifts == sorted(shifts) and shifts[-1] > 2.0 > 0.5 > shifts[0]
    # for large shifts the divergence approaches the W2²/2 of the translation (|d|²/2 per event, 3 dims)
    assert float(sinkhorn_divergence(a, a + 3.0)) == pytest.approx(0.5 * 3 * 9.0, rel=0.02)
    # envelope-theorem gradient vs central finite differences
    x = a[:50].clone().requires_grad_(True)
    y = b[:60] + 0.7
    sinkhorn_divergence(x, y, 0.5, 300).backward()
    step = torch.zeros_like(x)
    step[7, 1] = 1e-5
    numeric = (
        sinkhorn_divergence(x.detach() + step, y, 0.5, 300)
        - sinkhorn_divergence(x.detach() - step, y, 0.5, 300)
    ) / 2e-5
    assert float(x.grad[7, 1]) == pytest.approx(float(numeric), rel=1e-3, abs=1e-8)
    with pytest.raises(ValueError, match="blur"):
        sinkhorn_divergence(a, b, blur=0.0)


def test_curtains_objectives_both_train_and_bad_ones_are_refused(sideband, signal_region):
    cls = templates.get("curtains")
    for objective in ("sinkhorn", "mmd"):
        fitted = cls(seed=4, objective=objective, signal_region=SR, **{**tiny(cls), "epochs": 2}).fit(
            sideband
        )
        assert np.isfinite(fitted.history["val_loss"]).all()
        events, _ = fitted.sample(50, np.full(50, 3500.0))
        assert np.isfinite(events[fitted.features].to_numpy()).all()
    with pytest.raises(ValueError, match="objective"):
        cls(objective="wasserstein")


def test_train_model_counts_nan_and_divergence_failures():
    calls = {"n": 0}

    def build():
        return torch.nn.Linear(1, 1)

    def batch_loss(model, idx):
        calls["n"] += 1
        loss = model(torch.ones(len(idx), 1)).pow(2).mean()
        return loss * float("nan") if calls["n"] == 1 else loss  # first attempt diverges

    result = train_model(build, batch_loss, lambda m: 1.0, 16, epochs=2, batch_size=8, lr=1e-2, seed=0)
    assert (result.n_failed, result.n_trainings) == (1, 2)
    assert result.history["seed_used"] == 7919
    rising = iter(range(100))
    with pytest.raises(RuntimeError, match="all 2 trainings failed"):
        train_model(
            build,
            lambda m, i: m(torch.ones(len(i), 1)).pow(2).mean(),
            lambda m: float(next(rising)),
            16,
            epochs=5,
            batch_size=8,
            lr=1e-2,
            seed=0,
            max_restarts=1,
            divergence=1.5,
        )


# -- SALAD ---------------------------------------------------------------------------------------------------------
def test_mass_matched_rows_follow_the_requested_masses():
    pool = np.sort(np.random.default_rng(0).uniform(3300, 3700, 2000))
    wanted = np.array([3310.0, 3500.0, 3690.0] * 100)
    rows = mass_matched_rows(pool, wanted, 3, np.random.default_rng(1))
    assert np.abs(pool[rows] - wanted).max() < 10.0
    assert len(np.unique(rows)) > 3  # jitter: not always the same neighbour
    np.testing.assert_array_equal(rows, mass_matched_rows(pool, wanted, 3, np.random.default_rng(1)))


def test_mass_balance_weights_match_the_data_mass_spectrum():
    rng = np.random.default_rng(2)
    m_data, m_sim = rng.normal(3000, 300, 5000), rng.uniform(2000, 4000, 8000)
    w = mass_balance_weights(m_sim, m_data, n_bins=10)
    edges = np.quantile(m_data, [0.1, 0.5, 0.9])
    frac_data = np.histogram(m_data, edges)[0] / len(m_data)
    frac_sim = np.histogram(m_sim, edges, weights=w)[0] / w.sum()
    np.testing.assert_allclose(frac_sim, frac_data, atol=0.03)


def test_salad_weights_move_simulation_towards_data(sideband, signal_region, simulation):
    cls = templates.get("salad")
    salad = cls(
        seed=1, classifier="hgb", classifier_kwargs={"n_models": 1, "max_iter": 60, "n_threads": 1}
    ).fit(sideband, simulation)
    n = 2000
    events, weights = salad.sample(n, draw_mjj_kde(signal_region["mjj"].to_numpy(), n, seed=2))
    raw, reweighted = events["mj1"].mean(), np.average(events["mj1"], weights=weights)
    truth = signal_region["mj1"].mean()
    assert abs(reweighted - truth) < 0.6 * abs(raw - truth)  # simulation is shifted by +15 GeV in mj1


def test_salad_clips_and_reports_weights(sideband, simulation, caplog):
    cls = templates.get("salad")
    with caplog.at_level("INFO", logger="radar.models.templates.salad"):
        salad = cls(seed=1, clip_quantile=0.9, max_weight=None, **tiny(cls)).fit(sideband, simulation)
    n_sr = len(salad._w_sr)
    assert salad.n_clipped == pytest.approx(0.1 * n_sr, abs=3)
    assert salad._w_sr.max() == pytest.approx(salad.clip_value)
    assert "clipped" in caplog.text
    strict = cls(seed=1, clip_quantile=None, max_weight=0.5, **tiny(cls)).fit(sideband, simulation)
    assert strict._w_sr.max() <= 0.5 and strict.n_clipped > 0


# -- CURTAINs ----------------------------------------------------------------------------------------------------------
def test_curtains_draws_from_the_chosen_sideband_and_reports_oversampling(sideband, signal_region):
    cls = templates.get("curtains")
    low = cls(seed=2, source="low", **tiny(cls)).fit(sideband)
    n_low = int((sideband["mjj"] < SR[0]).sum())
    events, _ = low.sample(3 * n_low, np.full(3 * n_low, 3500.0))
    assert low.oversampling == pytest.approx(3.0)
    # a barely trained transformer is close to the identity: low-sideband events keep low-sideband mj1
    assert events["mj1"].mean() < sideband.loc[sideband["mjj"] > SR[1], "mj1"].mean()
    with pytest.raises(ValueError, match="source"):
        cls(source="middle")
    low_only = sideband[sideband["mjj"] < SR[0]]
    with pytest.raises(ValueError, match="no gap between two sidebands"):
        cls(**tiny(cls)).fit(low_only, None)
    with pytest.raises(ValueError, match="both sides"):
        cls(signal_region=SR, **tiny(cls)).fit(low_only, None)


# -- FETA ------------------------------------------------------------------------------------------------------------
def test_feta_transport_learns_the_simulation_to_data_shift():
    data_sb = synthetic_table(500, 11, "sideband", slope=0.0)
    sim = synthetic_table(800, 12, shift=40.0, slope=0.0)
    flow = {"n_blocks": 1, "hidden": 8, "epochs": 8, "batch_size": 64, "lr": 3e-3, "n_best_epochs": 1}
    feta = templates.get("feta")(
        ["mj1"],
        seed=3,
        base_kwargs=flow,
        n_blocks=1,
        hidden=8,
        epochs=8,
        batch_size=64,
        lr=3e-3,
        source="simulation",
    ).fit(data_sb, sim)
    assert feta.history["val_loss"][-1] < feta.history["val_loss"][0]
    events, weights = feta.sample(400, np.full(400, 3500.0))
    sim_sr = sim.loc[(sim["mjj"] > SR[0]) & (sim["mjj"] < SR[1]), "mj1"].mean()
    assert abs(events["mj1"].mean() - data_sb["mj1"].mean()) < 0.5 * abs(sim_sr - data_sb["mj1"].mean())
    np.testing.assert_array_equal(weights, np.ones(400))


# -- sample-level combination -------------------------------------------------------------------------------------
def test_combined_template_gives_each_member_equal_weight(sideband, simulation, signal_region):
    cls = templates.get("combined_events")
    combined = cls(seed=1, members=("salad", "cathode"), member_kwargs="tiny").fit(sideband, simulation)
    n = 301
    mjj = draw_mjj_kde(signal_region["mjj"].to_numpy(), n, seed=3)
    events, weights = combined.sample(n, mjj, seed=8)
    assert sorted(combined.last_counts.values()) == [150, 151]
    assert weights.sum() == pytest.approx(n)
    np.testing.assert_array_equal(events["mjj"].to_numpy(), mjj)
    # CATHODE's share keeps unit weights; SALAD's weights are rescaled to sum to its event count
    assert np.isclose(weights, 1.0).sum() >= combined.last_counts["cathode"]
    with pytest.raises(ValueError, match="members"):
        cls(members=("combined_events",))
    with pytest.raises(ValueError, match="not members"):
        cls(members=("cathode",), member_kwargs={"salad": {}})


def test_stack_and_combine_samples_balance_member_weights():
    a = (pd.DataFrame({"x": [1.0, 2.0]}), np.array([10.0, 30.0]))
    b = (pd.DataFrame({"x": [3.0, 4.0, 5.0, 6.0]}), np.ones(4))
    events, w = combine_samples({"a": a, "b": b})
    assert w[:2].sum() == pytest.approx(3.0) and w[2:].sum() == pytest.approx(3.0)
    assert list(events["member"]) == ["a", "a", "b", "b", "b", "b"]
    stacked, ws = stack_equal_weight([a, (b[0].iloc[:2], b[1][:2])], [np.array([0, 3]), np.array([1, 2])], 4)
    np.testing.assert_array_equal(stacked["x"].to_numpy(), [1.0, 3.0, 4.0, 2.0])
    np.testing.assert_allclose(ws, [0.5, 1.0, 1.0, 1.5])
    with pytest.raises(ValueError, match="cover"):
        stack_equal_weight([a], [np.array([0])], 2)


# -- score-level combination ----------------------------------------------------------------------------------------
def test_combine_scores_mean_and_rank():
    s = {"a": np.array([0.1, 0.9, 0.5]), "b": np.array([0.3, 0.7, 0.2])}
    np.testing.assert_allclose(combine_scores(s), [0.2, 0.8, 0.35])
    np.testing.assert_allclose(
        combine_scores({"a": np.array([1.0, 2.0]), "b": np.array([100.0, -5.0])}, how="rank"), [0.5, 0.5]
    )
    np.testing.assert_allclose(combine_scores(s, weights={"a": 3.0, "b": 1.0}), [0.15, 0.85, 0.425])
    with pytest.raises(ValueError, match="different numbers"):
        combine_scores({"a": np.ones(2), "b": np.ones(3)})
    with pytest.raises(ValueError, match="non-finite"):
        combine_scores({"a": np.array([np.nan, 1.0])})


def test_combined_unit_scores_reads_a_run_directory(tmp_path):
    from radar.analysis.search import unit_dir

    mjj = np.array([3400.0, 3500.0, 3600.0])
    for method, score in (("cathode", [0.2, 0.4, 0.6]), ("salad", [0.4, 0.4, 0.8])):
        d = unit_dir(tmp_path, method, 500, 1)
        d.mkdir(parents=True)
        frame = pd.DataFrame({"mjj": mjj, "score": score, "label": [0.0, 1.0, 0.0]})
        frame.assign(role=pd.Categorical(["data"] * 3)).to_parquet(d / "scores.parquet")
        frame.to_parquet(d / "test_scores.parquet")
    scores, test = combined_unit_scores(tmp_path, ["cathode", "salad"], 500, 1)
    np.testing.assert_allclose(scores["score"], [0.3, 0.4, 0.7])
    assert set(scores["role"]) == {"combined"}
    np.testing.assert_allclose(test["score"], [0.3, 0.4, 0.7])
    with pytest.raises(FileNotFoundError, match="curtains"):
        combined_unit_scores(tmp_path, ["cathode", "curtains"], 500, 1)


# -- R-ANODE ---------------------------------------------------------------------------------------------------------
def test_ranode_catches_a_nan_training_and_retries(sideband, signal_region, monkeypatch, caplog):
    calls = {"n": 0}
    original = RAnodeDensity._nll

    def flaky(log_ps, log_pb, log_w, log_1mw, weight=None):
        calls["n"] += 1
        loss = original(log_ps, log_pb, log_w, log_1mw, weight)
        return loss * float("nan") if calls["n"] == 1 else loss

    monkeypatch.setattr(RAnodeDensity, "_nll", staticmethod(flaky))
    with caplog.at_level("WARNING"):
        model = RAnodeDensity(seed=1, **tiny(RAnodeDensity)).fit(sideband, signal_region)
    assert model.n_failed_signal == 1 and model.n_trainings_signal == 2
    assert model.n_failed >= 1 and model.n_trainings >= 3  # + the background flow's training
    assert "restarting with another seed" in caplog.text
    assert np.isfinite(model.score(signal_region)).all()

    monkeypatch.setattr(RAnodeDensity, "_nll", staticmethod(lambda *a: original(*a) * float("nan")))
    with pytest.raises(RuntimeError, match="all 2 trainings failed"):
        RAnodeDensity(seed=1, max_restarts=1, **tiny(RAnodeDensity)).fit(sideband, signal_region)


def test_ranode_fixed_and_learnt_signal_fraction(sideband, signal_region):
    kwargs = {**tiny(RAnodeDensity), "epochs": 2, "lr": 1e-2}
    fixed = RAnodeDensity(seed=2, w=0.05, **kwargs).fit(sideband, signal_region)
    assert fixed.w_ == pytest.approx(0.05)
    learnt = RAnodeDensity(seed=2, w=None, w_init=0.05, **kwargs).fit(sideband, signal_region)
    assert learnt.w_ != pytest.approx(0.05, abs=1e-6) and 0.0 < learnt.w_ < 1.0
    with pytest.raises(ValueError, match="w must lie"):
        RAnodeDensity(w=1.5)


def test_write_combined_units_writes_a_unit_like_run_unit(tmp_path):
    import json

    from radar.analysis.combine import write_combined_units
    from radar.analysis.search import unit_dir, unit_finished

    rng = np.random.default_rng(3)
    labels = np.repeat([0.0, 1.0], 50)
    for method in ("cathode", "salad"):
        d = unit_dir(tmp_path, method, 300, 0)
        d.mkdir(parents=True)
        score = labels + rng.normal(0.0, 0.5, 100)
        pd.DataFrame(
            {
                "mjj": np.linspace(3300, 3700, 100),
                "score": score,
                "label": labels,
                "weight": 1.0,
                "in_sr": True,
                "role": pd.Categorical(["data"] * 100),
            }
        ).to_parquet(d / "scores.parquet")
        pd.DataFrame(
            {"mjj": np.linspace(3300, 3700, 100), "score": score, "label": labels, "weight": 1.0}
        ).to_parquet(d / "test_scores.parquet")
        (d / "metrics.json").write_text(json.dumps({"n_sig_sr": 50, "s_over_b_sr": 1.0, "seconds": 2.0}))
    paths = write_combined_units(tmp_path, ["cathode", "salad"], [300, 600], [0])
    assert len(paths) == 1 and unit_finished(tmp_path, "combined_scores", 300, 0)
    assert not unit_finished(tmp_path, "combined_scores", 600, 0)  # members missing: skipped
    metrics = json.loads(paths[0].read_text())
    assert metrics["members"] == ["cathode", "salad"] and 0 < metrics["seconds"] < 2.0  # its own time
    assert metrics["seconds_with_members"] == pytest.approx(4.0 + metrics["seconds"])
    assert metrics["test"]["auc"] > 0.8 and metrics["auc_sr_data_truth"] == pytest.approx(
        metrics["test"]["auc"]
    )

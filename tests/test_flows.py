"""Flows and their preprocessing, zuko style: every flow kind on tiny data with epochs of 1-3."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from radar.models.flows import KINDS, ConditionalFlow, build_flow
from radar.models.preprocessing import MassScaler, Preprocessor

TINY = dict(n_blocks=2, hidden=16, epochs=1, batch_size=64, n_bins=4)
#: (kind, engine): radar's own MAF, nflows' MAF (flows saved before radar had its own), nflows' RQS
VARIANTS = [("maf", "radar"), ("maf", "nflows"), ("rqs", "nflows")]


def make_data(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three features that depend on m (GeV): a jet-mass-like, a tau-ratio-like and a skewed one."""
    rng = np.random.default_rng(seed)
    m = rng.uniform(2500.0, 4500.0, n)
    x = np.column_stack(
        [
            rng.normal(0.1 * m, 40.0),
            rng.beta(2.0, 3.0, n),
            rng.gamma(2.0, 50.0, n) * (m / 3500.0),
        ]
    )
    return x, m


@pytest.fixture(scope="module")
def data():
    return make_data()


@pytest.fixture(scope="module", params=VARIANTS, ids=lambda v: "-".join(v))
def fitted(request, data):
    x, m = data
    kind, engine = request.param
    return ConditionalFlow(3, kind=kind, engine=engine, seed=3, **TINY).fit(x, m)


# -- preprocessing ---------------------------------------------------------------------------------------
def test_preprocessing_round_trip(data):
    x, _ = data
    pre = Preprocessor().fit(x)
    z, logdet = pre.transform(x)
    assert z.shape == x.shape and logdet.shape == (len(x),)
    assert np.isfinite(z).all() and np.isfinite(logdet).all()
    back = pre.inverse(z)
    np.testing.assert_allclose(back, x, rtol=1e-6, atol=1e-6 * (x.max(0) - x.min(0)).max())
    # standardised in logit space
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-9)
    np.testing.assert_allclose(z.std(0), 1.0, rtol=1e-9)


def test_preprocessing_edges_are_finite(data):
    x, _ = data
    pre = Preprocessor().fit(x)
    edges = np.stack([x.min(0), x.max(0)])
    z, logdet = pre.transform(edges)
    assert np.isfinite(z).all() and np.isfinite(logdet).all()
    np.testing.assert_allclose(pre.inverse(z), edges, rtol=1e-9)
    # outside the training range: clipped to the edges, still finite
    z_out, logdet_out = pre.transform(edges + np.array([[-1.0], [1.0]]) * (x.max(0) - x.min(0)))
    np.testing.assert_allclose(z_out, z)
    np.testing.assert_allclose(logdet_out, logdet)


def test_preprocessing_logdet_matches_autograd(data):
    x, _ = data
    pre = Preprocessor().fit(x)
    rows = torch.as_tensor(x[:6], dtype=torch.float64)
    _, logdet = pre.transform(x[:6])
    for i, row in enumerate(rows):
        jac = torch.autograd.functional.jacobian(lambda r: pre.transform(r[None])[0][0], row)
        assert jac.shape == (3, 3)
        sign, expected = torch.linalg.slogdet(jac)
        assert sign.item() > 0
        assert logdet[i] == pytest.approx(expected.item(), rel=1e-9, abs=1e-9)
    # the torch path returns the same log-det
    torch_logdet = pre.transform(rows)[1].numpy()
    np.testing.assert_allclose(torch_logdet, logdet, rtol=1e-12)


def test_preprocessing_state_dict_round_trip(data):
    x, _ = data
    pre = Preprocessor(eps=1e-4, names=["a", "b", "c"]).fit(x)
    again = Preprocessor.from_state_dict(pre.state_dict())
    np.testing.assert_array_equal(again.transform(x)[0], pre.transform(x)[0])
    np.testing.assert_array_equal(again.transform(x)[1], pre.transform(x)[1])


def test_preprocessing_rejects_nan_and_constant_columns(data):
    x, _ = data
    bad = x.copy()
    bad[7, 1] = np.nan
    with pytest.raises(ValueError, match=r"feature 1 \(b\).*events \[7\]"):
        Preprocessor(names=["a", "b", "c"]).fit(bad)
    const = x.copy()
    const[:, 2] = 5.0
    with pytest.raises(ValueError, match="feature 2 is constant"):
        Preprocessor().fit(const)


def test_mass_scaler_is_standardised_log_mass(data):
    _, m = data
    scaler = MassScaler().fit(m)
    c = scaler.transform(m)
    assert c.shape == (len(m), 1)
    assert abs(c.mean()) < 1e-9 and c.std() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="m_JJ"):
        scaler.transform(np.array([3000.0, -1.0]))


# -- flows ---------------------------------------------------------------------------------------------
def test_log_prob_and_sample_shapes(fitted, data):
    x, m = data
    logp = fitted.log_prob(x, m)
    assert logp.shape == (len(x),) and logp.dtype == np.float64
    assert np.isfinite(logp).all()
    samples = fitted.sample(m[:50], seed=1)
    assert samples.shape == (50, 3)
    assert np.isfinite(samples).all()
    # invertibility: what the flow generates it can evaluate
    assert np.isfinite(fitted.log_prob(samples, m[:50])).all()
    assert len(fitted.history["train_loss"]) == 1 and len(fitted.history["val_loss"]) == 1
    assert fitted.n_failed == 0


def test_edge_values_give_finite_log_prob(fitted, data):
    x, m = data
    edges = np.stack([x.min(0), x.max(0)])
    logp = fitted.log_prob(edges, np.array([m.min(), m.max()]))
    assert np.isfinite(logp).all()


@pytest.mark.parametrize("kind", KINDS)
def test_transform_is_invertible(kind):
    torch.manual_seed(0)
    model = build_flow(3, kind=kind, n_blocks=2, hidden=16, n_bins=4).eval()
    z = torch.randn(64, 3)
    ctx = torch.randn(64, 1)
    with torch.no_grad():
        u, logdet_fwd = model._transform(z, context=ctx)
        back, logdet_inv = model._transform.inverse(u, context=ctx)
    torch.testing.assert_close(back, z, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(logdet_fwd, -logdet_inv, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_reach_every_parameter(kind):
    torch.manual_seed(0)
    model = build_flow(3, kind=kind, n_blocks=2, hidden=16, n_bins=4)
    loss = -model.log_prob(torch.randn(128, 3), context=torch.randn(128, 1)).mean()
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("kind, engine", VARIANTS)
def test_one_dimensional_flow_is_normalised(kind, engine):
    rng = np.random.default_rng(5)
    m = rng.uniform(3000.0, 4000.0, 600)
    x = rng.gamma(3.0, 20.0, 600)[:, None] + 0.01 * m[:, None]
    flow = ConditionalFlow(
        1, kind=kind, engine=engine, n_blocks=2, hidden=16, n_bins=4, epochs=3, batch_size=64, seed=1
    )
    flow.fit(x, m)
    lo, hi = flow.preprocessor.lo[0], flow.preprocessor.hi[0]
    grid = np.linspace(lo, hi, 20001)
    for mass in (3200.0, 3800.0):
        density = np.exp(flow.log_prob(grid[:, None], np.full(len(grid), mass)))
        assert np.trapezoid(density, grid) == pytest.approx(1.0, abs=0.03)


@pytest.mark.parametrize("kind", KINDS)
def test_flow_learns_the_dependence_on_the_mass(kind):
    rng = np.random.default_rng(8)
    m = rng.uniform(2500.0, 3500.0, 1500)
    x = rng.normal((m - 3000.0) / 5.0, 10.0)[:, None]  # mean -100 ... +100 across the mass range
    flow = ConditionalFlow(1, kind=kind, n_blocks=2, hidden=16, n_bins=4, epochs=4, lr=5e-3, batch_size=128)
    flow.fit(x, m)
    low = flow.sample(np.full(500, 2600.0), seed=1)[:, 0].mean()
    high = flow.sample(np.full(500, 3400.0), seed=1)[:, 0].mean()
    assert high - low == pytest.approx(160.0, abs=50.0)


def test_save_load_gives_identical_log_prob(fitted, data, tmp_path):
    x, m = data
    path = fitted.save(tmp_path / "flow.pt")
    again = ConditionalFlow.load(path)
    np.testing.assert_array_equal(again.log_prob(x, m), fitted.log_prob(x, m))
    np.testing.assert_array_equal(again.sample(m[:20], seed=4), fitted.sample(m[:20], seed=4))
    assert again.history == fitted.history
    assert again.config == fitted.config


@pytest.mark.parametrize("kind, engine", VARIANTS)
def test_same_seed_same_numbers(kind, engine, data):
    x, m = data
    a = ConditionalFlow(3, kind=kind, engine=engine, seed=11, **TINY).fit(x, m)
    b = ConditionalFlow(3, kind=kind, engine=engine, seed=11, **TINY).fit(x, m)
    c = ConditionalFlow(3, kind=kind, engine=engine, seed=12, **TINY).fit(x, m)
    np.testing.assert_array_equal(a.log_prob(x, m), b.log_prob(x, m))
    np.testing.assert_array_equal(a.sample(m[:20]), b.sample(m[:20]))
    assert not np.array_equal(a.log_prob(x, m), c.log_prob(x, m))
    # successive default-seeded draws differ
    assert not np.array_equal(a.sample(m[:20]), a.sample(m[:20]))


def test_ensemble_keeps_the_best_epochs(data):
    x, m = data
    flow = ConditionalFlow(3, n_blocks=1, hidden=8, epochs=4, n_best_epochs=2, patience=0, batch_size=64)
    flow.fit(x, m)
    val = np.array(flow.history["val_loss"])
    assert len(flow.members) == 2
    assert sorted(flow.history["best_epochs"]) == sorted(np.argsort(val, kind="stable")[:2].tolist())


def test_early_stopping_stops_patience_epochs_after_the_best(data):
    x, m = data
    flow = ConditionalFlow(3, n_blocks=1, hidden=8, epochs=60, patience=2, lr=3e-3, batch_size=64)
    flow.fit(x, m)
    val = flow.history["val_loss"]
    assert len(val) < 60
    assert len(val) - 1 - int(np.argmin(val)) == 2


def test_non_finite_loss_is_caught_and_restarted(data, monkeypatch):
    x, m = data
    calls = []
    original = ConditionalFlow._new_model

    def poisoned_first(self):
        model = original(self)
        if not calls:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))
        calls.append(1)
        return model

    monkeypatch.setattr(ConditionalFlow, "_new_model", poisoned_first)
    flow = ConditionalFlow(3, seed=2, **TINY).fit(x, m)
    assert flow.n_failed == 1
    assert flow.history["seed_used"] != 2
    assert np.isfinite(flow.log_prob(x, m)).all()


def test_every_training_failing_raises(data, monkeypatch):
    x, m = data
    original = ConditionalFlow._new_model

    def always_nan(self):
        model = original(self)
        with torch.no_grad():
            next(model.parameters()).fill_(float("nan"))
        return model

    monkeypatch.setattr(ConditionalFlow, "_new_model", always_nan)
    with pytest.raises(RuntimeError, match="ConditionalFlow.fit: all 2 trainings failed"):
        ConditionalFlow(3, max_restarts=1, **TINY).fit(x, m)


def test_bad_inputs_are_rejected(data):
    x, m = data
    with pytest.raises(ValueError, match="shape"):
        ConditionalFlow(2, **TINY).fit(x, m)
    with pytest.raises(ValueError, match="400 events but m has 399"):
        ConditionalFlow(3, **TINY).fit(x, m[:-1])
    with pytest.raises(ValueError, match="unknown flow kind"):
        ConditionalFlow(3, kind="glow")
    with pytest.raises(RuntimeError, match="not fitted"):
        ConditionalFlow(3, **TINY).log_prob(x, m)


@pytest.mark.parametrize("kind", KINDS)
def test_latent_space_is_standard_normal_and_mass_independent(kind):
    # LaCATHODE classifies here: events that follow the learnt density map to N(0, 1) at every mass,
    # although x itself follows m (mean -100 ... +100 across the range)
    rng = np.random.default_rng(9)
    m = rng.uniform(2500.0, 3500.0, 3000)
    x = rng.normal((m - 3000.0) / 5.0, 10.0)[:, None]
    flow = ConditionalFlow(
        1, kind=kind, n_blocks=2, hidden=16, n_bins=4, epochs=30, lr=5e-3, batch_size=256, patience=5, seed=2
    ).fit(x, m)
    z = flow.to_latent(x, m)
    assert z.shape == (3000, 1) and z.dtype == np.float64
    assert abs(z.mean()) < 0.15 and z.std() == pytest.approx(1.0, abs=0.15)
    low, high = z[m < 2800, 0], z[m > 3200, 0]
    assert abs(low.mean() - high.mean()) < 0.25  # x moves by 80 (8 sigma) between these masses
    assert abs(x[m < 2800, 0].mean() - x[m > 3200, 0].mean()) > 60


def test_flow_conditions_on_several_context_variables(tmp_path):
    """context_features=2 (the non-resonant search's HT and MET): x follows the context, the flow learns
    it, samples follow it, and the saved flow gives the same densities."""
    from radar.models.flows import ConditionalFlow

    rng = np.random.default_rng(0)
    c = np.column_stack([rng.uniform(1.0, 3.0, 4000), rng.uniform(1.0, 3.0, 4000)])
    x = (c[:, 0] - c[:, 1] + rng.normal(0.0, 0.1, 4000))[:, None]
    flow = ConditionalFlow(1, context_features=2, n_blocks=2, hidden=16, epochs=15, batch_size=256, lr=3e-3)
    flow.fit(x, c)
    probe = np.array([[2.5, 1.2], [1.2, 2.5]])
    samples = np.concatenate(
        [flow.sample(np.repeat(probe[i : i + 1], 500, axis=0), seed=1) for i in range(2)]
    )
    assert samples[:500].mean() == pytest.approx(1.3, abs=0.15)
    assert samples[500:].mean() == pytest.approx(-1.3, abs=0.15)
    flow.save(tmp_path / "flow.pt")
    again = ConditionalFlow.load(tmp_path / "flow.pt")
    np.testing.assert_allclose(again.log_prob(x[:50], c[:50]), flow.log_prob(x[:50], c[:50]), rtol=1e-6)
    with pytest.raises(ValueError, match=r"the context must have shape \(N, 2\)"):
        flow.log_prob(x[:5], c[:5, 0])


def test_warm_start_begins_where_the_other_flow_ended(data):
    """A flow started from a trained flow's weights (another sample of the same density, as a scan window's
    neighbour) is better after one epoch than a cold one after one epoch."""
    x, m = data
    x2, m2 = make_data(seed=5)
    settings = dict(n_blocks=2, hidden=16, batch_size=64, lr=3e-3, seed=1)
    source = ConditionalFlow(3, epochs=25, **settings).fit(x2, m2)
    cold = ConditionalFlow(3, epochs=1, **settings).fit(x, m)
    warm = ConditionalFlow(3, epochs=1, **settings).fit(x, m, init=source.warm_start_weights())
    assert warm.history["val_loss"][0] < cold.history["val_loss"][0] - 0.3
    assert warm.log_prob(x, m).mean() > cold.log_prob(x, m).mean()
    # deterministic, and the source flow is left as it was
    again = ConditionalFlow(3, epochs=1, **settings).fit(x, m, init=source.warm_start_weights())
    np.testing.assert_array_equal(again.log_prob(x, m), warm.log_prob(x, m))
    assert source.warm_start_weights().keys() == warm.warm_start_weights().keys()


def test_warm_start_with_another_architecture_is_refused(data):
    x, m = data
    source = ConditionalFlow(3, **TINY).fit(x, m)
    with pytest.raises(ValueError, match="do not fit this flow's architecture"):
        ConditionalFlow(3, **{**TINY, "hidden": 8}).fit(x, m, init=source.warm_start_weights())


# -- radar's MAF engine ------------------------------------------------------------------------------------
@pytest.mark.parametrize("reverse", [False, True])
def test_radar_maf_block_is_autoregressive_in_its_order(reverse):
    """One MADE with the masks of an even (natural order) or odd (reversed order) block: u_i depends on
    z_j only for j at or before i in that order (a triangular Jacobian with the order's orientation)."""
    from radar.models.maf import MaskedAutoregressiveFlow, made_masks

    torch.manual_seed(0)
    flow = MaskedAutoregressiveFlow(4, n_blocks=1, hidden=32).eval()
    for name, mask in zip(("mask1", "mask2", "mask3"), made_masks(4, 32, reverse)):
        getattr(flow, name).copy_(mask)
    with torch.no_grad():
        flow.b3.normal_()
    ctx = torch.randn(1, 1)
    jac = torch.autograd.functional.jacobian(lambda z: flow(z[None], ctx)[0][0], torch.randn(4))
    expected = torch.ones(4, 4).tril() if not reverse else torch.ones(4, 4).triu()
    assert torch.equal(jac.abs() > 1e-9, expected.bool())


@pytest.mark.parametrize("training", [True, False])
def test_radar_maf_log_det_and_inverse_are_exact(training):
    """log|det| of the whole stack is the autograd Jacobian's (evaluation mode: per event; training mode
    with batch statistics: the batch-norm term is common to the batch), and inverse undoes forward."""
    from radar.models.maf import MaskedAutoregressiveFlow

    torch.manual_seed(1)
    flow = MaskedAutoregressiveFlow(3, n_blocks=3, hidden=16, context_features=2)
    with torch.no_grad():
        flow.running_mean.normal_(0.0, 0.3)
        flow.running_var.uniform_(0.5, 2.0)
        flow.norm_raw.normal_(0.0, 0.2)
    flow.train(training)
    z, ctx = torch.randn(64, 3, dtype=torch.float64), torch.randn(64, 2, dtype=torch.float64)
    flow.double()
    before = flow.running_var.clone()
    u, logdet = flow(z, ctx)
    assert torch.equal(flow.running_var, before)  # a forward pass (training too) leaves them alone
    if training:  # set_batch_statistics makes evaluation mode give this batch the training-mode transform
        flow.set_batch_statistics(z, ctx)
        flow.eval()
        u_eval, logdet_eval = flow(z, ctx)
        torch.testing.assert_close(u_eval, u.detach())
        torch.testing.assert_close(logdet_eval, logdet.detach())
    flow.eval()
    u, logdet = flow(z, ctx)
    for i in range(3):
        jac = torch.autograd.functional.jacobian(lambda r, i=i: flow(r[None], ctx[i : i + 1])[0][0], z[i])
        assert logdet[i].item() == pytest.approx(torch.linalg.slogdet(jac)[1].item(), abs=1e-9)
    back, logdet_inverse = flow.inverse(u.detach(), ctx)
    torch.testing.assert_close(back, z)
    torch.testing.assert_close(logdet_inverse, -logdet.detach())


def test_flows_saved_before_the_radar_engine_load_as_nflows(data, tmp_path):
    """A saved state without the ``engine`` key (every flow saved before radar had its own MAF) is an
    nflows flow and gives the same densities after loading."""
    x, m = data
    flow = ConditionalFlow(3, engine="nflows", seed=3, **TINY).fit(x, m)
    state = flow.state_dict()
    del state["config"]["engine"], state["config"]["compile"]
    again = ConditionalFlow.from_state_dict(state)
    assert again.config["engine"] == "nflows"
    np.testing.assert_array_equal(again.log_prob(x, m), flow.log_prob(x, m))
    with pytest.raises(ValueError, match="engine 'radar' implements kind 'maf' only"):
        ConditionalFlow(3, kind="rqs", engine="radar")
    assert ConditionalFlow(3, kind="rqs").config["engine"] == "nflows"
    assert ConditionalFlow(3).config["engine"] == "radar"


def test_compiled_training_matches_eager_and_falls_back_when_compiling_fails(data, monkeypatch, caplog):
    x, m = data
    settings = dict(n_blocks=2, hidden=16, epochs=2, batch_size=64, seed=4)
    eager = ConditionalFlow(3, compile=False, **settings).fit(x, m)
    compiled = ConditionalFlow(3, compile=True, **settings).fit(x, m)
    assert compiled.history["compiled"] and not eager.history["compiled"]
    np.testing.assert_allclose(compiled.log_prob(x, m), eager.log_prob(x, m), rtol=1e-3, atol=1e-3)

    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler here")

    monkeypatch.setattr(torch, "compile", broken)
    with caplog.at_level("WARNING"):
        fallback = ConditionalFlow(3, compile=True, **settings).fit(x, m)
    assert not fallback.history["compiled"]
    assert "torch.compile failed (RuntimeError: no C++ compiler here)" in caplog.text
    np.testing.assert_array_equal(fallback.log_prob(x, m), eager.log_prob(x, m))


def test_warm_start_across_engines_is_refused_with_the_engine_named(data):
    x, m = data
    source = ConditionalFlow(3, engine="nflows", **TINY).fit(x, m)
    with pytest.raises(ValueError, match="on the radar engine"):
        ConditionalFlow(3, **TINY).fit(x, m, init=source.warm_start_weights())


def test_radar_maf_gives_the_same_density_for_small_and_large_inputs():
    """Inputs above the fused-product size take the per-block path: same numbers as row by row batches."""
    from radar.models import maf

    torch.manual_seed(3)
    flow = maf.MaskedAutoregressiveFlow(3, n_blocks=3, hidden=16, context_features=2).eval()
    z, ctx = torch.randn(maf._FUSED_ROWS + 50, 3), torch.randn(maf._FUSED_ROWS + 50, 2)
    with torch.no_grad():
        whole = flow.log_prob(z, ctx)
        parts = torch.cat([flow.log_prob(z[s : s + 1000], ctx[s : s + 1000]) for s in range(0, len(z), 1000)])
    torch.testing.assert_close(whole, parts, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("made", ["nflows", "cathode"])
@pytest.mark.parametrize("features, context", [(4, 1), (3, 2), (1, 1)])
def test_radar_maf_training_log_prob_has_the_autograd_gradient(features, context, made):
    """In training, log_prob is one autograd node with a written-out backward pass: its value and its
    gradients (every parameter, the inputs and the context, under per-event weights) are those autograd
    gives for the module's forward pass, and gradcheck's finite differences agree."""
    import math

    from radar.models.maf import MaskedAutoregressiveFlow

    torch.manual_seed(4)
    flow = (
        MaskedAutoregressiveFlow(features, n_blocks=3, hidden=8, context_features=context, made=made)
        .double()
        .train()
    )
    with torch.no_grad():
        flow.norm_raw.normal_(0.0, 0.3)
        flow.norm_shift.normal_(0.0, 0.3)
    z = torch.randn(33, features, dtype=torch.float64, requires_grad=True)
    ctx = torch.randn(33, context, dtype=torch.float64, requires_grad=True)
    weight = torch.rand(33, dtype=torch.float64)
    fused = flow.log_prob(z, ctx)
    assert "_TrainingLogProb" in type(fused.grad_fn).__name__
    u, logdet = flow(z, ctx)
    reference = logdet - 0.5 * (u * u).sum(1) - 0.5 * features * math.log(2.0 * math.pi)
    torch.testing.assert_close(fused, reference, rtol=0, atol=1e-12)
    leaves = [z, ctx, *flow.parameters()]
    for got, want in zip(
        torch.autograd.grad((fused * weight).sum(), leaves),
        torch.autograd.grad((reference * weight).sum(), leaves),
        strict=True,
    ):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    assert torch.autograd.gradcheck(flow.log_prob, (z, ctx))
    with torch.no_grad():  # no gradients, or evaluation mode: the module's own forward pass
        assert flow.log_prob(z, ctx).grad_fn is None


def test_cathode_made_trains_saves_and_refuses_other_variants(data, tmp_path):
    """``made="cathode"`` (CATHODE's own block) trains through ConditionalFlow, survives a save/load with the
    same densities, is refused on the nflows engine, and a warm start across the two blocks is refused
    naming the variant (their weights differ: CATHODE's conditional map has no bias)."""
    x, m = data
    flow = ConditionalFlow(3, made="cathode", seed=3, **TINY).fit(x, m)
    assert flow.config["made"] == "cathode" and np.isfinite(flow.history["val_loss"]).all()
    path = flow.save(tmp_path / "cathode.flow")
    again = ConditionalFlow.load(path)
    np.testing.assert_allclose(again.log_prob(x[:50], m[:50]), flow.log_prob(x[:50], m[:50]), rtol=1e-6)
    with pytest.raises(ValueError, match="needs the radar engine"):
        ConditionalFlow(3, made="cathode", engine="nflows")
    with pytest.raises(ValueError, match="unknown MADE variant"):
        ConditionalFlow(3, made="exp")
    default = ConditionalFlow(3, seed=3, **TINY).fit(x, m)
    with pytest.raises(ValueError, match="MADE cathode"):
        ConditionalFlow(3, made="cathode", **TINY).fit(x, m, init=default.warm_start_weights())

"""Every training path on CUDA: flows, the batched fold ensemble and the MLP, every registered template and
density method, the autoencoder and the non-resonant morph. Skipped where no GPU is present; runs wherever
one is (``pytest tests/test_gpu.py`` on a GPU machine)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device here: the GPU path runs wherever one is present"
)


def _on_cuda(module: torch.nn.Module) -> bool:
    return all(p.device.type == "cuda" for p in module.parameters())


@pytest.mark.parametrize(
    "engine, compile, made",
    [
        ("radar", False, "nflows"),
        ("radar", False, "cathode"),
        ("radar", True, "nflows"),
        ("nflows", False, "nflows"),
    ],
)
def test_flow_trains_and_samples_on_cuda(engine, compile, made):
    from radar.models.flows import ConditionalFlow

    rng = np.random.default_rng(0)
    m = rng.uniform(3000.0, 4000.0, 2000)
    x = np.column_stack([m / 40.0 + rng.normal(0, 5, 2000), rng.beta(3, 3, 2000)])
    flow = ConditionalFlow(
        2, n_blocks=2, hidden=16, epochs=2, device="cuda", engine=engine, compile=compile, made=made
    ).fit(x, m)
    assert flow.history["compiled"] == compile
    assert all(_on_cuda(member) for member in flow.members)
    assert np.isfinite(flow.log_prob(x[:100], m[:100])).all()
    assert flow.sample(m[:100], seed=0).shape == (100, 2)


@pytest.mark.parametrize("made", ["nflows", "cathode"])
def test_radar_maf_written_out_backward_matches_autograd_on_cuda(made):
    """The training log-density's written-out backward pass (one autograd node) gives autograd's gradient
    on CUDA too (double precision, every parameter, the inputs and the context)."""
    import math

    from radar.models.maf import MaskedAutoregressiveFlow

    torch.manual_seed(0)
    flow = MaskedAutoregressiveFlow(4, n_blocks=3, hidden=16, made=made).double().cuda().train()
    z = torch.randn(64, 4, dtype=torch.float64, device="cuda", requires_grad=True)
    ctx = torch.randn(64, 1, dtype=torch.float64, device="cuda", requires_grad=True)
    fused = flow.log_prob(z, ctx)
    u, logdet = flow(z, ctx)
    reference = logdet - 0.5 * (u * u).sum(1) - 2.0 * math.log(2.0 * math.pi)
    torch.testing.assert_close(fused, reference, rtol=0, atol=1e-10)
    leaves = [z, ctx, *flow.parameters()]
    for got, want in zip(
        torch.autograd.grad(fused.sum(), leaves), torch.autograd.grad(reference.sum(), leaves), strict=True
    ):
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-10)


def test_classifier_and_fold_ensemble_train_on_cuda():
    from radar.models.classifiers import MLPClassifier
    from radar.models.ensemble import fit_mlp_ensemble

    rng = np.random.default_rng(1)
    sets = []
    for _ in range(3):
        X = rng.normal(size=(1500, 3))
        y = (rng.random(1500) < 0.5).astype(float)
        X[y == 1, 0] += 1.0
        sets.append((X, y, None))
    single = MLPClassifier(epochs=2, device="cuda").fit(sets[0][0], sets[0][1])
    assert _on_cuda(single._model) and np.isfinite(single.predict_proba(sets[0][0])).all()
    fitted = fit_mlp_ensemble([MLPClassifier(epochs=2, device="cuda", seed=i) for i in range(3)], sets)
    for clf, (X, y, _) in zip(fitted, sets):
        p = clf.predict_proba(X)
        assert np.isfinite(p).all() and p[y == 1].mean() > p[y == 0].mean()


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mixed_precision_flow_and_classifier_train_on_cuda(precision):
    """fp16 (with its scaled loss) and bf16 on CUDA: finite losses, float32 weights, the float32 fit kept."""
    from radar.models.classifiers import MLPClassifier
    from radar.models.flows import ConditionalFlow

    rng = np.random.default_rng(0)
    m = rng.uniform(3000.0, 4000.0, 3000)
    x = np.column_stack([m / 40.0 + rng.normal(0, 5, 3000), rng.beta(3, 3, 3000)])
    settings = dict(n_blocks=3, hidden=32, epochs=3, lr=1e-3, device="cuda", seed=0)
    exact = ConditionalFlow(2, **settings).fit(x, m)
    mixed = ConditionalFlow(2, precision=precision, **settings).fit(x, m)
    assert all(_on_cuda(member) for member in mixed.members)
    assert abs(mixed.history["val_loss"][-1] - exact.history["val_loss"][-1]) < 0.02
    X, y, _ = (rng.normal(size=(2000, 3)), (rng.random(2000) < 0.5).astype(float), None)
    X[y == 1, 0] += 1.0
    fp32 = MLPClassifier(epochs=3, device="cuda").fit(X, y)
    clf = MLPClassifier(epochs=3, device="cuda", precision=precision).fit(X, y)
    assert abs(clf.history_["val_loss"][-1] - fp32.history_["val_loss"][-1]) < 0.01


def _with_device(cls, kwargs: dict) -> dict:
    out = dict(kwargs)
    if "device" in inspect.signature(cls.__init__).parameters:
        out["device"] = "cuda"
    if "base_kwargs" in out:
        out["base_kwargs"] = {**out["base_kwargs"], "device": "cuda"}
    return out


def test_every_template_and_density_trains_on_cuda():
    from test_templates import make_table

    from radar.models import densities, templates
    from radar.models.templates import draw_mjj_kde

    sideband = make_table(400, seed=1, region="sideband")
    simulation = make_table(600, seed=3, shift=5.0)
    sr = make_table(300, seed=2, region="signal")
    mjj = draw_mjj_kde(sr["mjj"].to_numpy(), 100, seed=1)
    for name in templates.available():
        cls = templates.get(name)
        fitted = cls(seed=1, **_with_device(cls, getattr(cls, "TINY_KWARGS", {"epochs": 1}))).fit(
            sideband, simulation=simulation
        )
        table, weights = fitted.sample(100, mjj)
        assert len(table) == 100 and np.isfinite(table.to_numpy(dtype="float64")).all(), name
    for name in densities.available():
        cls = densities.get(name)
        model = cls(seed=1, **_with_device(cls, getattr(cls, "TINY_KWARGS", {"epochs": 1})))
        model.fit(sideband, sr)
        assert np.isfinite(model.score(sr)).all(), name


def test_autoencoder_trains_on_cuda():
    from radar.models.autoencoder import Autoencoder

    X = np.random.default_rng(2).normal(size=(800, 6)).astype("float32")
    ae = Autoencoder(latent=3, epochs=2, device="cuda").fit(X)
    assert _on_cuda(ae.model) and np.isfinite(ae.score(X)).all()


def test_nonresonant_morph_on_cuda():
    from radar.analysis.nonresonant import TOY_REGIONS, make_template, toy_samples

    samples = toy_samples(20_000, 20_000, 0, seed=0)
    flow = {"epochs": 2, "n_blocks": 2, "hidden": 16, "batch_size": 512, "device": "cuda"}
    table, w = make_template(
        "morph",
        samples,
        regions=TOY_REGIONS,
        features=["x"],
        settings={"flow": flow, "transport": {"epochs": 2}, "settings": {"epochs": 2, "device": "cuda"}},
    )
    assert np.isfinite(table["x"]).all() and np.isfinite(w).all()

"""Mixed-precision training (``precision: bf16 | fp16``): autocast around the training batches only, the
validation losses and scores in float32, clear errors where a precision cannot run. The CUDA half (fp16 with
a scaled loss) is in tests/test_gpu.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch


def _flow_data(n: int = 3000):
    rng = np.random.default_rng(0)
    m = rng.uniform(3000.0, 4000.0, n)
    x = np.column_stack([m / 40.0 + rng.normal(0, 5, n), rng.beta(3, 3, n), rng.gamma(2.0, 1.0, n)])
    return x, m


def test_bf16_flow_trains_in_mixed_precision_and_keeps_the_nll():
    from radar.models.flows import ConditionalFlow

    x, m = _flow_data()
    settings = dict(n_blocks=3, hidden=32, epochs=3, lr=1e-3, device="cpu", seed=0)
    fp32 = ConditionalFlow(3, **settings).fit(x, m)
    bf16 = ConditionalFlow(3, precision="bf16", **settings).fit(x, m)
    # the batches really ran in bfloat16: the training losses differ from float32's ...
    assert bf16.history["train_loss"] != fp32.history["train_loss"]
    # ... and the fit is as good (validation in float32 on the same events)
    assert abs(bf16.history["val_loss"][-1] - fp32.history["val_loss"][-1]) < 0.02
    assert all(p.dtype == torch.float32 for member in bf16.members for p in member.parameters())
    log_p = bf16.log_prob(x[:200], m[:200])
    assert log_p.dtype == np.float64 and np.isfinite(log_p).all()
    assert bf16.config["precision"] == "bf16"


def test_radar_maf_under_autocast_takes_the_modules_own_forward_pass():
    """The written-out backward pass is float32 arithmetic: under autocast the MAF's training log-density
    is the module's forward pass (autograd), in bfloat16 products, close to the float32 value."""
    from radar.models.maf import MaskedAutoregressiveFlow

    torch.manual_seed(0)
    flow = MaskedAutoregressiveFlow(4, n_blocks=3, hidden=16).train()
    z, ctx = torch.randn(256, 4), torch.randn(256, 1)
    exact = flow.log_prob(z, ctx)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = flow.log_prob(z, ctx)
    assert "TrainingLogProb" in type(exact.grad_fn).__name__
    assert "TrainingLogProb" not in type(mixed.grad_fn).__name__
    assert not torch.equal(mixed.float(), exact)
    torch.testing.assert_close(mixed.float(), exact, rtol=0, atol=0.25)
    mixed.float().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in flow.parameters())


def _classifier_sets(k: int = 3):
    rng = np.random.default_rng(1)
    sets = []
    for _ in range(k):
        X = rng.normal(size=(2000, 3))
        y = (rng.random(2000) < 0.5).astype(float)
        X[y == 1, 0] += 1.0
        sets.append((X, y, None))
    return sets


def test_bf16_classifier_and_fold_ensemble_keep_the_loss(tmp_path):
    from radar.models.classifiers import MLPClassifier
    from radar.models.ensemble import fit_mlp_ensemble

    sets = _classifier_sets()
    X, y, _ = sets[0]
    fp32 = MLPClassifier(epochs=3, device="cpu").fit(X, y)
    bf16 = MLPClassifier(epochs=3, device="cpu", precision="bf16").fit(X, y)
    assert bf16.history_["train_loss"] != fp32.history_["train_loss"]
    assert abs(bf16.history_["val_loss"][-1] - fp32.history_["val_loss"][-1]) < 0.01
    assert np.corrcoef(bf16.predict_proba(X), fp32.predict_proba(X))[0, 1] > 0.99
    loaded = MLPClassifier.load(bf16.save(tmp_path / "clf"))
    assert loaded.precision == "bf16"
    np.testing.assert_array_equal(loaded.predict_proba(X), bf16.predict_proba(X))

    members = [
        MLPClassifier(epochs=3, device="cpu", seed=i, precision=p) for p in ("fp32", "bf16") for i in range(3)
    ]
    exact = fit_mlp_ensemble(members[:3], sets)
    mixed = fit_mlp_ensemble(members[3:], sets)
    for a, b in zip(exact, mixed):
        assert b.history_["train_loss"] != a.history_["train_loss"]
        assert math.isclose(b.history_["val_loss"][-1], a.history_["val_loss"][-1], abs_tol=0.01)


def test_precisions_that_cannot_run_are_refused_by_name():
    from radar.models.classifiers import MLPClassifier
    from radar.models.ensemble import fit_mlp_ensemble
    from radar.models.flows import ConditionalFlow

    with pytest.raises(ValueError, match=r"unknown precision 'fp8'.*'fp32', 'bf16', 'fp16'"):
        MLPClassifier(precision="fp8")
    with pytest.raises(ValueError, match="unknown precision"):
        ConditionalFlow(2, precision="half")
    X, y, _ = _classifier_sets(1)[0]
    with pytest.raises(ValueError, match=r"'fp16' needs a CUDA device.*'cpu'"):
        MLPClassifier(epochs=1, device="cpu", precision="fp16").fit(X, y)
    with pytest.raises(ValueError, match=r"'fp16' is not available for the batched fold ensemble"):
        fit_mlp_ensemble([MLPClassifier(epochs=1, device="cpu", precision="fp16")], [(X, y, None)])

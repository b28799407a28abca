"""The k fold classifiers of a CWoLa unit trained as ONE batched ensemble.

A k-fold unit trains k MLPs of the same shape on k different training sets (:func:`radar.analysis.cwola.
kfold_scores`). Trained one after another, a small MLP on a CPU spends most of its time in per-batch
overhead (Python, kernel launches, the optimiser's bookkeeping), not in arithmetic. Here the k models'
parameters live in one (k, P) tensor: one batched matmul per layer (``torch.baddbmm``) and one backward
pass per step serve all k, each model with its own batch of its own events, and AdamW is a handful of
element-wise operations on that one tensor.

Each model follows exactly the recipe of :meth:`MLPClassifier.fit` with its own seed: the same weights at
initialisation, the same validation split, standardisation and class weights, the same order of batches
(its own generator), AdamW with the same settings (applied per model, so a step of one model never moves
another: models whose epoch has no batch left, or that stopped early, are masked out), early stopping and
the ensemble of its best epochs. So the result equals k sequential trainings up to floating-point
reassociation; ``tests/test_classifiers.py`` checks that. A model whose loss turns non-finite is retrained
on its own with :meth:`MLPClassifier.fit` (restart rule, counted in ``n_failed_``).
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

from radar.models.classifiers import MLPClassifier
from radar.models.training import training_autocast

log = logging.getLogger(__name__)

__all__ = ["fit_mlp_ensemble"]

_SHARED = (
    "hidden",
    "epochs",
    "batch_size",
    "lr",
    "patience",
    "n_best_epochs",
    "weight_decay",
    "device",
    "precision",
)


def fit_mlp_ensemble(
    classifiers: list[MLPClassifier],
    datasets: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]],
) -> list[MLPClassifier]:
    """Fit ``classifiers[i]`` on ``datasets[i] = (X, y, sample_weight)`` for every i at once.

    The classifiers must share every setting but the seed (and ``val_fraction``/``progress``, which
    only act per model). Returns the fitted classifiers (the same objects)."""
    from radar.models.device import resolve_device

    if len(classifiers) != len(datasets) or not classifiers:
        raise ValueError(f"{len(classifiers)} classifiers for {len(datasets)} training sets")
    first = classifiers[0]
    for clf in classifiers[1:]:
        for key in _SHARED:
            if getattr(clf, key) != getattr(first, key):
                raise ValueError(
                    f"ensemble members differ in {key}: {getattr(clf, key)} vs {getattr(first, key)}"
                )
    k = len(classifiers)
    device = resolve_device(first.device)
    if first.precision == "fp16":  # this loop's own Adam step has no loss scaling
        raise ValueError(
            "precision 'fp16' is not available for the batched fold ensemble; use 'bf16', or "
            "batched_folds: false (k sequential trainings)"
        )
    autocast = training_autocast(first.precision, device)
    prepared = [clf._prepare(X, y, w) for clf, (X, y, w) in zip(classifiers, datasets)]
    n_train = [len(p[0]) for p in prepared]
    n_features = prepared[0][0].shape[1]

    def tensor(a, dtype=torch.float32):
        return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype, device=device)

    n_max = max(n_train)
    # padded (k, N_max, ...) training tensors; padding rows are never selected with a non-zero mask
    xt = torch.zeros((k, n_max, n_features), device=device)
    yt = torch.zeros((k, n_max), device=device)
    wt = torch.zeros((k, n_max), device=device)
    for i, (X, y, w, *_) in enumerate(prepared):
        xt[i, : len(X)], yt[i, : len(X)], wt[i, : len(X)] = tensor(X), tensor(y), tensor(w)

    # each model built under its own seed, exactly as MLPClassifier.fit -> train_model does
    models = []
    for clf in classifiers:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(clf.seed)
            models.append(clf._build(n_features).to(device))
    layers = [module for module in models[0] if not isinstance(module, torch.nn.ReLU)]
    if not all(isinstance(module, torch.nn.Linear) for module in layers):
        raise TypeError("fit_mlp_ensemble: the MLP must be Linear layers with ReLU between them")
    # all k models' parameters in one (k, P) leaf tensor; each step views it as per-layer (k, out, in)
    # weights and (k, out) biases, so the forward is one batched matmul per layer and AdamW a few
    # element-wise operations on one tensor
    names = list(models[0].state_dict())
    shapes = [tuple(t.shape) for t in models[0].state_dict().values()]
    sizes = [math.prod(shape) for shape in shapes]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).tolist()
    flat = torch.stack(
        [torch.cat([t.detach().reshape(-1) for t in model.state_dict().values()]) for model in models]
    ).requires_grad_(True)

    def unpack(values: torch.Tensor) -> list[torch.Tensor]:
        return [values[:, offsets[j] : offsets[j + 1]].view(k, *shapes[j]) for j in range(len(shapes))]

    def forward(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Logits (k, B) of the k models for inputs x (k, B, F)."""
        parts = unpack(values)
        h = x
        n_layers = len(parts) // 2
        for j in range(n_layers):
            weight, bias = parts[2 * j], parts[2 * j + 1]
            h = torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))
            if j < n_layers - 1:
                h = torch.relu(h)
        return h.squeeze(-1)

    # validation sets, padded to (k, N_val_max, F) with weight 0
    nv_max = max(len(p[3]) for p in prepared)
    xv = torch.zeros((k, nv_max, n_features), device=device)
    yv = torch.zeros((k, nv_max), device=device)
    wv = torch.zeros((k, nv_max), device=device)
    for i, p in enumerate(prepared):
        n = len(p[3])
        xv[i, :n], yv[i, :n], wv[i, :n] = tensor(p[3]), tensor(p[4]), tensor(p[5])
    wv_sum = wv.sum(dim=1)

    # AdamW per model (torch's defaults: betas 0.9 / 0.999, eps 1e-8; decoupled weight decay), each model
    # with its own step count: a model that does not take a step is left exactly as it is
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    lr, wd = first.lr, first.weight_decay
    m = torch.zeros_like(flat)
    v = torch.zeros_like(flat)
    steps = torch.zeros((k, 1), device=device)

    batch = first.batch_size
    min_batch = max(2, batch // 8)
    n_best = max(1, first.n_best_epochs)
    generators = [torch.Generator().manual_seed(clf.seed) for clf in classifiers]
    n_steps = max(math.ceil(n / batch) for n in n_train)
    rows = torch.arange(k, device=device)[:, None]
    active = [True] * k  # still training (not stopped early, not failed)
    failed = [False] * k
    best: list[list[tuple[float, int, torch.Tensor]]] = [[] for _ in range(k)]
    best_loss, waited = [math.inf] * k, [0] * k
    history = [{"train_loss": [], "val_loss": []} for _ in range(k)]

    for epoch in range(first.epochs):
        index = torch.zeros((k, n_steps * batch), dtype=torch.long)
        valid = torch.zeros((k, n_steps * batch))
        for i, (n, generator) in enumerate(zip(n_train, generators)):
            index[i, :n] = torch.randperm(n, generator=generator)
            valid[i, :n] = 1.0
            remainder = n % batch
            if 0 < remainder < min_batch and n > batch:
                valid[i, n - remainder : n] = 0.0  # the sequential loop skips a tiny last batch too
        index, valid = index.to(device), valid.to(device)
        # the epoch's events in batch order, gathered once: every step is a slice
        x_epoch, y_epoch, w_epoch = xt[rows, index], yt[rows, index], wt[rows, index] * valid
        live = torch.tensor([[float(a)] for a in active], device=device)
        counts = valid.view(k, n_steps, batch).sum(dim=2)  # valid events per model and step
        takes = (counts > 0).float() * live  # (k, n_steps): models that take each step
        all_take = takes.all(dim=0).tolist()
        total = torch.zeros(k, device=device)
        for step in range(n_steps):
            sl = slice(step * batch, (step + 1) * batch)
            stepping = takes[:, step : step + 1]  # (k, 1)
            with autocast:
                logits = forward(flat, x_epoch[:, sl]).float()
            bce = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, y_epoch[:, sl], reduction="none"
            )
            wb = w_epoch[:, sl]
            per_model = (bce * wb).sum(dim=1) / wb.sum(dim=1).clamp_min(1e-30)
            (grad,) = torch.autograd.grad((per_model * stepping[:, 0]).sum(), flat)
            with torch.no_grad():
                total += per_model * counts[:, step] * stepping[:, 0]
                if all_take[step]:
                    steps += 1.0
                    m.lerp_(grad, 1 - beta1)
                    v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                    if wd:
                        flat.mul_(1 - lr * wd)
                else:
                    if not bool(stepping.any()):
                        continue
                    steps += stepping
                    m.add_((grad - m) * (stepping * (1 - beta1)))
                    v.add_((grad * grad - v) * (stepping * (1 - beta2)))
                    if wd:
                        flat.mul_(1 - stepping * (lr * wd))
                t = steps.clamp_min(1.0)
                step_size = stepping * lr / (1 - beta1**t)
                denom = (v / (1 - beta2**t)).sqrt_().add_(eps)
                flat.sub_(step_size * m / denom)
        seen = (counts * takes).sum(dim=1)
        train_losses = (total / seen.clamp_min(1.0)).tolist()
        with torch.no_grad():
            bce = torch.nn.functional.binary_cross_entropy_with_logits(
                forward(flat, xv), yv, reduction="none"
            )
            val_losses = ((bce * wv).sum(dim=1) / wv_sum).tolist()
            snapshot = flat.detach().clone()
        for i in range(k):
            if not active[i]:
                continue
            val_loss = val_losses[i]
            if not (math.isfinite(train_losses[i]) and math.isfinite(val_loss)):
                log.warning("fold model %d: non-finite loss at epoch %d; retraining it alone", i, epoch)
                active[i], failed[i] = False, True
                continue
            history[i]["train_loss"].append(train_losses[i])
            history[i]["val_loss"].append(val_loss)
            if len(best[i]) < n_best or val_loss < best[i][-1][0]:
                best[i].append((val_loss, epoch, snapshot[i]))
                best[i].sort(key=lambda item: (item[0], item[1]))
                del best[i][n_best:]
            if val_loss < best_loss[i]:
                best_loss[i], waited[i] = val_loss, 0
            else:
                waited[i] += 1
                if first.patience > 0 and waited[i] >= first.patience:
                    log.info("fold model %d: early stopping at epoch %d (best %.5f)", i, epoch, best_loss[i])
                    active[i] = False
        if not any(active):
            break

    def state_of(values: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            name: values[offsets[j] : offsets[j + 1]].view(shapes[j]).clone() for j, name in enumerate(names)
        }

    for i, clf in enumerate(classifiers):
        if failed[i]:
            X, y, w = datasets[i]
            clf.fit(X, y, sample_weight=w)
            clf.n_failed_ += 1
            continue
        states = {epoch: state_of(values) for _, epoch, values in best[i]}
        model = clf._build(n_features).to(device)
        model.load_state_dict(states[min(states)])
        model.eval()
        clf._finish(states, history[i], 0, model)
    return classifiers

"""Seconds per epoch of radar's trainings against the CATHODE reference code's, in one run.

Three comparisons, each on the same data with the same architecture, optimiser settings and batch size:

- the CATHODE flow (MAF 15 × 128 on four features conditioned on m_JJ): radar's
  :class:`radar.models.flows.ConditionalFlow` (its own MAF engine, :mod:`radar.models.maf`, with
  CATHODE's own MADE and batch norm, ``made="cathode"``; ``--also-made nflows`` adds radar's default
  form, whose scale and conditional layer differ) against the training loop of
  HEPML-AnomalyDetection/CATHODE re-implemented here from a reading of that code (the files are cited at
  :func:`reference_flow_loop`); with ``--compile`` also radar's compiled training step
  (steady-state seconds per epoch and the one-off compilation time);
- the CWoLa classifier (MLP 64-64-64): :class:`radar.models.classifiers.MLPClassifier` against CATHODE's
  classifier loop (re-implemented likewise, :func:`reference_classifier_loop`);
- the k fold classifiers of a CWoLa unit: k sequential MLP fits vs the batched ensemble
  (:func:`radar.models.ensemble.fit_mlp_ensemble`), the same k training sets and seeds.

Every line prints seconds per epoch of both, the speed-up (reference / radar; target ≥ 2) and the last
validation loss of both (flow: NLL per event in the preprocessed space, target within 0.01 nats;
classifier: class-balanced BCE), so a faster setting never hides a worse fit. The only deliberate
difference in the flow: radar's AdamW applies the 1e-6 weight decay decoupled, the reference's Adam as an
L2 term (immaterial at 1e-6).

Data: LHCO-like synthetic events by default; ``--cathode-npy FILE ...`` uses real CATHODE-format
arrays instead (tiled if fewer than ``--events``). Run on demand, e.g.::

    python benchmarks/training.py --events 100000 --epochs 3 --threads 1 --compile \\
        --cathode-npy ../shared/data/lhco/cathode_sr/innerdata_train.npy
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from radar.models.device import resolve_device  # noqa: E402
from radar.models.flows import ConditionalFlow  # noqa: E402
from radar.models.preprocessing import MassScaler, Preprocessor  # noqa: E402

log = logging.getLogger("benchmarks.training")


def synthetic_events(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """LHCO-like (mj1, delta_mj, tau21_j1, tau21_j2) in GeV and m_JJ (GeV), shapes (n, 4) and (n,)."""
    rng = np.random.default_rng(seed)
    mjj = 1500.0 + rng.exponential(600.0, n)
    mj1 = rng.gamma(2.0, 40.0, n) * (mjj / 3000.0) ** 0.5 + 10.0
    delta_mj = rng.gamma(1.3, 90.0, n) * (mjj / 3000.0) ** 0.3
    tau21_j1 = np.clip(rng.beta(5.0, 3.0, n) - 0.1 * (mj1 / 500.0), 0.01, 1.0)
    tau21_j2 = rng.beta(4.0, 3.0, n)
    return np.column_stack([mj1, delta_mj, tau21_j1, tau21_j2]), mjj


def cathode_events(paths: list[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    data = np.concatenate([np.load(p) for p in paths])
    data = np.resize(data, (n, data.shape[1])) if len(data) < n else data[:n]
    return data[:, 1:5] * np.array([1000.0, 1000.0, 1.0, 1.0]), data[:, 0] * 1000.0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Clock:
    """Wall and process-CPU seconds since creation (after a device sync). On a shared CPU machine the
    CPU time of a one-thread process is the stable measure of work; on a GPU the wall time is."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        _sync(device)
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def per_epoch(self, epochs: int) -> tuple[float, float]:
        _sync(self.device)
        return (time.perf_counter() - self.wall) / epochs, (time.process_time() - self.cpu) / epochs


# -- flow: the CATHODE reference --------------------------------------------------------------------------
# Re-implemented from a reading of HEPML-AnomalyDetection/CATHODE (no code copied):
# - density_estimator.py (DE_MAF.build_block) and DE_MAF_model.yml: 15 × [MADE(4 → 128 → 128 → 8, ReLU,
#   conditional in the first layer) → BatchNormFlow(momentum 1) → Reverse], orthogonal weights, zero biases,
#   Adam(lr 1e-4, weight_decay 1e-6);
# - flows.py of that code base (ikostrikov's pytorch-flows, as CATHODE ships it): MaskedLinear multiplies
#   weight × mask in every forward; MADE gives u = (x - m)·exp(-a); BatchNormFlow normalises with the
#   batch's biased variance + eps and a learnt log-gamma/beta; FlowSequential sums the log-dets;
# - ANODE_training_utils.py (train_epoch): shuffled DataLoader batches, the per-event losses gathered
#   with .tolist() for the epoch's mean, then the whole training set through the network with the
#   batch-norm momentum at 0 (running statistics = the full data's) after every epoch;
#   compute_loss_over_batches: the validation NLL as the mean of batch means (batch 10 × 256);
# - data_handler.py: TensorDataset + DataLoader(shuffle=True) of float32 tensors.
class _RefMaskedLinear(torch.nn.Module):
    def __init__(self, n_in, n_out, mask, n_cond=None):
        super().__init__()
        self.linear = torch.nn.Linear(n_in, n_out)
        self.register_buffer("mask", mask)
        self.cond_linear = torch.nn.Linear(n_cond, n_out, bias=False) if n_cond else None

    def forward(self, x, cond=None):
        out = torch.nn.functional.linear(x, self.linear.weight * self.mask, self.linear.bias)
        if cond is not None:
            out += self.cond_linear(cond)
        return out


def _ref_mask(n_in, n_out, n_flow, kind):
    in_deg = torch.arange(n_in) % (n_flow if kind == "input" else n_flow - 1)
    out_deg = torch.arange(n_out) % n_flow - 1 if kind == "output" else torch.arange(n_out) % (n_flow - 1)
    return (out_deg[:, None] >= in_deg[None, :]).float()


class _RefMADE(torch.nn.Module):
    def __init__(self, d, h, c):
        super().__init__()
        self.joiner = _RefMaskedLinear(d, h, _ref_mask(d, h, d, "input"), c)
        self.trunk = torch.nn.Sequential(
            torch.nn.ReLU(),
            _RefMaskedLinear(h, h, _ref_mask(h, h, d, None)),
            torch.nn.ReLU(),
            _RefMaskedLinear(h, 2 * d, _ref_mask(h, 2 * d, d, "output")),
        )

    def forward(self, x, cond):
        m, a = self.trunk(self.joiner(x, cond)).chunk(2, 1)
        return (x - m) * torch.exp(-a), -a.sum(-1, keepdim=True)


class _RefBatchNorm(torch.nn.Module):
    def __init__(self, d, momentum=1.0, eps=1e-5):
        super().__init__()
        self.log_gamma = torch.nn.Parameter(torch.zeros(d))
        self.beta = torch.nn.Parameter(torch.zeros(d))
        self.momentum, self.eps = momentum, eps
        self.register_buffer("running_mean", torch.zeros(d))
        self.register_buffer("running_var", torch.ones(d))

    def forward(self, x, cond):
        if self.training:
            mean = x.mean(0)
            var = (x - mean).pow(2).mean(0) + self.eps
            self.running_mean.mul_(self.momentum)
            self.running_var.mul_(self.momentum)
            self.running_mean.add_(mean.data * (1 - self.momentum))
            self.running_var.add_(var.data * (1 - self.momentum))
        else:
            mean, var = self.running_mean, self.running_var
        y = torch.exp(self.log_gamma) * ((x - mean) / var.sqrt()) + self.beta
        return y, (self.log_gamma - 0.5 * torch.log(var)).sum(-1, keepdim=True)


class _RefReverse(torch.nn.Module):
    def __init__(self, d):
        super().__init__()
        self.perm = np.arange(d)[::-1].copy()

    def forward(self, x, cond):
        return x[:, self.perm], torch.zeros(x.size(0), 1, device=x.device)


class _RefFlowSequential(torch.nn.Sequential):
    def forward(self, x, cond):
        logdets = torch.zeros(x.size(0), 1, device=x.device)
        for module in self._modules.values():
            x, logdet = module(x, cond)
            logdets += logdet
        return x, logdets

    def log_probs(self, x, cond):
        u, logdets = self(x, cond)
        return (-0.5 * u.pow(2) - 0.5 * math.log(2 * math.pi)).sum(-1, keepdim=True) + logdets


def cathode_reference_flow(d: int = 4, hidden: int = 128, n_cond: int = 1, n_blocks: int = 15):
    modules = []
    for _ in range(n_blocks):
        modules += [_RefMADE(d, hidden, n_cond), _RefBatchNorm(d), _RefReverse(d)]
    model = _RefFlowSequential(*modules)
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.orthogonal_(module.weight)
            if module.bias is not None:
                module.bias.data.fill_(0)
    return model


def reference_flow_loop(
    z, c, z_val, c_val, *, batch: int, epochs: int, lr: float, seed: int, device: torch.device
) -> tuple[tuple[float, float], float]:
    """CATHODE's flow training (see the comment above): returns (wall, CPU) s per epoch and the last
    validation NLL."""
    from torch.utils.data import DataLoader, TensorDataset

    clock = Clock(device)
    torch.manual_seed(seed)
    model = cathode_reference_flow(z.shape[1]).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-6)
    as_t = partial(torch.as_tensor, dtype=torch.float32)
    train = TensorDataset(as_t(z), as_t(c).reshape(len(z), -1))
    loader = DataLoader(train, batch_size=batch, shuffle=True)
    val_loader = DataLoader(
        TensorDataset(as_t(z_val), as_t(c_val).reshape(len(z_val), -1)), batch_size=10 * batch, shuffle=False
    )
    norms = [module for module in model.modules() if isinstance(module, _RefBatchNorm)]
    val_sizes = [min(10 * batch, len(z_val) - i) for i in range(0, len(z_val), 10 * batch)]
    val = math.nan
    for _ in range(epochs):
        model.train()
        losses = []
        for data, cond in loader:
            data, cond = data.to(device), cond.to(device)
            optimizer.zero_grad()
            loss = -model.log_probs(data, cond)
            losses.extend(loss.tolist())
            loss.mean().backward()
            optimizer.step()
        for module in norms:
            module.momentum = 0
        with torch.no_grad():
            model(train.tensors[0].to(device), train.tensors[1].to(device))
        for module in norms:
            module.momentum = 1
        model.eval()
        with torch.no_grad():
            batch_means = [
                -model.log_probs(data.to(device), cond.to(device)).mean().item() for data, cond in val_loader
            ]
        # the reference reports the mean of its batch means (float(np.mean(batch_means))), which weighs
        # the short last batch's events up; radar's loss is the mean over events, so the comparison uses
        # the same estimator for both: the batch means weighted by their sizes
        val = float(np.average(batch_means, weights=val_sizes))
    return clock.per_epoch(epochs), val


def _timed(batch: int, epochs: int, lr: float, seed: int, device: str, precision: str) -> dict:
    """The settings of a timed radar training: every epoch runs (no early stop), the last one is kept."""
    return dict(
        batch_size=batch,
        epochs=epochs,
        lr=lr,
        seed=seed,
        device=device,
        patience=epochs + 1,
        n_best_epochs=1,
        precision=precision,
    )


def radar_flow(
    x,
    m,
    x_val,
    m_val,
    *,
    batch: int,
    epochs: int,
    lr: float,
    seed: int,
    device: str,
    compile=False,
    engine="auto",
    made="cathode",
    precision="fp32",
):
    """radar's CATHODE flow (the same architecture and optimiser settings as the reference: MAF 15 × 128,
    Adam lr, weight decay 1e-6; ``made="cathode"``: CATHODE's own MADE and batch norm), through
    :class:`ConditionalFlow` with its preprocessing and validation."""
    flow = ConditionalFlow(
        x.shape[1],
        compile=compile,
        engine=engine,
        made=made if engine != "nflows" else "nflows",
        weight_decay=1e-6,
        **_timed(batch, epochs, lr, seed, device, precision),
    )
    clock = Clock(flow.device)
    flow.fit(x, m, x_val, m_val)
    return clock.per_epoch(epochs), flow.history["val_loss"][-1], flow.n_failed, flow.history


# -- classifier: the CATHODE reference ----------------------------------------------------------------------
# Re-implemented from a reading of HEPML-AnomalyDetection/CATHODE (no code copied): classifier.py and
# classifier.yml (Linear/ReLU layers [64, 64, 64], a sigmoid output, F.binary_cross_entropy, Adam lr 1e-3)
# and classifier_training_utils.py (train_model: TensorDataset + DataLoader(shuffle=True) batches, class
# weights per batch from the labels, the epoch's loss summed over batches, a validation pass per epoch in
# batches of the training batch size).
def reference_classifier_loop(
    X, y, X_val, y_val, *, hidden, batch: int, epochs: int, lr: float, seed: int, device: torch.device
) -> tuple[tuple[float, float], float]:
    """CATHODE's classifier training: returns (wall, CPU) s per epoch and the last validation BCE."""
    from torch.utils.data import DataLoader, TensorDataset

    clock = Clock(device)
    mean, std = X.mean(0), X.std(0)
    as_t = partial(torch.as_tensor, dtype=torch.float32)
    counts = np.bincount(y, minlength=2)
    class_weights = len(y) / (2.0 * counts)  # sklearn's "balanced"
    train = TensorDataset(as_t((X - mean) / std), as_t(y).reshape(-1, 1))
    val = TensorDataset(as_t((X_val - mean) / std), as_t(y_val).reshape(-1, 1))
    loader = DataLoader(train, batch_size=batch, shuffle=True)
    val_loader = DataLoader(val, batch_size=batch, shuffle=False)
    torch.manual_seed(seed)
    layers, width = [], X.shape[1]
    for h in hidden:
        layers += [torch.nn.Linear(width, h), torch.nn.ReLU()]
        width = h
    model = torch.nn.Sequential(*layers, torch.nn.Linear(width, 1), torch.nn.Sigmoid()).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    bce = torch.nn.functional.binary_cross_entropy

    def weights(labels):
        return (torch.ones(labels.shape, device=device) - labels) * class_weights[0] + labels * class_weights[
            1
        ]

    val_loss = math.nan
    for _ in range(epochs):
        model.train()
        epoch_loss = 0.0
        for n_batches, (inputs, labels) in enumerate(loader, start=1):  # noqa: B007
            inputs, labels = inputs.to(device), labels.to(device)
            optimizer.zero_grad()
            loss = bce(model(inputs), labels, weight=weights(labels))
            loss.backward()
            optimizer.step()
            epoch_loss += loss
        epoch_loss /= n_batches
        with torch.no_grad():
            model.eval()
            total = 0.0
            for n_val_batches, (inputs, labels) in enumerate(val_loader, start=1):  # noqa: B007
                inputs, labels = inputs.to(device), labels.to(device)
                total += bce(model(inputs), labels, weight=weights(labels))
            val_loss = float(total / n_val_batches)
    return clock.per_epoch(epochs), val_loss


def radar_classifier(
    X, y, X_val, y_val, *, batch: int, epochs: int, lr: float, seed: int, device: str, precision: str = "fp32"
):
    from radar.models.classifiers import MLPClassifier

    clf = MLPClassifier(**_timed(batch, epochs, lr, seed, device, precision))
    clock = Clock(resolve_device(device))
    clf.fit(X, y, X_val=X_val, y_val=y_val)
    return clock.per_epoch(epochs), clf.history_["val_loss"][-1], tuple(clf.hidden)


def kfold_sets(X: np.ndarray, y: np.ndarray, k: int, seed: int) -> list[tuple]:
    """The k training sets of a k-fold CWoLa unit: all events but fold i's."""
    from radar.analysis.cwola import fold_assignment

    folds = fold_assignment(len(X), k, seed)
    return [(X[folds != i], y[folds != i], None) for i in range(k)]


def sequential_folds(sets, *, batch: int, epochs: int, lr: float, seed: int, device: str):
    """k radar MLP fits one after another (the CWoLa unit before the batched ensemble)."""
    from radar.models.classifiers import MLPClassifier

    clock = Clock(resolve_device(device))
    fitted = [
        MLPClassifier(
            epochs=epochs, batch_size=batch, lr=lr, seed=seed + i, device=device, patience=epochs + 1
        ).fit(X, y)
        for i, (X, y, _) in enumerate(sets)
    ]
    return clock.per_epoch(epochs), float(np.mean([c.history_["val_loss"][-1] for c in fitted]))


def ensemble_folds(sets, *, batch: int, epochs: int, lr: float, seed: int, device: str):
    """The same k fits as one vmap-ed ensemble (:func:`radar.models.ensemble.fit_mlp_ensemble`)."""
    from radar.models.classifiers import MLPClassifier
    from radar.models.ensemble import fit_mlp_ensemble

    clock = Clock(resolve_device(device))
    fitted = fit_mlp_ensemble(
        [
            MLPClassifier(
                epochs=epochs, batch_size=batch, lr=lr, seed=seed + i, device=device, patience=epochs + 1
            )
            for i in range(len(sets))
        ],
        sets,
    )
    return clock.per_epoch(epochs), float(np.mean([c.history_["val_loss"][-1] for c in fitted]))


def run_kfold(args, x_all, results, key, measure, interleaved) -> None:
    """k sequential fits (the baseline) vs the batched ensemble, same k training sets and seeds; the
    printed ratio is sequential / ensemble (target >= 2), next to the mean validation BCE of the k models."""
    rng = np.random.default_rng(args.seed + 2)
    n = min(len(x_all), args.events)
    y = rng.integers(0, 2, n)
    X = x_all[:n] + (y[:, None] * 0.05 * x_all[:n].std(0)) * rng.normal(1.0, 1.0, (n, x_all.shape[1]))
    sets = kfold_sets(X, y, args.k_folds, args.seed)
    for batch in args.clf_batch_sizes:
        lr = args.clf_lr
        common = dict(batch=batch, epochs=args.epochs, lr=lr, seed=args.seed, device=args.device)
        ensemble_folds([(a[:512], b[:512], None) for a, b, _ in sets], **{**common, "epochs": 1})  # warm-up
        seq, ens = interleaved(
            partial(sequential_folds, sets, **common), partial(ensemble_folds, sets, **common)
        )
        ratio = seq[0][key] / ens[0][key]
        results.append(
            dict(
                model=f"{args.k_folds}-fold MLP",
                batch=batch,
                lr=lr,
                measure=measure,
                sequential_s_per_epoch=seq[0][key],
                ensemble_s_per_epoch=ens[0][key],
                speedup=ratio,
                sequential_val=seq[1],
                ensemble_val=ens[1],
            )
        )
        print(
            f"{args.k_folds}-fold MLP batch {batch:5d}: {args.k_folds} sequential fits {seq[0][key]:7.2f} s/epoch "
            f"({measure}), batched ensemble {ens[0][key]:7.2f}: speed-up {ratio:.2f}x; mean val BCE "
            f"sequential {seq[1]:.4f} ensemble {ens[1]:.4f}",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=500_000, help="training events (the issue asks 500k)")
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--epochs", type=int, default=2, help="epochs timed per configuration")
    parser.add_argument(
        "--batch-sizes", type=int, nargs="+", default=[256], help="flow batch sizes (CATHODE's: 256)"
    )
    parser.add_argument(
        "--clf-batch-sizes",
        type=int,
        nargs="+",
        default=[128],
        help="classifier batch sizes (CATHODE's: 128)",
    )
    parser.add_argument("--flow-lr", type=float, default=1e-4, help="flow learning rate at batch 256")
    parser.add_argument("--clf-lr", type=float, default=1e-3, help="classifier learning rate at batch 256")
    parser.add_argument(
        "--lr-scaling",
        choices=["none", "sqrt", "linear"],
        default="none",
        help="scale the learning rates with batch/256 (to compare batch sizes at equal quality)",
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="timings per configuration (the fastest is kept)"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--made",
        default="cathode",
        choices=("cathode", "nflows"),
        help="radar's MADE in the flow comparison: CATHODE's own (the reference's architecture; default) or "
        "radar's default nflows form",
    )
    parser.add_argument(
        "--also-made",
        nargs="*",
        default=[],
        choices=("cathode", "nflows"),
        help="also time these MADE variants against the same reference run",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (keep modest on shared machines)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-flow", action="store_true")
    parser.add_argument(
        "--compile", action="store_true", help="also time radar's flow with torch.compile (steady state)"
    )
    parser.add_argument(
        "--nflows",
        action="store_true",
        help="also time radar's flow on the nflows engine (radar before its own)",
    )
    parser.add_argument("--skip-classifier", action="store_true")
    parser.add_argument("--skip-kfold", action="store_true", help="skip batched k-fold ensemble vs k fits")
    parser.add_argument("--k-folds", type=int, default=5)
    parser.add_argument("--cathode-npy", nargs="*", default=None, help="real CATHODE-format .npy files")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)

    n_total = int(round(args.events / (1.0 - args.val_fraction)))
    if args.cathode_npy:
        x_all, m_all = cathode_events(args.cathode_npy, n_total)
    else:
        x_all, m_all = synthetic_events(n_total, args.seed)
    n_val = n_total - args.events
    x, m, x_val, m_val = x_all[n_val:], m_all[n_val:], x_all[:n_val], m_all[:n_val]
    print(
        f"device {device}, torch threads {args.threads}, {len(x)} training + {len(x_val)} validation events, "
        f"{args.epochs} epochs per timing"
    )
    results = []

    def lr_at(base: float, batch: int) -> float:
        power = {"none": 0.0, "sqrt": 0.5, "linear": 1.0}[args.lr_scaling]
        return base * (batch / 256.0) ** power

    # on a CPU the work is measured by process CPU time (wall time on a shared machine is mostly noise)
    key = 1 if device.type == "cpu" else 0
    measure = "CPU" if key else "wall"

    def interleaved(first, second):
        """Run the two timings alternately ``--repeats`` times (load on a shared machine drifts) and
        keep each one's fastest run."""
        runs_a, runs_b = [], []
        for _ in range(args.repeats):
            runs_a.append(first())
            runs_b.append(second())
        return min(runs_a, key=lambda r: r[0][key]), min(runs_b, key=lambda r: r[0][key])

    def report(model: str, batch: int, lr: float, ref, radar, loss: str) -> None:
        (ref_t, ref_val), (radar_t, radar_val) = ref, radar
        speedup = ref_t[key] / radar_t[key]
        results.append(
            dict(
                model=model,
                batch=batch,
                lr=lr,
                measure=measure,
                radar_wall_s_per_epoch=radar_t[0],
                radar_cpu_s_per_epoch=radar_t[1],
                reference_wall_s_per_epoch=ref_t[0],
                reference_cpu_s_per_epoch=ref_t[1],
                speedup=speedup,
                wall_speedup=ref_t[0] / radar_t[0],
                radar_val=radar_val,
                reference_val=ref_val,
            )
        )
        print(
            f"{model:22s} batch {batch:5d} lr {lr:.1e}: radar {radar_t[key]:7.2f} s/epoch ({measure}; "
            f"wall {radar_t[0]:.2f}), CATHODE reference {ref_t[key]:7.2f} ({measure}; wall {ref_t[0]:.2f}), "
            f"speed-up {speedup:.2f}x; val {loss} radar {radar_val:.4f} reference {ref_val:.4f} "
            f"(difference {radar_val - ref_val:+.4f})",
            flush=True,
        )

    # warm up (imports, allocator, lazy nflows modules) so the first timing is not penalised
    warm = slice(0, min(2048, len(x)))
    radar_flow(
        x[warm], m[warm], x_val[:512], m_val[:512], batch=256, epochs=1, lr=1e-4, seed=0, device=args.device
    )

    if not args.skip_flow:
        pre = Preprocessor().fit(np.concatenate([x, x_val]))
        scaler = MassScaler().fit(np.concatenate([m, m_val]))
        z, z_val = pre.transform(x)[0], pre.transform(x_val)[0]
        c, c_val = scaler.transform(m), scaler.transform(m_val)
        for batch in args.batch_sizes:
            lr = lr_at(args.flow_lr, batch)
            common = dict(batch=batch, epochs=args.epochs, lr=lr, seed=args.seed)
            ref, (t_radar, nll_radar, failed, _) = interleaved(
                partial(reference_flow_loop, z, c, z_val, c_val, device=device, **common),
                partial(radar_flow, x, m, x_val, m_val, device=args.device, made=args.made, **common),
            )
            if failed:
                print(f"  ({failed} radar flow trainings hit a non-finite loss and were restarted)")
            report(f"flow MAF 15x128 ({args.made} MADE)", batch, lr, ref, (t_radar, nll_radar), "NLL")
            for other in args.also_made:
                # radar's other MADE variants, each against the same reference run
                t_other, nll_other, _, _ = radar_flow(
                    x, m, x_val, m_val, device=args.device, made=other, **common
                )
                report(f"flow MAF 15x128 ({other} MADE)", batch, lr, ref, (t_other, nll_other), "NLL")
            if args.nflows:
                # radar's flow before its own engine: the same ConditionalFlow on nflows' transforms
                t_nf, nll_nf, _, _ = radar_flow(
                    x, m, x_val, m_val, device=args.device, engine="nflows", **common
                )
                results.append(
                    dict(
                        model="flow MAF 15x128 (nflows engine)",
                        batch=batch,
                        measure=measure,
                        nflows_s_per_epoch=t_nf[key],
                        radar_s_per_epoch=t_radar[key],
                        speedup_over_nflows=t_nf[key] / t_radar[key],
                        nflows_val=nll_nf,
                    )
                )
                print(
                    f"flow MAF 15x128 on nflows batch {batch:5d}: {t_nf[key]:7.2f} s/epoch ({measure}); radar's "
                    f"engine {t_radar[key]:.2f}: {t_nf[key] / t_radar[key]:.2f}x faster; val NLL nflows "
                    f"{nll_nf:.4f}",
                    flush=True,
                )
            if args.compile:
                # compiled: one more epoch (the first one pays the compilation); steady state = the median
                # of the later epochs' wall time, compared with the reference's wall time per epoch
                _, nll_c, _, history = radar_flow(
                    x,
                    m,
                    x_val,
                    m_val,
                    device=args.device,
                    compile=True,
                    **{**common, "epochs": args.epochs + 1},
                )
                steady = float(np.median(history["epoch_s"][1:]))
                compile_s = history["epoch_s"][0] - steady
                results.append(
                    dict(
                        model="flow MAF 15x128 (compiled)",
                        batch=batch,
                        lr=lr,
                        measure="wall",
                        radar_wall_s_per_epoch=steady,
                        reference_wall_s_per_epoch=ref[0][0],
                        speedup=ref[0][0] / steady,
                        compile_s=compile_s,
                        compiled=history.get("compiled"),
                        radar_val=nll_c,
                        reference_val=ref[1],
                    )
                )
                print(
                    f"flow MAF 15x128 compiled batch {batch:5d}: radar {steady:7.2f} s/epoch (wall, after a "
                    f"{compile_s:.0f} s compilation; compiled: {history.get('compiled')}), reference "
                    f"{ref[0][0]:7.2f} (wall): speed-up {ref[0][0] / steady:.2f}x; val NLL after "
                    f"{args.epochs + 1} epochs {nll_c:.4f} (reference after {args.epochs}: {ref[1]:.4f})",
                    flush=True,
                )

    if not args.skip_classifier:
        rng = np.random.default_rng(args.seed + 1)
        y_all = rng.integers(0, 2, len(x_all))
        # a weak, learnable difference between the classes (CWoLa-like)
        X_all = x_all + (y_all[:, None] * 0.05 * x_all.std(0)) * rng.normal(1.0, 1.0, x_all.shape)
        X, y, X_val, y_val = X_all[n_val:], y_all[n_val:], X_all[:n_val], y_all[:n_val]
        for batch in args.clf_batch_sizes:
            lr = lr_at(args.clf_lr, batch)
            hidden = radar_classifier(
                X[:512],
                y[:512],
                X_val[:128],
                y_val[:128],
                batch=batch,
                epochs=1,
                lr=lr,
                seed=args.seed,
                device=args.device,
            )[2]  # warm-up; the MLP's layer widths
            ref, (t_radar, bce_radar, _) = interleaved(
                partial(
                    reference_classifier_loop,
                    X,
                    y,
                    X_val,
                    y_val,
                    hidden=hidden,
                    batch=batch,
                    epochs=args.epochs,
                    lr=lr,
                    seed=args.seed,
                    device=device,
                ),
                partial(
                    radar_classifier,
                    X,
                    y,
                    X_val,
                    y_val,
                    batch=batch,
                    epochs=args.epochs,
                    lr=lr,
                    seed=args.seed,
                    device=args.device,
                ),
            )
            report(f"MLP {hidden}", batch, lr, ref, (t_radar, bce_radar), "BCE")

    if not args.skip_kfold:
        run_kfold(args, x_all, results, key, measure, interleaved)

    if args.json is not None:
        from radar.processors.io import write_json

        write_json(
            args.json,
            {
                "args": {k: v for k, v in vars(args).items() if k != "json"},
                "device": str(device),
                "results": results,
            },
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

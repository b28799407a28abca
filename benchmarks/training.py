"""Seconds per epoch of radar's trainings against a plain hand-written loop, in one run.

Two trainings are timed, each through radar and through a minimal reference loop with the same model,
batch size, optimiser and data (and, like any loop with early stopping, one validation pass per epoch):

- the CATHODE-size conditional flow (:class:`radar.models.flows.ConditionalFlow`, MAF 15 × 128) on
  ``--events`` events of four features conditioned on m_JJ;
- the CWoLa classifier (:class:`radar.models.classifiers.MLPClassifier`) on the same number of events,
  labels "template" vs "data";
- the k fold classifiers of a CWoLa unit: k sequential MLP fits vs the batched ensemble
  (:func:`radar.models.ensemble.fit_mlp_ensemble`), the same k training sets and seeds (target: ≥ 2×).

For every batch size in ``--batch-sizes`` it prints seconds per epoch, radar's overhead ratio
(radar / reference; target ≤ 1.1) and the final validation loss of both (flow: NLL per event in the
preprocessed space; classifier: weighted BCE), so a faster setting never hides a worse fit.

Data: LHCO-like synthetic events by default; ``--cathode-npy FILE ...`` uses real CATHODE-format
arrays instead (tiled if fewer than ``--events``). Run on demand, e.g.::

    python benchmarks/training.py --events 100000 --epochs 2 --batch-sizes 256 1024 --threads 1
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
from radar.models.flows import ConditionalFlow, build_flow  # noqa: E402
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


# -- flow ----------------------------------------------------------------------------------------------------
def reference_flow_loop(
    z, c, z_val, c_val, *, batch: int, epochs: int, lr: float, seed: int, device: torch.device
) -> tuple[tuple[float, float], float]:
    """Minimal nflows loop: same model, Adam, shuffled batches, a validation pass per epoch."""
    clock = Clock(device)
    torch.manual_seed(seed)
    model = build_flow(z.shape[1]).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    z, c = (
        torch.as_tensor(z, dtype=torch.float32, device=device),
        torch.as_tensor(c, dtype=torch.float32, device=device),
    )
    zv = torch.as_tensor(z_val, dtype=torch.float32, device=device)
    cv = torch.as_tensor(c_val, dtype=torch.float32, device=device)
    val = math.nan
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(z), device=device)
        for i in range(0, len(z), batch):
            idx = perm[i : i + batch]
            if len(idx) < 2:
                continue
            loss = -model.log_prob(z[idx], context=c[idx]).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            val = float(
                torch.cat(
                    [
                        -model.log_prob(zv[i : i + 65536], context=cv[i : i + 65536])
                        for i in range(0, len(zv), 65536)
                    ]
                ).mean()
            )
    return clock.per_epoch(epochs), val


def radar_flow(x, m, x_val, m_val, *, batch: int, epochs: int, lr: float, seed: int, device: str):
    flow = ConditionalFlow(
        x.shape[1],
        batch_size=batch,
        epochs=epochs,
        lr=lr,
        seed=seed,
        device=device,
        patience=epochs + 1,
        n_best_epochs=1,
    )
    clock = Clock(flow.device)
    flow.fit(x, m, x_val, m_val)
    return clock.per_epoch(epochs), flow.history["val_loss"][-1], flow.n_failed


# -- classifier ------------------------------------------------------------------------------------------------
def reference_classifier_loop(
    X, y, X_val, y_val, *, hidden, batch: int, epochs: int, lr: float, seed: int, device: torch.device
) -> tuple[tuple[float, float], float]:
    """Minimal torch loop for the same MLP (ReLU, class-balanced weighted BCE as CWoLa needs, Adam), a
    validation pass per epoch."""
    clock = Clock(device)
    mean, std = X.mean(0), X.std(0)
    xt = torch.as_tensor((X - mean) / std, dtype=torch.float32, device=device)
    yt = torch.as_tensor(y, dtype=torch.float32, device=device)
    xv = torch.as_tensor((X_val - mean) / std, dtype=torch.float32, device=device)
    yv = torch.as_tensor(y_val, dtype=torch.float32, device=device)
    # class-balanced weights: each class sums to N/2
    wt, wv = (
        torch.as_tensor(len(a) / (2.0 * np.bincount(a, minlength=2)[a]), dtype=torch.float32, device=device)
        for a in (y, y_val)
    )
    torch.manual_seed(seed)
    layers, width = [], X.shape[1]
    for h in hidden:
        layers += [torch.nn.Linear(width, h), torch.nn.ReLU()]
        width = h
    model = torch.nn.Sequential(*layers, torch.nn.Linear(width, 1)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = torch.nn.BCEWithLogitsLoss(reduction="none")
    val = math.nan
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(xt), device=device)
        for i in range(0, len(xt), batch):
            idx = perm[i : i + batch]
            wb = wt[idx]
            loss = (loss_fn(model(xt[idx]).squeeze(-1), yt[idx]) * wb).sum() / wb.sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            val = float((loss_fn(model(xv).squeeze(-1), yv) * wv).sum() / wv.sum())
    return clock.per_epoch(epochs), val


def radar_classifier(X, y, X_val, y_val, *, batch: int, epochs: int, lr: float, seed: int, device: str):
    from radar.models.classifiers import MLPClassifier

    clf = MLPClassifier(
        epochs=epochs, batch_size=batch, lr=lr, seed=seed, device=device, patience=epochs + 1, n_best_epochs=1
    )
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
    for batch in args.batch_sizes:
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
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 1024])
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
        "--threads", type=int, default=1, help="torch CPU threads (keep modest on shared machines)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-flow", action="store_true")
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
        ratio = radar_t[key] / ref_t[key]
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
                ratio=ratio,
                wall_ratio=radar_t[0] / ref_t[0],
                radar_val=radar_val,
                reference_val=ref_val,
            )
        )
        print(
            f"{model:22s} batch {batch:5d} lr {lr:.1e}: radar {radar_t[key]:7.2f} s/epoch ({measure}; "
            f"wall {radar_t[0]:.2f}), reference {ref_t[key]:7.2f} ({measure}; wall {ref_t[0]:.2f}), "
            f"ratio {ratio:.3f}; val {loss} radar {radar_val:.4f} reference {ref_val:.4f}",
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
            ref, (t_radar, nll_radar, failed) = interleaved(
                partial(
                    reference_flow_loop,
                    z,
                    c,
                    z_val,
                    c_val,
                    batch=batch,
                    epochs=args.epochs,
                    lr=lr,
                    seed=args.seed,
                    device=device,
                ),
                partial(
                    radar_flow,
                    x,
                    m,
                    x_val,
                    m_val,
                    batch=batch,
                    epochs=args.epochs,
                    lr=lr,
                    seed=args.seed,
                    device=args.device,
                ),
            )
            if failed:
                print(f"  ({failed} radar flow trainings hit a non-finite loss and were restarted)")
            report("flow MAF 15x128", batch, lr, ref, (t_radar, nll_radar), "NLL")

    if not args.skip_classifier:
        rng = np.random.default_rng(args.seed + 1)
        y_all = rng.integers(0, 2, len(x_all))
        # a weak, learnable difference between the classes (CWoLa-like)
        X_all = x_all + (y_all[:, None] * 0.05 * x_all.std(0)) * rng.normal(1.0, 1.0, x_all.shape)
        X, y, X_val, y_val = X_all[n_val:], y_all[n_val:], X_all[:n_val], y_all[:n_val]
        for batch in args.batch_sizes:
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

"""Mixed-precision training against float32, in one run: seconds per epoch and the held-out loss.

For each precision (``fp32``, ``bf16``; ``fp16`` too where a CUDA device is present) the same trainings run
with the same seed, alternating between precisions at every repeat:

- radar's CATHODE-size flow (MAF 15 × 128, radar's default MADE, batch 256, lr 1e-4) on four features
  conditioned on m_JJ: the validation NLL per event (always computed in float32; target: within 0.01 nats
  of float32's);
- the CWoLa MLP (64-64-64, batch 128, lr 1e-3): the validation BCE;
- the k fold MLPs as one batched ensemble (bf16 only; fp16 is refused there): the mean validation BCE.

Mixed precision (``precision: bf16 | fp16`` in a flow's, transport flow's or classifier's settings) is
``torch.autocast`` around the training batches (fp16 with a scaled loss); validation, early stopping and
scoring stay float32. Data: the real LHCO SR events of ``../shared/data/lhco/cathode_sr`` (the flow on
``innerdata_train`` + ``innerdata_extrabkg_test`` background; the classifiers on background against the
extra signal), else LHCO-like synthetic events.

    python benchmarks/precision.py [--events 50000] [--epochs 3] [--repeats 1] [--threads 1] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from training import Clock, kfold_sets, radar_classifier, radar_flow, synthetic_events  # noqa: E402

from radar.models.device import resolve_device  # noqa: E402

CATHODE = REPO.parent / "shared" / "data" / "lhco" / "cathode_sr"


def flow_data(n: int, seed: int):
    """(x, m) of n background events: real SR background where the shared data is present."""
    if (CATHODE / "innerdata_train.npy").exists():
        data = np.concatenate(
            [np.load(CATHODE / f"{name}.npy") for name in ("innerdata_train", "innerdata_extrabkg_test")]
        )
        data = data[data[:, 5] == 0]
        data = np.random.default_rng(seed).permutation(data)[:n]
        return data[:, 1:5] * np.array([1000.0, 1000.0, 1.0, 1.0]), data[:, 0] * 1000.0, "LHCO SR background"
    x, m = synthetic_events(n, seed)
    return x, m, "synthetic"


def classifier_data(n: int, seed: int):
    """(X, y): background (0) against signal (1), half each where the shared data is present."""
    rng = np.random.default_rng(seed)
    if (CATHODE / "innerdata_extrasig.npy").exists():
        bkg = np.concatenate(
            [np.load(CATHODE / f"{name}.npy") for name in ("innerdata_train", "innerdata_extrabkg_test")]
        )
        bkg = bkg[bkg[:, 5] == 0]
        sig = np.load(CATHODE / "innerdata_extrasig.npy")
        half = n // 2
        rows = np.concatenate([rng.permutation(bkg)[:half], rng.permutation(sig)[:half]])
        rows = rng.permutation(rows)
        return rows[:, 1:5], rows[:, 5].astype(np.int64)
    x, _ = synthetic_events(n, seed)
    y = rng.integers(0, 2, n)
    return x + 0.3 * y[:, None] * x.std(0), y


def ensemble(sets, *, batch, epochs, lr, seed, device, precision):
    from radar.models.classifiers import MLPClassifier
    from radar.models.ensemble import fit_mlp_ensemble

    clock = Clock(resolve_device(device))
    fitted = fit_mlp_ensemble(
        [
            MLPClassifier(
                epochs=epochs,
                batch_size=batch,
                lr=lr,
                seed=seed + i,
                device=device,
                patience=epochs + 1,
                precision=precision,
            )
            for i in range(len(sets))
        ],
        sets,
    )
    return clock.per_epoch(epochs), float(np.mean([c.history_["val_loss"][-1] for c in fitted]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--events", type=int, default=50_000, help="events (80 %% training, 20 %% validation)"
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1, help="alternating repeats; the fastest is kept")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k-folds", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    precisions = ["fp32", "bf16"] + (["fp16"] if device.type == "cuda" else [])
    n_train = int(0.8 * args.events)

    x, m, what = flow_data(args.events, args.seed)
    X, y = classifier_data(args.events, args.seed)
    sets = kfold_sets(X[:n_train], y[:n_train], args.k_folds, args.seed)
    common = dict(epochs=args.epochs, seed=args.seed, device=args.device)
    results: dict[str, dict[str, list]] = {}
    for _ in range(max(1, args.repeats)):
        for precision in precisions:
            out = results.setdefault(precision, {"flow": [], "classifier": [], "ensemble": []})
            (wall, cpu), nll, _, _ = radar_flow(
                x[:n_train], m[:n_train], x[n_train:], m[n_train:], batch=256, lr=1e-4, made="nflows",
                precision=precision, **common,
            )  # fmt: skip
            out["flow"].append((wall, cpu, nll))
            (wall, cpu), bce, _ = radar_classifier(
                X[:n_train], y[:n_train], X[n_train:], y[n_train:], batch=128, lr=1e-3, precision=precision,
                **common,
            )  # fmt: skip
            out["classifier"].append((wall, cpu, bce))
            if precision != "fp16":
                (wall, cpu), bce = ensemble(sets, batch=128, lr=1e-3, precision=precision, **common)
                out["ensemble"].append((wall, cpu, bce))

    clock = 0 if device.type == "cuda" else 1  # wall seconds on a GPU, process CPU seconds on a CPU
    print(f"device {device}, {what}, {args.events} events, {args.epochs} epochs, {args.threads} thread(s)")
    print(f"{'training':<12}{'precision':>10}{'s/epoch':>10}{'vs fp32':>9}{'val loss':>12}{'- fp32':>10}")
    summary: dict[str, dict] = {}
    for kind in ("flow", "classifier", "ensemble"):
        base = min(r[clock] for r in results["fp32"][kind])
        base_loss = results["fp32"][kind][0][2]
        for precision in precisions:
            runs = results[precision][kind]
            if not runs:
                continue
            seconds = min(r[clock] for r in runs)
            loss = runs[0][2]
            summary.setdefault(kind, {})[precision] = {
                "s_per_epoch": seconds,
                "speedup_vs_fp32": base / seconds,
                "val_loss": loss,
                "val_loss_minus_fp32": loss - base_loss,
            }
            print(
                f"{kind:<12}{precision:>10}{seconds:>10.3f}{base / seconds:>8.2f}x{loss:>12.5f}"
                f"{loss - base_loss:>+10.5f}"
            )
    if args.json:
        args.json.write_text(json.dumps({"device": str(device), "data": what, "results": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

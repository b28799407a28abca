"""The autoencoder's complexity bias, reproduced and cured by the normalized autoencoder (run on demand).

Jet images (:mod:`radar.processors.images`, both leading jets as two channels) of QCD and of a resonance
signal (the R&D point Z' 3.5 TeV -> X(500) Y(100) with X, Y -> qq, and the ``--three-prong-y`` variant). For
each signal and each model (AE, NAE) two trainings:

- trained on QCD, the signal is the anomaly: AUC(signal vs QCD) of the energy;
- trained on the signal, QCD is the anomaly: AUC(QCD vs signal).

The complexity bias (Finke et al., arXiv:2104.09051): the AE's second AUC falls to or below 0.5 (QCD jets are
"simpler", so they reconstruct well whatever the AE learnt). The NAE should be well above 0.5 both ways
(Dillon et al., arXiv:2206.14225). Held-out events only are scored. Writes ``OUT/complexity_bias.json``,
``OUT/complexity_bias.md`` and ``OUT/jet_images.png`` (average images, and the worst-reconstructed QCD events).

    python benchmarks/complexity_bias.py --qcd img_qcd.h5 --signal two=img_sig2.h5 three=img_sig3.h5 -o runs/ae
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("complexity_bias")


def auc(y: np.ndarray, s: np.ndarray) -> float:
    from radar.analysis.metrics import auc as weighted_auc

    return float(weighted_auc(y, s))


def split(n: int, n_train: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    order = rng.permutation(n)
    return order[:n_train], order[n_train:]


def run(
    images: dict[str, np.ndarray], n_train: int, n_test: int, settings: dict, seed: int, n_worst: int = 4
) -> tuple[dict, dict]:
    """AUCs per (signal, model) and direction; and, per model trained on QCD against the first signal,
    the ``n_worst`` worst-reconstructed held-out events (QCD and signal together) with their
    reconstructions."""
    from radar.models.autoencoder import Autoencoder

    rng = np.random.default_rng(seed)
    parts = {name: split(len(x), min(n_train, len(x) // 2), rng) for name, x in images.items()}
    results: dict[str, dict] = {}
    worst: dict[str, dict] = {}
    for signal in [k for k in images if k != "qcd"]:
        for model in ("ae", "nae"):
            row = {}
            for trained_on, anomaly in (("qcd", signal), (signal, "qcd")):
                train_idx = parts[trained_on][0]
                t0 = time.perf_counter()
                ae = Autoencoder(nae=model == "nae", seed=seed, **settings[model]).fit(
                    images[trained_on][train_idx]
                )
                seconds = time.perf_counter() - t0
                normal = images[trained_on][parts[trained_on][1][:n_test]]
                odd = images[anomaly][parts[anomaly][1][:n_test]]
                scores = np.concatenate([ae.score(normal), ae.score(odd)])
                y = np.r_[np.zeros(len(normal)), np.ones(len(odd))]
                if trained_on == "qcd" and model not in worst:
                    top = np.argsort(scores)[::-1][:n_worst]
                    events = np.concatenate([normal, odd])[top]
                    worst[model] = {
                        "images": ae.seen(events),  # smoothed where the model smooths its inputs
                        "reconstructions": ae.reconstruct(events),
                        "labels": [("QCD", signal)[int(v)] for v in y[top]],
                        "energies": scores[top],
                        "quantiles": [float((scores < v).mean()) for v in scores[top]],
                    }
                row[f"trained_on_{'qcd' if trained_on == 'qcd' else 'signal'}"] = {
                    "auc": auc(y, scores),
                    "n_train": int(len(train_idx)),
                    "n_test": [int(len(normal)), int(len(odd))],
                    "seconds": seconds,
                }
                log.info(
                    "%s %s trained on %s: AUC %.3f (%.0f s)",
                    signal,
                    model,
                    trained_on,
                    row[list(row)[-1]]["auc"],
                    seconds,
                )
            results[f"{signal} {model}"] = row
    return results, worst


def worst_figure(worst: dict[str, dict], out: Path) -> Path:
    """The worst-reconstructed held-out events of the models trained on QCD: both jets, the model's input
    (smoothed images where it smooths them) and its reconstruction, log10 of the pT fraction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(model, i) for model, w in worst.items() for i in range(len(w["labels"]))]
    fig, axes = plt.subplots(len(rows), 4, figsize=(8, 2.1 * len(rows)), squeeze=False)
    for r, (model, i) in enumerate(rows):
        w = worst[model]
        panels = [
            (w["images"][i, 0], "J1"),
            (w["reconstructions"][i, 0], "J1 reco"),
            (w["images"][i, 1], "J2"),
            (w["reconstructions"][i, 1], "J2 reco"),
        ]
        for c, (image, title) in enumerate(panels):
            axes[r, c].imshow(np.log10(np.clip(image, 0, None) + 1e-4), vmin=-4, vmax=0, cmap="viridis")
            axes[r, c].set_title(title, fontsize=7)
            axes[r, c].axis("off")
        axes[r, 0].text(
            -0.15,
            0.5,
            f"{model.upper()} #{i + 1}\n{w['labels'][i]}\nE = {w['energies'][i]:.3g}",
            transform=axes[r, 0].transAxes,
            ha="right",
            va="center",
            fontsize=7,
        )
    title = "Worst-reconstructed held-out events, models trained on QCD (log10 pT fraction)"
    return _save(fig, title, out / "worst_reconstructed.png", dpi=80)


def _save(fig, title: str, path: Path, dpi: int) -> Path:
    import matplotlib.pyplot as plt

    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def figure(images: dict[str, np.ndarray], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(images)
    fig, axes = plt.subplots(len(names), 2, figsize=(7, 3.3 * len(names)), squeeze=False)
    for i, name in enumerate(names):
        for j, jet in enumerate(("J1 (lighter)", "J2 (heavier)")):
            mean = images[name][:, j].mean(0)
            axes[i, j].imshow(np.log10(mean + 1e-6), vmin=-5, vmax=0, cmap="viridis")
            pixels = images[name].shape[-1]
            axes[i, j].set_title(f"{name}: {jet}, {pixels} x {pixels}", fontsize=8)
            axes[i, j].axis("off")
    return _save(fig, "Average jet images, log10 of the mean pT fraction", out / "jet_images.png", dpi=70)


def real_images(path: Path | None) -> dict[str, np.ndarray]:
    """The images of a labelled file split into background and signal (empty without a file)."""
    if path is None:
        return {}
    from radar.processors.images import ImageFile

    file = ImageFile(path)
    x, label = file.read(), file.read(what="label")
    log.info("%s: %d real events (%d signal) for the figure", path, len(x), int((label == 1).sum()))
    return {
        f"real background ({(label == 0).sum()})": x[label == 0],
        f"real signal ({(label == 1).sum()})": x[label == 1],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--qcd", type=Path, required=True)
    parser.add_argument("--signal", nargs="+", required=True, help="NAME=IMAGES.h5")
    parser.add_argument("-o", "--output", type=Path, default=Path("runs/complexity_bias"))
    parser.add_argument("--n-train", type=int, default=8000)
    parser.add_argument("--n-test", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ae-epochs", type=int, default=15)
    parser.add_argument("--nae-epochs", type=int, default=4)
    parser.add_argument(
        "--ae-settings",
        type=json.loads,
        default={},
        help="JSON of further Autoencoder settings (both models)",
    )
    parser.add_argument(
        "--nae-settings", type=json.loads, default={}, help="JSON of further Autoencoder settings (NAE only)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument(
        "--real",
        type=Path,
        help="images of real events with labels (e.g. radar images on the LHCO R&D raw file): shown in the "
        "average-image figure, split by label, not trained on",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    import torch

    from radar.processors.images import ImageFile

    torch.set_num_threads(args.threads)
    images = {"qcd": ImageFile(args.qcd).read()}
    for item in args.signal:
        name, path = item.split("=", 1)
        images[name] = ImageFile(path).read()
    settings = {
        "ae": {"epochs": args.ae_epochs, **args.ae_settings},
        "nae": {
            "epochs": args.nae_epochs,
            "pretrain_epochs": args.ae_epochs,
            **args.ae_settings,
            **args.nae_settings,
        },
    }
    args.output.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    results, worst = run(images, args.n_train, args.n_test, settings, args.seed)
    report = {
        "inputs": {"qcd": str(args.qcd), "signals": args.signal},
        "settings": settings,
        "n_train": args.n_train,
        "n_test": args.n_test,
        "results": results,
        "seconds": time.perf_counter() - t0,
        "figure": str(figure({**images, **real_images(args.real)}, args.output)),
        "worst_figure": str(worst_figure(worst, args.output)),
        "worst": {m: {"labels": w["labels"], "energy_quantiles": w["quantiles"]} for m, w in worst.items()},
    }
    (args.output / "complexity_bias.json").write_text(json.dumps(report, indent=1))
    lines = [
        "| signal, model | AUC trained on QCD (signal = anomaly) | AUC trained on signal (QCD = anomaly) |",
        "|---|---|---|",
    ]
    for key, row in results.items():
        lines.append(
            f"| {key} | {row['trained_on_qcd']['auc']:.3f} | {row['trained_on_signal']['auc']:.3f} |"
        )
    text = "\n".join(lines)
    (args.output / "complexity_bias.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

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


def run(images: dict[str, np.ndarray], n_train: int, n_test: int, settings: dict, seed: int) -> dict:
    from radar.models.autoencoder import Autoencoder

    rng = np.random.default_rng(seed)
    parts = {name: split(len(x), min(n_train, len(x) // 2), rng) for name, x in images.items()}
    results: dict[str, dict] = {}
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
    return results


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
            axes[i, j].set_title(f"{name}: {jet}, log10 mean pT fraction", fontsize=8)
            axes[i, j].axis("off")
    fig.tight_layout()
    path = out / "jet_images.png"
    fig.savefig(path, dpi=70)
    plt.close(fig)
    return path


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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from radar.processors.images import ImageFile

    images = {"qcd": ImageFile(args.qcd).read()}
    for item in args.signal:
        name, path = item.split("=", 1)
        images[name] = ImageFile(path).read()
    settings = {
        "ae": {"epochs": args.ae_epochs},
        "nae": {
            "epochs": args.nae_epochs,
            "pretrain_epochs": args.ae_epochs,
            "latent_steps": 10,
            "x_steps": 10,
        },
    }
    args.output.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    results = run(images, args.n_train, args.n_test, settings, args.seed)
    report = {
        "inputs": {"qcd": str(args.qcd), "signals": args.signal},
        "settings": settings,
        "n_train": args.n_train,
        "n_test": args.n_test,
        "results": results,
        "seconds": time.perf_counter() - t0,
        "figure": str(figure(images, args.output)),
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

"""Idealized AD and supervised classifiers on the real LHCO R&D signal-region data (CATHODE arrays).

Data (``../shared/data/lhco/cathode_sr`` next to the repo, or ``--data``):
- SR data = innerdata_train + innerdata_test: 121,352 background + the standard 772 SR signal;
- test set = innerdata_extrabkg_test (40k background + 20k signal), never used in training;
- innerdata_extrasig: the signal pool for supervised training and for the injection scan, less the 20,000
  signal events of the test set that it also contains (dropped: never train on test events).

Studies (features mj1, delta_mj, tau21_j1, tau21_j2; 5-fold out-of-fold training as in the interplay
paper, test-set scores = mean of the 5 fold models):
1. IAD at the standard injection: the SR background is split once at random (seed 0) into two halves
   of 60,676 events: half A is the perfect background template (label 0), half B + the 772 signal is
   the "data" (label 1). Seeds vary the classifier (folds, initialisation / tree seeds).
2. Supervised: all 121,352 SR background (label 0) vs the 54,527 extra signal not in the test set (label 1).
3. IAD injection scan: half A vs half B + n_sig signal drawn from extrasig (n_sig = 750, 550, 400,
   250, 150, 100, 0); seeds vary both the drawn signal events and the classifier.

Reports max SIC (FPR floor 1/(0.4^2 N_bkg,test) = 1.56e-4) and SIC at background rejection 1000 on the
test set: median and 16-84 % band over seeds, as JSON and Markdown in ``--out``.

Run (about 1 core; HGB is the default because the MLP is slow on shared CPUs):
    nice python benchmarks/iad_real_data.py --seeds 5 --classifier hgb --out runs/iad_real_data
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import pandas as pd

from radar.analysis.cwola import kfold_scores
from radar.analysis.datasets import (
    drop_shared_events,
    feature_matrix,
    half_split,
    inject_signal,
    load_cathode_sr,
)
from radar.analysis.metrics import classifier_metrics, markdown_table, summarise
from radar.processors.features import LHCO_FEATURES
from radar.processors.io import write_json

log = logging.getLogger("iad_real_data")
REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "lhco" / "cathode_sr"
REFERENCE = {"iad": 14.0, "supervised": 17.0}


def _run(X0, X1, test_X, test_y, args, seed):
    t0 = time.perf_counter()
    result = kfold_scores(
        X0, X1, classifier=args.classifier, k_folds=args.k_folds, seed=seed, X_mean=test_X, **args.clf_kwargs
    )
    metrics = classifier_metrics(test_y, result.scores_mean, rejection=1000.0)
    metrics["seconds"] = time.perf_counter() - t0
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=Path("runs/iad_real_data"))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--first-seed", type=int, default=0, help="seeds are first-seed .. first-seed+seeds-1"
    )
    parser.add_argument("--classifier", default="hgb", choices=["hgb", "mlp"])
    parser.add_argument("--k-folds", type=int, default=5)
    parser.add_argument("--hgb-models", type=int, default=5, help="HGB models per fold")
    parser.add_argument("--mlp-epochs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--scan", type=int, nargs="*", default=[750, 550, 400, 250, 150, 100, 0])
    parser.add_argument("--studies", nargs="*", default=["iad", "supervised", "scan"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.classifier == "hgb":
        args.clf_kwargs = {"n_models": args.hgb_models, "n_threads": args.threads}
    else:
        import torch

        torch.set_num_threads(args.threads)
        args.clf_kwargs = {"epochs": args.mlp_epochs}

    tables = load_cathode_sr(args.data)
    data, extrasig, test = tables["data"], tables["extrasig"], tables["test"]
    # the test set's 20,000 signal events are also in extrasig: never train (or inject) them
    extrasig = drop_shared_events(extrasig, test, "innerdata_extrasig")
    features = list(LHCO_FEATURES)
    bkg = data[data["label"] == 0].reset_index(drop=True)
    sig772 = data[data["label"] == 1].reset_index(drop=True)
    half_a, half_b = half_split(bkg, seed=0)
    test_X, test_y = feature_matrix(test, features, "test"), test["label"].to_numpy().astype(int)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    out: dict = {
        "setup": {
            "classifier": args.classifier,
            "clf_kwargs": args.clf_kwargs,
            "k_folds": args.k_folds,
            "features": features,
            "seeds": seeds,
            "n_sr_background": len(bkg),
            "n_sr_signal_standard": len(sig772),
            "iad_template": len(half_a),
            "iad_data_background": len(half_b),
            "n_extrasig": len(extrasig),
            "test": {"background": int((test_y == 0).sum()), "signal": int((test_y == 1).sum())},
            "fpr_floor": 1.0 / (0.4**2 * (test_y == 0).sum()),
        },
        "runs": {},
    }
    args.out.mkdir(parents=True, exist_ok=True)

    def record(key, seed, metrics):
        out["runs"].setdefault(key, []).append({"seed": seed, **metrics})
        log.info(
            "%s seed %d: max SIC %.2f, SIC@1000 %.2f, AUC %.3f (%.0f s)",
            key,
            seed,
            metrics["max_sic"],
            metrics["sic_at_rejection"],
            metrics["auc"],
            metrics["seconds"],
        )
        write_json(args.out / "iad_real_data.json", out)

    XA = feature_matrix(half_a, features)
    if "iad" in args.studies:
        X1 = feature_matrix(pd.concat([half_b, sig772], ignore_index=True), features)
        for seed in seeds:
            record("iad_772", seed, _run(XA, X1, test_X, test_y, args, seed))
    if "supervised" in args.studies:
        X0, X1 = feature_matrix(bkg, features), feature_matrix(extrasig, features)
        for seed in seeds:
            record("supervised", seed, _run(X0, X1, test_X, test_y, args, seed))
    if "scan" in args.studies:
        for n_sig in args.scan:
            for seed in seeds:
                injected = inject_signal(half_b, extrasig, n_sig=n_sig, seed=1000 + seed)
                X1 = feature_matrix(injected.table, features)
                metrics = _run(XA, X1, test_X, test_y, args, seed)
                metrics["n_sig_sr"] = injected.n_sig_sr
                metrics["s_over_b_sr"] = n_sig / len(half_b)
                record(f"iad_scan_{n_sig}", seed, metrics)

    rows = []
    for key, runs in out["runs"].items():
        row = {"study": key, "n_seeds": len(runs)}
        for metric in ("max_sic", "sic_at_rejection", "auc"):
            s = summarise(r[metric] for r in runs)
            row[metric] = f"{s['median']:.2f} [{s['p16']:.2f}, {s['p84']:.2f}]"
        ref = REFERENCE.get("supervised" if key == "supervised" else "iad")
        row["reference_max_sic"] = ref if key in ("iad_772", "supervised") else ""
        rows.append(row)
    out["summary"] = rows
    write_json(args.out / "iad_real_data.json", out)
    (args.out / "iad_real_data.md").write_text(markdown_table(rows))
    print(markdown_table(rows))  # noqa: T201 - benchmark script output
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The look-elsewhere calibration of ``radar scan`` INCLUDING retraining: blind scans of independent
background-only datasets, their maximum local Z against what the scan's own toys (which do not retrain)
predict, and their global p-values (uniform if the global significance is right).

Each DATA file is one background-only dataset (e.g. the surrogate draws ``runs/null_chain*/null_*/data.parquet``
of benchmarks/null_chain.py, or ``radar process`` output of independent generator seeds). Every one is scanned
with the same settings (``radar scan`` defaults unless given); a rerun resumes finished scans.

    python benchmarks/scan_null.py runs/null_chain_perfold/null_*/data.parquet --output runs/scan_null \\
        --methods cwola_hunting --toys 100

Writes ``OUT/summary.md`` / ``OUT/summary.json``: per scan the best window, its local Z and global p; over
scans the mean of the maximum local Z against the toys' mean, the fraction of scans above the toys' 50 % and
90 % quantiles of the maximum (expected 50 % and 10 %), the fraction with local Z > 3 and with global p < 0.05.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

log = logging.getLogger("benchmarks.scan_null")


def main(argv: list[str] | None = None) -> int:
    from radar.analysis.blindscan import ScanSettings, run_scan
    from radar.processors.io import write_json

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="+", type=Path, help="background-only feature tables, one per scan")
    parser.add_argument("--output", type=Path, default=Path("runs/scan_null"))
    parser.add_argument("--methods", default="cwola_hunting")
    parser.add_argument("--width", type=float, default=400.0)
    parser.add_argument("--step", type=float, default=200.0)
    parser.add_argument("--sideband", type=float, default=1000.0)
    parser.add_argument("--working-points", default="1,0.2,0.05,0.01")
    parser.add_argument("--toys", type=int, default=100)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument(
        "--flow", default='{"epochs": 30, "n_blocks": 4, "hidden": 64, "batch_size": 1024, "lr": 0.0004}'
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    search = {"flow": json.loads(args.flow), "execution": {"workers": args.workers}}
    rows = []
    for i, path in enumerate(args.data):
        out = args.output / f"scan_{i:02d}"
        settings = ScanSettings(
            methods=tuple(args.methods.split(",")),
            width=args.width,
            step=args.step,
            sideband=args.sideband,
            toys=args.toys,
            toy_seed=i,
            figures=False,
            working_points=tuple(float(v) for v in args.working_points.split(",")),
            search=search,
        )
        t0 = time.perf_counter()
        done = (out / "scan.json").exists()
        scan = (
            json.loads((out / "scan.json").read_text())
            if done
            else run_scan([path], out, settings, resume=(out / "scan_manifest.json").exists(), progress=False)
        )
        best, glob = scan.get("best") or {}, scan.get("global") or {}
        rows.append(
            {
                "data": str(path),
                "best_sr": best.get("sr"),
                "best_method": best.get("method"),
                "local_z": best.get("local_z"),
                "global_p": glob.get("p_global"),
                "global_method": glob.get("method"),
                "toys_max_z": (scan.get("toys") or {}).get("max_z", []),
                "n_failed_windows": scan.get("n_failed_windows"),
                "seconds": scan.get("seconds"),
                "timing": scan.get("timing"),
            }
        )
        log.info(
            "scan %d (%s): best %s local Z %s, global p %s (%.0f s)",
            i,
            path,
            best.get("sr"),
            best.get("local_z"),
            glob.get("p_global"),
            time.perf_counter() - t0,
        )
    z = np.array([r["local_z"] if r["local_z"] is not None else np.nan for r in rows], float)
    toys = np.concatenate([np.asarray(r["toys_max_z"], float) for r in rows] or [np.zeros(0)])
    p = np.array([r["global_p"] if r["global_p"] is not None else np.nan for r in rows], float)
    q50, q90 = np.quantile(toys, [0.5, 0.9]) if toys.size else (np.nan, np.nan)
    summary = {
        "n_scans": len(rows),
        "methods": args.methods,
        "max_local_z_mean": float(np.nanmean(z)),
        "max_local_z_std": float(np.nanstd(z)),
        "toys_max_z_mean": float(toys.mean()) if toys.size else None,
        "toys_max_z_std": float(toys.std()) if toys.size else None,
        "toys_q50": float(q50),
        "toys_q90": float(q90),
        "fraction_above_toys_q50": float(np.nanmean(z > q50)),
        "fraction_above_toys_q90": float(np.nanmean(z > q90)),
        "n_local_z_above_3": int(np.nansum(z > 3)),
        "n_global_p_below_0.05": int(np.nansum(p < 0.05)),
        "rows": rows,
    }
    write_json(args.output / "summary.json", summary)
    lines = [
        "# Blind scans of background-only datasets (benchmarks/scan_null.py)",
        "",
        f"{len(rows)} scans, methods {args.methods}, {args.width:g} GeV windows every {args.step:g} GeV, "
        f"{args.toys} toys each.",
        "",
        "| | scans (retrained) | toys (no retraining) |",
        "|---|---|---|",
        f"| max local Z: mean ± std | {summary['max_local_z_mean']:.2f} ± {summary['max_local_z_std']:.2f} | "
        f"{summary['toys_max_z_mean']:.2f} ± {summary['toys_max_z_std']:.2f} |",
        f"| fraction above the toys' median max Z ({q50:.2f}) | {summary['fraction_above_toys_q50']:.2f} | 0.50 |",
        f"| fraction above the toys' 90 % quantile ({q90:.2f}) | {summary['fraction_above_toys_q90']:.2f} | 0.10 |",
        f"| scans with max local Z > 3 | {summary['n_local_z_above_3']} / {len(rows)} | |",
        f"| scans with global p < 0.05 | {summary['n_global_p_below_0.05']} / {len(rows)} | "
        f"{0.05 * len(rows):.1f} expected |",
        "",
        "| dataset | best SR [GeV] | method | local Z | global p | wall time [s] |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        sr = "—" if not r["best_sr"] else f"{r['best_sr'][0]:.0f}–{r['best_sr'][1]:.0f}"
        lines.append(
            f"| {r['data']} | {sr} | {r['best_method']} | "
            f"{'—' if r['local_z'] is None else format(r['local_z'], '.2f')} | "
            f"{'—' if r['global_p'] is None else format(r['global_p'], '.3g')} | {r['seconds']:.0f} |"
        )
    (args.output / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Wall time of a blind scan, cold against warm-started flows (``radar scan --warm-start``), on one
background-only sample — and the zero-signal checks of both: every window's local Z per working point and the
template-vs-SR-data AUC of the flow method (0.5 when the template is the background).

The sample is drawn from the smooth surrogate of the real LHCO background (benchmarks/null_surrogate.py), so it
holds no signal: a warm start that carried events into a template would show as a template-vs-data AUC or a
local Z above the cold scan's. Both scans run with the same settings, one after the other, on the same
cores; the ratio cold / warm is measured in this run.

    python benchmarks/null_surrogate.py --fit runs/null_surrogate              # once
    python benchmarks/scan_warm.py --surrogate runs/null_surrogate --events 500000 --output runs/scan_warm
    # the warm start's sensitivity: the same with the real R&D signal injected (blind: no labels written)
    python benchmarks/scan_warm.py --surrogate runs/null_surrogate --events 500000 --output runs/scan_warm_sig \
        --signal ../shared/data/lhco/peer_reclustering --n-signal 1000

Writes ``OUT/summary.json`` and ``OUT/summary.md`` (per mode: wall time, unit seconds per method, windows
warm-started; per window: local Z and AUC cold vs warm).
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

log = logging.getLogger("benchmarks.scan_warm")


def _window_metrics(out: Path, method: str) -> dict[str, dict]:
    """Per window tag: the unit's template-vs-SR-data AUC, its null sigma and seconds (seed 0)."""
    from radar.analysis.rundir import unit_dir

    rows = {}
    for run in sorted((out / "windows").glob("sr_*")):
        path = unit_dir(run, method, None, 0) / "metrics.json"
        if path.exists():
            m = json.loads(path.read_text())
            rows[run.name] = {
                "auc": m.get("classification_auc"),
                "auc_sigma": m.get("classification_auc_null_sigma"),
                "seconds": m.get("seconds"),
                "warm_started_folds": m.get("warm_started_folds", 0),
            }
    return rows


def main(argv: list[str] | None = None) -> int:
    from benchmarks.null_surrogate import Surrogate
    from radar.analysis.blindscan import ScanSettings, run_scan
    from radar.processors.features import write_feature_table
    from radar.processors.io import write_json

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--surrogate", type=Path, required=True, help="a saved null surrogate")
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--draw-range", type=float, nargs=2, default=(2300.0, 6500.0), metavar=("LO", "HI"))
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("runs/scan_warm"))
    parser.add_argument("--methods", default="cathode,cwola_hunting")
    parser.add_argument("--flow", default='{"epochs": 30, "n_blocks": 4, "hidden": 64}', help="JSON")
    parser.add_argument("--warm-epochs", type=int, default=None, help="default: a third of the epochs")
    parser.add_argument("--warm-direction", default="down", choices=("down", "up"))
    parser.add_argument("--modes", default="cold,warm")
    parser.add_argument("--toys", type=int, default=50)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument(
        "--signal",
        type=Path,
        default=None,
        help="a feature table (or the peer-reclustering directory: its label-1 events) to inject from",
    )
    parser.add_argument(
        "--n-signal", type=int, default=0, help="signal events injected (inside --draw-range)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    args.output.mkdir(parents=True, exist_ok=True)
    data = args.output / "data.parquet"
    if not data.exists():
        table = Surrogate.load(args.surrogate).draw(
            args.events, seed=args.data_seed, mjj_range=tuple(args.draw_range)
        )
        if args.n_signal:
            table = _with_signal(table, args)
        write_feature_table(table.drop(columns=["label"], errors="ignore"), data)
    methods = tuple(m for m in args.methods.split(",") if m)
    flow_method = next((m for m in methods if m in ("cathode", "lacathode")), None)
    search = {
        "flow": json.loads(args.flow),
        "classifier": {"settings": {"n_models": 3}},
        "execution": {"workers": args.workers} if args.workers else {},
    }
    summary: dict = {
        "events": args.events,
        "draw_range": list(args.draw_range),
        "n_signal": args.n_signal,
        "signal": None if args.signal is None else str(args.signal),
        "modes": {},
    }
    for mode in [m for m in args.modes.split(",") if m]:
        settings = ScanSettings(
            methods=methods,
            warm_start=mode == "warm",
            warm_direction=args.warm_direction,
            warm_epochs=args.warm_epochs,
            toys=args.toys,
            figures=False,
            search=search,
        )
        t0 = time.perf_counter()
        scan = run_scan([data], args.output / mode, settings, resume=True, progress=True)
        wall = time.perf_counter() - t0
        windows = {
            w["tag"]: {
                m: None
                if w["methods"].get(m, {}).get("working_points") is None
                else {
                    f"{wp['efficiency']:g}": round(wp["z_local"], 3) if wp["usable"] else None
                    for wp in w["methods"][m]["working_points"]
                }
                for m in methods
            }
            for w in scan["windows"]
            if w["status"] in ("ok", "partial")
        }
        summary["modes"][mode] = {
            "wall_seconds": wall,
            "scan_seconds": scan["seconds"],
            "timing": scan["timing"],
            "best": scan["best"],
            "global_z": (scan.get("global") or {}).get("z_global"),
            "windows": windows,
            "flow_units": _window_metrics(args.output / mode, flow_method) if flow_method else {},
        }
        log.info("%s scan: %.0f s wall", mode, wall)
    write_json(args.output / "summary.json", summary)
    (args.output / "summary.md").write_text(_markdown(summary, methods, flow_method))
    print((args.output / "summary.md").read_text())
    return 0


def _with_signal(table, args):
    """``table`` (the surrogate's background) plus ``--n-signal`` events drawn (seed ``--data-seed``) from the
    label-1 events of ``--signal`` inside ``--draw-range``; the data stay blind (no labels are written)."""
    import pandas as pd

    from radar.analysis.preparation import signal_pool
    from radar.processors.features import read_feature_table

    if args.signal is None:
        raise SystemExit("--n-signal needs --signal (a feature table or the peer-reclustering directory)")
    pool = signal_pool(read_feature_table(args.signal), str(args.signal))
    lo, hi = args.draw_range
    pool = pool[(pool["mjj"] >= lo) & (pool["mjj"] < hi)].reset_index(drop=True)
    if args.n_signal > len(pool):
        raise SystemExit(
            f"--n-signal {args.n_signal}: {args.signal} has {len(pool)} signal events in the range"
        )
    rows = np.random.default_rng([args.data_seed, 17]).choice(len(pool), args.n_signal, replace=False)
    signal = pool.iloc[rows][list(table.columns.intersection(pool.columns))]
    log.info("injected %d signal events (m_JJ median %.0f GeV)", len(signal), float(signal["mjj"].median()))
    return pd.concat([table, signal], ignore_index=True)


def _markdown(summary: dict, methods: tuple[str, ...], flow_method: str | None) -> str:
    modes = summary["modes"]
    what = (
        f"{summary['events']} background events + {summary['n_signal']} signal events from {summary['signal']}"
        if summary.get("n_signal")
        else f"{summary['events']} background-only events"
    )
    lines = [
        f"# Blind scan, cold vs warm-started flows ({what})",
        "",
        "| mode | wall s | " + " | ".join(f"{m} unit s" for m in methods) + " | warm windows | max local Z |",
        "|---|---|" + "---|" * len(methods) + "---|---|",
    ]
    for mode, s in modes.items():
        t = s["timing"]
        warm = len(t.get(flow_method, {}).get("warm_started_windows", [])) if flow_method else 0
        best = s["best"] or {}
        lines.append(
            f"| {mode} | {s['wall_seconds']:.0f} | "
            + " | ".join(f"{t.get(m, {}).get('total', float('nan')):.0f}" for m in methods)
            + f" | {warm} | {best.get('local_z', float('nan')):.2f} |"
        )
    if "cold" in modes and "warm" in modes:
        c, w = modes["cold"], modes["warm"]
        lines += ["", f"Ratio cold / warm wall time: {c['wall_seconds'] / w['wall_seconds']:.2f}"]
        if flow_method:
            ct, wt = c["timing"][flow_method]["total"], w["timing"][flow_method]["total"]
            lines.append(f"Ratio cold / warm {flow_method} unit time: {ct / wt:.2f}")
            lines += [
                "",
                f"| window | {flow_method} AUC cold | warm | warm-started | local Z cold (1/0.2/0.05/0.01) | warm |",
                "|---|---|---|---|---|---|",
            ]
            for tag in sorted(c["flow_units"]):
                cu, wu = c["flow_units"][tag], w["flow_units"].get(tag, {})
                zc = (c["windows"].get(tag) or {}).get(flow_method) or {}
                zw = (w["windows"].get(tag) or {}).get(flow_method) or {}
                lines.append(
                    f"| {tag} | {_f(cu.get('auc'))} | {_f(wu.get('auc'))} | "
                    f"{'yes' if wu.get('warm_started_folds') else 'no'} | "
                    f"{' / '.join(_f(v, 2) for v in zc.values())} | {' / '.join(_f(v, 2) for v in zw.values())} |"
                )
            diffs = [
                w["flow_units"][t]["auc"] - c["flow_units"][t]["auc"]
                for t in c["flow_units"]
                if t in w["flow_units"] and w["flow_units"][t].get("warm_started_folds")
            ]
            if diffs:
                lines.append(
                    f"\nWarm-started windows: AUC warm - cold mean {np.mean(diffs):+.4f}, "
                    f"max {np.max(diffs):+.4f} ({len(diffs)} windows)"
                )
    return "\n".join(lines) + "\n"


def _f(v, digits: int = 3) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


if __name__ == "__main__":
    sys.exit(main())

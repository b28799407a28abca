"""``radar scan DATA [DATA ...] -o OUT``: the blind search — slide the SR across m_JJ, retrain every method per
window, bump-hunt each window, and report the most significant window with its global significance."""

from __future__ import annotations

import argparse


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from error


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from error
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"seeds are non-negative integers, got {text!r}")
    return values


def register(subparsers) -> None:
    from radar.analysis.blindscan import DEFAULT_METHODS, ScanSettings

    d = ScanSettings()
    parser = subparsers.add_parser(
        "scan",
        help="blind search: slide the SR over m_JJ, retrain per window, local and global significance",
        description="For every SR window across m_JJ: the full search (its own sidebands, templates, out-of-fold "
        "classifier scores) and its own bump hunt; then the most significant window and its global "
        "significance (background-only toys of the whole scan, Gross-Vitells beyond their reach). "
        "Writes OUT/scan.json, OUT/report.md, OUT/figures/ and one search run per window in "
        "OUT/windows/.",
    )
    parser.add_argument(
        "data",
        nargs="+",
        help="feature tables (parquet, LHCO feature HDF5, CATHODE .npy) or event "
        "files (ROOT, LHCO raw HDF5: processed first into OUT/features/)",
    )
    parser.add_argument("-o", "--output", required=True, help="output directory")
    parser.add_argument(
        "--methods",
        type=_names,
        default=list(DEFAULT_METHODS),
        help=f"comma-separated radar search methods (default {','.join(DEFAULT_METHODS)})",
    )
    parser.add_argument("--classifier", default=d.classifier, help=f"mlp or hgb (default {d.classifier})")
    parser.add_argument(
        "--seeds",
        type=_ints,
        default=list(d.seeds),
        help="comma-separated training seeds "
        "(several: each window's score is the mean of the seeds' out-of-fold scores)",
    )
    parser.add_argument(
        "--mjj-range",
        nargs=2,
        type=float,
        metavar=("LOW", "HIGH"),
        help="m_JJ range of the scan in GeV (default: from the data, above the trigger turn-on)",
    )
    parser.add_argument("--width", type=float, default=d.width, help=f"SR width in GeV (default {d.width:g})")
    parser.add_argument(
        "--step",
        type=float,
        default=d.step,
        help=f"step between windows in GeV (default {d.step:g}; below --width: overlapping windows)",
    )
    parser.add_argument(
        "--sideband",
        type=float,
        default=d.sideband,
        help=f"sideband on each side of a window in GeV: templates train and the fit runs over "
        f"SR ± sideband (default {d.sideband:g})",
    )
    parser.add_argument(
        "--min-sideband",
        type=float,
        default=d.min_sideband,
        help=f"shortest sideband at the edges of the scan range in GeV (default {d.min_sideband:g})",
    )
    parser.add_argument(
        "--bin-width", type=float, default=d.bin_width, help="m_JJ bin width in GeV (default 100)"
    )
    parser.add_argument(
        "--working-points",
        type=_floats,
        default=list(d.working_points),
        help="comma-separated SR efficiencies of the score cuts (default 1,0.2,0.05,0.01)",
    )
    parser.add_argument(
        "--warm-start",
        action="store_true",
        help="start each window's flows (cathode, lacathode) from those of the nearest window whose "
        "training range does not overlap this window's (no shared event); fewer epochs",
    )
    parser.add_argument(
        "--warm-direction",
        choices=("down", "up"),
        default=d.warm_direction,
        help="where a window's source lies: down = above it (the scan trains from high to low m_JJ, so the "
        "low-mass windows, which hold most events, start warm; default), up = below it",
    )
    parser.add_argument(
        "--warm-epochs",
        type=int,
        help="epochs of a warm-started flow (default: a third of the flow's epochs)",
    )
    parser.add_argument("--toys", type=int, default=d.toys, help=f"background-only toys (default {d.toys})")
    parser.add_argument("--toy-seed", type=int, default=d.toy_seed, help="seed of the toys")
    parser.add_argument(
        "--config",
        help="a radar search config (YAML) for everything else: features, flow, "
        "classifier settings, k_folds, ... (its input, regions, methods, "
        "injections and seeds are set by the scan)",
    )
    parser.add_argument("--workers", type=int, help="Dask LocalCluster workers (default: one per core)")
    parser.add_argument("--scheduler", help="address of a running Dask scheduler instead of the LocalCluster")
    parser.add_argument("--sync", action="store_true", help="run everything in this process (no Dask)")
    parser.add_argument(
        "--resume", action="store_true", help="continue a killed scan: finished units are kept"
    )
    parser.add_argument("--overwrite", action="store_true", help="redo a scan in a directory that holds one")
    parser.add_argument("--no-figures", action="store_true", help="skip the per-window spectrum figures")
    parser.add_argument("--style", choices=("atlas", "cms"), default="atlas", help="figure style")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import yaml
    from rich.console import Console

    from radar.analysis.blindscan import ScanSettings, run_scan

    search: dict = {}
    if args.config:
        path = Path(args.config)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such search config")
        try:
            search = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise ValueError(f"{path}: not valid YAML: {error}") from None
        if not isinstance(search, dict):
            raise ValueError(f"{path}: a search config is a mapping of settings")
        for key in ("input", "regions", "methods", "injections", "seeds", "output", "name"):
            search.pop(key, None)
    execution = dict(search.get("execution") or {})
    if args.workers:
        execution["workers"] = args.workers
    if args.scheduler:
        execution.update(scheduler=args.scheduler, mode="dask")
    if args.sync:
        execution["mode"] = "sync"
    search["execution"] = execution
    settings = ScanSettings(
        methods=args.methods,
        classifier=args.classifier,
        seeds=args.seeds,
        mjj_range=args.mjj_range,
        width=args.width,
        step=args.step,
        sideband=args.sideband,
        min_sideband=args.min_sideband,
        bin_width=args.bin_width,
        warm_start=args.warm_start,
        warm_direction=args.warm_direction,
        warm_epochs=args.warm_epochs,
        working_points=args.working_points,
        toys=args.toys,
        toy_seed=args.toy_seed,
        figures=not args.no_figures,
        style=args.style,
        search=search,
    )
    scan = run_scan(args.data, args.output, settings, resume=args.resume, overwrite=args.overwrite)
    console = Console()
    console.print(Path(args.output, "report.md").read_text())
    return 1 if scan["best"] is None else 0

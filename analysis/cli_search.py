"""``radar search CONFIG.yaml [--resume]``: run a weakly supervised search (methods x injections x seeds)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "search",
        help="run anomaly-detection methods over injections and seeds (scores, metrics, models)",
        description="Run every (method, injection, seed) of CONFIG.yaml; outputs go into the config's "
        "output directory (or --output) with the resolved config and a manifest.",
    )
    parser.add_argument("config", nargs="?", help="search config (YAML), see configs/search_*.yaml")
    parser.add_argument(
        "--schema",
        action="store_true",
        help="print the JSON schema of a search config (for editors: yaml-language-server) and exit",
    )
    parser.add_argument(
        "--reference",
        action="store_true",
        help="print every config key (type, default, description) as Markdown and exit",
    )
    parser.add_argument(
        "--resume", action="store_true", help="skip (method, injection, seed) units already finished"
    )
    parser.add_argument("--overwrite", action="store_true", help="redo units that are already finished")
    parser.add_argument("--output", help="run directory (overrides the config's output)")
    parser.add_argument("--workers", type=int, help="Dask LocalCluster workers (default: one per core)")
    parser.add_argument("--scheduler", help="address of a running Dask scheduler instead of the LocalCluster")
    parser.add_argument(
        "--sync", action="store_true", help="run units one after another in this process (no Dask)"
    )
    parser.add_argument("--device", help="torch device for classifiers/flows (default from config: auto)")
    parser.add_argument(
        "--dry-run", action="store_true", help="validate config and data, list units, train nothing"
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.console import Console

    from radar.analysis.search import check_injections, load_inputs, run_search
    from radar.analysis.validation import load_config, validate_data

    if args.schema:
        import json

        from radar.analysis.config import config_schema

        print(json.dumps(config_schema(), indent=1))
        return 0
    if args.reference:
        from radar.analysis.config import config_reference

        print(config_reference(), end="")
        return 0
    if not args.config:
        raise ValueError("radar search: give a CONFIG.yaml (or --schema, --reference)")
    console = Console()
    cfg = load_config(args.config)
    if args.output:
        cfg.output = str(Path(args.output).resolve())
    if args.workers:
        cfg.execution.workers = args.workers
    if args.scheduler:
        cfg.execution.scheduler = args.scheduler
        cfg.execution.mode = "dask"
    if args.sync:
        cfg.execution.mode = "sync"
    if args.device:
        cfg.execution.device = args.device
    if args.dry_run:
        inputs = load_inputs(cfg)
        validate_data(cfg, inputs["data"], inputs["signal"], inputs["test"])
        check_injections(cfg, inputs)
        n = len(cfg.methods) * len(cfg.injections) * len(cfg.seeds)
        console.print(
            f"config OK: {n} units ({cfg.methods} x injections {cfg.injections} x seeds {cfg.seeds}) "
            f"→ {cfg.output_dir}"
        )
        return 0
    manifest = run_search(cfg, resume=args.resume, overwrite=args.overwrite)
    table = cfg.output_dir / "metrics_table.md"
    if table.exists():
        console.print(table.read_text())
    console.print(
        f"run directory: {cfg.output_dir} ({len(manifest['units_run'])} units run, "
        f"{len(manifest['units_skipped'])} skipped, {manifest['n_failed']} failed)"
    )
    return 1 if manifest["n_failed"] else 0

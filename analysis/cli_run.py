"""``radar run CONFIG.yaml`` and ``radar demo``: the whole search, end to end."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    run = subparsers.add_parser(
        "run",
        help="generate/read events → process → search → bump hunt → plots → report",
        description="Run every stage of a run config; unchanged stages are reused from the run directory.",
    )
    run.add_argument("config", help="run config (YAML); see analysis/pipeline.py for the keys")
    run.add_argument("-o", "--output", help="run directory (overrides the config's 'output')")
    run.add_argument(
        "--workers", type=int, help="processes of the embedded Dask LocalCluster (0: in-process)"
    )
    run.add_argument("--scheduler", help="address of an existing Dask scheduler")
    run.set_defaults(func=_run)
    demo = subparsers.add_parser(
        "demo",
        help="a small generated search end to end on the embedded Dask cluster (minutes)",
        description="Generates a small LHCO-like sample with Pythia (QCD + a 3.5 TeV Z' -> X(500) Y(100) "
        "resonance), processes it, runs CATHODE and CWoLa Hunting, the bump hunt and the figures; the "
        "preset is analysis/presets/demo.yaml.",
    )
    demo.add_argument("-o", "--output", default="runs/demo", help="run directory (default runs/demo)")
    demo.add_argument(
        "--workers", type=int, help="processes of the embedded Dask LocalCluster (0: in-process)"
    )
    demo.set_defaults(func=_demo, config=None, scheduler=None)


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from radar.analysis.pipeline import load_run_config, run_pipeline

    config = load_run_config(
        args.config, {"output": args.output, "workers": args.workers, "scheduler": args.scheduler}
    )
    if args.output:  # a command-line output is relative to the working directory, not the config
        from pathlib import Path

        config.output = str(Path(args.output).resolve())
    run_dir = run_pipeline(config)
    Console(stderr=True).print(f"[bold]run finished[/]: report {run_dir / 'report.md'}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from radar.analysis.pipeline import PRESETS_DIR

    args.config = str(PRESETS_DIR / "demo.yaml")
    return _run(args)

"""``radar generate`` and ``radar dataset``: Pythia 8 samples in the LHC Olympics layout."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("radar.generate")

#: events of the LHCO R&D-like set at scale 1 (QCD, signal, simulation)
LHCO_RND_EVENTS = {"qcd": 1_000_000, "resonance": 100_000, "simulation": 1_000_000}
#: the seed's semi-visible-jet benchmark points (Z' mass: dark scale Λ_D = m_πD = m_ρD, dark quark mass), GeV
SVJ_BENCHMARKS = {2000.0: (200.0, 100.0), 3000.0: (300.0, 150.0)}


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=1, help="master seed (same seed -> same events)")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="Dask LocalCluster processes (default: one per core; 0: in this process)",
    )
    parser.add_argument("--scheduler", default=None, help="address of a running Dask scheduler")
    parser.add_argument(
        "--events-per-task",
        type=int,
        default=1000,
        help="trigger-passing events per task (part of what fixes the events)",
    )
    parser.add_argument("--pthat-min", type=float, default=None, help="QCD pT-hat threshold [GeV] (700)")
    parser.add_argument("--mres", type=float, default=None, help="resonance (svj: Z') mass [GeV] (3500)")
    parser.add_argument("--mx", type=float, default=None, help="X mass [GeV] (500)")
    parser.add_argument("--my", type=float, default=None, help="Y mass [GeV] (100)")
    parser.add_argument(
        "--three-prong-y",
        action="store_const",
        const=True,
        default=None,
        help="Y -> q qbar g instead of q qbar",
    )
    parser.add_argument(
        "--decay-angles",
        choices=["longitudinal", "isotropic"],
        default=None,
        help="resonance: sin²θ decays of Z' -> X Y and X, Y -> q qbar (default, as the R&D signal) or "
        "Pythia's own (isotropic X, Y decays; radar's samples before)",
    )
    parser.add_argument(
        "--dark-scale",
        type=float,
        default=None,
        help="svj: Λ_D = m_πD = m_ρD [GeV] (default: the seed's benchmark for --mres 2000/3000, else 300)",
    )
    parser.add_argument("--dark-quark-mass", type=float, default=None, help="svj: dark quark mass [GeV]")
    parser.add_argument("--rinv", type=float, default=None, help="svj: invisible share of dark mesons (1/3)")
    parser.add_argument(
        "--trigger-pt", type=float, default=None, help="leading-jet pT of the trigger [GeV] (1200)"
    )
    parser.add_argument(
        "--detector",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="apply the simple detector response (default on)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="YAML with GeneratorConfig fields (command-line options win); e.g. radar's detector before the "
        "e-flow model: 'detector_config: {eflow: false, hcal_cell: 0.0174}'",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(subparsers) -> None:
    gen = subparsers.add_parser(
        "generate",
        help="generate LHCO-like events with Pythia 8",
        description="Generate trigger-passing events (QCD dijets, resonance -> X Y -> (qq)(qq), semi-visible "
        "jets (svj: Hidden Valley Z' -> dark quarks, r_inv of the dark mesons invisible), or the "
        "'simulation' QCD variant) into the LHCO raw HDF5 layout or a ROOT TTree. "
        "A killed HDF5 job resumes when rerun with the same arguments.",
    )
    gen.add_argument("process", choices=["qcd", "resonance", "simulation", "svj"])
    gen.add_argument("--events", "-n", type=int, required=True, help="trigger-passing events to write")
    gen.add_argument("-o", "--output", type=Path, required=True, help="output file (.h5 or .root)")
    gen.add_argument(
        "--no-label", action="store_true", help="no truth-label column/branch (like the LHCO black boxes)"
    )
    gen.add_argument(
        "--format",
        choices=["hdf5", "root"],
        default=None,
        help="output format (default: from the suffix, .root -> root, else hdf5)",
    )
    _add_common(gen)
    gen.set_defaults(func=run_generate)

    dataset = subparsers.add_parser("dataset", help="generate a whole standard dataset")
    sub = dataset.add_subparsers(dest="dataset", metavar="NAME", required=True)
    rnd = sub.add_parser(
        "lhco-rnd",
        help="LHCO R&D-like set: scale x (1M QCD + 100k signal + 1M simulation) + features",
        description="Generate qcd.h5, signal.h5 and simulation.h5 (LHCO raw layout) and their feature "
        "tables (parquet) into a directory.",
    )
    rnd.add_argument("--scale", type=float, default=1.0, help="fraction of the full-size set (0.01: 22k)")
    rnd.add_argument("-o", "--output", type=Path, required=True, help="output directory")
    _add_common(rnd)
    rnd.set_defaults(func=run_dataset)


def _config(args: argparse.Namespace, process: str):
    """GeneratorConfig from the optional YAML (--config) and the options given on the command line."""
    from radar.processors.generate import config_from_mapping

    values: dict = {}
    if args.config is not None:
        import yaml

        if not args.config.exists():
            raise FileNotFoundError(f"{args.config}: no such generator config")
        values = dict(yaml.safe_load(args.config.read_text()) or {})
    values["process"] = process
    given = {
        "mres": args.mres,
        "mx": args.mx,
        "my": args.my,
        "three_prong_y": args.three_prong_y,
        "decay_angles": args.decay_angles,
        "detector": args.detector,
        "pthat_min": args.pthat_min,
        "dark_scale": args.dark_scale,
        "dark_quark_mass": args.dark_quark_mass,
        "rinv": args.rinv,
        "trigger_pt": args.trigger_pt,
    }
    values.update({key: value for key, value in given.items() if value is not None})
    if process == "svj":
        values.setdefault("mres", 3000.0)  # the seed's heavier benchmark point
    if process == "svj" and values.get("mres") in SVJ_BENCHMARKS:
        scale, quark = SVJ_BENCHMARKS[values["mres"]]
        values.setdefault("dark_scale", scale)
        values.setdefault("dark_quark_mass", quark)
    return config_from_mapping(values)


def run_generate(args: argparse.Namespace) -> int:
    from rich.console import Console

    from radar.processors.generate import generate_to_file

    config = _config(args, args.process)
    fmt = args.format or ("root" if args.output.suffix.lower() == ".root" else "hdf5")
    summary = generate_to_file(
        config,
        args.events,
        args.seed,
        args.output,
        fmt=fmt,
        workers=args.workers,
        scheduler=args.scheduler,
        events_per_task=args.events_per_task,
        progress=not args.no_progress,
        with_label=not args.no_label,
    )
    Console(stderr=True).print(
        f"[bold]{args.output}[/bold]: {summary['n_written']} {args.process} events "
        f"(trigger efficiency {summary['trigger_efficiency']:.3f}, {summary['n_generated']} generated)"
    )
    return 0


def _check_existing_sample(raw, config, n_events: int, seed: int) -> None:
    """An existing sample is reused only if its summary (``<raw>.json``) records the same settings."""
    import json

    summary_path = raw.with_name(raw.name + ".json")
    if not summary_path.exists():
        raise ValueError(
            f"{raw} exists without its summary {summary_path.name}: cannot tell how it was made; "
            "delete it or choose another output directory"
        )
    summary = json.loads(summary_path.read_text())
    wanted = {
        "config": json.loads(json.dumps(config.to_dict(), default=str)),
        "seed": seed,
        "n_events": n_events,
    }
    found = {key: summary.get(key) for key in wanted}
    if found != wanted:
        differ = [key for key in wanted if found[key] != wanted[key]]
        raise ValueError(
            f"{raw} was generated with other settings ({', '.join(differ)} differ); delete it or "
            "choose another output directory"
        )


def run_dataset(args: argparse.Namespace) -> int:
    from rich.console import Console

    from radar.processors.generate import generate_to_file
    from radar.processors.io import write_json
    from radar.processors.runner import process_files

    if not args.scale > 0:
        raise ValueError(f"--scale must be positive, got {args.scale}")
    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=True)
    names = {"qcd": "qcd", "resonance": "signal", "simulation": "simulation"}
    manifest = {"scale": args.scale, "seed": args.seed, "samples": {}}
    for offset, (process, n_full) in enumerate(LHCO_RND_EVENTS.items()):
        n_events = max(1, round(n_full * args.scale))
        raw = out / f"{names[process]}.h5"
        config = _config(args, process)
        seed = args.seed * 10 + offset  # distinct seeds per sample: the three samples must be independent
        if raw.exists():
            _check_existing_sample(raw, config, n_events, seed)
            log.info("%s exists with the same settings; not regenerating", raw)
        else:
            generate_to_file(
                config,
                n_events,
                seed,
                raw,
                workers=args.workers,
                scheduler=args.scheduler,
                events_per_task=args.events_per_task,
                progress=not args.no_progress,
            )
        features = out / f"{names[process]}_features.parquet"
        table = process_files([raw], features, workers=args.workers, scheduler=args.scheduler)
        manifest["samples"][names[process]] = {
            "raw": raw.name,
            "features": features.name,
            "n_events": n_events,
            "n_features": len(table),
        }
        console.print(f"{names[process]}: {n_events} events -> {raw}, features -> {features}")
    write_json(out / "dataset.json", manifest)
    return 0

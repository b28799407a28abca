"""``radar images``: LHCO raw HDF5 events → jet images of the two leading jets (HDF5)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "images",
        help="jet images of the two leading jets (the autoencoders' input)",
        description="Cluster anti-kt jets (the dijet selection of radar process) and write, per passing event, "
        "centred, rotated, flipped and normalised pT images of the two leading jets (J1 = lighter) into one "
        "HDF5 file: /images (N, 2, P, P), /mjj, /label, /event.",
    )
    parser.add_argument("inputs", nargs="+", help="LHCO raw HDF5 files (the R&D layout, or radar generate's)")
    parser.add_argument("-o", "--output", required=True, help="output image file (.h5)")
    parser.add_argument("--pixels", type=int, default=40, help="pixels per side over [-R, R] (default 40)")
    parser.add_argument("--jet-radius", type=float, default=1.0, help="anti-kt radius R")
    parser.add_argument("--trigger-pt", type=float, default=1200.0, help="leading-jet pT threshold [GeV]")
    parser.add_argument("--max-events", type=int, default=None, help="read at most this many events per file")
    parser.add_argument("--chunk-size", type=int, default=5_000, help="events per task")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="LocalCluster processes (default: one per core; 0: in-process)",
    )
    parser.add_argument("--scheduler", default=None, help="address of an existing Dask scheduler")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from radar.processors.images import ImageConfig, write_images
    from radar.processors.jets import JetConfig

    config = ImageConfig(
        pixels=args.pixels, jets=JetConfig(jet_radius=args.jet_radius, trigger_pt=args.trigger_pt)
    )
    counts = write_images(
        args.inputs,
        args.output,
        config,
        chunk_size=args.chunk_size,
        workers=args.workers,
        scheduler=args.scheduler,
        max_events=args.max_events,
        progress=not args.no_progress,
    )
    print(
        f"{args.output}: {counts['written']} of {counts['read']} events, {args.pixels} x {args.pixels} pixels"
    )
    return 0

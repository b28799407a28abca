"""``radar process``: event files → parquet feature table + m_JJ histograms (ROOT)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "process",
        help="recluster jets and write the dijet feature table",
        description="Read LHCO raw HDF5, ROOT or LHCO feature files, recluster anti-kt jets with fastjet on "
        "Dask, and write the feature table (parquet) plus m_JJ histograms (ROOT) and the cutflow (JSON).",
    )
    parser.add_argument("inputs", nargs="*", help="input files (.h5 LHCO raw/feature, .root)")
    parser.add_argument(
        "--fileset",
        help="a coffea fileset (JSON/YAML: {dataset: {files: [...] | {path: tree}, "
        "metadata: {...}}}) instead of input files: one feature table per dataset in OUTPUT/",
    )
    parser.add_argument(
        "-o", "--output", required=True, help="output feature table (.parquet); with --fileset a directory"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes of the embedded LocalCluster (default: one per core; 0: in-process)",
    )
    parser.add_argument("--scheduler", default=None, help="address of an existing Dask scheduler")
    parser.add_argument("--chunk-size", type=int, default=10_000, help="events per Dask partition")
    parser.add_argument("--jet-radius", type=float, default=1.0, help="anti-kt radius R")
    parser.add_argument("--trigger-pt", type=float, default=1200.0, help="leading-jet pT threshold [GeV]")
    parser.add_argument(
        "--tau-convention",
        default="kt",
        help="N-subjettiness: 'kt' = fastjet-contrib KT_Axes + NormalizedMeasure, computed "
        "columnarly [default]; 'contrib' = call fastjet-contrib njettiness; 'lhco' = kt axes in "
        "(eta, phi) as the pyjet-era LHCO tools; 'lhco_peer' = also without the 2pi wrap of "
        "dphi, reproducing the peer-reclustering files (validation only)",
    )
    parser.add_argument("--tree", default="events", help="ROOT tree name")
    parser.add_argument("--root-layout", choices=("flat", "delphes"), default="flat")
    parser.add_argument("--branch-prefix", default="part_", help="flat ROOT layout: particle branch prefix")
    parser.add_argument(
        "--collections",
        default="EFlowTrack,EFlowPhoton,EFlowNeutralHadron",
        help="Delphes layout: comma-separated particle collections",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from radar.processors.jets import JetConfig
    from radar.processors.runner import process_files, process_fileset
    from radar.processors.sources import RootLayout

    output = Path(args.output)
    settings = dict(
        workers=args.workers,
        scheduler=args.scheduler,
        chunk_size=args.chunk_size,
        jet_config=JetConfig(
            jet_radius=args.jet_radius, trigger_pt=args.trigger_pt, tau_convention=args.tau_convention
        ),
        root_layout=RootLayout(
            tree=args.tree,
            kind=args.root_layout,
            prefix=args.branch_prefix,
            collections=tuple(c for c in args.collections.split(",") if c),
        ),
    )
    if args.fileset:
        if args.inputs:
            raise ValueError("radar process: give input files or --fileset, not both")
        if output.suffix:
            raise ValueError(f"{output}: with --fileset the output is a directory (one table per dataset)")
        process_fileset(args.fileset, output, **settings)
        return 0
    if not args.inputs:
        raise ValueError("radar process: give input files or --fileset")
    if output.suffix.lower() not in (".parquet", ".pq"):
        raise ValueError(f"{output}: the feature table is written as parquet; use a .parquet name")
    process_files(args.inputs, output, **settings)
    return 0

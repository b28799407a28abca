"""``radar bumphunt SCORES.parquet -o OUTDIR``: the bump hunt on saved anomaly scores → results JSON,
figures (PNG + PDF) and a Markdown report."""

from __future__ import annotations

import argparse


def _floats(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from error
    if not values or any(not 0 < v <= 1 for v in values):
        raise argparse.ArgumentTypeError(f"working points are SR efficiencies in (0, 1], got {text!r}")
    return values


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "bumphunt",
        help="fit m_JJ sidebands after anomaly-score cuts; local/global significance, figures",
        description="Bump hunt on a scores file (columns mjj [GeV], score; optional label, weight, in_sr): "
        "m_JJ spectra after score cuts at several SR efficiencies, dijet-function sideband fits, "
        "background prediction and local significance in the SR; optionally a sliding-window "
        "scan with the global significance from toys. Writes bumphunt.json, [scan.json], "
        "figures/ and report.md into OUTDIR.",
    )
    parser.add_argument("scores", help="scores parquet (e.g. RUN/<method>/inj_*/seed_*/scores.parquet)")
    parser.add_argument("-o", "--output", required=True, help="output directory")
    parser.add_argument(
        "--working-points",
        type=_floats,
        default=[1.0, 0.1, 0.01, 0.001],
        help="comma-separated SR efficiencies of the score cuts (default 1,0.1,0.01,0.001)",
    )
    parser.add_argument(
        "--sr",
        nargs=2,
        type=float,
        default=[3300.0, 3700.0],
        metavar=("LOW", "HIGH"),
        help="signal region in GeV (default 3300 3700)",
    )
    parser.add_argument(
        "--fit-range",
        nargs=2,
        type=float,
        default=None,
        metavar=("LOW", "HIGH"),
        help="m_JJ range of the sideband fit in GeV (default: from the data — 200 GeV above the peak of the "
        "m_JJ spectrum, i.e. above the trigger turn-on, to the last scored event)",
    )
    parser.add_argument(
        "--fit-sideband",
        type=float,
        default=None,
        help="fit only SR ± this many GeV of the fit range (default 600 when the fit range follows the data, "
        "where the dijet function describes cut spectra that bend with m_JJ; 0: the whole range)",
    )
    parser.add_argument("--bin-width", type=float, default=100.0, help="m_JJ bin width in GeV (default 100)")
    parser.add_argument(
        "--min-sideband",
        type=float,
        default=400.0,
        help="refuse an SR with less sideband than this (GeV) on either side inside the fit range (default 400)",
    )
    parser.add_argument(
        "--n-params",
        type=int,
        choices=(3, 4),
        help="force the 3- or 4-parameter dijet function (default: chosen by the likelihood-ratio test)",
    )
    parser.add_argument(
        "--wilks-threshold",
        type=float,
        default=3.84,
        help="-2 ln L improvement needed to use 4 parameters (default 3.84, p = 0.05)",
    )
    parser.add_argument("--style", choices=("atlas", "cms"), default="atlas", help="figure style")
    parser.add_argument(
        "--scan",
        action="store_true",
        help="also run the sliding-window scan (same score for "
        "every window: no retraining; the blind search that retrains per window is radar scan)",
    )
    parser.add_argument("--scan-efficiency", type=float, default=0.01, help="SR efficiency of the scan's cut")
    parser.add_argument("--scan-width", type=float, default=400.0, help="scan SR width in GeV (default 400)")
    parser.add_argument("--scan-step", type=float, default=200.0, help="scan step in GeV (default 200)")
    parser.add_argument(
        "--scan-sideband",
        type=float,
        default=1000.0,
        help="sideband width on each side of a scan window in GeV (default 1000)",
    )
    parser.add_argument(
        "--toys", type=int, default=100, help="background-only toys for the global significance"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the toys")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from radar.analysis import bumphunt as bh
    from radar.analysis.report import load_scores, make_bumphunt_outputs

    console = Console()
    scores = load_scores(args.scores)
    fit_range = bh.resolve_fit_range(
        scores["mjj"].to_numpy(float), tuple(args.sr), args.fit_range, args.bin_width
    )
    fit_sideband = (
        args.fit_sideband
        if args.fit_sideband is not None
        else (0.0 if args.fit_range else bh.DEFAULT_FIT_SIDEBAND)
    )
    hunt_range = bh.fit_window(fit_range, tuple(args.sr), fit_sideband, args.bin_width)
    console.print(
        f"fit range {hunt_range[0]:.0f}-{hunt_range[1]:.0f} GeV"
        + ("" if args.fit_range else " (from the data: above the trigger turn-on")
        + (f", SR ± {fit_sideband:.0f} GeV" if fit_sideband else "")
        + ("" if args.fit_range else ")")
    )
    config = bh.FitConfig(n_params=args.n_params, wilks_threshold=args.wilks_threshold)
    windows = None
    if args.scan:
        windows = bh.sliding_windows(
            fit_range, sr_width=args.scan_width, step=args.scan_step, sideband_width=args.scan_sideband
        )
    out = make_bumphunt_outputs(
        scores,
        args.output,
        efficiencies=args.working_points,
        signal_region=tuple(args.sr),
        fit_range=fit_range,
        bin_width=args.bin_width,
        fit_sideband=fit_sideband,
        fit_config=config,
        min_sideband=args.min_sideband,
        style=args.style,
        scan=args.scan,
        scan_efficiency=args.scan_efficiency,
        scan_windows=windows,
        n_toys=args.toys,
        seed=args.seed,
        notes=[f"Scores: {args.scores}"],
    )
    table = Table(title=f"bump hunt, SR {args.sr[0]:.0f}-{args.sr[1]:.0f} GeV")
    for column in ("selection", "SR obs", "SR pred.", "local Z", "fit"):
        table.add_column(column, justify="right")
    for wp in out["bumphunt"]["working_points"]:
        fit = wp["fit"]
        table.add_row(
            "no cut" if wp["efficiency"] >= 1 else f"top {100 * wp['efficiency']:.3g}%",
            f"{wp['n_obs']:.0f}",
            f"{wp['b']:.1f} ± {wp['sigma_b']:.1f}",
            f"{wp['z_local']:.2f}",
            f"dijet{fit['n_params']} " + (", ".join(fit["flags"]) or "ok"),
        )
    console.print(table)
    if out["scan"] is not None:
        scan = out["scan"]
        glob = (
            "" if scan["z_global"] is None else f", global Z = {scan['z_global']:.2f} ({scan['n_toys']} toys)"
        )
        console.print(
            f"scan: max local Z = {scan['z_max']:.2f} in SR {scan['max_window_sr'][0]:.0f}-"
            f"{scan['max_window_sr'][1]:.0f} GeV{glob}"
        )
    console.print(
        f"results: {out['bumphunt_json']}; report: {out['report']}; {len(out['figures'])} figures "
        f"in {out['report'].parent / 'figures'}"
    )
    return 0

"""The closure benchmark of the TRAINED chain: background-only datasets through ``radar search`` (trained
templates and classifiers) and the bump hunt, before and after the closure fix; plus injected signal and
the m_JJ-correlated mass-shift (sculpting) study.

Datasets come from the background-only surrogate (:mod:`benchmarks.null_surrogate`): a smooth m_JJ
spectrum with the trigger turn-on and a conditional flow of the four LHCO features, both fitted to the
real LHCO R&D background (peer reclustering, first 100k events). Every dataset is an independent draw with
>= ``--events`` events in 2.7-6.5 TeV (plus the turn-on region down to ``--mjj-low``).

For every background-only dataset and each of two SRs — the nominal 3.3-3.7 TeV and the window next to
the trigger turn-on (the lowest SR that the fit range from the data allows: fit start + 300 GeV) —
``radar search`` trains ``--methods`` (``--classifier``: HGB by default, one seed), and the bump hunt runs at
``--working-points``:

- **after** (radar now): the scores (every event out of fold), the fit range from the data
  (:func:`radar.analysis.bumphunt.auto_fit_range`), the sculpting flags; the headline is the most significant
  usable working point.
- **before** (the pre-fix chain, the proof that the benchmark can fail): the same models' pre-fix scores
  (``score_fold_mean``: events outside the training classes scored by the fold mean) and the old fixed fit
  range ``--before-fit-range`` (2700-6000 GeV as in the report that found the fake 8-13σ).

It prints, per method, SR and working point, the distribution of the local Z (mean, std, fraction > 2σ and
> 3σ) next to the one-sided null (Z = max(0, N(0, 1)): mean 0.40, std 0.58, 2.28 %, 0.135 %), and writes
``OUT/summary.md``, ``OUT/summary.json`` and ``OUT/rows.jsonl`` (one line per dataset, SR and method; a
rerun skips what is there). ``--signal-datasets``: the same with real LHCO signal injected at S/B
``--signal-sb`` in the nominal SR (no-cut vs best-cut Z). ``--shift-datasets``: background-only datasets
with m_J -> m_J + 0.1 m_JJ (LaCATHODE's test): χ²/ndf of each cut spectrum against the uncut one.

Run on demand (hours on 2 cores with the defaults; measured numbers in docs/closure.md)::

    python benchmarks/null_surrogate.py --fit runs/null_surrogate        # once (~10 min)
    python benchmarks/null_chain.py --surrogate runs/null_surrogate --output runs/null_chain
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

log = logging.getLogger("benchmarks.null_chain")

NOMINAL_SR = (3300.0, 3700.0)
NULL_MEAN, NULL_STD = 1 / math.sqrt(2 * math.pi), math.sqrt(0.5 - 1 / (2 * math.pi))
NULL_P2, NULL_P3 = 0.02275, 0.00135
PEER_DIR = REPO.parent / "shared" / "data" / "lhco" / "peer_reclustering"


def search_config(
    data: Path,
    out: Path,
    sr: tuple[float, float],
    mjj_range: tuple[float, float],
    methods: list[str],
    flow: dict,
    signal: Path | None = None,
    s_over_b: float | None = None,
    classifier: dict | None = None,
    method_settings: dict | None = None,
) -> dict[str, Any]:
    """The ``radar search`` config of one dataset and SR (sync execution: the benchmark runs searches in
    parallel processes)."""
    cfg = {
        "name": out.name,
        "output": str(out),
        "input": {"data": [str(data)]},
        "regions": {"sr": list(sr), "mjj_range": list(mjj_range)},
        "methods": methods,
        "injections": [None],
        "seeds": [0],
        "k_folds": 5,
        "test_fraction": 0.0,
        "classifier": classifier or {"name": "hgb"},
        "flow": flow,
        "compare": False,
        "save_models": False,
        "execution": {"mode": "sync", "threads_per_task": 1},
    }
    if method_settings:
        cfg["method_settings"] = method_settings
    if signal is not None:
        cfg["input"]["signal"] = str(signal)
        cfg["injections"], cfg["injection_mode"] = [s_over_b], "s_over_b"
    return cfg


def shape_chi2(mjj: np.ndarray, selected: np.ndarray, edges: np.ndarray) -> tuple[float, int]:
    """χ² of the cut spectrum against the uncut one scaled by the overall efficiency (binomial variance per
    bin) over ``edges``: how much the cut changed the m_JJ shape. Returns (χ², ndf)."""
    n_all = np.histogram(mjj, edges)[0].astype(float)
    n_cut = np.histogram(mjj[selected], edges)[0].astype(float)
    use = n_all > 0
    eff = n_cut.sum() / n_all.sum()
    var = n_all * eff * (1 - eff)
    ok = use & (var > 0)
    return float(np.sum((n_cut[ok] - eff * n_all[ok]) ** 2 / var[ok])), int(ok.sum() - 1)


def hunt(
    scores, sr, efficiencies, before_fit_range, mass_shift_study=False, fit_sideband: float | None = None
) -> dict[str, Any]:
    """Bump hunts of one unit's scores: after (scores, fit range from the data in radar's default fit window
    of ``fit_sideband`` GeV around the SR, flags) and before (pre-fix scores, the old fixed fit range)."""
    from radar.analysis import bumphunt as bh

    fit_sideband = bh.DEFAULT_FIT_SIDEBAND if fit_sideband is None else fit_sideband
    mjj = scores["mjj"].to_numpy(float)
    label = scores["label"].to_numpy(float)
    # radar's default: the range the data allow, narrowed to the SR's fit window
    fit_range = bh.fit_window(bh.resolve_fit_range(mjj, sr), sr, fit_sideband)
    row: dict[str, Any] = {"fit_range": list(fit_range), "after": {}, "before": {}, "headline": None}
    try:
        after = bh.bump_hunt(
            mjj,
            scores["score"].to_numpy(float),
            signal_region=sr,
            efficiencies=efficiencies,
            fit_range=fit_range,
            label=label,
        )
    except ValueError as error:  # e.g. an SR that today's rules refuse (too little sideband)
        row["refused"] = str(error)
        after = None
    for wp in after.working_points if after else []:
        row["after"][str(wp.efficiency)] = {
            "z": wp.z_local,
            "fit_ok": wp.fit.ok,
            "sculpted": wp.sculpted,
            "usable": wp.usable,
            "flags": wp.to_dict()["flags"],
            "truth": wp.truth,
            "control_step_z": (wp.sculpting or {}).get("tests", {}).get("control_step", {}).get("z"),
        }
    best = after.best if after else None
    row["headline"] = None if best is None else {"efficiency": best.efficiency, "z": best.z_local}
    if "score_fold_mean" in scores:
        before = bh.bump_hunt(
            mjj,
            scores["score_fold_mean"].to_numpy(float),
            signal_region=sr,
            efficiencies=efficiencies,
            fit_range=before_fit_range,
            min_sideband=0.0,
            label=label,
        )
        for wp in before.working_points:
            row["before"][str(wp.efficiency)] = {
                "z": wp.z_local,
                "fit_ok": wp.fit.ok,
                "sculpted": wp.sculpted,
            }
    if mass_shift_study and after:
        edges = after.working_points[0].edges
        in_fit = (mjj >= edges[0]) & (mjj < edges[-1])
        s = scores["score"].to_numpy(float)
        in_sr = scores["in_sr"].to_numpy(bool)
        row["shape_chi2"] = {}
        for eff in efficiencies:
            if eff >= 1:
                continue
            selected = s > np.quantile(s[in_sr], 1 - eff)
            chi2, ndf = shape_chi2(mjj[in_fit], selected[in_fit], edges)
            row["shape_chi2"][str(eff)] = {"chi2": chi2, "ndf": ndf}
    return row


def run_task(task: dict[str, Any]) -> list[dict[str, Any]]:
    """One dataset and SR: draw (or reuse) the data, run the search, hunt every method's scores."""
    import torch

    torch.set_num_threads(1)
    from benchmarks.null_surrogate import Surrogate
    from radar.analysis.config import config_from_dict
    from radar.analysis.search import load_scores, run_search, unit_dir
    from radar.processors.features import write_feature_table

    out = Path(task["out"])
    out.mkdir(parents=True, exist_ok=True)
    data_path = out.parent / "data.parquet"
    if not data_path.exists():
        surrogate = Surrogate.load(task["surrogate"], device="cpu")
        if task.get("smooth"):
            from benchmarks.null_surrogate import SmoothMarginals, draw_smooth

            table = draw_smooth(
                surrogate,
                SmoothMarginals.load(task["smooth"]),
                task["n_draw"],
                seed=task["seed"],
                mjj_range=task["mjj_range"],
                mass_shift=task["mass_shift"],
            )
        else:
            table = surrogate.draw(
                task["n_draw"], seed=task["seed"], mjj_range=task["mjj_range"], mass_shift=task["mass_shift"]
            )
        write_feature_table(table, data_path)
    sr = tuple(task["sr"])
    cfg = config_from_dict(
        search_config(
            data_path,
            out / "search",
            sr,
            tuple(task["mjj_range"]),
            task["methods"],
            task["flow"],
            Path(task["signal"]) if task.get("signal") else None,
            task.get("s_over_b"),
            task.get("classifier"),
            task.get("method_settings"),
        )
    )
    t0 = time.perf_counter()
    if not task.get("rehunt"):
        run_search(cfg, resume=True, progress=False)
    seconds = time.perf_counter() - t0
    rows = []
    injection = cfg.injections[0]
    for method in task["methods"]:
        scores = load_scores(cfg.output_dir, method, injection, 0)
        metrics = json.loads((unit_dir(cfg.output_dir, method, injection, 0) / "metrics.json").read_text())
        row = {
            "kind": task["kind"],
            "dataset": task["dataset"],
            "sr": list(sr),
            "method": method,
            "seconds_unit": metrics.get("seconds"),
            "n_data": metrics.get("n_data"),
            "n_sig_sr": metrics.get("n_sig_sr"),
            "n_bkg_sr": metrics.get("n_bkg_sr"),
        }
        row.update(
            hunt(
                scores,
                sr,
                task["efficiencies"],
                tuple(task["before_fit_range"]),
                mass_shift_study=task["kind"] == "shift",
                fit_sideband=task.get("fit_sideband"),
            )
        )
        rows.append(row)
    log.info("%s dataset %d SR %s: %.0f s", task["kind"], task["dataset"], sr, seconds)
    return rows


def _fraction(values: np.ndarray, threshold: float) -> tuple[float, int]:
    return (float(np.mean(values > threshold)) if len(values) else float("nan")), int(
        np.sum(values > threshold)
    )


def summarise(rows: list[dict[str, Any]], efficiencies: list[float]) -> tuple[str, dict[str, Any]]:
    """Markdown tables and a JSON summary of the rows."""
    lines, summary = [], {"null": [], "signal": [], "shift": []}
    null = [r for r in rows if r["kind"] == "null"]
    srs = sorted({tuple(r["sr"]) for r in null})
    methods = sorted({r["method"] for r in null})
    lines += [
        "## Background only: local Z per method, SR and working point",
        "",
        f"Null expectation (one-sided Z = max(0, N(0,1))): mean {NULL_MEAN:.2f}, std {NULL_STD:.2f}, "
        f"P(Z > 2) = {100 * NULL_P2:.2f} %, P(Z > 3) = {100 * NULL_P3:.3f} %.",
        "",
        "| SR [GeV] | method | working point | n | after: mean ± std | after: > 2σ | after: > 3σ | "
        "sculpted | before: mean ± std | before: > 3σ | before: max |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for sr in srs:
        for method in methods:
            sel = [r for r in null if tuple(r["sr"]) == sr and r["method"] == method]
            for eff in efficiencies:
                key = str(float(eff))
                za = np.array([r["after"][key]["z"] for r in sel if key in r["after"]], float)
                zb = np.array([r["before"][key]["z"] for r in sel if key in r.get("before", {})], float)
                za, zb = za[np.isfinite(za)], zb[np.isfinite(zb)]
                sculpted = sum(bool(r["after"][key]["sculpted"]) for r in sel if key in r["after"])
                f2, n2 = _fraction(za, 2.0)
                f3, n3 = _fraction(za, 3.0)
                fb3, nb3 = _fraction(zb, 3.0)
                entry = {
                    "sr": list(sr),
                    "method": method,
                    "efficiency": eff,
                    "n": len(za),
                    "after_mean": float(za.mean()) if len(za) else None,
                    "after_std": float(za.std(ddof=1)) if len(za) > 1 else None,
                    "after_frac_gt2": f2,
                    "after_frac_gt3": f3,
                    "after_n_gt3": n3,
                    "n_sculpted": sculpted,
                    "before_mean": float(zb.mean()) if len(zb) else None,
                    "before_frac_gt3": fb3,
                    "before_max": float(zb.max()) if len(zb) else None,
                }
                summary["null"].append(entry)
                name = "no cut" if eff >= 1 else f"top {100 * eff:g} %"
                lines.append(
                    f"| {sr[0]:.0f}–{sr[1]:.0f} | {method} | {name} | {len(za)} | "
                    f"{za.mean():.2f} ± {za.std(ddof=1) if len(za) > 1 else float('nan'):.2f} | "
                    f"{n2}/{len(za)} | {n3}/{len(za)} | {sculpted} | "
                    f"{zb.mean() if len(zb) else float('nan'):.2f} ± {zb.std(ddof=1) if len(zb) > 1 else float('nan'):.2f}"
                    f" | {nb3}/{len(zb)} | {zb.max() if len(zb) else float('nan'):.2f} |"
                )
    lines += [
        "",
        "Headline (most significant usable working point) per dataset:",
        "",
        "| SR [GeV] | method | n | headline Z > 3σ | max headline Z | no usable working point |",
        "|---|---|---|---|---|---|",
    ]
    for sr in srs:
        for method in methods:
            sel = [r for r in null if tuple(r["sr"]) == sr and r["method"] == method]
            heads = np.array([r["headline"]["z"] for r in sel if r["headline"]], float)
            lines.append(
                f"| {sr[0]:.0f}–{sr[1]:.0f} | {method} | {len(sel)} | {int(np.sum(heads > 3))} | "
                f"{heads.max() if len(heads) else float('nan'):.2f} | {sum(r['headline'] is None for r in sel)} |"
            )
    legacy = [r for r in rows if r["kind"] == "legacy"]
    if legacy:
        lines += [
            "",
            f"The report's SR next to the turn-on, {legacy[0]['sr'][0]:.0f}–{legacy[0]['sr'][1]:.0f} GeV: today "
            f"refused ({legacy[0].get('refused', 'not refused')}); before the fix (pre-fix scores, fit "
            "range 2700–6000 GeV):",
            "",
            "| method | working point | before: Z per dataset |",
            "|---|---|---|",
        ]
        for method in sorted({r["method"] for r in legacy}):
            sel = [r for r in legacy if r["method"] == method]
            for eff in efficiencies:
                key = str(float(eff))
                zs = [r["before"][key]["z"] for r in sel if key in r["before"]]
                summary.setdefault("legacy", []).append(
                    {"method": method, "efficiency": eff, "z_before": zs, "refused": sel[0].get("refused")}
                )
                lines.append(
                    f"| {method} | {'no cut' if eff >= 1 else f'top {100 * eff:g} %'} | "
                    + ", ".join(f"{z:.1f}" for z in zs)
                    + " |"
                )
    sig = [r for r in rows if r["kind"] == "signal"]
    if sig:
        lines += [
            "",
            "## Signal injected: no-cut vs best-cut local Z",
            "",
            "| method | dataset | S / B in SR | no-cut Z | headline | headline Z | ratio | true S/√B after cut |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in sorted(sig, key=lambda r: (r["method"], r["dataset"])):
            z0 = r["after"]["1.0"]["z"]
            head = r["headline"]
            zh = head["z"] if head else float("nan")
            truth = r["after"][str(head["efficiency"])]["truth"] if head else {}
            ratio = zh / max(z0, 0.5) if head else float("nan")
            summary["signal"].append(
                {
                    "method": r["method"],
                    "dataset": r["dataset"],
                    "z_nocut": z0,
                    "headline": head,
                    "ratio": ratio,
                    "n_sig_sr": r.get("n_sig_sr"),
                    "n_bkg_sr": r.get("n_bkg_sr"),
                }
            )
            lines.append(
                f"| {r['method']} | {r['dataset']} | {r.get('n_sig_sr')} / {r.get('n_bkg_sr')} | {z0:.2f} | "
                f"{'none' if not head else ('top %g %%' % (100 * head['efficiency']))} | {zh:.2f} | "
                f"{ratio:.1f} | {truth.get('s_over_sqrt_b', float('nan')):.2f} |"
            )
    shift = [r for r in rows if r["kind"] == "shift"]
    if shift:
        lines += [
            "",
            "## m_J -> m_J + 0.1 m_JJ (background only): χ²/ndf of the cut spectrum vs the uncut one",
            "",
            "| method | working point | median χ²/ndf | sculpted (flag) | headline Z > 3σ |",
            "|---|---|---|---|---|",
        ]
        for method in sorted({r["method"] for r in shift}):
            sel = [r for r in shift if r["method"] == method]
            for eff in efficiencies:
                if eff >= 1:
                    continue
                key = str(float(eff))
                ratios = [r["shape_chi2"][key]["chi2"] / max(r["shape_chi2"][key]["ndf"], 1) for r in sel]
                flagged = sum(bool(r["after"][key]["sculpted"]) for r in sel)
                heads = sum(bool(r["headline"] and r["headline"]["z"] > 3) for r in sel)
                summary["shift"].append(
                    {"method": method, "efficiency": eff, "chi2_ndf": ratios, "n_sculpted": flagged}
                )
                lines.append(
                    f"| {method} | top {100 * eff:g} % | {np.median(ratios):.2f} "
                    f"({', '.join(f'{x:.1f}' for x in ratios)}) | {flagged}/{len(sel)} | {heads}/{len(sel)} |"
                )
    return "\n".join(lines) + "\n", summary


def plot_z_distributions(rows: list[dict[str, Any]], efficiencies: list[float], path: Path) -> Path:
    """Histogram of the local Z of every cut working point on background-only data, per method, after and
    before the fix, against the one-sided null (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy import stats

    null = [r for r in rows if r["kind"] == "null"]
    methods = sorted({r["method"] for r in null})
    fig, axes = plt.subplots(1, len(methods), figsize=(5 * len(methods), 4.2), sharey=True)
    bins = np.linspace(0, 16, 33)
    for ax, method in zip(np.atleast_1d(axes), methods):
        for which, color in (("before", "0.6"), ("after", "C0")):
            z = [
                r[which][str(float(e))]["z"]
                for r in null
                if r["method"] == method
                for e in efficiencies
                if e < 1 and str(float(e)) in r[which]
            ]
            ax.hist(
                np.clip(z, 0, 15.99),
                bins,
                histtype="step" if which == "after" else "stepfilled",
                color=color,
                lw=2,
                label=f"{which} the fix ({len(z)} cuts)",
            )
        n = sum(1 for r in null if r["method"] == method) * sum(e < 1 for e in efficiencies)
        centres = 0.5 * (bins[1:] + bins[:-1])
        ax.plot(centres, n * np.diff(stats.norm.cdf(bins)), "k--", label="null: N(0,1), Z > 0")
        ax.set_title(method)
        ax.set_xlabel("local Z (background only)")
        ax.set_yscale("log")
        ax.set_ylim(0.3, 2 * n)
        ax.legend(fontsize=8)
    np.atleast_1d(axes)[0].set_ylabel("working points x datasets x SRs")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--surrogate", type=Path, default=Path("runs/null_surrogate"))
    parser.add_argument("--output", type=Path, default=Path("runs/null_chain"))
    parser.add_argument("--datasets", type=int, default=20)
    parser.add_argument("--signal-datasets", type=int, default=5)
    parser.add_argument("--shift-datasets", type=int, default=3)
    parser.add_argument("--events", type=int, default=100_000, help="events per dataset in 2.7-6.5 TeV")
    parser.add_argument("--mjj-low", type=float, default=2300.0, help="lowest m_JJ drawn (GeV): the turn-on")
    parser.add_argument("--mjj-high", type=float, default=6500.0)
    parser.add_argument("--methods", default="cathode,cwola_hunting,lacathode")
    parser.add_argument("--working-points", default="1,0.2,0.05,0.01")
    parser.add_argument("--before-fit-range", type=float, nargs=2, default=[2700.0, 6000.0])
    parser.add_argument("--signal-sb", type=float, default=0.01)
    parser.add_argument(
        "--legacy-sr",
        type=float,
        nargs=2,
        default=[2800.0, 3200.0],
        help="the report's SR next to the turn-on, refused by today's rules: 'before' only",
    )
    parser.add_argument("--legacy-datasets", type=int, default=5)
    parser.add_argument(
        "--flow",
        default='{"epochs": 30, "n_blocks": 4, "hidden": 64, "batch_size": 1024, "lr": 0.0004}',
        help="flow settings (JSON), the report's",
    )
    parser.add_argument("--nominal-only", action="store_true", help="skip the SR next to the turn-on")
    parser.add_argument(
        "--classifier",
        default='{"name": "hgb"}',
        help='the search\'s classifier section (JSON), e.g. \'{"name": "mlp"}\' for the batched MLP ensemble',
    )
    parser.add_argument(
        "--smooth",
        action="store_true",
        help="features smooth in m_JJ by construction (null_surrogate.SmoothMarginals) instead of the "
        "flow surrogate, which learnt the real data's wiggles (a Δm_J plateau at 3.3-3.7 TeV)",
    )
    parser.add_argument(
        "--fit-sideband",
        type=float,
        default=None,
        help="the bump hunt's fit window, GeV each side of the SR (default: radar's, 600; 0: the "
        "whole range the data allow)",
    )
    parser.add_argument(
        "--rehunt",
        action="store_true",
        help="redo only the bump hunts from the saved scores (no training) into a fresh rows file; "
        "the previous one is kept as rows.<timestamp>.jsonl",
    )
    parser.add_argument(
        "--method-settings",
        default="{}",
        help='the search\'s method_settings (JSON), e.g. \'{"nae": {"epochs": 5}}\'',
    )
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("radar", "distributed"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from benchmarks.null_surrogate import Surrogate
    from radar.analysis import bumphunt as bh

    if not (args.surrogate / "surrogate.json").exists():
        parser.error(
            f"{args.surrogate}: no fitted surrogate; run python benchmarks/null_surrogate.py --fit {args.surrogate}"
        )
    surrogate = Surrogate.load(args.surrogate, device="cpu")
    mjj_range = (args.mjj_low, args.mjj_high)
    # draw enough events that >= --events fall in 2.7-6.5 TeV
    expected = surrogate.spectrum.expected(np.array([args.mjj_low, 2700.0, args.mjj_high]))
    n_draw = int(math.ceil(args.events * expected.sum() / expected[1]))
    # the window next to the turn-on: the lowest SR that the fit range from the data allows
    probe = surrogate.spectrum.sample(400_000, np.random.default_rng(1), mjj_range)
    start, _ = bh.auto_fit_range(probe, NOMINAL_SR)
    turn_on_sr = (start + bh.MIN_SIDEBAND, start + bh.MIN_SIDEBAND + 400.0)
    efficiencies = [float(x) for x in args.working_points.split(",")]
    methods = args.methods.split(",")
    flow = json.loads(args.flow)
    log.info(
        "%d events per dataset over %.0f-%.0f GeV; fit from %.0f GeV; SRs %s and %s",
        n_draw,
        *mjj_range,
        start,
        NOMINAL_SR,
        turn_on_sr,
    )
    signal_path = None
    if args.signal_datasets:
        from radar.processors.features import read_feature_table, write_feature_table

        signal_path = args.output / "signal.parquet"
        if not signal_path.exists():
            table = read_feature_table(PEER_DIR)
            args.output.mkdir(parents=True, exist_ok=True)
            write_feature_table(table[table["label"] == 1].reset_index(drop=True), signal_path)
    smooth = None
    if args.smooth:
        from benchmarks.null_surrogate import SmoothMarginals

        smooth = args.surrogate / "smooth_marginals.npz"
        if not smooth.exists():
            SmoothMarginals.fit(surrogate).save(smooth)
        smooth = str(smooth)
    base = {
        "rehunt": args.rehunt,
        "fit_sideband": args.fit_sideband,
        "surrogate": str(args.surrogate),
        "smooth": smooth,
        "n_draw": n_draw,
        "mjj_range": mjj_range,
        "methods": methods,
        "flow": flow,
        "classifier": json.loads(args.classifier),
        "method_settings": json.loads(args.method_settings),
        "efficiencies": efficiencies,
        "before_fit_range": args.before_fit_range,
        "mass_shift": 0.0,
    }
    tasks = []
    srs = [NOMINAL_SR] if args.nominal_only or turn_on_sr == NOMINAL_SR else [NOMINAL_SR, turn_on_sr]
    for d in range(args.datasets):
        for sr in srs:
            tasks.append(
                {
                    **base,
                    "kind": "null",
                    "dataset": d,
                    "seed": 1000 + d,
                    "sr": sr,
                    "out": str(args.output / f"null_{d:02d}" / f"sr_{sr[0]:.0f}_{sr[1]:.0f}"),
                }
            )
    for d in range(args.signal_datasets):
        tasks.append(
            {
                **base,
                "kind": "signal",
                "dataset": d,
                "seed": 5000 + d,
                "sr": NOMINAL_SR,
                "signal": str(signal_path),
                "s_over_b": args.signal_sb,
                "out": str(args.output / f"signal_{d:02d}" / "sr_3300_3700"),
            }
        )
    for d in range(args.legacy_datasets):
        sr = tuple(args.legacy_sr)
        tasks.append(
            {
                **base,
                "kind": "legacy",
                "dataset": d,
                "seed": 1000 + d,
                "sr": sr,
                "out": str(args.output / f"null_{d:02d}" / f"sr_{sr[0]:.0f}_{sr[1]:.0f}"),
            }
        )
    for d in range(args.shift_datasets):
        tasks.append(
            {
                **base,
                "kind": "shift",
                "dataset": d,
                "seed": 9000 + d,
                "sr": NOMINAL_SR,
                "mass_shift": 0.1,
                "out": str(args.output / f"shift_{d:02d}" / "sr_3300_3700"),
            }
        )
    rows_path = args.output / "rows.jsonl"
    args.output.mkdir(parents=True, exist_ok=True)
    if args.rehunt and rows_path.exists():
        rows_path.rename(args.output / f"rows.{time.strftime('%Y%m%dT%H%M%S')}.jsonl")
    done = (
        {
            (r["kind"], r["dataset"], tuple(r["sr"]))
            for r in map(json.loads, rows_path.read_text().splitlines())
        }
        if rows_path.exists()
        else set()
    )
    todo = [t for t in tasks if (t["kind"], t["dataset"], tuple(t["sr"])) not in done]
    log.info("%d tasks (%d already done)", len(tasks), len(tasks) - len(todo))
    t0 = time.perf_counter()
    from tqdm import tqdm

    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futures = [pool.submit(run_task, t) for t in todo]
        for future in tqdm(as_completed(futures), total=len(futures), desc="datasets x SRs"):
            try:
                rows = future.result()
            except Exception:
                log.exception("a task failed")
                continue
            with open(rows_path, "a") as handle:
                for row in rows:
                    handle.write(json.dumps(row, default=float) + "\n")
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in rows_path.read_text().splitlines()]
    text, summary = summarise(rows, efficiencies)
    seconds = {}
    for r in rows:
        seconds.setdefault(r["method"], []).append(r.get("seconds_unit") or float("nan"))
    header = (
        f"# Closure of the trained chain (benchmarks/null_chain.py)\n\n"
        f"{args.datasets} background-only {'smooth-marginal ' if args.smooth else ''}surrogate datasets of {n_draw} events ({args.events} in 2.7–6.5 TeV, "
        f"{mjj_range[0]:.0f}–{mjj_range[1]:.0f} GeV drawn); SRs {NOMINAL_SR} and {turn_on_sr} (next to the "
        f"turn-on: the fit from the data starts at {start:.0f} GeV); methods {methods}, classifier {json.loads(args.classifier)}, flow {flow}. "
        f"Median unit wall time: "
        + ", ".join(f"{m} {np.nanmedian(s):.0f} s" for m, s in seconds.items())
        + f". This invocation: {wall:.0f} s.\n\n"
    )
    figure = plot_z_distributions(rows, efficiencies, args.output / "z_distributions.png")
    text += (
        f"\nFigure: {figure.name} (local Z of every cut on background-only data, before and after the fix).\n"
    )
    (args.output / "summary.md").write_text(header + text)
    (args.output / "summary.json").write_text(
        json.dumps(
            {**summary, "turn_on_sr": turn_on_sr, "fit_start": start, "n_draw": n_draw},
            indent=1,
            default=float,
        )
    )
    print(header + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""False-discovery and injected-signal checks of the bump hunt on synthetic pseudo-datasets.

1. **Null check.** ``--datasets`` background-only pseudo-datasets (m_JJ from the dijet function, Poisson
   total), each with an anomaly score drawn three ways:

   - ``uncorrelated``: N(0, 1), independent of m_JJ — what a working weakly supervised method gives
     on background;
   - ``monotonic``: N(0, 1) + k (m_JJ - 3.5 TeV)/1 TeV — a smooth m_JJ dependence; the cut sculpts the
     spectrum smoothly and the sideband fit should absorb it;
   - ``peaked``: N(0, 1) + k exp(-(m_JJ - 3.5 TeV)^2 / (2 (300 GeV)^2)) — a classifier that learned m_JJ
     near the SR (e.g. through correlated features); the cut makes a fake bump that the null check
     must expose.

   For each working point it prints the distribution of the SR pull (n - b)/sqrt(b + sigma_b^2) (should
   be ~N(0, 1)), of the one-sided local Z, the fraction of pseudo-datasets with Z > 1, 2, 3 against the
   Gaussian rates (15.9 %, 2.28 %, 0.135 %) with binomial uncertainties, the number of flagged fits and
   of fits that rise somewhere (warning ``not_falling``: the cut sculpted the spectrum).

2. **Injected-signal check.** ``--signal-datasets`` pseudo-datasets with a Gaussian resonance
   (3.5 TeV, width 170 GeV) at LHCO-like S/B and a signal-like score (signal N(shift, 1)): the local Z
   without a cut and after the best cut, their ratio (target >= 2), where the excess sits (the
   signal-weighted centroid of data - fit in the SR and the bin of the largest pull), and whether the
   sliding-window scan's most significant window contains 3.5 TeV.

Run on demand (about 1-2 minutes on one core with the defaults)::

    python benchmarks/bumphunt_null.py --datasets 30 --signal-datasets 5 --output bh_null_out
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from radar.analysis import bumphunt as bh  # noqa: E402

log = logging.getLogger("benchmarks.bumphunt_null")

SR = (3300.0, 3700.0)
KINDS = ("uncorrelated", "monotonic", "peaked")


def pseudo_dataset(
    n_mean: int, kind: str, strength: float, seed: int, n_signal: int = 0, shift: float = 2.5
) -> dict[str, np.ndarray]:
    """One pseudo-dataset: Poisson-fluctuated size, background score of the given ``kind``."""
    rng = np.random.default_rng(seed)
    n = int(rng.poisson(n_mean))
    sculpting = 0.0 if kind == "uncorrelated" else strength
    return bh.toy_dataset(
        n,
        n_signal,
        signal_score_shift=shift,
        sculpting=sculpting,
        sculpting_kind="peaked" if kind == "uncorrelated" else kind,
        seed=seed + 1,
    )


def binomial_band(k: int, n: int) -> str:
    """k/n with a 68 % Clopper-Pearson interval."""
    lo = stats.beta.ppf(0.16, k, n - k + 1) if k > 0 else 0.0
    hi = stats.beta.ppf(0.84, k + 1, n - k) if k < n else 1.0
    return f"{100 * k / n:5.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"


def null_check(args) -> dict:
    out = {}
    for kind in KINDS:
        pulls = {e: [] for e in args.efficiencies}
        zs = {e: [] for e in args.efficiencies}
        flagged = {e: 0 for e in args.efficiencies}
        warned = {e: 0 for e in args.efficiencies}
        t0 = time.perf_counter()
        for i in range(args.datasets):
            strength = {"uncorrelated": 0.0, "monotonic": args.monotonic, "peaked": args.peaked}[kind]
            data = pseudo_dataset(args.events, kind, strength, seed=1000 * (KINDS.index(kind) + 1) + i)
            result = bh.bump_hunt(
                data["mjj"], data["score"], efficiencies=args.efficiencies, fit_range=tuple(args.fit_range)
            )
            for wp in result.working_points:
                flagged[wp.efficiency] += not wp.fit.ok
                warned[wp.efficiency] += "not_falling" in wp.fit.warnings
                pulls[wp.efficiency].append((wp.n_obs - wp.b) / math.sqrt(wp.b + wp.sigma_b**2))
                zs[wp.efficiency].append(wp.z_local)
        print(
            f"\n== null check, score {kind}"
            + (f" (strength {strength})" if kind != "uncorrelated" else "")
            + f": {args.datasets} pseudo-datasets of ~{args.events} events, {time.perf_counter() - t0:.0f} s"
        )
        print(
            f"{'selection':>10} {'pull mean':>9} {'pull std':>8} {'Z median':>8} {'Z max':>6}   "
            f"{'Z>1 (15.9%)':>22} {'Z>2 (2.28%)':>22} {'Z>3 (0.135%)':>22} {'flagged':>7} {'rising':>6}"
        )
        rows = {}
        for eff in args.efficiencies:
            p = np.array(pulls[eff])
            z = np.array(zs[eff])
            n = z.size
            row = {
                "pull_mean": float(p.mean()),
                "pull_std": float(p.std(ddof=1)),
                "z_median": float(np.median(z)),
                "z_max": float(z.max()),
                "frac_z1": float(np.mean(z > 1)),
                "frac_z2": float(np.mean(z > 2)),
                "frac_z3": float(np.mean(z > 3)),
                "flagged": flagged[eff],
                "not_falling": warned[eff],
                "n": n,
                "z": z.tolist(),
                "pulls": p.tolist(),
            }
            rows[eff] = row
            name = "no cut" if eff >= 1 else f"top {100 * eff:g}%"
            print(
                f"{name:>10} {row['pull_mean']:9.2f} {row['pull_std']:8.2f} {row['z_median']:8.2f} "
                f"{row['z_max']:6.2f}   {binomial_band(int(np.sum(z > 1)), n):>22} "
                f"{binomial_band(int(np.sum(z > 2)), n):>22} {binomial_band(int(np.sum(z > 3)), n):>22} "
                f"{flagged[eff]:>7} {warned[eff]:>6}"
            )
        out[kind] = rows
    return out


def signal_check(args) -> list[dict]:
    rows = []
    print(
        f"\n== injected-signal check: {args.signal_datasets} pseudo-datasets, {args.n_signal} signal events "
        f"(Gaussian 3500 GeV, width 170 GeV), signal score N({args.shift}, 1)"
    )
    for i in range(args.signal_datasets):
        data = pseudo_dataset(
            args.events, "uncorrelated", 0.0, seed=5000 + i, n_signal=args.n_signal, shift=args.shift
        )
        result = bh.bump_hunt(
            data["mjj"],
            data["score"],
            label=data["label"],
            efficiencies=args.efficiencies,
            fit_range=tuple(args.fit_range),
        )
        no_cut = result.working_points[0]
        best = result.best or result.working_points[0]
        excess = best.counts - best.expected
        sr_centres = 0.5 * (best.edges[:-1] + best.edges[1:])[best.sr_mask]
        sr_excess = np.clip(excess[best.sr_mask], 0, None)
        centroid = (
            float(np.sum(sr_centres * sr_excess) / sr_excess.sum()) if sr_excess.sum() > 0 else float("nan")
        )
        centres = 0.5 * (best.edges[:-1] + best.edges[1:])
        peak_bin = float(centres[np.argmax(best.pulls)])
        scan = bh.scan(
            data["mjj"],
            data["score"],
            bh.sliding_windows(tuple(args.fit_range)),
            efficiency=best.efficiency,
            n_toys=args.toys,
            seed=i,
        )
        top = scan.windows[scan.max_window]
        row = {
            "s_sr": no_cut.truth["s_sr"],
            "b_sr": no_cut.truth["b_sr"],
            "s_over_b": no_cut.truth["s_over_b"],
            "s_over_sqrt_b": no_cut.truth["s_over_sqrt_b"],
            "z_no_cut": no_cut.z_local,
            "best_eff": best.efficiency,
            "z_best": best.z_local,
            "ratio": best.z_local / max(no_cut.z_local, 1e-9),
            "centroid": centroid,
            "peak_bin": peak_bin,
            "scan_window": [top.sr_low, top.sr_high],
            "scan_z_max": scan.z_max,
            "scan_z_global": scan.z_global,
            "scan_contains_mass": bool(top.sr_low <= 3500.0 <= top.sr_high),
        }
        rows.append(row)
        print(
            f"  dataset {i}: S/B = {100 * row['s_over_b']:.2f}%, S/sqrtB = {row['s_over_sqrt_b']:.2f}; "
            f"Z no cut = {row['z_no_cut']:.2f}, best (top {100 * best.efficiency:g}%) Z = {row['z_best']:.2f} "
            f"-> ratio {row['ratio']:.1f}; excess centroid {centroid:.0f} GeV, largest pull at {peak_bin:.0f} GeV; "
            f"scan max window {top.sr_low:.0f}-{top.sr_high:.0f} GeV (Z = {scan.z_max:.2f}"
            + (f", global Z = {scan.z_global:.2f}" if scan.z_global is not None else "")
            + ")"
        )
    ratios = np.array([r["ratio"] for r in rows])
    print(
        f"  summary: median Z no cut {np.median([r['z_no_cut'] for r in rows]):.2f}, median best Z "
        f"{np.median([r['z_best'] for r in rows]):.2f}, median ratio {np.median(ratios):.1f}, ratio >= 2 in "
        f"{int(np.sum(ratios >= 2))}/{len(rows)}; scan window contains 3.5 TeV in "
        f"{sum(r['scan_contains_mass'] for r in rows)}/{len(rows)}; median centroid "
        f"{np.nanmedian([r['centroid'] for r in rows]):.0f} GeV"
    )
    return rows


def plot_null(null: dict, outdir: Path, efficiencies) -> list[Path]:
    """Histogram of the SR pulls per working point and score kind against N(0, 1)."""
    import matplotlib.pyplot as plt

    from radar.plots.style import COLORS, experiment_label, save_figure, style_context, subplots

    paths = []
    for kind, rows in null.items():
        with style_context("atlas"):
            fig, ax = subplots("atlas", figsize=(8, 6))
            edges = np.linspace(-5, 8, 27)
            for j, eff in enumerate(efficiencies):
                name = "no cut" if eff >= 1 else f"top {100 * eff:g}%"
                clipped = np.clip(rows[eff]["pulls"], edges[0], edges[-1] - 1e-6)  # overflow in the last bin
                ax.hist(
                    clipped,
                    edges,
                    histtype="step",
                    lw=2,
                    color=COLORS[j % len(COLORS)],
                    label=f"{name}: std {rows[eff]['pull_std']:.2f}",
                )
            x = np.linspace(-5, 8, 300)
            n = rows[efficiencies[0]]["n"]
            ax.plot(x, n * (edges[1] - edges[0]) * stats.norm.pdf(x), "k--", label="N(0, 1)")
            ax.set_xlabel("SR pull (n - b) / \u221a(b + \u03c3$_b^2$), overflow in last bin")
            ax.set_ylabel("Pseudo-datasets")
            ax.set_xlim(edges[0], edges[-1])
            ax.set_ylim(0, ax.get_ylim()[1] * 1.5)
            ax.text(
                0.03, 0.88, f"Background only, score {kind}", transform=ax.transAxes, fontsize=12, va="top"
            )
            experiment_label(ax, "atlas")
            ax.legend(loc="upper right", fontsize=11, bbox_to_anchor=(1.0, 0.9))
            paths.append(save_figure(fig, outdir / f"null_pulls_{kind}")[0])
        plt.close("all")
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--datasets", type=int, default=30, help="background-only pseudo-datasets per score kind"
    )
    parser.add_argument(
        "--events", type=int, default=400_000, help="mean events per pseudo-dataset (2.5-7 TeV)"
    )
    parser.add_argument("--efficiencies", type=float, nargs="+", default=[1.0, 0.1, 0.01, 0.001])
    parser.add_argument("--fit-range", type=float, nargs=2, default=list(bh.DEFAULT_FIT_RANGE))
    parser.add_argument(
        "--monotonic", type=float, default=0.5, help="strength k of the monotonic m_JJ dependence"
    )
    parser.add_argument(
        "--peaked", type=float, default=0.2, help="strength k of the SR-peaked m_JJ dependence"
    )
    parser.add_argument("--signal-datasets", type=int, default=5)
    parser.add_argument("--n-signal", type=int, default=700, help="injected signal events (all masses)")
    parser.add_argument(
        "--shift", type=float, default=2.5, help="mean of the signal score (background N(0,1))"
    )
    parser.add_argument("--toys", type=int, default=20, help="toys for the scan's global significance")
    parser.add_argument("--output", type=Path, help="write results JSON and pull figures here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # flagged fits are counted in the tables, not logged

    t0 = time.perf_counter()
    null = null_check(args)
    signal = signal_check(args) if args.signal_datasets else []
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    if args.output:
        from radar.processors.io import write_json

        args.output.mkdir(parents=True, exist_ok=True)
        write_json(
            args.output / "bumphunt_null.json",
            {
                "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                "null": {kind: {str(e): row for e, row in rows.items()} for kind, rows in null.items()},
                "signal": signal,
            },
        )
        for path in plot_null(null, args.output, args.efficiencies):
            print(f"figure: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

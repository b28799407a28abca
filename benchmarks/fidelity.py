"""Generator fidelity over the whole m_JJ range: radar's generated events against the real LHC Olympics R&D
events with sidebands (run on demand, not a test).

The real events are the first 100k R&D events of ``../shared/data/lhco/peer_reclustering`` (90,941 QCD,
9,059 signal: Z' 3.5 TeV -> X(500) Y(100)), read with radar's reader. The generated ones are any radar feature
tables (``radar generate`` + ``radar process``). Per feature and m_JJ region — the lower sideband, the SR
3.3-3.7 TeV, the upper sideband, and all events from 2.6 TeV (the m_JJ shape) — it prints the two-sample KS
distance next to its statistical floor (the mean KS distance of two samples of these sizes drawn from one
distribution, 0.8687 sqrt(1/n + 1/m)) and their ratio, for QCD (generated vs real background) and for the
signal (generated vs real signal), writes ``OUT/fidelity.json`` and ``OUT/fidelity.md``, and saves the
normalised marginals with generated/real ratios per region (``OUT/fidelity_{qcd,signal}_{region}.png``).

    python benchmarks/fidelity.py --qcd qcd.parquet --signal signal.parquet \\
        --output runs/fidelity

The τ ratios of the peer files are in their convention (exclusive-kt axes, not minimised): compare them
with events processed by ``radar process --tau-convention lhco_peer`` (also measured: ``--label``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
PEER_DIR = REPO.parent / "shared" / "data" / "lhco" / "peer_reclustering"
REGIONS = {
    "sideband_low": (2600.0, 3300.0),
    "SR": (3300.0, 3700.0),
    "sideband_high": (3700.0, 7000.0),
    "all": (2600.0, 7000.0),
}
FEATURES = ("mj1", "mj2", "delta_mj", "tau21_j1", "tau21_j2", "tau32_j1", "tau32_j2", "delta_r_jj")
KS_MEAN = 0.8687  # mean of the Kolmogorov distribution: E[sqrt(nm/(n+m)) D] under the null
log = logging.getLogger("fidelity")


def ks_row(generated: np.ndarray, real: np.ndarray) -> dict[str, float]:
    """KS distance, its statistical floor (null mean) and p-value for two samples."""
    from scipy.stats import ks_2samp

    n, m = len(generated), len(real)
    if min(n, m) < 20:
        return {"ks": math.nan, "floor": math.nan, "ratio": math.nan, "p": math.nan, "n_gen": n, "n_real": m}
    result = ks_2samp(generated, real)
    floor = KS_MEAN * math.sqrt(1.0 / n + 1.0 / m)
    return {
        "ks": float(result.statistic),
        "floor": floor,
        "ratio": float(result.statistic) / floor,
        "p": float(result.pvalue),
        "n_gen": n,
        "n_real": m,
    }


def compare(generated: pd.DataFrame, real: pd.DataFrame) -> dict[str, dict[str, dict[str, float]]]:
    """{region: {feature: ks_row}}; m_JJ itself in the region 'all'."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for region, (lo, hi) in REGIONS.items():
        g = generated[(generated["mjj"] >= lo) & (generated["mjj"] < hi)]
        r = real[(real["mjj"] >= lo) & (real["mjj"] < hi)]
        rows = {f: ks_row(g[f].to_numpy(float), r[f].to_numpy(float)) for f in FEATURES}
        if region == "all":
            rows = {"mjj": ks_row(g["mjj"].to_numpy(float), r["mjj"].to_numpy(float)), **rows}
        out[region] = rows
    return out


def markdown(results: dict[str, dict], title: str) -> str:
    lines = [
        f"### {title}",
        "",
        "| feature | " + " | ".join(REGIONS) + " |",
        "|---" * (len(REGIONS) + 1) + "|",
    ]
    features = ["mjj", *FEATURES]
    for f in features:
        cells = []
        for region in REGIONS:
            row = results[region].get(f)
            if row is None or not np.isfinite(row["ks"]):
                cells.append("—")
            else:
                cells.append(f"{row['ks']:.3f} ({row['ratio']:.1f}×)")
        lines.append(f"| {f} | " + " | ".join(cells) + " |")
    counts = {r: (results[r]["mj1"]["n_gen"], results[r]["mj1"]["n_real"]) for r in REGIONS}
    lines += ["", "KS distance (its ratio to the statistical floor). Events generated / real: "]
    lines[-1] += ", ".join(f"{r} {g:,} / {m:,}" for r, (g, m) in counts.items())
    return "\n".join(lines)


def figures(generated: pd.DataFrame, real: pd.DataFrame, what: str, out: Path, style: str) -> list[Path]:
    from radar.plots.spectra import plot_feature_marginals
    from radar.plots.style import save_figure

    saved = []
    for region, (lo, hi) in REGIONS.items():
        g = generated[(generated["mjj"] >= lo) & (generated["mjj"] < hi)]
        r = real[(real["mjj"] >= lo) & (real["mjj"] < hi)]
        if min(len(g), len(r)) < 20:
            continue
        names = ["mjj", *FEATURES] if region == "all" else list(FEATURES)
        fig = plot_feature_marginals(
            r, g, names, style=style, data_label=f"real R&D ({region})", template_label="radar generated"
        )
        saved += save_figure(fig, out / f"fidelity_{what}_{region}", formats=("png",), dpi=80)
    return saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--qcd", nargs="+", type=Path, required=True, help="generated QCD feature tables")
    parser.add_argument("--signal", nargs="*", type=Path, default=[], help="generated R&D signal tables")
    parser.add_argument("--real", type=Path, default=PEER_DIR, help="the peer-reclustering directory")
    parser.add_argument("--output", type=Path, default=Path("runs/fidelity"))
    parser.add_argument("--label", default="generated", help="name of this comparison in the outputs")
    parser.add_argument("--style", default="cms")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from radar.processors.features import read_feature_table

    if not args.real.exists():
        print(f"skipped: {args.real} is absent (the real LHCO R&D events)")
        return 0
    t0 = time.perf_counter()
    real = read_feature_table(args.real)
    qcd = pd.concat([read_feature_table(p) for p in args.qcd], ignore_index=True)
    results = {"qcd": compare(qcd, real[real["label"] == 0])}
    if args.signal:
        signal = pd.concat([read_feature_table(p) for p in args.signal], ignore_index=True)
        results["signal"] = compare(signal, real[real["label"] == 1])
    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    saved = figures(qcd, real[real["label"] == 0], f"{args.label}_qcd", out, args.style)
    if args.signal:
        saved += figures(signal, real[real["label"] == 1], f"{args.label}_signal", out, args.style)
    report = {
        "label": args.label,
        "qcd_inputs": [str(p) for p in args.qcd],
        "signal_inputs": [str(p) for p in args.signal],
        "real": str(args.real),
        "regions": REGIONS,
        "results": results,
        "figures": [str(p) for p in saved],
        "seconds": time.perf_counter() - t0,
    }
    (out / f"fidelity_{args.label}.json").write_text(json.dumps(report, indent=1))
    text = "\n\n".join(markdown(results[k], f"{args.label}: {k} vs real R&D {k}") for k in results)
    (out / f"fidelity_{args.label}.md").write_text(text + "\n")
    print(text)
    print(f"figures: {[p.name for p in saved]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

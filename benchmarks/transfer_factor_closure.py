"""Would a pass/fail transfer factor close? A study on the saved scores of ``benchmarks/null_chain.py``.

The bump hunt's dijet fit over SR ± 600 GeV closes, but most of a true signal's significance goes into the
fit's σ_b. This script hunts the same saved scores with a cheaper background model — the cut efficiency per
m_JJ bin fitted in the sidebands as exp(polynomial in m_JJ) (degree 1, or 2 when −2 ln L drops by > 3.84),
times the uncut SR counts — and prints, per method and working point, the local Z over the background-only
(``null_*``) and the signal (``signal_*``) datasets. Measured numbers: docs/closure.md ("A cheaper background
model does not close"): it closes for CATHODE but not for CWoLa Hunting or LaCATHODE, so radar does not use it.

    python benchmarks/transfer_factor_closure.py runs/null_chain_perfold
"""

from __future__ import annotations

import argparse
import glob
import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from radar.analysis import bumphunt as bh
from radar.analysis.bumphunt.significance import local_significance

SR = (3300.0, 3700.0)
EFFICIENCIES = (0.2, 0.05, 0.01)


def transfer_factor_hunt(mjj, score, in_sr, eff, edges, max_degree=2):
    """Local Z, observed, predicted b and σ_b, and the chosen degree at one working point."""
    in_fit = (mjj >= edges[0]) & (mjj < edges[-1])
    selected, _ = bh.score_cut(score, in_fit, in_sr, eff, "transfer factor")
    n = np.histogram(mjj[in_fit], edges)[0].astype(float)
    k = np.histogram(mjj[selected], edges)[0].astype(float)
    centres = 0.5 * (edges[1:] + edges[:-1])
    t = (centres - 0.5 * sum(SR)) / 1000.0
    sr = (centres > SR[0]) & (centres < SR[1])
    sb = ~sr & (n > 0)
    best = None
    for degree in range(1, max_degree + 1):
        X = np.vander(t, degree + 1, increasing=True)

        def nll(theta, X=X):
            mu = n[sb] * np.exp(X[sb] @ theta)
            return float(np.sum(mu - k[sb] * np.log(np.maximum(mu, 1e-300))))

        start = np.zeros(degree + 1)
        start[0] = math.log(max(k[sb].sum(), 1.0) / n[sb].sum())
        fit = minimize(nll, start, method="BFGS")
        mu = n[sb] * np.exp(X[sb] @ fit.x)
        candidate = {"degree": degree, "theta": fit.x, "cov": np.linalg.inv((X[sb] * mu[:, None]).T @ X[sb])}
        candidate.update(nll=fit.fun, X=X)
        if best is not None and 2 * (best["nll"] - fit.fun) <= 3.84:
            break
        best = candidate
    X = best["X"]
    eff_bins = np.exp(X @ best["theta"])
    b = float(np.sum(n[sr] * eff_bins[sr]))
    gradient = (n[sr] * eff_bins[sr]) @ X[sr]
    sigma_b = float(math.sqrt(max(gradient @ best["cov"] @ gradient, 0.0)))
    n_obs = float(k[sr].sum())
    z, _, _ = local_significance(n_obs, b, sigma_b)
    return float(z), n_obs, b, sigma_b, best["degree"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a benchmarks/null_chain.py output directory")
    args = parser.parse_args()
    for kind in ("null", "signal"):
        rows = []
        for dataset in sorted(glob.glob(str(args.run / f"{kind}_*"))):
            for method in ("cathode", "cwola_hunting", "lacathode"):
                files = glob.glob(f"{dataset}/sr_3300_3700/search/{method}/inj_*/seed_0/scores.parquet")
                if not files:
                    continue
                s = pd.read_parquet(files[0])
                mjj, score, in_sr = s["mjj"].to_numpy(), s["score"].to_numpy(), s["in_sr"].to_numpy()
                fit_range = bh.fit_window(bh.resolve_fit_range(mjj, SR, None, 100.0), SR, 600, 100.0)
                edges = bh.mass_bin_edges(fit_range, SR, 100.0)
                for eff in EFFICIENCIES:
                    z, n_obs, b, sigma_b, degree = transfer_factor_hunt(mjj, score, in_sr, eff, edges)
                    rows.append(
                        {"dataset": Path(dataset).name, "method": method, "eff": eff, "z": z, "n_obs": n_obs}
                        | {"b": b, "sigma_b": sigma_b, "degree": degree}
                    )
        if not rows:
            continue
        table = pd.DataFrame(rows)
        z = table.groupby(["method", "eff"])["z"]
        print(f"\n{kind} datasets: local Z with the transfer factor")
        print(
            pd.DataFrame(
                {
                    "datasets": z.size(),
                    "mean": z.mean().round(2),
                    "std": z.std().round(2),
                    "> 2σ": z.apply(lambda v: int((v > 2).sum())),
                    "> 3σ": z.apply(lambda v: int((v > 3).sum())),
                    "max": z.max().round(2),
                }
            ).to_string()
        )


if __name__ == "__main__":
    main()

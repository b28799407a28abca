"""Global significance of the largest local excess of a scan: background-only toys where they reach, and beyond
them the Gross–Vitells asymptotic look-elsewhere correction calibrated on the same toys.

Gross & Vitells, Eur. Phys. J. C 70 (2010) 525 (arXiv:1005.1891): for a scan whose local test statistic
q = Z² is asymptotically χ²₁/2-distributed (one-sided), the probability that its maximum exceeds u is

    p_global(u) ≈ p_local(u) + ⟨N(u₀)⟩ · exp(−(u − u₀) / 2),

where ⟨N(u₀)⟩ is the mean number of up-crossings of a low reference level u₀ by the local Z along the scan,
measured on background-only toys (plentiful at low levels). A search that takes the maximum over several
scans (methods, working points) gets the sum over them — an upper bound (Bonferroni for the starting
points, exact additivity for the up-crossings), so the number is conservative.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

#: the toy p-value is used while at least this many toys reach the observed maximum; beyond, the
#: asymptotic value (its relative statistical error is then below 1/sqrt(MIN_TOYS_ABOVE) ≈ 32 %)
MIN_TOYS_ABOVE = 10


def upcrossings(z: np.ndarray, level: float) -> int:
    """Number of up-crossings of ``level`` by the sequence ``z`` (ordered along the scan: z[i-1] < level ≤ z[i]);
    non-finite entries (failed fits) break the sequence and count as below the level."""
    z = np.nan_to_num(np.asarray(z, dtype=float), nan=-np.inf)
    above = z >= level
    return int(np.sum(~above[:-1] & above[1:]))


def gross_vitells(z_obs: float, mean_upcrossings: float, z0: float, n_scans: int = 1) -> float:
    """Asymptotic global p-value of a maximum local significance ``z_obs`` (one-sided), from the mean number of
    up-crossings of ``z0`` (summed over the ``n_scans`` scans whose maximum is taken), capped at 1."""
    p = n_scans * stats.norm.sf(z_obs) + mean_upcrossings * math.exp(-(z_obs**2 - z0**2) / 2.0)
    return float(min(1.0, p))


def toy_scans(spec: dict[str, Any], seeds: Sequence[int]) -> list[tuple[float, float]]:
    """Background-only toys of a whole scan, one per seed (runs as a task: ``spec`` is plain data). Per toy:
    (max usable local Z, up-crossings of ``z0`` summed over the sequences).

    spec: ``grid`` (bin edges, GeV) and ``mu`` (expected background counts per bin, the toy generator);
    ``windows``: per window ``index`` (its place along the scan), ``sr``, ``slice`` (bin range of its fit on
    the grid), ``no_cut`` (None or ``{"theta"}``: the uncut spectrum is hunted too) and ``methods``: per score
    its cut working points ``[{"efficiency", "eff" (realised), "theta"}]`` in decreasing efficiency;
    ``n_windows``, ``sequences`` (the keys ``"no cut"`` and ``"<score> <efficiency>"``), ``z0``.

    Every window of every toy is refitted as on data (the data fit's parameters as start): the uncut spectrum,
    and per score its working points as nested binomial thinnings with the realised cut efficiencies (the
    cuts of one score are nested; windows and scores thin independently — conservative).
    """
    from radar.analysis.bumphunt.fit import FitConfig
    from radar.analysis.bumphunt.workingpoints import hunt_spectrum

    grid = np.asarray(spec["grid"], dtype=float)
    mu = np.asarray(spec["mu"], dtype=float)
    config = FitConfig()
    out = []
    for seed in seeds:
        rng = np.random.default_rng(int(seed))
        toy = rng.poisson(mu)
        sequences = {key: np.full(spec["n_windows"], np.nan) for key in spec["sequences"]}

        def hunt(counts, edges, win, theta, key, sequences=sequences):
            fit, sr = hunt_spectrum(
                counts.astype(float), edges, win["sr"], config, [theta[:3]] if theta else None
            )
            if fit.ok and np.isfinite(sr["z_local"]):
                sequences[key][win["index"]] = sr["z_local"]

        for win in spec["windows"]:
            lo_i, hi_i = win["slice"]
            base, edges = toy[lo_i:hi_i], grid[lo_i : hi_i + 1]
            if win.get("no_cut") is not None:
                hunt(base, edges, win, win["no_cut"]["theta"], "no cut")
            for name, wps in win["methods"].items():
                counts, previous = base, 1.0
                for wp in wps:
                    eff = min(max(wp["eff"], 0.0), previous)
                    counts = rng.binomial(counts, eff / previous if previous > 0 else 0.0)
                    previous = eff
                    hunt(counts, edges, win, wp["theta"], f"{name} {wp['efficiency']:g}")
        zs = np.concatenate([seq[np.isfinite(seq)] for seq in sequences.values()] or [np.zeros(0)])
        ups = sum(upcrossings(seq, spec["z0"]) for seq in sequences.values())
        out.append((float(zs.max()) if zs.size else 0.0, float(ups)))
    return out


def z_from_p(p: float) -> float:
    """One-sided Z of a p-value (0 for p ≥ 0.5)."""
    return float(max(stats.norm.isf(p), 0.0)) if p > 0 else float("inf")


def global_significance(
    z_obs: float,
    toys_max_z: Sequence[float],
    toys_upcrossings: Sequence[float],
    z0: float = 1.0,
    n_scans: int = 1,
) -> dict[str, Any]:
    """The global significance of the observed maximum local Z ``z_obs`` of a scan.

    toys_max_z (n_toys,): the maximum local Z of each background-only toy scan (refitted like the data);
    toys_upcrossings (n_toys,): each toy's up-crossings of ``z0``, summed over its ``n_scans`` sequences.

    Returns a dict: ``p_global``/``z_global`` and ``method`` (``"toys"`` while ≥ :data:`MIN_TOYS_ABOVE` toys
    reach ``z_obs``; otherwise ``"asymptotic (Gross-Vitells, calibrated on N toys)"``); ``p_toys`` and its
    bound (with zero toys above, ``z_toys`` is a lower bound, written ``z_toys_is_lower_bound``);
    ``p_asymptotic``; ``trials_factor`` = p_global / p_local; ``calibration``: the toy and asymptotic
    p-values at the toys' 90 % quantile of the maximum (their agreement checks the asymptotic formula where
    toys reach).
    """
    toys = np.asarray(toys_max_z, dtype=float)
    ups = np.asarray(toys_upcrossings, dtype=float)
    n = int(toys.size)
    p_local = float(stats.norm.sf(z_obs))
    out: dict[str, Any] = {
        "z_local": float(z_obs),
        "p_local": p_local,
        "n_toys": n,
        "z0": z0,
        "n_scans": n_scans,
    }
    if n == 0:
        out.update(p_global=None, z_global=None, method="none (no toys)", trials_factor=None)
        return out
    above = int(np.sum(toys >= z_obs))
    p_toys = (above + 1.0) / (n + 1.0) if above == 0 else above / n
    mean_up = float(ups.mean())
    p_asym = gross_vitells(z_obs, mean_up, z0, n_scans)
    z_mid = float(np.quantile(toys, 0.9))
    out.update(
        n_toys_above=above,
        p_toys=p_toys,
        z_toys=z_from_p(p_toys),
        z_toys_is_lower_bound=above == 0,
        mean_upcrossings=mean_up,
        p_asymptotic=p_asym,
        z_asymptotic=z_from_p(p_asym),
        calibration={
            "z": z_mid,
            "p_toys": float(np.mean(toys >= z_mid)),
            "p_asymptotic": gross_vitells(z_mid, mean_up, z0, n_scans),
        },
    )
    if above >= MIN_TOYS_ABOVE:
        out.update(p_global=p_toys, method="toys")
    else:
        out.update(p_global=p_asym, method=f"asymptotic (Gross-Vitells, calibrated on {n} toys)")
    out["z_global"] = z_from_p(out["p_global"])
    out["trials_factor"] = out["p_global"] / p_local if p_local > 0 else None
    return out

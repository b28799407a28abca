"""A short Markdown report of a bump hunt (results table + figure links), written into a run directory.

Works from saved results only: the dicts written by ``BumpHuntResult.save`` / ``ScanResult.save``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _fmt(value: Any, spec: str = ".2f") -> str:
    if value is None:
        return "–"
    try:
        if value != value:  # NaN
            return "–"
        return format(value, spec)
    except (TypeError, ValueError):
        return str(value)


def _wp_name(efficiency: float) -> str:
    return "no cut" if efficiency >= 1 else f"top {100 * efficiency:.3g} %"


def markdown_table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def bumphunt_table(result: Mapping[str, Any]) -> str:
    """Markdown table: one row per working point (selection, observed and predicted SR counts, local Z,
    fit function, sideband chi2/ndf and p-value, flags, and the true S, B when labels were known)."""
    header = ["Selection", "Score cut", "SR obs", "SR pred.", "Local Z", "Fit", "χ²/ndf (p)", "Flags"]
    truth = any(wp.get("truth") for wp in result["working_points"])
    if truth:
        header += ["true S / B in SR", "true S/√B"]
    rows = []
    for wp in result["working_points"]:
        fit = wp["fit"]
        row = [
            _wp_name(wp["efficiency"]),
            "–" if wp["efficiency"] >= 1 else _fmt(wp["threshold"], ".4g"),
            _fmt(wp["n_obs"], ".0f"),
            f"{_fmt(wp['b'], '.1f')} ± {_fmt(wp['sigma_b'], '.1f')}",
            _fmt(wp["z_local"]),
            f"dijet{fit['n_params']}",
            f"{_fmt(fit['deviance'], '.1f')}/{fit['ndf']} ({_fmt(fit['gof_pvalue'], '.2g')})",
            ", ".join(wp.get("flags", fit["flags"]) + [f"warning: {w}" for w in fit.get("warnings", [])])
            or "ok",
        ]
        if truth:
            t = wp.get("truth") or {}
            row += [
                f"{_fmt(t.get('s_sr'), '.0f')} / {_fmt(t.get('b_sr'), '.0f')}",
                _fmt(t.get("s_over_sqrt_b")),
            ]
        rows.append(row)
    return markdown_table(rows, header)


def scan_table(scan: Mapping[str, Any]) -> str:
    """Markdown table: one row per scan window (SR, obs, pred., local Z, p-value, fit flags)."""
    rows = []
    for i, window in enumerate(scan["windows"]):
        mark = " ⟵ max" if i == scan["max_window"] else ""
        rows.append(
            [
                f"{window['sr_low']:.0f}–{window['sr_high']:.0f}{mark}",
                _fmt(scan["n_obs"][i], ".0f"),
                f"{_fmt(scan['b'][i], '.1f')} ± {_fmt(scan['sigma_b'][i], '.1f')}",
                _fmt(scan["z_local"][i]),
                _fmt(scan["p_local"][i], ".3g"),
                ", ".join(scan["flags"][i]) or "ok",
            ]
        )
    return markdown_table(rows, ["SR [GeV]", "Obs", "Pred.", "Local Z", "Local p", "Fit"])


def write_report(
    run_dir: str | Path,
    bumphunt: Mapping[str, Any] | None = None,
    scan: Mapping[str, Any] | None = None,
    figures: Sequence[str | Path] = (),
    title: str = "radar bump hunt",
    notes: Sequence[str] = (),
    extra_sections: Mapping[str, str] | None = None,
    filename: str = "report.md",
) -> Path:
    """Write ``run_dir/report.md``: what was done, the results tables, and the figures (relative links).

    bumphunt / scan: saved result dicts (either may be None). figures: PNG paths (linked relative to
    ``run_dir``). notes: extra bullet lines (e.g. data provenance). extra_sections: heading -> Markdown
    (e.g. the search's metrics table). Returns the report path.
    """
    from radar.processors.io import atomic_output

    run_dir = Path(run_dir)
    lines = [f"# {title}", ""]
    if bumphunt is not None:
        sr = bumphunt["signal_region"]
        cfg = bumphunt.get("fit_config", {})
        best = _best(bumphunt)
        lines += [
            "## Bump hunt",
            "",
            f"- Signal region {sr[0]:.0f}–{sr[1]:.0f} GeV; sideband fit over {bumphunt['fit_range'][0]:.0f}–"
            f"{bumphunt['fit_range'][1]:.0f} GeV in {bumphunt['bin_width']:.0f} GeV bins; "
            f"{bumphunt['n_events']} events, {bumphunt['n_sr']} in the SR.",
            "- Score cuts keep the given fraction of SR events; the same threshold is applied in the sidebands.",
            "- Fit: dijet function f(x) = p0 (1−x)^p1 / x^(p2 + p3 ln x), x = m_JJ/13 TeV, binned Poisson "
            f"likelihood; 4 parameters only if −2 ln L drops by more than {cfg.get('wilks_threshold', 3.84)} "
            f"(Wilks); fits with goodness-of-fit p < {cfg.get('gof_pvalue_min', 1e-3)}, invalid minima or "
            "inaccurate covariance are flagged; a fit that rises anywhere gets the warning not_falling "
            "(signal in the sidebands or a sculpting cut).",
            "- Local Z: profile likelihood, Poisson SR count with the fit uncertainty as a Gaussian-constrained "
            "nuisance; one-sided (0 for deficits).",
        ]
        lines.append(
            "- Every cut is checked for sculpting (cut efficiency vs m_JJ, figures `efficiency_*`): the "
            "control tail (lowest-scoring SR fraction) must not be larger in the SR than the sidebands predict, "
            "and the efficiencies must be straight lines in m_JJ over the sidebands. A sculpted working point "
            "is never the headline."
        )
        if best is not None:
            lines.append(
                f"- **Most significant usable working point: {_wp_name(best['efficiency'])}, local Z = "
                f"{best['z_local']:.2f}** (no cut: Z = {_no_cut_z(bumphunt)})."
            )
        else:
            lines.append(
                "- **No usable working point**: every fit is flagged or every cut sculpted; no "
                "significance is quoted."
            )
        flagged = [wp for wp in bumphunt["working_points"] if wp.get("flags", wp["fit"]["flags"])]
        if flagged:
            lines.append(
                f"- **{len(flagged)} working point(s) flagged**: "
                + "; ".join(
                    f"{_wp_name(wp['efficiency'])}: {', '.join(wp.get('flags', wp['fit']['flags']))}"
                    for wp in flagged
                )
            )
        for wp in bumphunt["working_points"]:
            for reason in (wp.get("sculpting") or {}).get("reasons", []):
                lines.append(f"- {_wp_name(wp['efficiency'])} sculpted: {reason}.")
        lines += ["", bumphunt_table(bumphunt), ""]
    if scan is not None:
        lines += [
            "## Sliding-window scan",
            "",
            f"- Score cut: {_wp_name(scan['efficiency'])} of each window's SR; each window has its own "
            "sidebands and fit.",
            f"- Max local Z = {scan['z_max']:.2f} in SR {scan['max_window_sr'][0]:.0f}–"
            f"{scan['max_window_sr'][1]:.0f} GeV.",
        ]
        if scan.get("z_global") is not None:
            glob = scan.get("global") or {}
            line = (
                f"- Global significance ({glob.get('method', 'toys')}; {scan['n_toys']} background-only toy "
                f"spectra): p = {scan['p_global']:.3g}, Z = {scan['z_global']:.2f}."
            )
            if glob.get("z_toys_is_lower_bound"):
                line += f" No toy reached the observed Z: the toys alone say Z ≥ {glob['z_toys']:.2f}."
            lines.append(line)
        lines += ["", scan_table(scan), ""]
    for heading, body in (extra_sections or {}).items():
        lines += [f"## {heading}", "", body, ""]
    if notes:
        lines += ["## Notes", ""] + [f"- {note}" for note in notes] + [""]
    if figures:
        lines += ["## Figures", ""]
        for fig in figures:
            rel = os.path.relpath(Path(fig).resolve(), run_dir.resolve())
            pdf = str(Path(rel).with_suffix(".pdf"))
            lines += [f"![{Path(rel).stem}]({rel})", f"[{Path(rel).stem} (PDF)]({pdf})", ""]
    path = run_dir / filename
    with atomic_output(path) as tmp:
        tmp.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    log.info("wrote %s", path)
    return path


def _best(result: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The most significant usable working point (good fit, not sculpted) of a saved result, or None."""
    usable = [
        wp
        for wp in result["working_points"]
        if wp.get("usable", wp["fit"]["ok"]) and wp["z_local"] == wp["z_local"]
    ]
    return max(usable, key=lambda wp: wp["z_local"]) if usable else None


def _no_cut_z(result: Mapping[str, Any]) -> str:
    for wp in result["working_points"]:
        if wp["efficiency"] >= 1:
            return _fmt(wp["z_local"])
    return "not computed"


def load_scores(path: str | Path):
    """Read a ``scores.parquet`` (columns ``mjj`` GeV, ``score``; optional ``label``, ``weight``, ``in_sr``)
    and check it. Returns a DataFrame."""
    import numpy as np
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such scores file")
    frame = pd.read_parquet(path)
    missing = [c for c in ("mjj", "score") if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{path}: missing columns {missing}; a scores file needs mjj (GeV) and score "
            f"(has {list(frame.columns)})"
        )
    if "role" in frame and "extra" in set(frame["role"].astype(str)):
        raise ValueError(
            f"{path}: written by a radar before the closure fix: its sideband events were scored by the mean "
            "of the k fold models, a narrower distribution than the SR's single-model scores, which fakes "
            "bumps after a cut; rerun the search (radar search --overwrite) to rescore every event out of fold"
        )
    bad = ~np.isfinite(frame["mjj"].to_numpy(float))
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValueError(f"{path}: {bad.sum()} rows have a non-finite mjj (first rows {rows[:5].tolist()})")
    return frame


def make_bumphunt_outputs(
    scores,
    outdir: str | Path,
    *,
    efficiencies: Sequence[float] | None = None,
    signal_region: tuple[float, float] = (3300.0, 3700.0),
    fit_range: tuple[float, float] | None = None,
    bin_width: float = 100.0,
    fit_sideband: float | None = None,
    fit_config=None,
    min_sideband: float | None = None,
    style: str = "atlas",
    scan: bool = False,
    scan_efficiency: float = 0.01,
    scan_windows: Sequence[Any] | None = None,
    scan_scores=None,
    n_toys: int = 100,
    seed: int = 0,
    title: str = "radar bump hunt",
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """The bump-hunt stage of a run: hunt at every working point (and optionally the scan), save the JSON
    results, draw the figures and write the report into ``outdir``.

    scores: DataFrame with ``mjj`` (GeV), ``score`` and optionally ``label``, ``weight``, ``in_sr``.
    fit_range: clipped to the scored events (:func:`radar.analysis.bumphunt.resolve_fit_range`); None follows the
    data (above the trigger turn-on). fit_sideband: the SR's fit window inside it (GeV each side,
    :func:`radar.analysis.bumphunt.fit_window`); None: :data:`~radar.analysis.bumphunt.DEFAULT_FIT_SIDEBAND` when
    the fit range follows the data, the whole given ``fit_range`` otherwise; 0: the whole range. The scan
    always covers the whole range.
    scan_scores: what :func:`radar.analysis.bumphunt.scan` takes (callable per window, list of arrays); default:
    the same ``score`` column for every window (no retraining). Returns a dict with the result dicts and
    the paths written: ``bumphunt_json``, ``scan_json``, ``figures`` (PNGs), ``report``.
    """
    import numpy as np

    from radar.analysis import bumphunt as bh
    from radar.plots.scan import plot_scan
    from radar.plots.spectra import plot_bumphunt
    from radar.plots.style import save_figure

    outdir = Path(outdir)
    figdir = outdir / "figures"
    fit_config = fit_config or bh.FitConfig()
    mjj = scores["mjj"].to_numpy(float)
    if fit_sideband is None:
        fit_sideband = bh.DEFAULT_FIT_SIDEBAND if fit_range is None else 0.0
    fit_range = bh.resolve_fit_range(mjj, signal_region, fit_range, bin_width)
    hunt_range = bh.fit_window(fit_range, signal_region, fit_sideband, bin_width)
    weight = scores["weight"].to_numpy(float) if "weight" in scores else None
    label = scores["label"].to_numpy(float) if "label" in scores else None
    in_sr = scores["in_sr"].to_numpy(bool) if "in_sr" in scores else None
    result = bh.bump_hunt(
        mjj,
        scores["score"].to_numpy(float),
        in_sr=in_sr,
        signal_region=signal_region,
        efficiencies=tuple(efficiencies or bh.DEFAULT_EFFICIENCIES),
        fit_range=hunt_range,
        bin_width=bin_width,
        weight=weight,
        label=label,
        config=fit_config,
        min_sideband=bh.MIN_SIDEBAND if min_sideband is None else min_sideband,
    )
    out: dict[str, Any] = {
        "bumphunt": result.to_dict(),
        "bumphunt_json": result.save(outdir / "bumphunt.json"),
    }
    figures = plot_bumphunt(out["bumphunt"], figdir, style)
    out["scan"], out["scan_json"] = None, None
    if scan:
        source = scan_scores if scan_scores is not None else scores["score"].to_numpy(float)
        scan_result = bh.scan(
            mjj,
            source,
            scan_windows,
            efficiency=scan_efficiency,
            bin_width=bin_width,
            fit_range=fit_range,
            weight=weight,
            n_toys=n_toys,
            seed=seed,
            config=fit_config,
            progress=True,
        )
        out["scan"] = scan_result.to_dict()
        out["scan_json"] = scan_result.save(outdir / "scan.json")
        injected = None
        if label is not None and np.any(label == 1):
            injected = float(np.median(mjj[label == 1]))
        figures.append(
            save_figure(
                plot_scan(out["scan"], style, injected, "True signal, median"), figdir / "scan_pvalue"
            )[0]
        )
    out["figures"] = figures
    out["report"] = write_report(outdir, out["bumphunt"], out["scan"], figures, title=title, notes=notes)
    return out

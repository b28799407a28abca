"""``radar nonresonant CONFIG.yaml``: the non-resonant search by background extrapolation
(:mod:`radar.analysis.nonresonant`) on feature tables — every (method, injection, seed), a k-fold CWoLa
classifier per unit, test metrics, closure and the cut-excess null check → ``rows.jsonl`` and ``summary.md``.

Config (paths relative to the YAML file; unknown keys are errors)::

    name: svj_extrapolation
    output: ../runs/svj_extrapolation
    input:
      data: qcd.parquet              # "data" (labels only for evaluation; label-1 events are dropped)
      mc: qcd_simulation.parquet     # the background simulation that guides the extrapolation
                                     # (optional: without it generate samples at the SR data's
                                     # contexts -- context mjj + an mjj interval = the resonant CATHODE)
      signal: svj.parquet            # pool: half injected, half for the test set and supervised
      truth: null                    # independent background (ideal template, test set);
                                     # default: a random half of the data's background
    regions: {ht: [800, null], met: [75, null]}      # SR: every cut holds; CR: the rest
    range: {}                        # optional analysed range, e.g. {mjj: [1500, 6500]}
    features: [mjj, tau21_j1, tau32_j1, tau21_j2, tau32_j2]
    classify_on: null                # classifier inputs; default: features + context
    methods: [reweight, generate, morph, ideal, supervised]
    injections: [0, 300, 1000]       # signal events injected into the data
    inject_into: anywhere            # or sr: only SR signal events (one template per seed serves all)
    seeds: [0, 1, 2, 3, 4]
    simulation_transform: none       # or hand_tuned (the seed's deliberately worse simulation)
    classifier: {name: hgb, settings: {n_models: 3}}
    template_settings: {generate: {flow: {epochs: 50}}}
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

log = logging.getLogger(__name__)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NonresonantInput(_Strict):
    data: str = Field(description="data feature table (labels used only for evaluation)")
    mc: str | None = Field(
        None,
        description="background simulation feature table; without one only generate (at the SR data's own "
        "contexts: with context m_JJ and an m_JJ interval as the SR, the resonant CATHODE), ideal and "
        "supervised run",
    )
    signal: str | None = Field(None, description="signal pool (injections, test set, supervised)")
    truth: str | None = Field(None, description="independent background; default: half of the data's")


class NonresonantClassifier(_Strict):
    name: Literal["hgb", "mlp"] = "hgb"
    settings: dict[str, Any] = Field(default_factory=dict)


class NonresonantConfig(_Strict):
    name: str = "nonresonant"
    output: str = "runs/nonresonant"
    input: NonresonantInput
    regions: dict[str, tuple[float | None, float | None]]
    range: dict[str, tuple[float | None, float | None]] = Field(
        default_factory=dict,
        description="the analysed range: events outside these cuts are dropped from every input (e.g. "
        "{mjj: [1500, 6500]} for a resonant search, whose CR is then the sidebands inside it)",
    )
    features: list[str] = Field(min_length=1)
    classify_on: list[str] | None = None
    methods: list[str] = Field(
        default_factory=lambda: ["reweight", "generate", "morph", "ideal", "supervised"]
    )
    injections: list[int] = Field(default_factory=lambda: [0])
    inject_into: Literal["anywhere", "sr"] = Field(
        "anywhere",
        description="where injected signal events come from: anywhere (as the reference; a signal share in "
        "the CR refits the templates per injection) or only the SR (one template per seed serves every "
        "injection)",
    )
    seeds: list[int] = Field(default_factory=lambda: [0])
    data_seed: int = 0
    simulation_transform: Literal["none", "hand_tuned"] = "none"
    classifier: NonresonantClassifier = Field(default_factory=NonresonantClassifier)
    k_folds: int = Field(5, ge=2)
    template_settings: dict[str, dict[str, Any]] = Field(default_factory=dict)
    rejection: float = Field(1000.0, gt=1)
    efficiencies: list[float] = Field(default_factory=lambda: [0.1, 0.01])
    base_dir: str = Field(".", exclude=True)

    def path(self, value: str | None) -> Path | None:
        if value is None:
            return None
        p = Path(value).expanduser()
        return p if p.is_absolute() else (Path(self.base_dir) / p).resolve()


def load_nonresonant_config(path: str | Path) -> NonresonantConfig:
    import yaml

    from radar.analysis.nonresonant import METHODS, ContextRegions
    from radar.analysis.regions import check_cuts

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such config file")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML ({error})") from error
    try:
        cfg = NonresonantConfig(**values, base_dir=str(path.parent))
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
        raise ValueError(f"{path}: {problems}") from None
    unknown = sorted(set(cfg.methods) - set(METHODS))
    if unknown:
        raise ValueError(f"{path}: methods: unknown {unknown}; available: {list(METHODS)}")
    unknown = sorted(set(cfg.template_settings) - {"reweight", "generate", "morph"})
    if unknown:
        raise ValueError(f"{path}: template_settings: unknown methods {unknown} (reweight, generate, morph)")
    try:
        ContextRegions(dict(cfg.regions))
    except ValueError as error:
        raise ValueError(f"{path}: regions: {error}") from None
    check_cuts(dict(cfg.range), f"{path}: range")  # the same check as the regions' own cuts
    if cfg.input.mc is None:
        needs_mc = sorted(set(cfg.methods) - {"generate", "ideal", "supervised"})
        if needs_mc:
            raise ValueError(
                f"{path}: methods {needs_mc} need a background simulation (input.mc); without one only "
                "generate (the SR data's own contexts), ideal and supervised run"
            )
        if cfg.simulation_transform != "none":
            raise ValueError(
                f"{path}: simulation_transform needs input.mc (there is no simulation to transform)"
            )
    if any(n > 0 for n in cfg.injections) and cfg.input.signal is None:
        raise ValueError(f"{path}: injections {cfg.injections} need input.signal (the signal pool)")
    return cfg


def read_table(path: Path, needed: list[str], what: str):
    """A radar feature table (any format :func:`radar.processors.features.read_feature_table` reads) or,
    for context variables and features of one's own, any parquet file with the ``needed`` columns (and
    ``label``: 1 signal, 0 background; absent: -1, unknown)."""
    import pandas as pd

    from radar.processors.features import read_feature_table

    try:
        table = read_feature_table(path)
    except ValueError as error:
        if "not a radar feature table" not in str(error) or path.suffix != ".parquet":
            raise
        table = pd.read_parquet(path)
        if "label" not in table:
            table["label"] = -1.0
    missing = [c for c in needed if c not in table]
    if missing:
        raise ValueError(f"{what} {path}: no column {missing} (columns: {list(table.columns)})")
    bad = ~table[needed].apply(pd.to_numeric, errors="coerce").notna().all(axis=1)
    if bad.any():
        rows = list(bad[bad].index[:5])
        raise ValueError(
            f"{what} {path}: {int(bad.sum())} events with missing or non-numeric {needed} (rows {rows})"
        )
    return table


def in_range(table, regions):
    """The events of ``table`` inside the analysed range of ``regions`` (a ``ContextRegions``)."""
    return table if not regions.range else table[regions.range_mask(table)].reset_index(drop=True)


def prepare_samples(cfg: NonresonantConfig, tables: dict, injection: int) -> dict:
    """The ``data`` / ``mc`` / ``truth`` / ``signal`` tables of one injection (seed ``data_seed``)."""
    import numpy as np
    import pandas as pd

    from radar.analysis.nonresonant import ContextRegions, hand_tuned_simulation
    from radar.analysis.preparation import signal_pool

    rng = np.random.default_rng(cfg.data_seed)
    data = tables["data"]
    background = data[data["label"] != 1].reset_index(drop=True)
    if tables["truth"] is not None:
        truth = tables["truth"][tables["truth"]["label"] != 1].reset_index(drop=True)
    else:  # a random half of the data's background is the truth (ideal template and test set)
        order = rng.permutation(len(background))
        half = len(background) // 2
        truth = background.iloc[order[:half]].reset_index(drop=True)
        background = background.iloc[order[half:]].reset_index(drop=True)
    mc = tables["mc"]
    if mc is not None and cfg.simulation_transform == "hand_tuned":
        mc = hand_tuned_simulation(mc)
    pool = signal_pool(tables["signal"], cfg.input.signal)
    evaluation = pool
    if pool is not None:
        order = np.random.default_rng(cfg.data_seed + 1).permutation(len(pool))
        half = len(pool) // 2
        injected_pool, evaluation = pool.iloc[order[:half]], pool.iloc[order[half:]].reset_index(drop=True)
        where = "events"
        if cfg.inject_into == "sr":
            injected_pool = injected_pool[ContextRegions(dict(cfg.regions)).signal_region(injected_pool)]
            where = "SR events"
        if injection > len(injected_pool):
            raise ValueError(
                f"injection {injection}: the signal pool {cfg.input.signal} has {len(injected_pool)} {where} "
                "for injection (of half of its signal)"
            )
        injected = injected_pool.iloc[:injection].assign(label=1.0)
        background = pd.concat([background, injected], ignore_index=True)
    if evaluation is None:
        raise ValueError("input.signal is needed for the test set (SIC) of a non-resonant search")
    return {"data": background, "mc": mc, "truth": truth, "signal": evaluation}


def run_nonresonant(cfg: NonresonantConfig, output: Path | None = None) -> Path:
    """Every (method, injection, seed) of ``cfg``; rows appended to OUT/rows.jsonl (a rerun skips what is
    there), then OUT/summary.md. Returns the output directory."""
    from tqdm.auto import tqdm

    from radar.analysis.nonresonant import (
        TEMPLATE_METHODS,
        ContextRegions,
        apply_template,
        closure_check,
        context_source,
        fit_template,
        run_method,
        summary_markdown,
    )
    from radar.processors.io import atomic_output, write_json

    out = Path(output) if output is not None else cfg.path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    regions = ContextRegions(dict(cfg.regions))
    needed = sorted(set(cfg.features) | set(regions.context) | set(cfg.classify_on or []) | set(cfg.range))
    analysed = ContextRegions(dict(cfg.regions), range=dict(cfg.range))
    tables = {
        key: in_range(read_table(cfg.path(getattr(cfg.input, key)), needed, f"input.{key}"), analysed)
        if getattr(cfg.input, key)
        else None
        for key in ("data", "mc", "signal", "truth")
    }
    write_json(out / "config.json", cfg.model_dump(mode="json"))
    rows_path = out / "rows.jsonl"
    rows = [json.loads(line) for line in rows_path.read_text().splitlines()] if rows_path.exists() else []
    done = {(r["method"], r["injection"], r["seed"]) for r in rows}
    units = [
        (i, s, m) for i in cfg.injections for s in cfg.seeds for m in cfg.methods if (m, i, s) not in done
    ]
    log.info("%d units to run (%d already in %s)", len(units), len(done), rows_path)
    templates: dict[tuple, Any] = {}
    closure_path = out / "closure.json"
    closures: dict[str, Any] = json.loads(closure_path.read_text()) if closure_path.exists() else {}
    template_seconds: dict[tuple, float] = {}
    charged: set[tuple] = set()
    prepared: dict[int, dict] = {}
    for injection, seed, method in tqdm(units, desc="non-resonant units", unit="unit"):
        if injection not in prepared:
            prepared = {injection: prepare_samples(cfg, tables, injection)}
        samples = prepared[injection]
        template = None
        if method in TEMPLATE_METHODS:
            data = samples["data"]
            clean_cr = not (regions.control_region(data) & (data["label"] == 1)).any()
            key = (method, seed, "clean" if clean_cr else injection)  # the CR alone shapes a template
            if key not in templates:
                start = time.perf_counter()
                maker = fit_template(
                    method,
                    samples,
                    regions=regions,
                    features=cfg.features,
                    seed=seed,
                    settings=cfg.template_settings.get(method),
                )
                source = context_source(samples)
                templates[key] = apply_template(
                    maker, source[regions.signal_region(source)], cfg.features, regions.context
                )
                template_seconds[key] = time.perf_counter() - start
                if clean_cr and seed == cfg.seeds[0] and method not in closures:
                    closures[method] = write_closure(
                        out, method, closure_check(maker, samples, regions=regions, features=cfg.features)
                    )
                    write_json(out / "closure.json", closures)
            template = templates[key]
        row = run_method(
            method,
            samples,
            regions=regions,
            features=cfg.features,
            classify_on=cfg.classify_on,
            seed=seed,
            k_folds=cfg.k_folds,
            classifier=cfg.classifier.name,
            classifier_settings=cfg.classifier.settings,
            rejection=cfg.rejection,
            efficiencies=cfg.efficiencies,
            template=template,
        )
        row["injection"] = injection
        if template is not None and key not in charged:  # a template's fit time counts once
            row["template_seconds"] = template_seconds[key]
            charged.add(key)
        rows.append(row)
        with open(rows_path, "a") as handle:
            handle.write(json.dumps(row) + "\n")
    text = summary_markdown(rows, cfg.methods, "injection", cfg.injections, "n_sig", cfg.rejection)
    if closures:
        text += closure_markdown(closures, cfg.seeds[0])
    with atomic_output(out / "summary.md") as tmp:
        Path(tmp).write_text(text)
    log.info("wrote %s and %s", rows_path, out / "summary.md")
    if any(r["n_sr_signal"] > 0 for r in rows):
        plot_sic_vs_injection(rows, cfg, out / "sic_vs_injection")
    return out


def plot_sic_vs_injection(rows: list[dict], cfg: NonresonantConfig, stem: Path) -> Path:
    """OUT/sic_vs_injection.png: max SIC and SIC at the rejection against S/√B in the SR (rows with signal
    in the SR), median and 16–84 % band over seeds per method."""
    import math

    from radar.plots.performance import metrics_frame, plot_metrics_vs_injection
    from radar.plots.style import save_figure

    table = metrics_frame([r for r in rows if r["n_sr_signal"] > 0 and r["method"] in cfg.methods])
    table["s_over_sqrt_b"] = table["n_sr_signal"] / (table["n_sr_data"] - table["n_sr_signal"]).clip(
        lower=1
    ).map(math.sqrt)
    fig = plot_metrics_vs_injection(table, x="s_over_sqrt_b", x_label="S/$\\sqrt{B}$ in the SR", log_x=False)
    return save_figure(fig, stem, formats=("png",))[0]


def write_closure(out: Path, method: str, closure: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Figures of a template's closure (:func:`radar.analysis.nonresonant.closure_check`):
    OUT/closure/METHOD_cr.png (the method applied to the CR MC vs the CR data) and METHOD_sr.png (the SR
    template vs the true SR background), marginals with ratios; returns the KS numbers and figure paths."""
    from radar.plots.spectra import plot_feature_marginals
    from radar.plots.style import save_figure

    summary: dict[str, Any] = {}
    for region, labels in (
        ("cr", ("CR data", f"{method}: CR prediction")),
        ("sr", ("true SR bkg.", f"{method} template")),
    ):
        part = closure[region]
        variables = list(part["ks"])
        fig = plot_feature_marginals(
            part["reference"],
            part["template"],
            variables,
            template_weight=part["weights"],
            data_label=labels[0],
            template_label=labels[1],
        )
        png = save_figure(fig, out / "closure" / f"{method}_{region}", formats=("png",))[0]
        summary[region] = {"ks": part["ks"], "figure": str(png.relative_to(out))}
    return summary


def closure_markdown(closures: dict[str, Any], seed: int) -> str:
    """The closure table: KS distance (p-value) per variable, CR and SR, per template method."""
    methods = list(closures)
    variables = list(next(iter(closures.values()))["sr"]["ks"])
    lines = [
        "",
        f"## Closure with no signal (seed {seed}): KS distance (p-value) of each marginal",
        "",
        "CR: the method applied to the CR MC vs the CR data; SR: the template vs the true SR background. "
        "Figures: closure/METHOD_cr.png, closure/METHOD_sr.png.",
        "",
        "| method | region | " + " | ".join(variables) + " |",
        "|---|---|" + "---|" * len(variables),
    ]
    for method in methods:
        for region in ("cr", "sr"):
            ks = closures[method][region]["ks"]
            cells = [f"{ks[v]['ks']:.3f} ({ks[v]['p_value']:.2g})" for v in variables]
            lines.append(f"| {method} | {region.upper()} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "nonresonant",
        help="non-resonant search: extrapolate the background from a control region (reweight, generate, morph)",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("config", nargs="?", help="non-resonant search config (YAML)")
    parser.add_argument("--output", default=None, help="output directory (overrides the config's output)")
    parser.add_argument(
        "--make-toy",
        metavar="DIR",
        default=None,
        help="write the toy (data, MC, signal parquet files and nonresonant.yaml) into DIR and exit",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of --make-toy")
    parser.set_defaults(func=_run)


TOY_CONFIG = """\
# The non-resonant toy: context (m1, m2), one feature x; SR m1 > 2.5 and m2 > 2.5 (radar.analysis.nonresonant)
#   radar nonresonant nonresonant.yaml
name: nonresonant_toy
output: out
input: {data: data.parquet, mc: mc.parquet, signal: signal.parquet}
regions: {m1: [2.5, null], m2: [2.5, null]}
features: [x]
methods: [mc, reweight, generate, morph, ideal, supervised]
injections: [0, 150, 300]
seeds: [0, 1, 2]
classifier: {name: hgb, settings: {n_models: 3}}
template_settings:
  reweight: {settings: {epochs: 10, batch_size: 512}}
  generate: {flow: {epochs: 10, n_blocks: 4, hidden: 32, batch_size: 512, lr: 1.0e-3}, settings: {epochs: 10, batch_size: 512}}
  morph:
    flow: {epochs: 10, n_blocks: 4, hidden: 32, batch_size: 512, lr: 1.0e-3}
    transport: {epochs: 10, batch_size: 512, lr: 1.0e-3}
    settings: {epochs: 10, batch_size: 512}
"""


def make_toy(directory: Path, seed: int = 0) -> Path:
    """Write the toy's data (100k background + no signal), MC (100k) and signal pool (20k) as parquet
    files and a config that runs every method on them; returns the config's path."""
    from radar.analysis.nonresonant import toy_samples
    from radar.processors.io import atomic_output

    directory.mkdir(parents=True, exist_ok=True)
    toy = toy_samples(100_000, 100_000, 0, seed=seed)
    for key in ("data", "mc", "signal"):
        with atomic_output(directory / f"{key}.parquet") as tmp:
            toy[key].to_parquet(tmp)
    config = directory / "nonresonant.yaml"
    with atomic_output(config) as tmp:
        Path(tmp).write_text(TOY_CONFIG)
    log.info("wrote the toy (data, mc, signal) and %s", config)
    return config


def _run(args: argparse.Namespace) -> int:
    if args.make_toy:
        print(f"radar nonresonant {make_toy(Path(args.make_toy), args.seed)}")
        return 0
    if not args.config:
        raise ValueError("give a config (radar nonresonant CONFIG.yaml) or --make-toy DIR")
    cfg = load_nonresonant_config(args.config)
    out = run_nonresonant(cfg, Path(args.output) if args.output else None)
    print((out / "summary.md").read_text())
    return 0

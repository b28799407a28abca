"""``radar run CONFIG.yaml`` and ``radar demo``: one search end to end, stage by stage, cached.

Stages (each writes into the run directory atomically and records a key in ``stages/<stage>.json``;
a stage whose key — its settings plus the SHA-256 of its inputs — is unchanged and whose outputs
exist is skipped):

1. ``generate`` (Pythia 8, :mod:`radar.processors.generate`) or the event files given under ``events``;
2. ``process``: every event file → feature table (:func:`radar.processors.runner.process_files`);
3. ``search``: methods × injections × seeds (:func:`radar.analysis.search.run_search`; its own
   ``--resume`` skips finished trainings);
4. ``bumphunt``: m_JJ fits after score cuts, the sliding-window scan, figures and
   ``report.md`` (:func:`radar.analysis.report.make_bumphunt_outputs`).

With a ``scan:`` block (any :class:`radar.analysis.blindscan.ScanSettings` field but ``search``), stages 3-4
are the blind scan instead (:func:`radar.analysis.blindscan.run_scan` on the data sample, every window
retrained; the ``search:`` block gives the rest of each window's search settings) into ``RUN/scan/``.

Example config (paths relative to the YAML file)::

    name: my_search
    output: runs/my_search
    generate:                       # or  events: {data: [a.h5, b.root], signal: sig.h5}
      qcd: {events: 30000, seed: 1}
      signal: {events: 2000, seed: 2, mres: 3500, mx: 500, my: 100}
    process: {chunk_size: 5000, jet_radius: 1.0}
    search:                         # any analysis.config.SearchConfig field except input/output/name
      methods: [cathode, cwola_hunting]
      injections: [300]
      seeds: [0]
    bumphunt: {method: cathode, working_points: [1.0, 0.1, 0.01], scan: true, n_toys: 100}
    workers: null                   # embedded LocalCluster (one process per core); or scheduler: tcp://...
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from radar.processors.io import file_sha256, write_json

log = logging.getLogger(__name__)

PRESETS_DIR = Path(__file__).resolve().parent / "presets"
SAMPLES = ("qcd", "signal", "simulation")
_PROCESS_OF_SAMPLE = {"qcd": "qcd", "signal": "resonance", "simulation": "simulation"}


@dataclass
class RunConfig:
    """A whole run. ``generate`` and ``events`` are alternatives (exactly one is given)."""

    name: str = "run"
    output: str = "runs/run"
    generate: dict[str, dict[str, Any]] | None = None
    events: dict[str, Any] | None = None
    process: dict[str, Any] = field(default_factory=dict)
    search: dict[str, Any] = field(default_factory=dict)
    bumphunt: dict[str, Any] = field(default_factory=dict)
    #: a blind scan (radar.analysis.blindscan.ScanSettings fields) instead of one search + bump hunt
    scan: dict[str, Any] | None = None
    workers: int | None = None
    scheduler: str | None = None
    base_dir: str = "."

    def path(self, value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else (Path(self.base_dir) / p).resolve()


def load_run_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a run YAML; unknown keys are errors. ``overrides`` replace top-level keys (e.g. ``output``)."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such run config")
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a run config is a mapping, got {type(values).__name__}")
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    known = {f.name for f in dataclasses.fields(RunConfig)} - {"base_dir"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown}; known: {sorted(known)}")
    config = RunConfig(**values, base_dir=str(path.resolve().parent))
    if (config.generate is None) == (config.events is None):
        raise ValueError(f"{path}: give exactly one of 'generate' (Pythia samples) or 'events' (input files)")
    if config.generate is not None:
        unknown = sorted(set(config.generate) - set(SAMPLES))
        if unknown or "qcd" not in config.generate:
            raise ValueError(
                f"{path}: generate needs 'qcd' and may have 'signal', 'simulation'; got {unknown}"
            )
    if config.generate is not None:
        seeds = [int(s.get("seed", SAMPLES.index(n) + 1)) for n, s in config.generate.items()]
        if len(set(seeds)) != len(seeds):
            raise ValueError(
                f"{path}: generate samples need distinct seeds (got {seeds}); samples with one "
                "seed share their Pythia hard processes"
            )
    for forbidden in ("input", "output", "name"):
        if forbidden in config.search:
            raise ValueError(f"{path}: search.{forbidden} is set by the pipeline; remove it")
    if isinstance(config.search.get("regions"), dict) and config.search["regions"].get("context") is not None:
        raise ValueError(
            f"{path}: search.regions.context: a non-resonant search has no m_JJ bump to hunt, and radar run "
            "ends in the bump hunt (or scans m_JJ windows); run radar process, then radar search with these "
            "regions"
        )
    return config


def _key(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _cached_stage(
    run_dir: Path, stage: str, payload: Any, outputs: list[Path], work: Callable[[], Any]
) -> bool:
    """Run ``work`` unless the stage's key and outputs are already there. Returns True if it ran."""
    record = run_dir / "stages" / f"{stage}.json"
    key = _key(payload)
    if record.exists() and all(p.exists() for p in outputs):
        if json.loads(record.read_text()).get("key") == key:
            log.info("stage %s: inputs unchanged, reusing %s", stage, ", ".join(p.name for p in outputs))
            return False
    started = time.perf_counter()
    work()
    write_json(
        record,
        {
            "key": key,
            "payload": payload,
            "outputs": [str(p) for p in outputs],
            "seconds": round(time.perf_counter() - started, 2),
        },
    )
    log.info("stage %s: done in %.1f s", stage, time.perf_counter() - started)
    return True


def _generate(config: RunConfig, run_dir: Path) -> dict[str, Path]:
    from radar.processors.generate import config_from_mapping, generate_to_file

    files = {}
    for sample, settings in (config.generate or {}).items():
        settings = dict(settings)
        # distinct default seeds: samples generated with one seed would share their hard processes
        n_events, seed = int(settings.pop("events")), int(settings.pop("seed", SAMPLES.index(sample) + 1))
        events_per_task = int(settings.pop("events_per_task", 1000))
        generator = config_from_mapping({"process": _PROCESS_OF_SAMPLE[sample], **settings})
        output = run_dir / "events" / f"{sample}.h5"

        def work(generator=generator, n_events=n_events, seed=seed, output=output, task=events_per_task):
            output.unlink(missing_ok=True)  # settings changed: start the file afresh
            generate_to_file(
                generator,
                n_events,
                seed,
                output,
                workers=config.workers,
                scheduler=config.scheduler,
                events_per_task=task,
            )

        payload = {
            "generator": generator.to_dict(),
            "events": n_events,
            "seed": seed,
            "per_task": events_per_task,
        }
        _cached_stage(run_dir, f"generate_{sample}", payload, [output], work)
        files[sample] = output
    return files


def _process(config: RunConfig, run_dir: Path, event_files: dict[str, list[Path]]) -> dict[str, Path]:
    from radar.processors.jets import JetConfig
    from radar.processors.runner import process_files

    settings = dict(config.process)
    chunk_size = int(settings.pop("chunk_size", 10_000))
    jet_config = JetConfig(**settings)
    tables = {}
    for sample, paths in event_files.items():
        if all(p.suffix.lower() in (".parquet", ".npy") for p in paths):
            tables[sample] = paths  # already feature tables
            continue
        output = run_dir / "features" / f"{sample}.parquet"
        payload = {
            "inputs": {str(p): file_sha256(p) for p in paths},
            "jets": dataclasses.asdict(jet_config),
            "chunk_size": chunk_size,
        }
        _cached_stage(
            run_dir,
            f"process_{sample}",
            payload,
            [output],
            lambda paths=paths, output=output: process_files(
                paths,
                output,
                workers=config.workers,
                scheduler=config.scheduler,
                chunk_size=chunk_size,
                jet_config=jet_config,
            ),
        )
        tables[sample] = [output]
    return tables


def _search_config(config: RunConfig, run_dir: Path, tables: dict[str, list[Path]]):
    from radar.analysis.config import config_from_dict

    values = json.loads(json.dumps(config.search))  # deep copy
    values["name"] = config.name
    values["output"] = str(run_dir / "search")
    data = tables.get("qcd") or tables.get("data")
    if not data:
        raise ValueError("the run has no data sample ('qcd' to generate, or events.data)")
    values["input"] = {"data": [str(p) for p in data]}
    for sample in ("signal", "simulation"):
        if tables.get(sample):
            values["input"][sample] = str(tables[sample][0])
    execution = values.setdefault("execution", {})
    execution.setdefault("workers", config.workers)
    execution.setdefault("scheduler", config.scheduler)
    return config_from_dict(values, base_dir=run_dir)


def _search(config: RunConfig, run_dir: Path, tables: dict[str, list[Path]]):
    from radar.analysis.search import run_search

    cfg = _search_config(config, run_dir, tables)
    inputs = sorted(str(p) for paths in tables.values() for p in paths)
    payload = {"config": cfg.digest(), "inputs": {p: file_sha256(p) for p in inputs}}
    table = run_dir / "search" / "metrics_table.md"

    def work():
        manifest_path = cfg.output_dir / "manifest.json"
        previous = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
        same = previous.get("config_digest") == cfg.digest() and previous.get("inputs") == payload["inputs"]
        # unchanged config and data: resume (finished trainings are kept); otherwise start over
        manifest = run_search(cfg, resume=same, overwrite=not same)
        if manifest.get("n_failed"):  # not recorded as done: the next run retries the failed units
            raise RuntimeError(
                f"search: {manifest['n_failed']} units failed: {manifest.get('failures')} "
                f"(see {manifest_path})"
            )

    _cached_stage(run_dir, "search", payload, [table], work)
    return cfg


def _scores_for_bumphunt(config: RunConfig, cfg) -> tuple[Path, dict[str, Any]]:
    from radar.analysis.rundir import unit_dir

    settings = dict(config.bumphunt)
    method = settings.pop("method", cfg.methods[0])
    if method not in cfg.methods:
        raise ValueError(f"bumphunt.method {method!r} is not among the search methods {cfg.methods}")
    injection = settings.pop("injection", max((i for i in cfg.injections if i is not None), default=None))
    seed = settings.pop("seed", cfg.seeds[0])
    scores = unit_dir(cfg.output_dir, method, injection, seed) / "scores.parquet"
    if not scores.exists():
        raise FileNotFoundError(
            f"{scores}: the search did not produce scores for method {method}, injection "
            f"{injection}, seed {seed} (see {cfg.output_dir / 'manifest.json'})"
        )
    settings.update(method=method, injection=injection, seed=seed)
    return scores, settings


def _bumphunt(config: RunConfig, run_dir: Path, cfg) -> Path:
    from radar.analysis import bumphunt as bh
    from radar.analysis.report import load_scores, make_bumphunt_outputs

    scores_path, settings = _scores_for_bumphunt(config, cfg)
    outdir = run_dir / "bumphunt"
    payload = {"scores": file_sha256(scores_path), "settings": settings}
    sr = tuple(cfg.regions.sr)

    def work():
        scores = load_scores(scores_path)
        fit_range = bh.resolve_fit_range(
            scores["mjj"].to_numpy(float), sr, settings.get("fit_range"), settings.get("bin_width", 100.0)
        )
        windows = None
        if settings.get("scan", True):
            windows = bh.sliding_windows(
                fit_range,
                sr_width=settings.get("scan_width", sr[1] - sr[0]),
                step=settings.get("scan_step", 200.0),
                sideband_width=settings.get("scan_sideband", 1000.0),
            )
        table = cfg.output_dir / "metrics_table.md"
        make_bumphunt_outputs(
            scores,
            outdir,
            efficiencies=settings.get("working_points"),
            signal_region=sr,
            fit_range=fit_range,
            bin_width=settings.get("bin_width", 100.0),
            style=settings.get("style", "atlas"),
            fit_sideband=settings.get(
                "fit_sideband", 0.0 if settings.get("fit_range") else bh.DEFAULT_FIT_SIDEBAND
            ),
            scan=windows is not None,
            scan_efficiency=settings.get("scan_efficiency", 0.01),
            scan_windows=windows,
            n_toys=settings.get("n_toys", 100),
            seed=settings["seed"],
            title=f"radar run {config.name}: {settings['method']}, injection {settings['injection']}",
            notes=[
                f"Scores: {scores_path.relative_to(run_dir)}",
                f"Search metrics: {table.relative_to(run_dir)}" if table.exists() else "no metrics table",
            ],
        )

    _cached_stage(run_dir, "bumphunt", payload, [outdir / "bumphunt.json", outdir / "report.md"], work)
    return outdir


def run_pipeline(config: RunConfig) -> Path:
    """Run every stage of ``config``; returns the run directory (its ``report.md`` summarises the run)."""
    run_dir = config.path(config.output)
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    write_json(
        run_dir / "run_config.json", {k: v for k, v in dataclasses.asdict(config).items() if k != "base_dir"}
    )
    if config.generate is not None:
        event_files = {sample: [path] for sample, path in _generate(config, run_dir).items()}
    else:
        event_files = {}
        for sample, value in (config.events or {}).items():
            paths = [value] if isinstance(value, str) else list(value)
            event_files["qcd" if sample == "data" else sample] = [config.path(p) for p in paths]
    tables = _process(config, run_dir, event_files)
    if config.scan is not None:
        scan_dir = _scan(config, run_dir, tables)
        _write_scan_run_report(run_dir, config, scan_dir, time.perf_counter() - started)
        return run_dir
    cfg = _search(config, run_dir, tables)
    bump_dir = _bumphunt(config, run_dir, cfg)
    _write_run_report(run_dir, cfg, bump_dir, time.perf_counter() - started)
    return run_dir


def _scan(config: RunConfig, run_dir: Path, tables: dict[str, list[Path]]) -> Path:
    from radar.analysis.blindscan import ScanSettings, run_scan

    data = tables.get("qcd") or tables.get("data")
    if not data:
        raise ValueError("the run has no data sample to scan ('qcd' to generate, or events.data)")
    known = {f.name for f in dataclasses.fields(ScanSettings)} - {"search"}
    unknown = sorted(set(config.scan) - known)
    if unknown:
        raise ValueError(f"scan: unknown keys {unknown}; known: {sorted(known)}")
    search = json.loads(json.dumps(config.search))
    execution = search.setdefault("execution", {})
    execution.setdefault("workers", config.workers)
    execution.setdefault("scheduler", config.scheduler)
    settings = ScanSettings(**config.scan, search=search)  # it normalises YAML lists itself
    out = run_dir / "scan"
    manifest = out / "scan_manifest.json"
    same = manifest.exists() and json.loads(manifest.read_text()).get("digest") == settings.digest()
    # unchanged settings: resume (finished windows are kept; changed inputs are refused there); else redo
    run_scan([str(p) for p in data], out, settings, resume=same, overwrite=not same)
    return out


def _write_scan_run_report(run_dir: Path, config: RunConfig, scan_dir: Path, seconds: float) -> Path:
    from radar.processors.io import atomic_output

    body = (scan_dir / "report.md").read_text().split("\n", 1)[1].replace("](figures/", "](scan/figures/")
    path = run_dir / "report.md"
    with atomic_output(path) as tmp:
        tmp.write_text(
            f"# radar run: {config.name} (blind scan)\n\nWall time of this invocation: {seconds:.0f} s."
            f"\n{body}",
            encoding="utf-8",
        )
    log.info("report: %s", path)
    return path


def _write_run_report(run_dir: Path, cfg, bump_dir: Path, seconds: float) -> Path:
    from radar.processors.io import atomic_output

    lines = [
        f"# radar run: {cfg.name}",
        "",
        f"Wall time of this invocation: {seconds:.0f} s (cached stages are reused).",
        "",
    ]
    table = cfg.output_dir / "metrics_table.md"
    if table.exists():
        lines += ["## Search: anomaly-detection performance", "", table.read_text().strip(), ""]
    bump_report = bump_dir / "report.md"
    if bump_report.exists():
        body = bump_report.read_text().split("\n", 1)[1]  # drop its title
        # its links are relative to bump_dir
        body = body.replace("](figures/", f"]({bump_dir.name}/figures/")
        lines += [body.strip(), ""]
    path = run_dir / "report.md"
    with atomic_output(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    log.info("report: %s", path)
    return path

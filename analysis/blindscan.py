"""``radar scan``: the blind search. The signal region slides across m_JJ; every window gets its own full search
(its sidebands, templates, classifiers, out-of-fold scores: :mod:`radar.analysis.units`) and its own bump hunt
(:func:`radar.analysis.bumphunt.bump_hunt`, with the sculpting flags), and the largest local excess gets a global
significance from background-only toys of the whole scan, extended beyond the toys' reach by the
Gross–Vitells formula (:mod:`radar.analysis.bumphunt.globalsig`).

Layout of ``OUT``::

    scan.json            windows (local Z per method and working point, flags, status), best, global_z/p
    report.md            the answer first: most significant window, local and global Z, trust
    figures/             local p-value vs m_JJ (one line per method)
    scan_manifest.json   the scan's settings digest, inputs' sha256, per-window status (resume checks)
    windows/sr_<lo>_<hi>/   a ``radar search`` run directory per window (config.yaml, units, scores)
        bumphunt/<method>/  that window's bump hunt (bumphunt.json, figures with the efficiency diagnostics)

Windows × methods × seeds run as one set of tasks (:func:`radar.analysis.execution.run_tasks`), so a LocalCluster
or any Dask scheduler keeps busy across windows. A killed scan resumes (``resume=True``) without redoing
finished units; a window that fails (a failed training or fit) or that the search's checks refuse (too few
events: ``skipped``) is reported in ``scan.json`` and ``report.md``, never dropped.

With several seeds a window's score is the mean of the seeds' out-of-fold scores: every event's score still
comes from models that never trained on it, all events alike.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: the default pair: CATHODE (closes at every SR tested, benchmarks/null_chain.py) and CWoLa Hunting (fast)
DEFAULT_METHODS = ("cathode", "cwola_hunting")


@dataclass
class ScanSettings:
    """What a blind scan does (GeV for masses). Everything not here comes from ``search`` (a ``radar search``
    config dict: features, flow, classifier settings, k_folds, ...; its regions, injections and output are
    set per window)."""

    methods: tuple[str, ...] = DEFAULT_METHODS
    classifier: str = "hgb"
    seeds: tuple[int, ...] = (0,)
    #: m_JJ range of the scan; None: from the data (above the trigger turn-on to the last event)
    mjj_range: tuple[float, float] | None = None
    width: float = 400.0
    step: float = 200.0
    #: sideband on each side of a window: the window's templates train and its fit runs over SR ± sideband.
    #: 600 GeV, measured: SR ± 1000 GeV biased the uncut dijet fit next to the trigger turn-on (6 of 150
    #: background-only surrogate spectra above 3σ with a 300 GeV lower sideband), SR ± 600 GeV did not
    sideband: float = 600.0
    #: the lowest window keeps at least this much lower sideband above the trigger turn-on (GeV; the bump
    #: hunt's stated minimum, radar.analysis.bumphunt.MIN_SIDEBAND, measured)
    min_sideband: float = 400.0
    bin_width: float = 100.0
    #: start each window's flows (cathode, lacathode) from those of the nearest window whose whole training
    #: range lies beyond this window's (no event shared, so no event of this window reaches its template
    #: through the starting weights); windows with no such window start cold
    warm_start: bool = False
    #: where a window's source lies: "down" — above it, so the scan trains from high to low m_JJ and the
    #: expensive low-mass windows (most events) are the warm-started ones; "up" — below it
    warm_direction: str = "down"
    #: epochs of a warm-started flow; None: a third of the flow's epochs
    warm_epochs: int | None = None
    working_points: tuple[float, ...] = (1.0, 0.2, 0.05, 0.01)
    toys: int = 200
    toy_seed: int = 0
    #: the reference level of the Gross–Vitells up-crossings (local Z)
    z0: float = 1.0
    figures: bool = True
    style: str = "atlas"
    search: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # one type per setting: the same scan from the command line or from Python has the same digest
        self.methods = tuple(str(m) for m in self.methods)
        self.seeds = tuple(int(v) for v in self.seeds)
        self.mjj_range = (
            None if self.mjj_range is None else (float(self.mjj_range[0]), float(self.mjj_range[1]))
        )
        for name in ("width", "step", "sideband", "min_sideband", "bin_width", "z0"):
            setattr(self, name, float(getattr(self, name)))
        self.working_points = tuple(float(v) for v in self.working_points)
        self.warm_start = bool(self.warm_start)
        self.warm_epochs = None if self.warm_epochs is None else int(self.warm_epochs)

    def check(self) -> None:
        """Refuse settings that cannot make a scan, naming the option."""
        grid = self.bin_width
        if grid <= 0:
            raise ValueError(f"scan: bin width must be positive, got {grid} GeV")
        for name in ("width", "step", "sideband", "min_sideband"):
            value = getattr(self, name)
            if value <= 0 or abs(value / grid - round(value / grid)) > 1e-6:
                raise ValueError(
                    f"scan: --{name.replace('_', '-')} {value:g} GeV must be a positive multiple of the "
                    f"{grid:g} GeV bin width (window edges lie on the bin grid)"
                )
        if self.sideband < self.min_sideband:
            raise ValueError(
                f"scan: --sideband {self.sideband:g} GeV is below the minimum sideband "
                f"{self.min_sideband:g} GeV"
            )
        if not self.methods:
            raise ValueError("scan: no methods")
        if not self.working_points or any(not 0 < e <= 1 for e in self.working_points):
            raise ValueError(
                f"scan: working points are SR efficiencies in (0, 1], got {list(self.working_points)}"
            )
        if self.warm_direction not in ("down", "up"):
            raise ValueError(f"scan: --warm-direction must be down or up, got {self.warm_direction!r}")
        if self.warm_epochs is not None and self.warm_epochs < 1:
            raise ValueError(f"scan: --warm-epochs must be >= 1, got {self.warm_epochs}")
        if self.toys < 0:
            raise ValueError(f"scan: --toys must be >= 0, got {self.toys}")
        if self.mjj_range is not None:
            if not self.mjj_range[0] < self.mjj_range[1]:
                raise ValueError(
                    f"scan: --mjj-range {list(self.mjj_range)}: low edge must be below high edge"
                )
            if abs(self.mjj_range[0] / grid - round(self.mjj_range[0] / grid)) > 1e-6:
                raise ValueError(
                    f"scan: --mjj-range low edge {self.mjj_range[0]:g} GeV must be a multiple of the "
                    f"{grid:g} GeV bin width (the bin grid of every window's fit)"
                )

    def digest(self) -> str:
        """What fixes the scan's results (not the figures, style or toys, which are redone every time)."""
        d = asdict(self)
        for key in ("figures", "style", "toys", "toy_seed", "z0", "working_points"):
            d.pop(key)
        d["search"] = {k: v for k, v in d["search"].items() if k not in ("execution", "output", "name")}
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


def window_tag(sr: tuple[float, float]) -> str:
    return f"sr_{sr[0]:.0f}_{sr[1]:.0f}"


def plan_windows(mjj: np.ndarray, settings: ScanSettings) -> tuple[tuple[float, float], list]:
    """The scan range (GeV; ``settings.mjj_range`` or from the data, above the trigger turn-on) and its windows
    (:class:`radar.analysis.bumphunt.ScanWindow`: SR and fit/training range = SR ± sideband, clipped)."""
    from radar.analysis import bumphunt as bh

    if settings.mjj_range is None:
        lo, hi = bh.auto_fit_range(mjj, (0.0, settings.bin_width), settings.bin_width)
    else:
        lo, hi = map(float, settings.mjj_range)
        top = float(np.nanmax(mjj))
        if hi > top + settings.bin_width:
            log.info("scan range upper edge %.0f GeV clipped to the last event's bin", hi)
            hi = lo + settings.bin_width * math.ceil((top - lo) / settings.bin_width)
    # whole bins only: the range's width a multiple of the bin width
    hi = lo + settings.bin_width * math.floor((hi - lo) / settings.bin_width + 1e-9)
    try:
        windows = bh.sliding_windows(
            (lo, hi),
            sr_width=settings.width,
            step=settings.step,
            sideband_width=settings.sideband,
            min_sideband=settings.min_sideband,
        )
    except ValueError as error:
        raise ValueError(f"scan range {lo:.0f}-{hi:.0f} GeV: {error}") from None
    return (lo, hi), windows


def warm_sources(windows: list, direction: str = "down") -> list[int | None]:
    """For each window, the index of the window its flows start from under ``warm_start``: the nearest
    window above (``direction="down"``) or below (``"up"``) whose fit (training) range does not overlap this
    window's, so the two share no event; None for the windows that have none (they start cold)."""
    sources: list[int | None] = []
    for k, window in enumerate(windows):
        if direction == "up":
            below = [j for j in range(k) if windows[j].fit_high <= window.fit_low + 1e-9]
            sources.append(max(below) if below else None)
        else:
            above = [j for j in range(k + 1, len(windows)) if windows[j].fit_low >= window.fit_high - 1e-9]
            sources.append(min(above) if above else None)
    return sources


def warm_epochs(settings: ScanSettings) -> int:
    """Epochs of a warm-started flow: ``settings.warm_epochs`` or a third of the flow's epochs."""
    if settings.warm_epochs is not None:
        return settings.warm_epochs
    from radar.models.flows import ConditionalFlow

    epochs = (settings.search.get("flow") or {}).get("epochs", ConditionalFlow(1).config["epochs"])
    return max(1, int(epochs) // 3)


def _window_config(
    settings: ScanSettings, data: list[str], window, out: Path, execution: dict, warm_from=None
) -> dict:
    """The search config of one window; ``warm_from``: the window whose flows this one starts from."""
    search = json.loads(json.dumps(settings.search, default=str))
    if settings.warm_start:
        search["save_models"] = True  # the flows that later windows start from
        if warm_from is not None:
            search["warm_start"] = {
                "run": str(out / "windows" / window_tag(warm_from.signal_region)),
                "epochs": warm_epochs(settings),
            }
    classifier = search.pop("classifier", {}) or {}
    if isinstance(classifier, str):
        classifier = {"name": classifier}
    return {
        **search,
        "name": f"scan {window_tag(window.signal_region)}",
        "output": str(out / "windows" / window_tag(window.signal_region)),
        "input": {**search.get("input", {}), "data": [str(Path(p).resolve()) for p in data]},
        "regions": {
            **search.get("regions", {}),
            "sr": list(window.signal_region),
            "mjj_range": [window.fit_low, window.fit_high],
            "sideband_width": None,
        },
        "methods": list(settings.methods),
        "injections": [None],
        "seeds": list(settings.seeds),
        # a blind search hunts every event: no labelled test set is carved out of the data
        "test_fraction": search.get("test_fraction", 0.0),
        "classifier": {
            "name": settings.classifier,
            **(
                {"settings": classifier.get("settings", {})}
                if classifier.get("name", settings.classifier) == settings.classifier
                else {}
            ),
        },
        "compare": False,
        "save_models": search.get("save_models", False),
        "execution": execution,
    }


def _raw_events(path: Path) -> bool:
    """True for event files (ROOT, LHCO raw HDF5) that must be processed into a feature table first."""
    suffix = path.suffix.lower()
    if suffix == ".root":
        return True
    if suffix not in (".h5", ".hdf5", ".hdf"):
        return False
    try:
        from radar.processors.sources import is_lhco_feature_file
    except ImportError:  # the search-only install reads feature HDF5 only
        return False
    return not is_lhco_feature_file(path)


def prepare_inputs(data: list[str], out: Path, execution: dict) -> list[str]:
    """Feature tables for the scan: feature tables as given; event files (ROOT, LHCO raw HDF5) processed first
    (:func:`radar.processors.runner.process_files`, as ``radar run`` does) into ``OUT/features/<name>.parquet``,
    reused while the event file's sha256 is unchanged."""
    from radar.processors.io import file_sha256, write_json

    tables = []
    for name in data:
        path = Path(name)
        if not path.exists():
            raise FileNotFoundError(f"scan input {path}: no such file")
        if not _raw_events(path):
            tables.append(str(path))
            continue
        try:
            from radar.processors.runner import process_files
        except ImportError as error:
            raise ValueError(
                f"scan input {path}: event files need radar's processing packages "
                f"(pip install 'radar-hep[process]'): {error}"
            ) from None
        target = out / "features" / f"{path.stem}.parquet"
        record = target.with_suffix(".source.json")
        digest = file_sha256(path)
        if target.exists() and record.exists() and json.loads(record.read_text()).get("sha256") == digest:
            log.info("scan input %s: reusing its feature table %s", path, target)
        else:
            log.info("scan input %s: event file, processing it into %s", path, target)
            target.parent.mkdir(parents=True, exist_ok=True)
            process_files(
                [path], target, workers=execution.get("workers"), scheduler=execution.get("scheduler")
            )
            write_json(record, {"source": str(path.resolve()), "sha256": digest})
        tables.append(str(target))
    return tables


def _manifest_check(out: Path, digest: str, inputs: dict[str, str], resume: bool, overwrite: bool) -> None:
    path = out / "scan_manifest.json"
    if not path.exists() or overwrite:
        return
    previous = json.loads(path.read_text())
    if previous.get("digest") != digest:
        raise ValueError(
            f"{out}: holds a scan with different settings (digest {str(previous.get('digest'))[:12]} "
            f"vs {digest[:12]}); use another output directory or --overwrite"
        )
    if previous.get("inputs") != inputs:
        raise ValueError(
            f"{out}: the input files changed since this scan ran; use another output directory or --overwrite"
        )
    if not resume:
        raise ValueError(
            f"{out}: holds a scan already; use --resume to continue it or --overwrite to redo it"
        )


def run_scan(
    data: list[str | Path],
    out: str | Path,
    settings: ScanSettings,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    execution: dict | None = None,
) -> dict[str, Any]:
    """Run the blind scan of ``data`` (feature tables any ``radar search`` reads, or event files: processed first)
    into ``out``; returns the
    ``scan.json`` content. ``execution``: the ``radar search`` execution block (mode, workers, scheduler)."""
    from radar.analysis import bumphunt as bh
    from radar.analysis.config import WARM_START_METHODS, config_from_dict
    from radar.analysis.execution import run_tasks
    from radar.analysis.methods import SCORE_COMBINATIONS
    from radar.analysis.preparation import load_inputs
    from radar.analysis.rundir import record_stop, unit_finished
    from radar.analysis.search import _phases, run_unit
    from radar.analysis.validation import validate_config, validate_data
    from radar.processors.io import atomic_output, file_sha256, package_versions, write_json

    t_start = time.perf_counter()
    settings.check()
    combos = [m for m in settings.methods if m in SCORE_COMBINATIONS]
    if combos:
        raise ValueError(f"scan: score-level combinations {combos} are not scanned; scan their members")
    out = Path(out)
    execution = dict(execution or settings.search.get("execution", {}) or {})
    data = prepare_inputs([str(Path(p)) for p in data], out, execution)
    # the windows need the data's m_JJ: read the inputs once, as every window's units will
    probe = config_from_dict(
        {
            **_window_config(settings, data, bh.ScanWindow(0, 1, 0, 1), out, execution),
            "regions": {"sr": [0, 1], "mjj_range": [0, 1e9]},
        }
    )
    validate_config(probe)
    inputs = load_inputs(probe)
    mjj_all = inputs["data"]["mjj"].to_numpy(float)
    weight_all = (
        inputs["data"]["weight"].to_numpy(float) if "weight" in inputs["data"] else np.ones(mjj_all.size)
    )
    scan_range, windows = plan_windows(mjj_all, settings)
    log.info(
        "scan %s: %d windows of %.0f GeV every %.0f GeV in %.0f-%.0f GeV; methods %s, seeds %s",
        out,
        len(windows),
        settings.width,
        settings.step,
        *scan_range,
        list(settings.methods),
        list(settings.seeds),
    )
    input_hashes = {str(Path(p).resolve()): file_sha256(p) for p in data}
    digest = settings.digest()
    _manifest_check(out, digest, input_hashes, resume, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {
        "kind": "radar.scan_manifest",
        "digest": digest,
        "inputs": input_hashes,
        "settings": asdict(settings),
        "scan_range": list(scan_range),
        "versions": package_versions(),
        "status": "running",
        "run_id": uuid.uuid4().hex,
    }
    write_json(out / "scan_manifest.json", manifest)
    # units still running on a cluster after the scan stopped write nothing (search._check_run_current)
    token = (manifest["run_id"], str(out / "scan_manifest.json"))

    import yaml

    # ---- plan: one search config per window; windows that cannot run are reported now
    # with warm_start a window's units run after those of the window its flows start from: generation g
    # holds the windows g steps down a chain of sources; the units of each generation run together
    cfgs, failures, skipped, phases_later = {}, {}, {}, []
    sources = warm_sources(windows, settings.warm_direction) if settings.warm_start else [None] * len(windows)
    generation: dict[int, int] = {}
    phases_gen: dict[int, list] = {}
    # a source is planned (its config.yaml written) before the windows that start from it
    order = list(enumerate(windows))
    if settings.warm_start and settings.warm_direction == "down":
        order.reverse()
    for k, window in order:
        tag = window_tag(window.signal_region)
        source = sources[k]
        if source is not None and window_tag(windows[source].signal_region) not in cfgs:
            source = None  # the source window does not run: start cold
        generation[k] = 0 if source is None else generation[source] + 1
        cfg = config_from_dict(
            _window_config(
                settings, data, window, out, execution, None if source is None else windows[source]
            )
        )
        try:
            validate_config(cfg)
            validate_data(cfg, inputs["data"])
        except ValueError as error:
            skipped[tag] = f"not run: {error}"
            log.warning("scan window %s not run: %s", tag, error)
            continue
        cfgs[tag] = cfg
        run_dir = cfg.output_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        with atomic_output(run_dir / "config.yaml") as tmp:
            tmp.write_text(
                yaml.safe_dump(json.loads(json.dumps(cfg.to_dict(), default=str)), sort_keys=False)
            )
        units = [(m, None, s) for s in cfg.seeds for m in cfg.methods]
        todo = [u for u in units if overwrite or not unit_finished(run_dir, *u)]
        args = (cfg.to_dict(), cfg.base_dir, str(run_dir))
        for i, phase in enumerate(_phases(todo, cfg)):
            later = i == 1 or cfg.base_method(phase[0][0]) == "combined_events"
            tasks = [((tag, *u), (*args, *u, *token)) for u in phase]
            if later:
                phases_later.extend(tasks)
                continue
            for task in tasks:  # only the warm-started methods wait for their source window
                g = generation[k] if cfg.base_method(task[0][1]) in WARM_START_METHODS else 0
                phases_gen.setdefault(g, []).append(task)
    phases_first = [phases_gen[g] for g in sorted(phases_gen)]
    n_units = sum(map(len, phases_first)) + len(phases_later)
    log.info("scan: %d units to run in %d windows (%d windows not run)", n_units, len(cfgs), len(skipped))
    try:
        results = run_tasks(
            run_unit,
            [p for p in (*phases_first, phases_later) if p],
            probe.execution,
            progress=progress,
            desc="scan units",
        )
    except BaseException as error:  # killed or crashed: the manifest says so (finished units stay valid)
        record_stop(out / "scan_manifest.json", manifest, error)
        raise
    for key, result in results.items():
        if isinstance(result, str):
            failures.setdefault(key[0], "")
            failures[key[0]] = (
                failures[key[0]] + "; " if failures[key[0]] else ""
            ) + f"{key[1]} seed {key[3]}: {result}"

    # ---- every window's bump hunt, per method
    window_rows = []
    hunts: dict[tuple[str, str], dict] = {}
    for window in windows:
        tag = window_tag(window.signal_region)
        row: dict[str, Any] = {
            "sr": list(window.signal_region),
            "fit_range": [window.fit_low, window.fit_high],
            "tag": tag,
            "methods": {},
            "status": "ok",
        }
        if tag not in cfgs:
            row.update(status="skipped", error=skipped.get(tag), local_z=None, flags=["not_run"])
            window_rows.append(row)
            continue
        for method in settings.methods:
            row["methods"][method] = entry = _hunt_window(cfgs[tag], window, method, settings, progress)
            if entry.get("hunt") is not None:
                hunts[(tag, method)] = entry.pop("hunt")
        ok = [m for m, e in row["methods"].items() if e["status"] == "ok" and e["local_z"] is not None]
        if not ok:
            row.update(
                status="failed",
                local_z=None,
                flags=["no_usable_method"],
                error=failures.get(tag) or "no method gave a usable working point",
            )
        else:
            best = max(ok, key=lambda m: row["methods"][m]["local_z"])
            row.update(
                local_z=row["methods"][best]["local_z"],
                best_method=best,
                best_working_point=row["methods"][best]["best_working_point"],
                flags=sorted({f for e in row["methods"].values() for f in e.get("flags", [])}),
            )
            if any(e["status"] != "ok" for e in row["methods"].values()):
                row["status"] = "partial"
                row["error"] = failures.get(tag)
        window_rows.append(row)

    scan_json = _global(
        window_rows, hunts, mjj_all, weight_all, scan_range, settings, probe.execution, progress
    )
    scan_json.update(
        {
            "kind": "radar.blind_scan",
            "version": 1,
            "inputs": input_hashes,
            "scan_range": list(scan_range),
            "settings": {k: v for k, v in asdict(settings).items() if k != "search"},
            "search": settings.search,
            "n_windows": len(windows),
            "n_failed_windows": sum(r["status"] == "failed" for r in window_rows),
            "n_skipped_windows": len(skipped),
            "failures": failures,
            "skipped": skipped,
            "seconds": time.perf_counter() - t_start,
        }
    )
    scan_json["timing"] = _timing(cfgs, settings)
    write_json(out / "scan.json", scan_json)
    figures = _figures(scan_json, out, settings) if settings.figures else []
    _write_report(out, scan_json, figures)
    manifest.update(
        status="failed" if scan_json["n_failed_windows"] else "finished",
        windows={r["tag"]: r["status"] for r in window_rows},
        failures=failures,
    )
    write_json(out / "scan_manifest.json", manifest)
    return scan_json


def _window_scores(cfg, method: str) -> tuple[Any, list[str]]:
    """The window's scores of ``method``: the seeds' out-of-fold scores averaged (None if a seed is missing)."""
    from radar.analysis.rundir import load_scores, unit_finished

    missing = [s for s in cfg.seeds if not unit_finished(cfg.output_dir, method, None, s)]
    if missing:
        return None, [f"seed {s} not finished" for s in missing]
    frames = [load_scores(cfg.output_dir, method, None, s) for s in cfg.seeds]
    table = frames[0][["mjj", "label", "weight", "in_sr"]].copy()
    for other in frames[1:]:
        if len(other) != len(table) or not np.array_equal(other["mjj"].to_numpy(), table["mjj"].to_numpy()):
            return None, ["the seeds scored different events"]
    table["score"] = np.mean([f["score"].to_numpy(float) for f in frames], axis=0)
    return table, []


def _hunt_window(cfg, window, method: str, settings: ScanSettings, progress: bool) -> dict[str, Any]:
    """Bump hunt of one window's scores of one method; the entry of ``scan.json`` (and the WorkingPoint list
    under ``hunt`` for the toys)."""
    from radar.analysis import bumphunt as bh
    from radar.analysis.report import make_bumphunt_outputs

    scores, problems = _window_scores(cfg, method)
    if scores is None:
        return {"status": "failed", "local_z": None, "error": "; ".join(problems), "flags": ["failed"]}
    outdir = cfg.output_dir / "bumphunt" / method
    fit_range = (window.fit_low, window.fit_high)
    kwargs = dict(
        efficiencies=tuple(sorted(set(settings.working_points), reverse=True)),
        signal_region=window.signal_region,
        fit_range=fit_range,
        bin_width=settings.bin_width,
        min_sideband=settings.min_sideband,
    )
    try:
        if settings.figures:
            made = make_bumphunt_outputs(
                scores,
                outdir,
                style=settings.style,
                title=f"radar scan: {method}, SR {window.sr_low:.0f}-{window.sr_high:.0f} GeV",
                notes=[f"Scores: the mean over seeds {list(cfg.seeds)}"],
                **kwargs,
            )
            result = made["bumphunt"]
        else:
            hunt = bh.bump_hunt(
                scores["mjj"].to_numpy(float),
                scores["score"].to_numpy(float),
                in_sr=scores["in_sr"].to_numpy(bool),
                weight=scores["weight"].to_numpy(float),
                **kwargs,
            )
            hunt.save(outdir / "bumphunt.json")
            result = hunt.to_dict()
    except ValueError as error:
        return {"status": "failed", "local_z": None, "error": f"bump hunt: {error}", "flags": ["failed"]}
    total = float(
        scores["weight"]
        .to_numpy(float)[(scores["mjj"] >= result["fit_range"][0]) & (scores["mjj"] < result["fit_range"][1])]
        .sum()
    )
    wps = []
    for wp in result["working_points"]:
        wps.append(
            {
                k: wp[k]
                for k in (
                    "efficiency",
                    "z_local",
                    "p_local",
                    "n_obs",
                    "b",
                    "sigma_b",
                    "usable",
                    "flags",
                    "n_selected",
                )
            }
            | {
                "efficiency_realised": wp["n_selected"] / total if total > 0 else float("nan"),
                "edges": [wp["edges"][0], wp["edges"][-1]],
                "theta": wp["fit"]["theta"],
            }
        )
    usable = [w for w in wps if w["usable"]]
    best = max(usable, key=lambda w: w["z_local"]) if usable else None
    flags = sorted({f for w in wps for f in w["flags"]})
    return {
        "status": "ok",
        "local_z": None if best is None else best["z_local"],
        "best_working_point": None if best is None else best["efficiency"],
        "flags": flags,
        "working_points": [{k: v for k, v in w.items() if k not in ("theta",)} for w in wps],
        "bumphunt": str(outdir / "bumphunt.json"),
        "hunt": wps,
    }


def _global(
    rows: list[dict],
    hunts: dict,
    mjj: np.ndarray,
    weight: np.ndarray,
    scan_range: tuple[float, float],
    settings: ScanSettings,
    execution: Any,
    progress: bool,
) -> dict[str, Any]:
    """The best window and the global significance (toys + Gross–Vitells)."""
    from radar.analysis import bumphunt as bh
    from radar.analysis.bumphunt.globalsig import global_significance, toy_scans
    from radar.analysis.execution import run_tasks

    usable = [r for r in rows if r.get("local_z") is not None]
    result: dict[str, Any] = {"windows": rows, "best": None, "global_z": None, "global_p": None}
    if not usable:
        log.error("scan: no window has a usable working point; no best window, no global significance")
        return result
    best = max(usable, key=lambda r: r["local_z"])
    result["best"] = {
        "sr": best["sr"],
        "local_z": best["local_z"],
        "p_local": _p(best["local_z"]),
        "method": best["best_method"],
        "working_point": best["best_working_point"],
    }
    lo, hi = scan_range
    grid = lo + settings.bin_width * np.arange(int(round((hi - lo) / settings.bin_width)) + 1)
    full = np.histogram(mjj, bins=grid, weights=weight)[0].astype(float)
    generator = bh.fit_sidebands(full, grid, None, bh.FitConfig())
    toy_info: dict[str, Any] = {
        "generator_flags": list(generator.flags),
        "generator_n_params": generator.n_params,
    }
    if settings.toys == 0 or not np.all(np.isfinite(generator.theta)):
        if settings.toys:
            log.error("scan toys: the background-only fit of the whole spectrum failed %s", generator.flags)
        result["global"] = {
            "method": "none",
            "reason": "no toys" if not settings.toys else "toy generator fit failed",
        }
        result["toys"] = toy_info
        return result
    if not generator.ok:
        log.warning(
            "scan toys: the toy generator fit is flagged %s; the global significance is approximate",
            generator.flags,
        )

    def theta(wp):
        return [float(t) for t in wp["theta"]] if np.all(np.isfinite(wp["theta"])) else None

    spec_windows, sequences = [], set()
    for index, row in enumerate(rows):
        done = [(m, hunts[(row["tag"], m)]) for m in settings.methods if hunts.get((row["tag"], m))]
        if not done:
            continue
        no_cut = next((w for _, wps in done for w in wps if w["efficiency"] >= 1), None)
        methods = {
            m: [
                {"efficiency": w["efficiency"], "eff": w["efficiency_realised"], "theta": theta(w)}
                for w in sorted(wps, key=lambda w: -w["efficiency"])
                if w["efficiency"] < 1
            ]
            for m, wps in done
        }
        sequences |= {f"{m} {w['efficiency']:g}" for m, wps in methods.items() for w in wps}
        if no_cut is not None:
            sequences.add("no cut")
        edges = done[0][1][0]["edges"]
        spec_windows.append(
            {
                "index": index,
                "sr": row["sr"],
                "methods": methods,
                "no_cut": None if no_cut is None else {"theta": theta(no_cut)},
                "slice": [
                    int(round((edges[0] - grid[0]) / settings.bin_width)),
                    int(round((edges[1] - grid[0]) / settings.bin_width)),
                ],
            }
        )
    spec = {
        "grid": grid.tolist(),
        "mu": generator.expected(grid).tolist(),
        "windows": spec_windows,
        "n_windows": len(rows),
        "sequences": sorted(sequences),
        "z0": settings.z0,
    }
    seeds = [int(s) for s in np.random.SeedSequence(settings.toy_seed).generate_state(settings.toys)]
    n_batches = max(1, min(settings.toys, 8))
    batches = [seeds[i::n_batches] for i in range(n_batches)]
    t0 = time.perf_counter()
    done = run_tasks(
        toy_scans,
        [[(i, (spec, b)) for i, b in enumerate(batches)]],
        execution,
        progress=progress,
        desc="scan toys",
    )
    failed = [v for v in done.values() if isinstance(v, str)]
    if failed:
        raise RuntimeError(f"scan toys failed: {failed[0]}")
    pairs = [p for i in range(n_batches) for p in done[i]]
    toys_max = np.array([p[0] for p in pairs])
    toys_up = np.array([p[1] for p in pairs])
    glob = global_significance(best["local_z"], toys_max, toys_up, z0=settings.z0, n_scans=len(sequences))
    result.update(
        global_z=glob["z_global"],
        global_p=glob["p_global"],
        trials_factor=glob["trials_factor"],
        **{"global": glob},
    )
    result["toys"] = {
        **toy_info,
        "n_toys": int(toys_max.size),
        "sequences": sorted(sequences),
        "max_z": toys_max.tolist(),
        "upcrossings": toys_up.tolist(),
        "seconds": time.perf_counter() - t0,
        "not_included": "retraining of templates and classifiers (the toys thin the fitted background "
        "spectrum with each cut's realised efficiency): the closure benchmark run as "
        "a scan on background-only data measures that part",
    }
    log.info(
        "scan: best window %s (%s, %s) local Z %.2f; global Z %.2f (%s)",
        best["sr"],
        best["best_method"],
        best["best_working_point"],
        best["local_z"],
        glob["z_global"],
        glob["method"],
    )
    return result


def _p(z: float) -> float:
    from scipy import stats

    return float(stats.norm.sf(z))


def _timing(cfgs: dict, settings: ScanSettings) -> dict[str, Any]:
    """Wall time per window and method (the units' own seconds, summed over seeds)."""
    from radar.analysis.rundir import unit_dir

    out: dict[str, Any] = {}
    warm: dict[str, set] = {}
    for tag, cfg in cfgs.items():
        for method in settings.methods:
            for seed in settings.seeds:
                path = unit_dir(cfg.output_dir, method, None, seed) / "metrics.json"
                if path.exists():
                    metrics = json.loads(path.read_text())
                    out.setdefault(method, {}).setdefault(tag, 0.0)
                    out[method][tag] += float(metrics.get("seconds") or 0.0)
                    if metrics.get("warm_started_folds"):
                        warm.setdefault(method, set()).add(tag)
    return {
        m: {
            "per_window": v,
            "median_per_window": float(np.median(list(v.values()))),
            "total": float(sum(v.values())),
            **({"warm_started_windows": sorted(warm[m])} if m in warm else {}),
        }
        for m, v in out.items()
    }


def _figures(scan: dict[str, Any], out: Path, settings: ScanSettings) -> list[Path]:
    from radar.plots.scan import plot_blind_scan
    from radar.plots.style import save_figure

    try:
        return save_figure(plot_blind_scan(scan, settings.style), out / "figures" / "scan_local_p")[:1]
    except Exception:  # a figure must not lose the scan
        log.exception("scan figure failed")
        return []


def _write_report(out: Path, scan: dict[str, Any], figures: list[Path]) -> Path:
    from radar.processors.io import atomic_output

    lines = ["# radar scan: blind search over m_JJ", ""]
    best, glob = scan.get("best"), scan.get("global") or {}
    failed = [w for w in scan["windows"] if w["status"] == "failed"]
    if best is None:
        lines.append("**No window gave a usable working point: no result.** See the failures below.")
    else:
        z_glob = glob.get("z_global")
        glob_text = (
            "no global significance (no toys)"
            if z_glob is None
            else f"global Z = **{z_glob:.2f}** (p = {glob['p_global']:.2g}, {glob['method']}; "
            f"trials factor {glob['trials_factor']:.3g})"
        )
        lines.append(
            f"**Most significant window: SR {best['sr'][0]:.0f}-{best['sr'][1]:.0f} GeV** "
            f"({best['method']}, {_wp(best['working_point'])}): local Z = **{best['local_z']:.2f}**, "
            f"{glob_text}."
        )
        if glob.get("z_toys_is_lower_bound"):
            lines.append(
                f"No toy of {glob['n_toys']} reached the observed local Z: the toys alone say global "
                f"Z ≥ {glob['z_toys']:.2f}; the asymptotic value extends them."
            )
        best_row = next(w for w in scan["windows"] if w["sr"] == best["sr"])
        worries = [f for f in best_row.get("flags", []) if f not in ("",)]
        trust = []
        if worries:
            trust.append(f"flags in this window (some working point or method): {', '.join(worries)}")
        if failed:
            trust.append(f"{len(failed)} of {scan['n_windows']} windows failed (listed below)")
        if scan.get("n_skipped_windows"):
            trust.append(
                f"{scan['n_skipped_windows']} of {scan['n_windows']} windows not run (too few events or "
                "refused by the search's checks; listed below)"
            )
        if (scan.get("toys") or {}).get("generator_flags"):
            trust.append(f"the toy generator fit is flagged {scan['toys']['generator_flags']}")
        lines.append(
            "Trust: "
            + (
                "; ".join(trust) + "."
                if trust
                else "no flag on the best window's headline, every window ran."
            )
        )
        lines.append(
            "The toys do not include retraining the templates and classifiers; the closure benchmark "
            "(benchmarks/null_chain.py, benchmarks/scan_null.py) measures that part."
        )
    lines += [
        "",
        "| SR [GeV] | status | best method | working point | local Z | flags |",
        "|---|---|---|---|---|---|",
    ]
    for w in scan["windows"]:
        z = "—" if w.get("local_z") is None else f"{w['local_z']:.2f}"
        lines.append(
            f"| {w['sr'][0]:.0f}–{w['sr'][1]:.0f} | {w['status']} | {w.get('best_method', '—')} | "
            f"{_wp(w.get('best_working_point'))} | {z} | {', '.join(w.get('flags', [])) or '—'} |"
        )
    if scan.get("failures"):
        lines += ["", "## Failures", ""] + [f"- {tag}: {msg}" for tag, msg in scan["failures"].items()]
    if scan.get("skipped"):
        lines += ["", "## Windows not run (the search's checks refused them, e.g. too few events)", ""]
        lines += [f"- {tag}: {msg}" for tag, msg in scan["skipped"].items()]
    if scan.get("timing"):
        lines += ["", "## Wall time per window (units, summed over seeds)", ""]
        for method, t in scan["timing"].items():
            lines.append(f"- {method}: median {t['median_per_window']:.0f} s per window")
    lines += ["", f"Scan wall time {scan['seconds']:.0f} s."]
    for fig in figures:
        lines.append(f"\n![local p-value vs m_JJ]({Path(fig).relative_to(out)})")
    path = out / "report.md"
    with atomic_output(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return path


def _wp(efficiency: float | None) -> str:
    if efficiency is None:
        return "—"
    return "no cut" if efficiency >= 1 else f"top {100 * efficiency:g} %"

"""A weakly supervised resonant search: methods x injections x seeds → scores, metrics, models.

One *unit* is one (method, injection, seed). Each unit prepares its data deterministically from the
config (the injection and the test split depend only on ``data_seed`` and the injection; the seed
varies the trainings), runs its method and writes, atomically, into
``RUN/<method>/inj_<injection>/seed_<seed>/``:

- ``scores.parquet``: one row per data event in the m_JJ range — ``mjj, score, label, weight, in_sr,
  role`` (+ ``score_fold_mean``). Every data event is scored by exactly one model that never trained
  on it, all such models trained alike (k folds over the data, :func:`radar.analysis.units._classify`; density methods:
  k density folds), so SR and sideband scores share one distribution. Templates fitted on data (CATHODE,
  LaCATHODE, SALAD, CURTAINs, FETA) are fitted per fold too (:func:`radar.analysis.units._classify_per_fold`): a sideband
  event never scores against a template that learnt it. ``role`` says which class the
  event was in: ``data`` / ``template`` (class 1 / 0 of the other folds' trainings), ``fold`` (in no
  class, e.g. sidebands of a template method), ``density`` (ANODE, R-ANODE). ``score_fold_mean`` is a
  diagnostic only: the pre-fix scheme (events in no class scored by the mean of the k models), whose
  narrower tail made fake bumps; the closure benchmark shows it, the bump hunt never reads it.
- ``test_scores.parquet``: the labelled SR test set ``mjj, score, label, weight``.
- ``models/``: the fold classifiers; ``metrics.json`` last (its presence marks the unit finished).

The run directory also gets ``config.yaml`` (resolved), ``manifest.json`` (inputs' sha256, config,
seeds, versions, unit status) and ``metrics_table.csv``/``.md`` (median and 16-84 % band over seeds).

Methods (:func:`available_methods`): ``cathode``, ``lacathode``, ``cwola_hunting``, ``anode``, ``iad``,
``supervised`` and the other templates. New ones register with :func:`register_method`.
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import radar.analysis.methods  # noqa: F401  (registers the built-in methods)
from radar.analysis.config import SearchConfig, config_from_dict
from radar.analysis.methods import SCORE_COMBINATIONS, TEMPLATE_METHODS, combination_members
from radar.analysis.preparation import (
    _CACHE,
    PreparedData,
    _check_truth_inputs,
    check_injections,
    load_inputs,
    prepare_data,
)
from radar.analysis.rundir import (
    TEMPLATE_SAMPLE,
    _injection_tag,
    load_scores,
    load_template_sample,
    record_stop,
    run_lock,
    unit_dir,
    unit_finished,
)
from radar.analysis.units import (
    _METHODS,
    REPLICA_SEED_STEP,
    MethodOutput,
    UnitContext,
    available_methods,
    average_replicas,
    classifier_settings,
    method_info,
    register_method,
)
from radar.analysis.validation import validate_config, validate_data

__all__ = [
    "SCORE_COMBINATIONS",
    "TEMPLATE_METHODS",
    "TEMPLATE_SAMPLE",
    "MethodOutput",
    "PreparedData",
    "UnitContext",
    "available_methods",
    "check_injections",
    "classifier_settings",
    "combination_members",
    "load_inputs",
    "load_scores",
    "load_template_sample",
    "metrics_table",
    "prepare_data",
    "register_method",
    "run_search",
    "run_unit",
    "unit_dir",
    "unit_finished",
]

log = logging.getLogger(__name__)


def _check_run_current(manifest_path: str | Path, run_id: str | None, what: str) -> None:
    """A unit writes into the run directory only while the search that sent it is still running there:
    after SIGTERM/Ctrl-C, a failure or an --overwrite by another search, units still running on a cluster
    (Dask cannot stop a running task) find the manifest changed and discard their outputs instead of
    writing into a run that has moved on."""
    import json

    if run_id is None:
        return
    path = Path(manifest_path)
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        manifest = {}
    if manifest.get("run_id") != run_id or manifest.get("status") != "running":
        raise RuntimeError(
            f"{what}: the run that sent this unit is no longer running ({path}: status "
            f"{manifest.get('status')!r}); its outputs are discarded"
        )


def run_unit(
    cfg_dict: dict,
    base_dir: str,
    run_dir: str,
    method: str,
    injection: float | None,
    seed: int,
    run_id: str | None = None,
    manifest: str | None = None,
) -> dict:
    """Run one (method, injection, seed) and write its outputs into its unit directory; return metrics.

    Takes plain values so that it can run as a Dask task in another process. ``run_id``: the id of the
    run that sent it, in ``manifest`` (default ``RUN/manifest.json``; a scan's ``scan_manifest.json``); the
    unit writes nothing once that run stopped (:func:`_check_run_current`).
    """
    from radar.analysis.metrics import auc, classifier_metrics
    from radar.processors.io import atomic_output, write_json

    cfg = config_from_dict(cfg_dict, base_dir=base_dir)
    if cfg.execution.threads_per_task:
        import torch

        torch.set_num_threads(int(cfg.execution.threads_per_task))
    out_dir = unit_dir(Path(run_dir), method, injection, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").unlink(missing_ok=True)  # written last: its presence marks a finished unit
    t0 = time.perf_counter()
    prepared = prepare_data(cfg, injection)
    n_replicas = cfg.replicas_for(method)
    outputs = []
    for replica in range(n_replicas):
        model_dir = (out_dir / "models") if cfg.save_models else None
        if model_dir is not None and n_replicas > 1:
            model_dir = model_dir / f"replica_{replica}"
        ctx = UnitContext(
            cfg=cfg,
            prepared=prepared,
            method=method,
            seed=seed + REPLICA_SEED_STEP * replica,
            model_dir=model_dir,
            run_dir=Path(run_dir),
            injection=injection,
            replica=replica,
        )
        if ctx.model_dir is not None:
            ctx.model_dir.mkdir(parents=True, exist_ok=True)
        if n_replicas > 1:
            log.info("%s seed %d: replica %d of %d", method, seed, replica + 1, n_replicas)
        outputs.append(_METHODS[cfg.base_method(method)](ctx))
    output = average_replicas(outputs)
    data, test = prepared.data, prepared.test
    if len(output.scores) != len(data) or not np.isfinite(output.scores).all():
        raise RuntimeError(f"{method}: expected a finite score for each of {len(data)} data events")
    in_sr = ctx.regions.sr_mask(data)
    scores = pd.DataFrame(
        {
            "mjj": data["mjj"].to_numpy(),
            "score": output.scores,
            "label": data["label"].to_numpy(),
            "weight": data["weight"].to_numpy(),
            "in_sr": in_sr,
            "role": pd.Categorical(output.role.astype(str)),
        }
    )
    if output.diagnostic_scores is not None:
        scores["score_fold_mean"] = output.diagnostic_scores

    def still_current() -> None:
        try:
            _check_run_current(
                manifest or Path(run_dir) / "manifest.json",
                run_id,
                f"{method} {_injection_tag(injection)} seed {seed}",
            )
        except RuntimeError:
            for name in ("scores.parquet", "test_scores.parquet", TEMPLATE_SAMPLE):
                (out_dir / name).unlink(missing_ok=True)
            shutil.rmtree(out_dir / "models", ignore_errors=True)  # this unit's, unfinished
            raise

    still_current()
    with atomic_output(out_dir / "scores.parquet") as tmp:
        scores.to_parquet(tmp, index=False)
    test_frame = pd.DataFrame(
        {
            "mjj": test["mjj"].to_numpy(),
            "score": output.test_scores,
            "label": test["label"].to_numpy(),
            "weight": test["weight"].to_numpy(),
        }
    )
    with atomic_output(out_dir / "test_scores.parquet") as tmp:
        test_frame.to_parquet(tmp, index=False)
    metrics: dict[str, Any] = {
        "method": method,
        "injection": injection,
        "seed": seed,
        **prepared.injection,
        "n_data": len(data),
        "n_data_sr": int(in_sr.sum()),
    }
    labels = test["label"].to_numpy()
    if len(test) and set(np.unique(labels)) >= {0.0, 1.0}:
        sel = np.isin(labels, (0, 1))
        test_weights = test["weight"].to_numpy(dtype=float)[sel] if "weight" in test.columns else None
        metrics["test"] = classifier_metrics(
            labels[sel],
            output.test_scores[sel],
            None if test_weights is None or np.all(test_weights == 1.0) else test_weights,
            rel_error=cfg.fpr_floor_rel_error,
            rejection=cfg.rejection,
        )
    else:
        metrics["test"] = None
        log.warning("%s: the test set has no labelled signal and background; no test metrics", method)
    sr_labels = data["label"].to_numpy()[in_sr]
    if set(np.unique(sr_labels)) >= {0.0, 1.0}:
        sel = np.isin(sr_labels, (0, 1))
        metrics["auc_sr_data_truth"] = auc(sr_labels[sel], output.scores[in_sr][sel])
    metrics["classification_auc"] = output.classification_auc
    metrics["classification_auc_null_sigma"] = output.classification_auc_sigma
    metrics.update(output.extra)
    metrics["seconds"] = time.perf_counter() - t0
    metrics["seconds_with_members"] = metrics["seconds"] + float(metrics.pop("seconds_members", 0.0))
    still_current()
    write_json(out_dir / "metrics.json", metrics)  # last: marks the unit finished
    log.info("%s %s seed %d done in %.0f s", method, _injection_tag(injection), seed, metrics["seconds"])
    return metrics


def _phases(units: list[tuple], cfg: SearchConfig) -> list[list[tuple]]:
    """Units in the order they may run: a sample-level combination after the units it reuses."""
    first = [u for u in units if cfg.base_method(u[0]) != "combined_events"]
    later = [u for u in units if cfg.base_method(u[0]) == "combined_events"]
    return [p for p in (first, later) if p]


def _execute(
    cfg: SearchConfig, run_dir: Path, units: list[tuple], progress: bool, run_id: str | None = None
) -> dict[tuple, dict | str]:
    """Run units (phase by phase, :func:`_phases`); returns {unit: metrics dict or an error string}."""
    from radar.analysis.execution import run_tasks

    args = (cfg.to_dict(), cfg.base_dir, str(run_dir))
    phases = [[(unit, (*args, *unit, run_id)) for unit in phase] for phase in _phases(units, cfg)]
    return run_tasks(run_unit, phases, cfg.execution, progress=progress, desc="search units")


def metrics_table(run_dir: Path, cfg: SearchConfig) -> list[dict]:
    """Aggregate finished units: per (method, injection) medians and 16-84 % bands over seeds, the wall
    time per unit, and the flow trainings that failed (NaN, divergence) over all seeds."""
    import json

    from radar.analysis.metrics import summarise

    rows = []
    for method in cfg.methods:
        for injection in cfg.injections:
            units = []
            for seed in cfg.seeds:
                path = unit_dir(run_dir, method, injection, seed) / "metrics.json"
                if path.exists():
                    units.append(json.loads(path.read_text()))
            if not units:
                continue
            row: dict[str, Any] = {
                "method": method,
                "injection": injection,
                "n_sig_sr": units[0]["n_sig_sr"],
                "s_over_b_sr": units[0]["s_over_b_sr"],
                "n_seeds": len(units),
            }
            for name, getter in (
                ("max_sic", lambda u: (u["test"] or {}).get("max_sic")),
                ("sic_at_rejection", lambda u: (u["test"] or {}).get("sic_at_rejection")),
                ("auc", lambda u: (u["test"] or {}).get("auc")),
                ("classification_auc", lambda u: u.get("classification_auc")),
                ("seconds", lambda u: u.get("seconds")),
            ):
                s = summarise(getter(u) for u in units)
                row[f"{name}_median"], row[f"{name}_p16"], row[f"{name}_p84"] = (
                    s["median"],
                    s["p16"],
                    s["p84"],
                )
            row["seconds_with_members"] = float(
                np.median([u.get("seconds_with_members", u.get("seconds", np.nan)) for u in units])
            )
            if any("flow_trainings" in u or "flow_trainings_failed" in u for u in units):
                row["flow_trainings_failed"] = int(sum(u.get("flow_trainings_failed", 0) for u in units))
                row["flow_trainings"] = int(
                    sum(u.get("flow_trainings", u.get("n_trainings", 0)) for u in units)
                )
            fractions = [u["signal_fraction"] for u in units if u.get("signal_fraction") is not None]
            if fractions:
                row["signal_fraction_median"] = float(np.median(fractions))
            checks = [u["cut_excess"] for u in units if u.get("cut_excess")]
            for i, check in enumerate(checks[0] if checks else []):  # the context templates' null check
                z = [c[i]["z"] for c in checks if len(c) > i]
                name = f"cut_excess_z_top{100 * check['efficiency']:g}pct"
                row[f"{name}_median"], row[f"{name}_max"] = float(np.median(z)), float(np.max(z))
            rows.append(row)
    return rows


def _write_table(run_dir: Path, rows: list[dict], rejection: float = 1000.0) -> None:
    from radar.analysis.metrics import markdown_table
    from radar.processors.io import atomic_output

    frame = pd.DataFrame(rows)
    with atomic_output(run_dir / "metrics_table.csv") as tmp:
        frame.to_csv(tmp, index=False)

    def band(r: dict, n: str) -> str:
        return f"{r[n + '_median']:.2f} [{r[n + '_p16']:.2f}, {r[n + '_p84']:.2f}]"

    def failures(r: dict) -> str:
        if "flow_trainings_failed" not in r or pd.isna(r.get("flow_trainings_failed")):
            return ""
        if r.get("flow_trainings") and not pd.isna(r["flow_trainings"]):
            return f"{int(r['flow_trainings_failed'])}/{int(r['flow_trainings'])}"
        return str(int(r["flow_trainings_failed"]))

    def cut_excess(r: dict) -> str:
        """The null check of a context template's trained chain: median (max) Z over seeds per cut."""
        prefix = "cut_excess_z_top"
        cuts = [
            k[len(prefix) : -len("pct_median")] for k in r if k.startswith(prefix) and k.endswith("_median")
        ]
        cuts = sorted((c for c in cuts if not pd.isna(r[f"{prefix}{c}pct_median"])), key=lambda c: -float(c))
        if not cuts:
            return ""
        medians = " / ".join(f"{r[f'{prefix}{c}pct_median']:.2f}" for c in cuts)
        maxima = " / ".join(f"{r[f'{prefix}{c}pct_max']:.2f}" for c in cuts)
        return f"{medians} (max {maxima}; top {' / '.join(cuts)} %)"

    pretty = []
    for r in rows:
        seconds = f"{r['seconds_median']:.0f}"
        if r.get("seconds_with_members", r["seconds_median"]) > r["seconds_median"] + 0.5:
            seconds += f" ({r['seconds_with_members']:.0f} with members)"
        pretty.append(
            {
                "method": r["method"],
                "injection": r["injection"],
                "n_sig_sr": r["n_sig_sr"],
                "S/B_SR": f"{100 * r['s_over_b_sr']:.3f} %",
                "seeds": r["n_seeds"],
                "max SIC": band(r, "max_sic"),
                f"SIC@R={rejection:g}": band(r, "sic_at_rejection"),
                "AUC": band(r, "auc"),
                "template-vs-data AUC": band(r, "classification_auc"),
                "s/unit": seconds,
                "failed trainings": failures(r),
                "cut-excess Z": cut_excess(r),
            }
        )
    if not any(p["cut-excess Z"] for p in pretty):
        for p in pretty:
            del p["cut-excess Z"]
    with atomic_output(run_dir / "metrics_table.md") as tmp:
        tmp.write_text(markdown_table(pretty))


def _write_performance_figure(run_dir: Path, cfg: SearchConfig) -> None:
    """``RUN/figures/sic_vs_injection.{png,pdf}``: max SIC and SIC at the rejection versus S/B in the SR,
    median and 16-84 % band over seeds, one line per method (injections with signal only)."""
    from radar.plots.performance import metrics_frame, plot_metrics_vs_injection
    from radar.plots.style import save_figure

    paths = [
        unit_dir(run_dir, m, i, s) / "metrics.json"
        for m in cfg.methods
        for i in cfg.injections
        for s in cfg.seeds
    ]
    frame = metrics_frame([p for p in paths if p.exists()])
    if frame.empty or "max_sic" not in frame or not (frame["s_over_b_sr"] > 0).any():
        return
    frame = frame[frame["s_over_b_sr"] > 0]
    try:
        (run_dir / "figures").mkdir(exist_ok=True)
        save_figure(
            plot_metrics_vs_injection(frame, x="s_over_b_sr"), run_dir / "figures" / "sic_vs_injection"
        )
    except Exception:  # a figure must not lose the run
        log.exception("sic_vs_injection figure failed")


def run_search(
    cfg: SearchConfig, *, resume: bool = False, overwrite: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Run every (method, injection, seed) of ``cfg``; returns the manifest (also written to the run dir).

    Validation (config and data) happens before any training. ``resume`` skips finished units; without
    it, a run directory holding finished units is an error unless ``overwrite``.
    """
    import datetime
    import json

    import yaml

    from radar.processors.io import atomic_output, file_sha256, package_versions, write_json

    validate_config(cfg)
    _CACHE.clear()
    inputs = load_inputs(cfg)
    validate_data(cfg, inputs["data"], inputs["signal"], inputs["test"])
    check_injections(cfg, inputs)
    if any(method_info(cfg.base_method(m)).truth_labels for m in cfg.methods):
        _check_truth_inputs(cfg, inputs)
    run_dir = cfg.output_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir):  # one search at a time writes into a run directory
        saved = run_dir / "config.yaml"
        digest = cfg.digest()
        unit_digest = cfg.unit_digest()
        manifest_path = run_dir / "manifest.json"
        files = [p for p in cfg.input.data] + [
            v for v in (cfg.input.signal, cfg.input.simulation, cfg.input.test, cfg.input.iad_template) if v
        ]
        input_hashes = {str(cfg.path(p)): file_sha256(cfg.path(p)) for p in files}
        if saved.exists() and manifest_path.exists() and not overwrite:
            previous = json.loads(manifest_path.read_text())
            # methods, injections and seeds may be extended; anything that changes a unit's result may not
            old, new = (
                (str(previous["unit_digest"]), unit_digest)
                if "unit_digest" in previous
                else (str(previous.get("config_digest")), digest)
            )
            if old != new:
                raise ValueError(
                    f"{run_dir}: holds a run with a different config (digest {old[:12]} vs "
                    f"{new[:12]}); use another output directory or --overwrite"
                )
            changed = sorted(
                p
                for p in set(input_hashes) | set(previous.get("inputs", {}))
                if input_hashes.get(p) != previous.get("inputs", {}).get(p)
            )
            if changed:
                raise ValueError(
                    f"{run_dir}: the input files changed since its units were trained ({changed}); "
                    "use another output directory or --overwrite"
                )
        # seed by seed: an interrupted run has whole seeds finished (and resumes where it stopped)
        units = [
            (m, i, s)
            for s in cfg.seeds
            for i in cfg.injections
            for m in cfg.methods
            if m not in SCORE_COMBINATIONS
        ]
        finished = [u for u in units if unit_finished(run_dir, *u)]
        if finished and not resume and not overwrite:
            raise ValueError(
                f"{run_dir}: {len(finished)} units already finished; use --resume to continue "
                "or --overwrite to redo them"
            )
        todo = [u for u in units if not (resume and u in finished)]
        resolved = cfg.to_dict()
        resolved["input"] = {
            k: (
                [str(cfg.path(p)) for p in v]
                if isinstance(v, list)
                else (str(cfg.path(v)) if isinstance(v, str) else v)
            )
            for k, v in resolved["input"].items()
        }
        resolved["output"] = str(run_dir)
        with atomic_output(saved) as tmp:
            tmp.write_text(yaml.safe_dump(json.loads(json.dumps(resolved, default=str)), sort_keys=False))
        manifest: dict[str, Any] = {
            "config": resolved,
            "config_digest": digest,
            "unit_digest": unit_digest,
            "seeds": cfg.seeds,
            "data_seed": cfg.data_seed,
            "inputs": input_hashes,
            "versions": package_versions(),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "units_skipped": [list(u) for u in units if u not in todo],
            "run_id": uuid.uuid4().hex,
        }
        write_json(manifest_path, {**manifest, "status": "running"})
        log.info(
            "search %s: %d units to run (%d already finished) in %s",
            cfg.name,
            len(todo),
            len(units) - len(todo),
            run_dir,
        )
        # prepared data is cached per process: prime it here for the synchronous mode
        if cfg.execution.mode == "sync":
            for injection in cfg.injections:
                prepare_data(cfg, injection, inputs)
        try:
            results = _execute(cfg, run_dir, todo, progress, manifest["run_id"])
        except BaseException as error:  # killed or crashed: the manifest says so (finished units stay valid)
            record_stop(manifest_path, manifest, error)
            raise
        if "combined_scores" in cfg.methods:
            from radar.analysis.combine import write_combined_units

            write_combined_units(
                run_dir,
                combination_members(cfg),
                cfg.injections,
                cfg.seeds,
                rejection=cfg.rejection,
                rel_error=cfg.fpr_floor_rel_error,
            )
        failed = {"/".join(map(str, u)): r for u, r in results.items() if isinstance(r, str)}
        rows = metrics_table(run_dir, cfg)
        if rows:
            _write_table(run_dir, rows, cfg.rejection)
            _write_performance_figure(run_dir, cfg)
        if cfg.compare and rows:
            from radar.analysis.compare import compare_run

            try:
                compare_run(run_dir, cfg)
            except Exception as error:  # the studies are extras: a failure there must not lose the table
                log.exception("comparison studies failed")
                failed["comparison"] = f"{type(error).__name__}: {error}"
        manifest.update(
            {
                "status": "failed" if failed else "finished",
                "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                "units_run": [list(u) for u in todo],
                "n_failed": len(failed),
                "failures": failed,
                "seconds": {
                    "/".join(map(str, u)): r["seconds"] for u, r in results.items() if isinstance(r, dict)
                },
            }
        )
        write_json(manifest_path, manifest)
        return {**manifest, "table": rows}

"""Combinations of methods, as in the interplay paper: score level and sample level.

Score level ("combined scores"): the anomaly score of an event is the mean of the per-method scores
(:func:`combine_scores`). The paper averages CWoLa classifier outputs, which share one scale (P(data)
in [0, 1]); to mix scores of different scales (e.g. ANODE/R-ANODE log ratios with classifier outputs)
use ``how="rank"``, the mean of per-method percentile ranks.

:func:`combined_unit_scores` builds the combined scores of one (injection, seed) from the finished
units of a ``radar search`` run directory (``RUN/<method>/inj_<x>/seed_<s>/scores.parquet`` and
``test_scores.parquet``), checking that every member scored the same events.

Sample level ("combined events"): one template made of an equal-weight share of every member template
(:class:`radar.models.templates.combined.CombinedTemplate`, registered as ``combined_events``);
:func:`build_combined_template` makes one, :func:`combine_samples` stacks already drawn samples.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

__all__ = [
    "HOWS",
    "build_combined_template",
    "combine_samples",
    "combine_scores",
    "combined_unit_scores",
    "write_combined_units",
]

HOWS = ("mean", "rank")


def _ranks(s: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return (rankdata(s, method="average") - 0.5) / len(s) if len(s) else s


def combine_scores(
    scores: Mapping[str, np.ndarray], how: str = "mean", weights: Mapping[str, float] | None = None
) -> np.ndarray:
    """Score-level combination of per-method scores of the same N events → (N,).

    ``how="mean"``: (weighted) mean of the raw scores. ``how="rank"``: mean of per-method percentile
    ranks in (0, 1) (scale-free). ``weights``: optional per-method weights (default equal).
    Raises ValueError on unequal lengths, non-finite scores or an empty mapping.
    """
    if how not in HOWS:
        raise ValueError(f"combine_scores: how must be one of {HOWS}, got {how!r}")
    if not scores:
        raise ValueError("combine_scores: no method scores given")
    arrays = {name: np.asarray(s, dtype=np.float64).reshape(-1) for name, s in scores.items()}
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"combine_scores: methods scored different numbers of events: {lengths}")
    for name, a in arrays.items():
        bad = np.flatnonzero(~np.isfinite(a))
        if bad.size:
            raise ValueError(
                f"combine_scores: method {name!r} has {bad.size} non-finite scores "
                f"(events {bad[:5].tolist()})"
            )
    w = {name: 1.0 for name in arrays} if weights is None else {name: float(weights[name]) for name in arrays}
    total = sum(w.values())
    if total <= 0:
        raise ValueError(f"combine_scores: weights must sum to a positive number, got {w}")
    out = np.zeros(next(iter(lengths.values())))
    for name, a in arrays.items():
        out += w[name] * (_ranks(a) if how == "rank" else a)
    return out / total


def combined_unit_scores(
    run_dir: str | Path, methods: Sequence[str], injection: float | None, seed: int, how: str = "mean"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Combined ``scores`` and ``test_scores`` tables of one (injection, seed) of a search run.

    Reads each member's unit outputs; their ``mjj`` and ``label`` columns must agree row by row (same
    prepared data). Returns copies of the first member's tables with ``score`` replaced by the
    combination (and, for ``scores``, ``role`` set to "combined").
    """
    from radar.analysis.rundir import unit_dir

    if len(methods) < 2:
        raise ValueError(f"combined_unit_scores: need >= 2 member methods, got {list(methods)}")
    tables: dict[str, list[pd.DataFrame]] = {"scores": [], "test_scores": []}
    for method in methods:
        directory = unit_dir(Path(run_dir), method, injection, seed)
        for kind in tables:
            path = directory / f"{kind}.parquet"
            if not path.exists():
                raise FileNotFoundError(
                    f"{path}: member {method!r} of the combination has not finished "
                    f"(injection {injection}, seed {seed})"
                )
            tables[kind].append(pd.read_parquet(path))
    out = []
    for kind, frames in tables.items():
        first = frames[0]
        for method, frame in zip(methods[1:], frames[1:]):
            if len(frame) != len(first) or not np.array_equal(
                frame["mjj"].to_numpy(), first["mjj"].to_numpy()
            ):
                raise ValueError(
                    f"combined_unit_scores: {kind} of {method!r} ({len(frame)} events) do not match "
                    f"those of {methods[0]!r} ({len(first)} events) row by row"
                )
        combined = first.drop(columns=["score_fold_mean"], errors="ignore")  # a member's diagnostic only
        combined["score"] = combine_scores(
            {m: f["score"].to_numpy() for m, f in zip(methods, frames)}, how=how
        )
        if "role" in combined:
            combined["role"] = pd.Categorical(np.full(len(combined), "combined"))
        out.append(combined)
    return out[0], out[1]


def write_combined_units(
    run_dir: str | Path,
    members: Sequence[str],
    injections: Sequence[float | None],
    seeds: Sequence[int],
    *,
    name: str = "combined_scores",
    how: str = "mean",
    rejection: float = 1000.0,
    rel_error: float = 0.4,
) -> list[Path]:
    """Write the score-level combination of ``members`` as method ``name`` into a search run directory.

    For every (injection, seed) whose member units have all finished, writes
    ``RUN/<name>/inj_<x>/seed_<s>/{scores,test_scores}.parquet`` and ``metrics.json`` (last) in the
    format of :func:`radar.analysis.search.run_unit`, so that ``metrics_table`` picks the combination up like
    any method. Units whose members are missing are skipped with a log line. Returns the metrics paths.
    """
    import json

    from radar.analysis.metrics import auc, classifier_metrics
    from radar.analysis.rundir import unit_dir, unit_finished
    from radar.processors.io import atomic_output, write_json

    run_dir = Path(run_dir)
    written = []
    for injection in injections:
        for seed in seeds:
            missing = [m for m in members if not unit_finished(run_dir, m, injection, seed)]
            if missing:
                log.info(
                    "%s: injection %s seed %s skipped, members %s not finished",
                    name,
                    injection,
                    seed,
                    missing,
                )
                continue
            started = time.perf_counter()
            scores, test = combined_unit_scores(run_dir, members, injection, seed, how=how)
            out_dir = unit_dir(run_dir, name, injection, seed)
            out_dir.mkdir(parents=True, exist_ok=True)
            for kind, frame in (("scores", scores), ("test_scores", test)):
                with atomic_output(out_dir / f"{kind}.parquet") as tmp:
                    frame.to_parquet(tmp, index=False)
            member_metrics = [
                json.loads((unit_dir(run_dir, m, injection, seed) / "metrics.json").read_text())
                for m in members
            ]
            first = member_metrics[0]
            keep = ("injection", "n_injected", "n_sig_sr", "n_bkg_sr", "s_over_b_sr", "n_data", "n_data_sr")
            metrics: dict[str, Any] = {
                "method": name,
                "seed": seed,
                **{k: first.get(k) for k in keep},
                "members": list(members),
                "how": how,
            }
            metrics["injection"] = injection
            labels = test["label"].to_numpy()
            sel = np.isin(labels, (0, 1))
            metrics["test"] = (
                classifier_metrics(
                    labels[sel], test["score"].to_numpy()[sel], rel_error=rel_error, rejection=rejection
                )
                if len(test) and {0.0, 1.0} <= set(np.unique(labels))
                else None
            )
            if "in_sr" in scores:
                sr = scores[scores["in_sr"].to_numpy(dtype=bool)]
                sr_labels = sr["label"].to_numpy()
                if {0.0, 1.0} <= set(np.unique(sr_labels)):
                    keep_sr = np.isin(sr_labels, (0, 1))
                    metrics["auc_sr_data_truth"] = auc(sr_labels[keep_sr], sr["score"].to_numpy()[keep_sr])
            metrics["classification_auc"] = None
            metrics["classification_auc_null_sigma"] = None
            metrics["seconds"] = time.perf_counter() - started
            metrics["seconds_with_members"] = metrics["seconds"] + float(
                sum(m.get("seconds", 0.0) for m in member_metrics)
            )
            written.append(write_json(out_dir / "metrics.json", metrics))
    return written


def build_combined_template(
    members: Sequence[str] | None = None,
    *,
    features: Sequence[str] | None = None,
    seed: int = 0,
    device: str = "auto",
    member_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
):
    """A :class:`radar.models.templates.combined.CombinedTemplate` of the named member templates (unfitted)."""
    from radar.models.templates.combined import DEFAULT_MEMBERS, CombinedTemplate
    from radar.processors.features import LHCO_FEATURES

    return CombinedTemplate(
        tuple(features or LHCO_FEATURES),
        seed=seed,
        device=device,
        members=tuple(members or DEFAULT_MEMBERS),
        member_kwargs={k: dict(v) for k, v in (member_kwargs or {}).items()},
    )


def combine_samples(
    samples: Mapping[str, tuple[pd.DataFrame, np.ndarray]],
) -> tuple[pd.DataFrame, np.ndarray]:
    """Concatenate already drawn member samples {name: (events, weights)} with equal total weight per
    member: member k's weights are scaled to sum to (total events) / (number of members).

    Unlike :class:`~radar.models.templates.combined.CombinedTemplate` the members may have drawn different
    numbers of events. Returns (events, weights) with an added ``member`` column naming the source.
    """
    if not samples:
        raise ValueError("combine_samples: no member samples given")
    n_total = sum(len(events) for events, _ in samples.values())
    share = n_total / len(samples)
    frames, weights = [], []
    for name, (events, w) in samples.items():
        w = np.asarray(w, dtype=np.float64)
        if w.shape != (len(events),) or not np.isfinite(w).all() or w.sum() <= 0:
            raise ValueError(
                f"combine_samples: member {name!r} has {len(events)} events but weights of shape "
                f"{w.shape} (sum {w.sum() if w.size else 0}); expected finite, positive sum"
            )
        frames.append(events.assign(member=name))
        weights.append(w * (share / w.sum()))
    return pd.concat(frames, ignore_index=True), np.concatenate(weights)

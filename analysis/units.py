"""What a method is: :class:`UnitContext` in, :class:`MethodOutput` out, registered by name; and the k-fold
classification every method's scores go through (:func:`_classify`, :func:`_classify_per_fold`): every data
event scored once, by models — classifiers and data-fitted templates — that never saw it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from radar.analysis.config import SearchConfig
from radar.analysis.datasets import feature_matrix
from radar.analysis.preparation import PreparedData
from radar.analysis.regions import SearchRegions, search_regions

log = logging.getLogger(__name__)


@dataclass
class MethodOutput:
    """What a method returns: one score per data event, how it was made, and test-set scores."""

    scores: np.ndarray
    role: np.ndarray
    test_scores: np.ndarray
    classification_auc: float | None = None
    classification_auc_sigma: float | None = None
    extra: dict = field(default_factory=dict)
    #: the unsafe pre-fix scores (rows outside the training classes scored by the mean of the k fold
    #: models), written as ``score_fold_mean`` for the closure benchmark; never hunted
    diagnostic_scores: np.ndarray | None = None
    #: per-fold template events (folds in order) scored by a classifier that never saw them — fold f's
    #: held-out events by classifier f, else fold f's template by classifier f+1 (:func:`_classify_per_fold`);
    #: not written, for a method's own checks
    template_scores: np.ndarray | None = None
    #: the fold of every data event (classifier f scored fold f), where the scores are out of fold; for a
    #: method's own checks
    folds: np.ndarray | None = None


@dataclass
class UnitContext:
    cfg: SearchConfig
    prepared: PreparedData
    method: str
    #: the training seed: the unit's seed, or for replica r > 0 of it ``seed + REPLICA_SEED_STEP * r``
    seed: int
    model_dir: Path | None
    #: the run directory and this unit's injection (lets a combination reuse its members' finished units)
    run_dir: Path | None = None
    injection: float | None = None
    #: which of the unit's ``replicas`` this is (0: the one whose seed is the unit's seed)
    replica: int = 0

    @property
    def unit_seed(self) -> int:
        """The seed of the unit (its directory), whatever the replica."""
        return self.seed - REPLICA_SEED_STEP * self.replica

    @property
    def regions(self) -> SearchRegions:
        return regions_for(self.cfg, self.method)

    @property
    def base_method(self) -> str:
        """The registered method this unit runs (``method`` may name a variant of it)."""
        return self.cfg.base_method(self.method)

    @property
    def features(self) -> list[str]:
        return list(self.cfg.features)


#: the training seed of replica r of a unit with seed s is s + REPLICA_SEED_STEP * r (replica 0: the unit's
#: own seed, so ``replicas: 1`` trains exactly what a unit without replicas trains)
REPLICA_SEED_STEP = 1_000_003

MethodFunction = Callable[[UnitContext], MethodOutput]
_METHODS: dict[str, MethodFunction] = {}


@dataclass(frozen=True)
class MethodInfo:
    """What the rest of radar needs to know about a method, in one place.

    kind: ``classifier`` (class 0 vs SR data), ``template`` (a background template fitted per fold, vs SR
    data), ``density`` (a density ratio, no classifier), ``outlier`` (unsupervised, trained on the data without
    labels) or ``combination`` (made from other methods' scores after the units). sidebands: ``wide`` (all of the m_JJ range outside the SR), ``narrow``
    (``regions.cwola_sideband_width`` on each side) or ``none`` (learns from the SR only). needs_simulation:
    ``input.simulation`` is required. truth_labels: learns from the data's truth labels (idealized and
    supervised references). signal_region_setting: its constructor takes the SR from the config.
    context_regions: runs with context regions (``regions.context``, the non-resonant search) as well as with
    an m_JJ window; the others need m_JJ sidebands. settings: takes ``method_settings``. event_weights: trains with the events' ``weight`` column (a method
    that cannot is refused before training when the inputs carry non-unit weights).
    """

    name: str
    kind: str = "classifier"
    sidebands: str = "wide"
    needs_simulation: bool = False
    truth_labels: bool = False
    signal_region_setting: bool = False
    context_regions: bool = False
    settings: bool = True
    event_weights: bool = True


_INFO: dict[str, MethodInfo] = {}


def register_method(name: str, **info: Any) -> Callable[[MethodFunction], MethodFunction]:
    """Decorator: make ``func(ctx) -> MethodOutput`` selectable as ``methods: [name]``, with its
    :class:`MethodInfo` (keyword arguments)."""
    record = MethodInfo(name, **info)

    def wrap(func: MethodFunction) -> MethodFunction:
        _METHODS[name] = func
        _INFO[name] = record
        return func

    return wrap


def register_info(name: str, **info: Any) -> MethodInfo:
    """A method that is not a unit function (the score combination): its :class:`MethodInfo` only."""
    _INFO[name] = MethodInfo(name, **info)
    return _INFO[name]


def regions_for(cfg: SearchConfig, method: str) -> SearchRegions:
    """The SR and sidebands of ``method`` (or a variant of it): narrow sidebands where its record says so;
    with ``regions.context`` the context cuts and their control region (:class:`ContextRegions`)."""
    return search_regions(cfg.regions, narrow=method_info(cfg.base_method(method)).sidebands == "narrow")


def method_info(name: str) -> MethodInfo:
    """The :class:`MethodInfo` of a registered method (raises ValueError for an unknown name)."""
    try:
        return _INFO[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; available: {sorted(_INFO)}") from None


def available_methods() -> list[str]:
    """Every method name a config may use: the registered methods and the score combination (the built-in
    ones register when :mod:`radar.analysis.methods` is imported, as :mod:`radar.analysis.search` does)."""
    return sorted(_INFO)


def classifier_settings(cfg: SearchConfig) -> dict[str, Any]:
    """The configured classifier's keyword arguments with the execution's device and, for HGB, threads."""
    settings = dict(cfg.classifier.settings)
    settings.setdefault("device", cfg.execution.device)
    if cfg.classifier.name == "hgb":
        # one task per core: OpenMP threads beyond threads_per_task only oversubscribe the machine
        settings.setdefault("n_threads", cfg.execution.threads_per_task)
    return settings


#: seed offset of the one fold assignment over the search data (every row: SR, sidebands, the rest)
_DATA_FOLD_SEED = 3


def _classify(
    ctx: UnitContext,
    X0: np.ndarray,
    w0: np.ndarray | None,
    rows0: np.ndarray | None,
    X1: np.ndarray,
    rows1: np.ndarray | None,
    embed: Callable[[pd.DataFrame, str], np.ndarray] | None = None,
    w1: np.ndarray | None = None,
) -> MethodOutput:
    """k-fold class 0 vs class 1 (:func:`radar.analysis.cwola.kfold_scores`); every data event and the test set
    get a score. For class-0 inputs that are data rows or not fitted on the data (CWoLa Hunting's
    sidebands, an external IAD template, supervised signal); a template fitted on data is made per fold
    (:func:`_classify_per_fold`).

    rows0/rows1: data row indices of the class-0/1 events (None: the class is not made of data rows).
    Every data row has its fold from ONE assignment over the data (seeded by the unit seed; balanced
    within class 0, class 1 and the rest), and is scored by the one model that did not train on its
    fold — SR data, sidebands and rows in no class alike (``role`` ``data``, ``template``, ``fold``):
    the scores entering an m_JJ spectrum share one distribution. The labelled test set (SIC curves only) gets the mean of the k
    models. ``embed(table, what)``: the classifier's inputs of a table's events (default: the features).
    w0/w1: the classes' event weights (default: the data rows' ``weight`` column, 1 for inputs that are not
    data rows).
    """
    from radar.analysis.cwola import kfold_scores
    from radar.analysis.metrics import auc, auc_null_sigma

    cfg, data, test = ctx.cfg, ctx.prepared.data, ctx.prepared.test
    embed = embed or (lambda table, what: feature_matrix(table, ctx.features, what))
    k = cfg.k_folds
    weights = data_weights(data)
    if w0 is None and rows0 is not None:
        w0 = weights[rows0]
    if w1 is None and rows1 is not None:
        w1 = weights[rows1]
    data_folds = _data_folds(ctx, rows0, rows1)
    rest = _rows_in_no_class(len(data), rows0, rows1)
    X_test = embed(test, "test") if len(test) else None
    result = kfold_scores(
        X0,
        X1,
        w0,
        w1,
        classifier=cfg.classifier.name,
        k_folds=k,
        seed=ctx.seed,
        folds0=None if rows0 is None else data_folds[rows0],
        folds1=None if rows1 is None else data_folds[rows1],
        X_fold=embed(data.iloc[rest], "data"),
        folds_fold=data_folds[rest],
        X_mean=X_test,
        save_dir=ctx.model_dir,
        **classifier_settings(cfg),
    )
    scores = np.full(len(data), np.nan)
    role = np.full(len(data), "fold", dtype=object)
    scores[rest] = result.scores_fold
    # the pre-fix scheme (rows in no class scored by the fold mean), kept only as a diagnostic column
    fold_mean = scores.copy()
    fold_mean[rest] = result.scores_fold_mean
    if rows0 is not None:
        scores[rows0] = fold_mean[rows0] = result.scores0
        role[rows0] = "template"
    if rows1 is not None:
        scores[rows1] = fold_mean[rows1] = result.scores1
        role[rows1] = "data"
    y = np.concatenate([np.zeros(len(X0)), np.ones(len(X1))])
    s = np.concatenate([result.scores0, result.scores1])
    w = np.concatenate([np.ones(len(X0)) if w0 is None else w0, np.ones(len(X1)) if w1 is None else w1])
    return MethodOutput(
        scores=scores,
        role=role,
        test_scores=result.scores_mean if X_test is not None else np.zeros(0),
        classification_auc=auc(y, s, w),
        classification_auc_sigma=auc_null_sigma(len(X1), len(X0)),
        extra={"n_class0": len(X0), "n_class1": len(X1)},
        diagnostic_scores=fold_mean,
    )


def average_replicas(outputs: list[MethodOutput]) -> MethodOutput:
    """One unit's output from its independently trained replicas: every event's score (data, test set and
    the diagnostic column) is the mean of the replicas' scores. Each replica scores every data event with
    models that did not train on it, so the mean does too, and every event is averaged over the same number
    of identically trained models (the scores entering a spectrum keep one distribution). Role, counts and
    the other extras are replica 0's; the classification AUC is the replicas' mean, each listed."""
    if len(outputs) == 1:
        return outputs[0]
    first = outputs[0]

    def mean(values: list) -> float | None:
        values = [v for v in values if v is not None]
        return float(np.mean(values)) if values else None

    diagnostic = (
        None
        if any(o.diagnostic_scores is None for o in outputs)
        else np.mean([o.diagnostic_scores for o in outputs], axis=0)
    )
    extra = {
        **first.extra,
        "replicas": len(outputs),
        "classification_auc_replicas": [o.classification_auc for o in outputs],
    }
    for key in ("flow_trainings_failed", "n_trainings", "flow_trainings", "n_clipped"):
        if all(key in o.extra for o in outputs):
            extra[key] = sum(int(o.extra[key]) for o in outputs)
    return MethodOutput(
        scores=np.mean([o.scores for o in outputs], axis=0),
        role=first.role,
        test_scores=np.mean([o.test_scores for o in outputs], axis=0),
        classification_auc=mean([o.classification_auc for o in outputs]),
        classification_auc_sigma=first.classification_auc_sigma,
        extra=extra,
        diagnostic_scores=diagnostic,
    )


def data_weights(table: pd.DataFrame) -> np.ndarray:
    """The events' weights (N,): the ``weight`` column, or 1 where the table has none."""
    if "weight" not in table.columns:
        return np.ones(len(table))
    return table["weight"].to_numpy(dtype="float64")


def _rows_in_no_class(n: int, rows0: np.ndarray | None, rows1: np.ndarray | None) -> np.ndarray:
    """Indices of the ``n`` data rows in neither class (None: the class is not made of data rows)."""
    trained = np.zeros(n, bool)
    for rows in (rows0, rows1):
        if rows is not None:
            trained[rows] = True
    return np.flatnonzero(~trained)


def _data_folds(ctx: UnitContext, rows0: np.ndarray | None, rows1: np.ndarray | None) -> np.ndarray:
    """The one fold assignment over the search data (seeded by the unit seed), balanced within class 0,
    class 1 and the rest.

    Balanced within class: a fold holding more SR events than another would get a model with a lower
    class-1 prior, and score those very events lower (a deficit in the SR on background only)."""
    from radar.analysis.cwola import fold_assignment

    n = len(ctx.prepared.data)
    folds = np.zeros(n, np.int64)
    for i, rows in enumerate((rows0, rows1, _rows_in_no_class(n, rows0, rows1))):
        if rows is not None:
            folds[rows] = fold_assignment(
                len(rows), ctx.cfg.k_folds, ctx.seed * 7 + _DATA_FOLD_SEED + 1000 * i
            )
    return folds


#: what one fold of a per-fold method trains on: the class-0 inputs (N0, F) and weights, and the
#: classifier inputs of data events (``embed(table, what)``; None: the features); optionally a fourth
#: element, held-out class-0 events (inputs, weights) of fold f that classifier f never saw (a template
#: whose events recur in every fold, e.g. the same simulation events, can only be checked on those)
FoldInputs = tuple[np.ndarray, np.ndarray | None, Callable[[pd.DataFrame, str], np.ndarray] | None]


def _classify_per_fold(
    ctx: UnitContext, fold_inputs: Callable[[int, np.ndarray], FoldInputs], rows1: np.ndarray
) -> MethodOutput:
    """k-fold template vs SR data where the TEMPLATE is made per fold too: every data event's score
    depends on no model that saw the event.

    A template fitted on all sideband data makes the sideband events' scores depend on themselves: the
    flow reproduces its training events a little (memorisation), so the classifier learns "unlike the
    sideband events" and the very sideband events that trained the flow pass a tail cut less often than
    fresh events at the same m_JJ — most of all next to the SR, whose template the nearest sideband
    events shaped. Measured on the smooth background-only surrogate (null_chain): sideband events next
    to the SR passed a top-5 % cut 5-25 % less often than fresh events, a bump in the SR of 2-4σ.

    So fold f's template comes from a fit (``fold_inputs(f, train)``, ``train``: the data rows not in
    fold f) that never saw fold f's events; classifier f is trained on that template vs the SR data
    rows not in fold f and scores every data row of fold f (SR, sidebands, the rest; ``role`` ``data``
    for SR rows, ``fold`` for the others). The labelled test set gets the mean of the k classifiers
    (each on its own fold's ``embed``); ``score_fold_mean`` (diagnostic) the same mean for rows outside
    the SR, as the pre-fix scheme did.
    """
    from radar.analysis.cwola import fit_fold_classifiers
    from radar.analysis.metrics import auc, auc_null_sigma
    from radar.models.classifiers import classifier_suffix

    cfg, data, test = ctx.cfg, ctx.prepared.data, ctx.prepared.test
    k = cfg.k_folds
    folds = _data_folds(ctx, None, rows1)
    in_sr = np.zeros(len(data), bool)
    in_sr[rows1] = True
    rest = np.flatnonzero(~in_sr)
    scores, fold_mean = np.full(len(data), np.nan), np.zeros(len(data))
    test_scores = np.zeros(len(test))
    auc_y, auc_s, auc_w = [], [], []
    settings = classifier_settings(cfg)
    weights = data_weights(data)
    held_template: list[tuple[np.ndarray, np.ndarray]] = []
    held_out: list[tuple[np.ndarray, np.ndarray] | None] = []
    embeds, inputs, training_sets = [], [], []
    for f in range(k):
        train = folds != f
        X0, w0, embed, *held = fold_inputs(f, train)
        held_out.append(held[0] if held else None)
        embed = embed or (lambda table, what: feature_matrix(table, ctx.features, what))
        w0 = np.ones(len(X0)) if w0 is None else np.asarray(w0, dtype="float64")
        Z = embed(data, "data")  # every data row's classifier inputs for this fold, computed once
        X1 = Z[rows1[train[rows1]]]
        w1 = weights[rows1[train[rows1]]]
        if min(len(X0), len(X1)) < 2:
            raise ValueError(f"fold {f}: {len(X0)} template and {len(X1)} SR data events: too few to train")
        training_sets.append(
            (
                np.concatenate([X0, X1]),
                np.concatenate([np.zeros(len(X0)), np.ones(len(X1))]),
                np.concatenate([w0, w1]),
            )
        )
        embeds.append(embed)
        inputs.append(Z)
        held_template.append((X0, w0))
    models = fit_fold_classifiers(
        cfg.classifier.name, [ctx.seed * 100 + f for f in range(k)], training_sets, **settings
    )
    for f, clf in enumerate(models):
        train = folds != f
        p = clf.predict_proba(inputs[f])
        scores[~train] = p[~train]
        fold_mean[rest] += p[rest] / k
        if len(test):
            test_scores += clf.predict_proba(embeds[f](test, "test")) / k
        if ctx.model_dir is not None:
            clf.save(ctx.model_dir / f"fold{f}{classifier_suffix(cfg.classifier.name)}")
        log.info(
            "%s: fold %d/%d trained (%d template, %d SR data events)",
            ctx.method,
            f + 1,
            k,
            len(held_template[f][0]),
            int(training_sets[f][1].sum()),
        )
    inputs.clear()
    training_sets.clear()
    # classification AUC: SR data out of fold; fold f's held-out template events scored by classifier f, or
    # without them fold f's template scored by the next fold's classifier, which never trained on it
    own = all(h is not None for h in held_out)
    for f, (X0, w0) in enumerate(held_out if own else held_template):
        auc_s.append(models[f if own else (f + 1) % k].predict_proba(X0))
        auc_y.append(np.zeros(len(X0)))
        auc_w.append(np.ones(len(X0)) if w0 is None else np.asarray(w0, dtype="float64"))
    # class-0 events per comparison: one fold's template, or every held-out event (each scored once)
    n0 = sum(len(y) for y in auc_y) // (1 if own else k)
    auc_s.append(scores[rows1])
    auc_y.append(np.ones(len(rows1)))
    auc_w.append(weights[rows1])
    fold_mean[rows1] = scores[rows1]
    role = np.full(len(data), "fold", dtype=object)
    role[rows1] = "data"
    y, s, w = np.concatenate(auc_y), np.concatenate(auc_s), np.concatenate(auc_w)
    return MethodOutput(
        scores=scores,
        role=role,
        test_scores=test_scores,
        classification_auc=auc(y, s, w),
        classification_auc_sigma=auc_null_sigma(len(rows1), n0),
        extra={"n_class0": n0, "n_class1": len(rows1), "template_folds": k},
        diagnostic_scores=fold_mean,
        template_scores=np.concatenate(auc_s[:k]),
        folds=folds,
    )


# -- what the method modules share (analysis.methods, analysis.context_methods) ---------------------------
def _flow_settings(ctx: UnitContext) -> dict[str, Any]:
    """The config's flow settings with the execution's device (every flow a method trains)."""
    settings = dict(ctx.cfg.flow)
    settings.setdefault("device", ctx.cfg.execution.device)
    return settings


def _method_settings(ctx: UnitContext, name: str) -> dict[str, Any]:
    """``method_settings[name]`` of the config: constructor keyword arguments of that method, with the
    settings of the unit's variant on top when the unit runs a variant of ``name``."""
    settings = dict(ctx.cfg.method_settings.get(name, {}))
    if ctx.method != name and ctx.base_method == name:
        settings.update(ctx.cfg.variants[ctx.method].get("settings") or {})
    return settings


def _save_template_sample(ctx: UnitContext, folds: list[tuple[pd.DataFrame, np.ndarray]]) -> None:
    """Write the unit's per-fold templates (m_JJ where the template has it, the context variables, the
    features, weight, fold) next to its scores, for combinations and studies."""
    from radar.analysis.rundir import TEMPLATE_SAMPLE, unit_dir
    from radar.processors.io import atomic_output

    if ctx.run_dir is None or ctx.replica:  # the unit's saved template is replica 0's (its folds)
        return
    parts = []
    for f, (samples, weights) in enumerate(folds):
        columns = list(dict.fromkeys(["mjj", *ctx.regions.context, *ctx.features]))  # m_JJ, context, features
        frame = pd.DataFrame({c: samples[c].to_numpy(dtype="float64") for c in columns if c in samples})
        frame["weight"] = weights
        frame["fold"] = np.full(len(frame), f, dtype=np.int64)
        parts.append(frame)
    path = unit_dir(ctx.run_dir, ctx.method, ctx.injection, ctx.unit_seed) / TEMPLATE_SAMPLE
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        pd.concat(parts, ignore_index=True).to_parquet(tmp, index=False)

"""A weakly supervised resonant search: methods x injections x seeds → scores, metrics, models.

One *unit* is one (method, injection, seed). Each unit prepares its data deterministically from the
config (the injection and the test split depend only on ``data_seed`` and the injection; the seed
varies the trainings), runs its method and writes, atomically, into
``RUN/<method>/inj_<injection>/seed_<seed>/``:

- ``scores.parquet``: one row per data event in the m_JJ range — ``mjj, score, label, weight, in_sr,
  role`` (+ ``score_fold_mean``). Every data event is scored by exactly one model that never trained
  on it, all such models trained alike (k folds over the data, :func:`_classify`; density methods:
  k density folds), so SR and sideband scores share one distribution. Templates fitted on data (CATHODE,
  LaCATHODE, SALAD, CURTAINs, FETA) are fitted per fold too (:func:`_classify_per_fold`): a sideband
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

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from radar.analysis.config import SearchConfig, config_from_dict, validate_config, validate_data
from radar.analysis.datasets import drop_shared_events, feature_matrix, inject_signal, split_indices
from radar.analysis.regions import Regions

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------- data
@dataclass
class PreparedData:
    """Tables for one injection (GeV feature tables, index reset).

    data: the search data in the m_JJ range (background + injected signal; ``label`` = truth or -1).
    test: labelled SR test set (may be empty). signal_supervised: SR signal for supervised training.
    iad_template: external perfect SR background template (None: half of the data's SR background).
    """

    data: pd.DataFrame
    test: pd.DataFrame
    signal_supervised: pd.DataFrame | None
    simulation: pd.DataFrame | None
    iad_template: pd.DataFrame | None
    injection: dict = field(default_factory=dict)


_CACHE: dict[tuple, PreparedData] = {}


def _read(paths: list[Path]) -> pd.DataFrame:
    from radar.processors.features import read_feature_table

    return pd.concat([read_feature_table(p) for p in paths], ignore_index=True)


def _base_regions(cfg: SearchConfig) -> Regions:
    return Regions(sr=tuple(cfg.regions.sr), mjj_range=tuple(cfg.regions.mjj_range),
                   sideband_width=cfg.regions.sideband_width)


def load_inputs(cfg: SearchConfig) -> dict[str, pd.DataFrame | None]:
    """Read every input table named in the config (no selection)."""
    def read_one(value: str | None) -> pd.DataFrame | None:
        return _read([cfg.path(value)]) if value else None

    return {
        "data": _read([cfg.path(p) for p in cfg.input.data]),
        "signal": read_one(cfg.input.signal),
        "simulation": read_one(cfg.input.simulation),
        "test": read_one(cfg.input.test),
        "iad_template": read_one(cfg.input.iad_template),
    }


def prepare_data(cfg: SearchConfig, injection: float | None, inputs: dict | None = None) -> PreparedData:
    """Build the data of one injection: m_JJ range, test hold-out, signal injection (seed ``data_seed``)."""
    key = (cfg.digest(), injection)
    if key in _CACHE:
        return _CACHE[key]
    inputs = inputs or load_inputs(cfg)
    regions = _base_regions(cfg)
    data = inputs["data"]
    data = data[regions.in_range(data["mjj"].to_numpy())].reset_index(drop=True)
    signal = inputs["signal"]
    if injection is not None and cfg.input.drop_data_signal and (data["label"] == 1).any():
        log.info("dropping %d label-1 events from input.data before injecting from input.signal",
                 int((data["label"] == 1).sum()))
        data = data[data["label"] != 1].reset_index(drop=True)
    seed = cfg.data_seed
    f_inj, f_test, f_sup = cfg.signal_split
    if inputs["test"] is not None:
        test = inputs["test"]
        test = test[regions.signal_region(test["mjj"].to_numpy())].reset_index(drop=True)
        signal = drop_shared_events(signal, inputs["test"], "input.signal")
        data = drop_shared_events(data, inputs["test"], "input.data")
        sig_parts = split_indices(len(signal), (f_inj, 0.0, f_sup), seed) if signal is not None else None
    else:
        (held,) = split_indices(len(data), (cfg.test_fraction,), seed)
        keep = np.ones(len(data), bool)
        keep[held] = False
        test = data.iloc[held]
        test = test[regions.signal_region(test["mjj"].to_numpy())]
        data = data[keep].reset_index(drop=True)
        sig_parts = split_indices(len(signal), (f_inj, f_test, f_sup), seed) if signal is not None else None
        if signal is not None:
            sig_test = signal.iloc[sig_parts[1]]
            test = pd.concat([test, sig_test[regions.signal_region(sig_test["mjj"].to_numpy())]])
        test = test.reset_index(drop=True)
    signal_supervised = None
    if signal is not None:
        sup = signal.iloc[sig_parts[2]]
        signal_supervised = sup[regions.signal_region(sup["mjj"].to_numpy())].reset_index(drop=True)
    in_sr = regions.signal_region(data["mjj"].to_numpy())
    if injection is None:
        info = {"injection": None, "n_injected": int((data["label"] == 1).sum()),
                "n_sig_sr": int(((data["label"] == 1) & in_sr).sum()),
                "n_bkg_sr": int(((data["label"] != 1) & in_sr).sum())}
    else:
        pool = signal.iloc[sig_parts[0]].reset_index(drop=True)
        if cfg.injection_mode == "n_sig":
            inj = inject_signal(data, pool, n_sig=int(injection), regions=regions, seed=seed)
        else:
            inj = inject_signal(data, pool, s_over_b=float(injection), regions=regions, seed=seed)
        data = inj.table
        info = {"injection": injection, "n_injected": inj.n_injected, "n_sig_sr": inj.n_sig_sr,
                "n_bkg_sr": inj.n_bkg_sr}
    info["s_over_b_sr"] = info["n_sig_sr"] / max(info["n_bkg_sr"], 1)
    template = inputs["iad_template"]
    if template is not None:
        template = template[regions.signal_region(template["mjj"].to_numpy()) & (template["label"] != 1)]
        template = template.reset_index(drop=True)
    prepared = PreparedData(data=data, test=test, signal_supervised=signal_supervised,
                            simulation=inputs["simulation"], iad_template=template, injection=info)
    _CACHE[key] = prepared
    return prepared


# -------------------------------------------------------------------------------------------- methods
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


@dataclass
class UnitContext:
    cfg: SearchConfig
    prepared: PreparedData
    method: str
    seed: int
    model_dir: Path | None
    #: the run directory and this unit's injection (lets a combination reuse its members' finished units)
    run_dir: Path | None = None
    injection: float | None = None

    @property
    def regions(self) -> Regions:
        return self.cfg.regions_for(self.method)

    @property
    def base_method(self) -> str:
        """The registered method this unit runs (``method`` may name a variant of it)."""
        return self.cfg.base_method(self.method)

    @property
    def features(self) -> list[str]:
        return list(self.cfg.features)


MethodFunction = Callable[[UnitContext], MethodOutput]
_METHODS: dict[str, MethodFunction] = {}


def register_method(name: str) -> Callable[[MethodFunction], MethodFunction]:
    """Decorator: make ``func(ctx) -> MethodOutput`` selectable as ``methods: [name]``."""
    def wrap(func: MethodFunction) -> MethodFunction:
        _METHODS[name] = func
        return func
    return wrap


def available_methods() -> list[str]:
    return sorted([*_METHODS, *SCORE_COMBINATIONS])


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


def _classify(ctx: UnitContext, X0: np.ndarray, w0: np.ndarray | None, rows0: np.ndarray | None,
              X1: np.ndarray, rows1: np.ndarray | None,
              embed: Callable[[pd.DataFrame, str], np.ndarray] | None = None) -> MethodOutput:
    """k-fold class 0 vs class 1 (:func:`radar.analysis.cwola.kfold_scores`); every data event and the test set
    get a score. For class-0 inputs that are NOT made from the data (CWoLa Hunting's sidebands are data
    rows; an external IAD template, supervised signal); a template fitted on data is made per fold
    (:func:`_classify_per_fold`).

    rows0/rows1: data row indices of the class-0/1 events (None: the class is not made of data rows).
    Every data row has its fold from ONE assignment over the data (seeded by the unit seed; balanced
    within class 0, class 1 and the rest), and is scored by the one model that did not train on its
    fold — SR data, sidebands and rows in no class alike (``role`` ``data``, ``template``, ``fold``):
    the scores entering an m_JJ spectrum share one distribution. The labelled test set (SIC curves only) gets the mean of the k
    models. ``embed(table, what)``: the classifier's inputs of a table's events (default: the features).
    """
    from radar.analysis.cwola import kfold_scores
    from radar.analysis.metrics import auc, auc_null_sigma

    cfg, data, test = ctx.cfg, ctx.prepared.data, ctx.prepared.test
    embed = embed or (lambda table, what: feature_matrix(table, ctx.features, what))
    k = cfg.k_folds
    data_folds = _data_folds(ctx, rows0, rows1)
    trained = np.zeros(len(data), bool)
    for rows in (rows0, rows1):
        if rows is not None:
            trained[rows] = True
    rest = np.flatnonzero(~trained)
    X_test = embed(test, "test") if len(test) else None
    result = kfold_scores(X0, X1, w0, None, classifier=cfg.classifier.name, k_folds=k, seed=ctx.seed,
                          folds0=None if rows0 is None else data_folds[rows0],
                          folds1=None if rows1 is None else data_folds[rows1],
                          X_fold=embed(data.iloc[rest], "data"), folds_fold=data_folds[rest], X_mean=X_test,
                          save_dir=ctx.model_dir, **classifier_settings(cfg))
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
    w = np.concatenate([np.ones(len(X0)) if w0 is None else w0, np.ones(len(X1))])
    return MethodOutput(scores=scores, role=role,
                        test_scores=result.scores_mean if X_test is not None else np.zeros(0),
                        classification_auc=auc(y, s, w),
                        classification_auc_sigma=auc_null_sigma(len(X1), len(X0)),
                        extra={"n_class0": len(X0), "n_class1": len(X1)}, diagnostic_scores=fold_mean)


def _data_folds(ctx: UnitContext, rows0: np.ndarray | None, rows1: np.ndarray | None) -> np.ndarray:
    """The one fold assignment over the search data (seeded by the unit seed), balanced within class 0,
    class 1 and the rest.

    Balanced within class: a fold holding more SR events than another would get a model with a lower
    class-1 prior, and score those very events lower (a deficit in the SR on background only)."""
    from radar.analysis.cwola import fold_assignment

    n = len(ctx.prepared.data)
    trained = np.zeros(n, bool)
    for rows in (rows0, rows1):
        if rows is not None:
            trained[rows] = True
    folds = np.zeros(n, np.int64)
    for i, rows in enumerate((rows0, rows1, np.flatnonzero(~trained))):
        if rows is not None:
            folds[rows] = fold_assignment(len(rows), ctx.cfg.k_folds, ctx.seed * 7 + _DATA_FOLD_SEED + 1000 * i)
    return folds


#: what one fold of a per-fold method trains on: the class-0 inputs (N0, F) and weights, and the
#: classifier inputs of data events (``embed(table, what)``; None: the features)
FoldInputs = tuple[np.ndarray, np.ndarray | None, Callable[[pd.DataFrame, str], np.ndarray] | None]


def _classify_per_fold(ctx: UnitContext, fold_inputs: Callable[[int, np.ndarray], FoldInputs],
                       rows1: np.ndarray) -> MethodOutput:
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
    from radar.analysis.metrics import auc, auc_null_sigma
    from radar.models.classifiers import classifier_suffix, get_classifier

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
    held_template: list[tuple[np.ndarray, np.ndarray]] = []
    models = []
    for f in range(k):
        train = folds != f
        X0, w0, embed = fold_inputs(f, train)
        embed = embed or (lambda table, what: feature_matrix(table, ctx.features, what))
        w0 = np.ones(len(X0)) if w0 is None else np.asarray(w0, dtype="float64")
        train1 = rows1[train[rows1]]
        X1 = embed(data.iloc[train1], "data")
        if min(len(X0), len(X1)) < 2:
            raise ValueError(f"fold {f}: {len(X0)} template and {len(X1)} SR data events: too few to train")
        clf = get_classifier(cfg.classifier.name, seed=ctx.seed * 100 + f, **settings).fit(
            np.concatenate([X0, X1]), np.concatenate([np.zeros(len(X0)), np.ones(len(X1))]),
            sample_weight=np.concatenate([w0, np.ones(len(X1))]))
        own = np.flatnonzero(~train)
        scores[own] = clf.predict_proba(embed(data.iloc[own], "data"))
        fold_mean[rest] += clf.predict_proba(embed(data.iloc[rest], "data")) / k
        if len(test):
            test_scores += clf.predict_proba(embed(test, "test")) / k
        if ctx.model_dir is not None:
            clf.save(ctx.model_dir / f"fold{f}{classifier_suffix(cfg.classifier.name)}")
        models.append(clf)
        held_template.append((X0, w0))
        log.info("%s: fold %d/%d trained (%d template, %d SR data events)", ctx.method, f + 1, k, len(X0), len(X1))
    # classification AUC: SR data out of fold; fold f's template scored by the next fold's classifier,
    # which never trained on it
    for f, (X0, w0) in enumerate(held_template):
        auc_s.append(models[(f + 1) % k].predict_proba(X0))
        auc_y.append(np.zeros(len(X0)))
        auc_w.append(w0)
    n0 = sum(len(y) for y in auc_y) // k
    auc_s.append(scores[rows1])
    auc_y.append(np.ones(len(rows1)))
    auc_w.append(np.ones(len(rows1)))
    fold_mean[rows1] = scores[rows1]
    role = np.full(len(data), "fold", dtype=object)
    role[rows1] = "data"
    y, s, w = np.concatenate(auc_y), np.concatenate(auc_s), np.concatenate(auc_w)
    return MethodOutput(scores=scores, role=role, test_scores=test_scores, classification_auc=auc(y, s, w),
                        classification_auc_sigma=auc_null_sigma(len(rows1), n0),
                        extra={"n_class0": n0, "n_class1": len(rows1), "template_folds": k},
                        diagnostic_scores=fold_mean)


@register_method("iad")
def idealized_ad(ctx: UnitContext) -> MethodOutput:
    """Idealized AD: a perfect SR background template (truth labels) vs SR data.

    Template: ``input.iad_template`` if given, else a random half (seed ``data_seed``, the same for all
    seeds) of the data's SR background, removed from the data side.
    """
    data = ctx.prepared.data
    sr_rows = np.flatnonzero(ctx.regions.signal_region(data["mjj"].to_numpy()))
    if ctx.prepared.iad_template is not None:
        X0 = feature_matrix(ctx.prepared.iad_template, ctx.features, "input.iad_template")
        return _classify(ctx, X0, None, None, feature_matrix(data.iloc[sr_rows], ctx.features, "data"), sr_rows)
    bkg_sr = sr_rows[data["label"].to_numpy()[sr_rows] == 0]
    if len(bkg_sr) < 2 * ctx.cfg.k_folds:
        raise ValueError(f"iad: the data has {len(bkg_sr)} SR events labelled background; the idealized "
                         "template needs truth labels (or give input.iad_template)")
    half, _ = split_indices(len(bkg_sr), (0.5, 0.5), ctx.cfg.data_seed + 17)
    rows0 = bkg_sr[half]
    rows1 = np.setdiff1d(sr_rows, rows0)
    return _classify(ctx, feature_matrix(data.iloc[rows0], ctx.features), None, rows0,
                     feature_matrix(data.iloc[rows1], ctx.features), rows1)


@register_method("supervised")
def supervised(ctx: UnitContext) -> MethodOutput:
    """Supervised upper bound: SR background of the data (truth label 0) vs held-out SR signal."""
    data, sig = ctx.prepared.data, ctx.prepared.signal_supervised
    if sig is None or len(sig) < ctx.cfg.k_folds:
        raise ValueError("supervised: needs input.signal with SR events in the supervised share of signal_split")
    sr = ctx.regions.signal_region(data["mjj"].to_numpy())
    rows0 = np.flatnonzero(sr & (data["label"].to_numpy() == 0))
    return _classify(ctx, feature_matrix(data.iloc[rows0], ctx.features), None, rows0,
                     feature_matrix(sig, ctx.features, "signal"), None)


@register_method("cwola_hunting")
def cwola_hunting(ctx: UnitContext) -> MethodOutput:
    """CWoLa Hunting: (narrow) sideband data (label 0) vs SR data (label 1)."""
    mjj = ctx.prepared.data["mjj"].to_numpy()
    rows0 = np.flatnonzero(ctx.regions.sideband(mjj))
    rows1 = np.flatnonzero(ctx.regions.signal_region(mjj))
    data = ctx.prepared.data
    return _classify(ctx, feature_matrix(data.iloc[rows0], ctx.features), None, rows0,
                     feature_matrix(data.iloc[rows1], ctx.features), rows1)


def _flow_settings(ctx: UnitContext) -> dict[str, Any]:
    settings = dict(ctx.cfg.flow)
    settings.setdefault("device", ctx.cfg.execution.device)
    return settings


#: background templates (models/templates) selectable as methods: template vs SR data
TEMPLATE_METHODS = ("cathode", "salad", "curtains", "feta", "combined_events")
#: methods made after the units from other methods' scores (analysis.combine), not trained
SCORE_COMBINATIONS = ("combined_scores",)
_SIMULATION_TEMPLATES = ("salad", "curtains", "feta")


def _method_settings(ctx: UnitContext, name: str) -> dict[str, Any]:
    """``method_settings[name]`` of the config: constructor keyword arguments of that method, with the
    settings of the unit's variant on top when the unit runs a variant of ``name``."""
    settings = dict(ctx.cfg.method_settings.get(name, {}))
    if ctx.method != name and ctx.base_method == name:
        settings.update(ctx.cfg.variants[ctx.method].get("settings") or {})
    return settings


def _template_kwargs(ctx: UnitContext, name: str) -> dict[str, Any]:
    """Constructor keyword arguments of template ``name``: the flow settings feed CATHODE (and FETA's base
    flow, and the members of a combination); SALAD, CURTAINs and FETA get the SR from the config."""
    kwargs = _method_settings(ctx, name)
    if name == "cathode":
        return {**_flow_settings(ctx), **kwargs}
    kwargs.setdefault("device", ctx.cfg.execution.device)
    if name in _SIMULATION_TEMPLATES:
        kwargs.setdefault("signal_region", tuple(ctx.cfg.regions.sr))
    if name == "feta":
        kwargs.setdefault("base_kwargs", {k: v for k, v in _flow_settings(ctx).items() if k != "device"})
    if name == "combined_events":
        given = kwargs.get("member_kwargs") or {}
        members = tuple(kwargs.get("members", ("salad", "cathode", "curtains", "feta")))
        kwargs["members"] = members
        kwargs["member_kwargs"] = {m: {**_template_kwargs(ctx, m), **given.get(m, {})} for m in members}
    return kwargs


def _template_method(ctx: UnitContext, name: str) -> MethodOutput:
    """Any registered template vs SR data, per fold (:func:`_classify_per_fold`): fold f's template is fit
    on the sideband data (and simulation) outside fold f and sampled at masses drawn from a KDE of the SR
    data outside fold f (``cathode_oversampling`` × those SR events); classifier f separates it from the
    SR data outside fold f and scores fold f.

    The template samples are saved as ``template.parquet`` (features, ``mjj``, ``weight``, ``fold``) in
    the unit directory. ``combined_events`` first looks for its members' saved templates of the same run,
    injection and seed (:func:`_reused_member_templates`) and fits its members itself only when one is
    missing (``method_settings.combined_events.reuse_members: false`` forces the refit).
    """
    from radar.analysis.metrics import ks_per_feature
    from radar.models.templates import draw_mjj_kde
    from radar.models.templates import get as get_template

    data = ctx.prepared.data
    mjj = data["mjj"].to_numpy()
    sb, sr = ctx.regions.sideband(mjj), ctx.regions.signal_region(mjj)
    kwargs = _template_kwargs(ctx, name)
    reuse = bool(kwargs.pop("reuse_members", True)) if name == "combined_events" else False
    if reuse and _method_settings(ctx, name).get("member_kwargs"):
        log.info("combined_events: member_kwargs given; fitting the members with them instead of reusing")
        reuse = False
    extra: dict[str, Any] = {}
    found = _reused_member_templates(ctx, kwargs["members"]) if reuse else None
    if found is not None:
        extra["members_reused"] = list(kwargs["members"])
        extra["seconds_members"] = _members_seconds(ctx, kwargs["members"])
    fitted: dict[str, float] = {"flow_trainings_failed": 0}
    made: list[tuple[pd.DataFrame, np.ndarray]] = []

    def fold_inputs(f: int, train: np.ndarray) -> FoldInputs:
        if found is not None:
            samples, weights = found[f]
        else:
            n = int(round(ctx.cfg.cathode_oversampling * (sr & train).sum()))
            template = get_template(name)(features=tuple(ctx.features), seed=ctx.seed * 1000 + f, **kwargs)
            template.fit(data[sb & train].reset_index(drop=True), ctx.prepared.simulation)
            limit = getattr(template, "max_distinct", None)
            if limit is not None and n > limit:  # a template of a finite pool (SALAD): no repeated events
                log.info("%s: fold %d: %d distinct template events (not %d)", name, f, limit, n)
                n = int(limit)
            samples, weights = template.sample(n, draw_mjj_kde(mjj[sr & train], n, ctx.seed * 1000 + f))
            fitted["flow_trainings_failed"] += int(getattr(template, "n_failed", 0))
            for attr in ("n_clipped", "n_trainings"):
                if getattr(template, attr, None) is not None:
                    fitted[attr] = fitted.get(attr, 0) + getattr(template, attr)
            for attr in ("clip_value", "oversampling"):
                if getattr(template, attr, None) is not None:
                    fitted[attr] = getattr(template, attr)
            _save_flow_model(ctx, template, f"{name}_template_fold{f}.pt")
        weights = np.asarray(weights, dtype="float64")
        made.append((samples, weights))
        return feature_matrix(samples, ctx.features, f"{name} samples (fold {f})"), weights, None

    out = _classify_per_fold(ctx, fold_inputs, np.flatnonzero(sr))
    _save_template_sample(ctx, made)
    out.extra.update(extra)
    samples = pd.concat([m[0] for m in made], ignore_index=True)
    weights = np.concatenate([m[1] for m in made])
    true_bkg = data[sr & (data["label"].to_numpy() == 0)]
    if len(true_bkg):
        out.extra["template_ks"] = ks_per_feature(samples, true_bkg, ctx.features, wa=weights)
    out.extra["n_template"] = len(samples)
    if found is None:
        out.extra.update(fitted)
    return out


TEMPLATE_SAMPLE = "template.parquet"


def _members_seconds(ctx: UnitContext, members) -> float:
    """Summed wall time of the members' finished units (what a reused combination really cost)."""
    import json

    total = 0.0
    for member in members:
        path = unit_dir(ctx.run_dir, member, ctx.injection, ctx.seed) / "metrics.json"
        total += float(json.loads(path.read_text()).get("seconds", 0.0)) if path.exists() else 0.0
    return total


def _save_template_sample(ctx: UnitContext, folds: list[tuple[pd.DataFrame, np.ndarray]]) -> None:
    """Write the unit's per-fold templates (features, mjj, weight, fold) next to its scores, for
    combinations and studies."""
    from radar.processors.io import atomic_output

    if ctx.run_dir is None:
        return
    parts = []
    for f, (samples, weights) in enumerate(folds):
        frame = pd.DataFrame({c: samples[c].to_numpy(dtype="float64") for c in ["mjj", *ctx.features]})
        frame["weight"] = weights
        frame["fold"] = np.full(len(frame), f, dtype=np.int64)
        parts.append(frame)
    path = unit_dir(ctx.run_dir, ctx.method, ctx.injection, ctx.seed) / TEMPLATE_SAMPLE
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        pd.concat(parts, ignore_index=True).to_parquet(tmp, index=False)


def load_template_sample(run_dir: str | Path, method: str, injection: float | None,
                         seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """The saved template of a finished template unit: (events with ``mjj``, the features and ``fold``,
    the template's fold: whose classifier trained on it; weights)."""
    path = unit_dir(Path(run_dir), method, injection, seed) / TEMPLATE_SAMPLE
    if not path.exists() or not unit_finished(Path(run_dir), method, injection, seed):
        raise FileNotFoundError(f"{path}: no template of a finished unit ({method}, {injection}, seed {seed})")
    frame = pd.read_parquet(path)
    return frame.drop(columns="weight"), frame["weight"].to_numpy(dtype="float64")


def _reused_member_templates(ctx: UnitContext, members) -> list[tuple[pd.DataFrame, np.ndarray]] | None:
    """The sample-level combination built from the members' saved per-fold templates of this run,
    injection and seed, one per fold: from each member's fold-f template an equal share — ``min(n_f //
    members, smallest member's fold-f template)`` events, ``n_f`` = ``cathode_oversampling`` × the SR data
    outside fold f, drawn without replacement (seeded), so no event repeats — each share scaled to equal
    total weight (:func:`radar.models.templates.combined.stack_equal_weight`). None when a member has no
    finished unit here, or one saved by an older radar without folds (then the members are fitted afresh).
    """
    from radar.models.templates.combined import stack_equal_weight

    if ctx.run_dir is None:
        return None
    loaded = []
    for member in members:
        try:
            events, weights = load_template_sample(ctx.run_dir, member, ctx.injection, ctx.seed)
        except FileNotFoundError:
            log.info("combined_events: member %s has no finished unit here; fitting the members", member)
            return None
        if any(f not in events for f in [*ctx.features, "fold"]):
            log.info("combined_events: member %s saved no %s with folds; fitting the members", member, ctx.features)
            return None
        loaded.append((events, weights))
    mjj = ctx.prepared.data["mjj"].to_numpy()
    sr = ctx.regions.signal_region(mjj)
    folds = _data_folds(ctx, None, np.flatnonzero(sr))
    rng = np.random.default_rng(ctx.seed * 7_777_777 + 11)
    combined = []
    for f in range(ctx.cfg.k_folds):
        n = int(round(ctx.cfg.cathode_oversampling * (sr & (folds != f)).sum()))
        own = [(events[events["fold"].to_numpy() == f], w[events["fold"].to_numpy() == f]) for events, w in loaded]
        share = min(n // len(own), *(len(events) for events, _ in own))
        total = share * len(own)
        rows = np.array_split(rng.permutation(total), len(own))
        parts = []
        for events, w in own:
            pick = rng.choice(len(events), size=share, replace=False)
            parts.append((events.iloc[pick][["mjj", *ctx.features]].reset_index(drop=True), w[pick]))
        combined.append(stack_equal_weight(parts, rows, total))
    log.info("combined_events: the fold templates of %s, in equal shares", list(members))
    return combined


for _name in TEMPLATE_METHODS:
    register_method(_name)(functools.partial(_template_method, name=_name))


@register_method("lacathode")
def lacathode(ctx: UnitContext) -> MethodOutput:
    """LaCATHODE (Hallin et al., arXiv:2210.14924): CATHODE's flow, with the classifier moved into the flow's
    latent space.

    Per fold (:func:`_classify_per_fold`): fold f's conditional flow is fitted on the sideband data outside
    fold f (as CATHODE, ``flow`` settings with ``method_settings.lacathode`` on top); data events are mapped
    to its latent space at their own m_JJ (:meth:`radar.models.flows.ConditionalFlow.to_latent`, best epoch). The
    template is ``cathode_oversampling`` × N_SR standard-normal draws (the flow's base density, the same at
    every mass), class 1 the latent SR data outside fold f; classifier f scores fold f. Where the flow describes the background, the latent coordinates do not depend on m_JJ, so a cut
    on the classifier does not sculpt the m_JJ spectrum of the background even when the features follow
    m_JJ (where CATHODE's classifier, evaluated away from the SR, does).
    """
    from radar.models.templates import get as get_template

    data = ctx.prepared.data
    mjj = data["mjj"].to_numpy()
    sb, sr = ctx.regions.sideband(mjj), ctx.regions.signal_region(mjj)
    kwargs = {**_flow_settings(ctx), **_method_settings(ctx, "lacathode")}
    failed = [0]

    def fold_inputs(f: int, train: np.ndarray) -> FoldInputs:
        template = get_template("cathode")(features=tuple(ctx.features), seed=ctx.seed * 1000 + f, **kwargs)
        template.fit(data[sb & train].reset_index(drop=True))
        failed[0] += int(template.n_failed)
        _save_flow_model(ctx, template, f"lacathode_flow_fold{f}.pt")
        flow = template.flow

        def latent(table: pd.DataFrame, what: str) -> np.ndarray:
            return flow.to_latent(feature_matrix(table, ctx.features, what), table["mjj"].to_numpy())

        n = int(round(ctx.cfg.cathode_oversampling * (sr & train).sum()))
        X0 = np.random.default_rng(ctx.seed * 7_777_777 + 5 + f).standard_normal((n, len(ctx.features)))
        return X0, None, latent

    out = _classify_per_fold(ctx, fold_inputs, np.flatnonzero(sr))
    out.extra.update({"n_template": out.extra["n_class0"], "flow_trainings_failed": failed[0]})
    return out


def _finite(scores: np.ndarray, method: str) -> np.ndarray:
    """Non-finite density scores (events outside a flow's support) → the lowest finite score, logged."""
    scores = np.asarray(scores, dtype="float64")
    bad = ~np.isfinite(scores)
    if bad.any():
        log.warning("%s: %d non-finite scores set to the lowest finite score", method, int(bad.sum()))
        scores = np.where(bad, np.nanmin(np.where(bad, np.nan, scores)) if (~bad).any() else 0.0, scores)
    return scores


def _density_method(ctx: UnitContext, name: str, kwargs: dict[str, Any]) -> MethodOutput:
    """k-fold density-ratio method: the data events are split into ``k_folds`` folds (seeded); each fold is
    scored by densities fitted on the other folds' SB and SR events, so no event is scored by flows that
    saw it (as the classifiers' out-of-fold scores). The test set gets the mean score of the fold models."""
    from radar.models.densities import get as get_density

    data, test = ctx.prepared.data, ctx.prepared.test
    mjj = data["mjj"].to_numpy()
    sb, sr = ctx.regions.sideband(mjj), ctx.regions.signal_region(mjj)
    k = max(2, int(ctx.cfg.density_folds or ctx.cfg.k_folds))
    fold = np.random.default_rng(ctx.seed).permutation(len(data)) % k  # balanced random folds
    scores = np.full(len(data), np.nan)
    test_scores = np.zeros(len(test))
    extra: dict[str, Any] = {"flow_trainings_failed": 0, "density_folds": k}
    fractions = []
    for f in range(k):
        train = fold != f
        density = get_density(name)(features=tuple(ctx.features), seed=ctx.seed * 1000 + f, **kwargs)
        density.fit(data[sb & train].reset_index(drop=True), data[sr & train].reset_index(drop=True))
        scores[~train] = _finite(density.score(data[~train].reset_index(drop=True)), name)
        if len(test):
            test_scores += _finite(density.score(test), name) / k
        extra["flow_trainings_failed"] += int(getattr(density, "n_failed", 0))
        if getattr(density, "n_trainings", None) is not None:
            extra["flow_trainings"] = extra.get("flow_trainings", 0) + int(density.n_trainings)
        if getattr(density, "w_", None) is not None:
            fractions.append(float(density.w_))
        _save_flow_model(ctx, density, f"{name}_density_fold{f}.pt")
    if fractions:
        extra["signal_fraction"] = float(np.mean(fractions))
        extra["signal_fraction_folds"] = fractions
    return MethodOutput(scores=scores, role=np.full(len(data), "density", dtype=object), test_scores=test_scores,
                        extra=extra)


@register_method("ranode")
def ranode(ctx: UnitContext) -> MethodOutput:
    """R-ANODE: mixture fit w p_S + (1-w) p_B in the SR (p_B from the SB, fixed); score log p_S - log p_B."""
    kwargs = _method_settings(ctx, "ranode")
    kwargs.setdefault("device", ctx.cfg.execution.device)
    kwargs.setdefault("bkg_kwargs", {k: v for k, v in _flow_settings(ctx).items() if k != "device"})
    return _density_method(ctx, "ranode", kwargs)


@register_method("anode")
def anode(ctx: UnitContext) -> MethodOutput:
    """ANODE: density ratio p_data(x|m)/p_bkg(x|m) from two flows (SR data, SB data); no classifier."""
    return _density_method(ctx, "anode", {**_flow_settings(ctx), **_method_settings(ctx, "anode")})


def _save_flow_model(ctx: UnitContext, model: Any, name: str) -> None:
    if ctx.model_dir is not None and hasattr(model, "save"):
        model.save(ctx.model_dir / name)


# ---------------------------------------------------------------------------------------------- units
def _injection_tag(injection: float | None) -> str:
    if injection is None:
        return "inj_asis"
    value = float(injection)
    return f"inj_{int(value)}" if value.is_integer() else f"inj_{value:g}"


def unit_dir(run_dir: Path, method: str, injection: float | None, seed: int) -> Path:
    return Path(run_dir) / method / _injection_tag(injection) / f"seed_{seed}"


def run_unit(cfg_dict: dict, base_dir: str, run_dir: str, method: str, injection: float | None,
             seed: int) -> dict:
    """Run one (method, injection, seed) and write its outputs into its unit directory; return metrics.

    Takes plain values so that it can run as a Dask task in another process.
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
    ctx = UnitContext(cfg=cfg, prepared=prepared, method=method, seed=seed,
                      model_dir=(out_dir / "models") if cfg.save_models else None,
                      run_dir=Path(run_dir), injection=injection)
    if ctx.model_dir is not None:
        ctx.model_dir.mkdir(exist_ok=True)
    output = _METHODS[cfg.base_method(method)](ctx)
    data, test = prepared.data, prepared.test
    if len(output.scores) != len(data) or not np.isfinite(output.scores).all():
        raise RuntimeError(f"{method}: expected a finite score for each of {len(data)} data events")
    in_sr = ctx.regions.signal_region(data["mjj"].to_numpy())
    scores = pd.DataFrame({"mjj": data["mjj"].to_numpy(), "score": output.scores,
                           "label": data["label"].to_numpy(), "weight": data["weight"].to_numpy(),
                           "in_sr": in_sr, "role": pd.Categorical(output.role.astype(str))})
    if output.diagnostic_scores is not None:
        scores["score_fold_mean"] = output.diagnostic_scores
    with atomic_output(out_dir / "scores.parquet") as tmp:
        scores.to_parquet(tmp, index=False)
    test_frame = pd.DataFrame({"mjj": test["mjj"].to_numpy(), "score": output.test_scores,
                               "label": test["label"].to_numpy(), "weight": test["weight"].to_numpy()})
    with atomic_output(out_dir / "test_scores.parquet") as tmp:
        test_frame.to_parquet(tmp, index=False)
    metrics: dict[str, Any] = {"method": method, "injection": injection, "seed": seed, **prepared.injection,
                               "n_data": len(data), "n_data_sr": int(in_sr.sum())}
    labels = test["label"].to_numpy()
    if len(test) and set(np.unique(labels)) >= {0.0, 1.0}:
        sel = np.isin(labels, (0, 1))
        metrics["test"] = classifier_metrics(labels[sel], output.test_scores[sel],
                                             rel_error=cfg.fpr_floor_rel_error, rejection=cfg.rejection)
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
    write_json(out_dir / "metrics.json", metrics)  # last: marks the unit finished
    log.info("%s %s seed %d done in %.0f s", method, _injection_tag(injection), seed, metrics["seconds"])
    return metrics


def load_scores(run_dir: str | Path, method: str, injection: float | None, seed: int,
                test: bool = False) -> pd.DataFrame:
    """Scores of one finished unit: data (``mjj, score, label, weight, in_sr, role``) or the test set."""
    path = unit_dir(Path(run_dir), method, injection, seed) / ("test_scores.parquet" if test else "scores.parquet")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no scores for ({method}, {injection}, seed {seed}); is the unit finished?")
    from radar.analysis.report import load_scores as read_scores_file

    return read_scores_file(path)  # checked: mjj and score present, mjj finite


def unit_finished(run_dir: Path, method: str, injection: float | None, seed: int) -> bool:
    return (unit_dir(run_dir, method, injection, seed) / "metrics.json").exists()


# ------------------------------------------------------------------------------------------ the run
def _phases(units: list[tuple], cfg: SearchConfig) -> list[list[tuple]]:
    """Units in the order they may run: a sample-level combination after the units it reuses."""
    first = [u for u in units if cfg.base_method(u[0]) != "combined_events"]
    later = [u for u in units if cfg.base_method(u[0]) == "combined_events"]
    return [p for p in (first, later) if p]


def _execute(cfg: SearchConfig, run_dir: Path, units: list[tuple], progress: bool) -> dict[tuple, dict | str]:
    """Run units (phase by phase, :func:`_phases`); returns {unit: metrics dict or an error string}."""
    results: dict[tuple, dict | str] = {}
    args = (cfg.to_dict(), cfg.base_dir, str(run_dir))
    from tqdm.auto import tqdm

    bar = tqdm(total=len(units), desc="search units", disable=not progress or not units)
    if cfg.execution.mode == "sync":
        for phase in _phases(units, cfg):
            for unit in phase:
                bar.update()
                try:
                    results[unit] = run_unit(*args, *unit)
                except Exception as error:  # one failed training must not stop the others
                    log.exception("unit %s failed", unit)
                    results[unit] = f"{type(error).__name__}: {error}"
        bar.close()
        return results
    import os

    from distributed import Client, LocalCluster, as_completed

    ex = cfg.execution
    if ex.scheduler:
        client, cluster = Client(ex.scheduler), None
    else:
        n_workers = ex.workers or max(1, min(len(units), os.cpu_count() or 1))
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=ex.processes,
                               dashboard_address=None)
        client = Client(cluster)
    try:
        for phase in _phases(units, cfg):
            futures = {client.submit(run_unit, *args, *unit, pure=False,
                                     key=f"radar-unit-{'-'.join(map(str, unit))}-{time.time_ns()}"): unit
                       for unit in phase}
            for future in as_completed(futures):
                unit = futures[future]
                bar.update()
                try:
                    results[unit] = future.result()
                except Exception as error:
                    log.error("unit %s failed: %s: %s", unit, type(error).__name__, error)
                    results[unit] = f"{type(error).__name__}: {error}"
    finally:
        bar.close()
        client.close()
        if cluster is not None:
            cluster.close()
    return results


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
            row: dict[str, Any] = {"method": method, "injection": injection, "n_sig_sr": units[0]["n_sig_sr"],
                                   "s_over_b_sr": units[0]["s_over_b_sr"], "n_seeds": len(units)}
            for name, getter in (("max_sic", lambda u: (u["test"] or {}).get("max_sic")),
                                 ("sic_at_rejection", lambda u: (u["test"] or {}).get("sic_at_rejection")),
                                 ("auc", lambda u: (u["test"] or {}).get("auc")),
                                 ("classification_auc", lambda u: u.get("classification_auc")),
                                 ("seconds", lambda u: u.get("seconds"))):
                s = summarise(getter(u) for u in units)
                row[f"{name}_median"], row[f"{name}_p16"], row[f"{name}_p84"] = s["median"], s["p16"], s["p84"]
            row["seconds_with_members"] = float(np.median([u.get("seconds_with_members", u.get("seconds", np.nan))
                                                           for u in units]))
            if any("flow_trainings" in u or "flow_trainings_failed" in u for u in units):
                row["flow_trainings_failed"] = int(sum(u.get("flow_trainings_failed", 0) for u in units))
                row["flow_trainings"] = int(sum(u.get("flow_trainings", u.get("n_trainings", 0)) for u in units))
            fractions = [u["signal_fraction"] for u in units if u.get("signal_fraction") is not None]
            if fractions:
                row["signal_fraction_median"] = float(np.median(fractions))
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

    pretty = []
    for r in rows:
        seconds = f"{r['seconds_median']:.0f}"
        if r.get("seconds_with_members", r["seconds_median"]) > r["seconds_median"] + 0.5:
            seconds += f" ({r['seconds_with_members']:.0f} with members)"
        pretty.append({"method": r["method"], "injection": r["injection"], "n_sig_sr": r["n_sig_sr"],
                       "S/B_SR": f"{100 * r['s_over_b_sr']:.3f} %", "seeds": r["n_seeds"],
                       "max SIC": band(r, "max_sic"), f"SIC@R={rejection:g}": band(r, "sic_at_rejection"),
                       "AUC": band(r, "auc"), "template-vs-data AUC": band(r, "classification_auc"),
                       "s/unit": seconds, "failed trainings": failures(r)})
    with atomic_output(run_dir / "metrics_table.md") as tmp:
        tmp.write_text(markdown_table(pretty))


def _write_performance_figure(run_dir: Path, cfg: SearchConfig) -> None:
    """``RUN/figures/sic_vs_injection.{png,pdf}``: max SIC and SIC at the rejection versus S/B in the SR,
    median and 16-84 % band over seeds, one line per method (injections with signal only)."""
    from radar.plots.performance import metrics_frame, plot_metrics_vs_injection
    from radar.plots.style import save_figure

    paths = [unit_dir(run_dir, m, i, s) / "metrics.json" for m in cfg.methods for i in cfg.injections
             for s in cfg.seeds]
    frame = metrics_frame([p for p in paths if p.exists()])
    if frame.empty or "max_sic" not in frame or not (frame["s_over_b_sr"] > 0).any():
        return
    frame = frame[frame["s_over_b_sr"] > 0]
    try:
        (run_dir / "figures").mkdir(exist_ok=True)
        save_figure(plot_metrics_vs_injection(frame, x="s_over_b_sr"), run_dir / "figures" / "sic_vs_injection")
    except Exception:  # a figure must not lose the run
        log.exception("sic_vs_injection figure failed")


def run_search(cfg: SearchConfig, *, resume: bool = False, overwrite: bool = False,
               progress: bool = True) -> dict[str, Any]:
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
    if any(m in cfg.methods for m in ("iad", "supervised")):
        _check_truth_inputs(cfg, inputs)
    run_dir = cfg.output_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    saved = run_dir / "config.yaml"
    digest = cfg.digest()
    unit_digest = cfg.unit_digest()
    manifest_path = run_dir / "manifest.json"
    files = [p for p in cfg.input.data] + [v for v in (cfg.input.signal, cfg.input.simulation, cfg.input.test,
                                                         cfg.input.iad_template) if v]
    input_hashes = {str(cfg.path(p)): file_sha256(cfg.path(p)) for p in files}
    if saved.exists() and manifest_path.exists() and not overwrite:
        previous = json.loads(manifest_path.read_text())
        # methods, injections and seeds may be extended; anything that changes a unit's result may not
        old, new = ((str(previous["unit_digest"]), unit_digest) if "unit_digest" in previous
                    else (str(previous.get("config_digest")), digest))
        if old != new:
            raise ValueError(f"{run_dir}: holds a run with a different config (digest {old[:12]} vs "
                             f"{new[:12]}); use another output directory or --overwrite")
        changed = sorted(p for p in set(input_hashes) | set(previous.get("inputs", {}))
                         if input_hashes.get(p) != previous.get("inputs", {}).get(p))
        if changed:
            raise ValueError(f"{run_dir}: the input files changed since its units were trained ({changed}); "
                             "use another output directory or --overwrite")
    # seed by seed: an interrupted run has whole seeds finished (and resumes where it stopped)
    units = [(m, i, s) for s in cfg.seeds for i in cfg.injections
             for m in cfg.methods if m not in SCORE_COMBINATIONS]
    finished = [u for u in units if unit_finished(run_dir, *u)]
    if finished and not resume and not overwrite:
        raise ValueError(f"{run_dir}: {len(finished)} units already finished; use --resume to continue "
                         "or --overwrite to redo them")
    todo = [u for u in units if not (resume and u in finished)]
    resolved = cfg.to_dict()
    resolved["input"] = {k: ([str(cfg.path(p)) for p in v] if isinstance(v, list) else
                             (str(cfg.path(v)) if isinstance(v, str) else v)) for k, v in resolved["input"].items()}
    resolved["output"] = str(run_dir)
    with atomic_output(saved) as tmp:
        tmp.write_text(yaml.safe_dump(json.loads(json.dumps(resolved, default=str)), sort_keys=False))
    manifest: dict[str, Any] = {
        "config": resolved, "config_digest": digest, "unit_digest": unit_digest, "seeds": cfg.seeds, "data_seed": cfg.data_seed,
        "inputs": input_hashes,
        "versions": package_versions(),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "units_skipped": [list(u) for u in units if u not in todo],
    }
    write_json(manifest_path, {**manifest, "status": "running"})
    log.info("search %s: %d units to run (%d already finished) in %s", cfg.name, len(todo),
             len(units) - len(todo), run_dir)
    # prepared data is cached per process: prime it here for the synchronous mode
    if cfg.execution.mode == "sync":
        for injection in cfg.injections:
            prepare_data(cfg, injection, inputs)
    results = _execute(cfg, run_dir, todo, progress)
    if "combined_scores" in cfg.methods:
        from radar.analysis.combine import write_combined_units

        write_combined_units(run_dir, combination_members(cfg), cfg.injections, cfg.seeds,
                             rejection=cfg.rejection, rel_error=cfg.fpr_floor_rel_error)
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
    manifest.update({
        "status": "failed" if failed else "finished",
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "units_run": [list(u) for u in todo], "n_failed": len(failed), "failures": failed,
        "seconds": {"/".join(map(str, u)): r["seconds"] for u, r in results.items() if isinstance(r, dict)},
    })
    write_json(manifest_path, manifest)
    return {**manifest, "table": rows}


def combination_members(cfg: SearchConfig) -> list[str]:
    """Members of the score-level combination: ``method_settings.combined_scores.members``, else every
    template method of the run (the interplay paper combines SALAD, CATHODE, CURTAINs and FETA)."""
    given = cfg.method_settings.get("combined_scores", {}).get("members")
    if given:
        return list(given)
    return [m for m in cfg.methods if cfg.base_method(m) in TEMPLATE_METHODS
            and cfg.base_method(m) != "combined_events"]


def check_injections(cfg: SearchConfig, inputs: dict) -> None:
    """Prepare the data of every injection once (split, hold-out, injection; no training), so that an
    injection the signal pool cannot provide fails before anything trains, naming the injection."""
    try:
        for injection in cfg.injections:
            try:
                prepare_data(cfg, injection, inputs)
            except ValueError as error:
                raise ValueError(f"injections: {injection!r}: {error}") from None
    finally:
        _CACHE.clear()  # the units prepare their own (a cached table per injection costs memory)


def _check_truth_inputs(cfg: SearchConfig, inputs: dict) -> None:
    labels = inputs["data"]["label"].to_numpy()
    if "iad" in cfg.methods and inputs["iad_template"] is None and not (labels == 0).any():
        raise ValueError("method iad: input.data has no events labelled background (label 0) and no "
                         "input.iad_template is given; the idealized template needs truth labels")
    if "supervised" in cfg.methods and (inputs["signal"] is None or not (labels == 0).any()):
        raise ValueError("method supervised: needs input.signal and background-labelled input.data")

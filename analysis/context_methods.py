"""The context-template methods of ``radar search``: ``generate``, ``reweight``, ``morph`` and ``mc``.

The background extrapolation of the non-resonant search (Bai, Mastandrea, Nachman; arXiv:2311.12924;
:mod:`radar.analysis.nonresonant` holds the template makers) as search methods: the same units, folds,
injections, seeds, metrics, bands and figures as every other method. They ask of the regions only the
context variables, the SR and the region the template learns from (:class:`radar.analysis.regions.SearchRegions`),
so they run with both kinds:

- ``regions.context`` (the non-resonant search): context e.g. (HT, MET), SR = the cuts, CR = the rest;
- an m_JJ window (the resonant search): context (m_JJ), SR = the interval, CR = the sidebands. There
  ``generate`` without a simulation *is* CATHODE (a flow of the sidebands' features given m_JJ, sampled at
  the SR data's masses), ``reweight`` with one is SALAD's idea (a data/simulation classifier learnt in the
  sidebands weights the SR simulation) and ``morph`` FETA's (the simulation transported onto the data) —
  the resonant search as the special case "context = (m_JJ), SR = an interval" of one code path.

Per fold (:func:`radar.analysis.units._classify_per_fold`): fold f's template maker is fitted on the CR data
outside fold f (and the simulation); the template is made at the contexts of the SR simulation (weighted
by w(c) = p_data(c)/p_sim(c), learnt in the CR), or without a simulation at the contexts of the SR data
(``cathode_oversampling`` draws per event). Classifier f separates the template events of the contexts
outside fold f (the SR data's folds, or the simulation's own k folds) from the SR data outside fold f and
scores fold f; fold f's own template events, which classifier f never saw, are its null check: a cut on
the score passes as many SR data of fold f as they predict (``cut_excess`` in the unit's metrics,
:func:`radar.analysis.nonresonant.cut_excess`). The same simulation events recur in every fold's template,
so a template event scored by another fold's classifier would have been learnt as class 0 by it.

The makers model the ``features`` that are not context variables; the classifier's inputs are the
``features`` as configured (a context variable listed there is a classifier input too).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import numpy as np
import pandas as pd

from radar.analysis.cwola import fold_assignment
from radar.analysis.datasets import feature_matrix
from radar.analysis.units import (
    FoldInputs,
    MethodOutput,
    UnitContext,
    _classify_per_fold,
    _flow_settings,
    _method_settings,
    _save_template_sample,
    register_method,
)

log = logging.getLogger(__name__)

#: the context-template methods (``mc``: the SR simulation as it is, what the extrapolation corrects)
CONTEXT_TEMPLATE_METHODS = ("generate", "reweight", "morph", "mc")

#: cut efficiencies of the null check of the trained chain (:func:`radar.analysis.nonresonant.cut_excess`)
CUT_EXCESS_EFFICIENCIES = (0.1, 0.01)


def _maker_settings(ctx: UnitContext, name: str) -> dict[str, Any]:
    """``method_settings[name]`` (``flow``, ``transport``, ``classifier``, ``settings``, ``clip``,
    ``oversampling``, ``n_flows``) with the search's flow settings and device under the maker's ``flow``."""
    settings = _method_settings(ctx, name)
    if name in ("generate", "morph"):
        settings["flow"] = {**_flow_settings(ctx), **settings.get("flow", {})}
    if name == "generate" and ctx.prepared.simulation is None:
        settings.setdefault("oversampling", max(1, int(round(ctx.cfg.cathode_oversampling))))
    return settings


def modelled_features(ctx: UnitContext) -> list[str]:
    """The features a template models: the configured ones that are not context variables."""
    context = set(ctx.regions.context)
    return [f for f in ctx.features if f not in context]


def _context_template_method(ctx: UnitContext, name: str) -> MethodOutput:
    """Any context template (``generate``, ``reweight``, ``morph``, ``mc``) vs SR data, per fold."""
    from radar.analysis.metrics import ks_per_feature
    from radar.analysis.nonresonant import TEMPLATES, apply_template

    regions, data, sim = ctx.regions, ctx.prepared.data, ctx.prepared.simulation
    context = regions.context
    features = modelled_features(ctx)
    if not features:
        raise ValueError(f"{name}: every feature {ctx.features} is a context variable; nothing to model")
    if sim is None and name != "generate":
        raise ValueError(
            f"{name} needs a background simulation (input.simulation); without one 'generate' runs (CATHODE's "
            "way: at the SR data's own contexts)"
        )
    sr, cr = regions.sr_mask(data), regions.cr_mask(data)
    sim_sr = None if sim is None else sim[regions.sr_mask(sim)].reset_index(drop=True)
    sim_cr = None if sim is None else sim[regions.cr_mask(sim)].reset_index(drop=True)
    if sim is not None and min(len(sim_sr), len(sim_cr)) < ctx.cfg.k_folds:
        raise ValueError(
            f"{name}: input.simulation has {len(sim_sr)} events in the {regions.describe()} and {len(sim_cr)} "
            "outside it; the template needs both"
        )
    settings = _maker_settings(ctx, name)
    k = ctx.cfg.k_folds
    # the simulation's SR events in k folds of their own: fold f's classifier trains on a template made of
    # the events outside sim-fold f, and the null check scores sim-fold f's events with it (the same
    # simulation events recur in every fold's template: a classifier has learnt them as class 0)
    sim_folds = None if sim is None else fold_assignment(len(sim_sr), k, ctx.seed * 7 + 101)
    made: list[tuple[pd.DataFrame, np.ndarray]] = []
    held: list[tuple[pd.DataFrame, np.ndarray]] = []
    fitted: dict[str, Any] = {"flow_trainings_failed": 0}

    def fold_inputs(f: int, train: np.ndarray) -> FoldInputs:
        if sim is not None:
            source, is_held = sim_sr, sim_folds == f
        else:  # the SR data's own contexts: outside fold f to train on, fold f's for the check
            rows = np.flatnonzero(sr)
            source, is_held = data.iloc[rows].reset_index(drop=True), ~train[rows]
        if name == "mc":
            table, weights = apply_template(None, source, features, context)
        else:
            maker = TEMPLATES[name](features=features, context=context, seed=ctx.seed * 1000 + f, **settings)
            maker.fit(data[cr & train].reset_index(drop=True), sim, sim_cr)
            # one call for both parts: a flow's draws for them are then independent
            table, weights = apply_template(maker, source, features, context)
            for flow in [*getattr(maker, "flows_", []), getattr(maker, "base_", None)]:
                fitted["flow_trainings_failed"] += int(getattr(flow, "n_failed", 0) or 0)
        weights = np.asarray(weights, dtype="float64")
        at = table["_row"].to_numpy() if "_row" in table else np.arange(len(table))
        check = is_held[at]
        made.append((table[~check].reset_index(drop=True), weights[~check]))
        held.append((table[check].reset_index(drop=True), weights[check]))
        X = feature_matrix(table, ctx.features, f"{name} template (fold {f})")
        return X[~check], weights[~check], None, (X[check], weights[check])

    out = _classify_per_fold(ctx, fold_inputs, np.flatnonzero(sr))
    _save_template_sample(ctx, made)
    table = pd.concat([m[0] for m in made], ignore_index=True)
    weights = np.concatenate([m[1] for m in made])
    true_bkg = data[sr & (data["label"].to_numpy() == 0)]
    if len(true_bkg):
        out.extra["template_ks"] = ks_per_feature(table, true_bkg, ctx.features, wa=weights)
    out.extra.update(fitted)
    out.extra["n_template"] = len(table)
    out.extra["context"] = list(context)
    out.extra["n_template_checked"] = sum(len(t) for t, _ in held)
    out.extra["cut_excess"] = _cut_excess(ctx, out, held, np.flatnonzero(sr))
    return out


def _cut_excess(
    ctx: UnitContext, out: MethodOutput, held: list[tuple[pd.DataFrame, np.ndarray]], rows1: np.ndarray
) -> list[dict[str, float]]:
    """The null check of the trained chain, per efficiency of :data:`CUT_EXCESS_EFFICIENCIES`
    (:func:`radar.analysis.nonresonant.cut_excess`): the SR data's out-of-fold scores (fold g scored by
    classifier g) against what fold g's held-out template events, scored by the same classifier g (which
    never saw them), predict. ``n_flows`` bootstrap flows add the spread of their predictions."""
    from radar.analysis.nonresonant import cut_excess

    data_groups = out.folds[rows1]  # the folds the classifiers were trained and scored on
    template_groups = np.concatenate([np.full(len(t), f) for f, (t, _) in enumerate(held)])
    w = np.concatenate([h[1] for h in held])
    members = None
    if all("_member" in t for t, _ in held):  # the same bootstrap index in every fold: one fit per index
        members = np.concatenate([t["_member"].to_numpy() for t, _ in held])
    scores = out.scores[rows1]
    return [
        cut_excess(scores, out.template_scores, w, eff, members, groups=(data_groups, template_groups))
        for eff in CUT_EXCESS_EFFICIENCIES
    ]


for _name in CONTEXT_TEMPLATE_METHODS:
    register_method(
        _name,
        kind="template",
        needs_simulation=_name != "generate",
        context_regions=True,
        event_weights=False,  # the makers' flows and ratio classifiers take no event weights yet
    )(functools.partial(_context_template_method, name=_name))

"""The built-in methods: idealized AD, supervised, CWoLa Hunting, the background templates (CATHODE, SALAD,
CURTAINs, FETA, their sample-level combination), LaCATHODE, and the density ratios (ANODE, R-ANODE).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import numpy as np
import pandas as pd

from radar.analysis.config import SearchConfig
from radar.analysis.datasets import feature_matrix, split_indices
from radar.analysis.rundir import load_template_sample, unit_dir
from radar.analysis.units import (
    FoldInputs,
    MethodOutput,
    UnitContext,
    _classify,
    _classify_per_fold,
    _data_folds,
    _flow_settings,
    _method_settings,
    _save_template_sample,
    data_weights,
    method_info,
    register_info,
    register_method,
)

log = logging.getLogger(__name__)


@register_method("iad", sidebands="none", truth_labels=True, settings=False, context_regions=True)
def idealized_ad(ctx: UnitContext) -> MethodOutput:
    """Idealized AD: a perfect SR background template (truth labels) vs SR data.

    Template: ``input.iad_template`` if given, else a random half (seed ``data_seed``, the same for all
    seeds) of the data's SR background, removed from the data side.
    """
    data = ctx.prepared.data
    sr_rows = np.flatnonzero(ctx.regions.sr_mask(data))
    if ctx.prepared.iad_template is not None:
        template = ctx.prepared.iad_template
        X0 = feature_matrix(template, ctx.features, "input.iad_template")
        return _classify(
            ctx,
            X0,
            data_weights(template),
            None,
            feature_matrix(data.iloc[sr_rows], ctx.features, "data"),
            sr_rows,
        )
    bkg_sr = sr_rows[data["label"].to_numpy()[sr_rows] == 0]
    if len(bkg_sr) < 2 * ctx.cfg.k_folds:
        raise ValueError(
            f"iad: the data has {len(bkg_sr)} SR events labelled background; the idealized "
            "template needs truth labels (or give input.iad_template)"
        )
    half, _ = split_indices(len(bkg_sr), (0.5, 0.5), ctx.cfg.data_seed + 17)
    rows0 = bkg_sr[half]
    rows1 = np.setdiff1d(sr_rows, rows0)
    return _classify(
        ctx,
        feature_matrix(data.iloc[rows0], ctx.features),
        None,
        rows0,
        feature_matrix(data.iloc[rows1], ctx.features),
        rows1,
    )


@register_method("supervised", sidebands="none", truth_labels=True, settings=False, context_regions=True)
def supervised(ctx: UnitContext) -> MethodOutput:
    """Supervised upper bound: SR background of the data (truth label 0) vs held-out SR signal."""
    data, sig = ctx.prepared.data, ctx.prepared.signal_supervised
    if sig is None or len(sig) < ctx.cfg.k_folds:
        raise ValueError(
            "supervised: needs input.signal with SR events in the supervised share of signal_split"
        )
    sr = ctx.regions.sr_mask(data)
    rows0 = np.flatnonzero(sr & (data["label"].to_numpy() == 0))
    return _classify(
        ctx,
        feature_matrix(data.iloc[rows0], ctx.features),
        None,
        rows0,
        feature_matrix(sig, ctx.features, "signal"),
        None,
        w1=data_weights(sig),
    )


@register_method("cwola_hunting", sidebands="narrow", settings=False)
def cwola_hunting(ctx: UnitContext) -> MethodOutput:
    """CWoLa Hunting: (narrow) sideband data (label 0) vs SR data (label 1)."""
    mjj = ctx.prepared.data["mjj"].to_numpy()
    rows0 = np.flatnonzero(ctx.regions.sideband(mjj))
    rows1 = np.flatnonzero(ctx.regions.signal_region(mjj))
    data = ctx.prepared.data
    return _classify(
        ctx,
        feature_matrix(data.iloc[rows0], ctx.features),
        None,
        rows0,
        feature_matrix(data.iloc[rows1], ctx.features),
        rows1,
    )


#: background templates (models/templates) selectable as methods: template vs SR data
TEMPLATE_METHODS = ("cathode", "salad", "curtains", "feta", "combined_events")
#: methods made after the units from other methods' scores (analysis.combine), not trained
SCORE_COMBINATIONS = ("combined_scores",)
register_info("combined_scores", kind="combination", sidebands="none", context_regions=True)


def _template_kwargs(ctx: UnitContext, name: str) -> dict[str, Any]:
    """Constructor keyword arguments of template ``name``: the flow settings feed CATHODE (and FETA's base
    flow, and the members of a combination); SALAD, CURTAINs and FETA get the SR from the config."""
    kwargs = _method_settings(ctx, name)
    if name == "cathode":
        return {**_flow_settings(ctx), **kwargs}
    kwargs.setdefault("device", ctx.cfg.execution.device)
    if method_info(name).signal_region_setting:
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
    """Any registered template vs SR data, per fold (:func:`radar.analysis.units._classify_per_fold`): fold f's template is fit
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
            if name == "cathode":
                template, warm = _fit_flow_template(
                    ctx, f"cathode_template_fold{f}.pt", f, data[sb & train], kwargs
                )
                if ctx.cfg.warm_start is not None:
                    fitted["warm_started_folds"] = fitted.get("warm_started_folds", 0) + int(warm)
            else:
                template = get_template(name)(
                    features=tuple(ctx.features), seed=ctx.seed * 1000 + f, **kwargs
                )
                template.fit(data[sb & train].reset_index(drop=True), ctx.prepared.simulation)
            limit = getattr(template, "max_distinct", None)
            if limit is not None and n > limit:  # a template of a finite pool (SALAD): no repeated events
                log.info("%s: fold %d: %d distinct template events (not %d)", name, f, limit, n)
                n = int(limit)
            sr_train = sr & train
            w_sr = data_weights(data)[sr_train]
            masses = draw_mjj_kde(
                mjj[sr_train], n, ctx.seed * 1000 + f, weights=None if np.all(w_sr == 1.0) else w_sr
            )
            samples, weights = template.sample(n, masses)
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


def _members_seconds(ctx: UnitContext, members) -> float:
    """Summed wall time of the members' finished units (what a reused combination really cost)."""
    import json

    total = 0.0
    for member in members:
        path = unit_dir(ctx.run_dir, member, ctx.injection, ctx.unit_seed) / "metrics.json"
        total += float(json.loads(path.read_text()).get("seconds", 0.0)) if path.exists() else 0.0
    return total


def _reused_member_templates(ctx: UnitContext, members) -> list[tuple[pd.DataFrame, np.ndarray]] | None:
    """The sample-level combination built from the members' saved per-fold templates of this run,
    injection and seed, one per fold: from each member's fold-f template an equal share — ``min(n_f //
    members, smallest member's fold-f template)`` events, ``n_f`` = ``cathode_oversampling`` × the SR data
    outside fold f, drawn without replacement (seeded), so no event repeats — each share scaled to equal
    total weight (:func:`radar.models.templates.combined.stack_equal_weight`). None when a member has no
    finished unit here, or one saved by an older radar without folds (then the members are fitted afresh).
    """
    from radar.models.templates.combined import stack_equal_weight

    if ctx.run_dir is None or ctx.replica:
        # members saved replica 0's templates, whose folds are those of the unit's seed: a later replica
        # (other folds) fits the members afresh, so no template scores an event it was fitted on
        return None
    loaded = []
    for member in members:
        try:
            events, weights = load_template_sample(ctx.run_dir, member, ctx.injection, ctx.unit_seed)
        except FileNotFoundError:
            log.info("combined_events: member %s has no finished unit here; fitting the members", member)
            return None
        if any(f not in events for f in [*ctx.features, "fold"]):
            log.info(
                "combined_events: member %s saved no %s with folds; fitting the members", member, ctx.features
            )
            return None
        loaded.append((events, weights))
    mjj = ctx.prepared.data["mjj"].to_numpy()
    sr = ctx.regions.signal_region(mjj)
    folds = _data_folds(ctx, None, np.flatnonzero(sr))
    rng = np.random.default_rng(ctx.seed * 7_777_777 + 11)
    combined = []
    for f in range(ctx.cfg.k_folds):
        n = int(round(ctx.cfg.cathode_oversampling * (sr & (folds != f)).sum()))
        own = [
            (events[events["fold"].to_numpy() == f], w[events["fold"].to_numpy() == f])
            for events, w in loaded
        ]
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
    register_method(
        _name,
        kind="template",
        needs_simulation=_name in ("salad", "feta"),
        signal_region_setting=_name in ("salad", "curtains", "feta"),
        # their trainings (reweighting classifier, transport objectives) have no event weights yet
        event_weights=_name == "cathode",
    )(functools.partial(_template_method, name=_name))


@register_method("lacathode", kind="template")
def lacathode(ctx: UnitContext) -> MethodOutput:
    """LaCATHODE (Hallin et al., arXiv:2210.14924): CATHODE's flow, with the classifier moved into the flow's
    latent space.

    Per fold (:func:`radar.analysis.units._classify_per_fold`): fold f's conditional flow is fitted on the sideband data outside
    fold f (as CATHODE, ``flow`` settings with ``method_settings.lacathode`` on top); data events are mapped
    to its latent space at their own m_JJ (:meth:`radar.models.flows.ConditionalFlow.to_latent`, best epoch). The
    template is ``cathode_oversampling`` × N_SR standard-normal draws (the flow's base density, the same at
    every mass), class 1 the latent SR data outside fold f; classifier f scores fold f. Where the flow describes the background, the latent coordinates do not depend on m_JJ, so a cut
    on the classifier does not sculpt the m_JJ spectrum of the background even when the features follow
    m_JJ (where CATHODE's classifier, evaluated away from the SR, does).
    """

    data = ctx.prepared.data
    mjj = data["mjj"].to_numpy()
    sb, sr = ctx.regions.sideband(mjj), ctx.regions.signal_region(mjj)
    kwargs = {**_flow_settings(ctx), **_method_settings(ctx, "lacathode")}
    failed, warm_started = [0], [0]

    def fold_inputs(f: int, train: np.ndarray) -> FoldInputs:
        template, warm = _fit_flow_template(ctx, f"lacathode_flow_fold{f}.pt", f, data[sb & train], kwargs)
        failed[0] += int(template.n_failed)
        warm_started[0] += int(warm)
        _save_flow_model(ctx, template, f"lacathode_flow_fold{f}.pt")
        flow = template.flow

        def latent(table: pd.DataFrame, what: str) -> np.ndarray:
            return flow.to_latent(feature_matrix(table, ctx.features, what), table["mjj"].to_numpy())

        n = int(round(ctx.cfg.cathode_oversampling * (sr & train).sum()))
        X0 = np.random.default_rng(ctx.seed * 7_777_777 + 5 + f).standard_normal((n, len(ctx.features)))
        return X0, None, latent

    out = _classify_per_fold(ctx, fold_inputs, np.flatnonzero(sr))
    out.extra.update({"n_template": out.extra["n_class0"], "flow_trainings_failed": failed[0]})
    if ctx.cfg.warm_start is not None:
        out.extra["warm_started_folds"] = warm_started[0]
    return out


def _fit_flow_template(
    ctx: UnitContext, file: str, f: int, sideband: pd.DataFrame, kwargs: dict[str, Any]
) -> tuple[Any, bool]:
    """Fold f's CATHODE flow template (also LaCATHODE's flow), fitted on ``sideband`` with the flow settings
    ``kwargs``; warm-started from ``file`` of ``warm_start.run`` when that is set and the file exists.
    Returns (template, whether it was warm-started)."""
    from radar.models.templates.cathode import CathodeTemplate

    init, warm = _warm_start(ctx, file)
    template = CathodeTemplate(features=tuple(ctx.features), seed=ctx.seed * 1000 + f, **{**kwargs, **warm})
    template.fit(sideband.reset_index(drop=True), **({} if init is None else {"init": init}))
    return template, init is not None


def _warm_start(ctx: UnitContext, file: str) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The starting weights of one fold's flow under ``warm_start`` (the best epoch of the same unit's,
    replica's and fold's flow in ``warm_start.run``) and the flow settings that change with it (``epochs``);
    ``(None, {})`` without ``warm_start`` or when that flow was not saved (a window that did not run: the
    flow starts cold, logged)."""
    from radar.models.templates.cathode import CathodeTemplate

    ws = ctx.cfg.warm_start
    if ws is None:
        return None, {}
    source = unit_dir(ctx.cfg.path(ws.run), ctx.method, ctx.injection, ctx.unit_seed) / "models"
    if ctx.cfg.replicas_for(ctx.method) > 1:
        source = source / f"replica_{ctx.replica}"
    path = source / file
    if not path.is_file():
        log.info("%s: no flow %s to warm-start from; training from scratch", ctx.method, path)
        return None, {}
    weights = CathodeTemplate.load(path, device="cpu").flow.warm_start_weights()
    log.info("%s: flow warm-started from %s", ctx.method, path)
    return weights, ({} if ws.epochs is None else {"epochs": int(ws.epochs)})


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
    return MethodOutput(
        scores=scores, role=np.full(len(data), "density", dtype=object), test_scores=test_scores, extra=extra
    )


@register_method("ranode", kind="density")
def ranode(ctx: UnitContext) -> MethodOutput:
    """R-ANODE: mixture fit w p_S + (1-w) p_B in the SR (p_B from the SB, fixed); score log p_S - log p_B."""
    kwargs = _method_settings(ctx, "ranode")
    kwargs.setdefault("device", ctx.cfg.execution.device)
    kwargs.setdefault("bkg_kwargs", {k: v for k, v in _flow_settings(ctx).items() if k != "device"})
    return _density_method(ctx, "ranode", kwargs)


@register_method("anode", kind="density")
def anode(ctx: UnitContext) -> MethodOutput:
    """ANODE: density ratio p_data(x|m)/p_bkg(x|m) from two flows (SR data, SB data); no classifier."""
    return _density_method(ctx, "anode", {**_flow_settings(ctx), **_method_settings(ctx, "anode")})


def _save_flow_model(ctx: UnitContext, model: Any, name: str) -> None:
    if ctx.model_dir is not None and hasattr(model, "save"):
        model.save(ctx.model_dir / name)


# ---------------------------------------------------------------------------------------------- units


def combination_members(cfg: SearchConfig) -> list[str]:
    """Members of the score-level combination: ``method_settings.combined_scores.members``, else every
    template method of the run (the interplay paper combines SALAD, CATHODE, CURTAINs and FETA)."""
    given = cfg.method_settings.get("combined_scores", {}).get("members")
    if given:
        return list(given)
    return [
        m
        for m in cfg.methods
        if cfg.base_method(m) in TEMPLATE_METHODS and cfg.base_method(m) != "combined_events"
    ]


NAE_SEARCH_EPOCHS = 2


def _outlier_method(ctx: UnitContext, nae: bool) -> MethodOutput:
    """Unsupervised outlier scores on the feature table (:class:`radar.models.autoencoder.Autoencoder`).

    No labels and no template: the autoencoder learns the data as they are (``train_on: all``, the
    default: every data event in the m_JJ range; ``sidebands``: the sideband events only, a background-
    enriched training set). k-fold like every other method: with the search's fold assignment
    (:func:`radar.analysis.units._data_folds`), fold f is scored by the model trained without fold f, so no event is
    scored by a model that saw it and every score comes from one identically trained model; the test set
    gets the mean of the k models (SIC only). Score: the energy (reconstruction error), higher = more
    anomalous."""
    from radar.models.autoencoder import Autoencoder

    data, test = ctx.prepared.data, ctx.prepared.test
    settings = _method_settings(ctx, "nae" if nae else "autoencoder")
    train_on = settings.pop("train_on", "all")
    if train_on not in ("all", "sidebands"):
        raise ValueError(
            f"method_settings.{'nae' if nae else 'autoencoder'}.train_on: 'all' or 'sidebands', got {train_on!r}"
        )
    settings.setdefault("device", ctx.cfg.execution.device)
    if nae:
        # the negative phase's epochs null-checked through the chain and measured on real events
        # (docs/outliers.md); Autoencoder's own default (30) costs ~15x more per fold
        settings.setdefault("epochs", NAE_SEARCH_EPOCHS)
    regions = ctx.regions
    usable = regions.range_mask(data) & (regions.cr_mask(data) if train_on == "sidebands" else True)
    k = ctx.cfg.k_folds
    fold = _data_folds(ctx, None, None)  # the search's one balanced fold assignment over the data
    X = feature_matrix(data, ctx.features, "data")
    X_test = feature_matrix(test, ctx.features, "test") if len(test) else None
    scores = np.full(len(data), np.nan)
    test_scores = np.zeros(len(test))
    for f in range(k):
        model = Autoencoder(nae=nae, seed=ctx.seed * 1000 + f, **settings).fit(X[usable & (fold != f)])
        scores[fold == f] = model.score(X[fold == f])
        if X_test is not None:
            test_scores += model.score(X_test) / k
        log.info(
            "%s: fold %d/%d trained on %d events",
            "nae" if nae else "autoencoder",
            f + 1,
            k,
            int((usable & (fold != f)).sum()),
        )
    return MethodOutput(
        scores=scores,
        role=np.full(len(data), "fold", dtype=object),
        test_scores=test_scores,
        extra={"train_on": train_on, "n_train_per_fold": int((usable & (fold != 0)).sum())},
    )


@register_method("autoencoder", kind="outlier", sidebands="none", context_regions=True)
def autoencoder(ctx: UnitContext) -> MethodOutput:
    """Autoencoder (reconstruction error) trained on the data without labels, k-fold scored."""
    return _outlier_method(ctx, nae=False)


@register_method("nae", kind="outlier", sidebands="none", context_regions=True)
def nae(ctx: UnitContext) -> MethodOutput:
    """Normalized autoencoder (Dillon et al., arXiv:2206.14225) trained on the data, k-fold scored."""
    return _outlier_method(ctx, nae=True)


import radar.analysis.context_methods  # noqa: E402,F401  (registers generate, reweight, morph, mc)

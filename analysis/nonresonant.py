"""Non-resonant anomaly detection by background extrapolation (Bai, Mastandrea, Nachman; arXiv:2311.12924).

A non-resonant signal (e.g. semi-visible jets: large MET) is no bump in m_JJ, so there is no sideband on
both sides. Regions are cuts on *context* variables (the reference: HT and MET; SR = HT > 800 GeV and
MET > 75 GeV); the control region (CR) is everything else. A background template for the SR is
*extrapolated* from the CR with a background simulation ("MC") as a guide, and a CWoLa classifier
separates the template from the SR data, as in the resonant search.

Three ways to make the template (each a class with ``fit(data_cr, mc)`` and ``template(mc_sr)``):

- :class:`ReweightTemplate` (``reweight``): a classifier of data vs MC in the CR on (features, context);
  its likelihood ratio f/(1-f) weights the SR MC events.
- :class:`GenerateTemplate` (``generate``): a flow p_data(x | context) fitted on CR data, sampled at the
  contexts of the SR MC events, each weighted by w(context) = p_data(c)/p_MC(c), a context-only
  classifier learnt in the CR:  p_data(x, c) = p_data(x | c) p_MC(c) w(c).
- :class:`MorphTemplate` (``morph``): a flow of the MC p_MC(x | c) on all MC, and a transport flow that
  maps data to MC, trained in the CR by maximum likelihood with the frozen MC flow as its base (as FETA;
  :mod:`radar.models.templates.feta`); its inverse morphs SR MC events into data-like ones, weighted by
  w(c) like ``generate``.

References: ``ideal`` (an independent sample of the true SR background as the template),
``supervised`` (signal vs background) and ``mc`` (the SR MC as it is: what the extrapolation corrects). :func:`run_method` trains one method and its k-fold CWoLa
classifier and returns test metrics (AUC, max SIC, SIC at a rejection) and the closure numbers;
:func:`cut_excess` is the null check of a trained chain: after a cut on the out-of-fold score, the SR
data that pass against what the template predicts.

:func:`toy_samples` is a fast toy with an exactly known truth (context m1, m2; one feature x), and
:func:`hand_tuned_simulation` the seed's deliberately worse simulation (MET → MET (1 + MET/500 GeV),
m_JJ → m_JJ (1 + m_JJ/6000 GeV), τ → τ^1.1).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from radar.analysis.datasets import feature_matrix, hand_tuned_simulation
from radar.analysis.regions import ContextRegions

log = logging.getLogger(__name__)

METHODS = ("reweight", "generate", "morph", "ideal", "supervised", "mc")

__all__ = [
    "METHODS",
    "ContextRegions",
    "GenerateTemplate",
    "MorphTemplate",
    "ReweightTemplate",
    "apply_template",
    "closure_check",
    "context_source",
    "cut_excess",
    "fit_template",
    "hand_tuned_simulation",
    "ks_test",
    "make_template",
    "run_method",
    "summary_markdown",
    "toy_samples",
]


# -- the seed's hand-tuned simulation and the toy --------------------------------------------------------
#: the toy's SR: both context variables above 2.5
TOY_REGIONS = ContextRegions({"m1": (2.5, None), "m2": (2.5, None)})


def _toy_background(n: int, rng: np.random.Generator, mc: bool) -> pd.DataFrame:
    scale = 1.15 if mc else 1.0  # the MC's context falls more slowly than the data's
    m1, m2 = 1.0 + rng.exponential(scale, n), 1.0 + rng.exponential(scale, n)
    s = m1 + m2
    mean, width = 0.5 * s, 0.5 + 0.1 * s
    if mc:  # and its x | context is shifted and wider, smoothly in the context
        mean, width = mean + 0.2 + 0.05 * s, 1.1 * width
    return pd.DataFrame({"m1": m1, "m2": m2, "x": rng.normal(mean, width), "label": 0.0})


def toy_background_density(x: np.ndarray, m1: np.ndarray, m2: np.ndarray) -> np.ndarray:
    """The toy data background's exact p(x | m1, m2) (the truth a template should reproduce)."""
    s = np.asarray(m1) + np.asarray(m2)
    mean, width = 0.5 * s, 0.5 + 0.1 * s
    return np.exp(-0.5 * ((np.asarray(x) - mean) / width) ** 2) / (width * math.sqrt(2 * math.pi))


def toy_samples(
    n_data: int = 200_000, n_mc: int = 200_000, n_signal: int = 0, *, n_truth: int = 0, seed: int = 0
) -> dict[str, pd.DataFrame]:
    """The toy: context (m1, m2), one feature x, SR = m1 > 2.5 and m2 > 2.5 (:data:`TOY_REGIONS`, about 5 %
    of the background).

    Data background: m_i = 1 + Exp(1), x | m ~ N(s/2, 0.5 + 0.1 s) with s = m1 + m2. MC: m_i = 1 + Exp(1.15)
    and x | m ~ N(s/2 + 0.2 + 0.05 s, 1.1 (0.5 + 0.1 s)) — mismodelled in the context and in x | context.
    Signal (``n_signal`` events added to the data, label 1): m_i = 2.5 + Exp(1), x ~ N(0, 0.3), below
    the SR background (x ≈ 3-4 there). ``n_truth``: an independent data-background sample for the
    ``ideal`` template and the test set. Returns ``data``, ``mc``, ``truth`` and ``signal`` (a fresh
    signal pool for the test set and supervised training, as large as max(n_signal, 20000))."""
    rng = np.random.default_rng(seed)
    data = _toy_background(n_data, rng, mc=False)
    mc = _toy_background(n_mc, rng, mc=True)
    truth = _toy_background(n_truth, rng, mc=False)

    def signal(n: int) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "m1": 2.5 + rng.exponential(1.0, n),
                "m2": 2.5 + rng.exponential(1.0, n),
                "x": rng.normal(0.0, 0.3, n),
                "label": 1.0,
            }
        )

    if n_signal:
        data = pd.concat([data, signal(n_signal)], ignore_index=True)
    return {"data": data, "mc": mc, "truth": truth, "signal": signal(max(n_signal, 20_000))}


# -- templates -------------------------------------------------------------------------------------------
def _density_ratio(
    X_data: np.ndarray, X_mc: np.ndarray, *, classifier: str, seed: int, settings: dict[str, Any]
) -> Any:
    """A classifier of data (1) vs MC (0), class-balanced: f/(1-f) estimates p_data/p_MC."""
    from radar.models.classifiers import get_classifier

    X = np.concatenate([X_mc, X_data])
    y = np.concatenate([np.zeros(len(X_mc)), np.ones(len(X_data))])
    return get_classifier(classifier, seed=seed, **settings).fit(X, y)


def _context_ratio(maker: Any, data_cr: pd.DataFrame, mc_cr: pd.DataFrame, seed: int, what: str) -> Any:
    """w(c) = p_data(c)/p_MC(c) of ``generate`` and ``morph``: a classifier on the CR context alone."""
    return _density_ratio(
        feature_matrix(data_cr, maker.context, f"{what}: CR data context"),
        feature_matrix(mc_cr, maker.context, f"{what}: CR MC context"),
        classifier=maker.classifier,
        seed=seed,
        settings=maker.settings,
    )


def _ratio_weights(clf: Any, X: np.ndarray, clip: float) -> np.ndarray:
    f = np.clip(clf.predict_proba(X), 1e-6, 1 - 1e-6)
    return np.clip(f / (1.0 - f), 0.0, clip)


@dataclass
class ReweightTemplate:
    """SR MC weighted by a data/MC classifier learnt in the CR on (features, context)."""

    features: list[str]
    context: list[str]
    classifier: str = "mlp"
    settings: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    clip: float = 20.0

    def fit(self, data_cr: pd.DataFrame, mc: pd.DataFrame, mc_cr: pd.DataFrame) -> ReweightTemplate:
        cols = self.features + self.context
        self.ratio_ = _density_ratio(
            feature_matrix(data_cr, cols, "reweight: CR data"),
            feature_matrix(mc_cr, cols, "reweight: CR MC"),
            classifier=self.classifier,
            seed=self.seed,
            settings=self.settings,
        )
        return self

    def template(self, mc_sr: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
        cols = self.features + self.context
        w = _ratio_weights(self.ratio_, feature_matrix(mc_sr, cols, "reweight: SR MC"), self.clip)
        return mc_sr[cols].reset_index(drop=True), w


@dataclass
class GenerateTemplate:
    """A flow p_data(x | context) on CR data, sampled at SR MC contexts weighted by w(c) (CR classifier on
    the context alone).

    Without a simulation (``mc`` None in :meth:`fit`) it is sampled at the contexts of the SR *data*
    themselves, unweighted: with context (m_JJ) and an m_JJ interval as the SR this is CATHODE (a flow of
    the sidebands' features given m_JJ, sampled at the SR's m_JJ values), the resonant search as the special
    case of this code path (docs/nonresonant.md). The template's ``_row`` column: the context event each
    template event was sampled at (``oversampling`` per event and flow)."""

    features: list[str]
    context: list[str]
    flow: dict[str, Any] = field(default_factory=dict)
    classifier: str = "mlp"
    settings: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    oversampling: int = 1
    clip: float = 20.0
    #: flows trained on bootstrap resamples of the CR: their spread is the template's own fit error, which
    #: :func:`cut_excess` adds to the statistical one (``_member`` column of the template)
    n_flows: int = 1

    def fit(
        self, data_cr: pd.DataFrame, mc: pd.DataFrame | None, mc_cr: pd.DataFrame | None
    ) -> GenerateTemplate:
        from radar.models.flows import ConditionalFlow

        if self.n_flows < 1:
            raise ValueError(f"generate: n_flows must be >= 1, got {self.n_flows}")
        x = feature_matrix(data_cr, self.features, "generate: CR data")
        c = _context(feature_matrix(data_cr, self.context, "generate: CR data context"))
        rng = np.random.default_rng([self.seed, 7])
        self.flows_ = []
        for k in range(self.n_flows):
            rows = rng.integers(0, len(x), len(x)) if self.n_flows > 1 else slice(None)  # bootstrap or all
            flow = ConditionalFlow(
                len(self.features), context_features=len(self.context), seed=self.seed + 1000 * k, **self.flow
            )
            self.flows_.append(flow.fit(x[rows], c[rows]))
        # no simulation: the contexts are the data's own, w = 1
        self.ratio_ = (
            None if mc_cr is None else _context_ratio(self, data_cr, mc_cr, self.seed + 1, "generate")
        )
        return self

    def template(self, mc_sr: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
        c = np.repeat(feature_matrix(mc_sr, self.context, "generate: SR contexts"), self.oversampling, axis=0)
        w = np.ones(len(c)) if self.ratio_ is None else _ratio_weights(self.ratio_, c, self.clip)
        rows = np.repeat(np.arange(len(mc_sr)), self.oversampling)
        tables = []
        for k, flow in enumerate(self.flows_):
            x = flow.sample(_context(c), seed=self.seed + 2 + 1000 * k)
            table = pd.DataFrame(np.column_stack([x, c]), columns=self.features + self.context).assign(
                _row=rows
            )
            tables.append(table.assign(_member=k) if len(self.flows_) > 1 else table)
        return pd.concat(tables, ignore_index=True), np.tile(w, len(self.flows_))


@dataclass
class MorphTemplate:
    """SR MC events morphed into data-like ones: a flow of the MC p_MC(x | c) on all MC and a transport
    flow (data → MC) trained on CR data with the frozen MC flow as its base; weighted by w(c)."""

    features: list[str]
    context: list[str]
    flow: dict[str, Any] = field(default_factory=dict)
    transport: dict[str, Any] = field(default_factory=dict)
    classifier: str = "mlp"
    settings: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    clip: float = 20.0

    def fit(self, data_cr: pd.DataFrame, mc: pd.DataFrame, mc_cr: pd.DataFrame) -> MorphTemplate:
        import torch

        from radar.models.device import resolve_device
        from radar.models.flows import ConditionalFlow
        from radar.models.preprocessing import Preprocessor
        from radar.models.templates.feta import train_transport

        x_mc = feature_matrix(mc, self.features, "morph: MC")
        c_mc = _context(feature_matrix(mc, self.context, "morph: MC context"))
        x_cr = feature_matrix(data_cr, self.features, "morph: CR data")
        c_cr = _context(feature_matrix(data_cr, self.context, "morph: CR data context"))
        shared = Preprocessor().fit(np.concatenate([x_mc, x_cr]))
        self.base_ = ConditionalFlow(
            len(self.features), context_features=len(self.context), seed=self.seed, **self.flow
        )
        self.base_.fit(x_mc, c_mc, preprocessor=shared)
        settings = {
            "n_blocks": 4,
            "hidden": 32,
            "epochs": 30,
            "batch_size": 256,
            "lr": 1e-4,
            **self.transport,
        }
        device = resolve_device(self.flow.get("device", "auto"))
        z = torch.as_tensor(shared.transform(x_cr)[0], dtype=torch.float32, device=device)
        ctx = torch.as_tensor(self.base_.mass_scaler.transform(c_cr), dtype=torch.float32, device=device)
        result = train_transport(
            self.base_.members, z, ctx, settings=settings, seed=self.seed + 1, what="morph transport flow"
        )
        self.transport_ = result.members[0]
        self.ratio_ = _context_ratio(self, data_cr, mc_cr, self.seed + 2, "morph")
        return self

    def template(self, mc_sr: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
        import torch

        pre, scaler = self.base_.preprocessor, self.base_.mass_scaler
        x = feature_matrix(mc_sr, self.features, "morph: SR MC")
        c = feature_matrix(mc_sr, self.context, "morph: SR MC context")
        z = pre.transform(x)[0]
        device = next(self.transport_.parameters()).device
        with torch.no_grad():
            zt = torch.as_tensor(z, dtype=torch.float32, device=device)
            ct = torch.as_tensor(scaler.transform(_context(c)), dtype=torch.float32, device=device)
            morphed = self.transport_.transform.inverse(zt, context=ct)[0].double().cpu().numpy()
        table = pd.DataFrame(np.column_stack([pre.inverse(morphed), c]), columns=self.features + self.context)
        return table, _ratio_weights(self.ratio_, c, self.clip)


def _context(c: np.ndarray) -> np.ndarray:
    """A flow's conditioning array: (N,) for one context variable, (N, C) for several."""
    return c[:, 0] if c.ndim == 2 and c.shape[1] == 1 else c


TEMPLATES = {"reweight": ReweightTemplate, "generate": GenerateTemplate, "morph": MorphTemplate}


def fit_template(
    method: str,
    samples: dict[str, pd.DataFrame],
    *,
    regions: ContextRegions,
    features: Sequence[str],
    seed: int = 0,
    settings: dict[str, Any] | None = None,
) -> Any:
    """The fitted template maker of ``method`` (``reweight``, ``generate``, ``morph``; ``None`` for ``mc``,
    the MC as it is), trained on the CR part of ``samples["data"]`` and on ``samples["mc"]``. Its
    ``template(mc_part)`` predicts the data in any part of the MC: the SR (the template) or the CR (its
    closure, to be compared with the CR data)."""
    if method == "mc":
        if samples.get("mc") is None:
            raise ValueError("'mc' (the simulation as it is) needs a background simulation (input.mc)")
        return None
    if method not in TEMPLATES:
        raise ValueError(f"no template for method {method!r}; templates: {sorted(TEMPLATES)} and 'mc'")
    data, mc = samples["data"], samples.get("mc")
    if mc is None and method != "generate":
        raise ValueError(
            f"{method!r} needs a background simulation (input.mc); without one only 'generate' (CATHODE's "
            "way: the SR data's own contexts), 'ideal' and 'supervised' run"
        )
    maker = TEMPLATES[method](features=list(features), context=regions.context, seed=seed, **(settings or {}))
    data_cr = data[regions.control_region(data)]
    if "label" in data_cr and (data_cr["label"] == 1).any():
        log.warning(
            "%s: %d CR data events are labelled signal (it leaks into the CR)",
            method,
            int((data_cr["label"] == 1).sum()),
        )
    return maker.fit(data_cr, mc, None if mc is None else mc[regions.control_region(mc)])


def context_source(samples: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The events whose contexts a template is built at: the simulation, or without one the data."""
    mc = samples.get("mc")
    return samples["data"] if mc is None else mc


def apply_template(
    maker: Any, mc_part: pd.DataFrame, features: Sequence[str], context: Sequence[str]
) -> tuple[pd.DataFrame, np.ndarray]:
    """(table of features and context, event weights) predicted for ``mc_part`` by a :func:`fit_template`
    result (``None``: the MC unchanged)."""
    mc_part = mc_part.reset_index(drop=True)
    if maker is None:
        return mc_part[list(features) + list(context)], np.ones(len(mc_part))
    return maker.template(mc_part)


def make_template(
    method: str,
    samples: dict[str, pd.DataFrame],
    *,
    regions: ContextRegions,
    features: Sequence[str],
    **fit: Any,
) -> tuple[pd.DataFrame, np.ndarray]:
    """The SR background template of ``method`` (``reweight``, ``generate``, ``morph``, or ``mc``: the SR
    MC unchanged) from ``samples["data"]`` (CR part) and ``samples["mc"]``: (table of features and
    context, event weights). ``fit``: ``seed`` and ``settings`` of :func:`fit_template`."""
    maker = fit_template(method, samples, regions=regions, features=features, **fit)
    source = context_source(samples)
    return apply_template(maker, source[regions.signal_region(source)], features, regions.context)


def ks_test(
    a: np.ndarray, b: np.ndarray, wa: np.ndarray | None = None, wb: np.ndarray | None = None
) -> dict[str, float]:
    """Weighted two-sample KS distance and its asymptotic p-value, with the Kish effective sizes of the
    weighted samples (a template of weighted events counts for fewer events than it holds)."""
    from scipy.special import kolmogorov

    from radar.analysis.metrics import effective_size, weighted_ks

    d = weighted_ks(a, b, wa, wb)
    na, nb = effective_size(wa, len(a)), effective_size(wb, len(b))
    n = na * nb / (na + nb) if na + nb > 0 else 0.0
    return {"ks": d, "p_value": float(kolmogorov(math.sqrt(n) * d)) if n > 0 else float("nan")}


def closure_check(
    maker: Any,
    samples: dict[str, pd.DataFrame],
    *,
    regions: ContextRegions,
    features: Sequence[str],
) -> dict[str, dict[str, Any]]:
    """The closure of a fitted template (:func:`fit_template`) on background-only data, per region:
    ``cr`` — the method applied to the CR MC against the CR data (what it was trained to reproduce);
    ``sr`` — the SR template against the true SR background (``samples["truth"]``). For each: the
    predicted table and weights, the reference table and the weighted KS distance and p-value of every
    feature and context variable."""
    variables = list(features) + regions.context
    data, mc, truth = samples["data"], context_source(samples), samples["truth"]
    out: dict[str, dict[str, Any]] = {}
    for region, mask_of, reference in (
        ("cr", regions.control_region, data[regions.control_region(data)]),
        ("sr", regions.signal_region, truth[regions.signal_region(truth)]),
    ):
        if "label" in reference and (reference["label"] == 1).any():
            raise ValueError(f"closure_check: the {region.upper()} reference holds signal events")
        table, w = apply_template(maker, mc[mask_of(mc)], features, regions.context)
        out[region] = {
            "template": table,
            "weights": w,
            "reference": reference.reset_index(drop=True),
            "ks": {v: ks_test(table[v].to_numpy(), reference[v].to_numpy(), w, None) for v in variables},
        }
    return out


# -- the chain: template, CWoLa classifier, metrics, null check -----------------------------------------
def _passing_fraction(passes: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Weighted fraction of template events passing a cut and its statistical variance (Kish)."""
    total = w.sum()
    frac = w[passes].sum() / total
    var = (w[passes] ** 2).sum() / total**2 + frac**2 * (w**2).sum() / total**2
    if not passes.any():  # no template event passes: its estimate 0 carries the error of one event
        var = (w.mean() / total) ** 2
    return float(frac), float(var)


def cut_excess(
    scores_data: np.ndarray,
    scores_template: np.ndarray,
    w_template: np.ndarray,
    efficiency: float,
    members: np.ndarray | None = None,
    groups: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, float]:
    """The null check of a trained chain: cut the out-of-fold scores of the SR data at their top
    ``efficiency`` quantile; the template (normalised to the SR data count) predicts how many pass.
    Z = (n_obs - n_exp) / sqrt(n_exp + σ_template²); near N(0, 1) on background-only data, large with a
    signal the classifier found. ``members``: which of several independently trained templates (e.g.
    flows on bootstrap resamples) each template event comes from; the spread of their predictions is the
    template's own fit error, added to σ_template² (``sigma_fit``). ``groups``: (group of each data event,
    group of each template event) — scores made by different classifiers (k folds) are compared within a
    group only: n_exp = Σ_g n_data,g × (template fraction passing in g), as each classifier has its own
    calibration."""
    scores_data, scores_template = np.asarray(scores_data), np.asarray(scores_template)
    w = np.asarray(w_template, dtype="float64")
    data_groups, template_groups = (
        (np.zeros(len(scores_data), int), np.zeros(len(w), int))
        if groups is None
        else map(np.asarray, groups)
    )
    threshold = np.quantile(scores_data, 1.0 - efficiency)
    # score > threshold; where the top scores tie (a boosted-tree classifier's scores are discrete) and
    # nothing would pass, score >= threshold: the same rule for data and template either way
    cut = np.greater if (scores_data > threshold).any() else np.greater_equal
    n_obs = float(cut(scores_data, threshold).sum())
    passes = cut(scores_template, threshold)

    def expected(select: np.ndarray) -> tuple[float, float]:
        n_exp, var = 0.0, 0.0
        for g in np.unique(data_groups):
            mine = select & (template_groups == g)
            if not mine.any():
                raise ValueError(f"cut_excess: no template events of group {g}")
            frac, var_frac = _passing_fraction(passes[mine], w[mine])
            n_g = float((data_groups == g).sum())
            n_exp, var = n_exp + n_g * frac, var + n_g**2 * var_frac
        return n_exp, var

    n_exp, var_template = expected(np.ones(len(w), bool))
    sigma2 = n_exp + var_template
    out = {"efficiency": float(efficiency), "n_obs": n_obs, "n_exp": float(n_exp)}
    if members is not None and len(np.unique(members)) > 1:
        out["sigma_fit"] = float(np.std([expected(members == m)[0] for m in np.unique(members)], ddof=1))
        sigma2 += out["sigma_fit"] ** 2
    out["z"] = float((n_obs - n_exp) / math.sqrt(sigma2)) if sigma2 > 0 else float("nan")
    return out


def run_method(
    method: str,
    samples: dict[str, pd.DataFrame],
    *,
    regions: ContextRegions,
    features: Sequence[str],
    classify_on: Sequence[str] | None = None,
    seed: int = 0,
    k_folds: int = 5,
    classifier: str = "hgb",
    classifier_settings: dict[str, Any] | None = None,
    template_settings: dict[str, Any] | None = None,
    n_test_background: int | None = None,
    rejection: float = 1000.0,
    efficiencies: Sequence[float] = (0.1, 0.01),
    template: tuple[pd.DataFrame, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Train ``method`` on ``samples`` (``data``, ``mc``, ``truth``, ``signal`` as :func:`toy_samples`
    gives) and its k-fold CWoLa classifier (template vs SR data); return metrics.

    ``classify_on``: the classifier's inputs (default: ``features`` plus the context variables). The test
    set: the SR part of ``truth`` not used by ``ideal`` (its second half) and the SR part of the second
    half of ``signal`` (the first half trains ``supervised``). Returned: ``test`` (AUC, max SIC, SIC at
    ``rejection``), ``template_auc`` (template vs the true SR background, a fresh classifier, 0.5 for
    a perfect template), ``cut_excess`` per efficiency (the null check), counts and seconds.

    ``template``: an already made (table, weights) of ``method`` (:func:`make_template`); the CR holds
    no injected signal when the signal lives in the SR, so one template serves every injection."""
    import time

    from radar.analysis.cwola import kfold_scores
    from radar.analysis.metrics import auc, classifier_metrics, effective_size

    if method not in METHODS:
        raise ValueError(f"unknown non-resonant method {method!r}; expected one of {METHODS}")
    start = time.perf_counter()
    features = list(features)
    context = regions.context
    cols = list(classify_on) if classify_on is not None else features + context
    settings = dict(classifier_settings or {})
    data, truth, signal = (samples[k] for k in ("data", "truth", "signal"))
    sr_data = data[regions.signal_region(data)].reset_index(drop=True)
    truth_sr = truth[regions.signal_region(truth)].reset_index(drop=True)
    half = len(truth_sr) // 2
    ideal_pool, test_bkg = truth_sr.iloc[:half], truth_sr.iloc[half:]
    if n_test_background is not None:
        test_bkg = test_bkg.iloc[:n_test_background]
    sig_sr = signal[regions.signal_region(signal)].reset_index(drop=True)
    sig_half = len(sig_sr) // 2
    sig_train, sig_test = sig_sr.iloc[:sig_half], sig_sr.iloc[sig_half:]
    test = pd.concat([test_bkg, sig_test], ignore_index=True)
    X_test, y_test = feature_matrix(test, cols, "test set"), test["label"].to_numpy()

    if method == "supervised":
        X0, w0 = feature_matrix(ideal_pool, cols, "supervised background"), np.ones(len(ideal_pool))
        X1 = feature_matrix(sig_train, cols, "supervised signal")
    elif method == "ideal":
        X0, w0 = feature_matrix(ideal_pool, cols, "ideal template"), np.ones(len(ideal_pool))
        X1 = feature_matrix(sr_data, cols, "SR data")
    else:
        if template is None:
            template = make_template(
                method, samples, regions=regions, features=features, seed=seed, settings=template_settings
            )
        table, w0 = template
        X0 = feature_matrix(table, cols, f"{method} template")
        X1 = feature_matrix(sr_data, cols, "SR data")
    result = kfold_scores(
        X0, X1, w0, None, classifier=classifier, k_folds=k_folds, seed=seed, X_mean=X_test, **settings
    )
    out: dict[str, Any] = {
        "method": method,
        "seed": seed,
        "n_sr_data": len(sr_data),
        "n_sr_signal": int((sr_data["label"] == 1).sum()),
        "n_template": len(X0),
        "n_template_effective": effective_size(w0, len(w0)),
        "test": classifier_metrics(y_test, result.scores_mean, rejection=rejection),
    }
    if method != "supervised":
        members = (
            template[0]["_member"].to_numpy() if template is not None and "_member" in template[0] else None
        )
        out["cut_excess"] = [
            cut_excess(result.scores1, result.scores0, w0, eff, members) for eff in efficiencies
        ]
        # template vs the true SR background (test half), by a fresh k-fold classifier
        X_truth = feature_matrix(test_bkg, cols, "true SR background")
        closure = kfold_scores(
            X0, X_truth, w0, None, classifier=classifier, k_folds=k_folds, seed=seed + 1, **settings
        )
        y = np.concatenate([np.zeros(len(X0)), np.ones(len(X_truth))])
        s = np.concatenate([closure.scores0, closure.scores1])
        out["template_auc"] = auc(y, s, np.concatenate([w0 / w0.mean(), np.ones(len(X_truth))]))
    out["seconds"] = time.perf_counter() - start
    log.info(
        "non-resonant %s seed %d: test AUC %.3f, max SIC %.2f (%.1f s)",
        method,
        seed,
        out["test"]["auc"],
        out["test"]["max_sic"],
        out["seconds"],
    )
    return out


TEMPLATE_METHODS = ("mc", "reweight", "generate", "morph")


def _band(values: Sequence[float], digits: int = 2) -> str:
    from radar.analysis.metrics import summarise

    s = summarise(values)
    return "–" if not s["n"] else f"{s['median']:.{digits}f} [{s['p16']:.{digits}f}, {s['p84']:.{digits}f}]"


def summary_markdown(
    rows: Sequence[dict],
    methods: Sequence[str],
    key: str,
    values: Sequence[Any],
    label: str,
    rejection: float,
) -> str:
    """Markdown tables of :func:`run_method` rows: max SIC and SIC at ``rejection`` per method and value of
    ``key`` (the injection), the significance after the best cut (max SIC × S/√B in the SR), and on the
    rows without signal in the SR the closure (template vs truth AUC) and the null check (cut-excess Z);
    median [16, 84 %] over seeds."""

    def pick(method: str, value: Any) -> list[dict]:
        return [r for r in rows if r["method"] == method and r[key] == value]

    header = "| method | " + " | ".join(f"{label} {v:g}" for v in values) + " |"
    rule = "|---" * (len(values) + 1) + "|"
    lines: list[str] = []
    for metric, title in (("max_sic", "Max SIC"), ("sic_at_rejection", f"SIC at rejection {rejection:g}")):
        lines += [f"## {title}", "", header, rule]
        for method in methods:
            cells = [_band([r["test"][metric] for r in pick(method, v)]) for v in values]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")

    def s_over_sqrt_b(r: dict) -> float:
        return r["n_sr_signal"] / math.sqrt(max(r["n_sr_data"] - r["n_sr_signal"], 1))

    def s_over_b(r: dict) -> float:
        return r["n_sr_signal"] / max(r["n_sr_data"] - r["n_sr_signal"], 1)

    lines += [
        "## Significance: S/√B in the SR before, max SIC × S/√B after the best cut",
        "",
        header,
        rule,
        "| S/B in the SR (%) | "
        + " | ".join(_band([100 * s_over_b(r) for r in rows if r[key] == v]) for v in values)
        + " |",
        "| S/√B before | "
        + " | ".join(_band([s_over_sqrt_b(r) for r in rows if r[key] == v]) for v in values)
        + " |",
    ]
    for method in methods:
        cells = [_band([r["test"]["max_sic"] * s_over_sqrt_b(r) for r in pick(method, v)]) for v in values]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    null = [r for r in rows if r["n_sr_signal"] == 0 and "cut_excess" in r]
    if null:
        effs = [c["efficiency"] for c in null[0]["cut_excess"]]
        lines += [
            "",
            "## No signal in the SR: closure and the null check of the trained chain",
            "",
            "| method | template vs truth AUC | "
            + " | ".join(f"cut-excess Z, top {100 * e:g} %" for e in effs)
            + " | abs(Z) > 3 |",
            "|---" * (len(effs) + 3) + "|",
        ]
        for method in methods:
            mine = [r for r in null if r["method"] == method]
            if not mine:
                continue
            zs = [[r["cut_excess"][j]["z"] for r in mine] for j in range(len(effs))]
            n_big = sum(abs(z) > 3 for column in zs for z in column)
            lines.append(
                f"| {method} | {_band([r['template_auc'] for r in mine], 3)} | "
                + " | ".join(_band(column) for column in zs)
                + f" | {n_big} of {sum(len(c) for c in zs)} |"
            )
    lines += ["", "## Wall time per unit (s, median; templates fitted once per seed where the CR allows)", ""]
    lines += ["| method | template fit s | classifier and metrics s |", "|---|---|---|"]
    for method in methods:
        mine = [r["seconds"] for r in rows if r["method"] == method]
        fits = [r["template_seconds"] for r in rows if r["method"] == method and r.get("template_seconds")]
        if mine:
            fit = f"{np.median(fits):.1f}" if fits else "–"
            lines.append(f"| {method} | {fit} | {np.median(mine):.1f} |")
    return "\n".join(lines) + "\n"

"""Checks of a search config before anything trains: the config alone (:func:`validate_config`: method
names, variants, regions, the nested classifier / flow / method settings against their constructors), and
the loaded tables (:func:`validate_data`). :func:`load_config` reads and validates a YAML config.

Kept apart from :mod:`radar.analysis.config` (the schema, which imports nothing of radar's analysis) so
that nothing imports in a circle: the checks need the method registry, and the methods need the schema.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any

import numpy as np

import radar.analysis.methods  # noqa: F401  (registers the built-in methods)
from radar.analysis.config import SearchConfig, config_from_dict
from radar.analysis.methods import SCORE_COMBINATIONS, combination_members
from radar.analysis.units import available_methods, method_info, regions_for

log = logging.getLogger(__name__)


def load_config(path: str | Path) -> SearchConfig:
    """Read and validate (without data) a search config from YAML."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such config file")
    with open(path) as handle:
        try:
            values = yaml.safe_load(handle) or {}
        except yaml.YAMLError as error:
            raise ValueError(f"{path}: not valid YAML ({error})") from error
    try:
        cfg = config_from_dict(values, base_dir=path.parent)
        validate_config(cfg)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from error
    return cfg


def validate_config(cfg: SearchConfig) -> None:
    """Checks that need no data. Raises ValueError naming the problem."""
    from radar.analysis.regions import search_regions
    from radar.models.classifiers import available as classifiers_available
    from radar.processors.features import FEATURE_COLUMNS

    if not cfg.input.data:
        raise ValueError("input.data: give at least one data/background feature table")
    for name in ("data",):
        for p in cfg.input.data:
            if not cfg.path(p).exists():
                raise FileNotFoundError(f"input.{name}: {cfg.path(p)} does not exist")
    for name in ("signal", "simulation", "test", "iad_template"):
        value = getattr(cfg.input, name)
        if value is not None and not cfg.path(value).exists():
            raise FileNotFoundError(f"input.{name}: {cfg.path(value)} does not exist")
    for name, variant in cfg.variants.items():
        if not isinstance(variant, dict) or set(variant) - {"method", "settings"} or "method" not in variant:
            raise ValueError(
                f"variants.{name}: must be a mapping {{method: NAME, settings: {{...}}}}, got {variant}"
            )
        if name in available_methods():
            raise ValueError(f"variants.{name}: the name of a registered method; choose another name")
        if variant["method"] not in available_methods() or variant["method"] == "combined_scores":
            raise ValueError(
                f"variants.{name}: method {variant['method']!r} is not a trained method; "
                f"available: {[m for m in available_methods() if m != 'combined_scores']}"
            )
        if not isinstance(variant.get("settings", {}), dict):
            raise ValueError(f"variants.{name}.settings must be a mapping, got {variant['settings']!r}")
    unknown = [m for m in cfg.methods if m not in available_methods() and m not in cfg.variants]
    if unknown:
        raise ValueError(
            f"methods: unknown {unknown}; available: {available_methods()} "
            f"and the variants {sorted(cfg.variants)}"
        )
    unknown = sorted(set(cfg.method_settings) - set(available_methods()))
    if unknown:
        raise ValueError(f"method_settings: unknown methods {unknown}; available: {available_methods()}")
    unknown = sorted(set(cfg.replicas) - {"*", *available_methods(), *cfg.variants})
    if unknown:
        raise ValueError(
            f"replicas: unknown methods {unknown}; available: {available_methods()}, the variants "
            f"{sorted(cfg.variants)} and '*' (every method)"
        )
    combos = [m for m in cfg.replicas if m in SCORE_COMBINATIONS and cfg.replicas[m] > 1]
    if combos:
        raise ValueError(
            f"replicas: {combos} combine other methods' scores after the units; give the replicas to "
            "their members"
        )
    if "combined_scores" in cfg.methods:
        members = combination_members(cfg)
        missing = [m for m in members if m not in cfg.methods]
        if len(members) < 2 or missing:
            raise ValueError(
                f"combined_scores: needs >= 2 member methods in 'methods' (members {members}, "
                f"not run: {missing})"
            )
    needs_simulation = [m for m in cfg.methods if method_info(cfg.base_method(m)).needs_simulation]
    if cfg.input.simulation_transform != "none" and cfg.input.simulation is None:
        raise ValueError("input.simulation_transform: there is no input.simulation to transform")
    if needs_simulation and cfg.input.simulation is None:
        raise ValueError(f"methods {needs_simulation} need a simulation sample: set input.simulation")
    if cfg.classifier.name not in classifiers_available():
        raise ValueError(
            f"classifier.name {cfg.classifier.name!r} unknown; available: {classifiers_available()}"
        )
    # the resonant search never classifies on m_JJ (it would learn the SR); with context regions every
    # feature-table column may be a classifier input, the context variables too
    refused = ("label", "weight") if not cfg.regions.resonant else ("mjj", "label", "weight")
    bad = [f for f in cfg.features if f not in FEATURE_COLUMNS or f in refused]
    if bad or not cfg.features:
        usable = [c for c in FEATURE_COLUMNS if c not in refused]
        raise ValueError(f"features: {bad or 'empty'} not usable; choose from {usable}")
    search_regions(cfg.regions)  # raises on an SR outside mjj_range (context cuts: checked by the config)
    if not cfg.regions.resonant:
        unknown = [v for v in [*cfg.regions.context, *(cfg.regions.range or {})] if v not in FEATURE_COLUMNS]
        if unknown:
            raise ValueError(f"regions: context variables {unknown} are no feature-table columns")
        resonant_only = [m for m in cfg.methods if not method_info(cfg.base_method(m)).context_regions]
        if resonant_only:
            runnable = [m for m in available_methods() if method_info(m).context_regions]
            raise ValueError(
                f"methods {resonant_only} need an m_JJ window with sidebands; with regions.context "
                f"(the SR as cuts on {list(cfg.regions.context)}) the methods are {runnable}"
            )
        if cfg.warm_start is not None:
            raise ValueError("warm_start: the flows of an m_JJ scan; not with regions.context")
    check_settings(cfg)
    if any(i is not None for i in cfg.injections) and not cfg.input.signal:
        raise ValueError("injections given but input.signal (the signal pool) is not set")
    if cfg.compare_auc_repeats == 1:
        raise ValueError(f"compare_auc_repeats must be 0 (off) or >= 2, got {cfg.compare_auc_repeats}")
    if cfg.warm_start is not None:
        check_warm_start(cfg)


def check_warm_start(cfg: SearchConfig) -> None:
    """``warm_start.run`` must be a run directory whose m_JJ range is disjoint from this run's: a flow
    trained on events of this run's range would carry them (signal included) into its templates."""
    import yaml

    from radar.analysis.config import WARM_START_METHODS

    source = cfg.path(cfg.warm_start.run)
    saved = source / "config.yaml"
    if not saved.is_file():
        raise FileNotFoundError(f"warm_start.run: {source} is not a run directory (no config.yaml)")
    try:
        other = yaml.safe_load(saved.read_text()) or {}
        lo, hi = (float(v) for v in other["regions"]["mjj_range"])
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"warm_start.run: {saved}: no regions.mjj_range ({error})") from None
    own_lo, own_hi = (float(v) for v in cfg.regions.mjj_range)
    if lo < own_hi and own_lo < hi:
        raise ValueError(
            f"warm_start.run: {source} trained on m_JJ {lo:g}-{hi:g} GeV, which overlaps this run's "
            f"{own_lo:g}-{own_hi:g} GeV: its flows saw events of this run and would carry them into its "
            "templates; start from a run with a disjoint m_JJ range"
        )
    if not other.get("save_models", True):
        raise ValueError(f"warm_start.run: {source} did not save its models (save_models: false)")
    if not any(cfg.base_method(m) in WARM_START_METHODS for m in cfg.methods):
        log.warning("warm_start: none of the methods %s trains a flow that can be warm-started", cfg.methods)


#: keys radar sets itself when it builds a method, a flow or a classifier (a config must not set them)
_SET_BY_RADAR = {"self", "features", "seed", "n_features"}


def _accepted(target: Any, *, extra: Any = None) -> set[str]:
    """Keyword arguments a constructor accepts (those of ``extra`` too when it takes ``**kwargs`` that it
    passes on, as CATHODE and ANODE pass theirs to the flow)."""
    params = inspect.signature(target).parameters
    names = {n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    if extra is not None and any(p.kind == p.VAR_KEYWORD for p in params.values()):
        names |= _accepted(extra)
    return names - _SET_BY_RADAR


def _check_keys(where: str, settings: Any, accepted: set[str]) -> None:
    if not isinstance(settings, dict):
        raise ValueError(f"{where}: must be a mapping, got {settings!r}")
    unknown = sorted(set(settings) - accepted)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; accepted: {sorted(accepted)}")


def _method_accepts(method: str) -> set[str] | None:
    """Settings keys of a registered method (None: any, e.g. the score combination's own keys)."""
    from radar.analysis.context_methods import CONTEXT_TEMPLATE_METHODS
    from radar.models import densities, templates
    from radar.models.flows import ConditionalFlow

    if method in templates.available():
        keys = _accepted(templates.get(method).__init__, extra=ConditionalFlow.__init__)
        return keys | ({"reuse_members"} if method == "combined_events" else set())
    if method in densities.available():
        return _accepted(densities.get(method).__init__, extra=ConditionalFlow.__init__)
    if method == "lacathode":
        return _accepted(ConditionalFlow.__init__)
    if method == "combined_scores":
        return {"members"}
    if method in CONTEXT_TEMPLATE_METHODS:
        from dataclasses import fields

        from radar.analysis.nonresonant import TEMPLATES

        # the maker's own fields; features, context and seed come from the search
        return (
            set()
            if method == "mc"
            else {f.name for f in fields(TEMPLATES[method])} - {"features", "context", "seed"}
        )
    if method in ("autoencoder", "nae"):
        from radar.models.autoencoder import AutoencoderSettings

        return (set(AutoencoderSettings.__dataclass_fields__) - {"nae", "seed"}) | {"train_on"}
    return set()


def check_settings(cfg: SearchConfig) -> None:
    """The nested settings against the constructors they go to, before anything trains: the classifier's
    ``classifier.settings``, the flow's ``flow``, each method's ``method_settings`` and the variants'
    ``settings``. Raises ValueError naming the key path and the accepted keys."""
    from radar.models.classifiers import get_classifier
    from radar.models.flows import ConditionalFlow

    classifier = type(get_classifier(cfg.classifier.name))
    _check_keys("classifier.settings", cfg.classifier.settings, _accepted(classifier.__init__))
    _check_keys("flow", cfg.flow, _accepted(ConditionalFlow.__init__))
    for method, settings in cfg.method_settings.items():
        accepted = _method_accepts(method)
        if not method_info(method).settings:
            raise ValueError(f"method_settings.{method}: {method} takes no settings")
        _check_keys(f"method_settings.{method}", settings, accepted)
    for name, variant in cfg.variants.items():
        accepted = _method_accepts(str(variant.get("method")))
        _check_keys(f"variants.{name}.settings", variant.get("settings") or {}, accepted)


def validate_data(cfg: SearchConfig, data, signal=None, test=None) -> None:
    """Checks on the loaded tables (GeV): SR within the data's m_JJ coverage, enough events in the SR
    and in the sidebands each method needs, finite features. Raises ValueError naming the problem."""
    from radar.analysis.datasets import check_features

    if "mjj" not in data:
        raise ValueError(
            "input.data: no mjj column (every search writes m_JJ with its scores, for the bump hunt)"
        )
    mjj = data["mjj"].to_numpy()
    lo, hi = float(np.nanmin(mjj)), float(np.nanmax(mjj))
    if cfg.regions.resonant:
        sr = cfg.regions.sr
        slack = 0.05 * (sr[1] - sr[0])  # SR-only inputs fill the SR up to (not exactly at) its edges
        if sr[0] < lo - slack or sr[1] > hi + slack:
            raise ValueError(
                f"signal region {sr} GeV lies outside the data's m_JJ range {lo:.0f}-{hi:.0f} GeV"
            )
    for method in cfg.methods:
        regions = regions_for(cfg, method)
        in_range = regions.range_mask(data)
        n_sr = int(regions.sr_mask(data).sum())
        if n_sr < cfg.min_events:
            raise ValueError(
                f"method {method}: only {n_sr} data events in the {regions.describe()} "
                f"(min_events = {cfg.min_events})"
            )
        if method_info(cfg.base_method(method)).sidebands != "none":  # learns from sidebands
            n_sb = int(regions.cr_mask(data).sum())
            if n_sb < cfg.min_events:
                where = f"sidebands {regions.sidebands} GeV" if cfg.regions.resonant else "control region"
                raise ValueError(
                    f"method {method}: only {n_sb} data events in the {where} (min_events = {cfg.min_events})"
                )
        check_features(data[in_range], cfg.features, "input.data (in the analysed range)")
    if signal is not None:
        check_features(signal, cfg.features, "input.signal")
    if test is not None:
        check_features(test, cfg.features, "input.test")
    check_weights(cfg, {"input.data": data, "input.signal": signal, "input.test": test})


def check_weights(cfg: SearchConfig, tables: dict) -> None:
    """Event weights (the ``weight`` column) must be finite and > 0; non-unit weights are refused for a
    method whose training cannot use them (rather than silently ignored). Raises ValueError naming the
    input, the rows and the method."""
    from radar.models.templates import table_weights

    weighted = [
        what for what, table in tables.items() if table is not None and table_weights(table, what) is not None
    ]
    if not weighted:
        return
    refused = [m for m in cfg.methods if not method_info(cfg.base_method(m)).event_weights]
    if refused:
        raise ValueError(
            f"{', '.join(weighted)} carry non-unit event weights, which methods {refused} cannot use yet "
            f"(their trainings are unweighted); the weighted methods are "
            f"{sorted(m for m in available_methods() if method_info(m).event_weights)}"
        )
    log.info("event weights: %s carry non-unit weights; every training and spectrum uses them", weighted)

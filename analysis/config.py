"""The typed configuration of one search (``radar search CONFIG.yaml``).

A YAML file maps onto :class:`SearchConfig`; unknown keys are errors (typos never pass silently).
Relative input paths are resolved against the YAML file's directory. :func:`validate_config` checks
what needs no data (method names, regions, numbers); :func:`validate_data` checks the loaded tables
(SR inside the data's m_JJ range, enough events per region, NaN features) — both run before any
training starts. The resolved config (:meth:`SearchConfig.to_dict`) is saved with every run.

Example::

    name: lhco_like
    output: runs/lhco_like
    input:
      data: [bkg.parquet]            # background (or real data); labels used only for evaluation
      signal: sig.parquet            # pool for signal injection (optional)
      test: null                     # labelled SR test set; default: held out from data and signal
    regions: {sr: [3300, 3700], mjj_range: [1500, 5500], cwola_sideband_width: 200}
    features: [mj1, delta_mj, tau21_j1, tau21_j2]
    methods: [cathode, cwola_hunting, anode, iad, supervised]
    injections: [0, 1000]            # n_sig injected in total (or S/B in the SR with injection_mode: s_over_b)
    seeds: [0, 1, 2]
    classifier: {name: mlp, settings: {epochs: 100, batch_size: 128}}
    flow: {epochs: 100, n_blocks: 15, hidden: 128}
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from radar.processors.features import LHCO_FEATURES

log = logging.getLogger(__name__)


@dataclass
class InputConfig:
    """Input files (feature tables: parquet, LHCO feature HDF5 or CATHODE .npy; GeV)."""

    data: list[str] = field(default_factory=list)
    signal: str | None = None
    simulation: str | None = None
    test: str | None = None
    iad_template: str | None = None
    #: with an injection: drop label==1 events from ``data`` first (R&D data with signal inside)
    drop_data_signal: bool = True


@dataclass
class RegionsConfig:
    sr: tuple[float, float] = (3300.0, 3700.0)
    mjj_range: tuple[float, float] = (1500.0, 5500.0)
    #: None: SB = all of mjj_range outside the SR (CATHODE, ANODE); CWoLa Hunting uses the narrow one
    sideband_width: float | None = None
    cwola_sideband_width: float | None = 200.0


@dataclass
class ClassifierConfig:
    name: str = "mlp"
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExecutionConfig:
    #: "dask" (embedded LocalCluster or ``scheduler``) or "sync" (in this process, one unit after another)
    mode: str = "dask"
    workers: int | None = None
    scheduler: str | None = None
    processes: bool = True
    threads_per_task: int = 1
    device: str = "auto"


@dataclass
class SearchConfig:
    input: InputConfig = field(default_factory=InputConfig)
    name: str = "search"
    output: str = "runs/search"
    regions: RegionsConfig = field(default_factory=RegionsConfig)
    features: list[str] = field(default_factory=lambda: list(LHCO_FEATURES))
    methods: list[str] = field(default_factory=lambda: ["iad"])
    #: values of n_sig (total injected) or S/B in the SR; ``null`` = use the data as it is
    injections: list[float | None] = field(default_factory=lambda: [None])
    injection_mode: str = "n_sig"
    seeds: list[int] = field(default_factory=lambda: [0])
    data_seed: int = 0
    #: without ``input.test``: fraction of data background held out (all m_JJ; its SR part is the test set)
    test_fraction: float = 0.2
    #: split of the signal pool: injection / test (when no test file) / supervised training
    signal_split: tuple[float, float, float] = (0.5, 0.25, 0.25)
    k_folds: int = 5
    #: folds of the ANODE / R-ANODE density fits (each fold's events are scored by flows fitted on the
    #: others); None: ``k_folds``. Every fold costs one set of flow trainings.
    density_folds: int | None = None
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    flow: dict[str, Any] = field(default_factory=dict)
    #: per-method constructor settings, e.g. {salad: {clip_quantile: 0.999}, ranode: {w: null}}
    method_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: named variants of a method, usable in ``methods`` next to it, e.g. an R-ANODE scan of fixed w:
    #: {ranode_w0p01: {method: ranode, settings: {w: 0.01}}}; settings go over method_settings[method]
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    cathode_oversampling: float = 4.0
    min_events: int = 100
    fpr_floor_rel_error: float = 0.4
    rejection: float = 1000.0
    save_models: bool = True
    #: after the units: the comparison studies (analysis.compare.compare_run) into RUN/comparison/
    compare: bool = True
    #: repeats of the zero-injection template-vs-truth AUC study per template and seed (truth-vs-truth
    #: spread: 2x this many); 0 switches that study off
    compare_auc_repeats: int = 3
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    #: directory of the YAML file (paths are relative to it); not part of the saved config
    base_dir: str = "."

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.pop("base_dir")
        return out

    def digest(self) -> str:
        """sha256 of the resolved config minus execution settings (which do not change results)."""
        d = self.to_dict()
        d.pop("execution")
        d.pop("output")
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()

    #: fields that list the units or only touch what happens after them: a run may be extended in them
    UNIT_LIST_FIELDS = ("name", "methods", "injections", "seeds", "compare", "compare_auc_repeats", "save_models")

    def unit_digest(self) -> str:
        """sha256 of what fixes the result of any one (method, injection, seed) unit: :meth:`digest` without
        the lists of methods, injections and seeds (and the after-the-units settings). A run directory can
        be resumed with more methods, injections or seeds as long as this is unchanged."""
        d = self.to_dict()
        for key in ("execution", "output", *self.UNIT_LIST_FIELDS):
            d.pop(key)
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()

    def path(self, value: str | None) -> Path | None:
        """``value`` resolved against the config file's directory."""
        if value is None:
            return None
        p = Path(value).expanduser()
        return p if p.is_absolute() else (Path(self.base_dir) / p).resolve()

    @property
    def output_dir(self) -> Path:
        return self.path(self.output)  # type: ignore[return-value]

    def base_method(self, method: str) -> str:
        """The registered method behind ``method`` (itself, or the ``method`` of a variant)."""
        variant = self.variants.get(method)
        return str(variant["method"]) if isinstance(variant, dict) and "method" in variant else method

    def regions_for(self, method: str):
        from radar.analysis.regions import Regions

        method = self.base_method(method)
        width = self.regions.cwola_sideband_width if method == "cwola_hunting" else self.regions.sideband_width
        return Regions(sr=tuple(self.regions.sr), mjj_range=tuple(self.regions.mjj_range), sideband_width=width)


def _build(cls, values: Any, where: str):
    if values is None:
        return cls()
    if not isinstance(values, dict):
        raise ValueError(f"config section {where!r} must be a mapping, got {type(values).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"config section {where!r}: unknown keys {unknown}; allowed: {sorted(names)}")
    return cls(**values)


def config_from_dict(values: dict[str, Any], base_dir: str | Path = ".") -> SearchConfig:
    """Build a :class:`SearchConfig` from a mapping (as read from YAML); unknown keys raise ValueError."""
    values = dict(values or {})
    names = {f.name for f in dataclasses.fields(SearchConfig)} - {"base_dir"}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"config: unknown keys {unknown}; allowed: {sorted(names)}")
    inp = dict(values.pop("input", None) or {})
    if isinstance(inp.get("data"), str):
        inp["data"] = [inp["data"]]
    cfg = SearchConfig(
        input=_build(InputConfig, inp, "input"),
        regions=_build(RegionsConfig, values.pop("regions", None), "regions"),
        classifier=_build(ClassifierConfig, values.pop("classifier", None), "classifier"),
        execution=_build(ExecutionConfig, values.pop("execution", None), "execution"),
        base_dir=str(Path(base_dir).resolve()),
        **values,
    )
    cfg.regions.sr = tuple(float(v) for v in cfg.regions.sr)
    cfg.regions.mjj_range = tuple(float(v) for v in cfg.regions.mjj_range)
    cfg.signal_split = tuple(float(v) for v in cfg.signal_split)
    cfg.features = list(cfg.features)
    cfg.methods = list(cfg.methods)
    cfg.seeds = [int(s) for s in cfg.seeds]
    if not isinstance(cfg.injections, list):
        cfg.injections = [cfg.injections]
    return cfg


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
    from radar.analysis.regions import Regions
    from radar.analysis.search import available_methods
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
            raise ValueError(f"variants.{name}: must be a mapping {{method: NAME, settings: {{...}}}}, got {variant}")
        if name in available_methods():
            raise ValueError(f"variants.{name}: the name of a registered method; choose another name")
        if variant["method"] not in available_methods() or variant["method"] == "combined_scores":
            raise ValueError(f"variants.{name}: method {variant['method']!r} is not a trained method; "
                             f"available: {[m for m in available_methods() if m != 'combined_scores']}")
        if not isinstance(variant.get("settings", {}), dict):
            raise ValueError(f"variants.{name}.settings must be a mapping, got {variant['settings']!r}")
    unknown = [m for m in cfg.methods if m not in available_methods() and m not in cfg.variants]
    if unknown:
        raise ValueError(f"methods: unknown {unknown}; available: {available_methods()} "
                         f"and the variants {sorted(cfg.variants)}")
    if not cfg.methods:
        raise ValueError("methods: empty list")
    if len(set(cfg.methods)) != len(cfg.methods):
        raise ValueError(f"methods: duplicates in {cfg.methods}")
    unknown = sorted(set(cfg.method_settings) - set(available_methods()))
    if unknown:
        raise ValueError(f"method_settings: unknown methods {unknown}; available: {available_methods()}")
    if "combined_scores" in cfg.methods:
        from radar.analysis.search import combination_members

        members = combination_members(cfg)
        missing = [m for m in members if m not in cfg.methods]
        if len(members) < 2 or missing:
            raise ValueError(f"combined_scores: needs >= 2 member methods in 'methods' (members {members}, "
                             f"not run: {missing})")
    needs_simulation = [m for m in cfg.methods if cfg.base_method(m) in ("salad", "feta")]
    if needs_simulation and cfg.input.simulation is None:
        raise ValueError(f"methods {needs_simulation} need a simulation sample: set input.simulation")
    if cfg.classifier.name not in classifiers_available():
        raise ValueError(f"classifier.name {cfg.classifier.name!r} unknown; available: {classifiers_available()}")
    bad = [f for f in cfg.features if f not in FEATURE_COLUMNS or f in ("mjj", "label", "weight")]
    if bad or not cfg.features:
        raise ValueError(f"features: {bad or 'empty'} not usable; choose from {list(FEATURE_COLUMNS[1:15])}")
    Regions(sr=tuple(cfg.regions.sr), mjj_range=tuple(cfg.regions.mjj_range),
            sideband_width=cfg.regions.sideband_width)  # raises on SR outside mjj_range
    if cfg.injection_mode not in ("n_sig", "s_over_b"):
        raise ValueError(f"injection_mode must be 'n_sig' or 's_over_b', got {cfg.injection_mode!r}")
    if any(i is not None and (not np.isfinite(float(i)) or float(i) < 0) for i in cfg.injections):
        raise ValueError(f"injections must be >= 0 (or null for the data as is), got {cfg.injections}")
    if any(i is not None for i in cfg.injections) and not cfg.input.signal:
        raise ValueError("injections given but input.signal (the signal pool) is not set")
    if not cfg.seeds or len(set(cfg.seeds)) != len(cfg.seeds):
        raise ValueError(f"seeds: need a non-empty list of distinct integers, got {cfg.seeds}")
    if cfg.k_folds < 2:
        raise ValueError(f"k_folds must be >= 2, got {cfg.k_folds}")
    if cfg.density_folds is not None and int(cfg.density_folds) < 2:
        raise ValueError(f"density_folds must be >= 2 (or null for k_folds), got {cfg.density_folds}")
    if cfg.compare_auc_repeats < 0 or cfg.compare_auc_repeats == 1:
        raise ValueError(f"compare_auc_repeats must be 0 (off) or >= 2, got {cfg.compare_auc_repeats}")
    if not 0 <= cfg.test_fraction < 1:
        raise ValueError(f"test_fraction must be in [0, 1), got {cfg.test_fraction}")
    if len(cfg.signal_split) != 3 or sum(cfg.signal_split) > 1 + 1e-9 or min(cfg.signal_split) < 0:
        raise ValueError(f"signal_split must be 3 fractions summing to <= 1, got {cfg.signal_split}")
    if cfg.cathode_oversampling <= 0:
        raise ValueError(f"cathode_oversampling must be positive, got {cfg.cathode_oversampling}")
    if cfg.execution.mode not in ("dask", "sync"):
        raise ValueError(f"execution.mode must be 'dask' or 'sync', got {cfg.execution.mode!r}")


def validate_data(cfg: SearchConfig, data, signal=None, test=None) -> None:
    """Checks on the loaded tables (GeV): SR within the data's m_JJ coverage, enough events in the SR
    and in the sidebands each method needs, finite features. Raises ValueError naming the problem."""
    from radar.analysis.datasets import check_features

    mjj = data["mjj"].to_numpy()
    lo, hi = float(np.nanmin(mjj)), float(np.nanmax(mjj))
    sr = cfg.regions.sr
    slack = 0.05 * (sr[1] - sr[0])  # SR-only inputs fill the SR up to (not exactly at) its edges
    if sr[0] < lo - slack or sr[1] > hi + slack:
        raise ValueError(f"signal region {sr} GeV lies outside the data's m_JJ range {lo:.0f}-{hi:.0f} GeV")
    for method in cfg.methods:
        regions = cfg.regions_for(method)
        in_range = regions.in_range(mjj)
        n_sr = int(regions.signal_region(mjj).sum())
        if n_sr < cfg.min_events:
            raise ValueError(f"method {method}: only {n_sr} data events in the SR {sr} GeV "
                             f"(min_events = {cfg.min_events})")
        if cfg.base_method(method) not in ("iad", "supervised", "combined_scores"):  # learns from sidebands
            n_sb = int(regions.sideband(mjj).sum())
            if n_sb < cfg.min_events:
                raise ValueError(f"method {method}: only {n_sb} data events in the sidebands "
                                 f"{regions.sidebands} GeV (min_events = {cfg.min_events})")
        check_features(data[in_range], cfg.features, "input.data (in the m_JJ range)")
    if signal is not None:
        check_features(signal, cfg.features, "input.signal")
    if test is not None:
        check_features(test, cfg.features, "input.test")

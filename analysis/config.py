"""The typed configuration of one search (``radar search CONFIG.yaml``).

A YAML file maps onto :class:`SearchConfig`, a pydantic model: every key is typed, unknown keys are
errors (typos never pass silently), nothing is converted silently (``seeds: "10"`` is not ``[1, 0]``,
``1.7`` is not a seed), and every error names its key path (``seeds.0: ...``). Relative input paths are
resolved against the YAML file's directory. :func:`validate_config` checks what needs no data (method
names, regions, and the nested ``classifier.settings``, ``flow``, ``method_settings`` and variant settings
against the constructors they go to: :func:`check_settings`); :func:`validate_data` checks the loaded
tables (SR inside the data's m_JJ range, enough events per region, NaN features) and
:func:`radar.analysis.search.check_injections` the signal pool — all before any training starts, and all
by ``radar search --dry-run``. ``radar search --schema`` prints the JSON schema (:func:`config_schema`). The resolved config (:meth:`SearchConfig.to_dict`) is saved with every run.

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

import hashlib
import inspect
import json
import logging
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from radar.processors.features import LHCO_FEATURES

log = logging.getLogger(__name__)

NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveInt = Annotated[int, Field(ge=1)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(ge=0, le=1)]


class _Section(BaseModel):
    """A config section: typed keys, unknown keys are errors, no silent conversions of a string into a
    list or of 1.7 into 1."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


class InputConfig(_Section):
    """Input files (feature tables: parquet, LHCO feature HDF5 or CATHODE .npy; GeV)."""

    data: list[str] = Field(default_factory=list, description="data/background feature tables (one path or a list)")
    signal: str | None = Field(None, description="signal pool for injections")
    simulation: str | None = Field(None, description="simulated background (SALAD, FETA)")
    test: str | None = Field(None, description="labelled SR test set; default: held out from data and signal")
    iad_template: str | None = Field(None, description="perfect SR background template for iad")
    drop_data_signal: bool = Field(True, description="with an injection: drop label==1 events from data first")

    @field_validator("data", mode="before")
    @classmethod
    def _one_path(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class RegionsConfig(_Section):
    sr: tuple[float, float] = Field((3300.0, 3700.0), description="signal region [lo, hi] GeV")
    mjj_range: tuple[float, float] = Field((1500.0, 5500.0), description="m_JJ range of the search [lo, hi] GeV")
    sideband_width: PositiveFloat | None = Field(
        None, description="GeV on each side of the SR; null: all of mjj_range outside the SR (CATHODE, ANODE)")
    cwola_sideband_width: PositiveFloat | None = Field(200.0, description="CWoLa Hunting's narrow sidebands (GeV)")


class ClassifierConfig(_Section):
    name: str = Field("mlp", description="mlp or hgb (models.classifiers.available())")
    settings: dict[str, Any] = Field(default_factory=dict, description="constructor arguments of the classifier")


class ExecutionConfig(_Section):
    mode: Literal["dask", "sync"] = Field("dask", description="dask: LocalCluster or scheduler; sync: in-process")
    workers: NonNegativeInt | None = Field(None, description="LocalCluster workers; 0 or null: one per core")
    scheduler: str | None = None
    processes: bool = True
    threads_per_task: PositiveInt = 1
    device: str = Field("auto", description="torch device: auto (GPU when present), cpu, cuda, cuda:1 ...")


class SearchConfig(_Section):
    input: InputConfig = Field(default_factory=InputConfig)
    name: str = "search"
    output: str = "runs/search"
    regions: RegionsConfig = Field(default_factory=RegionsConfig)
    features: list[str] = Field(default_factory=lambda: list(LHCO_FEATURES))
    methods: list[str] = Field(default_factory=lambda: ["iad"])
    injections: list[Annotated[float, Field(ge=0, allow_inf_nan=False)] | None] = Field(
        default_factory=lambda: [None],
        description="n_sig injected in total (or S/B in the SR with injection_mode: s_over_b); null: the data as is")
    injection_mode: Literal["n_sig", "s_over_b"] = "n_sig"
    seeds: list[NonNegativeInt] = Field(default_factory=lambda: [0], min_length=1)
    data_seed: NonNegativeInt = 0
    test_fraction: float = Field(0.2, ge=0, lt=1, description="without input.test: data background held out")
    signal_split: tuple[Fraction, Fraction, Fraction] = Field(
        (0.5, 0.25, 0.25), description="signal pool: injection / test (when no test file) / supervised training")
    k_folds: int = Field(5, ge=2)
    density_folds: int | None = Field(None, ge=2, description="ANODE / R-ANODE density folds; null: k_folds")
    classifier: ClassifierConfig = Field(default_factory=ClassifierConfig)
    flow: dict[str, Any] = Field(default_factory=dict, description="models.flows.ConditionalFlow arguments")
    method_settings: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per-method constructor settings, e.g. {salad: {clip_quantile: 0.999}}")
    variants: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="named variants {NAME: {method: METHOD, settings: {...}}}")
    cathode_oversampling: PositiveFloat = 4.0
    min_events: PositiveInt = 100
    fpr_floor_rel_error: PositiveFloat = 0.4
    rejection: PositiveFloat = 1000.0
    save_models: bool = True
    compare: bool = Field(True, description="after the units: the comparison studies into RUN/comparison/")
    compare_auc_repeats: NonNegativeInt = 3
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    #: directory of the YAML file (paths are relative to it); not part of the saved config
    base_dir: str = Field(".", exclude=True)

    @field_validator("injections", mode="before")
    @classmethod
    def _one_injection(cls, value: Any) -> Any:
        return value if isinstance(value, list | tuple) else [value]

    @field_validator("signal_split")
    @classmethod
    def _split_sums(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if sum(value) > 1 + 1e-9:
            raise ValueError(f"3 fractions summing to <= 1, got {value}")
        return value

    @field_validator("seeds", "methods")
    @classmethod
    def _distinct(cls, value: list) -> list:
        if len(set(value)) != len(value):
            raise ValueError(f"duplicates in {value}")
        return value

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def digest(self) -> str:
        """sha256 of the resolved config minus execution settings (which do not change results)."""
        d = self.to_dict()
        d.pop("execution")
        d.pop("output")
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()

    #: fields that list the units or only touch what happens after them: a run may be extended in them
    UNIT_LIST_FIELDS: ClassVar[tuple[str, ...]] = ("name", "methods", "injections", "seeds", "compare", "compare_auc_repeats", "save_models")

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
        from radar.analysis.units import method_info

        narrow = method_info(self.base_method(method)).sidebands == "narrow"
        width = self.regions.cwola_sideband_width if narrow else self.regions.sideband_width
        return Regions(sr=tuple(self.regions.sr), mjj_range=tuple(self.regions.mjj_range), sideband_width=width)


def _key(loc: tuple) -> str:
    return ".".join(str(part) for part in loc) or "config"


def config_errors(error: ValidationError) -> str:
    """A pydantic validation error as one line per problem, each naming its key path and the value given."""
    lines = []
    for e in error.errors():
        given = "" if e["type"] == "missing" else f" (got {e['input']!r})"
        if e["type"] == "extra_forbidden":
            lines.append(f"{_key(e['loc'])}: unknown key")
        else:
            lines.append(f"{_key(e['loc'])}: {e['msg']}{given}")
    return "; ".join(lines)


def config_from_dict(values: dict[str, Any], base_dir: str | Path = ".") -> SearchConfig:
    """Build a :class:`SearchConfig` from a mapping (as read from YAML). Unknown keys and mistyped values
    raise ValueError naming every offending key path."""
    if values is not None and not isinstance(values, dict):
        raise ValueError(f"config: a search config is a mapping, got {type(values).__name__}")
    try:
        return SearchConfig.model_validate({**(values or {}), "base_dir": str(Path(base_dir).resolve())})
    except ValidationError as error:
        raise ValueError(f"config: {config_errors(error)}") from None


def config_schema() -> dict[str, Any]:
    """The JSON schema of a search config (``radar search --schema``), for editors and docs."""
    schema = SearchConfig.model_json_schema(mode="validation")
    schema.get("properties", {}).pop("base_dir", None)
    schema["title"] = "radar search config"
    return schema


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
    from radar.analysis.units import available_methods, method_info
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
    unknown = sorted(set(cfg.method_settings) - set(available_methods()))
    if unknown:
        raise ValueError(f"method_settings: unknown methods {unknown}; available: {available_methods()}")
    if "combined_scores" in cfg.methods:
        from radar.analysis.methods import combination_members

        members = combination_members(cfg)
        missing = [m for m in members if m not in cfg.methods]
        if len(members) < 2 or missing:
            raise ValueError(f"combined_scores: needs >= 2 member methods in 'methods' (members {members}, "
                             f"not run: {missing})")
    needs_simulation = [m for m in cfg.methods if method_info(cfg.base_method(m)).needs_simulation]
    if needs_simulation and cfg.input.simulation is None:
        raise ValueError(f"methods {needs_simulation} need a simulation sample: set input.simulation")
    if cfg.classifier.name not in classifiers_available():
        raise ValueError(f"classifier.name {cfg.classifier.name!r} unknown; available: {classifiers_available()}")
    bad = [f for f in cfg.features if f not in FEATURE_COLUMNS or f in ("mjj", "label", "weight")]
    if bad or not cfg.features:
        raise ValueError(f"features: {bad or 'empty'} not usable; choose from {list(FEATURE_COLUMNS[1:15])}")
    Regions(sr=tuple(cfg.regions.sr), mjj_range=tuple(cfg.regions.mjj_range),
            sideband_width=cfg.regions.sideband_width)  # raises on SR outside mjj_range
    check_settings(cfg)
    if any(i is not None for i in cfg.injections) and not cfg.input.signal:
        raise ValueError("injections given but input.signal (the signal pool) is not set")
    if cfg.compare_auc_repeats == 1:
        raise ValueError(f"compare_auc_repeats must be 0 (off) or >= 2, got {cfg.compare_auc_repeats}")


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
    return set()


def check_settings(cfg: SearchConfig) -> None:
    """The nested settings against the constructors they go to, before anything trains: the classifier's
    ``classifier.settings``, the flow's ``flow``, each method's ``method_settings`` and the variants'
    ``settings``. Raises ValueError naming the key path and the accepted keys."""
    from radar.analysis.units import method_info
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
    from radar.analysis.units import method_info

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
        if method_info(cfg.base_method(method)).sidebands != "none":  # learns from sidebands
            n_sb = int(regions.sideband(mjj).sum())
            if n_sb < cfg.min_events:
                raise ValueError(f"method {method}: only {n_sb} data events in the sidebands "
                                 f"{regions.sidebands} GeV (min_events = {cfg.min_events})")
        check_features(data[in_range], cfg.features, "input.data (in the m_JJ range)")
    if signal is not None:
        check_features(signal, cfg.features, "input.signal")
    if test is not None:
        check_features(test, cfg.features, "input.test")

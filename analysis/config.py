"""The typed configuration of one search (``radar search CONFIG.yaml``): the schema only.

A YAML file maps onto :class:`SearchConfig`, a pydantic model: every key is typed, unknown keys are
errors (typos never pass silently), nothing is converted silently (``seeds: "10"`` is not ``[1, 0]``,
``1.7`` is not a seed), and every error names its key path (``seeds.0: ...``). Relative input paths are
resolved against the YAML file's directory. The checks that need the method registry or the data live in
:mod:`radar.analysis.validation` (``load_config``, ``validate_config``, ``check_settings``,
``validate_data``), :func:`radar.analysis.preparation.check_injections` checks the signal pool — all
before any training starts, and all by ``radar search --dry-run``. ``radar search --schema`` prints the
JSON schema (:func:`config_schema`). The resolved config (:meth:`SearchConfig.to_dict`) is saved with
every run.

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
import json
import logging
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from radar.processors.features import LHCO_FEATURES

#: replicas per unit by default. LaCATHODE's background in the SR is as good as its flow's interpolation
#: across the SR, which the sidebands cannot check: one training in ten (null_chain, S/B 1 %) put its top-1 %
#: cut where that interpolation erred (background passing 1.57x more often in the SR than in the sidebands,
#: local Z 6.1 for a true 2.4); retrained with other seeds the same data gave 0.96-1.13, and the mean score
#: of 3-4 replicas 1.09-1.22 with more signal kept (docs/closure.md)
DEFAULT_REPLICAS = {"lacathode": 3}

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

    data: list[str] = Field(
        default_factory=list, description="data/background feature tables (one path or a list)"
    )
    signal: str | None = Field(None, description="signal pool for injections")
    simulation: str | None = Field(
        None, description="simulated background (SALAD, FETA; reweight, morph, mc and generate's contexts)"
    )
    simulation_transform: Literal["none", "hand_tuned"] = Field(
        "none",
        description="hand_tuned: the non-resonant seed's deliberately worse simulation, applied to "
        "input.simulation (MET (1 + MET/500 GeV), m_JJ (1 + m_JJ/6000 GeV), tau^1.1)",
    )
    test: str | None = Field(None, description="labelled SR test set; default: held out from data and signal")
    iad_template: str | None = Field(None, description="perfect SR background template for iad")
    drop_data_signal: bool = Field(
        True, description="with an injection: drop label==1 events from data first"
    )

    @field_validator("data", mode="before")
    @classmethod
    def _one_path(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class RegionsConfig(_Section):
    sr: tuple[float, float] = Field((3300.0, 3700.0), description="signal region [lo, hi] GeV")
    mjj_range: tuple[float, float] = Field(
        (1500.0, 5500.0), description="m_JJ range of the search [lo, hi] GeV"
    )
    sideband_width: PositiveFloat | None = Field(
        None, description="GeV on each side of the SR; null: all of mjj_range outside the SR (CATHODE, ANODE)"
    )
    cwola_sideband_width: PositiveFloat | None = Field(
        200.0, description="CWoLa Hunting's narrow sidebands (GeV)"
    )
    context: dict[str, tuple[float | None, float | None]] | None = Field(
        None,
        description="the non-resonant search: the SR as cuts on context variables {NAME: [lo, hi]} (null: "
        "open), e.g. {ht: [800, null], met: [75, null]}; the control region is the rest. Replaces sr, "
        "mjj_range and the sidebands (radar.analysis.regions.ContextRegions)",
    )
    range: dict[str, tuple[float | None, float | None]] | None = Field(
        None,
        description="with context: the analysed range as cuts {NAME: [lo, hi]}; events outside are dropped",
    )

    #: the resonant-only keys, which mean nothing next to ``context``
    RESONANT_KEYS: ClassVar[tuple[str, ...]] = ("sr", "mjj_range", "sideband_width", "cwola_sideband_width")

    @model_validator(mode="after")
    def _context_or_window(self) -> RegionsConfig:
        if self.context is None:
            if self.range is not None:
                raise ValueError("range is the analysed range of context regions: give context too")
            return self
        clash = [k for k in self.RESONANT_KEYS if k in self.model_fields_set]
        if clash:
            raise ValueError(
                f"{clash} describe an m_JJ window; with context the SR is the context cuts (give the "
                "analysed range as range)"
            )
        from radar.analysis.regions import ContextRegions

        ContextRegions(dict(self.context), dict(self.range or {}))  # raises on an empty or inverted cut
        return self

    @property
    def resonant(self) -> bool:
        """An m_JJ window (True) or context cuts (False)."""
        return self.context is None


class ClassifierConfig(_Section):
    name: str = Field("mlp", description="mlp or hgb (models.classifiers.available())")
    settings: dict[str, Any] = Field(
        default_factory=dict, description="constructor arguments of the classifier"
    )


class ExecutionConfig(_Section):
    mode: Literal["dask", "sync"] = Field(
        "dask", description="dask: LocalCluster or scheduler; sync: in-process"
    )
    workers: NonNegativeInt | None = Field(None, description="LocalCluster workers; 0 or null: one per core")
    scheduler: str | None = Field(
        None, description="address of a running Dask scheduler (instead of a LocalCluster)"
    )
    processes: bool = Field(
        True, description="LocalCluster workers as processes (fastjet and torch hold the GIL)"
    )
    threads_per_task: PositiveInt = Field(1, description="torch threads per unit")
    device: str = Field("auto", description="torch device: auto (GPU when present), cpu, cuda, cuda:1 ...")


#: the methods whose flows can start from another run's flows (their per-fold flow files)
WARM_START_METHODS = ("cathode", "lacathode")


class WarmStartConfig(_Section):
    """Start the flows of ``cathode`` / ``lacathode`` from the trained flows of another run (the blind scan
    uses it between windows). The other run's training events must not overlap this run's: its flows
    would carry them into this run's templates (validation refuses overlapping m_JJ ranges of the same
    data)."""

    run: str = Field(
        description="run directory whose units (same method, injection, seed, replica; saved models) give "
        "fold f's starting weights (its best epoch)"
    )
    epochs: PositiveInt | None = Field(None, description="epochs of a warm-started flow; null: flow.epochs")


class SearchConfig(_Section):
    input: InputConfig = Field(default_factory=InputConfig)
    name: str = Field("search", description="name of the search (reports, logs)")
    output: str = Field("runs/search", description="run directory (radar search --output overrides it)")
    regions: RegionsConfig = Field(
        default_factory=RegionsConfig, description="signal region and sidebands (GeV)"
    )
    features: list[str] = Field(
        default_factory=lambda: list(LHCO_FEATURES),
        description="feature columns the templates and classifiers use",
    )
    methods: list[str] = Field(
        default_factory=lambda: ["iad"],
        description="methods to run (radar.analysis.units.available_methods) or variants",
    )
    injections: list[Annotated[float, Field(ge=0, allow_inf_nan=False)] | None] = Field(
        default_factory=lambda: [None],
        description="n_sig injected in total (or S/B in the SR with injection_mode: s_over_b); null: the data as is",
    )
    injection_mode: Literal["n_sig", "s_over_b"] = Field(
        "n_sig", description="what an injection number means"
    )
    seeds: list[NonNegativeInt] = Field(
        default_factory=lambda: [0],
        min_length=1,
        description="training seeds: one unit per method, injection and seed",
    )
    data_seed: NonNegativeInt = Field(0, description="seed of the test hold-out and the signal injection")
    test_fraction: float = Field(0.2, ge=0, lt=1, description="without input.test: data background held out")
    signal_split: tuple[Fraction, Fraction, Fraction] = Field(
        (0.5, 0.25, 0.25),
        description="signal pool: injection / test (when no test file) / supervised training",
    )
    k_folds: int = Field(
        5, ge=2, description="folds: every event is scored by models trained without its fold"
    )
    density_folds: int | None = Field(None, ge=2, description="ANODE / R-ANODE density folds; null: k_folds")
    classifier: ClassifierConfig = Field(default_factory=ClassifierConfig, description="the CWoLa classifier")
    flow: dict[str, Any] = Field(default_factory=dict, description="models.flows.ConditionalFlow arguments")
    method_settings: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="per-method constructor settings, e.g. {salad: {clip_quantile: 0.999}}",
    )
    variants: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="named variants {NAME: {method: METHOD, settings: {...}}}"
    )
    warm_start: WarmStartConfig | None = Field(
        None, description=f"start the flows of {', '.join(WARM_START_METHODS)} from another run's flows"
    )
    cathode_oversampling: PositiveFloat = Field(4.0, description="template events per SR data event")
    replicas: dict[str, PositiveInt] = Field(
        default_factory=lambda: dict(DEFAULT_REPLICAS),
        description="independently trained replicas per unit whose scores are averaged, per method "
        "({METHOD: N}, '*': every method; a number: every method); default: lacathode 3",
    )
    min_events: PositiveInt = Field(100, description="fewest data events in the SR and in the sidebands")
    fpr_floor_rel_error: PositiveFloat = Field(
        0.4, description="SIC is reported only where the background efficiency's relative error is below this"
    )
    rejection: PositiveFloat = Field(
        1000.0, description="the background rejection 1/ε_B at which SIC is quoted"
    )
    save_models: bool = Field(True, description="keep the trained models in each unit's models/")
    compare: bool = Field(True, description="after the units: the comparison studies into RUN/comparison/")
    compare_auc_repeats: NonNegativeInt = Field(
        3, description="repeats of the comparison studies' AUC estimates"
    )
    execution: ExecutionConfig = Field(
        default_factory=ExecutionConfig,
        description="where units run (execution settings never change results)",
    )
    #: directory of the YAML file (paths are relative to it); not part of the saved config
    base_dir: str = Field(".", exclude=True)

    @field_validator("replicas", mode="before")
    @classmethod
    def _replicas_for_all(cls, value: Any) -> Any:
        return {"*": value} if isinstance(value, int) and not isinstance(value, bool) else value

    def replicas_for(self, method: str) -> int:
        """How many replicas a unit of ``method`` (or of the method behind a variant) trains."""
        r = self.replicas
        return int(r.get(method, r.get(self.base_method(method), r.get("*", 1))))

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
        d = self.model_dump()
        # each kind of regions saved (and hashed) with its own keys only; a resonant search as before context
        # regions existed, so its runs stay resumable
        drop = ("context", "range") if d["regions"]["context"] is None else RegionsConfig.RESONANT_KEYS
        for key in drop:
            d["regions"].pop(key)
        # the default transform: saved (and hashed) as before the option existed
        if d["input"]["simulation_transform"] == "none":
            d["input"].pop("simulation_transform")
        return d

    def digest(self) -> str:
        """sha256 of the resolved config minus execution settings (which do not change results)."""
        d = self.to_dict()
        d.pop("execution")
        d.pop("output")
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()

    #: fields that list the units or only touch what happens after them: a run may be extended in them
    UNIT_LIST_FIELDS: ClassVar[tuple[str, ...]] = (
        "name",
        "methods",
        "injections",
        "seeds",
        "compare",
        "compare_auc_repeats",
        "save_models",
    )

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


def config_reference() -> str:
    """Every key of a search config as a Markdown table (key path, type, default, description), generated from
    the schema (``radar search --reference``; ``docs/config.md`` is this text, checked by a test)."""
    schema = config_schema()
    defs = schema.get("$defs", {})
    defaults = SearchConfig().model_dump(mode="json")

    def default_of(key: str, prop: dict[str, Any]) -> str:
        value: Any = defaults
        for part in key.split("."):
            if not isinstance(value, dict):  # a key of an optional section (null by default)
                return json.dumps(prop["default"]) if "default" in prop else "(required)"
            value = value[part]
        return json.dumps(value)

    def type_of(prop: dict[str, Any]) -> str:
        if "$ref" in prop:
            return "section"
        if "enum" in prop:
            return " \\| ".join(json.dumps(v) for v in prop["enum"])
        if "anyOf" in prop:
            return " \\| ".join(type_of(p) for p in prop["anyOf"])
        kind = prop.get("type", "any")
        if kind == "array":
            if "prefixItems" in prop:
                return "[" + ", ".join(type_of(p) for p in prop["prefixItems"]) + "]"
            return f"list[{type_of(prop.get('items', {}))}]"
        if kind == "object":
            return "mapping"
        bounds = [
            f"{sym} {prop[key]}"
            for key, sym in (
                ("minimum", "≥"),
                ("exclusiveMinimum", ">"),
                ("maximum", "≤"),
                ("exclusiveMaximum", "<"),
            )
            if key in prop
        ]
        return kind + (f" ({', '.join(bounds)})" if bounds else "")

    rows: list[str] = []

    def walk(properties: dict[str, Any], prefix: str) -> None:
        for name, prop in properties.items():
            key = f"{prefix}{name}"
            ref = prop.get("$ref") or next((p["$ref"] for p in prop.get("allOf", []) if "$ref" in p), None)
            description = (prop.get("description") or "").replace("|", "\\|")
            if ref:
                section = defs[ref.split("/")[-1]]
                rows.append(f"| `{key}` | section | | {description or section.get('description', '')} |")
                walk(section.get("properties", {}), key + ".")
                continue
            optional = next((p["$ref"] for p in prop.get("anyOf", []) if "$ref" in p), None)
            if optional:  # a section that may be null
                section = defs[optional.split("/")[-1]]
                rows.append(f"| `{key}` | section \\| null | `{default_of(key, prop)}` | {description} |")
                walk(section.get("properties", {}), key + ".")
                continue
            default = default_of(key, prop)
            rows.append(
                f"| `{key}` | {type_of(prop)} | {default if default.startswith('(') else f'`{default}`'} | {description} |"
            )

    walk(schema.get("properties", {}), "")
    return "\n".join(
        [
            "# radar search config reference",
            "",
            "Generated from the config schema by `radar search --reference` (do not edit; a test checks it). Every",
            "key is optional; unknown keys are errors that name their path. Paths are relative to the config file.",
            "`radar search --schema` prints the JSON schema (for editors).",
            "",
            "| key | type | default | description |",
            "|---|---|---|---|",
            *rows,
            "",
        ]
    )

"""The data of one search unit: inputs read once, the m_JJ range, the test hold-out and the signal
injection (seeded by ``data_seed``), and the checks that run before anything trains.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from radar.analysis.config import SearchConfig
from radar.analysis.datasets import drop_shared_events, hand_tuned_simulation, inject_signal, split_indices
from radar.analysis.regions import SearchRegions, search_regions

log = logging.getLogger(__name__)


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

    tables = []
    for path in paths:
        table = read_feature_table(path)
        if len(table) == 0:
            raise ValueError(f"{path}: the feature table holds no events")
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def _base_regions(cfg: SearchConfig) -> SearchRegions:
    return search_regions(cfg.regions)


def load_inputs(cfg: SearchConfig) -> dict[str, pd.DataFrame | None]:
    """Read every input table named in the config (no selection)."""

    def read_one(value: str | None) -> pd.DataFrame | None:
        return _read([cfg.path(value)]) if value else None

    simulation = read_one(cfg.input.simulation)
    if simulation is not None and cfg.input.simulation_transform == "hand_tuned":
        simulation = hand_tuned_simulation(simulation)
        log.info("input.simulation: the hand-tuned transform applied (MET, m_JJ, tau ratios)")
    return {
        "data": _read([cfg.path(p) for p in cfg.input.data]),
        "signal": signal_pool(read_one(cfg.input.signal), cfg.input.signal),
        "simulation": simulation,
        "test": read_one(cfg.input.test),
        "iad_template": read_one(cfg.input.iad_template),
    }


def signal_pool(table: pd.DataFrame | None, name: str | None) -> pd.DataFrame | None:
    """The signal pool for injections: the table's label-1 events when it holds label-1 and other events
    (e.g. the LHCO peer-reclustering directory: background and signal in one place), else the whole table.
    A mixed table must never inject its background as signal."""
    if table is None or "label" not in table:
        return table
    labels = table["label"].to_numpy()
    is_signal = labels == 1
    if is_signal.all() or not is_signal.any():
        return table  # all signal, or no label 1 at all: every event is signal (injection labels it 1)
    log.info(
        "input.signal %s: using its %d label-1 events as the signal pool (%d other events left out)",
        name,
        int(is_signal.sum()),
        int((~is_signal).sum()),
    )
    return table[is_signal].reset_index(drop=True)


def prepare_data(cfg: SearchConfig, injection: float | None, inputs: dict | None = None) -> PreparedData:
    """Build the data of one injection: m_JJ range, test hold-out, signal injection (seed ``data_seed``)."""
    key = (cfg.digest(), injection)
    if key in _CACHE:
        return _CACHE[key]
    inputs = inputs or load_inputs(cfg)
    regions = _base_regions(cfg)
    data = inputs["data"]
    data = data[regions.range_mask(data)].reset_index(drop=True)
    signal = inputs["signal"]
    if injection is not None and cfg.input.drop_data_signal and (data["label"] == 1).any():
        log.info(
            "dropping %d label-1 events from input.data before injecting from input.signal",
            int((data["label"] == 1).sum()),
        )
        data = data[data["label"] != 1].reset_index(drop=True)
    seed = cfg.data_seed
    f_inj, f_test, f_sup = cfg.signal_split
    if inputs["test"] is not None:
        test = inputs["test"]
        test = test[regions.sr_mask(test)].reset_index(drop=True)
        signal = drop_shared_events(signal, inputs["test"], "input.signal")
        data = drop_shared_events(data, inputs["test"], "input.data")
        sig_parts = split_indices(len(signal), (f_inj, 0.0, f_sup), seed) if signal is not None else None
    else:
        (held,) = split_indices(len(data), (cfg.test_fraction,), seed)
        keep = np.ones(len(data), bool)
        keep[held] = False
        test = data.iloc[held]
        test = test[regions.sr_mask(test)]
        data = data[keep].reset_index(drop=True)
        sig_parts = split_indices(len(signal), (f_inj, f_test, f_sup), seed) if signal is not None else None
        if signal is not None:
            sig_test = signal.iloc[sig_parts[1]]
            test = pd.concat([test, sig_test[regions.sr_mask(sig_test)]])
        test = test.reset_index(drop=True)
    signal_supervised = None
    if signal is not None:
        sup = signal.iloc[sig_parts[2]]
        signal_supervised = sup[regions.sr_mask(sup)].reset_index(drop=True)
    in_sr = regions.sr_mask(data)
    if injection is None:
        info = {
            "injection": None,
            "n_injected": int((data["label"] == 1).sum()),
            "n_sig_sr": int(((data["label"] == 1) & in_sr).sum()),
            "n_bkg_sr": int(((data["label"] != 1) & in_sr).sum()),
        }
    else:
        pool = signal.iloc[sig_parts[0]]
        # only signal inside the search's m_JJ range: an event outside it would enter the scores (and the bump
        # hunt's spectrum) although the data there were cut away
        pool = pool[regions.range_mask(pool)].reset_index(drop=True)
        if cfg.injection_mode == "n_sig":
            inj = inject_signal(data, pool, n_sig=int(injection), regions=regions, seed=seed)
        else:
            inj = inject_signal(data, pool, s_over_b=float(injection), regions=regions, seed=seed)
        data = inj.table
        info = {
            "injection": injection,
            "n_injected": inj.n_injected,
            "n_sig_sr": inj.n_sig_sr,
            "n_bkg_sr": inj.n_bkg_sr,
        }
    info["s_over_b_sr"] = info["n_sig_sr"] / max(info["n_bkg_sr"], 1)
    template = inputs["iad_template"]
    if template is not None:
        template = template[regions.sr_mask(template) & (template["label"] != 1)]
        template = template.reset_index(drop=True)
    simulation = inputs["simulation"]
    if simulation is not None and not cfg.regions.resonant:
        # context regions: the simulation guides the extrapolation inside the analysed range only (the
        # resonant templates, SALAD and FETA, select their own simulation events by m_JJ)
        simulation = simulation[regions.range_mask(simulation)].reset_index(drop=True)
    prepared = PreparedData(
        data=data,
        test=test,
        signal_supervised=signal_supervised,
        simulation=simulation,
        iad_template=template,
        injection=info,
    )
    _CACHE[key] = prepared
    return prepared


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
        raise ValueError(
            "method iad: input.data has no events labelled background (label 0) and no "
            "input.iad_template is given; the idealized template needs truth labels"
        )
    if "supervised" in cfg.methods and (inputs["signal"] is None or not (labels == 0).any()):
        raise ValueError("method supervised: needs input.signal and background-labelled input.data")

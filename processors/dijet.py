"""The dijet coffea processor: events → feature columns + m_JJ histograms + cutflow.

:class:`DijetProcessor` is a stateless, picklable ``ProcessorABC``: ``process(events)`` takes a
dask-awkward array of events (from :mod:`radar.processors.sources`, or NanoEvents with a ``BaseSchema``
from coffea's ``apply_to_fileset``) and returns lazy outputs; nothing is read or clustered until the
caller computes them. All fastjet work for a partition happens in one
:func:`radar.processors.jets.cluster_chunk` call.

Under coffea's ``processor.Runner`` (eager chunks, any executor) the same processor returns coffea
accumulators — ``features`` as a ``dict_accumulator`` of ``column_accumulator`` (one per column), the
cutflow as a ``defaultdict_accumulator`` — keyed by the chunk's dataset name; use
:func:`features_to_frame` on ``out[dataset]["features"]``.

Output of ``process`` (a dict):

- ``features``: record array, one row per event that passed, with the columns of
  :data:`radar.processors.features.FEATURE_COLUMNS` (GeV; J1 = lighter jet);
- ``mjj``: ``hist`` histogram of m_JJ (GeV) with a ``label`` category axis (0 bkg, 1 sig, -1 unknown);
- ``cutflow``: event counts ``all, no_jets, one_jet, failed_trigger, passed``.
"""

from __future__ import annotations

import dataclasses
import logging

import awkward as ak
import dask_awkward as dak
import hist
import hist.dask
import numpy as np
import pandas as pd
from coffea import processor

from radar.processors.features import FEATURE_COLUMNS, conform
from radar.processors.jets import FEATURE_FIELDS, STATUS_NAMES, JetConfig, cluster_chunk, empty_chunk_result
from radar.processors.sources import (
    RootLayout,
    check_labels,
    chunk_origin,
    particles_from_branches,
    weights_from_branches,
)

log = logging.getLogger(__name__)

MJJ_AXIS = dict(bins=400, start=0.0, stop=10_000.0)  # 25 GeV bins


def mjj_histogram(dask: bool = False) -> hist.Hist:
    """The m_JJ histogram every stage uses: 25 GeV bins 0-10 TeV, a ``label`` category axis."""
    factory = hist.dask.Hist if dask else hist.Hist
    return factory(
        hist.axis.Regular(**MJJ_AXIS, name="mjj", label=r"$m_{JJ}$ [GeV]"),
        hist.axis.IntCategory([0, 1, -1], name="label", label="label (1 signal, 0 background, -1 unknown)"),
        storage=hist.storage.Weight(),
    )


def _checked_labels(events, branch: str):
    """The events' label branch, checked (1, 0 or -1), the error naming the file the chunk came from."""
    return check_labels(events[branch], chunk_origin(events), branch)


@dataclasses.dataclass(frozen=True)
class DijetProcessor(processor.ProcessorABC):
    """Recluster jets and compute the dijet features. Configuration only; no state, no open files."""

    jets: JetConfig = JetConfig()
    root_layout: RootLayout = RootLayout()

    def _particles_labels_weights(self, events):
        """Particles, labels and per-event weights (None: every event weighs 1) of one batch of events."""
        fields = events.fields
        if "particles" in fields:
            return events.particles, events.label, events.weight if "weight" in fields else None
        lazy = isinstance(events, dak.Array)
        if lazy:
            particles = dak.map_partitions(particles_from_branches, events, self.root_layout)
        else:
            particles = particles_from_branches(events, self.root_layout)
        branch = self.root_layout.label_branch
        if branch and branch in fields:
            if lazy:
                labels = dak.map_partitions(_checked_labels, events, branch, label="check-labels")
            else:
                labels = _checked_labels(events, branch)
        else:
            labels = (dak.num if lazy else ak.num)(particles, axis=1) * 0.0 - 1.0
        if lazy:  # the meta (a typetracer) tells whether these events carry weights at all
            carries = weights_from_branches(events._meta, self.root_layout) is not None
            weights = dak.map_partitions(weights_from_branches, events, self.root_layout) if carries else None
        else:
            weights = weights_from_branches(events, self.root_layout)
        return particles, labels, weights

    def process(self, events):
        lazy = isinstance(events, dak.Array)
        particles, labels, weights = self._particles_labels_weights(events)
        if lazy:
            meta = ak.Array(empty_chunk_result().layout.to_typetracer(forget_length=True))
            results = dak.map_partitions(
                cluster_chunk, particles, self.jets, meta=meta, label="cluster-dijet"
            )
        else:
            results = cluster_chunk(particles, self.jets)
        zip_ = dak.zip if lazy else ak.zip
        passed = results.status == 0
        columns = {name: results[name][passed] for name in FEATURE_FIELDS}
        columns["label"] = labels[passed] * 1.0
        columns["weight"] = columns["mjj"] * 0.0 + 1.0 if weights is None else weights[passed] * 1.0
        features = zip_(columns, depth_limit=1)

        summed = dak.sum if lazy else ak.sum
        cutflow = {"all": summed(results.status >= 0)}
        for code, name in STATUS_NAMES.items():
            cutflow[name] = summed(results.status == code)

        mjj = mjj_histogram(dask=lazy)
        mjj.fill(
            mjj=columns["mjj"],
            label=dak.values_astype(columns["label"], np.int64)
            if lazy
            else ak.values_astype(columns["label"], np.int64),
            weight=columns["weight"],
        )
        if lazy:
            return {"features": features, "mjj": mjj, "cutflow": cutflow}
        # eager chunks (coffea's Runner, any executor): accumulators that add up across chunks — the
        # feature columns concatenate, the cutflow counts and the histogram add
        out = {
            "features": processor.dict_accumulator(
                {
                    name: processor.column_accumulator(ak.to_numpy(features[name]).astype(np.float64))
                    for name in features.fields
                }
            ),
            "mjj": mjj,
            "cutflow": processor.defaultdict_accumulator(int, {k: int(v) for k, v in cutflow.items()}),
        }
        dataset = (getattr(events, "metadata", None) or {}).get("dataset")
        return {dataset: out} if dataset is not None else out

    def postprocess(self, accumulator):
        return accumulator


def features_to_frame(features: ak.Array | processor.dict_accumulator) -> pd.DataFrame:
    """Computed ``features`` (record array of the lazy path, or the eager path's column accumulators) →
    a feature-table DataFrame (FEATURE_COLUMNS order)."""
    if isinstance(features, dict):
        columns = {name: np.asarray(acc.value) for name, acc in features.items()}
    else:
        columns = {name: ak.to_numpy(features[name]) for name in features.fields}
    if not columns or len(next(iter(columns.values()))) == 0:
        return conform(pd.DataFrame(columns=list(FEATURE_COLUMNS)))
    return conform(pd.DataFrame(columns))


def plain_outputs(out: dict) -> dict:
    """The processor's outputs, computed, as plain objects that merge across chunks and files: ``features``
    (feature-table DataFrame), ``cutflow`` (counts) and ``mjj`` (the histogram)."""
    return {
        "features": features_to_frame(out["features"]),
        "cutflow": {k: int(v) for k, v in out["cutflow"].items()},
        "mjj": out["mjj"],
    }


def chunk_outputs(processor: DijetProcessor, events: ak.Array) -> dict:
    """One eager chunk of events through ``processor``, as :func:`plain_outputs`."""
    return plain_outputs(processor.process(events))


def extract_features(
    particles: ak.Array, label: np.ndarray | None = None, *, config: JetConfig | None = None
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Eager, in-process feature extraction for one chunk (used by the generator and tests).

    ``particles``: one list per event of ``{pt, eta, phi}`` records (GeV). Returns the feature table of
    the events that pass the trigger (FEATURE_COLUMNS) and the cutflow counts.
    """
    n = len(particles)
    labels = np.full(n, -1.0) if label is None else np.asarray(label, dtype=np.float64)
    events = ak.zip({"particles": particles, "label": labels, "event": np.arange(n)}, depth_limit=1)
    out = chunk_outputs(DijetProcessor(jets=config or JetConfig()), events)
    return out["features"], out["cutflow"]

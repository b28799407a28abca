"""Run the dijet processor over a set of input files on Dask and write the feature table.

The embedded default is a ``distributed.LocalCluster`` of single-threaded *processes* sized to the
machine (fastjet holds the GIL, so threads would not run in parallel). ``scheduler="ADDRESS"`` runs the
same job on an existing Dask cluster; ``workers=0`` runs in-process on the synchronous scheduler
(debugging, tests). ROOT inputs go through coffea's executor path (``preprocess`` +
``apply_to_fileset`` with a ``BaseSchema``); LHCO raw HDF5 as one Dask task per chunk that reads its events
(:mod:`radar.processors.sources`) and runs the same processor on them eagerly; LHCO 15-column feature files
are converted directly.

Why one task per chunk for LHCO raw files: the processor's dask-awkward graph is ≈ 15 tasks per chunk (the
read, the clustering, the feature selection, five cutflow sums, the histogram fill, their reductions: 118 tasks
for 8 chunks). On a 2-core machine the scheduler's and the client's work for them competed with the two workers:
0.51–0.65 s of the client process's CPU per 16k-event run, against 0.37 s with 8 tasks (0.19 s of it the inputs'
SHA-256). Measured with ``benchmarks/processing.py``'s (d) setup.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import dask
import pandas as pd

from radar.processors.cluster import dask_client, default_workers  # noqa: F401  (default_workers: public here)
from radar.processors.dijet import DijetProcessor, chunk_outputs, mjj_histogram, plain_outputs
from radar.processors.features import conform, from_lhco_feature_hdf5, write_feature_table
from radar.processors.io import atomic_output, file_sha256, package_versions, write_json
from radar.processors.jets import STATUS_NAMES, JetConfig
from radar.processors.sources import (
    LHCORawChunk,
    RootLayout,
    check_root_input,
    inspect_lhco_raw,
    is_lhco_feature_file,
    is_root_file,
    lhco_raw_chunks,
    root_branch_filter,
)

log = logging.getLogger(__name__)


def _compute_with_progress(outputs: dict, client, description: str) -> dict:
    """Compute a dict of dask collections, showing a progress bar over partitions when distributed."""
    if client is None:
        (result,) = dask.compute(outputs)
        return result
    from distributed import as_completed, futures_of
    from rich.progress import Progress

    (persisted,) = dask.persist(outputs)
    futures = futures_of(persisted)
    with Progress(transient=True) as progress:
        task = progress.add_task(description, total=len(futures))
        for _ in as_completed(futures):
            progress.advance(task)
    (result,) = dask.compute(persisted)
    return result


def _quietly(function, *args, **kwargs):
    """Call a coffea function with coffea's console quiet: ``preprocess`` prints an advertisement for its
    DataGroupSpec API on every plain-dict fileset, which radar builds internally."""
    from coffea.util import coffea_console

    quiet = coffea_console.quiet
    coffea_console.quiet = True
    try:
        return function(*args, **kwargs)
    finally:
        coffea_console.quiet = quiet


def _lhco_raw_chunk(read: LHCORawChunk, span: tuple[int, int], processor: DijetProcessor) -> dict:
    """One Dask task: read events ``span`` of a raw LHCO file and run the processor on them."""
    return chunk_outputs(processor, read(span))


def _merge_chunks(chunks: Sequence[dict]) -> dict:
    """The outputs of a file's chunks (:func:`chunk_outputs`, in event order) as one."""
    cutflow = dict.fromkeys(chunks[0]["cutflow"], 0)
    histogram = mjj_histogram()
    for chunk in chunks:
        for key, value in chunk["cutflow"].items():
            cutflow[key] += value
        histogram += chunk["mjj"]
    features = pd.concat([c["features"] for c in chunks], ignore_index=True)
    return {"features": features, "cutflow": cutflow, "mjj": histogram}


def _lazy_outputs(path: Path, processor: DijetProcessor, chunk_size: int) -> dict | list:
    """The processor's lazy outputs for one particle-level input file: dask-awkward collections (ROOT) or
    one delayed task per chunk (LHCO raw HDF5)."""
    if is_root_file(path):
        from coffea.dataset_tools import apply_to_fileset, preprocess
        from coffea.nanoevents import BaseSchema

        layout = processor.root_layout
        n_entries = check_root_input(path, layout)
        log.info(
            "%s: ROOT tree %r, %d events, coffea apply_to_fileset (%s layout)",
            path,
            layout.tree,
            n_entries,
            layout.kind,
        )
        # the file's path is the dataset name: every chunk's errors name the file
        fileset = {str(path): {"files": {str(path): layout.tree}}}
        available, _ = _quietly(preprocess, fileset, step_size=chunk_size, skip_bad_files=False)
        outputs = apply_to_fileset(
            processor,
            available,
            schemaclass=BaseSchema,
            uproot_options={"filter_name": root_branch_filter(layout)},
        )
        return outputs[str(path)]
    read, spans = lhco_raw_chunks(path, chunk_size)
    name = f"cluster-dijet-{path.stem}-{dask.base.tokenize(str(path), spans, processor)}"
    task = dask.delayed(_lhco_raw_chunk, pure=True)
    return [task(read, span, processor, dask_key_name=f"{name}-{i}") for i, span in enumerate(spans)]


def check_inputs(paths: Sequence[Path], layout: RootLayout) -> dict[Path, str]:
    """Validate every input before any work starts (a bad file late in the list must not waste a run);
    returns each path's kind (``root``, ``lhco-features``, ``lhco-raw``)."""
    kinds = {}
    for path in paths:
        if is_root_file(path):
            check_root_input(path, layout)
            kinds[path] = "root"
        elif not path.exists():
            raise FileNotFoundError(f"{path}: no such file")
        elif is_lhco_feature_file(path):
            kinds[path] = "lhco-features"
        else:
            inspect_lhco_raw(path)
            kinds[path] = "lhco-raw"
    return kinds


@dataclasses.dataclass
class _Dataset:
    """One output table in the making: its inputs, their kinds, and the lazy outputs of its particle-level
    files (computed together with every other dataset's, in one graph)."""

    paths: list[Path]
    output: Path
    processor: DijetProcessor
    kinds: dict[Path, str]
    lazy: dict[str, dict]
    extra_metadata: Mapping[str, Any] | None = None
    hashes: dict[Path, Future] = dataclasses.field(default_factory=dict)


def _hash_in_background(paths: Sequence[Path]) -> dict[Path, Future]:
    """The inputs' SHA-256 (for the provenance) on a thread of this process while the events are being
    clustered, not after: file reads and hashlib release the GIL, so on a cluster the client hashes while
    the workers work, and in-process the hashing fills the gaps of the clustering (≈ 10 ms per 1000 LHCO
    raw events, measured 0.04 s of 1.0 s per 4000 events when it ran after the clustering)."""
    futures: dict[Path, Future] = {path: Future() for path in paths}

    def work() -> None:
        for path, future in futures.items():
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(file_sha256(path))
                except Exception as error:  # noqa: BLE001  (handed to whoever asks for the hash)
                    future.set_exception(error)

    # a daemon thread: a run that fails before its provenance is written exits without waiting for it
    threading.Thread(target=work, name="radar-sha256", daemon=True).start()
    return futures


def _prepare(
    inputs: Sequence[str | Path],
    output: str | Path,
    processor: DijetProcessor,
    extra_metadata: Mapping[str, Any] | None = None,
) -> _Dataset:
    # absolute paths: workers of a --scheduler cluster do not share this process's working directory
    paths = [Path(p).expanduser().resolve() for p in inputs]
    if not paths:
        raise ValueError("no input files given")
    twice = sorted({str(p) for p in paths if paths.count(p) > 1})
    if twice:
        raise ValueError(f"input files given more than once: {twice} (their events would be counted twice)")
    output = Path(output)
    _check_writable(output)
    kinds = check_inputs(paths, processor.root_layout)
    return _Dataset(paths, output, processor, kinds, {}, extra_metadata, _hash_in_background(paths))


def _check_writable(output: Path) -> None:
    """Fail in the first second, not after the clustering: the output's folder (or, when it does not exist
    yet, the folder it will be made in) must be writable; an output that is a folder is refused. Nothing is
    created here."""
    if output.is_dir():
        raise ValueError(
            f"{output}: is a directory; give the feature table's file name (e.g. features.parquet)"
        )
    folder = output.absolute().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(f"{folder}: is a file, so the output {output} cannot be written below it")
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"{folder}: not writable, so the output {output} cannot be written")


def _build(dataset: _Dataset, chunk_size: int) -> None:
    dataset.lazy = {
        str(p): _lazy_outputs(p, dataset.processor, chunk_size)
        for p in dataset.paths
        if dataset.kinds[p] != "lhco-features"
    }


def _compute_all(datasets: Sequence[_Dataset], client) -> list[dict]:
    """Every dataset's particle-level files in ONE graph: the workers move from file to file (and from
    dataset to dataset) without a barrier between them."""
    lazy = {(k, path): out for k, d in enumerate(datasets) for path, out in d.lazy.items()}
    if not lazy:
        return [{} for _ in datasets]
    what = Path(next(iter(lazy))[1]).name if len(lazy) == 1 else f"{len(lazy)} files"
    computed = _compute_with_progress(lazy, client, f"clustering {what}")
    for key, result in computed.items():  # every file's outputs as plain objects
        computed[key] = _merge_chunks(result) if isinstance(result, list) else plain_outputs(result)
    return [{path: computed[(k, path)] for path in d.lazy} for k, d in enumerate(datasets)]


def _finish(dataset: _Dataset, computed: dict, write_histograms: bool, started: float) -> pd.DataFrame:
    """The feature table, its histograms and provenance of one dataset from its computed outputs."""
    tables, cutflow = [], dict.fromkeys(["all", *STATUS_NAMES.values()], 0)
    histogram = mjj_histogram()
    for path in dataset.paths:
        if dataset.kinds[path] == "lhco-features":
            table = from_lhco_feature_hdf5(path)
            histogram.fill(mjj=table["mjj"], label=table["label"].astype(int), weight=table["weight"])
            cutflow["all"] += len(table)
            cutflow["passed"] += len(table)
            tables.append(table)
            continue
        result = computed[str(path)]
        table, counts = result["features"], result["cutflow"]
        log.info(
            "%s: %d events read, %d passed (no jets %d, one jet %d, failed trigger %d)",
            path,
            counts["all"],
            counts["passed"],
            counts["no_jets"],
            counts["one_jet"],
            counts["failed_trigger"],
        )
        for key, value in counts.items():
            cutflow[key] += value
        histogram += result["mjj"]
        tables.append(table)

    table = conform(pd.concat(tables, ignore_index=True)) if len(tables) > 1 else tables[0]
    if len(table) == 0:
        raise ValueError(
            f"no event of {[str(p) for p in dataset.paths]} passed the selection (cutflow {cutflow}); "
            f"nothing written to {dataset.output} — check the inputs and the trigger settings"
        )
    elapsed = time.perf_counter() - started
    provenance = {
        "inputs": {
            str(p): {"kind": dataset.kinds[p], "sha256": dataset.hashes[p].result()} for p in dataset.paths
        },
        "jet_config": dataclasses.asdict(dataset.processor.jets),
        "cutflow": cutflow,
        "versions": package_versions(),
        "seconds": round(elapsed, 3),
        **(dataset.extra_metadata or {}),
    }
    output = dataset.output
    stem = output.with_suffix("")
    # the table last: a feature table on disk always has its cutflow and histograms next to it
    if write_histograms:
        write_histograms_root(histogram, Path(f"{stem}.hists.root"))
    write_json(f"{stem}.cutflow.json", provenance)
    write_feature_table(table, output, metadata=provenance)
    log.info(
        "processed %d events from %d file(s) in %.1f s: %d in the feature table %s",
        cutflow["all"],
        len(dataset.paths),
        elapsed,
        len(table),
        output,
    )
    return table


def process_files(
    inputs: Sequence[str | Path],
    output: str | Path,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    chunk_size: int = 10_000,
    jet_radius: float = 1.0,
    jet_config: JetConfig | None = None,
    root_layout: RootLayout | None = None,
    write_histograms: bool = True,
    extra_metadata: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Extract dijet features from every input and write one parquet feature table.

    ``inputs``: LHCO raw HDF5, ROOT or LHCO 15-column feature files (mixed is fine), processed as one Dask
    graph. Writes ``output`` (parquet, atomically), next to it ``<stem>.hists.root`` (m_JJ histograms per
    label, readable by ROOT) and ``<stem>.cutflow.json``. Returns the feature table (FEATURE_COLUMNS, GeV).
    """
    config = jet_config or JetConfig(jet_radius=jet_radius)
    processor = DijetProcessor(jets=config, root_layout=root_layout or RootLayout())
    started = time.perf_counter()
    dataset = _prepare(inputs, output, processor, extra_metadata)
    with dask_client(workers, scheduler) as client:
        _build(dataset, chunk_size)
        (computed,) = _compute_all([dataset], client)
    return _finish(dataset, computed, write_histograms, started)


_DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def load_fileset(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read a coffea fileset (JSON or YAML): ``{dataset: {"files": [paths] | {path: tree}, "metadata": {...}}}``
    (a bare list of files is accepted for a dataset). Relative paths are relative to the fileset file.
    Returns ``{dataset: {"files": [Path], "tree": str | None, "metadata": dict}}``; every problem is a
    ValueError naming the file and the dataset key."""
    import json

    import yaml

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such fileset file")
    text = path.read_text()
    try:
        raw = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: not a valid JSON/YAML fileset ({error})") from None
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"{path}: a fileset maps dataset names to their files, got {type(raw).__name__}")
    fileset: dict[str, dict[str, Any]] = {}
    for name, entry in raw.items():
        where = f"{path}: dataset {name!r}"
        if not isinstance(name, str) or not _DATASET_NAME.match(name):
            raise ValueError(
                f"{where}: a dataset name is letters, digits and _.+- (it names the output file)"
            )
        if isinstance(entry, list):
            entry = {"files": entry}
        if not isinstance(entry, dict) or "files" not in entry:
            raise ValueError(f"{where}: needs 'files' (a list of paths or a mapping path: tree name)")
        unknown = sorted(set(entry) - {"files", "metadata"})
        if unknown:
            raise ValueError(f"{where}: unknown keys {unknown} (allowed: files, metadata)")
        files, trees = entry["files"], set()
        if isinstance(files, dict):
            trees = {str(t) for t in files.values() if t is not None}
            files = list(files)
        if not isinstance(files, list) or not files or not all(isinstance(f, str) for f in files):
            raise ValueError(f"{where}: 'files' must be a non-empty list of paths (or a mapping path: tree)")
        if len(trees) > 1:
            raise ValueError(f"{where}: one tree name per dataset, got {sorted(trees)}")
        metadata = entry.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise ValueError(f"{where}: 'metadata' must be a mapping, got {metadata!r}")
        resolved = [Path(f).expanduser() for f in files]
        resolved = [f if f.is_absolute() else (path.parent / f).resolve() for f in resolved]
        fileset[name] = {"files": resolved, "tree": trees.pop() if trees else None, "metadata": metadata}
    return fileset


def process_fileset(
    fileset: str | Path | Mapping[str, Mapping[str, Any]],
    output_dir: str | Path,
    *,
    root_layout: RootLayout | None = None,
    **kwargs: Any,
) -> dict[str, pd.DataFrame]:
    """:func:`process_files` for every dataset of a coffea fileset: ``output_dir/<dataset>.parquet`` (with
    its ``.cutflow.json`` and ``.hists.root``), and ``output_dir/fileset.json`` listing each dataset's
    files, metadata, output and event counts. The dataset name and metadata also go into each table's
    parquet metadata. Every file of every dataset is checked before any work starts; all datasets' files are
    processed as one Dask graph on one cluster."""
    output_dir = Path(output_dir)
    if not isinstance(fileset, Mapping):
        fileset = load_fileset(fileset)
    layout = root_layout or RootLayout()
    layouts = {
        name: dataclasses.replace(layout, tree=entry["tree"]) if entry.get("tree") else layout
        for name, entry in fileset.items()
    }
    workers, scheduler = kwargs.pop("workers", None), kwargs.pop("scheduler", None)
    chunk_size = kwargs.pop("chunk_size", 10_000)
    write_histograms = kwargs.pop("write_histograms", True)
    config = kwargs.pop("jet_config", None) or JetConfig(jet_radius=kwargs.pop("jet_radius", 1.0))
    if kwargs:
        raise TypeError(f"process_fileset: unexpected arguments {sorted(kwargs)}")
    started = time.perf_counter()
    datasets = {}
    for name, entry in fileset.items():  # fail in the first second, not after the first dataset
        try:
            datasets[name] = _prepare(
                entry["files"],
                output_dir / f"{name}.parquet",
                DijetProcessor(jets=config, root_layout=layouts[name]),
                {"dataset": name, "metadata": entry["metadata"]},
            )
        except (ValueError, FileNotFoundError) as error:
            raise type(error)(f"dataset {name!r}: {error}") from None
    output_dir.mkdir(parents=True, exist_ok=True)
    for name, dataset in datasets.items():
        log.info("dataset %s: %d file(s) -> %s", name, len(dataset.paths), dataset.output)
    with dask_client(workers, scheduler) as client:  # every dataset's files in one graph
        for dataset in datasets.values():
            _build(dataset, chunk_size)
        computed = _compute_all(list(datasets.values()), client)
    tables, summary = {}, {}
    for (name, dataset), outputs in zip(datasets.items(), computed):
        tables[name] = _finish(dataset, outputs, write_histograms, started)
        summary[name] = {
            "files": [str(f) for f in dataset.paths],
            "metadata": fileset[name]["metadata"],
            "output": str(dataset.output),
            "events": len(tables[name]),
        }
    write_json(output_dir / "fileset.json", summary)
    return tables


def write_histograms_root(histogram, path: Path) -> Path:
    """Write the m_JJ histogram as TH1s: ``mjj`` (all), ``mjj_background``, ``mjj_signal``, ``mjj_unlabelled``."""
    import hist
    import uproot

    with atomic_output(path) as tmp:
        with uproot.recreate(tmp) as handle:
            handle["mjj"] = histogram[:, sum]
            for label, name in ((0, "background"), (1, "signal"), (-1, "unlabelled")):
                handle[f"mjj_{name}"] = histogram[:, hist.loc(label)]
    log.info("wrote m_JJ histograms to %s", path)
    return path

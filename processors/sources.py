"""Readers: any event input → a dask-awkward array of events ``{particles: [{pt, eta, phi}], label, event}``.

Every reader is chunked through :func:`dask_awkward.from_map` (directly, or via ``uproot.dask``), so
no file is ever read whole: memory is bounded by the chunk size. Each chunk is validated; every error
names the file and the event range.

Inputs:

- LHCO raw HDF5 (pandas ``df`` key; 2100 columns = (pT, η, φ) × 700 zero-padded massless particles,
  optional label column 2100; black boxes have none). Both pandas layouts are read: ``fixed``
  (``/df/block0_values``, the layout of the released files) and ``table`` (``/df/table``).
- ROOT TTrees through uproot: a flat tree with jagged particle branches (default: the layout uproot's
  ``mktree`` writes from a record array ``part``: ``npart, part_pt, part_eta, part_phi``), or Delphes
  output (collections such as ``EFlowTrack``/``EFlowPhoton``/``EFlowNeutralHadron`` or ``Particle``).
- The official LHCO 15-column *feature* HDF5 is already jets: see :mod:`radar.processors.features`.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import awkward as ak
import dask_awkward as dak
import numpy as np

from radar.processors.io import error_summary

log = logging.getLogger(__name__)

N_PARTICLES = 700
N_PARTICLE_COLUMNS = 3 * N_PARTICLES  # 2100


@dataclasses.dataclass(frozen=True)
class LHCORawInfo:
    """What a raw LHCO HDF5 file holds (read from metadata only; no event data is read)."""

    path: str
    node: str  # "/df/block0_values" (fixed) or "/df/table" (table)
    layout: str  # "fixed" | "table"
    n_events: int
    n_columns: int

    @property
    def has_label(self) -> bool:
        return self.n_columns == N_PARTICLE_COLUMNS + 1


def inspect_lhco_raw(path: str | Path, key: str = "df") -> LHCORawInfo:
    """Open ``path`` and check it is a raw LHCO file; raise a clear error otherwise."""
    import tables

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file (0 bytes), expected an LHCO raw HDF5 file")
    try:
        handle = tables.open_file(str(path), mode="r")
    except Exception as error:
        raise OSError(
            f"{path}: not a readable HDF5 file (truncated or corrupt?): {error_summary(error)}"
        ) from error
    with handle:
        if f"/{key}/block0_values" in handle:
            node = handle.get_node(f"/{key}/block0_values")
            if f"/{key}/block1_values" in handle:
                raise ValueError(f"{path}: LHCO raw frame has several dtype blocks; expected one float block")
            # pandas stores an empty frame as a 1x1 placeholder, the true (empty) shape in an attribute
            if "shape" in node.attrs._f_list("user") and 0 in tuple(node.attrs.shape):
                raise ValueError(f"{path}: file holds no events")
            layout, shape = "fixed", tuple(int(d) for d in node.shape)
        elif f"/{key}/table" in handle:
            node = handle.get_node(f"/{key}/table")
            if "values_block_0" not in node.coldtypes:
                raise ValueError(f"{path}: table layout without a values_block_0 column")
            layout = "table"
            shape = (int(node.nrows), int(np.prod(node.coldtypes["values_block_0"].shape or (1,))))
        else:
            groups = [n._v_pathname for n in handle.walk_nodes("/", classname="Group")][:10]
            raise ValueError(
                f"{path}: no pandas frame under key '{key}' (looked for /{key}/block0_values and "
                f"/{key}/table; file has {groups})"
            )
        node_path = node._v_pathname
    if shape[0] == 0:
        raise ValueError(f"{path}: file holds no events")
    if len(shape) != 2 or shape[1] not in (N_PARTICLE_COLUMNS, N_PARTICLE_COLUMNS + 1):
        raise ValueError(
            f"{path}: expected {N_PARTICLE_COLUMNS} particle columns (+1 label column), got shape {shape}; "
            "is this an LHCO raw file? (15-column feature files are read by processors.features)"
        )
    return LHCORawInfo(str(path), node_path, layout, int(shape[0]), int(shape[1]))


def particles_from_padded(
    block: np.ndarray, *, origin: str = "", first_event: int = 0
) -> tuple[ak.Array, np.ndarray | None]:
    """Turn a (N, 2100[+1]) zero-padded LHCO block into jagged particles (and labels, or None).

    Particles with pT == 0 are padding. Raises ``ValueError`` naming ``origin`` and the event range on
    NaN/inf values, negative pT or a label other than 0/1.
    """
    n_events = len(block)
    where = f"{origin}: events {first_event}-{first_event + n_events - 1}"
    values = block[:, :N_PARTICLE_COLUMNS].reshape(n_events, N_PARTICLES, 3)
    finite = np.isfinite(values)
    if not finite.all():
        bad_events = first_event + np.unique(np.nonzero(~finite)[0])
        raise ValueError(f"{where}: NaN or inf particle values in events {bad_events[:10].tolist()}")
    pt = values[:, :, 0]
    if (pt < 0).any():
        bad_events = first_event + np.unique(np.nonzero(pt < 0)[0])
        raise ValueError(f"{where}: negative particle pT in events {bad_events[:10].tolist()}")
    real = pt > 0
    counts = real.sum(axis=1)
    particles = ak.zip(
        {
            "pt": ak.unflatten(pt[real], counts),
            "eta": ak.unflatten(values[:, :, 1][real], counts),
            "phi": ak.unflatten(values[:, :, 2][real], counts),
        }
    )
    labels = None
    if block.shape[1] == N_PARTICLE_COLUMNS + 1:
        labels = np.asarray(block[:, N_PARTICLE_COLUMNS], dtype=np.float64)
        if not np.isin(labels, (0.0, 1.0)).all():
            bad = first_event + np.nonzero(~np.isin(labels, (0.0, 1.0)))[0]
            raise ValueError(
                f"{where}: label column (2100) must be 0 or 1, bad in events {bad[:10].tolist()}"
            )
    return particles, labels


def _event_record(particles: ak.Array, labels: np.ndarray | None, first_event: int) -> ak.Array:
    n = len(particles)
    label = labels if labels is not None else np.full(n, -1.0)
    return ak.zip(
        {"particles": particles, "label": label, "event": np.arange(first_event, first_event + n)},
        depth_limit=1,
    )


def _empty_events() -> ak.Array:
    empty = np.zeros(0)
    particles = ak.unflatten(ak.zip({"pt": empty, "eta": empty, "phi": empty}), np.zeros(0, np.int64))
    return _event_record(particles, np.zeros(0), 0)


class LHCORawChunk:
    """Picklable ``from_map`` function: reads events ``[start, stop)`` of one raw LHCO file."""

    def __init__(self, info: LHCORawInfo):
        self.info = info

    def __call__(self, span: tuple[int, int]) -> ak.Array:
        import tables

        start, stop = span
        info = self.info
        try:
            with tables.open_file(info.path, mode="r") as handle:
                node = handle.get_node(info.node)
                block = node.read(start, stop)
        except Exception as error:
            raise OSError(
                f"{info.path}: cannot read events {start}-{stop - 1} (truncated or corrupt file?): "
                f"{error_summary(error)}"
            ) from error
        if info.layout == "table":
            block = np.asarray(block["values_block_0"]).reshape(stop - start, -1)
        block = np.asarray(block, dtype=np.float64)
        if len(block) != stop - start:
            raise OSError(f"{info.path}: events {start}-{stop - 1}: read {len(block)} rows (file truncated?)")
        particles, labels = particles_from_padded(block, origin=info.path, first_event=start)
        return _event_record(particles, labels, start)


def event_spans(n_events: int, chunk_size: int) -> list[tuple[int, int]]:
    if chunk_size < 1:
        raise ValueError(f"chunk size must be >= 1, got {chunk_size}")
    return [(s, min(s + chunk_size, n_events)) for s in range(0, n_events, chunk_size)]


def lhco_raw_chunks(path: str | Path, chunk_size: int = 10_000) -> tuple[LHCORawChunk, list[tuple[int, int]]]:
    """A raw LHCO HDF5 file as a picklable chunk reader and its event spans (``[start, stop)``, at most
    ``chunk_size`` events each); the file is checked and what was found logged."""
    info = inspect_lhco_raw(path)
    spans = event_spans(info.n_events, chunk_size)
    log.info(
        "%s: %d events (%s layout, %s), %d chunks of <= %d",
        path,
        info.n_events,
        info.layout,
        "labelled" if info.has_label else "no labels",
        len(spans),
        chunk_size,
    )
    return LHCORawChunk(info), spans


def lhco_raw_events(path: str | Path, chunk_size: int = 10_000) -> dak.Array:
    """Lazily read a raw LHCO HDF5 file as dask-awkward events, one partition per ``chunk_size`` events."""
    read, spans = lhco_raw_chunks(path, chunk_size)
    meta = ak.Array(_empty_events().layout.to_typetracer(forget_length=True))
    return dak.from_map(
        read,
        spans,
        label=f"lhco-raw-{Path(path).stem}",
        meta=meta,
        divisions=tuple([s for s, _ in spans] + [spans[-1][1]]),
    )


@dataclasses.dataclass(frozen=True)
class RootLayout:
    """Where the particles are in a ROOT tree.

    ``flat``: jagged branches ``{prefix}pt``, ``{prefix}eta``, ``{prefix}phi`` (default prefix ``part_``).
    ``delphes``: collections (``EFlowTrack``, ``EFlowPhoton``, ``EFlowNeutralHadron``, ``Particle`` ...)
    with branches ``{collection}.PT`` (or ``.ET`` for towers), ``.Eta``, ``.Phi``; the collections are
    concatenated per event. For ``Particle``, only stable (``Status == 1``) particles are kept and
    neutrinos are dropped. Events read with coffea's ``DelphesSchema`` (collections as records) work too.
    Event weights: ``weight_branch`` when the tree has it, else (Delphes) ``Event.Weight``, else 1.
    """

    tree: str = "events"
    kind: str = "flat"  # "flat" | "delphes"
    prefix: str = "part_"
    collections: tuple[str, ...] = ("EFlowTrack", "EFlowPhoton", "EFlowNeutralHadron")
    label_branch: str | None = "label"
    #: per-event weight: this branch when present (flat trees), else for Delphes ``Event.Weight``; none: 1
    weight_branch: str | None = "weight"

    def __post_init__(self) -> None:
        if self.kind not in ("flat", "delphes"):
            raise ValueError(f"ROOT layout kind must be 'flat' or 'delphes', got {self.kind!r}")


def _delphes_field(fields: list[str], collection: str, quantity: str) -> str | None:
    for sep in (".", "_", "/"):
        name = f"{collection}{sep}{quantity}"
        if name in fields:
            return name
    return None


def chunk_origin(events: ak.Array, default: str = "ROOT tree") -> str:
    """What a chunk of events came from, for error messages: the dataset (radar names it after the input
    file) when the events carry coffea metadata."""
    metadata = getattr(events, "metadata", None) or {}
    if metadata.get("filename"):  # coffea's Runner: the file and the entry range of the chunk
        return f"{metadata['filename']} (entries {metadata.get('entrystart')}-{metadata.get('entrystop')})"
    dataset = metadata.get("dataset")
    return str(dataset) if dataset else default


def check_particles(
    columns: dict[str, ak.Array], origin: str, names: dict[str, str] | None = None
) -> ak.Array:
    """The one validation of particle-level inputs read from branches (flat ROOT, Delphes, DelphesSchema):
    ``columns`` ``{"pt", "eta", "phi"}`` must each hold one list of numbers per event, finite, with ``pt >= 0``.
    Returns the particles (records, float64); raises ValueError naming ``origin``, the branch (``names``:
    field → branch name) and the events (indices within this chunk) otherwise — before fastjet, which crashes
    on NaN, and before zipping, which would broadcast a flat branch into every particle. (The LHCO raw reader
    checks its zero-padded block the same way before it drops the padding.)"""
    names = names or {}
    if ak.backend(columns["pt"]) == "typetracer":  # dask-awkward's graph building: structure only
        return ak.zip({f: ak.values_astype(columns[f], np.float64) for f in ("pt", "eta", "phi")})
    checked = {}
    for field in ("pt", "eta", "phi"):
        values = columns[field]
        branch = names.get(field, field)
        if values.ndim != 2:
            raise ValueError(
                f"{origin}: particle branch {branch!r} must hold one list per event (a jagged branch), "
                f"got type {ak.type(values)}"
            )
        flat = ak.to_numpy(ak.flatten(values))
        if flat.dtype.kind not in "fiu":
            raise ValueError(f"{origin}: particle branch {branch!r} has dtype {flat.dtype}; expected numbers")
        flat = flat.astype(np.float64)
        counts = ak.to_numpy(ak.num(values, axis=1))
        event_of = np.repeat(np.arange(len(counts)), counts)
        bad = ~np.isfinite(flat) if field != "pt" else ~(np.isfinite(flat) & (flat >= 0))
        if bad.any():
            events = np.unique(event_of[bad])
            what = "NaN or inf" if field != "pt" else "NaN, inf or negative"
            raise ValueError(
                f"{origin}: {what} values in particle branch {branch!r} in {events.size} events "
                f"(events {events[:10].tolist()} of this chunk)"
            )
        checked[field] = ak.unflatten(flat, counts)
    return ak.zip(checked)


def check_labels(labels: ak.Array, origin: str, branch: str) -> ak.Array:
    """Event labels must be 1 (signal), 0 (background) or -1 (unknown): ValueError naming the branch
    otherwise. Returns them as float64."""
    if ak.backend(labels) == "typetracer":
        return ak.values_astype(labels, np.float64)
    values = ak.to_numpy(labels).astype(np.float64) if labels.ndim == 1 else None
    if values is None:
        raise ValueError(
            f"{origin}: label branch {branch!r} must hold one number per event, got {ak.type(labels)}"
        )
    bad = np.flatnonzero(~np.isin(values, (0.0, 1.0, -1.0)))
    if bad.size:
        raise ValueError(
            f"{origin}: label branch {branch!r} must be 1, 0 or -1; {bad.size} events are not "
            f"(events {bad[:10].tolist()} of this chunk: {values[bad[:5]].tolist()})"
        )
    return ak.Array(values)


def particles_from_branches(events: ak.Array, layout: RootLayout, origin: str | None = None) -> ak.Array:
    """Build ``{pt, eta, phi}`` particle lists from the raw branches of a ROOT tree chunk, validated
    (:func:`check_particles`)."""
    origin = origin or chunk_origin(events)
    fields = list(events.fields)
    if layout.kind == "flat":
        names = [f"{layout.prefix}{q}" for q in ("pt", "eta", "phi")]
        missing = [n for n in names if n not in fields]
        if missing:
            raise ValueError(f"{origin}: missing particle branches {missing} (has {fields[:20]})")
        fields_of = dict(zip(("pt", "eta", "phi"), names))
        return check_particles({q: events[n] for q, n in fields_of.items()}, origin, fields_of)
    parts = []
    for collection in layout.collections:
        if collection in fields and events[collection].fields:
            parts.append(_schema_collection(events[collection], collection, origin))
            continue
        pt_name = _delphes_field(fields, collection, "PT") or _delphes_field(fields, collection, "ET")
        eta_name = _delphes_field(fields, collection, "Eta")
        phi_name = _delphes_field(fields, collection, "Phi")
        if not (pt_name and eta_name and phi_name):
            raise ValueError(
                f"{origin}: Delphes collection {collection!r} needs PT (or ET), Eta and Phi branches "
                f"(has {[f for f in fields if f.startswith(collection)][:10]})"
            )
        fields_of = {"pt": pt_name, "eta": eta_name, "phi": phi_name}
        columns = {q: events[n] for q, n in fields_of.items()}
        if collection == "Particle":
            status, pid = (_delphes_field(fields, collection, q) for q in ("Status", "PID"))
            if status and pid:
                absid = abs(events[pid])
                visible = (events[status] == 1) & (absid != 12) & (absid != 14) & (absid != 16)
                columns = {q: values[visible] for q, values in columns.items()}
        parts.append(check_particles(columns, origin, fields_of))
    return ak.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]


def _schema_collection(coll: ak.Array, collection: str, origin: str) -> ak.Array:
    """``{pt, eta, phi}`` of one collection of events read with coffea's ``DelphesSchema`` (records with
    ``pt``/``eta``/``phi`` aliases, or Delphes' ``PT``/``ET``, ``Eta``, ``Phi``)."""
    names = coll.fields

    def first(*candidates: str) -> str | None:
        return next((c for c in candidates if c in names), None)

    pt, eta, phi = first("pt", "PT", "ET"), first("eta", "Eta"), first("phi", "Phi")
    if not (pt and eta and phi):
        raise ValueError(
            f"{origin}: collection {collection!r} needs pt (PT or ET), eta and phi fields (has {names[:10]})"
        )
    columns = {"pt": coll[pt], "eta": coll[eta], "phi": coll[phi]}
    if collection == "Particle" and "Status" in names and "PID" in names:
        absid = abs(coll["PID"])
        visible = (coll["Status"] == 1) & (absid != 12) & (absid != 14) & (absid != 16)
        columns = {q: values[visible] for q, values in columns.items()}
    fields = {q: f"{collection}.{name}" for q, name in (("pt", pt), ("eta", eta), ("phi", phi))}
    return check_particles(columns, origin, fields)


def root_branch_filter(layout: RootLayout) -> list[str]:
    """uproot ``filter_name`` patterns for the branches a layout needs."""
    if layout.kind == "flat":
        names = [f"{layout.prefix}{q}" for q in ("pt", "eta", "phi")]
    else:
        names = [
            f"{c}{sep}{q}"
            for c in layout.collections
            for sep in (".", "_")
            for q in ("PT", "ET", "Eta", "Phi", "Status", "PID")
        ]
        names += [f"/{c}/{c}.*" for c in layout.collections]  # Delphes split-branch paths
    if layout.label_branch:
        names.append(layout.label_branch)
    if layout.weight_branch:
        names.append(layout.weight_branch)
    if layout.kind == "delphes":
        names += ["Event.Weight", "Event_Weight", "/Event/Event.Weight"]
    return names


def weights_from_branches(events: ak.Array, layout: RootLayout) -> ak.Array | None:
    """Per-event weights (N,) of a ROOT tree chunk: ``layout.weight_branch`` when present, else Delphes'
    ``Event.Weight`` (a branch, or the ``Event`` collection of ``DelphesSchema``: its first entry); None
    when the events carry no weight."""
    fields = list(events.fields)
    if layout.weight_branch and layout.weight_branch in fields:
        return events[layout.weight_branch] * 1.0
    if layout.kind != "delphes":
        return None
    if "Event" in fields and "Weight" in events["Event"].fields:
        weight = events["Event"]["Weight"]
    else:
        name = _delphes_field(fields, "Event", "Weight")
        if name is None:
            return None
        weight = events[name]
    if weight.ndim > 1:  # Delphes stores Event as a collection of one entry per event
        weight = ak.fill_none(ak.firsts(weight), 1.0)
    return weight * 1.0


def check_root_input(path: str | Path, layout: RootLayout) -> int:
    """Open a ROOT file, check the tree and branches exist; return the number of entries."""
    import uproot

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        handle = uproot.open(path)
    except Exception as error:
        raise OSError(f"{path}: not a readable ROOT file (truncated or corrupt?): {error}") from error
    with handle:
        if layout.tree not in handle:
            raise ValueError(f"{path}: no tree {layout.tree!r} (has {list(handle.keys())[:10]})")
        tree = handle[layout.tree]
        n_entries = int(tree.num_entries)
        branches = set(tree.keys(recursive=True, full_paths=False)) | set(tree.keys(recursive=True))
        if layout.kind == "flat":
            missing = [
                f"{layout.prefix}{q}" for q in ("pt", "eta", "phi") if f"{layout.prefix}{q}" not in branches
            ]
            if missing:
                raise ValueError(
                    f"{path}: tree {layout.tree!r} lacks particle branches {missing} "
                    f"(has {sorted(branches)[:15]}); set the branch prefix"
                )
    if n_entries == 0:
        raise ValueError(f"{path}: tree {layout.tree!r} holds no events")
    return n_entries


def is_root_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() == ".root"


def is_lhco_feature_file(path: str | Path) -> bool:
    """True for the official 15-column LHCO feature HDF5 (already jets, no particles)."""
    import tables

    try:
        with tables.open_file(str(path), mode="r") as handle:
            for node in handle.walk_nodes("/", classname="Leaf"):
                shape = getattr(node, "shape", ())
                if node.name.endswith("_values") and len(shape) == 2 and shape[1] in (14, 15):
                    return True
                if node.name == "table" and "values_block_0" in getattr(node, "coldtypes", {}):
                    width = int(np.prod(node.coldtypes["values_block_0"].shape or (1,)))
                    return width in (14, 15)
    except Exception:
        return False
    return False

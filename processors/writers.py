"""Writers for particle-level event files: the LHC Olympics raw HDF5 layout and a flat ROOT TTree.

:class:`LHCORawWriter` appends chunks of events to an HDF5 file whose layout is exactly the pandas
"fixed" format of the official LHCO R&D file (group ``df`` with ``axis0``, ``axis1``, ``block0_items``,
``block0_values`` and the pandas attributes), so ``pandas.read_hdf(path)`` returns the same
2101-column float64 frame (2100 without the label) that every LHCO tool reads. Column ``3i`` is the pT
[GeV] of particle ``i`` (0..699), ``3i+1`` its eta, ``3i+2`` its phi; zero padded; column 2100 the label.

The values and the index are PyTables ``EArray`` nodes, so the file grows chunk by chunk with flat
memory. While it is being written the file is ``<path>.part`` and carries the number of complete
events and a free-form JSON progress state in the attributes of ``/df``; a killed job reopens the
``.part`` file, truncates anything past the last complete chunk, and continues. Only a finished file is
renamed to ``path`` (atomic rename), so a file under the final name is always complete.

:func:`write_root_tree` writes the same events as a ROOT TTree ``events`` with the branches
``npart, part_pt, part_eta, part_phi[, label]`` (the layout radar's ROOT reader expects by default).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

log = logging.getLogger(__name__)

N_PARTICLES = 700
"""Particles per event in the LHCO raw layout (3 columns each)."""

_PANDAS_GROUP_ATTRS = {
    "pandas_type": "frame",
    "pandas_version": "0.15.2",
    "encoding": "UTF-8",
    "errors": "strict",
    "ndim": np.int64(2),
    "nblocks": np.int64(1),
    "axis0_variety": "regular",
    "axis1_variety": "regular",
    "block0_items_variety": "regular",
}
_STATE_ATTR = "radar_state"
_COMPLETE_ATTR = "radar_complete_events"
_TRUNCATED_ATTR = "radar_truncated_events"


def pack_events(
    particles: ak.Array,
    label: np.ndarray | None = None,
    *,
    n_particles: int = N_PARTICLES,
    sort_by_pt: bool = False,
) -> tuple[np.ndarray, int]:
    """Pack events into the LHCO raw row layout.

    ``particles``: one list per event of records with fields ``pt, eta, phi`` (GeV). Events with more
    than ``n_particles`` keep their ``n_particles`` highest-pT particles (in their original order unless
    ``sort_by_pt``). Returns ``(rows, n_truncated)`` with ``rows`` of shape
    ``(n_events, 3 * n_particles [+ 1])`` float64, zero padded, the label (if given) in the last column.
    """
    n_events = len(particles)
    for field in ("pt", "eta", "phi"):
        if field not in particles.fields:
            raise ValueError(f"particles need fields pt, eta, phi; got {particles.fields}")
    if label is not None:
        label = np.asarray(label, dtype="float64")
        if label.shape != (n_events,):
            raise ValueError(f"label has shape {label.shape}, expected ({n_events},) like the particles")
    counts = ak.to_numpy(ak.num(particles.pt, axis=1))
    n_truncated = int(np.count_nonzero(counts > n_particles))
    if sort_by_pt or n_truncated:
        order = ak.argsort(particles.pt, axis=1, ascending=False)[:, :n_particles]
        if not sort_by_pt:
            order = ak.sort(order, axis=1)  # back to the original order among the kept particles
        particles = particles[order]
    width = 3 * n_particles + (label is not None)
    rows = np.zeros((n_events, width), dtype="float64")
    counts = np.minimum(counts, n_particles)
    if n_events and counts.sum():
        event_of = np.repeat(np.arange(n_events), counts)
        slot = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        for k, field in enumerate(("pt", "eta", "phi")):
            rows[event_of, 3 * slot + k] = ak.to_numpy(ak.flatten(particles[field], axis=1)).astype("float64")
    if label is not None:
        rows[:, -1] = label
    return rows, n_truncated


def part_path(path: str | os.PathLike) -> Path:
    """The in-progress name of an output file (``<path>.part``)."""
    path = Path(path)
    return path.with_name(path.name + ".part")


class LHCORawWriter:
    """Append events chunk by chunk to an LHCO raw HDF5 file (pandas fixed layout), resumably.

    Use as a context manager::

        with LHCORawWriter("qcd.h5", with_label=True) as writer:
            writer.append(particles, label, state={"tasks_done": 3})

    A normal exit renames ``qcd.h5.part`` to ``qcd.h5``; an exception (or a kill) leaves the ``.part``
    file, which the next ``LHCORawWriter(..., resume=True)`` on the same path continues: its
    :attr:`n_events` and :attr:`state` are those of the last complete :meth:`append`.
    ``metadata`` (JSON-serialisable) is stored once in the ``radar_metadata`` attribute; on resume it
    must equal the stored one, so a partial file made with other settings is never extended.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        with_label: bool,
        *,
        n_particles: int = N_PARTICLES,
        sort_by_pt: bool = False,
        resume: bool = True,
        metadata: dict[str, Any] | None = None,
        complevel: int = 5,
    ) -> None:
        import tables

        self.path = Path(path)
        self.tmp_path = part_path(self.path)
        self.with_label = bool(with_label)
        self.n_particles = int(n_particles)
        self.sort_by_pt = bool(sort_by_pt)
        self.n_columns = 3 * self.n_particles + self.with_label
        self._metadata_json = json.dumps(metadata or {}, sort_keys=True, default=str)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume and self.tmp_path.exists():
            self._h5 = tables.open_file(str(self.tmp_path), mode="a")
            self._reopen()
        else:
            self.tmp_path.unlink(missing_ok=True)
            self._h5 = tables.open_file(str(self.tmp_path), mode="w")
            self._create(tables.Filters(complevel=complevel, complib="blosc", shuffle=True))
        self._closed = False

    # -- layout -------------------------------------------------------------------------------------
    def _create(self, filters) -> None:
        import tables

        h5 = self._h5
        group = h5.create_group("/", "df")
        for key, value in _PANDAS_GROUP_ATTRS.items():
            group._v_attrs[key] = value
        columns = np.arange(self.n_columns, dtype="int64")
        for name in ("axis0", "block0_items"):
            node = h5.create_carray(group, name, obj=columns, filters=filters)
            node._v_attrs.kind = "integer"
            node._v_attrs.name = None
            node._v_attrs.transposed = True
        index = h5.create_earray(
            group, "axis1", atom=tables.Int64Atom(), shape=(0,), filters=filters, chunkshape=(8192,)
        )
        index._v_attrs.kind = "integer"
        index._v_attrs.name = None
        index._v_attrs.transposed = True
        values = h5.create_earray(
            group,
            "block0_values",
            atom=tables.Float64Atom(),
            shape=(0, self.n_columns),
            filters=filters,
            chunkshape=(8, self.n_columns),
        )
        values._v_attrs.transposed = True
        group._v_attrs[_COMPLETE_ATTR] = np.int64(0)
        group._v_attrs[_TRUNCATED_ATTR] = np.int64(0)
        group._v_attrs[_STATE_ATTR] = "{}"
        group._v_attrs["radar_metadata"] = self._metadata_json
        h5.flush()

    def _reopen(self) -> None:
        where = f"{self.tmp_path}"
        try:
            group = self._h5.get_node("/df")
            values = group.block0_values
            index = group.axis1
            complete = int(group._v_attrs[_COMPLETE_ATTR])
            stored_meta = str(group._v_attrs["radar_metadata"])
        except Exception as error:  # any missing node/attribute: not a radar partial file
            self._h5.close()
            raise OSError(
                f"{where}: cannot resume, not a radar partial LHCO file ({error}); delete it"
            ) from error
        if values.shape[1] != self.n_columns:
            self._h5.close()
            raise ValueError(
                f"{where}: cannot resume, it has {values.shape[1]} columns but {self.n_columns} were asked "
                f"(with_label={self.with_label}); delete it or use the same settings"
            )
        if stored_meta != self._metadata_json:
            self._h5.close()
            raise ValueError(
                f"{where}: cannot resume, it was started with other settings\n  stored: {stored_meta}\n"
                f"  now:    {self._metadata_json}\ndelete it or rerun with the original settings"
            )
        # drop rows of a chunk that was being appended when the job died
        if values.nrows > complete:
            log.warning(
                "%s: dropping %d rows of an incomplete chunk (after event %d)",
                where,
                values.nrows - complete,
                complete,
            )
            values.truncate(complete)
        if index.nrows > complete:
            index.truncate(complete)
        if values.nrows != complete or index.nrows != complete:
            self._h5.close()
            raise OSError(
                f"{where}: inconsistent partial file ({values.nrows} rows, {index.nrows} index "
                f"entries, {complete} complete events); delete it"
            )
        log.info("%s: resuming after %d complete events", where, complete)
        self._h5.flush()

    # -- public -------------------------------------------------------------------------------------
    @property
    def n_events(self) -> int:
        """Events in complete chunks written so far."""
        return int(self._h5.get_node("/df")._v_attrs[_COMPLETE_ATTR])

    @property
    def n_truncated(self) -> int:
        """Events that had more than ``n_particles`` particles (their softest ones were dropped)."""
        return int(self._h5.get_node("/df")._v_attrs[_TRUNCATED_ATTR])

    @property
    def state(self) -> dict[str, Any]:
        """The progress state stored with the last complete chunk (``{}`` for a new file)."""
        return json.loads(str(self._h5.get_node("/df")._v_attrs[_STATE_ATTR]))

    def append(
        self, particles: ak.Array, label: np.ndarray | None = None, state: dict[str, Any] | None = None
    ) -> int:
        """Append one chunk of events (see :func:`pack_events`) and commit it; returns events written."""
        if self._closed:
            raise ValueError(f"{self.path}: writer is closed")
        if self.with_label and label is None:
            raise ValueError(f"{self.path}: this file has a label column; pass label for every event")
        if not self.with_label and label is not None:
            raise ValueError(f"{self.path}: this file has no label column (with_label=False); got labels")
        rows, n_truncated = pack_events(
            particles, label, n_particles=self.n_particles, sort_by_pt=self.sort_by_pt
        )
        return self.append_rows(rows, n_truncated=n_truncated, state=state)

    def append_rows(
        self, rows: np.ndarray, *, n_truncated: int = 0, state: dict[str, Any] | None = None
    ) -> int:
        """Append already packed rows of shape ``(n, n_columns)`` and commit them."""
        rows = np.asarray(rows, dtype="float64")
        if rows.ndim != 2 or rows.shape[1] != self.n_columns:
            raise ValueError(f"{self.path}: rows have shape {rows.shape}, expected (n, {self.n_columns})")
        group = self._h5.get_node("/df")
        start = self.n_events
        group.block0_values.append(rows)
        group.axis1.append(np.arange(start, start + len(rows), dtype="int64"))
        # the counter is written last: a kill before this line leaves rows the resume truncates
        self._h5.flush()
        if n_truncated:
            log.info(
                "%s: %d of %d events had more than %d particles; kept the %d hardest",
                self.path,
                n_truncated,
                len(rows),
                self.n_particles,
                self.n_particles,
            )
        group._v_attrs[_TRUNCATED_ATTR] = np.int64(self.n_truncated + n_truncated)
        group._v_attrs[_STATE_ATTR] = json.dumps(state or {}, sort_keys=True, default=str)
        group._v_attrs[_COMPLETE_ATTR] = np.int64(start + len(rows))
        self._h5.flush()
        log.debug("%s: events %d-%d written", self.tmp_path, start, start + len(rows))
        return len(rows)

    def close(self, finalize: bool = True) -> Path:
        """Close the file; with ``finalize`` rename ``<path>.part`` to ``path`` (the file is complete)."""
        if self._closed:
            return self.path if finalize else self.tmp_path
        n_events, n_truncated = self.n_events, self.n_truncated
        self._h5.close()
        self._closed = True
        if not finalize:
            log.info("%s: left incomplete after %d events (rerun to resume)", self.tmp_path, n_events)
            return self.tmp_path
        os.replace(self.tmp_path, self.path)
        log.info(
            "wrote %d events to %s (%d truncated to %d particles)",
            n_events,
            self.path,
            n_truncated,
            self.n_particles,
        )
        return self.path

    def __enter__(self) -> LHCORawWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(finalize=exc_type is None)


class RootTreeWriter:
    """Append events to a ROOT TTree ``events`` (``npart, part_pt, part_eta, part_phi[, label]``).

    Written to ``<path>.part`` and renamed on a normal exit; not resumable (a killed job restarts).
    """

    def __init__(self, path: str | os.PathLike, with_label: bool, tree: str = "events") -> None:
        import uproot

        self.path = Path(path)
        self.tmp_path = part_path(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.with_label = bool(with_label)
        self.tree_name = tree
        self.n_events = 0
        self._file = uproot.recreate(str(self.tmp_path))
        self._tree = None

    def append(self, particles: ak.Array, label: np.ndarray | None = None) -> int:
        """Append a chunk: ``particles`` one list per event of records ``pt, eta, phi`` (GeV)."""
        part = ak.zip({name: ak.values_astype(particles[name], "float32") for name in ("pt", "eta", "phi")})
        branches: dict[str, Any] = {"part": part}
        if self.with_label:
            if label is None:
                raise ValueError(f"{self.path}: this tree has a label branch; pass label for every event")
            branches["label"] = np.asarray(label, dtype="int32")
        if self._tree is None:
            # an explicit TTree (assigning arrays would make an RNTuple in recent uproot)
            self._tree = self._file.mktree(
                self.tree_name, {k: (v.type if k == "part" else v.dtype) for k, v in branches.items()}
            )
        self._tree.extend(branches)
        self.n_events += len(part)
        return len(part)

    def close(self, finalize: bool = True) -> Path:
        self._file.close()
        if not finalize:
            self.tmp_path.unlink(missing_ok=True)
            return self.tmp_path
        os.replace(self.tmp_path, self.path)
        log.info("wrote %d events to ROOT tree %s:%s", self.n_events, self.path, self.tree_name)
        return self.path

    def __enter__(self) -> RootTreeWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(finalize=exc_type is None)


def write_root_tree(path: str | os.PathLike, events: ak.Array, tree: str = "events") -> Path:
    """Write ``events`` (records with ``part`` = list of ``{pt, eta, phi}`` and optionally ``label``)
    as a ROOT TTree with branches ``npart, part_pt, part_eta, part_phi[, label]``, atomically."""
    if "part" not in events.fields:
        raise ValueError(f"{path}: events need a field 'part' (list of pt, eta, phi); got {events.fields}")
    with_label = "label" in events.fields
    with RootTreeWriter(path, with_label=with_label, tree=tree) as writer:
        writer.append(events["part"], ak.to_numpy(events["label"]) if with_label else None)
    return Path(path)

"""The feature table: radar's one interface between event processing and the search.

One row per event, energies and masses in GeV. Jets are ordered by mass for the features: J1 is the
lighter of the two leading-pT jets, J2 the heavier (``delta_mj = mj2 - mj1 >= 0``).

Four on-disk forms are read into the same :class:`pandas.DataFrame` by :func:`read_feature_table`:
radar parquet (written by ``radar process``), the official LHC Olympics 15-column feature HDF5, the
LHCO "peer reclustering" HDF5 files (``scalars_{bkg,sig}NN.h5``, 46 columns; also a directory of them),
and CATHODE-format ``.npy`` arrays (6 columns, TeV). HDF5 layouts are recognised by their columns.
Columns a source does not have are NaN.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from radar.processors.columns import FEATURE_COLUMNS, KINEMATIC_COLUMNS  # noqa: F401  (public here)
from radar.processors.io import error_summary

log = logging.getLogger(__name__)

#: The standard LHCO anomaly-detection inputs (CATHODE's four features; m_JJ is the conditional).
LHCO_FEATURES: tuple[str, ...] = ("mj1", "delta_mj", "tau21_j1", "tau21_j2")

LHCO_FEATURE_HDF5_COLUMNS: tuple[str, ...] = (
    "pxj1",
    "pyj1",
    "pzj1",
    "mj1",
    "tau1j1",
    "tau2j1",
    "tau3j1",
    "pxj2",
    "pyj2",
    "pzj2",
    "mj2",
    "tau1j2",
    "tau2j2",
    "tau3j2",
)
CATHODE_COLUMNS: tuple[str, ...] = ("mjj", "mj1", "delta_mj", "tau21_j1", "tau21_j2", "label")

#: Columns radar needs from a peer-reclustering file (``_1``/``_2``: the two leading-pT jets). The files'
#: ``tau21_*`` columns are not read: they hold τ3/τ2 (a bug of the producing code).
PEER_RECLUSTERING_COLUMNS: tuple[str, ...] = ("mjj",) + tuple(
    f"{quantity}_{jet}"
    for jet in ("1", "2")
    for quantity in ("pt", "eta", "phi", "mass", "tau1", "tau2", "tau3")
)
PEER_RECLUSTERING_PROVENANCE = "first 100k events of the LHCO R&D data, peer reclustering"
#: ``scalars_bkg01.h5`` ... ``scalars_sig10.h5``: kind (label 0 / 1) and file number (event order).
PEER_FILE_PATTERN = re.compile(r"^scalars_(bkg|sig)(\d+)\.h5$")
_PEER_LABELS = {"bkg": 0.0, "sig": 1.0}


def empty_feature_table() -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype="float64") for name in FEATURE_COLUMNS})


def conform(table: pd.DataFrame, source: str = "table") -> pd.DataFrame:
    """Return ``table`` with exactly :data:`FEATURE_COLUMNS` (float64; missing ones NaN, weight 1)."""
    out = pd.DataFrame(index=pd.RangeIndex(len(table)))
    for name in FEATURE_COLUMNS:
        if name in table.columns:
            out[name] = np.asarray(table[name], dtype="float64")
        elif name == "weight":
            out[name] = 1.0
        elif name == "label":
            out[name] = -1.0
        else:
            out[name] = np.nan
    extra = sorted(set(table.columns) - set(FEATURE_COLUMNS))
    if extra:
        log.debug("%s: ignoring extra columns %s", source, extra)
    return out


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def _read_hdf(path: Path, what: str) -> tuple[pd.DataFrame, str]:
    """The single pandas object in the HDF5 file ``path`` and its key (e.g. ``"/bkg"``)."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such {what}")
    try:
        with pd.HDFStore(path, mode="r") as store:
            keys = store.keys()
            frame = store[keys[0]] if len(keys) == 1 else None
    except Exception as error:  # pandas/PyTables raise many types for corrupt files
        raise OSError(f"{path}: cannot read as a {what} ({error_summary(error)})") from error
    if frame is None:
        raise ValueError(f"{path}: expected one pandas object in the {what}, found keys {keys}")
    return frame, keys[0]


def _require_columns(frame: pd.DataFrame, columns: tuple[str, ...], path: Path, layout: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: not {layout}, missing columns {missing} (has {list(frame.columns)[:20]})")
    _require_numbers(frame, (*columns, *(["label"] if "label" in frame.columns else [])), path)


def _require_numbers(frame: pd.DataFrame, columns: Sequence[str], path: Path) -> None:
    """Refuse columns that are not numbers (strings, objects, bools), naming the file and the column."""
    for name in columns:
        dtype = frame[name].dtype
        if not pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
            raise ValueError(f"{path}: column {name!r} has dtype {dtype}; expected numbers")


def _dijet_table(a: dict[str, np.ndarray], b: dict[str, np.ndarray], mjj: np.ndarray) -> pd.DataFrame:
    """Feature columns from the two leading jets ``a``, ``b`` (dicts of (N,) arrays ``m, pt, eta, phi,
    tau21, tau32``; GeV, radians) and ``mjj`` (N,) GeV, the jets ordered by mass (J1 = lighter).

    ``delta_r_jj`` is measured in η–φ with Δφ wrapped into [-π, π]. No ``ht``, ``met`` or ``label``.
    """
    dphi = np.mod(a["phi"] - b["phi"] + np.pi, 2 * np.pi) - np.pi
    heavier_first = a["m"] > b["m"]
    light = {k: np.where(heavier_first, b[k], a[k]) for k in a}
    heavy = {k: np.where(heavier_first, a[k], b[k]) for k in a}
    return pd.DataFrame(
        {
            "mjj": mjj,
            "mj1": light["m"],
            "mj2": heavy["m"],
            "delta_mj": heavy["m"] - light["m"],
            "tau21_j1": light["tau21"],
            "tau21_j2": heavy["tau21"],
            "tau32_j1": light["tau32"],
            "tau32_j2": heavy["tau32"],
            "delta_r_jj": np.hypot(a["eta"] - b["eta"], dphi),
            "pt_j1": light["pt"],
            "pt_j2": heavy["pt"],
            "eta_j1": light["eta"],
            "eta_j2": heavy["eta"],
        }
    )


def from_lhco_feature_hdf5(path: str | Path) -> pd.DataFrame:
    """Read the official LHCO 15-column feature HDF5 (``pxj1 ... tau3j2 [label]``, GeV).

    The file holds the two leading anti-kt R=1 jets; ``ht`` is their scalar pT sum (the file has no
    other jets) and ``met`` is NaN (not stored).
    """
    path = Path(path)
    frame, _ = _read_hdf(path, "LHCO feature file")
    return _lhco_features_from_frame(frame, path)


def _lhco_features_from_frame(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    _require_columns(frame, LHCO_FEATURE_HDF5_COLUMNS, path, "an LHCO 15-column feature file")
    for column in LHCO_FEATURE_HDF5_COLUMNS:
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy("float64")
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise ValueError(
                f"{path}: column {column!r} has {bad.size} NaN, inf or non-numeric values (rows {bad[:10].tolist()})"
            )
    if "label" in frame.columns:
        labels = pd.to_numeric(frame["label"], errors="coerce").to_numpy("float64")
        bad = np.flatnonzero(~np.isin(labels, (0.0, 1.0)))
        if bad.size:
            raise ValueError(
                f"{path}: column 'label' must be 0 or 1; {bad.size} rows are not (rows {bad[:10].tolist()})"
            )
    jets, four_momenta = [], []
    for j in ("1", "2"):
        px, py, pz, m = (frame[f"{c}j{j}"].to_numpy("float64") for c in ("px", "py", "pz", "m"))
        pt = np.hypot(px, py)
        four_momenta.append((np.sqrt(px**2 + py**2 + pz**2 + m**2), px, py, pz))
        t1, t2, t3 = (frame[f"tau{k}j{j}"].to_numpy("float64") for k in (1, 2, 3))
        jets.append(
            dict(
                m=m,
                pt=pt,
                eta=np.arcsinh(_safe_ratio(pz, pt)),
                phi=np.arctan2(py, px),
                tau21=_safe_ratio(t2, t1),
                tau32=_safe_ratio(t3, t2),
            )
        )
    (ea, pxa, pya, pza), (eb, pxb, pyb, pzb) = four_momenta
    mjj = np.sqrt(np.maximum((ea + eb) ** 2 - (pxa + pxb) ** 2 - (pya + pyb) ** 2 - (pza + pzb) ** 2, 0.0))
    table = _dijet_table(*jets, mjj)
    table["ht"] = jets[0]["pt"] + jets[1]["pt"]
    if "label" in frame.columns:
        table["label"] = frame["label"].to_numpy("float64")
    log.info("read %d events from LHCO feature file %s", len(table), path)
    return conform(table, str(path))


def _peer_label(path: Path, key: str) -> float:
    """1 for signal, 0 for background: from the file name ``scalars_{sig,bkg}NN.h5``, else from the HDF5
    key (``/sig``, ``/bkg``), else -1 (unknown, logged)."""
    match = PEER_FILE_PATTERN.match(path.name)
    kind = match.group(1) if match else key.strip("/")
    if kind in _PEER_LABELS:
        return _PEER_LABELS[kind]
    log.warning("%s: neither the file name nor the HDF5 key %r says bkg or sig: label -1", path, key)
    return -1.0


def from_peer_reclustering(path: str | Path) -> pd.DataFrame:
    """Read one LHCO peer-reclustering file ``scalars_{bkg,sig}NN.h5`` (46 columns, GeV) as a feature table.

    The file holds the two leading-pT anti-kt R=1.0 jets (``_1``, ``_2``) of each event. Jets are
    re-ordered by mass (J1 = lighter). τ ratios are ``tau2/tau1`` and ``tau3/tau2`` from the τ columns
    (0 where the denominator is 0: one- or two-constituent jets, as radar's own processing); they exceed
    1 for about 3 % of jets in the peer's convention (exclusive-kt axes, not minimised). ``ht`` is the
    scalar pT sum of *the two leading jets only* with pT > 30 GeV and |η| < 2.5 (radar's
    :class:`~radar.processors.jets.JetConfig` cuts; the file has no other jets), ``met`` is NaN (not stored),
    ``label`` 0 for ``scalars_bkg*``, 1 for ``scalars_sig*``, weight 1.
    """
    path = Path(path)
    frame, key = _read_hdf(path, "peer-reclustering file")
    return _peer_from_frame(frame, path, key)


def _peer_from_frame(frame: pd.DataFrame, path: Path, key: str) -> pd.DataFrame:
    from radar.processors.jets import JetConfig  # the ht jet cuts live there, once

    _require_columns(frame, PEER_RECLUSTERING_COLUMNS, path, "an LHCO peer-reclustering file")
    config = JetConfig()
    jets, ht = [], np.zeros(len(frame))
    for j in ("1", "2"):
        pt, eta, phi, m, t1, t2, t3 = (
            frame[f"{q}_{j}"].to_numpy("float64")
            for q in ("pt", "eta", "phi", "mass", "tau1", "tau2", "tau3")
        )
        jets.append(dict(m=m, pt=pt, eta=eta, phi=phi, tau21=_safe_ratio(t2, t1), tau32=_safe_ratio(t3, t2)))
        ht += np.where((pt > config.ht_jet_pt_min) & (np.abs(eta) < config.ht_jet_eta_max), pt, 0.0)
    table = _dijet_table(*jets, frame["mjj"].to_numpy("float64"))
    table["ht"] = ht
    table["label"] = _peer_label(path, key)
    log.info(
        "read %d events from peer-reclustering file %s (%s)", len(table), path, PEER_RECLUSTERING_PROVENANCE
    )
    return conform(table, str(path))


def peer_reclustering_files(directory: str | Path) -> list[Path]:
    """The ``scalars_{bkg,sig}NN.h5`` files in ``directory``: all background files, then all signal files,
    each in file-number order (01, 02, ... = event order)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such directory of peer-reclustering files")
    found = []
    for path in directory.iterdir():
        match = PEER_FILE_PATTERN.match(path.name)
        if match:
            found.append((match.group(1) != "bkg", int(match.group(2)), path))
    if not found:
        raise FileNotFoundError(
            f"{directory}: no peer-reclustering files (scalars_bkgNN.h5 / scalars_sigNN.h5) in it"
        )
    return [path for *_, path in sorted(found)]


def read_peer_reclustering_dir(directory: str | Path) -> pd.DataFrame:
    """All peer-reclustering files of ``directory`` in one feature table: background first, then signal,
    files in number order (see :func:`peer_reclustering_files`). Columns as :func:`from_peer_reclustering`.
    """
    files = peer_reclustering_files(directory)
    table = pd.concat([from_peer_reclustering(path) for path in files], ignore_index=True)
    n_sig = int((table["label"] == 1).sum())
    log.info(
        "read %d events (%d background, %d signal) from %d peer-reclustering files in %s: %s",
        len(table),
        int((table["label"] == 0).sum()),
        n_sig,
        len(files),
        directory,
        PEER_RECLUSTERING_PROVENANCE,
    )
    return table


def _read_feature_hdf5(path: Path) -> pd.DataFrame:
    """An HDF5 feature file of either layout, recognised by its columns (the closer match decides which
    layout's missing columns an error names)."""
    frame, key = _read_hdf(path, "feature HDF5 file")
    columns = set(frame.columns)
    peer = len(columns & set(PEER_RECLUSTERING_COLUMNS)) / len(PEER_RECLUSTERING_COLUMNS)
    lhco = len(columns & set(LHCO_FEATURE_HDF5_COLUMNS)) / len(LHCO_FEATURE_HDF5_COLUMNS)
    if peer > lhco:
        return _peer_from_frame(frame, path, key)
    return _lhco_features_from_frame(frame, path)


def from_cathode_npy(path: str | Path) -> pd.DataFrame:
    """Read a CATHODE-format array (``mjj, mj1, delta_mj [TeV], tau21_j1, tau21_j2, label``) in GeV."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such CATHODE-format file")
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as error:  # truncated, not .npy, or an object array (which would need pickle)
        raise OSError(f"{path}: not a readable .npy array ({error_summary(error)})") from error
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "fiu":
        raise ValueError(
            f"{path}: expected a numeric CATHODE array, got {getattr(array, 'dtype', type(array).__name__)}"
        )
    if array.ndim != 2 or array.shape[1] not in (5, 6):
        raise ValueError(
            f"{path}: expected a CATHODE array of shape (N, 6) [mjj, mj1, delta_mj, tau21_j1, tau21_j2, "
            f"label] (or N, 5 without label), got {array.shape}"
        )
    table = pd.DataFrame(array, columns=list(CATHODE_COLUMNS[: array.shape[1]]))
    for name in ("mjj", "mj1", "delta_mj"):
        table[name] = table[name] * 1000.0  # TeV -> GeV
    table["mj2"] = table["mj1"] + table["delta_mj"]
    log.info("read %d events from CATHODE array %s", len(table), path)
    return conform(table, str(path))


def read_feature_table(path: str | Path) -> pd.DataFrame:
    """Read any supported feature table with GeV columns: parquet, CATHODE ``.npy``, an HDF5 file (the
    LHCO 15-column features or a peer-reclustering file, told apart by their columns), or a directory of
    peer-reclustering files (:func:`read_peer_reclustering_dir`)."""
    path = Path(path)
    if path.is_dir():
        return check_values(read_peer_reclustering_dir(path), path)
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no such feature table (a .parquet, .h5 or .npy file, or a directory of "
            "peer-reclustering files)"
        )
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return check_values(from_cathode_npy(path), path)
    if suffix in (".h5", ".hdf5", ".hdf"):
        return check_values(_read_feature_hdf5(path), path)
    if suffix in (".parquet", ".pq"):
        try:
            table = pd.read_parquet(path)
        except Exception as error:  # pyarrow raises several types for truncated or foreign files
            raise OSError(f"{path}: not a readable parquet file ({error_summary(error)})") from error
        missing = [c for c in FEATURE_COLUMNS if c not in table.columns]
        if missing:
            raise ValueError(f"{path}: not a radar feature table, missing columns {missing}")
        _require_numbers(table, FEATURE_COLUMNS, path)
        log.info("read %d events from feature table %s", len(table), path)
        return check_values(table[list(FEATURE_COLUMNS)].astype("float64"), path)
    raise ValueError(f"{path}: unknown feature-table format {suffix!r} (expected .parquet, .h5 or .npy)")


def check_values(table: pd.DataFrame, source: str | Path) -> pd.DataFrame:
    """The values every feature table read from a file must hold (one check for every format), else a
    ValueError naming the file, the column and the first rows: m_JJ finite and >= 0, no ±inf in any column,
    ``label`` 1, 0 or -1 (unknown), ``weight`` not NaN. NaN in the other columns means "not stored" (a CATHODE
    array has no jet pT); the search refuses NaN in the features it uses. Returns ``table``."""

    def refuse(name: str, bad: np.ndarray, what: str) -> None:
        rows = np.flatnonzero(bad)
        if rows.size:
            raise ValueError(
                f"{source}: column {name!r}: {rows.size} rows {what} (rows {rows[:10].tolist()})"
            )

    mjj = table["mjj"].to_numpy("float64")
    refuse("mjj", ~np.isfinite(mjj) | (mjj < 0), "are not a finite m_JJ >= 0")
    for name in table.columns:
        refuse(name, np.isinf(table[name].to_numpy("float64")), "are ±inf")
    refuse("label", ~np.isin(table["label"].to_numpy("float64"), (-1.0, 0.0, 1.0)), "are not 1, 0 or -1")
    refuse("weight", np.isnan(table["weight"].to_numpy("float64")), "are NaN")
    return table


def write_feature_table(table: pd.DataFrame, path: str | Path, metadata: dict | None = None) -> Path:
    """Write a feature table as parquet, atomically, with optional provenance in the file metadata."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from radar.processors.io import atomic_output

    arrow = pa.Table.from_pandas(conform(table), preserve_index=False)
    if metadata:
        arrow = arrow.replace_schema_metadata(
            {**(arrow.schema.metadata or {}), b"radar": json.dumps(metadata, default=str).encode()}
        )
    with atomic_output(path) as tmp:
        pq.write_table(arrow, tmp)
    log.info("wrote %d events to %s", len(table), path)
    return Path(path)

"""The feature table: radar's one interface between event processing and the search.

One row per event, energies and masses in GeV. Jets are ordered by mass for the features: J1 is the
lighter of the two leading-pT jets, J2 the heavier (``delta_mj = mj2 - mj1 >= 0``).

Three on-disk forms are read into the same :class:`pandas.DataFrame` by :func:`read_feature_table`:
radar parquet (written by ``radar process``), the official LHC Olympics 15-column feature HDF5, and
CATHODE-format ``.npy`` arrays (6 columns, TeV). Columns a source does not have are NaN.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

FEATURE_COLUMNS: tuple[str, ...] = (
    "mjj", "mj1", "mj2", "delta_mj", "tau21_j1", "tau21_j2", "tau32_j1", "tau32_j2", "delta_r_jj",
    "pt_j1", "pt_j2", "eta_j1", "eta_j2", "ht", "met", "label", "weight",
)
"""Columns of every feature table, in order (GeV). ``label``: 1 signal, 0 background, -1 unknown."""

#: The standard LHCO anomaly-detection inputs (CATHODE's four features; m_JJ is the conditional).
LHCO_FEATURES: tuple[str, ...] = ("mj1", "delta_mj", "tau21_j1", "tau21_j2")

LHCO_FEATURE_HDF5_COLUMNS: tuple[str, ...] = (
    "pxj1", "pyj1", "pzj1", "mj1", "tau1j1", "tau2j1", "tau3j1",
    "pxj2", "pyj2", "pzj2", "mj2", "tau1j2", "tau2j2", "tau3j2",
)
CATHODE_COLUMNS: tuple[str, ...] = ("mjj", "mj1", "delta_mj", "tau21_j1", "tau21_j2", "label")


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


def from_lhco_feature_hdf5(path: str | Path) -> pd.DataFrame:
    """Read the official LHCO 15-column feature HDF5 (``pxj1 ... tau3j2 [label]``, GeV).

    The file holds the two leading anti-kt R=1 jets; ``ht`` is their scalar pT sum (the file has no
    other jets) and ``met`` is NaN (not stored).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such LHCO feature file")
    try:
        frame = pd.read_hdf(path)
    except Exception as error:  # pandas/PyTables raise many types for corrupt files
        raise OSError(f"{path}: cannot read as an LHCO feature HDF5 ({error})") from error
    missing = [c for c in LHCO_FEATURE_HDF5_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{path}: not an LHCO 15-column feature file, missing columns {missing} "
            f"(has {list(frame.columns)[:20]})"
        )
    jets = []
    for j in ("1", "2"):
        px, py, pz, m = (frame[f"{c}j{j}"].to_numpy("float64") for c in ("px", "py", "pz", "m"))
        pt = np.hypot(px, py)
        e = np.sqrt(px**2 + py**2 + pz**2 + m**2)
        eta = np.arcsinh(_safe_ratio(pz, pt))
        phi = np.arctan2(py, px)
        t1, t2, t3 = (frame[f"tau{k}j{j}"].to_numpy("float64") for k in (1, 2, 3))
        jets.append(dict(px=px, py=py, pz=pz, e=e, m=m, pt=pt, eta=eta, phi=phi,
                         tau21=_safe_ratio(t2, t1), tau32=_safe_ratio(t3, t2)))
    a, b = jets
    mjj = np.sqrt(np.maximum((a["e"] + b["e"]) ** 2 - (a["px"] + b["px"]) ** 2
                             - (a["py"] + b["py"]) ** 2 - (a["pz"] + b["pz"]) ** 2, 0.0))
    dphi = np.mod(a["phi"] - b["phi"] + np.pi, 2 * np.pi) - np.pi
    delta_r = np.hypot(a["eta"] - b["eta"], dphi)
    heavier_first = a["m"] > b["m"]
    light = {k: np.where(heavier_first, b[k], a[k]) for k in a}
    heavy = {k: np.where(heavier_first, a[k], b[k]) for k in a}
    table = pd.DataFrame({
        "mjj": mjj, "mj1": light["m"], "mj2": heavy["m"], "delta_mj": heavy["m"] - light["m"],
        "tau21_j1": light["tau21"], "tau21_j2": heavy["tau21"],
        "tau32_j1": light["tau32"], "tau32_j2": heavy["tau32"], "delta_r_jj": delta_r,
        "pt_j1": light["pt"], "pt_j2": heavy["pt"], "eta_j1": light["eta"], "eta_j2": heavy["eta"],
        "ht": a["pt"] + b["pt"],
    })
    if "label" in frame.columns:
        table["label"] = frame["label"].to_numpy("float64")
    log.info("read %d events from LHCO feature file %s", len(table), path)
    return conform(table, str(path))


def from_cathode_npy(path: str | Path) -> pd.DataFrame:
    """Read a CATHODE-format array (``mjj, mj1, delta_mj [TeV], tau21_j1, tau21_j2, label``) in GeV."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such CATHODE-format file")
    array = np.load(path, allow_pickle=False)
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
    """Read any supported feature table (parquet, LHCO feature HDF5, CATHODE .npy) with GeV columns."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return from_cathode_npy(path)
    if suffix in (".h5", ".hdf5", ".hdf"):
        return from_lhco_feature_hdf5(path)
    if suffix in (".parquet", ".pq"):
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such feature table")
        table = pd.read_parquet(path)
        missing = [c for c in FEATURE_COLUMNS if c not in table.columns]
        if missing:
            raise ValueError(f"{path}: not a radar feature table, missing columns {missing}")
        log.info("read %d events from feature table %s", len(table), path)
        return table[list(FEATURE_COLUMNS)].astype("float64")
    raise ValueError(f"{path}: unknown feature-table format {suffix!r} (expected .parquet, .h5 or .npy)")


def write_feature_table(table: pd.DataFrame, path: str | Path, metadata: dict | None = None) -> Path:
    """Write a feature table as parquet, atomically, with optional provenance in the file metadata."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from processors.io import atomic_output

    arrow = pa.Table.from_pandas(conform(table), preserve_index=False)
    if metadata:
        arrow = arrow.replace_schema_metadata(
            {**(arrow.schema.metadata or {}), b"radar": json.dumps(metadata, default=str).encode()}
        )
    with atomic_output(path) as tmp:
        pq.write_table(arrow, tmp)
    log.info("wrote %d events to %s", len(table), path)
    return Path(path)

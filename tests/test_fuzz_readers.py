"""Property-based fuzzing of every reader (hypothesis): random shapes, dtypes, NaN/inf/negative values,
missing or renamed columns and keys, foreign dtypes and truncated files. The property: a reader returns a
correct table (radar's columns, float64, m_JJ finite and >= 0, no ±inf, labels 1/0/-1) or raises one of
the errors the CLI reports as one line (ValueError, OSError, KeyError) naming the file, with no HDF5 back
trace in it — never another exception, a crash, or (for ``radar process``) a partial output.

Examples are bounded and derandomized (the same examples on every run), so CI stays fast and
reproducible."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is in the test extra")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

from radar.processors.features import (  # noqa: E402
    FEATURE_COLUMNS,
    LHCO_FEATURE_HDF5_COLUMNS,
    PEER_RECLUSTERING_COLUMNS,
    read_feature_table,
    write_feature_table,
)

FUZZ = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
USER_ERRORS = (ValueError, OSError, KeyError)

# what a cell may be turned into
BAD_VALUES = st.sampled_from([np.nan, np.inf, -np.inf, -1.0, 0.0, 1e30, -1e30])


def _check_error(error: BaseException, path: Path) -> None:
    text = str(error)
    assert path.name in text, f"the error does not name the file: {text!r}"
    assert "HDF5 error back trace" not in text and "Traceback" not in text, text


def _check_table(table: pd.DataFrame, n_rows: int | None = None) -> None:
    assert list(table.columns) == list(FEATURE_COLUMNS)
    assert all(dtype == np.float64 for dtype in table.dtypes)
    if n_rows is not None:
        assert len(table) == n_rows
    mjj = table["mjj"].to_numpy()
    assert np.isfinite(mjj).all() and (mjj >= 0).all()
    assert not np.isinf(table.to_numpy()).any()
    assert np.isin(table["label"].to_numpy(), (-1.0, 0.0, 1.0)).all()


def _read(path: Path, n_rows: int | None = None) -> pd.DataFrame | None:
    try:
        table = read_feature_table(path)
    except USER_ERRORS as error:
        _check_error(error, path)
        return None
    _check_table(table, n_rows)
    return table


def _process(path: Path, out: Path) -> None:
    """``radar process`` of one event file: a correct table that reads back, or a user error naming the file
    and nothing written."""
    from radar.processors.runner import process_files

    try:
        table = process_files([path], out / "f.parquet", workers=0)
    except USER_ERRORS as error:
        _check_error(error, path)
        assert not any(out.iterdir()), f"partial output left: {sorted(p.name for p in out.iterdir())}"
        return
    _check_table(table)
    _check_table(read_feature_table(out / "f.parquet"), len(table))


def _truncate(path: Path, fraction: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


@st.composite
def mutated_frame(draw, columns: tuple[str, ...], valid) -> tuple[pd.DataFrame, int]:
    """A valid frame of ``columns`` (``valid(n, rng)`` -> dict of arrays) with random mutations."""
    n = draw(st.integers(0, 12))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    frame = pd.DataFrame(valid(n, rng))
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["value", "drop", "rename", "string", "bool", "int"]))
        name = draw(st.sampled_from(list(frame.columns)))
        numeric = pd.api.types.is_numeric_dtype(frame[name].dtype)
        if kind == "value" and n and numeric:
            values = frame[name].to_numpy(dtype=float).copy()
            values[draw(st.integers(0, n - 1))] = draw(BAD_VALUES)
            frame[name] = values
        elif kind == "drop":
            frame = frame.drop(columns=[name])
        elif kind == "rename":
            frame = frame.rename(columns={name: name + "_x"})
        elif kind == "string":
            frame[name] = frame[name].astype(str)
        elif kind == "bool":
            frame[name] = frame[name].to_numpy() > 0
        elif kind == "int" and numeric:
            values = np.nan_to_num(frame[name].to_numpy(dtype=float), nan=0, posinf=0, neginf=0)
            frame[name] = np.clip(values, -1e9, 1e9).astype(np.int32)
        if frame.shape[1] == 0:
            break
    return frame, n


def _valid_features(n, rng):
    mj1 = rng.uniform(10, 500, n)
    mj2 = mj1 + rng.uniform(0, 300, n)
    pt = rng.uniform(1200, 3000, (2, n))
    return {
        "mjj": rng.uniform(2500, 6000, n),
        "mj1": mj1,
        "mj2": mj2,
        "delta_mj": mj2 - mj1,
        **{c: rng.uniform(0.1, 1.0, n) for c in ("tau21_j1", "tau21_j2", "tau32_j1", "tau32_j2")},
        "delta_r_jj": rng.uniform(0.5, 3, n),
        "pt_j1": pt[0],
        "pt_j2": pt[1],
        **{c: rng.uniform(-2, 2, n) for c in ("eta_j1", "eta_j2")},
        "ht": pt.sum(axis=0),
        "met": np.full(n, np.nan),
        "label": rng.integers(-1, 2, n).astype(float),
        "weight": np.ones(n),
    }


def _valid_lhco_features(n, rng):
    out = {}
    for j in ("1", "2"):
        out[f"pxj{j}"] = rng.uniform(-2000, 2000, n)
        out[f"pyj{j}"] = rng.uniform(-2000, 2000, n)
        out[f"pzj{j}"] = rng.uniform(-2000, 2000, n)
        out[f"mj{j}"] = rng.uniform(10, 500, n)
        for k in (1, 2, 3):
            out[f"tau{k}j{j}"] = rng.uniform(0.01, 0.5, n) / k
    out = {c: out[c] for c in LHCO_FEATURE_HDF5_COLUMNS if c in out}
    out["label"] = rng.integers(0, 2, n).astype(float)
    return out


def _valid_peer(n, rng):
    out = {c: rng.uniform(0.1, 1.0, n) for c in PEER_RECLUSTERING_COLUMNS}
    out["mjj"] = rng.uniform(2500, 6000, n)
    for j in ("1", "2"):
        out[f"pt_{j}"] = rng.uniform(1200, 3000, n)
        out[f"mass_{j}"] = rng.uniform(10, 500, n)
        out[f"eta_{j}"] = rng.uniform(-2, 2, n)
    return out


def _feature_columns_present(frame: pd.DataFrame) -> bool:
    return set(FEATURE_COLUMNS) <= set(frame.columns)


# ----------------------------------------------------------------------------------------------- the readers
@FUZZ
@given(
    array=hnp.arrays(
        dtype=st.sampled_from(["f8", "f4", "i4", "?", "U3"]),
        shape=st.tuples(st.integers(0, 10), st.sampled_from([1, 4, 5, 6, 7])) | st.tuples(st.integers(0, 6)),
    ),
    truncate=st.none() | st.floats(0.0, 0.99),
)
def test_cathode_npy_reader(array, truncate):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.npy"
        np.save(path, array, allow_pickle=False)
        if truncate is not None:
            _truncate(path, truncate)
        _read(path)


@FUZZ
@given(case=mutated_frame(tuple(FEATURE_COLUMNS), _valid_features), truncate=st.none() | st.floats(0.0, 0.99))
def test_parquet_feature_table_reader(case, truncate):
    frame, n = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.parquet"
        frame.to_parquet(path, index=False)
        if truncate is not None:
            _truncate(path, truncate)
        table = _read(path, n if truncate is None else None)
        if table is not None and truncate is None:
            # what was read is what was written
            np.testing.assert_array_equal(table["mjj"].to_numpy(), frame["mjj"].to_numpy(dtype=float))


@FUZZ
@given(
    case=mutated_frame(LHCO_FEATURE_HDF5_COLUMNS, _valid_lhco_features),
    key=st.sampled_from(["df", "events", "data"]),
    layout=st.sampled_from(["fixed", "table"]),
    truncate=st.none() | st.floats(0.0, 0.99),
)
def test_lhco_feature_hdf5_reader(case, key, layout, truncate):
    frame, n = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.h5"
        try:
            frame.to_hdf(path, key=key, format=layout)
        except (TypeError, ValueError):  # pandas cannot write some mutations (e.g. mixed in table format)
            return
        if truncate is not None:
            _truncate(path, truncate)
        _read(path, n if truncate is None else None)


@FUZZ
@given(case=mutated_frame(PEER_RECLUSTERING_COLUMNS, _valid_peer), truncate=st.none() | st.floats(0.0, 0.99))
def test_peer_reclustering_reader(case, truncate):
    frame, n = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scalars_bkg01.h5"
        frame.to_hdf(path, key="bkg", format="fixed")
        if truncate is not None:
            _truncate(path, truncate)
        table = _read(path, n if truncate is None else None)
        if table is not None:
            assert (table["label"] == 0).all()
        # the directory form reads the same file the same way
        directory = _read(Path(tmp), n if truncate is None else None)
        assert (table is None) == (directory is None)


@FUZZ
@given(
    block=hnp.arrays(
        dtype=st.sampled_from(["f8", "f4"]),
        shape=st.tuples(st.integers(0, 6), st.sampled_from([2100, 2101, 2102, 30])),
        elements=st.floats(-5, 3000, allow_nan=False, width=32),
    ),
    bad=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 2101), BAD_VALUES), max_size=3),
    truncate=st.none() | st.floats(0.0, 0.99),
)
def test_raw_lhco_events_through_radar_process(block, bad, truncate):
    block = np.array(block, dtype="float64")
    for row, column, value in bad:
        if row < block.shape[0] and column < block.shape[1]:
            block[row, column] = value
    with tempfile.TemporaryDirectory() as tmp:
        path, out = Path(tmp) / "fuzz_raw.h5", Path(tmp) / "out"
        out.mkdir()
        pd.DataFrame(block).to_hdf(path, key="df", format="fixed")
        if truncate is not None:
            _truncate(path, truncate)
        _process(path, out)


@FUZZ
@given(
    case=mutated_frame(tuple(FEATURE_COLUMNS), _valid_features),
)
def test_written_tables_read_back(case):
    """What radar writes (after conform) reads back equal, or the writer refuses naming the problem."""
    frame, n = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "back.parquet"
        if not _feature_columns_present(frame):
            return
        try:
            write_feature_table(frame, path)
        except USER_ERRORS:
            assert not path.exists()
            return
        _read(path, n)


@FUZZ
@given(
    counts=st.lists(st.integers(0, 25), max_size=6),
    seed=st.integers(0, 2**16),
    pt_dtype=st.sampled_from(["float64", "float32", "int32", "bool"]),
    bad=st.lists(
        st.tuples(st.sampled_from(["pt", "eta", "phi"]), st.integers(0, 200), BAD_VALUES), max_size=2
    ),
    labels=st.sampled_from([None, 0.0, 1.0, -1.0, 7.0, np.nan]),
    truncate=st.none() | st.floats(0.0, 0.99),
)
def test_root_events_through_radar_process(counts, seed, pt_dtype, bad, labels, truncate):
    import awkward as ak
    import uproot

    rng = np.random.default_rng(seed)
    total = sum(counts)
    flat = {
        "pt": rng.uniform(0, 1500, total),
        "eta": rng.uniform(-2.5, 2.5, total),
        "phi": rng.uniform(-np.pi, np.pi, total),
    }
    for quantity, index, value in bad:
        if index < total:
            flat[quantity][index] = value
    if pt_dtype != "float64":
        flat["pt"] = np.nan_to_num(flat["pt"], nan=0, posinf=0, neginf=0).astype(pt_dtype)
    particles = ak.unflatten(ak.zip(flat), np.asarray(counts, dtype=np.int64))
    with tempfile.TemporaryDirectory() as tmp:
        path, out = Path(tmp) / "fuzz.root", Path(tmp) / "out"
        out.mkdir()
        branches = {"part": particles}
        if labels is not None:
            branches["label"] = np.full(len(counts), labels)
        with uproot.recreate(path) as handle:
            handle.mktree(
                "events",
                {name: (a.type.content if name == "part" else a.dtype) for name, a in branches.items()},
            )
            handle["events"].extend(branches)
        if truncate is not None:
            _truncate(path, truncate)
        _process(path, out)

"""LHCO raw HDF5 writer (pandas fixed layout, chunked, resumable) and ROOT TTree writer."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pandas as pd
import pytest
import tables

from radar.processors.sources import particles_from_padded
from radar.processors.writers import LHCORawWriter, pack_events, part_path, write_root_tree


def _random_events(n: int, seed: int, max_particles: int = 60) -> ak.Array:
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, max_particles, size=n)
    total = counts.sum()
    flat = {
        "pt": rng.exponential(5.0, total) + 0.1,
        "eta": rng.uniform(-4, 4, total),
        "phi": rng.uniform(-np.pi, np.pi, total),
    }
    return ak.unflatten(ak.zip(flat), counts)


def test_round_trip_reproduces_real_lhco_file(lhco_tiny, tmp_path):
    real = pd.read_hdf(lhco_tiny)
    particles, label = particles_from_padded(real.to_numpy())
    out = tmp_path / "copy.h5"
    with LHCORawWriter(out, with_label=True) as writer:
        for start in range(0, len(real), 300):  # uneven chunks
            writer.append(particles[start : start + 300], label[start : start + 300])
    back = pd.read_hdf(out)
    pd.testing.assert_frame_equal(back, real)
    assert not part_path(out).exists()
    with tables.open_file(out) as h5:
        assert h5.root.df._v_attrs.pandas_type == "frame"
        assert isinstance(h5.root.df.block0_values, tables.EArray)


def test_no_label_layout_has_2100_columns(tmp_path):
    events = _random_events(20, 1)
    out = tmp_path / "blackbox.h5"
    with LHCORawWriter(out, with_label=False) as writer:
        writer.append(events)
    frame = pd.read_hdf(out)
    assert frame.shape == (20, 2100)
    assert list(frame.columns) == list(range(2100))
    particles, label = particles_from_padded(frame.to_numpy())
    assert label is None
    assert ak.to_list(particles) == ak.to_list(events)


def test_events_above_700_particles_keep_the_hardest_in_original_order():
    rng = np.random.default_rng(2)
    pt = rng.permutation(np.arange(1, 751, dtype=float))  # 750 particles, distinct pT
    events = ak.Array([{"pt": p, "eta": np.zeros(750), "phi": np.zeros(750)} for p in [pt]])
    events = ak.zip({"pt": events.pt, "eta": events.eta, "phi": events.phi})
    rows, n_truncated = pack_events(events)
    assert n_truncated == 1
    kept = rows[0, 0:2100:3]
    np.testing.assert_array_equal(kept, pt[pt > 50])  # the 700 hardest, order unchanged
    rows_sorted, _ = pack_events(events, sort_by_pt=True)
    np.testing.assert_array_equal(rows_sorted[0, 0:2100:3], np.arange(750, 50, -1, dtype=float))


def test_resume_after_interruption_gives_the_same_file(tmp_path):
    events = _random_events(90, 3)
    label = np.arange(90) % 2 * 1.0
    clean = tmp_path / "clean.h5"
    with LHCORawWriter(clean, with_label=True) as writer:
        for k in range(3):
            writer.append(events[30 * k : 30 * (k + 1)], label[30 * k : 30 * (k + 1)], state={"chunk": k + 1})

    out = tmp_path / "resumed.h5"
    with pytest.raises(RuntimeError, match="killed"):
        with LHCORawWriter(out, with_label=True, metadata={"seed": 1}) as writer:
            writer.append(events[:30], label[:30], state={"chunk": 1})
            raise RuntimeError("killed")
    assert not out.exists() and part_path(out).exists()  # the final name never holds a partial file
    # a chunk half-appended when the job died (rows present, counter not updated)
    with tables.open_file(part_path(out), "a") as h5:
        h5.root.df.block0_values.append(np.ones((7, 2101)))
    with pytest.raises(ValueError, match="other settings"):
        LHCORawWriter(out, with_label=True, metadata={"seed": 2})
    writer = LHCORawWriter(out, with_label=True, metadata={"seed": 1})
    assert writer.n_events == 30 and writer.state == {"chunk": 1}
    for k in range(writer.state["chunk"], 3):
        writer.append(events[30 * k : 30 * (k + 1)], label[30 * k : 30 * (k + 1)], state={"chunk": k + 1})
    writer.close()
    pd.testing.assert_frame_equal(pd.read_hdf(out), pd.read_hdf(clean))


def test_wrong_label_usage_is_rejected(tmp_path):
    events = _random_events(5, 4)
    with LHCORawWriter(tmp_path / "a.h5", with_label=True) as writer:
        with pytest.raises(ValueError, match="label"):
            writer.append(events)
        with pytest.raises(ValueError, match="shape"):
            writer.append(events, np.zeros(4))
        writer.append(events, np.zeros(5))


def test_root_tree_has_the_reader_layout(tmp_path):
    uproot = pytest.importorskip("uproot")
    events = _random_events(25, 5)
    label = (np.arange(25) % 3 == 0).astype(float)
    out = write_root_tree(tmp_path / "events.root", ak.zip({"part": events, "label": label}, depth_limit=1))
    tree = uproot.open(out)["events"]
    assert set(tree.keys()) == {"npart", "part_pt", "part_eta", "part_phi", "label"}
    np.testing.assert_array_equal(tree["npart"].array(library="np"), ak.to_numpy(ak.num(events)))
    np.testing.assert_allclose(
        ak.to_numpy(ak.flatten(tree["part_pt"].array())), ak.to_numpy(ak.flatten(events.pt)), rtol=1e-6
    )
    np.testing.assert_array_equal(tree["label"].array(library="np"), label)


def test_file_sha256_of_a_directory_follows_its_files(tmp_path):
    """A directory input (peer-reclustering files) has a manifest hash that changes with any file in it."""
    from radar.processors.io import file_sha256

    (tmp_path / "a.h5").write_bytes(b"one")
    (tmp_path / "b.h5").write_bytes(b"two")
    first = file_sha256(tmp_path)
    assert first == file_sha256(tmp_path) and len(first) == 64
    (tmp_path / "b.h5").write_bytes(b"TWO")
    assert file_sha256(tmp_path) != first
    (tmp_path / "b.h5").write_bytes(b"two")
    assert file_sha256(tmp_path) == first
    (tmp_path / "c.h5").write_bytes(b"")
    assert file_sha256(tmp_path) != first

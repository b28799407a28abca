"""Feature extraction: real LHCO events against an independent reclustering, ROOT path, bad input."""

from __future__ import annotations

import os
import shutil

import awkward as ak
import dask_awkward as dak
import numpy as np
import pandas as pd
import pytest
import uproot

from radar.processors.dijet import DijetProcessor, extract_features, features_to_frame
from radar.processors.features import FEATURE_COLUMNS, read_feature_table
from radar.processors.jets import JetConfig
from radar.processors.runner import process_files
from radar.processors.sources import inspect_lhco_raw, lhco_raw_events


def test_dask_awkward_graph_computes():
    """Guards the dask / dask-awkward pairing: with a broken pair every .compute() fails."""
    array = dak.from_awkward(ak.Array([[1.0, 2.0], [], [3.0]]), npartitions=2)
    assert ak.to_list(dak.num(array, axis=1).compute()) == [2, 0, 1]
    assert ak.to_list(ak.sum(array, axis=1).compute()) == [3.0, 0.0, 3.0]


@pytest.fixture(scope="module")
def tiny_events(lhco_tiny):
    """The 1000 real R&D events as eager awkward (particles, label)."""
    return lhco_raw_events(lhco_tiny, chunk_size=400).compute()


@pytest.fixture(scope="module")
def peer(lhco_dir):
    frames = {
        kind: pd.read_hdf(lhco_dir / "peer_reclustering" / f"scalars_{kind}01.h5") for kind in ("bkg", "sig")
    }
    return frames


def _features(tiny_events, convention):
    table, cutflow = extract_features(
        tiny_events.particles, np.asarray(tiny_events.label), config=JetConfig(tau_convention=convention)
    )
    assert cutflow["all"] == len(tiny_events)
    return table, cutflow


def _peer_rows(peer, labels):
    """Peer rows in the order of the tiny file's events (bkg and sig files are separate, in order)."""
    rows = []
    counters = {0: 0, 1: 0}
    for label in labels.astype(int):
        frame = peer["bkg" if label == 0 else "sig"]
        rows.append(frame.iloc[counters[label]])
        counters[label] += 1
    return pd.DataFrame(rows).reset_index(drop=True)


def _peer_by_mass(reference):
    """Peer jets (_1/_2 = pT order) re-ordered as ours: J1 = lighter jet."""
    mass = reference[["mass_1", "mass_2"]].to_numpy()
    light = np.argmin(mass, axis=1)
    rows = np.arange(len(mass))
    out = {"mj1": mass[rows, light], "mj2": mass[rows, 1 - light]}
    for ratio, (num, den) in {"tau21": ("tau2", "tau1"), "tau32": ("tau3", "tau2")}.items():
        values = np.stack([reference[f"{num}_{j}"] / reference[f"{den}_{j}"] for j in (1, 2)], axis=1)
        out[f"{ratio}_j1"] = values[rows, light]
        out[f"{ratio}_j2"] = values[rows, 1 - light]
    return out


def test_real_events_match_peer_reclustering(tiny_events, peer):
    """m_JJ and both jet masses equal an independent fastjet reclustering of the same events to 1e-6."""
    table, cutflow = _features(tiny_events, "kt")
    assert cutflow["passed"] == len(table) == 1000  # every R&D event passed the LHCO trigger
    labels = np.asarray(tiny_events.label)
    np.testing.assert_array_equal(table["label"], labels)  # labels carried through
    assert (labels == 1).sum() == 93
    reference = _peer_rows(peer, labels)
    expected = _peer_by_mass(reference)
    np.testing.assert_allclose(table["mjj"], reference["mjj"], rtol=1e-6)
    np.testing.assert_allclose(table["mj1"], expected["mj1"], rtol=1e-6)
    np.testing.assert_allclose(table["mj2"], expected["mj2"], rtol=1e-6)
    assert (table["delta_mj"] >= 0).all()
    # KT_Axes measure ΔR in rapidity (the peer: η, without Δφ wrap): close but not equal
    deviation = np.abs(table["tau21_j1"] / expected["tau21_j1"] - 1)
    assert np.median(deviation) < 0.03


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
def test_columnar_nsubjettiness_equals_fastjet_contrib(tiny_events, beta):
    """The default columnar τ (kt axes, y–φ, normalised) is fastjet-contrib's Nsubjettiness to rounding, for
    every angular exponent β (it ignored β before: β = 2 gave the β = 1 values, up to 179 % off)."""
    particles = tiny_events.particles[:300]
    ours, _ = extract_features(particles, config=JetConfig(tau_convention="kt", tau_beta=beta))
    contrib, _ = extract_features(particles, config=JetConfig(tau_convention="contrib", tau_beta=beta))
    if beta != 1.0:
        unit, _ = extract_features(particles, config=JetConfig(tau_convention="kt"))
        assert np.max(np.abs(ours["tau21_j1"] - unit["tau21_j1"])) > 0.05
    for name in ("tau21_j1", "tau21_j2", "tau32_j1", "tau32_j2"):
        np.testing.assert_allclose(ours[name], contrib[name], rtol=1e-10, atol=1e-12)
    pd.testing.assert_frame_equal(
        ours.drop(columns=["tau21_j1", "tau21_j2", "tau32_j1", "tau32_j2"]),
        contrib.drop(columns=["tau21_j1", "tau21_j2", "tau32_j1", "tau32_j2"]),
    )


def test_columnar_paths_refuse_axes_they_cannot_compute():
    with pytest.raises(ValueError, match="needs tau_convention='contrib'"):
        JetConfig(tau_axes="WTA_KT_Axes")
    assert JetConfig(tau_axes="WTA_KT_Axes", tau_convention="contrib").tau_axes == "WTA_KT_Axes"
    with pytest.raises(ValueError, match="tau_beta must be positive"):
        JetConfig(tau_beta=0.0)


@pytest.mark.parametrize("convention", ["lhco_peer", "lhco"])
def test_nsubjettiness_reproduces_peer_convention(tiny_events, peer, convention):
    """τ2/τ1 and τ3/τ2 of both jets: bit-level agreement with the peer's own convention ('lhco_peer');
    the physical 'lhco' convention differs exactly for the jets whose constituents straddle φ = ±π."""
    table, _ = _features(tiny_events, convention)
    expected = _peer_by_mass(_peer_rows(peer, np.asarray(tiny_events.label)))
    for name in ("tau21_j1", "tau21_j2", "tau32_j1", "tau32_j2"):
        agree = np.isclose(table[name], expected[name], rtol=1e-9, atol=0)
        if convention == "lhco_peer":
            assert agree.all(), f"{name}: {np.count_nonzero(~agree)} jets disagree"
        else:
            assert 0.7 < agree.mean() < 0.95, f"{name}: {agree.mean():.3f} agree"


def test_root_tree_gives_identical_features(tmp_path, lhco_tiny, tiny_events):
    """The same events written to a ROOT TTree and read back via coffea give an identical table."""
    root_file = tmp_path / "tiny.root"
    with uproot.recreate(root_file) as handle:
        handle.mktree("events", {"part": tiny_events.particles.type.content, "label": "float64"})
        handle["events"].extend({"part": tiny_events.particles, "label": np.asarray(tiny_events.label)})
    from_hdf5 = process_files([lhco_tiny], tmp_path / "h5.parquet", workers=0, chunk_size=300)
    from_root = process_files([root_file], tmp_path / "root.parquet", workers=0, chunk_size=300)
    pd.testing.assert_frame_equal(from_hdf5, from_root)
    pd.testing.assert_frame_equal(read_feature_table(tmp_path / "root.parquet"), from_root)
    with uproot.open(tmp_path / "root.hists.root") as hists:
        assert hists["mjj_signal"].values().sum() == 93
        assert hists["mjj"].values().sum() == 1000


def test_delphes_layout_matches_flat(tmp_path, tiny_events):
    """Particles split over three Delphes-style collections give the same features as one flat list."""
    particles = tiny_events.particles[:120]
    index = ak.local_index(particles.pt, axis=1)
    collections = {}
    for k, name in enumerate(("EFlowTrack", "EFlowPhoton", "EFlowNeutralHadron")):
        part = particles[index % 3 == k]
        quantity = "ET" if name != "EFlowTrack" else "PT"
        collections[name] = ak.zip({quantity: part.pt, "Eta": part.eta, "Phi": part.phi})
    root_file = tmp_path / "delphes.root"
    with uproot.recreate(root_file) as handle:
        handle.mktree("Delphes", {name: array.type.content for name, array in collections.items()})
        handle["Delphes"].extend(collections)
    from radar.processors.sources import RootLayout

    table = process_files(
        [root_file],
        tmp_path / "d.parquet",
        workers=0,
        root_layout=RootLayout(tree="Delphes", kind="delphes", label_branch=None),
    )
    flat, _ = extract_features(particles)
    assert len(table) == 120
    assert (table["label"] == -1).all()
    # concatenating collections changes the particle order: equal up to floating-point summation order
    np.testing.assert_allclose(table["mjj"], flat["mjj"], rtol=1e-9)
    np.testing.assert_allclose(table["tau21_j1"], flat["tau21_j1"], rtol=1e-6)


def _delphes_collections(particles):
    """The particles split over Delphes' three particle-flow collections (as Delphes names their fields)."""
    index = ak.local_index(particles.pt, axis=1)
    collections = {}
    for k, name in enumerate(("EFlowTrack", "EFlowPhoton", "EFlowNeutralHadron")):
        part = particles[index % 3 == k]
        quantity = "ET" if name != "EFlowTrack" else "PT"
        fields = {quantity: part.pt, "Eta": part.eta, "Phi": part.phi}
        if name == "EFlowTrack":
            fields["Mass"] = part.pt * 0.0
        collections[name] = fields
    return collections


def test_delphes_schema_events_with_event_weights(tiny_events):
    """Events as coffea's DelphesSchema builds them (collections of records, ``Event.Weight``) give the
    features of the flat particle list, and each event's ``Event.Weight`` becomes its feature-table weight
    (and fills the m_JJ histogram)."""
    from coffea.nanoevents import DelphesSchema, NanoEventsFactory

    from radar.processors.sources import RootLayout

    particles = tiny_events.particles[:120]
    weights = np.random.default_rng(3).uniform(0.5, 2.0, len(particles))
    branches = {}
    for name, fields in _delphes_collections(particles).items():
        branches[f"{name}_size"] = ak.values_astype(ak.num(fields["Eta"], axis=1), np.int32)
        for field, values in fields.items():
            branches[f"{name}/{name}.{field}"] = ak.to_packed(ak.values_astype(values, np.float32))
    branches["Event_size"] = ak.Array(np.ones(len(particles), dtype=np.int32))
    branches["Event/Event.Weight"] = ak.unflatten(weights, np.ones(len(weights), dtype=np.int64))

    class Preloaded(dict):  # what NanoEventsFactory.from_preloaded reads: arrays named as in a Delphes tree
        metadata = {
            "uuid": "delphes-test",
            "num_rows": len(particles),
            "path": "mem",
            "object_path": "Delphes",
        }

    source = Preloaded({k: ak.with_parameter(v, "__doc__", k) for k, v in branches.items()})
    events = NanoEventsFactory.from_preloaded(source, schemaclass=DelphesSchema).events()
    assert {"EFlowTrack", "EFlowPhoton", "EFlowNeutralHadron", "Event"} <= set(events.fields)
    out = DijetProcessor(root_layout=RootLayout(kind="delphes", label_branch=None)).process(events)
    table = features_to_frame(out["features"])
    flat, _ = extract_features(particles)
    assert len(table) == len(flat) == 120
    np.testing.assert_allclose(table["mjj"], flat["mjj"], rtol=1e-9)
    np.testing.assert_allclose(table["tau21_j1"], flat["tau21_j1"], rtol=1e-6)
    np.testing.assert_allclose(table["weight"], weights)
    assert out["mjj"].sum().value == pytest.approx(weights.sum())


def test_weight_branch_of_a_flat_tree_reaches_the_feature_table(tmp_path, tiny_events):
    particles = tiny_events.particles[:80]
    weights = np.random.default_rng(4).uniform(0.5, 2.0, len(particles))
    with uproot.recreate(tmp_path / "w.root") as handle:
        handle.mktree("events", {"part": particles.type.content, "weight": np.float64})
        handle["events"].extend({"part": particles, "weight": weights})
    table = process_files([tmp_path / "w.root"], tmp_path / "w.parquet", workers=0)
    assert len(table) == 80
    np.testing.assert_allclose(table["weight"], weights)
    np.testing.assert_allclose(read_feature_table(tmp_path / "w.parquet")["weight"], weights)


def test_local_cluster_matches_in_process(tmp_path, lhco_tiny):
    """The embedded LocalCluster (2 worker processes) gives exactly the in-process result."""
    sync = process_files([lhco_tiny], tmp_path / "sync.parquet", workers=0, chunk_size=250)
    cluster = process_files([lhco_tiny], tmp_path / "cluster.parquet", workers=2, chunk_size=250)
    pd.testing.assert_frame_equal(sync, cluster)
    assert list(sync.columns) == list(FEATURE_COLUMNS)


def test_lhco_raw_files_run_one_task_per_chunk_equal_to_the_dask_awkward_graph(lhco_tiny):
    """The runner's LHCO raw path (one Dask task per chunk: read + the processor run eagerly) gives the
    same features, cutflow and histogram as the processor's dask-awkward graph over the same chunks."""
    import dask

    from radar.processors.runner import _lazy_outputs, _merge_chunks

    processor = DijetProcessor()
    tasks = _lazy_outputs(lhco_tiny.resolve(), processor, 300)
    assert len(tasks) == 4  # 1000 events in chunks of 300
    assert all(len(dict(task.__dask_graph__())) == 1 for task in tasks)
    (chunks,) = dask.compute(tasks, scheduler="sync")
    merged = _merge_chunks(chunks)

    (lazy,) = dask.compute(processor.process(lhco_raw_events(lhco_tiny, chunk_size=300)), scheduler="sync")
    pd.testing.assert_frame_equal(merged["features"], features_to_frame(lazy["features"]))
    assert merged["cutflow"] == {k: int(v) for k, v in lazy["cutflow"].items()}
    assert merged["cutflow"]["all"] == 1000
    assert merged["mjj"] == lazy["mjj"]
    assert merged["mjj"].sum().value == merged["cutflow"]["passed"] > 0


def test_existing_scheduler_address(tmp_path, lhco_tiny):
    """--scheduler ADDRESS: the same job on an already running Dask cluster."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        table = process_files(
            [lhco_tiny], tmp_path / "remote.parquet", scheduler=cluster.scheduler_address, chunk_size=500
        )
    assert len(table) == 1000
    assert (tmp_path / "remote.hists.root").exists()


# --- bad input --------------------------------------------------------------------------------------------


def _write_raw(path, block):
    pd.DataFrame(block).to_hdf(path, key="df", format="fixed")


def _raw_block(tiny_events, n):
    """n real events back in the padded 2101-column layout."""
    block = np.zeros((n, 2101))
    for i in range(n):
        particles = tiny_events.particles[i]
        k = len(particles)
        block[i, 0 : 3 * k : 3] = ak.to_numpy(particles.pt)
        block[i, 1 : 3 * k : 3] = ak.to_numpy(particles.eta)
        block[i, 2 : 3 * k : 3] = ak.to_numpy(particles.phi)
    block[:, 2100] = ak.to_numpy(tiny_events.label[:n])
    return block


def _no_output_left(directory):
    leftovers = [p.name for p in directory.iterdir() if p.suffix in (".parquet", ".part", ".root", ".json")]
    assert leftovers == [], f"partial output left behind: {leftovers}"


def test_missing_file_is_named(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        process_files([tmp_path / "nope.h5"], out / "f.parquet", workers=0)
    _no_output_left(out)


def test_wrong_number_of_columns(tmp_path):
    path = tmp_path / "narrow.h5"
    _write_raw(path, np.ones((5, 30)))
    with pytest.raises(ValueError, match=r"narrow\.h5.*2100 particle columns.*\(5, 30\)"):
        process_files([path], tmp_path / "f.parquet", workers=0)
    _no_output_left(tmp_path)


def test_truncated_hdf5(tmp_path, lhco_tiny):
    path = tmp_path / "truncated.h5"
    data = lhco_tiny.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(OSError, match=r"truncated\.h5"):
        process_files([path], tmp_path / "f.parquet", workers=0, chunk_size=200)
    _no_output_left(tmp_path)


def test_corrupt_chunk_names_event_range(tmp_path, lhco_tiny):
    """A file whose header is fine but whose data is damaged fails in the chunk, naming the rows."""
    path = tmp_path / "damaged.h5"
    shutil.copy(lhco_tiny, path)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 200_000] = b"\x00" * 200_000
    path.write_bytes(bytes(data))
    with pytest.raises((OSError, ValueError), match=r"damaged\.h5: .*events \d+-\d+"):
        process_files([path], tmp_path / "f.parquet", workers=0, chunk_size=100)
    _no_output_left(tmp_path)


def test_nan_particles_named(tmp_path, tiny_events):
    block = _raw_block(tiny_events, 30)
    block[17, 4] = np.nan
    block[21, 0] = np.inf
    path = tmp_path / "nan.h5"
    _write_raw(path, block)
    # whichever bad chunk runs first is reported, with its own event range
    bad = r"nan\.h5: (events 10-19: NaN or inf particle values in events \[17\]|events 20-29: .* \[21\])"
    with pytest.raises(ValueError, match=bad):
        process_files([path], tmp_path / "f.parquet", workers=0, chunk_size=10)
    _no_output_left(tmp_path)


def test_empty_files(tmp_path):
    empty = tmp_path / "empty.h5"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.h5: empty file"):
        inspect_lhco_raw(empty)
    no_rows = tmp_path / "norows.h5"
    _write_raw(no_rows, np.zeros((0, 2101)))
    with pytest.raises(ValueError, match=r"norows\.h5: file holds no events"):
        process_files([no_rows], tmp_path / "f.parquet", workers=0)
    _no_output_left(tmp_path)


def test_events_without_jets_are_counted(tmp_path, tiny_events):
    """Physics-level failures are dropped and counted in the cutflow, never silently."""
    block = _raw_block(tiny_events, 12)
    block[3, :2100] = 0.0  # no particles at all: no jets
    block[5, 3:2100] = 0.0  # one particle: one jet
    block[7, 0:2100:3] *= 0.01  # all soft: fails the 1.2 TeV trigger
    path = tmp_path / "physics.h5"
    _write_raw(path, block)
    table = process_files([path], tmp_path / "f.parquet", workers=0, chunk_size=5)
    import json

    cutflow = json.loads((tmp_path / "f.cutflow.json").read_text())["cutflow"]
    assert cutflow == {"all": 12, "passed": 9, "no_jets": 1, "one_jet": 1, "failed_trigger": 1}
    assert len(table) == 9


def test_lhco_feature_hdf5(tmp_path):
    """The official 15-column feature layout: two back-to-back jets give the analytic m_JJ."""
    pt, m_a, m_b = 1500.0, 300.0, 80.0
    row = {
        "pxj1": pt,
        "pyj1": 0.0,
        "pzj1": 0.0,
        "mj1": m_a,
        "tau1j1": 0.5,
        "tau2j1": 0.2,
        "tau3j1": 0.1,
        "pxj2": -pt,
        "pyj2": 0.0,
        "pzj2": 0.0,
        "mj2": m_b,
        "tau1j2": 0.4,
        "tau2j2": 0.3,
        "tau3j2": 0.15,
        "label": 1.0,
    }
    path = tmp_path / "features.h5"
    pd.DataFrame([row, row]).to_hdf(path, key="df", format="fixed")
    table = read_feature_table(path)
    expected_mjj = np.sqrt(pt**2 + m_a**2) + np.sqrt(pt**2 + m_b**2)
    np.testing.assert_allclose(table["mjj"], expected_mjj)
    np.testing.assert_allclose(table["mj1"], m_b)  # J1 = lighter jet
    np.testing.assert_allclose(table["tau21_j1"], 0.3 / 0.4)
    np.testing.assert_allclose(table["delta_r_jj"], np.pi)
    pd.DataFrame([{k: v for k, v in row.items() if k != "tau3j2"}]).to_hdf(tmp_path / "bad.h5", key="df")
    with pytest.raises(ValueError, match=r"bad\.h5.*missing columns \['tau3j2'\]"):
        read_feature_table(tmp_path / "bad.h5")
    # NaN/inf features and labels outside {0, 1} are named, not read (they were, and the cutflow said "passed")
    for column, value, message in (
        ("mj1", np.nan, r"column 'mj1' has 1 NaN, inf or non-numeric values \(rows \[1\]\)"),
        ("pzj2", np.inf, r"column 'pzj2' has 1 NaN"),
        ("label", 3.0, r"column 'label' must be 0 or 1; 1 rows are not \(rows \[1\]\)"),
    ):
        frame = pd.DataFrame([row, row])
        frame.loc[1, column] = value
        frame.to_hdf(tmp_path / "nan.h5", key="df", format="fixed")
        with pytest.raises(ValueError, match=r"nan\.h5: " + message):
            read_feature_table(tmp_path / "nan.h5")


def test_cathode_arrays_read_in_gev(lhco_dir):
    table = read_feature_table(lhco_dir / "cathode_sr" / "innerdata_test.npy")
    assert table["mjj"].between(3300, 3700).all()
    assert (table["mj2"] >= table["mj1"]).all()
    assert set(np.unique(table["label"])) == {0.0, 1.0}


def test_processor_is_lazy_and_picklable(lhco_tiny):
    import pickle

    processor = pickle.loads(pickle.dumps(DijetProcessor()))
    output = processor.process(lhco_raw_events(lhco_tiny, chunk_size=500))
    assert isinstance(output["features"], dak.Array)
    assert output["features"].npartitions == 2
    assert len(features_to_frame(output["features"][:10].compute())) == 10


@pytest.mark.parametrize("executor", ["iterative", "futures", "dask"])
def test_coffea_runner_on_a_fileset_gives_the_radar_process_table(tmp_path, tiny_events, executor):
    """DijetProcessor under coffea's own Runner: proper accumulators (column_accumulator features, added
    cutflow and histogram) across chunks and files, keyed by dataset, equal to ``radar process``."""
    from coffea import processor
    from coffea.nanoevents import BaseSchema

    files = []
    for i, rows in enumerate((slice(0, 400), slice(400, 1000))):
        path = tmp_path / f"part{i}.root"
        with uproot.recreate(path) as handle:
            handle.mktree("events", {"part": tiny_events.particles.type.content, "label": "float64"})
            handle["events"].extend(
                {"part": tiny_events.particles[rows], "label": np.asarray(tiny_events.label[rows])}
            )
        files.append(path)
    fileset = {"lhco_rnd": {"files": {str(f): "events" for f in files}, "metadata": {"kind": "data"}}}
    import contextlib

    with contextlib.ExitStack() as stack:
        if executor == "dask":
            from distributed import Client, LocalCluster

            cluster = stack.enter_context(
                LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None)
            )
            chosen = processor.DaskExecutor(client=stack.enter_context(Client(cluster)), status=False)
        elif executor == "futures":
            chosen = processor.FuturesExecutor(workers=2)
        else:
            chosen = processor.IterativeExecutor()
        run = processor.Runner(executor=chosen, schema=BaseSchema, chunksize=300)
        out = run(fileset, processor_instance=DijetProcessor(), treename="events")
    assert list(out) == ["lhco_rnd"]
    table = features_to_frame(out["lhco_rnd"]["features"])
    expected = process_files(files, tmp_path / "radar.parquet", workers=0, chunk_size=300)
    order = ["mjj", "mj1", "mj2"]
    pd.testing.assert_frame_equal(
        table.sort_values(order).reset_index(drop=True), expected.sort_values(order).reset_index(drop=True)
    )
    assert out["lhco_rnd"]["cutflow"]["all"] == 1000 and out["lhco_rnd"]["mjj"].sum().value == len(table)


def test_radar_process_takes_a_coffea_fileset(tmp_path, lhco_tiny, tiny_events, monkeypatch):
    """A fileset (YAML, datasets with files and metadata) gives one table per dataset, named after it, equal to
    processing its files directly; the dataset name and metadata travel with the table."""
    import json

    import pyarrow.parquet as pq
    import yaml

    from radar.analysis.cli import main as radar_main

    root = tmp_path / "part.root"
    with uproot.recreate(root) as handle:
        handle.mktree("events", {"part": tiny_events.particles.type.content, "label": "float64"})
        handle["events"].extend(
            {"part": tiny_events.particles[:300], "label": np.asarray(tiny_events.label[:300])}
        )
    fileset = {
        "rnd_h5": {"files": [str(lhco_tiny)], "metadata": {"xsec_pb": 1.5}},
        "rnd_root": {"files": {"part.root": "events"}},
    }  # relative to the fileset file
    import radar.processors.runner as runner

    graphs = []
    compute = runner._compute_with_progress

    def counted(outputs, client, description):
        graphs.append(sorted(outputs))
        return compute(outputs, client, description)

    monkeypatch.setattr(runner, "_compute_with_progress", counted)
    (tmp_path / "fileset.yaml").write_text(yaml.safe_dump(fileset))
    out = tmp_path / "tables"
    assert (
        radar_main(
            [
                "-q",
                "process",
                "--fileset",
                str(tmp_path / "fileset.yaml"),
                "-o",
                str(out),
                "--workers",
                "0",
                "--chunk-size",
                "300",
            ]
        )
        == 0
    )
    summary = json.loads((out / "fileset.json").read_text())
    assert set(summary) == {"rnd_h5", "rnd_root"} and summary["rnd_h5"]["metadata"] == {"xsec_pb": 1.5}
    direct = process_files([lhco_tiny], tmp_path / "direct.parquet", workers=0, chunk_size=300)
    pd.testing.assert_frame_equal(read_feature_table(out / "rnd_h5.parquet"), direct)
    assert summary["rnd_root"]["events"] == len(read_feature_table(out / "rnd_root.parquet")) == 300
    provenance = json.loads(pq.read_schema(out / "rnd_h5.parquet").metadata[b"radar"])
    assert provenance["dataset"] == "rnd_h5" and provenance["metadata"] == {"xsec_pb": 1.5}
    # the two datasets' files were ONE graph (then the direct run's one file)
    assert len(graphs) == 2 and len(graphs[0]) == 2 and len(graphs[1]) == 1


@pytest.mark.parametrize(
    ("fileset", "message"),
    [
        ({"bad name!": ["a.h5"]}, "dataset 'bad name!': a dataset name is"),
        ({"qcd": {"file": ["a.h5"]}}, "dataset 'qcd': needs 'files'"),
        ({"qcd": {"files": [], "metadata": {}}}, "dataset 'qcd': 'files' must be a non-empty list"),
        ({"qcd": {"files": {"a.root": "t1", "b.root": "t2"}}}, "one tree name per dataset"),
        ({"qcd": {"files": ["missing.h5"]}}, "dataset 'qcd': .*missing.h5: no such file"),
    ],
)
def test_a_bad_fileset_is_named(tmp_path, fileset, message):
    import yaml

    from radar.processors.runner import process_fileset

    path = tmp_path / "fs.yaml"
    path.write_text(yaml.safe_dump(fileset))
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        process_fileset(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _bad_root(path, particles, label=None, **overrides):
    """A flat ROOT tree of ``particles`` with some branches replaced (``overrides``: branch → array)."""
    branches = {"part_pt": particles.pt, "part_eta": particles.eta, "part_phi": particles.phi}
    branches.update(overrides)
    if label is not None:
        branches["label"] = label
    types = {k: v.dtype if isinstance(v, np.ndarray) else v.type.content for k, v in branches.items()}
    with uproot.recreate(path) as handle:
        handle.mktree("events", types)
        handle["events"].extend(branches)
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"pt": np.nan}, r"NaN, inf or negative values in particle branch 'part_pt' in 1 events"),
        ({"pt": np.inf}, r"NaN, inf or negative values in particle branch 'part_pt'"),
        ({"pt": -5.0}, r"NaN, inf or negative values in particle branch 'part_pt'"),
        ({"eta": np.nan}, r"NaN or inf values in particle branch 'part_eta'"),
        ({"label": 7.0}, r"label branch 'label' must be 1, 0 or -1; 1 events are not"),
        ({"flat": True}, r"particle branch 'part_pt' must hold one list per event"),
        ({"bool": True}, r"particle branch 'part_pt' has dtype bool"),
    ],
)
def test_bad_root_particles_are_named_not_crashed_on(tmp_path, tiny_events, change, message):
    """The ROOT path validates like the HDF5 path (one shared check before fastjet, which segfaults on NaN):
    a clear ValueError naming the file and the branch, and no output."""
    particles = tiny_events.particles[:40]
    label = np.zeros(len(particles))
    overrides = {}
    if "flat" in change:
        overrides["part_pt"] = np.full(len(particles), 50.0)
    elif "bool" in change:
        overrides["part_pt"] = particles.pt > 10
    elif "label" in change:
        label[7] = change["label"]
    else:
        field, value = next(iter(change.items()))
        flat = ak.to_numpy(ak.flatten(particles[field])).copy()
        flat[ak.num(particles[field], axis=1)[0] + 3] = value  # a particle of event 1
        overrides[f"part_{field}"] = ak.unflatten(flat, ak.num(particles[field], axis=1))
    path = _bad_root(tmp_path / "bad.root", particles, label, **overrides)
    with pytest.raises(ValueError, match=message) as error:
        process_files([path], tmp_path / "out.parquet", workers=0)
    assert str(path) in str(error.value)
    assert not (tmp_path / "out.parquet").exists()


def test_relative_inputs_are_made_absolute_before_they_reach_the_workers(tmp_path, lhco_tiny, monkeypatch):
    """Workers of a --scheduler cluster have their own working directory: a relative input path used to be
    resolved there (and blamed as a corrupt file). The provenance names the absolute path and its SHA-256."""
    import hashlib
    import json

    shutil.copy(lhco_tiny, tmp_path / "tiny.h5")
    monkeypatch.chdir(tmp_path)
    process_files(["tiny.h5"], "out.parquet", workers=0, chunk_size=500)
    provenance = json.loads((tmp_path / "out.cutflow.json").read_text())
    assert list(provenance["inputs"]) == [str(tmp_path / "tiny.h5")]
    # the hash made on a background thread while the events were clustered is the file's
    expected = hashlib.sha256((tmp_path / "tiny.h5").read_bytes()).hexdigest()
    assert provenance["inputs"][str(tmp_path / "tiny.h5")]["sha256"] == expected


def test_outputs_fail_in_the_first_second_and_empty_or_doubled_inputs_are_named(tmp_path, lhco_tiny):
    import os
    import time

    with pytest.raises(ValueError, match=r"given more than once: \[.*tiny"):
        process_files([lhco_tiny, lhco_tiny], tmp_path / "twice.parquet", workers=0)
    (tmp_path / "table.parquet").mkdir()
    with pytest.raises(ValueError, match="is a directory"):
        process_files([lhco_tiny], tmp_path / "table.parquet", workers=0)
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        started = time.perf_counter()
        with pytest.raises(PermissionError, match="not writable"):
            process_files([lhco_tiny], locked / "out.parquet", workers=0)
        assert time.perf_counter() - started < 5
    # a missing output folder is made
    process_files([lhco_tiny], tmp_path / "new" / "deeper" / "out.parquet", workers=0, chunk_size=500)
    assert (tmp_path / "new" / "deeper" / "out.parquet").exists()
    # no event passes: an error with the cutflow, nothing written
    with pytest.raises(ValueError, match=r"no event of .* passed the selection \(cutflow .*failed_trigger"):
        process_files([lhco_tiny], tmp_path / "none.parquet", workers=0, jet_config=JetConfig(trigger_pt=1e6))
    assert not (tmp_path / "none.parquet").exists()


def test_a_killed_runs_leftovers_are_cleaned_and_a_table_always_has_its_set(tmp_path, lhco_tiny, monkeypatch):
    """A SIGKILL used to leave a hidden .part file, or a parquet without its .cutflow.json / .hists.root."""
    import radar.processors.runner as runner

    stale = tmp_path / ".out.parquet.999999999.x1.part"  # a temporary file of a process that is gone
    stale.write_bytes(b"")
    live = tmp_path / f".out.parquet.{os.getpid()}.x2.part"  # one of a running process stays
    live.write_bytes(b"")

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the run dies while writing the histograms

    monkeypatch.setattr(runner, "write_histograms_root", killed)
    with pytest.raises(KeyboardInterrupt):
        process_files([lhco_tiny], tmp_path / "out.parquet", workers=0, chunk_size=500)
    assert not (tmp_path / "out.parquet").exists()  # no table without its cutflow and histograms
    monkeypatch.undo()
    process_files([lhco_tiny], tmp_path / "out.parquet", workers=0, chunk_size=500)
    assert not stale.exists() and live.exists()
    assert {p.name for p in tmp_path.iterdir()} >= {"out.parquet", "out.cutflow.json", "out.hists.root"}


@pytest.mark.parametrize("name", ["gone.parquet", "gone.h5", "gone.npy", "gone_dir"])
def test_a_missing_feature_table_is_named_as_missing(tmp_path, name):
    """A path that does not exist says so (a missing directory used to read as 'unknown format ''')."""
    from radar.processors.features import read_feature_table

    with pytest.raises(FileNotFoundError, match=f"{name}: no such"):
        read_feature_table(tmp_path / name)


def _leading_jets_of(events):
    """Default JetConfig, the chunk's clustering, the passed mask and the leading jets of ``events``."""
    from radar.processors.jets import PASS, JetConfig, _cluster, _status, leading_jets

    config = JetConfig()
    clustered = _cluster(events.particles, config)
    passed = _status(clustered.jet["pt"], clustered.jet_eta, clustered.n_jets, config) == PASS
    lead_index, lead = leading_jets(clustered, passed)
    return config, clustered, passed, lead_index, lead


def test_one_pass_nsubjettiness_equals_the_fastjet_reclustering(tiny_events):
    """The compiled one-pass τ (radar.processors.substructure) equals the exclusive-kt axes of a second
    fastjet clustering for both leading jets of all 1000 real events (to rounding)."""
    from radar.processors.jets import _tau_columnar, _tau_one_pass

    config, clustered, passed, lead_index, _ = _leading_jets_of(tiny_events)
    constituents = clustered.sequence.constituents()[passed][lead_index]
    ours = _tau_one_pass(constituents, config)
    reference = _tau_columnar(constituents, config)
    assert ours.shape == (2000, 3)
    np.testing.assert_allclose(ours, reference, rtol=1e-12, atol=1e-14)


def test_one_pass_nsubjettiness_equals_fastjet_on_busy_random_jets():
    """Jets of 1–250 particles (two or three hard prongs in a soft spray, so merges into the hard
    pseudojets re-point many neighbours): the one-pass τ equals fastjet's exclusive-kt reclustering."""
    from radar.processors.jets import JetConfig, _tau_columnar, _tau_one_pass

    rng = np.random.default_rng(7)
    events = []
    for _ in range(60):
        jets = []
        for n in rng.integers(1, 250, size=2):
            prongs = rng.integers(1, 4)
            centre = rng.normal(0.0, 0.3, size=(prongs, 2))
            which = rng.integers(0, prongs, size=n)
            y = centre[which, 0] + rng.normal(0.0, rng.choice([0.02, 0.3]), size=n)
            phi = np.mod(1.0 + centre[which, 1] + rng.normal(0.0, 0.2, size=n), 2 * np.pi)
            pt = rng.pareto(1.5, size=n) + 0.5
            pt[: min(n, prongs)] *= 100.0
            jets.append(
                {"px": pt * np.cos(phi), "py": pt * np.sin(phi), "pz": pt * np.sinh(y), "E": pt * np.cosh(y)}
            )
        events.append(jets)
    columns = ak.Array(events)  # events × jets × {px: particles, ...}
    constituents = ak.zip({f: columns[f] for f in ("px", "py", "pz", "E")}, with_name="Momentum4D")
    config = JetConfig()
    np.testing.assert_allclose(
        _tau_one_pass(constituents, config), _tau_columnar(constituents, config), rtol=1e-12, atol=1e-14
    )


def test_one_pass_nsubjettiness_on_hand_made_jets():
    from radar.processors.substructure import kt_nsubjettiness

    def particle(pt, y, phi):
        return pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(y), pt * np.cosh(y)

    # jet A: one particle (τ1 = 0, no τ2/τ3); jet B: three separated particles (τ3 = 0, τ2 from the softest)
    rows = [particle(100.0, 0.0, 1.0)] + [
        particle(300.0, 0.0, 0.0),
        particle(200.0, 0.8, 0.0),
        particle(10.0, 0.0, 0.5),
    ]
    px, py, pz, e = (np.array(v) for v in zip(*rows, strict=True))
    taus = kt_nsubjettiness(px, py, pz, e, [1, 3], beta=1.0, r0=1.0)
    assert taus[0].tolist() == [0.0, 0.0, 0.0]
    assert taus[1, 2] == pytest.approx(0.0, abs=1e-12)
    # two axes: the 10 GeV particle merges first (kt distance 10² · 0.5² against 200² · 0.8²) into the
    # 300 GeV one; the other axis is the 200 GeV particle itself
    axis = np.array(rows[1]) + np.array(rows[3])
    axis_y = 0.5 * np.log((axis[3] + axis[2]) / (axis[3] - axis[2]))
    axis_phi = np.arctan2(axis[1], axis[0])
    expected = (300.0 * np.hypot(axis_y, axis_phi) + 10.0 * np.hypot(axis_y, 0.5 - axis_phi)) / 510.0
    assert taus[1, 1] == pytest.approx(expected, rel=1e-12)
    assert taus[1, 0] > taus[1, 1]
    with pytest.raises(ValueError, match="4 constituents in counts, 3 given"):
        kt_nsubjettiness(px[:3], py[:3], pz[:3], e[:3], [1, 3], beta=1.0, r0=1.0)


def test_leading_constituents_are_fastjets_for_the_two_leading_jets(tiny_events):
    """The leading jets' constituents gathered with fastjet's min_pt (soft jets skipped) are exactly the
    constituents fastjet gives for those jets, in the same order."""
    from radar.processors.jets import _flat_kinematics, leading_constituents

    _, clustered, passed, lead_index, lead = _leading_jets_of(tiny_events)
    momenta, counts = leading_constituents(clustered, passed, lead)
    reference = clustered.sequence.constituents()[passed][lead_index]
    expected = _flat_kinematics(reference)
    np.testing.assert_array_equal(counts, ak.to_numpy(ak.flatten(ak.num(reference, axis=2), axis=None)))
    for name in ("px", "py", "pz", "E"):
        np.testing.assert_allclose(momenta[name], expected[name], rtol=1e-12)

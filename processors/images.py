"""Jet images of the two leading jets, from particle-level events (the input of the autoencoders).

Per event that passes the dijet selection (:mod:`radar.processors.jets`: anti-kt R, the LHCO trigger, two
jets), the two leading-pT jets ordered by mass (J1 = lighter, as in the feature table) become two
``pixels × pixels`` images of their constituents' pT over Δη, Δφ ∈ [−R, R]:

1. centred on the jet's pT-weighted centroid in (η, φ) (φ wrapped);
2. rotated so that the principal axis of the pT-weighted (Δη, Δφ) distribution is vertical;
3. flipped so that the pT-weighted third moments along both axes are >= 0 (the harder side at top right);
4. pixelated (constituents outside the window dropped) and normalised to unit sum (an empty image stays 0).

The steps are the standard preprocessing of jet-image taggers and autoencoders (e.g. Heimel et al.,
arXiv:1808.08979). :func:`write_images` runs it chunk by chunk over LHCO raw HDF5 files (the R&D layout,
and what ``radar generate`` writes) — the same reader and chunking as ``radar process``, chunks as tasks on
the embedded Dask LocalCluster (processes) or any scheduler, at most two chunks in flight per worker, so
memory is bounded by the chunk size — and streams the images into one HDF5 file (PyTables, ``/images``
(N, 2, P, P) float32, ``/mjj``, ``/label``, ``/event``), written atomically.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import awkward as ak
import numpy as np

from radar.processors.jets import PASS, JetConfig, _cluster, _status, leading_jets

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ImageConfig:
    pixels: int = 40
    jets: JetConfig = dataclasses.field(default_factory=JetConfig)

    def __post_init__(self) -> None:
        if not 4 <= int(self.pixels) <= 512:
            raise ValueError(f"image pixels must be in 4..512, got {self.pixels}")


def _constituent_arrays(constituents: ak.Array) -> dict[str, np.ndarray]:
    """Flat pt, eta, phi of jagged (jets, constituents) momenta and the jet index of each."""
    counts = ak.to_numpy(ak.num(constituents, axis=1))
    flat = ak.flatten(constituents)
    px, py, pz = (np.asarray(ak.to_numpy(flat[c]), dtype=np.float64) for c in ("px", "py", "pz"))
    pt = np.hypot(px, py)
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.arcsinh(np.where(pt > 0, pz / np.where(pt > 0, pt, 1.0), 0.0))
    return {"pt": pt, "eta": eta, "phi": np.arctan2(py, px), "jet": np.repeat(np.arange(len(counts)), counts)}


def images_from_constituents(constituents: ak.Array, config: ImageConfig) -> np.ndarray:
    """Images (n_jets, P, P) float32 of jagged jet constituents (records with px, py, pz). Columnar numpy."""
    p, radius = int(config.pixels), float(config.jets.jet_radius)
    n_jets = len(constituents)
    images = np.zeros((n_jets, p, p), dtype=np.float64)
    if n_jets == 0:
        return images.astype(np.float32)
    c = _constituent_arrays(constituents)
    jet, w = c["jet"], c["pt"]
    total = np.bincount(jet, weights=w, minlength=n_jets)
    safe = np.where(total > 0, total, 1.0)
    eta0 = np.bincount(jet, weights=w * c["eta"], minlength=n_jets) / safe
    # the φ centroid from the pT-weighted mean direction (no wrap problem)
    phi0 = np.arctan2(
        np.bincount(jet, weights=w * np.sin(c["phi"]), minlength=n_jets),
        np.bincount(jet, weights=w * np.cos(c["phi"]), minlength=n_jets),
    )
    x = c["eta"] - eta0[jet]
    y = np.mod(c["phi"] - phi0[jet] + np.pi, 2 * np.pi) - np.pi
    # principal axis of the pT-weighted covariance, rotated to the vertical
    sxx = np.bincount(jet, weights=w * x * x, minlength=n_jets)
    syy = np.bincount(jet, weights=w * y * y, minlength=n_jets)
    sxy = np.bincount(jet, weights=w * x * y, minlength=n_jets)
    theta = 0.5 * np.arctan2(2 * sxy, sxx - syy)  # angle of the major axis to the x axis
    angle = (np.pi / 2 - theta)[jet]
    x, y = x * np.cos(angle) - y * np.sin(angle), x * np.sin(angle) + y * np.cos(angle)
    # flips: the pT-weighted third moments >= 0
    sign_x = np.where(np.bincount(jet, weights=w * x**3, minlength=n_jets) < 0, -1.0, 1.0)
    sign_y = np.where(np.bincount(jet, weights=w * y**3, minlength=n_jets) < 0, -1.0, 1.0)
    x, y = x * sign_x[jet], y * sign_y[jet]
    ix = np.floor((x + radius) / (2 * radius) * p).astype(np.int64)
    iy = np.floor((radius - y) / (2 * radius) * p).astype(np.int64)  # row 0 at the top
    inside = (ix >= 0) & (ix < p) & (iy >= 0) & (iy < p)
    flat = (jet * p + iy) * p + ix
    images = np.bincount(flat[inside], weights=w[inside], minlength=n_jets * p * p).reshape(n_jets, p, p)
    sums = images.sum(axis=(1, 2))
    images /= np.where(sums > 0, sums, 1.0)[:, None, None]
    return images.astype(np.float32)


def images_chunk(particles: ak.Array, config: ImageConfig) -> dict[str, np.ndarray]:
    """Images of one chunk of events (records of ``pt, eta, phi`` lists): ``images`` (n, 2, P, P) for the
    events that pass the dijet selection (J1 = lighter jet), their ``mjj`` and ``passed`` (the chunk's mask)."""
    n_events = len(particles)
    p = int(config.pixels)
    if n_events == 0:
        return {"images": np.zeros((0, 2, p, p), np.float32), "mjj": np.zeros(0), "passed": np.zeros(0, bool)}
    clustered = _cluster(particles, config.jets)
    jet, n_jets = clustered.jet, clustered.n_jets
    passed = _status(jet["pt"], clustered.jet_eta, n_jets, config.jets) == PASS
    if not passed.any():
        return {"images": np.zeros((0, 2, p, p), np.float32), "mjj": np.zeros(0), "passed": passed}
    lead_index, lead = leading_jets(clustered, passed)
    lighter = np.argmin(lead["m"], axis=1)  # the pT-leading jet wins ties, as in the feature table
    dijet = {k: lead[k].sum(axis=1) for k in ("px", "py", "pz", "E")}
    mjj = np.sqrt(np.maximum(dijet["E"] ** 2 - dijet["px"] ** 2 - dijet["py"] ** 2 - dijet["pz"] ** 2, 0.0))
    constituents = clustered.sequence.constituents()[passed][lead_index]  # (n, 2, k), pT order
    per_jet = images_from_constituents(ak.flatten(constituents, axis=1), config).reshape(-1, 2, p, p)
    rows = np.arange(len(lighter))
    images = np.stack([per_jet[rows, lighter], per_jet[rows, 1 - lighter]], axis=1)
    return {"images": images, "mjj": mjj, "passed": passed}


def _images_of_span(info, span: tuple[int, int], config: ImageConfig) -> dict[str, np.ndarray]:
    from radar.processors.sources import LHCORawChunk

    events = LHCORawChunk(info)(span)
    out = images_chunk(events["particles"], config)
    out["label"] = ak.to_numpy(events["label"])[out["passed"]].astype(np.float64)
    out["event"] = ak.to_numpy(events["event"])[out["passed"]].astype(np.int64)
    out["n_read"] = len(events)
    return out


def write_images(
    inputs: Sequence[str | Path],
    output: str | Path,
    config: ImageConfig = ImageConfig(),
    *,
    chunk_size: int = 5_000,
    workers: int | None = None,
    scheduler: str | None = None,
    max_events: int | None = None,
    progress: bool = True,
) -> dict[str, int]:
    """Jet images of every passing event of the LHCO raw HDF5 ``inputs`` into ``output`` (HDF5, atomic).

    ``max_events``: stop after this many events read per file (None: all). Returns counts
    ``{"read", "written"}``. Chunks run as tasks (``workers`` processes of the embedded LocalCluster,
    0: in this process, or ``scheduler``) with at most two chunks in flight per worker; results are
    appended in event order."""
    import tables
    from tqdm.auto import tqdm

    from radar.processors.cluster import dask_client, default_workers
    from radar.processors.io import atomic_output
    from radar.processors.sources import event_spans, inspect_lhco_raw

    output = Path(output)
    infos = [inspect_lhco_raw(Path(p).resolve()) for p in inputs]
    tasks = []
    for info in infos:
        n = info.n_events if max_events is None else min(info.n_events, int(max_events))
        tasks += [(info, span) for span in event_spans(n, chunk_size)]
    p = int(config.pixels)
    counts = {"read": 0, "written": 0}
    t0 = time.perf_counter()
    bar = tqdm(total=sum(b - a for _, (a, b) in tasks), desc="jet images", unit="ev", disable=not progress)
    with atomic_output(output) as tmp, tables.open_file(str(tmp), mode="w") as h5:
        filters = tables.Filters(complevel=4, complib="blosc:lz4")
        arrays = {
            "images": h5.create_earray("/", "images", tables.Float32Atom(), (0, 2, p, p), filters=filters),
            "mjj": h5.create_earray("/", "mjj", tables.Float64Atom(), (0,)),
            "label": h5.create_earray("/", "label", tables.Float64Atom(), (0,)),
            "event": h5.create_earray("/", "event", tables.Int64Atom(), (0,)),
        }

        def append(result: dict) -> None:
            for name, array in arrays.items():
                array.append(result[name])
            counts["read"] += int(result["n_read"])
            counts["written"] += len(result["mjj"])
            bar.update(int(result["n_read"]))

        n_workers = 0 if scheduler is None and workers == 0 else (workers or default_workers())
        with dask_client(None if scheduler else n_workers, scheduler) as client:
            if client is None:
                for info, span in tasks:
                    append(_images_of_span(info, span, config))
            else:
                pending: dict[int, object] = {}
                done: dict[int, dict] = {}
                next_submit = next_write = 0
                limit = 2 * max(1, n_workers or len(client.scheduler_info().get("workers", {})) or 1)
                while next_write < len(tasks):
                    while next_submit < len(tasks) and len(pending) + len(done) < limit:
                        info, span = tasks[next_submit]
                        pending[next_submit] = client.submit(_images_of_span, info, span, config, pure=False)
                        next_submit += 1
                    future = pending.pop(next_write)
                    done[next_write] = future.result()
                    while next_write in done:
                        append(done.pop(next_write))
                        next_write += 1
        h5.set_node_attr("/", "pixels", p)
        h5.set_node_attr("/", "jet_radius", float(config.jets.jet_radius))
        h5.set_node_attr("/", "inputs", [str(i.path) for i in infos])
    bar.close()
    if counts["written"] == 0:
        output.unlink(missing_ok=True)
        raise ValueError(f"no event of {[str(i.path) for i in infos]} passed the dijet selection; no images")
    log.info(
        "jet images: %d of %d events passed, %d x %d pixels, %.1f s -> %s",
        counts["written"],
        counts["read"],
        p,
        p,
        time.perf_counter() - t0,
        output,
    )
    return counts


class ImageFile:
    """Read an image file of :func:`write_images` in chunks (memory bounded by the chunk)."""

    def __init__(self, path: str | Path):
        import tables

        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no such image file")
        try:
            with tables.open_file(str(self.path), mode="r") as h5:
                node = h5.get_node("/images")
                self.n, _, self.pixels, _ = (int(v) for v in node.shape)
        except Exception as error:
            from radar.processors.io import error_summary

            raise OSError(f"{self.path}: not a radar image file ({error_summary(error)})") from error

    def read(self, start: int = 0, stop: int | None = None, what: str = "images") -> np.ndarray:
        import tables

        with tables.open_file(str(self.path), mode="r") as h5:
            return h5.get_node(f"/{what}").read(start, self.n if stop is None else min(stop, self.n))

    def chunks(self, chunk_size: int = 10_000):
        for start in range(0, self.n, chunk_size):
            yield self.read(start, start + chunk_size)

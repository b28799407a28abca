"""Jet reconstruction and substructure for one chunk of events: all fastjet work happens here.

:func:`cluster_chunk` takes an eager awkward array of particles and returns one record per event with
the dijet features and a status code. It is the function that processors map over dask-awkward
partitions: fastjet's ClusterSequence is not a dask-aware object (every call on a dask
ClusterSequence reclusters), so each partition is clustered exactly once, inside this function.

Conventions (GeV, radians):

- anti-kt with radius ``R`` (default 1.0), E recombination, massless input particles;
- trigger: at least one jet with pT > 1.2 TeV and |η| < 2.5 (configurable), and at least two jets;
- the two leading-pT jets make the dijet system; for the features they are ordered by mass
  (J1 = lighter jet, J2 = heavier jet);
- N-subjettiness τ1..τ3 per jet, β = 1, R0 = R, normalised by Σ pT · R0, with kt exclusive axes:
  ``tau_convention="contrib"`` (default) uses fastjet-contrib ``Nsubjettiness`` (``KT_Axes``,
  distances in rapidity–φ); ``"lhco"`` computes the same sum columnarly with pp-kt (R = jet radius)
  exclusive axes and distances in η–φ, the pyjet-era LHC Olympics convention; ``"lhco_peer"`` also
  drops the 2π wrap of Δφ, reproducing the LHCO peer reclustering bit for bit (validation only).
- ``ht``: scalar pT sum of the jets with pT > ``ht_jet_pt_min`` and |η| < ``ht_jet_eta_max``;
  ``met``: magnitude of the negative vector pT sum of all visible particles.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import warnings

import awkward as ak
import numpy as np
import vector

vector.register_awkward()
log = logging.getLogger(__name__)

#: status codes returned per event by :func:`cluster_chunk`
PASS, NO_JETS, ONE_JET, FAIL_TRIGGER = 0, 1, 2, 3
STATUS_NAMES = {PASS: "passed", NO_JETS: "no_jets", ONE_JET: "one_jet", FAIL_TRIGGER: "failed_trigger"}

TAU_CONVENTIONS = ("contrib", "lhco", "lhco_peer")

FEATURE_FIELDS = (
    "mjj", "mj1", "mj2", "delta_mj", "tau21_j1", "tau21_j2", "tau32_j1", "tau32_j2", "delta_r_jj",
    "pt_j1", "pt_j2", "eta_j1", "eta_j2", "ht", "met",
)


@dataclasses.dataclass(frozen=True)
class JetConfig:
    """Jet and trigger settings (GeV). Frozen and picklable: it travels to every Dask worker."""

    jet_radius: float = 1.0
    trigger_pt: float = 1200.0
    trigger_eta: float = 2.5
    tau_beta: float = 1.0
    tau_r0: float | None = None  # None: R0 = jet radius
    tau_axes: str = "KT_Axes"
    tau_convention: str = "contrib"  # see TAU_CONVENTIONS
    ht_jet_pt_min: float = 30.0
    ht_jet_eta_max: float = 2.5

    def __post_init__(self) -> None:
        if not self.jet_radius > 0:
            raise ValueError(f"jet radius must be positive, got {self.jet_radius}")
        if self.tau_convention not in TAU_CONVENTIONS:
            raise ValueError(f"tau_convention must be one of {TAU_CONVENTIONS}, got {self.tau_convention!r}")

    @property
    def r0(self) -> float:
        return self.jet_radius if self.tau_r0 is None else self.tau_r0


_FD_LOCK = threading.Lock()


@contextlib.contextmanager
def _quiet_fastjet():
    """Silence fastjet's banner and C++ warnings (written to fd 1/2 by the library, not Python).

    File descriptors are process-wide, so the redirection is serialised by a lock.
    """
    with _FD_LOCK:
        saved = [os.dup(1), os.dup(2)]
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in (*saved, devnull):
                os.close(fd)


def _momenta(records: ak.Array) -> ak.Array:
    """Re-wrap any array with px/py/pz/E or pt/eta/phi/mass fields as vector Momentum4D."""
    fields = {name: records[name] for name in records.fields}
    return ak.zip(fields, with_name="Momentum4D")


def _tau_lhco(constituents: ak.Array, axes_by_n: list[ak.Array], r0: float, wrap_phi: bool) -> list[ak.Array]:
    """τN = Σ_i pT_i min_k ΔR(i, axis_k) / (Σ_i pT_i R0), ΔR in η–φ; 0 for jets with < N constituents.

    ``wrap_phi=False`` reproduces the missing 2π wrap of Δφ in the LHCO peer-reclustering code (a bug:
    jets straddling φ = ±π get unphysical τ); it exists only to validate against those files.
    """
    norm = ak.sum(constituents.pt, axis=-1) * r0
    n_constituents = ak.num(constituents, axis=-1)
    taus = []
    for n, axes in enumerate(axes_by_n, start=1):
        particle, axis = ak.unzip(ak.cartesian([constituents, axes], axis=2, nested=True))
        if wrap_phi:
            distance = particle.deltaR(axis)
        else:
            distance = np.sqrt((particle.eta - axis.eta) ** 2 + (particle.phi - axis.phi) ** 2)
        tau = ak.sum(constituents.pt * ak.fill_none(ak.min(distance, axis=-1), 0.0), axis=-1)
        tau = tau / ak.where(norm > 0, norm, 1.0)
        taus.append(ak.where(n_constituents >= n, tau, 0.0))
    return taus


def _nsubjettiness(constituents: ak.Array, config: JetConfig) -> np.ndarray:
    """τ1, τ2, τ3 of each jet. ``constituents``: events × 2 jets × particles. Returns (events, 2, 3)."""
    import fastjet

    n_events = len(constituents)
    if n_events == 0:
        return np.zeros((0, 2, 3))
    if config.tau_convention == "contrib":
        # the general-event ClusterSequence runs contrib Nsubjettiness on each innermost list (= each jet)
        jet_def = fastjet.JetDefinition(fastjet.antikt_algorithm, config.jet_radius)
        with _quiet_fastjet():
            sequence = fastjet.ClusterSequence(constituents, jet_def)
            tau = sequence.njettiness(
                measure_definition="NormalizedMeasure", axes_definition=config.tau_axes,
                njets=[1, 2, 3], beta=config.tau_beta, R0=config.r0,
            )
        return np.asarray(ak.to_numpy(tau)).reshape(n_events, 2, 3)
    # "lhco" / "lhco_peer": exclusive pp-kt axes with R = jet radius, distances in η–φ
    kt_def = fastjet.JetDefinition(fastjet.kt_algorithm, config.jet_radius)
    with _quiet_fastjet():
        sequence = fastjet.ClusterSequence(constituents, kt_def)
        with warnings.catch_warnings():
            # fastjet's python layer warns for nested (event × jet) inputs even with the kt algorithm
            warnings.filterwarnings("ignore", message="dcut and exclusive jets")
            axes_by_n = [_momenta(sequence.exclusive_jets_up_to(n)) for n in (1, 2, 3)]
    taus = _tau_lhco(constituents, axes_by_n, config.r0, wrap_phi=config.tau_convention == "lhco")
    return np.stack([np.asarray(ak.to_numpy(t)) for t in taus], axis=-1).reshape(n_events, 2, 3)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def cluster_chunk(particles: ak.Array, config: JetConfig = JetConfig()) -> ak.Array:
    """Cluster one chunk of events and compute the dijet features.

    ``particles``: eager awkward array, one list per event of records with ``pt, eta, phi`` (GeV;
    treated as massless). Returns a record array of the same length with the fields
    :data:`FEATURE_FIELDS` (NaN for events that fail) plus ``status`` (int8, see ``STATUS_NAMES``)
    and ``n_jets``.
    """
    import fastjet

    if ak.backend(particles) == "typetracer":
        # dask-awkward's column optimisation: report the columns we read, return the output form
        for name in ("pt", "eta", "phi"):
            ak.typetracer.touch_data(particles[name])
        return ak.Array(empty_chunk_result().layout.to_typetracer(forget_length=True))
    n_events = len(particles)
    inputs = ak.zip(
        {"pt": particles.pt, "eta": particles.eta, "phi": particles.phi,
         "mass": ak.zeros_like(particles.pt)},
        with_name="Momentum4D",
    )
    jet_def = fastjet.JetDefinition(fastjet.antikt_algorithm, config.jet_radius)
    with _quiet_fastjet():
        sequence = fastjet.ClusterSequence(inputs, jet_def)
        jets = sequence.inclusive_jets()
        constituents = sequence.constituents()
    jets = _momenta(jets)
    order = ak.argsort(jets.pt, axis=1, ascending=False, stable=True)
    jets = jets[order]
    constituents = constituents[order]
    n_jets = ak.to_numpy(ak.num(jets, axis=1))

    triggered = ak.to_numpy(ak.any((jets.pt > config.trigger_pt) & (abs(jets.eta) < config.trigger_eta), axis=1))
    status = np.full(n_events, PASS, dtype=np.int8)
    status[~triggered] = FAIL_TRIGGER
    status[n_jets < 2] = ONE_JET
    status[n_jets == 0] = NO_JETS
    passed = status == PASS

    # missing transverse momentum of the visible particles and HT, for every event
    met = np.hypot(ak.to_numpy(ak.sum(inputs.px, axis=1)), ak.to_numpy(ak.sum(inputs.py, axis=1)))
    ht_jets = (jets.pt > config.ht_jet_pt_min) & (abs(jets.eta) < config.ht_jet_eta_max)
    ht = ak.to_numpy(ak.sum(jets.pt[ht_jets], axis=1))

    columns = {name: np.full(n_events, np.nan) for name in FEATURE_FIELDS}
    columns["met"] = met
    columns["ht"] = ht
    if passed.any():
        lead = jets[passed][:, :2]
        j_a, j_b = lead[:, 0], lead[:, 1]
        lead_constituents = _momenta(constituents[passed][:, :2])
        tau = _nsubjettiness(lead_constituents, config)  # (n, 2, 3) in pT order
        mass = np.stack([ak.to_numpy(j_a.mass), ak.to_numpy(j_b.mass)], axis=1)
        # massless constituents can give m² slightly < 0 from rounding
        mass = np.nan_to_num(np.maximum(mass, 0.0))
        lighter = np.argmin(mass, axis=1)  # pT-leading jet wins ties
        rows = np.arange(len(lighter))
        light, heavy = lighter, 1 - lighter
        pt = np.stack([ak.to_numpy(j_a.pt), ak.to_numpy(j_b.pt)], axis=1)
        eta = np.stack([ak.to_numpy(j_a.eta), ak.to_numpy(j_b.eta)], axis=1)
        tau21 = _ratio(tau[:, :, 1], tau[:, :, 0])
        tau32 = _ratio(tau[:, :, 2], tau[:, :, 1])
        dijet = j_a + j_b
        values = {
            "mjj": ak.to_numpy(dijet.mass),
            "mj1": mass[rows, light], "mj2": mass[rows, heavy],
            "tau21_j1": tau21[rows, light], "tau21_j2": tau21[rows, heavy],
            "tau32_j1": tau32[rows, light], "tau32_j2": tau32[rows, heavy],
            "delta_r_jj": ak.to_numpy(j_a.deltaR(j_b)),
            "pt_j1": pt[rows, light], "pt_j2": pt[rows, heavy],
            "eta_j1": eta[rows, light], "eta_j2": eta[rows, heavy],
        }
        values["delta_mj"] = values["mj2"] - values["mj1"]
        for name, value in values.items():
            columns[name][passed] = value
    return ak.zip(
        {**columns, "status": status, "n_jets": n_jets.astype(np.int32)}, depth_limit=1
    )


def empty_chunk_result() -> ak.Array:
    """A zero-length result with the exact form :func:`cluster_chunk` returns (for dask metadata)."""
    columns = {name: np.zeros(0) for name in FEATURE_FIELDS}
    return ak.zip({**columns, "status": np.zeros(0, np.int8), "n_jets": np.zeros(0, np.int32)}, depth_limit=1)

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
- N-subjettiness τ1..τ3 per jet, β = 1 (``tau_beta``), R0 = R, normalised by Σ pT · R0^β, with exclusive-kt
  axes (other ``tau_axes`` only with ``tau_convention="contrib"``; the columnar paths refuse them).
  ``tau_convention="kt"`` (default) is fastjet-contrib's ``Nsubjettiness`` with ``KT_Axes`` and
  ``NormalizedMeasure`` (ΔR in rapidity–φ), computed in one compiled pass per jet that finds the
  exclusive-kt axes and sums τ (:mod:`radar.processors.substructure`; equal to contrib to rounding,
  no second fastjet clustering); ``"contrib"`` calls
  fastjet-contrib ``njettiness`` itself (any ``tau_axes``); ``"lhco"`` uses pp-kt axes with R = jet
  radius and ΔR in η–φ (the pyjet-era LHC Olympics tools); ``"lhco_peer"`` also drops the 2π wrap
  of Δφ, reproducing the LHCO peer-reclustering files bit for bit (their bug; validation only).
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

from radar.processors.columns import KINEMATIC_COLUMNS

vector.register_awkward()
log = logging.getLogger(__name__)

#: status codes returned per event by :func:`cluster_chunk`
PASS, NO_JETS, ONE_JET, FAIL_TRIGGER = 0, 1, 2, 3
STATUS_NAMES = {PASS: "passed", NO_JETS: "no_jets", ONE_JET: "one_jet", FAIL_TRIGGER: "failed_trigger"}

TAU_CONVENTIONS = ("kt", "contrib", "lhco", "lhco_peer")

#: the per-event fields computed here: the feature table's kinematic columns (defined once, in columns)
FEATURE_FIELDS = KINEMATIC_COLUMNS


@dataclasses.dataclass(frozen=True)
class JetConfig:
    """Jet and trigger settings (GeV). Frozen and picklable: it travels to every Dask worker."""

    jet_radius: float = 1.0
    trigger_pt: float = 1200.0
    trigger_eta: float = 2.5
    tau_beta: float = 1.0
    tau_r0: float | None = None  # None: R0 = jet radius
    tau_axes: str = "KT_Axes"
    tau_convention: str = "kt"  # see TAU_CONVENTIONS
    ht_jet_pt_min: float = 30.0
    ht_jet_eta_max: float = 2.5

    def __post_init__(self) -> None:
        if not self.jet_radius > 0:
            raise ValueError(f"jet radius must be positive, got {self.jet_radius}")
        if self.tau_convention not in TAU_CONVENTIONS:
            raise ValueError(f"tau_convention must be one of {TAU_CONVENTIONS}, got {self.tau_convention!r}")
        if not self.tau_beta > 0:
            raise ValueError(f"tau_beta must be positive, got {self.tau_beta}")
        if self.tau_convention != "contrib" and self.tau_axes != "KT_Axes":
            # the columnar path computes exclusive-kt axes only: other axes would be silently ignored
            raise ValueError(
                f"tau_axes {self.tau_axes!r} needs tau_convention='contrib' (the columnar "
                f"'{self.tau_convention}' path uses exclusive-kt axes, KT_Axes)"
            )

    @property
    def r0(self) -> float:
        return self.jet_radius if self.tau_r0 is None else self.tau_r0


_FD_LOCK = threading.Lock()


@contextlib.contextmanager
def quiet_fastjet():
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


def _flat_kinematics(records: ak.Array) -> dict[str, np.ndarray]:
    """px, py, pz, E of a (possibly nested) fastjet record array, flattened to numpy, plus pt, phi."""
    flat = records
    while flat.ndim > 1:
        flat = ak.flatten(flat, axis=1)
    out = {name: np.asarray(ak.to_numpy(flat[name]), dtype=np.float64) for name in ("px", "py", "pz", "E")}
    out["pt"] = np.hypot(out["px"], out["py"])
    out["phi"] = np.arctan2(out["py"], out["px"])
    return out


def _longitudinal(k: dict[str, np.ndarray], kind: str) -> np.ndarray:
    """Rapidity (``kind="rapidity"``) or pseudorapidity (``"eta"``) from flat kinematics."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "rapidity":
            return 0.5 * np.log((k["E"] + k["pz"]) / (k["E"] - k["pz"]))
        return np.arcsinh(k["pz"] / k["pt"])


def _tau_columnar(constituents: ak.Array, config: JetConfig) -> np.ndarray:
    """N-subjettiness with exclusive-kt axes, computed with flat numpy over all jets of a chunk.

    τN = Σ_i pT_i min_k ΔR(i, axis_k)^β / (Σ_i pT_i R0^β) (``config.tau_beta``, contrib's
    ``NormalizedMeasure``), 0 for jets with fewer than N constituents.
    ``constituents``: events × jets × particles. Returns (n_jets_total, 3), jets in input order.

    ``"kt"``: fastjet-contrib's ``KT_Axes`` + ``NormalizedMeasure`` (kt with R = 1000, ΔR in y–φ);
    ``"lhco"``: pp-kt with R = jet radius, ΔR in η–φ; ``"lhco_peer"``: as ``lhco`` but without the 2π
    wrap of Δφ (the bug of the LHCO peer-reclustering code, for validation only).
    """
    import fastjet

    convention = config.tau_convention
    kt_radius = 1000.0 if convention == "kt" else config.jet_radius
    metric = "rapidity" if convention == "kt" else "eta"
    kt_def = fastjet.JetDefinition(fastjet.kt_algorithm, kt_radius)
    with quiet_fastjet():
        sequence = fastjet.ClusterSequence(constituents, kt_def)
        with warnings.catch_warnings():
            # fastjet's python layer warns for nested (event × jet) inputs even with the kt algorithm
            warnings.filterwarnings("ignore", message="dcut and exclusive jets")
            axes_by_n = [sequence.exclusive_jets_up_to(n) for n in (1, 2, 3)]

    counts = ak.to_numpy(ak.flatten(ak.num(constituents, axis=2), axis=None))
    n_jets = len(counts)
    jet_of = np.repeat(np.arange(n_jets), counts)
    particles = _flat_kinematics(constituents)
    p_long = _longitudinal(particles, metric)
    beta = float(config.tau_beta)
    norm = np.bincount(jet_of, weights=particles["pt"], minlength=n_jets) * config.r0**beta
    taus = np.zeros((n_jets, 3))
    for n, axes in enumerate(axes_by_n, start=1):
        n_axes = ak.to_numpy(ak.flatten(ak.num(axes, axis=2), axis=None))
        kin = _flat_kinematics(axes)
        a_long = _longitudinal(kin, metric)
        # (n_jets, n) tables of axis coordinates; missing axes are +inf away
        first = _starts(n_axes)
        long_table = np.full((n_jets, n), np.inf)
        phi_table = np.zeros((n_jets, n))
        for k in range(n):
            has = n_axes > k
            long_table[has, k] = a_long[first[has] + k]
            phi_table[has, k] = kin["phi"][first[has] + k]
        d_long = p_long[:, None] - long_table[jet_of]
        d_phi = particles["phi"][:, None] - phi_table[jet_of]
        if convention != "lhco_peer":
            d_phi = np.mod(d_phi + np.pi, 2 * np.pi) - np.pi
        min_dr2 = np.min(d_long**2 + d_phi**2, axis=1)
        min_dr_beta = np.sqrt(min_dr2) if beta == 1.0 else min_dr2 ** (0.5 * beta)
        tau = np.bincount(jet_of, weights=particles["pt"] * min_dr_beta, minlength=n_jets)
        taus[:, n - 1] = np.where((norm > 0) & (counts >= n), tau / np.where(norm > 0, norm, 1.0), 0.0)
    return taus


def _tau_one_pass(constituents: ak.Array, config: JetConfig) -> np.ndarray:
    """``"kt"``: the exclusive-kt axes and τ1..τ3 in one compiled pass over each jet's constituents
    (:func:`radar.processors.substructure.kt_nsubjettiness`; no second fastjet clustering)."""
    from radar.processors.substructure import kt_nsubjettiness

    counts = ak.to_numpy(ak.flatten(ak.num(constituents, axis=2), axis=None))
    k = _flat_kinematics(constituents)
    return kt_nsubjettiness(k["px"], k["py"], k["pz"], k["E"], counts, beta=config.tau_beta, r0=config.r0)


def _tau_contrib(constituents: ak.Array, config: JetConfig) -> np.ndarray:
    """τ1..τ3 from fastjet-contrib Nsubjettiness (``NormalizedMeasure``, ``config.tau_axes``)."""
    import fastjet

    # the general-event ClusterSequence runs contrib Nsubjettiness on each innermost list (= each jet)
    jet_def = fastjet.JetDefinition(fastjet.antikt_algorithm, config.jet_radius)
    with quiet_fastjet():
        sequence = fastjet.ClusterSequence(constituents, jet_def)
        tau = sequence.njettiness(
            measure_definition="NormalizedMeasure",
            axes_definition=config.tau_axes,
            njets=[1, 2, 3],
            beta=config.tau_beta,
            R0=config.r0,
        )
    return np.asarray(ak.to_numpy(ak.flatten(tau, axis=1)), dtype=np.float64).reshape(-1, 3)


def nsubjettiness(constituents: ak.Array, config: JetConfig) -> np.ndarray:
    """τ1, τ2, τ3 of each jet. ``constituents``: events × jets × particles. Returns (events, jets, 3)."""
    n_events = len(constituents)
    n_per_event = ak.to_numpy(ak.num(constituents, axis=1))
    if n_events == 0 or n_per_event.sum() == 0:
        return np.zeros((n_events, int(n_per_event.max(initial=0)), 3))
    if config.tau_convention == "kt":
        taus = _tau_one_pass(constituents, config)
    else:
        compute = _tau_contrib if config.tau_convention == "contrib" else _tau_columnar
        taus = compute(constituents, config)
    return taus.reshape(n_events, -1, 3)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


@dataclasses.dataclass
class _Clustered:
    sequence: object  # fastjet.ClusterSequence of the chunk
    jet: dict[str, np.ndarray]  # flat jet kinematics (px, py, pz, E, pt, phi)
    jet_eta: np.ndarray
    n_jets: np.ndarray  # jets per event
    px: np.ndarray  # flat particle momenta (px, py also give the missing pT)
    py: np.ndarray
    counts: np.ndarray  # particles per event
    pz: np.ndarray
    energy: np.ndarray


def _cluster(particles: ak.Array, config: JetConfig) -> _Clustered:
    """anti-kt clustering of a chunk of massless ``{pt, eta, phi}`` particles (one fastjet call)."""
    import fastjet

    counts = ak.to_numpy(ak.num(particles, axis=1))
    pt = np.asarray(ak.to_numpy(ak.flatten(particles.pt)), dtype=np.float64)
    eta = np.asarray(ak.to_numpy(ak.flatten(particles.eta)), dtype=np.float64)
    phi = np.asarray(ak.to_numpy(ak.flatten(particles.phi)), dtype=np.float64)
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    energy = np.sqrt(px**2 + py**2 + pz**2)  # massless
    inputs = ak.unflatten(ak.zip({"px": px, "py": py, "pz": pz, "E": energy}, with_name="Momentum4D"), counts)
    jet_def = fastjet.JetDefinition(fastjet.antikt_algorithm, config.jet_radius)
    with quiet_fastjet():
        sequence = fastjet.ClusterSequence(inputs, jet_def)
        jets = sequence.inclusive_jets()
    jet = _flat_kinematics(jets)
    return _Clustered(
        sequence,
        jet,
        _longitudinal(jet, "eta"),
        ak.to_numpy(ak.num(jets, axis=1)),
        px,
        py,
        counts,
        pz,
        energy,
    )


def leading_jets(clustered: _Clustered, passed: np.ndarray) -> tuple[ak.Array, dict[str, np.ndarray]]:
    """The two leading-pT jets of each ``passed`` event: their indices within the event's jets ((n, 2) jagged,
    for the constituents) and their kinematics, (n, 2) arrays ``px, py, pz, E, pt, phi, eta, m`` in pT order, with
    ``jet`` their indices into the chunk's flat jet arrays."""
    jet, n_jets = clustered.jet, clustered.n_jets
    order = ak.argsort(ak.unflatten(jet["pt"], n_jets), axis=1, ascending=False, stable=True)
    lead_index = order[passed][:, :2]
    flat_index = _starts(n_jets)[passed][:, None] + ak.to_numpy(lead_index)  # (n, 2) into the flat jet arrays
    lead = {name: values[flat_index] for name, values in jet.items()}
    lead["eta"] = clustered.jet_eta[flat_index]
    lead["m"] = np.sqrt(np.maximum(lead["E"] ** 2 - lead["px"] ** 2 - lead["py"] ** 2 - lead["pz"] ** 2, 0.0))
    lead["jet"] = flat_index
    return lead_index, lead


def leading_constituents(
    clustered: _Clustered, passed: np.ndarray, lead: dict[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Flat ``px, py, pz, E`` of the constituents of the two leading jets of each ``passed`` event (``lead`` of
    :func:`leading_jets`, jets in its order) and the constituent count of each of those jets.

    Only jets at least as hard as the softest leading jet are asked from fastjet (its ``min_pt``), so the
    soft jets' constituents are never copied out; the momenta are gathered from the chunk's own flat arrays.
    """
    jet_pt, n_jets = clustered.jet["pt"], clustered.n_jets
    n_events = len(n_jets)
    event_of_jet = np.repeat(np.arange(n_events), n_jets)
    threshold = float(np.min(lead["pt"])) * (1.0 - 1e-9) if lead["pt"].size else 0.0
    index = clustered.sequence.constituent_index(threshold)
    kept = jet_pt * jet_pt >= threshold * threshold
    kept_per_event = np.bincount(event_of_jet, weights=kept, minlength=n_events).astype(np.int64)
    if not np.array_equal(ak.to_numpy(ak.num(index, axis=1)), kept_per_event):
        # a jet right at the threshold was rounded the other way by fastjet: take every jet instead
        index, kept = clustered.sequence.constituent_index(0.0), np.ones(len(jet_pt), dtype=bool)
        kept_per_event = n_jets.astype(np.int64)
    rank = np.cumsum(kept) - 1 - _starts(kept_per_event)[event_of_jet]  # position among its event's kept jets
    pairs = ak.from_regular(ak.Array(rank[lead["jet"]]))  # jagged (one list per event) for per-event indexing
    chosen = index[passed][pairs]  # n × 2 × particle indices within the event
    counts = ak.to_numpy(ak.flatten(ak.num(chosen, axis=2), axis=None))
    flat = ak.to_numpy(ak.flatten(chosen, axis=None)) + np.repeat(
        _starts(clustered.counts)[passed], counts.reshape(-1, 2).sum(1)
    )
    momenta = {
        name: getattr(clustered, attr)[flat]
        for name, attr in (("px", "px"), ("py", "py"), ("pz", "pz"), ("E", "energy"))
    }
    return momenta, counts


def _starts(counts: np.ndarray) -> np.ndarray:
    """Where each of consecutive groups of ``counts`` elements starts in the flat array."""
    return np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)


def _status(jet_pt: np.ndarray, jet_eta: np.ndarray, n_jets: np.ndarray, config: JetConfig) -> np.ndarray:
    """Per-event status code from flat jet pT/η: the LHCO trigger and the two-jet requirement."""
    n_events = len(n_jets)
    event_of_jet = np.repeat(np.arange(n_events), n_jets)
    trigger_jet = (jet_pt > config.trigger_pt) & (np.abs(jet_eta) < config.trigger_eta)
    triggered = np.bincount(event_of_jet, weights=trigger_jet, minlength=n_events) > 0
    status = np.full(n_events, PASS, dtype=np.int8)
    status[~triggered] = FAIL_TRIGGER
    status[n_jets < 2] = ONE_JET
    status[n_jets == 0] = NO_JETS
    return status


def trigger_status(particles: ak.Array, config: JetConfig = JetConfig()) -> np.ndarray:
    """Status code per event (``PASS`` = passes the trigger with ≥ 2 jets), clustering only: the cheap
    form of the selection :func:`cluster_chunk` applies (the generator keeps only ``PASS`` events)."""
    if len(particles) == 0:
        return np.zeros(0, dtype=np.int8)
    clustered = _cluster(particles, config)
    return _status(clustered.jet["pt"], clustered.jet_eta, clustered.n_jets, config)


def cluster_chunk(particles: ak.Array, config: JetConfig = JetConfig()) -> ak.Array:
    """Cluster one chunk of events and compute the dijet features.

    ``particles``: eager awkward array, one list per event of records with ``pt, eta, phi`` (GeV;
    treated as massless). Returns a record array of the same length with the fields
    :data:`FEATURE_FIELDS` (NaN for events that fail) plus ``status`` (int8, see ``STATUS_NAMES``)
    and ``n_jets``.
    """
    if ak.backend(particles) == "typetracer":
        # dask-awkward's column optimisation: report the columns we read, return the output form
        for name in ("pt", "eta", "phi"):
            ak.typetracer.touch_data(particles[name])
        return ak.Array(empty_chunk_result().layout.to_typetracer(forget_length=True))
    n_events = len(particles)
    clustered = _cluster(particles, config)
    jet, jet_eta, n_jets = clustered.jet, clustered.jet_eta, clustered.n_jets
    status = _status(jet["pt"], jet_eta, n_jets, config)
    passed = status == PASS

    event_of_jet = np.repeat(np.arange(n_events), n_jets)
    ht_jet = (jet["pt"] > config.ht_jet_pt_min) & (np.abs(jet_eta) < config.ht_jet_eta_max)
    ht = np.bincount(event_of_jet, weights=jet["pt"] * ht_jet, minlength=n_events)
    event_of_particle = np.repeat(np.arange(n_events), clustered.counts)
    met = np.hypot(
        np.bincount(event_of_particle, weights=clustered.px, minlength=n_events),
        np.bincount(event_of_particle, weights=clustered.py, minlength=n_events),
    )

    columns = {name: np.full(n_events, np.nan) for name in FEATURE_FIELDS}
    columns["met"] = met
    columns["ht"] = ht
    if passed.any():
        lead_index, lead = leading_jets(clustered, passed)
        if config.tau_convention == "kt":  # the one-pass τ on the leading jets' constituents alone
            from radar.processors.substructure import kt_nsubjettiness

            momenta, counts = leading_constituents(clustered, passed, lead)
            tau = kt_nsubjettiness(
                momenta["px"],
                momenta["py"],
                momenta["pz"],
                momenta["E"],
                counts,
                beta=config.tau_beta,
                r0=config.r0,
            ).reshape(-1, 2, 3)
        else:
            constituents = clustered.sequence.constituents()
            tau = nsubjettiness(constituents[passed][lead_index], config)  # (n, 2, 3) in pT order
        dijet = {name: lead[name][:, 0] + lead[name][:, 1] for name in ("px", "py", "pz", "E")}
        mjj = np.sqrt(
            np.maximum(dijet["E"] ** 2 - dijet["px"] ** 2 - dijet["py"] ** 2 - dijet["pz"] ** 2, 0.0)
        )
        d_phi = np.mod(lead["phi"][:, 0] - lead["phi"][:, 1] + np.pi, 2 * np.pi) - np.pi
        lighter = np.argmin(lead["m"], axis=1)  # the pT-leading jet wins ties
        rows = np.arange(len(lighter))
        light, heavy = (rows, lighter), (rows, 1 - lighter)
        tau21 = _ratio(tau[:, :, 1], tau[:, :, 0])
        tau32 = _ratio(tau[:, :, 2], tau[:, :, 1])
        values = {
            "mjj": mjj,
            "mj1": lead["m"][light],
            "mj2": lead["m"][heavy],
            "tau21_j1": tau21[light],
            "tau21_j2": tau21[heavy],
            "tau32_j1": tau32[light],
            "tau32_j2": tau32[heavy],
            "delta_r_jj": np.hypot(lead["eta"][:, 0] - lead["eta"][:, 1], d_phi),
            "pt_j1": lead["pt"][light],
            "pt_j2": lead["pt"][heavy],
            "eta_j1": lead["eta"][light],
            "eta_j2": lead["eta"][heavy],
        }
        values["delta_mj"] = values["mj2"] - values["mj1"]
        for name, value in values.items():
            columns[name][passed] = value
    return ak.zip({**columns, "status": status, "n_jets": n_jets.astype(np.int32)}, depth_limit=1)


def empty_chunk_result() -> ak.Array:
    """A zero-length result with the exact form :func:`cluster_chunk` returns (for dask metadata)."""
    columns = {name: np.zeros(0) for name in FEATURE_FIELDS}
    return ak.zip({**columns, "status": np.zeros(0, np.int8), "n_jets": np.zeros(0, np.int32)}, depth_limit=1)

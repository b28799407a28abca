"""Pythia 8 producers of LHC-Olympics-like samples: QCD dijets, a resonance → X Y → (qq̄)(qq̄), and a
"simulation" variant of QCD with other generator settings.

Processes (13 TeV pp, Monash 2013 tune = Pythia's default, MPI and hadronisation on):

- ``qcd``: ``HardQCD:all`` with ``PhaseSpace:pTHatMin = pthat_min`` (default 700 GeV). The LHCO trigger
  (one anti-kt R=1 jet with pT > 1.2 TeV) is not a cut on p̂T: ISR/FSR and the large jet radius move
  jets across it. In a p̂T-biased run from p̂T > 450 GeV (12k events, 4350 triggered, weights undone),
  no triggered event had p̂T < 700 GeV, while 3.5 % of the triggered events (5.5 % in the SR
  3.3 < m_JJ < 3.7 TeV) had 700 < p̂T < 800 GeV and 15 % (11 % in the SR) had p̂T < 1000 GeV. So 700 GeV
  is the highest threshold that keeps the trigger fully efficient at every m_JJ; it costs a low
  generation efficiency (4-6 % of the generated events pass the trigger, the lower value with the
  detector response).
- ``resonance``: the left-right-symmetric Z_R (id 9900023, ``LeftRightSymmmetry:ffbar2ZR``) with mass
  ``mres``, its only decay channel set to two new scalars X (id 6000001, mass ``mx``) and Y (id 6000002,
  ``my``) with narrow widths (0.1 % of the mass), each forced to q q̄ (u, d, s, c, b, equal
  branching fractions, among the flavours above threshold). ``three_prong_y`` makes Y → q q̄ g
  (isotropic three-body phase space), a three-prong Y. Pythia's own Z' with only an X Y channel has zero
  cross-section; the Z_R keeps its left-right-model production and only its decay is replaced.
  ``decay_angles`` (default ``"longitudinal"``): Pythia decays the Z_R into X Y as 1 + cos²θ and X, Y
  isotropically; the default reshapes the three two-body decays (Z' → X Y against the beam axis, X → q q̄ and Y → q q̄
  against their flight directions, each in the decaying particle's rest frame) to sin²θ by accept-reject
  on the event record — the angular distributions of a vector resonance decaying into longitudinally
  polarised vectors that decay to quarks (a W' → W_L Z_L-like chain). Against the real R&D signal events
  (benchmarks/detector_tuning.py, docs/processing.md) this is what the R&D sample shows: with isotropic
  decays the heavier jet loses the X's second quark twice as often (m_J2 < 300 GeV in 17 % of the events
  against 8.6 %), τ21 of both jets is too high and ΔR_JJ too wide (KS 0.10 / 0.09 / 0.14 → 0.025 / 0.017
  / 0.024 with sin²θ). ``"isotropic"`` gives radar's samples before this choice. Y → q q̄ g (``three_prong_y``)
  keeps its phase-space decay.
- ``simulation``: QCD with a different parton shower and hadronisation setup, standing in for the
  Herwig sample of SALAD/FETA: weaker final-state shower (``TimeShower:alphaSvalue`` 0.110 vs 0.1365),
  weaker initial-state shower (``SpaceShower:alphaSvalue`` 0.120 vs 0.1365), higher shower cut-off
  (``TimeShower:pTmin`` 1.5 vs 0.5 GeV), other Lund fragmentation (``StringZ:aLund`` 0.50 vs 0.68,
  ``StringZ:bLund`` 0.75 vs 0.98, ``StringPT:sigma`` 0.28 vs 0.335) and MPI (``pT0Ref`` 2.60 vs 2.28).
  Against nominal QCD (radar's detector before the e-flow model, 1500 vs 3000 trigger-passing events,
  all m_JJ): lighter jet mass median 81 vs 109 GeV (KS 0.21), τ21 of the heavier jet 0.455 vs 0.487
  (KS 0.07), of the lighter jet 0.638 vs 0.656 (KS 0.06), delta_mj KS 0.04 (statistical KS floor of that
  comparison ≈ 0.04).
- ``svj``: semi-visible jets, the non-resonant search's signal (arXiv:2311.12924): Pythia's Hidden Valley
  Z' (``HiddenValley:ffbar2Zv``, mass ``mres``) → dark quarks, dark shower and hadronisation (N_c = 3,
  n_f = 3), dark mesons of mass Λ_D (``dark_scale``) decaying with probability ``rinv`` (1/3) into a
  stable invisible state (MET) and otherwise into a SM quark pair (:meth:`GeneratorConfig._svj_settings`).
  The seed's benchmark points: m_Z' = 2 TeV with Λ_D = 200 GeV, m_qD = 100 GeV; 3 TeV with 300 / 150 GeV.

Per event the visible final state (status > 0, no neutrinos) is taken from ``Pythia.nextBatch`` (the
event record as awkward arrays, built in C++, so there is no per-particle Python work), optionally
passed through :func:`radar.processors.detector.detector_response`, and kept only when it passes the LHCO
trigger (:func:`trigger_mask`, the definition of :mod:`radar.processors.jets`).

Parallelism: the requested events are split into tasks of ``events_per_task`` trigger-passing events;
task ``k`` uses the Pythia seed ``SeedSequence(seed).spawn(...)[k]``. The same ``(seed, n_events,
events_per_task)`` therefore gives bit-identical files whatever the number of workers. Tasks run on Dask
(the embedded ``LocalCluster`` with one process per core by default, or any scheduler address) or in
process (``workers=0``); the main process writes them in task order with
:class:`radar.processors.writers.LHCORawWriter`, which makes the run resumable after a kill.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from radar.processors.detector import DetectorConfig, detector_response

log = logging.getLogger(__name__)

PROCESSES = ("qcd", "resonance", "simulation", "svj")
X_ID, Y_ID, ZR_ID = 6000001, 6000002, 9900023
#: Hidden Valley ids: the Z' (Zv), the dark quark, the dark mesons (diagonal and off-diagonal pseudoscalar
#: and vector) and the stable invisible state their invisible decays go to
ZV_ID, QV_ID, DARK_MESONS, DARK_INVISIBLE = 4900023, 4900101, (4900111, 4900113, 4900211, 4900213), 51
_QUARK_MASSES = {1: 0.33, 2: 0.33, 3: 0.5, 4: 1.5, 5: 4.8}  # Pythia's default constituent/pole masses
MIN_SCALAR_MASS = 10.0
"""X and Y must be heavier than this (GeV): above the b b̄ threshold, where a resonance decay to a quark
pair followed by showering and hadronisation is meaningful."""
DECAY_ANGLES = ("longitudinal", "isotropic")

#: the "simulation" variant's settings (see the module docstring), on top of the QCD settings
SIMULATION_SETTINGS: tuple[str, ...] = (
    "TimeShower:alphaSvalue = 0.110",
    "SpaceShower:alphaSvalue = 0.120",
    "TimeShower:pTmin = 1.5",
    "StringZ:aLund = 0.50",
    "StringZ:bLund = 0.75",
    "StringPT:sigma = 0.28",
    "MultipartonInteractions:pT0Ref = 2.60",
)


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
    """Everything that decides the generated events (GeV). Frozen and picklable."""

    process: str = "qcd"
    ecm: float = 13000.0
    pthat_min: float = 700.0
    mres: float = 3500.0
    mx: float = 500.0
    my: float = 100.0
    width_fraction: float = 1e-3
    three_prong_y: bool = False
    #: resonance: "longitudinal" (sin²θ decays, see the module docstring) or "isotropic" (Pythia's own)
    decay_angles: str = "longitudinal"
    #: svj: the dark-sector scale Λ_D = m_πD = m_ρD, the dark quark mass, r_inv (the share of dark meson
    #: decays into the stable invisible state), N_c and the number of dark flavours
    dark_scale: float = 300.0
    dark_quark_mass: float = 150.0
    rinv: float = 1.0 / 3.0
    dark_colors: int = 3
    dark_flavours: int = 3
    detector: bool = True
    detector_config: DetectorConfig = DetectorConfig()
    mpi: bool = True
    hadronisation: bool = True
    jet_radius: float = 1.0
    trigger_pt: float = 1200.0
    trigger_eta: float = 2.5
    batch_size: int = 200
    extra_settings: tuple[str, ...] = ()

    @property
    def label(self) -> float:
        """Truth label written with the events: 1 signal, 0 background."""
        return 1.0 if self.process in ("resonance", "svj") else 0.0

    def validate(self) -> None:
        """Raise ``ValueError`` for settings that cannot generate events (before any generation)."""
        if self.process not in PROCESSES:
            raise ValueError(f"unknown process {self.process!r}; choose one of {', '.join(PROCESSES)}")
        if not self.ecm > 0:
            raise ValueError(f"centre-of-mass energy must be positive, got {self.ecm} GeV")
        if self.process in ("qcd", "simulation") and not 0 < self.pthat_min < self.ecm / 2:
            raise ValueError(f"pthat_min must be in (0, {self.ecm / 2}) GeV, got {self.pthat_min}")
        if self.process == "resonance":
            for name in ("mres", "mx", "my"):
                if not getattr(self, name) > 0:
                    raise ValueError(f"{name} must be positive, got {getattr(self, name)} GeV")
            for name in ("mx", "my"):
                if getattr(self, name) <= MIN_SCALAR_MASS:
                    raise ValueError(
                        f"{name} = {getattr(self, name)} GeV cannot decay to a quark pair as a resonance: "
                        f"it must be above {MIN_SCALAR_MASS} GeV"
                    )
            if self.mx + self.my >= self.mres * (1 - 5 * self.width_fraction):
                raise ValueError(
                    f"mX + mY = {self.mx + self.my} GeV must be below mres = {self.mres} GeV "
                    f"(the resonance decays to X Y)"
                )
            if self.mres >= self.ecm:
                raise ValueError(f"mres = {self.mres} GeV is above the collision energy {self.ecm} GeV")
            if not 0 < self.width_fraction < 0.1:
                raise ValueError(f"width_fraction must be in (0, 0.1), got {self.width_fraction}")
            if self.decay_angles not in DECAY_ANGLES:
                raise ValueError(f"decay_angles must be one of {DECAY_ANGLES}, got {self.decay_angles!r}")
        if self.process == "svj":
            if not 0 < self.mres < self.ecm:
                raise ValueError(f"the Z' mass mres must be in (0, {self.ecm}) GeV, got {self.mres}")
            if not (self.dark_quark_mass > 0 and self.dark_scale > 0):
                raise ValueError("dark_scale and dark_quark_mass must be positive (GeV)")
            if not 2 * self.dark_quark_mass < self.mres:
                raise ValueError(
                    f"the Z' ({self.mres} GeV) cannot decay to two dark quarks of {self.dark_quark_mass} GeV"
                )
            if not 0 <= self.rinv <= 1:
                raise ValueError(f"rinv is a fraction in [0, 1], got {self.rinv}")
            if self.dark_colors < 2 or self.dark_flavours < 1:
                raise ValueError("dark_colors must be >= 2 and dark_flavours >= 1")
        if not self.batch_size > 0:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if not (self.trigger_pt > 0 and self.trigger_eta > 0 and self.jet_radius > 0):
            raise ValueError("trigger_pt, trigger_eta and jet_radius must be positive")

    def pythia_settings(self, seed: int) -> list[str]:
        """The ``readString`` lines for this process with Pythia seed ``seed`` (1..900000000)."""
        lines = [
            f"Beams:eCM = {self.ecm}",
            "Random:setSeed = on",
            f"Random:seed = {int(seed)}",
            "Print:quiet = on",
            "Next:numberCount = 0",
            f"PartonLevel:MPI = {'on' if self.mpi else 'off'}",
            f"HadronLevel:all = {'on' if self.hadronisation else 'off'}",
        ]
        if self.process in ("qcd", "simulation"):
            lines += ["HardQCD:all = on", f"PhaseSpace:pTHatMin = {self.pthat_min}"]
        if self.process == "simulation":
            lines += list(SIMULATION_SETTINGS)
        if self.process == "resonance":
            lines += self._resonance_settings()
        if self.process == "svj":
            lines += self._svj_settings()
        return lines + list(self.extra_settings)

    def _svj_settings(self) -> list[str]:
        """Semi-visible jets: Pythia's Hidden Valley Z' (``HiddenValley:ffbar2Zv``) → q_D q̄_D, a dark shower
        and dark hadronisation (N_c colours, n_f flavours, running coupling at scale Λ_D), dark mesons of mass
        Λ_D that decay with probability r_inv into a stable invisible state and otherwise to a SM quark pair
        (u, d, s, c, b alike, hadronised).

        The Z' needs SM-quark channels for its production (f f̄ → Z'), so they are listed with tiny branching
        fractions and switched off: every Z' decays to dark quarks (the usual SVJ card layout). Every dark
        meson — diagonal and off-diagonal, pseudoscalar and vector — decays the same way, so r_inv is the
        share of invisible dark mesons whatever the flavours."""
        mz, lam = self.mres, self.dark_scale
        lines = [
            "HiddenValley:ffbar2Zv = on",
            f"{ZV_ID}:m0 = {mz}",
            f"{ZV_ID}:mWidth = {0.01 * mz}",
            f"{ZV_ID}:mMin = {0.5 * mz}",
            f"{ZV_ID}:mMax = {min(1.5 * mz, self.ecm)}",
            f"{ZV_ID}:oneChannel = 1 0.982 102 {QV_ID} -{QV_ID}",
        ]
        lines += [f"{ZV_ID}:addChannel = 1 0.003 102 {q} -{q}" for q in (1, 2, 3, 4, 5, 6)]
        lines += [
            f"{ZV_ID}:onMode = off",
            f"{ZV_ID}:onIfAny = {QV_ID}",
            f"HiddenValley:Ngauge = {self.dark_colors}",
            f"HiddenValley:nFlav = {self.dark_flavours}",
            "HiddenValley:fragment = on",
            "HiddenValley:FSR = on",
            "HiddenValley:alphaOrder = 1",
            f"HiddenValley:Lambda = {lam}",
            "HiddenValley:spinFv = 0",
            f"HiddenValley:pTminFSR = {1.1 * lam}",
            "HiddenValley:probVector = 0.75",
            f"{QV_ID}:m0 = {self.dark_quark_mass}",
            f"{DARK_INVISIBLE}:m0 = 0.0",
            f"{DARK_INVISIBLE}:mayDecay = off",
        ]
        for pid in DARK_MESONS:
            lines += [
                f"{pid}:m0 = {lam}",
                f"{pid}:oneChannel = 1 {self.rinv} 0 {DARK_INVISIBLE} -{DARK_INVISIBLE}",
            ]
            lines += [f"{pid}:addChannel = 1 {(1 - self.rinv) / 5} 91 {q} -{q}" for q in (1, 2, 3, 4, 5)]
        return lines

    def _resonance_settings(self) -> list[str]:
        def scalar(pid: int, name: str, mass: float) -> list[str]:
            width = self.width_fraction * mass
            return [
                f"{pid}:all = {name} void 1 0 0 {mass} {width} {mass - 5 * width} {mass + 5 * width} 0.",
                f"{pid}:isResonance = on",
                f"{pid}:mayDecay = on",
            ]

        def quark_channels(pid: int, mass: float) -> list[str]:
            open_flavours = [q for q, mq in _QUARK_MASSES.items() if 2 * mq < 0.9 * mass]
            lines = [f"{pid}:oneChannel = 1 1.0 100 {open_flavours[0]} -{open_flavours[0]}"]
            lines += [f"{pid}:addChannel = 1 1.0 100 {q} -{q}" for q in open_flavours[1:]]
            return lines

        lines = [
            "LeftRightSymmmetry:ffbar2ZR = on",
            f"{ZR_ID}:m0 = {self.mres}",
            f"{ZR_ID}:mMin = {0.5 * self.mres}",
            f"{ZR_ID}:mMax = {min(1.5 * self.mres, self.ecm)}",
        ]
        lines += scalar(X_ID, "X_scalar", self.mx) + scalar(Y_ID, "Y_scalar", self.my)
        lines += quark_channels(X_ID, self.mx)
        if self.three_prong_y:
            open_flavours = [q for q, mq in _QUARK_MASSES.items() if 2 * mq < 0.9 * self.my]
            lines += [f"{Y_ID}:oneChannel = 1 1.0 100 {open_flavours[0]} -{open_flavours[0]} 21"]
            lines += [f"{Y_ID}:addChannel = 1 1.0 100 {q} -{q} 21" for q in open_flavours[1:]]
        else:
            lines += quark_channels(Y_ID, self.my)
        lines += [f"{ZR_ID}:oneChannel = 1 1.0 100 {X_ID} {Y_ID}"]
        return lines

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["extra_settings"] = list(self.extra_settings)
        return out


def make_pythia(config: GeneratorConfig, seed: int):
    """A ready (initialised) ``pythia8mc.Pythia`` for ``config``; errors name the bad setting."""
    import pythia8mc

    from radar.processors.jets import quiet_fastjet as _quiet_native_output  # fd-level, serialised by a lock

    config.validate()
    if not 1 <= int(seed) <= 900_000_000:
        raise ValueError(f"Pythia seed must be in 1..900000000, got {seed}")
    with _quiet_native_output():
        pythia = pythia8mc.Pythia("", False)
        for line in config.pythia_settings(seed):
            if not pythia.readString(line):
                raise ValueError(f"Pythia rejected the setting {line!r} (process {config.process})")
        ok = pythia.init()
    if not ok:
        raise ValueError(
            f"Pythia initialisation failed for process {config.process!r} with settings "
            f"{config.pythia_settings(seed)}"
        )
    return pythia


def visible_final_state(batch: ak.Array) -> ak.Array:
    """From a ``nextBatch`` record array: visible final-state particles ``{id, pt, eta, phi}`` per event
    (status > 0, neutrinos removed, pT > 0). GeV."""
    prt = batch.prt
    aid = abs(prt.id)
    # neutrinos and the stable states of a hidden sector (ids 51-53, 49xxxxx) leave no trace: they make MET
    dark = ((aid >= 51) & (aid <= 53)) | ((aid >= 4_900_000) & (aid < 5_000_000))
    keep = (prt.status > 0) & (aid != 12) & (aid != 14) & (aid != 16) & ~dark
    final = prt[keep]
    px, py, pz = final.p.px, final.p.py, final.p.pz
    pt = np.hypot(px, py)
    final_pt = pt > 0
    pt, pz = pt[final_pt], pz[final_pt]
    return ak.zip(
        {
            "id": final.id[final_pt],
            "pt": pt,
            "eta": np.arcsinh(pz / pt),
            "phi": np.arctan2(py[final_pt], px[final_pt]),
        }
    )


def _rest_frame_momentum(p: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """Three-momenta of four-vectors ``p`` (N, 4: px, py, pz, E) in the rest frames of ``frame`` (N, 4)."""
    beta = frame[:, :3] / frame[:, 3:4]
    b2 = np.maximum((beta * beta).sum(1), 1e-300)
    gamma = 1.0 / np.sqrt(np.maximum(1.0 - b2, 1e-300))
    bp = (beta * p[:, :3]).sum(1)
    return p[:, :3] + ((gamma - 1.0) * bp / b2 - gamma * p[:, 3])[:, None] * beta


def decay_cos_theta(prt: ak.Array) -> dict[str, np.ndarray]:
    """The decay angles of the resonance chain per event, from a ``nextBatch`` event record ``prt``:

    - ``zprime``: cos θ of X (id 6000001) in the X Y rest frame against the beam (z) axis;
    - ``x`` / ``y``: cos θ of the first daughter of the decaying X (Y) copy in its rest frame against the
      X (Y) flight direction.

    NaN where an event has no X and Y (or the particle did not decay). Vectorised over the batch."""
    counts = ak.to_numpy(ak.num(prt.id, axis=1))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    ids = ak.to_numpy(ak.flatten(prt.id))
    p4 = np.stack([ak.to_numpy(ak.flatten(prt.p[c])) for c in ("px", "py", "pz", "e")], axis=1).astype(
        "float64"
    )
    daughter = ak.to_numpy(ak.flatten(prt.daughter1))
    event_of = np.repeat(np.arange(len(counts)), counts)
    out = {name: np.full(len(counts), np.nan) for name in ("zprime", "x", "y")}

    def copies(pid: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(events having the particle, flat index of its first copy, of its last copy)."""
        where = np.flatnonzero(ids == pid)
        events, first = np.unique(event_of[where], return_index=True)
        last = np.unique(event_of[where][::-1], return_index=True)[1]
        return events, where[first], where[::-1][last]

    ev_x, first_x, last_x = copies(X_ID)
    ev_y, first_y, last_y = copies(Y_ID)
    both, in_x, in_y = np.intersect1d(ev_x, ev_y, return_indices=True)
    if len(both):
        x, y = p4[first_x[in_x]], p4[first_y[in_y]]
        x3 = _rest_frame_momentum(x, x + y)
        out["zprime"][both] = x3[:, 2] / np.linalg.norm(x3, axis=1)
    for name, events, last in (("x", ev_x, last_x), ("y", ev_y, last_y)):
        local = daughter[last]
        ok = local > 0
        mother = p4[last[ok]]
        child = p4[starts[events[ok]] + local[ok]]
        q3 = _rest_frame_momentum(child, mother)
        out[name][events[ok]] = (q3 * mother[:, :3]).sum(1) / (
            np.linalg.norm(q3, axis=1) * np.linalg.norm(mother[:, :3], axis=1)
        )
    return out


def longitudinal_weight(
    cos: dict[str, np.ndarray], three_prong_y: bool = False, decays: tuple[str, ...] = ("zprime", "x", "y")
) -> np.ndarray:
    """Per-event acceptance probability (≤ 1) that turns Pythia's decay angles (:func:`decay_cos_theta`)
    into sin²θ ones. Pythia decays the Z_R into X Y as (1 + cos²θ) (as into a fermion pair; measured:
    ⟨cos²θ⟩ = 0.407 on 3000 events, 0.4 expected) and X, Y isotropically (0.340, 0.336; 1/3), so the
    weights are sin²θ/(1 + cos²θ) and sin²θ; a three-body Y → q q̄ g keeps its phase space. ``decays``
    picks a subset (for studies). Events without the particles (NaN) get weight 1."""
    weight = np.ones(len(cos["zprime"]))
    for name in decays:
        if name == "y" and three_prong_y:
            continue
        c2 = np.nan_to_num(cos[name]) ** 2
        weight *= (1.0 - c2) / (1.0 + c2) if name == "zprime" else 1.0 - c2
    return weight


def trigger_mask(particles: ak.Array, config: GeneratorConfig) -> np.ndarray:
    """Boolean mask (events,) of the LHCO trigger: ≥ 1 anti-kt jet with pT > ``trigger_pt`` and
    |η| < ``trigger_eta``, and ≥ 2 jets — :func:`radar.processors.jets.trigger_status`, the selection of the
    feature extraction (clustering only; no substructure is paid for here)."""
    from radar.processors.jets import PASS, JetConfig, trigger_status

    jets = JetConfig(
        jet_radius=config.jet_radius, trigger_pt=config.trigger_pt, trigger_eta=config.trigger_eta
    )
    return trigger_status(particles, jets) == PASS


@dataclasses.dataclass
class GeneratedChunk:
    """Trigger-passing events of one task: ``particles`` (events × {pt, eta, phi}, GeV) and counters."""

    particles: ak.Array
    task: int
    seed: int
    n_generated: int
    n_triggered: int
    n_failed: int
    sigma_mb: float
    sigma_err_mb: float
    seconds: float
    #: events generated but rejected by the decay-angle reshaping (``decay_angles="longitudinal"``)
    n_rejected: int = 0


def generate_events(config: GeneratorConfig, seed: int, n_events: int, task: int = 0) -> GeneratedChunk:
    """Generate events with Pythia seed ``seed`` until ``n_events`` pass the trigger.

    Pythia runs in batches of ``config.batch_size``; the detector response (if on) draws from
    ``numpy.random.default_rng([seed, batch])``. Returns the first ``n_events`` passing events in
    generation order: a fixed ``(config, seed, n_events)`` gives identical arrays.
    """
    start = time.perf_counter()
    pythia = make_pythia(config, seed)
    kept: list[ak.Array] = []
    n_kept = n_generated = n_triggered = n_failed = n_rejected = batch_index = 0
    max_batches = max(1000, 200 * (n_events // config.batch_size + 1))
    while n_kept < n_events:
        if batch_index >= max_batches:
            raise RuntimeError(
                f"task {task} (seed {seed}): only {n_kept} of {n_events} events passed the trigger after "
                f"{n_generated} generated events; the settings hardly ever pass the trigger"
            )
        batch = pythia.nextBatch(config.batch_size)
        n_failed += config.batch_size - len(batch)
        n_generated += len(batch)
        if len(batch) == 0:
            batch_index += 1
            continue
        if config.process == "resonance" and config.decay_angles == "longitudinal":
            weight = longitudinal_weight(decay_cos_theta(batch.prt), config.three_prong_y)
            accept = np.random.default_rng([int(seed), batch_index, 1]).random(len(batch)) < weight
            n_rejected += int((~accept).sum())
            batch = batch[accept]
        visible = visible_final_state(batch)
        if config.detector:
            rng = np.random.default_rng([int(seed), batch_index])
            particles = detector_response(
                visible.id, visible.pt, visible.eta, visible.phi, rng, config.detector_config
            )
        else:
            particles = ak.zip({"pt": visible.pt, "eta": visible.eta, "phi": visible.phi})
        passed = trigger_mask(particles, config)
        n_triggered += int(passed.sum())
        selected = particles[passed][: n_events - n_kept]
        kept.append(ak.to_packed(selected))
        n_kept += len(selected)
        batch_index += 1
    info = pythia.infoPython()
    particles = ak.concatenate(kept) if len(kept) > 1 else kept[0]
    return GeneratedChunk(
        particles=particles,
        task=task,
        seed=int(seed),
        n_generated=n_generated,
        n_triggered=n_triggered,
        n_failed=n_failed,
        sigma_mb=float(info.sigmaGen()),
        sigma_err_mb=float(info.sigmaErr()),
        seconds=time.perf_counter() - start,
        n_rejected=n_rejected,
    )


def task_seeds(seed: int, n_tasks: int) -> list[int]:
    """Independent Pythia seeds (1..900000000) for ``n_tasks`` tasks, derived from ``seed``."""
    children = np.random.SeedSequence(int(seed)).spawn(n_tasks)
    return [int(child.generate_state(1, dtype=np.uint64)[0] % 899_999_999) + 1 for child in children]


def plan_tasks(n_events: int, seed: int, events_per_task: int) -> list[tuple[int, int, int]]:
    """``(task, pythia_seed, n_events)`` for every task; the split depends only on the arguments."""
    if n_events <= 0:
        raise ValueError(f"number of events must be positive, got {n_events}")
    if events_per_task <= 0:
        raise ValueError(f"events_per_task must be positive, got {events_per_task}")
    n_tasks = -(-n_events // events_per_task)
    sizes = [events_per_task] * (n_tasks - 1) + [n_events - events_per_task * (n_tasks - 1)]
    return [(k, s, n) for k, (s, n) in enumerate(zip(task_seeds(seed, n_tasks), sizes))]


def _run_tasks(
    config: GeneratorConfig, tasks: list[tuple[int, int, int]], workers: int | None, scheduler: str | None
) -> Iterator[GeneratedChunk]:
    """Yield the chunks of ``tasks`` in task order, computing them in process or on Dask."""
    if not tasks:
        return
    if workers == 0 and scheduler is None:
        for task, seed, n in tasks:
            yield generate_events(config, seed, n, task)
        return
    from distributed import as_completed

    from radar.processors.cluster import dask_client

    with dask_client(workers, scheduler) as client:
        n_slots = max(1, len(client.scheduler_info()["workers"]))
        max_in_flight = 2 * n_slots  # bounded: memory stays flat however many tasks there are
        pending = list(tasks)
        futures = as_completed()
        done: dict[int, GeneratedChunk] = {}
        next_task = tasks[0][0]

        def submit() -> None:
            task, seed, n = pending.pop(0)
            futures.add(
                client.submit(
                    generate_events,
                    config,
                    seed,
                    n,
                    task,
                    pure=False,
                    key=f"generate-{config.process}-{task}-{seed}",
                )
            )

        while pending and futures.count() < max_in_flight:
            submit()
        for future in futures:
            chunk = future.result()
            future.release()
            done[chunk.task] = chunk
            if pending:
                submit()
            while next_task in done:
                yield done.pop(next_task)
                next_task += 1


def generate_to_file(
    config: GeneratorConfig,
    n_events: int,
    seed: int,
    output: str | os.PathLike,
    *,
    fmt: str = "hdf5",
    workers: int | None = None,
    scheduler: str | None = None,
    events_per_task: int = 1000,
    resume: bool = True,
    progress: bool = True,
    with_label: bool = True,
) -> dict[str, Any]:
    """Generate ``n_events`` trigger-passing events and write them to ``output``.

    ``fmt``: ``"hdf5"`` (LHCO raw layout with label column, resumable) or ``"root"`` (TTree ``events``).
    ``workers``: Dask LocalCluster processes (None: one per core; 0: in this process); ``scheduler``: a
    Dask scheduler address instead. ``with_label=False`` writes black-box-like files (no label
    column/branch). Writes ``<output>.json`` with the settings, seeds and counters and
    returns that summary.
    """
    from radar.processors.io import package_versions, write_json
    from radar.processors.writers import LHCORawWriter, RootTreeWriter

    if fmt not in ("hdf5", "root"):
        raise ValueError(f"unknown output format {fmt!r}; choose hdf5 or root")
    config.validate()
    tasks = plan_tasks(n_events, seed, events_per_task)
    make_pythia(config, tasks[0][1])  # bad settings fail here, before any worker starts
    output = Path(output)
    metadata = {
        "config": config.to_dict(),
        "seed": int(seed),
        "n_events": int(n_events),
        "events_per_task": int(events_per_task),
    }
    if fmt == "hdf5":
        writer: Any = LHCORawWriter(output, with_label=with_label, resume=resume, metadata=metadata)
        done_tasks = int(writer.state.get("tasks_done", 0))
        counters = writer.state.get(
            "counters", {"n_generated": 0, "n_triggered": 0, "n_failed": 0, "seconds": 0.0}
        )
    else:
        writer = RootTreeWriter(output, with_label=with_label)
        done_tasks, counters = 0, {"n_generated": 0, "n_triggered": 0, "n_failed": 0, "seconds": 0.0}
    if done_tasks:
        log.info(
            "%s: resuming at task %d of %d (%d events already written)",
            output,
            done_tasks,
            len(tasks),
            writer.n_events,
        )
    log.info(
        "generating %d %s events (seed %d) in %d tasks of up to %d events -> %s",
        n_events,
        config.process,
        seed,
        len(tasks),
        events_per_task,
        output,
    )
    sigma = (float("nan"), float("nan"))
    wall = time.perf_counter()
    bar = _progress(
        total=n_events, initial=writer.n_events, desc=f"generate {config.process}", enabled=progress
    )
    try:
        for chunk in _run_tasks(config, tasks[done_tasks:], workers, scheduler):
            counters["n_generated"] += chunk.n_generated
            counters["n_failed"] += chunk.n_failed
            counters["n_rejected"] = counters.get("n_rejected", 0) + chunk.n_rejected
            counters["n_triggered"] += chunk.n_triggered
            counters["seconds"] += chunk.seconds
            label = np.full(len(chunk.particles), config.label) if with_label else None
            if fmt == "hdf5":
                writer.append(
                    chunk.particles, label, state={"tasks_done": chunk.task + 1, "counters": counters}
                )
            else:
                writer.append(chunk.particles, label)
            sigma = (chunk.sigma_mb, chunk.sigma_err_mb)
            bar.update(len(chunk.particles))
            log.debug(
                "task %d (seed %d): %d events from %d generated in %.1f s",
                chunk.task,
                chunk.seed,
                len(chunk.particles),
                chunk.n_generated,
                chunk.seconds,
            )
    except BaseException:
        bar.close()
        writer.close(finalize=False)
        raise
    bar.close()
    n_truncated = getattr(writer, "n_truncated", 0)
    n_written = writer.n_events
    writer.close(finalize=True)
    summary = {
        **metadata,
        "output": str(output),
        "format": fmt,
        "n_written": n_written,
        "n_generated": counters["n_generated"],
        "n_failed": counters["n_failed"],
        "n_triggered": counters["n_triggered"],
        "n_rejected_decay_angles": counters.get("n_rejected", 0),
        "trigger_efficiency": counters["n_triggered"]
        / max(counters["n_generated"] - counters.get("n_rejected", 0), 1),
        "n_truncated_700": n_truncated,
        "task_cpu_seconds": counters["seconds"],
        "wall_seconds": time.perf_counter() - wall,
        "sigma_gen_mb_last_task": sigma[0],
        "sigma_err_mb_last_task": sigma[1],
        "pythia_settings": config.pythia_settings(tasks[0][1]),
        "versions": package_versions(),
    }
    write_json(output.with_name(output.name + ".json"), summary)
    log.info(
        "%s: %d events, trigger efficiency %.3f, %.1f task-seconds",
        output,
        n_written,
        summary["trigger_efficiency"],
        counters["seconds"],
    )
    return summary


def _progress(total: int, initial: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="ev", disable=not enabled)


def config_from_mapping(mapping: dict[str, Any]) -> GeneratorConfig:
    """A :class:`GeneratorConfig` from a plain mapping (YAML/JSON), rejecting unknown keys."""
    known = {f.name for f in dataclasses.fields(GeneratorConfig)}
    unknown = sorted(set(mapping) - known)
    if unknown:
        raise ValueError(f"unknown generator settings {unknown}; known: {sorted(known)}")
    values = dict(mapping)
    if "detector_config" in values and isinstance(values["detector_config"], dict):
        values["detector_config"] = DetectorConfig(**values["detector_config"])
    if "extra_settings" in values:
        values["extra_settings"] = tuple(values["extra_settings"])
    config = GeneratorConfig(**values)
    config.validate()
    return config


def describe(config: GeneratorConfig) -> str:
    """One-line JSON description of a config (for logs)."""
    return json.dumps(config.to_dict(), sort_keys=True, default=str)

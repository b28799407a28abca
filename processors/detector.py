"""A simple, columnar detector response for generated events (a rough stand-in for Delphes).

The LHC Olympics events are Delphes 3.4.1 particle-flow objects: charged tracks inside the tracker and
calorimeter towers for everything else, merged into massless (pT, η, φ). Generator-level particles
give heavier, more numerous constituents (≈560 visible particles per event against ≈170 in the LHCO
files), which shifts jet masses and τ21. :func:`detector_response` imitates the main effects:

1. **Tracks**: charged particles (e±, μ±, π±, K±, p, Σ±, Ξ-, Ω-) with |η| < ``tracker_eta`` (2.5) and
   pT > ``track_pt_min`` (1 GeV) are reconstructed with efficiency ``track_eff_low`` (pT < 1 GeV) or
   ``track_eff_high`` (0.95, pT ≥ 1 GeV) — times ``track_eff_forward_factor`` (0.9) for |η| > 1.5 —
   and pT resolution σ(pT)/pT = ``track_res_const`` (1 %) ⊕ ``track_res_slope`` (1.5e-4/GeV) · pT.
2. **Calorimeters**: every other visible particle (photons, neutral hadrons, untracked charged
   particles) with |η| < ``calo_eta`` (5) deposits its energy in a cell of a calorimeter: e/γ in the
   ECAL, hadrons in the HCAL (both for |η| < ``central_calo_eta`` = 3, cells ``ecal_cell`` /
   ``hcal_cell`` = 0.0174 in η and φ), everything at 3 < |η| < 5 in a forward calorimeter (cells
   ``forward_cell`` = 0.175). Cell energies are smeared with σ/E = a/√E ⊕ c (ECAL 5 % ⊕ 1 %, HCAL
   150 % ⊕ 5 %, forward 270 % ⊕ 13 %: the Delphes CMS card's values), Gaussian clipped at zero, and
   dropped below ``ecal_threshold`` (1 GeV), ``hcal_threshold`` (2 GeV), ``forward_threshold``
   (30 GeV). The tower direction is drawn uniformly inside the cell (Delphes' ``SmearTowerCenter``).

How the defaults were chosen: against the 93 signal events of the real R&D file (Delphes 3.4.1):
objects per event 190 (real 133, generator level 480), median lighter / heavier jet mass 109 / 491 GeV
(real 109 / 497, generator level 119 / 499), median τ21 0.37 / 0.22 (real 0.36 / 0.20). The real
files have almost no objects below 1 GeV and few beyond |η| = 3, hence the 1 GeV track threshold
and the high forward threshold; with CMS's coarser 0.087 HCAL cells and randomised tower centres
τ21 of the lighter jet rose to 0.44, so the HCAL here has the ECAL granularity. This is a tuning to
the LHCO files' objects, not a detector simulation.
Everything is whole-chunk numpy; the only randomness comes from the ``rng`` passed in.
"""

from __future__ import annotations

import dataclasses
import logging

import awkward as ak
import numpy as np

log = logging.getLogger(__name__)

#: |PDG id| of charged particles that reach the detector with Pythia's default decay settings
CHARGED_STABLE = np.array([11, 13, 211, 321, 2212, 3112, 3222, 3312, 3334])
#: |PDG id| of particles measured in the ECAL (electrons, photons)
ELECTROMAGNETIC = np.array([11, 22])
#: |PDG id| of particles that leave no signal (neutrinos)
INVISIBLE = np.array([12, 14, 16])


@dataclasses.dataclass(frozen=True)
class DetectorConfig:
    """Parameters of :func:`detector_response` (GeV, η, radians). Frozen and picklable."""

    tracker_eta: float = 2.5
    track_pt_min: float = 1.0
    track_eff_low: float = 0.70
    track_eff_high: float = 0.95
    track_eff_forward_factor: float = 0.9
    track_res_const: float = 0.01
    track_res_slope: float = 1.5e-4
    central_calo_eta: float = 3.0
    calo_eta: float = 5.0
    ecal_cell: float = 0.0174
    hcal_cell: float = 0.0174
    forward_cell: float = 0.175
    ecal_stochastic: float = 0.05
    ecal_const: float = 0.01
    hcal_stochastic: float = 1.5
    hcal_const: float = 0.05
    forward_stochastic: float = 2.7
    forward_const: float = 0.13
    ecal_threshold: float = 1.0
    hcal_threshold: float = 2.0
    forward_threshold: float = 30.0
    smear_tower_center: bool = True

    def __post_init__(self) -> None:
        for name in ("tracker_eta", "calo_eta", "central_calo_eta", "ecal_cell", "hcal_cell", "forward_cell"):
            if not getattr(self, name) > 0:
                raise ValueError(f"detector {name} must be positive, got {getattr(self, name)}")
        for name in ("track_eff_low", "track_eff_high", "track_eff_forward_factor"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"detector {name} must be in [0, 1], got {getattr(self, name)}")


def detector_response(
    pid: ak.Array,
    pt: ak.Array,
    eta: ak.Array,
    phi: ak.Array,
    rng: np.random.Generator,
    config: DetectorConfig = DetectorConfig(),
) -> ak.Array:
    """Turn visible final-state particles into detector objects.

    ``pid, pt, eta, phi``: jagged (events × particles) PDG id and kinematics (GeV). Returns one list per
    event of massless records ``{pt, eta, phi}``: the tracks first, then the towers (each group in a
    fixed order). Deterministic for a given ``rng`` state.
    """
    n_events = len(pt)
    counts = ak.to_numpy(ak.num(pt, axis=1))
    event = np.repeat(np.arange(n_events, dtype=np.int64), counts)
    aid = np.abs(ak.to_numpy(ak.flatten(pid, axis=1)))
    pt_f = ak.to_numpy(ak.flatten(pt, axis=1)).astype("float64")
    eta_f = ak.to_numpy(ak.flatten(eta, axis=1)).astype("float64")
    phi_f = ak.to_numpy(ak.flatten(phi, axis=1)).astype("float64")
    abs_eta = np.abs(eta_f)
    visible = ~np.isin(aid, INVISIBLE)

    # tracks
    charged = np.isin(aid, CHARGED_STABLE) & visible
    in_tracker = charged & (abs_eta < config.tracker_eta) & (pt_f > config.track_pt_min)
    efficiency = np.where(pt_f < 1.0, config.track_eff_low, config.track_eff_high)
    efficiency = np.where(abs_eta > 1.5, efficiency * config.track_eff_forward_factor, efficiency)
    tracked = in_tracker & (rng.random(len(pt_f)) < efficiency)
    resolution = np.hypot(config.track_res_const, config.track_res_slope * pt_f)
    track_pt = pt_f * (1.0 + resolution * rng.standard_normal(len(pt_f)))
    tracked &= track_pt > config.track_pt_min

    # calorimeters: everything visible and not tracked; part 0 ECAL, 1 HCAL, 2 forward (|η| > central)
    in_calo = visible & ~tracked & (abs_eta < config.calo_eta)
    part = np.where(np.isin(aid, ELECTROMAGNETIC), 0, 1)
    part = np.where(abs_eta >= config.central_calo_eta, 2, part)[in_calo]
    sizes = np.array([config.ecal_cell, config.hcal_cell, config.forward_cell])
    n_phi_part = np.round(2 * np.pi / sizes).astype(np.int64)
    n_eta_max = int(np.ceil(2 * config.calo_eta / sizes.min())) + 1
    n_phi_max = int(n_phi_part.max())
    size = sizes[part]
    cell_phi_size = 2 * np.pi / n_phi_part[part]
    c_eta, c_phi = eta_f[in_calo], phi_f[in_calo]
    i_eta = np.floor((c_eta + config.calo_eta) / size).astype(np.int64)
    i_phi = np.clip(
        np.floor(np.mod(c_phi + np.pi, 2 * np.pi) / cell_phi_size).astype(np.int64), 0, n_phi_part[part] - 1
    )
    key = ((event[in_calo] * 3 + part) * n_eta_max + i_eta) * n_phi_max + i_phi
    cells, inverse = np.unique(key, return_inverse=True)
    energy = np.bincount(inverse, weights=pt_f[in_calo] * np.cosh(c_eta), minlength=len(cells))
    cell_ieta = (cells // n_phi_max) % n_eta_max
    cell_iphi = cells % n_phi_max
    cell_part = (cells // (n_phi_max * n_eta_max)) % 3
    cell_event = cells // (3 * n_phi_max * n_eta_max)
    stochastic = np.array([config.ecal_stochastic, config.hcal_stochastic, config.forward_stochastic])[
        cell_part
    ]
    constant = np.array([config.ecal_const, config.hcal_const, config.forward_const])[cell_part]
    threshold = np.array([config.ecal_threshold, config.hcal_threshold, config.forward_threshold])[cell_part]
    sigma = energy * np.hypot(stochastic / np.sqrt(np.maximum(energy, 1e-9)), constant)
    energy = np.maximum(energy + sigma * rng.standard_normal(len(cells)), 0.0)
    n_cells = len(cells)
    offset = rng.random((n_cells, 2)) if config.smear_tower_center else np.full((n_cells, 2), 0.5)
    low_edge = -config.calo_eta + cell_ieta * sizes[cell_part]
    high_edge = np.minimum(low_edge + sizes[cell_part], config.calo_eta)  # the last cell may be partial
    tower_eta = low_edge + offset[:, 0] * (high_edge - low_edge)
    tower_phi = -np.pi + (cell_iphi + offset[:, 1]) * (2 * np.pi / n_phi_part[cell_part])
    tower_pt = energy / np.cosh(tower_eta)
    keep_tower = (energy > threshold) & (energy > 0)

    # merge: per event, tracks then towers (stable sort by event keeps each group's order)
    obj_event = np.concatenate([event[tracked], cell_event[keep_tower]])
    obj_pt = np.concatenate([track_pt[tracked], tower_pt[keep_tower]])
    obj_eta = np.concatenate([eta_f[tracked], tower_eta[keep_tower]])
    obj_phi = np.concatenate([phi_f[tracked], tower_phi[keep_tower]])
    order = np.argsort(obj_event, kind="stable")
    n_per_event = np.bincount(obj_event, minlength=n_events)
    return ak.unflatten(
        ak.zip({"pt": obj_pt[order], "eta": obj_eta[order], "phi": obj_phi[order]}), n_per_event
    )

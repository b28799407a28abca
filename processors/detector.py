"""A simple, columnar detector response for generated events (a rough stand-in for Delphes).

The LHC Olympics events are Delphes 3.4.1 particle-flow objects: charged tracks inside the tracker and
calorimeter towers for everything else, merged into massless (pT, η, φ). Generator-level particles
give heavier, more numerous constituents (≈560 visible particles per event against ≈170 in the LHCO
files), which shifts jet masses and τ21. :func:`detector_response` imitates the main effects:

1. **Tracks**: charged particles (e±, μ±, π±, K±, p, Σ±, Ξ-, Ω-) with |η| < ``tracker_eta`` (2.5) and
   pT > ``track_pt_min`` (1 GeV) are reconstructed with efficiency ``track_eff_low`` (pT < 1 GeV) or
   ``track_eff_high`` (0.95, pT ≥ 1 GeV) — times ``track_eff_forward_factor`` (0.9) for |η| > 1.5 —
   and pT resolution σ(pT)/pT = ``track_res_const`` (1 %) ⊕ ``track_res_slope`` (1.5e-4/GeV) · pT.
2. **Calorimeters**: e/γ deposit in the ECAL, hadrons in the HCAL (both for |η| < ``central_calo_eta``
   = 3; cells ``ecal_cell`` = 0.0174 and ``hcal_cell`` = 0.087 in η and φ, the Delphes CMS card's
   granularity), everything at 3 < |η| < 5 in a forward calorimeter (cells ``forward_cell`` = 0.175).
   Resolution σ(E) = √(c² E² + a² E) (ECAL 5 % ⊕ 1 %, HCAL 150 % ⊕ 5 %, forward 270 % ⊕ 13 %: the CMS
   card's values). The tower direction is drawn uniformly inside the cell (Delphes' ``SmearTowerCenter``).
3. **Energy flow** (``eflow``, the default; Delphes' ``SimpleCalorimeter``): *every* visible particle but
   muons deposits in its cell, tracked or not; the cell's sum is smeared (log-normal, ``lognormal``) and
   kept above ``*_threshold`` (ECAL 1, HCAL 2, forward 30 GeV) and ``*_significance`` σ (ECAL 2, HCAL and
   forward 1: the CMS card's); the neutral excess over the tracks' energy becomes a neutral tower when it
   exceeds the threshold and ``significance`` × √(σ²_tracks + σ²); otherwise the cell's tracks are
   rescaled to the combined track + calorimeter estimate. So the calorimeter's fluctuations of charged
   hadrons reach the jets, as in the R&D's Delphes. ``eflow=False`` is radar's model before (only untracked
   particles in the calorimeter, Gaussian smearing clipped at zero, no significance cut; with it radar
   used ``hcal_cell=0.0174``).

How the defaults were chosen. First against the 93 signal events of the real R&D file: objects per event
(real 133, generator level 480), the 1 GeV track threshold and the high forward threshold (the real files
have almost no objects below 1 GeV and few beyond |η| = 3). Then against the first 100k real R&D events
over the whole m_JJ range (``benchmarks/detector_tuning.py``: the same Pythia events through every
variant, KS against the real QCD and signal; numbers in docs/processing.md): the e-flow with the CMS card's
0.087 HCAL cells brings QCD τ21 / τ32 of the lighter jet from KS 0.095 / 0.098 to 0.039 / 0.026 and
the signal's heavier-jet mass from 0.21 to 0.13 (0.06 with the resonance's decay angles,
:mod:`radar.processors.generate`); without the e-flow the 0.087 cells made τ21 worse, which is why radar
had 0.0174 HCAL cells before. This is a tuning to the LHCO files' objects, not a detector simulation.
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
    hcal_cell: float = 0.087
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
    eflow: bool = True
    ecal_significance: float = 2.0
    hcal_significance: float = 1.0
    forward_significance: float = 1.0
    lognormal: bool = True

    def __post_init__(self) -> None:
        for name in ("tracker_eta", "calo_eta", "central_calo_eta", "ecal_cell", "hcal_cell", "forward_cell"):
            if not getattr(self, name) > 0:
                raise ValueError(f"detector {name} must be positive, got {getattr(self, name)}")
        for name in ("track_eff_low", "track_eff_high", "track_eff_forward_factor"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"detector {name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("ecal_significance", "hcal_significance", "forward_significance"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"detector {name} must be >= 0, got {getattr(self, name)}")


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

    geometry = _CaloGeometry(config)
    flat = _Flat(event, aid, visible, tracked, pt_f, eta_f, phi_f)
    if config.eflow:
        towers, track_pt = _eflow_towers(geometry, flat, track_pt, resolution, rng)
    else:
        towers = _plain_towers(geometry, flat, rng)
    cell_event, tower_pt, tower_eta, tower_phi = towers

    # merge: per event, tracks then towers (stable sort by event keeps each group's order)
    obj_event = np.concatenate([event[tracked], cell_event])
    obj_pt = np.concatenate([track_pt[tracked], tower_pt])
    obj_eta = np.concatenate([eta_f[tracked], tower_eta])
    obj_phi = np.concatenate([phi_f[tracked], tower_phi])
    order = np.argsort(obj_event, kind="stable")
    n_per_event = np.bincount(obj_event, minlength=n_events)
    return ak.unflatten(
        ak.zip({"pt": obj_pt[order], "eta": obj_eta[order], "phi": obj_phi[order]}), n_per_event
    )


class _CaloGeometry:
    """The cells of the three calorimeter parts (0 ECAL, 1 HCAL, 2 forward) and per-part constants."""

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config
        self.sizes = np.array([config.ecal_cell, config.hcal_cell, config.forward_cell])
        self.n_phi = np.round(2 * np.pi / self.sizes).astype(np.int64)
        self.n_eta_max = int(np.ceil(2 * config.calo_eta / self.sizes.min())) + 1
        self.n_phi_max = int(self.n_phi.max())
        self.stochastic = np.array(
            [config.ecal_stochastic, config.hcal_stochastic, config.forward_stochastic]
        )
        self.constant = np.array([config.ecal_const, config.hcal_const, config.forward_const])
        self.threshold = np.array([config.ecal_threshold, config.hcal_threshold, config.forward_threshold])
        self.significance = np.array(
            [config.ecal_significance, config.hcal_significance, config.forward_significance]
        )

    def part(self, aid: np.ndarray, abs_eta: np.ndarray) -> np.ndarray:
        part = np.where(np.isin(aid, ELECTROMAGNETIC), 0, 1)
        return np.where(abs_eta >= self.config.central_calo_eta, 2, part)

    def cells(
        self, event: np.ndarray, part: np.ndarray, eta: np.ndarray, phi: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(cell keys, the cell index of every deposit): one key per (event, part, η cell, φ cell)."""
        size = self.sizes[part]
        cell_phi_size = 2 * np.pi / self.n_phi[part]
        i_eta = np.floor((eta + self.config.calo_eta) / size).astype(np.int64)
        i_phi = np.clip(
            np.floor(np.mod(phi + np.pi, 2 * np.pi) / cell_phi_size).astype(np.int64), 0, self.n_phi[part] - 1
        )
        key = ((event * 3 + part) * self.n_eta_max + i_eta) * self.n_phi_max + i_phi
        return np.unique(key, return_inverse=True)

    def decode(self, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(event, part, η index, φ index) of cell keys."""
        n_eta, n_phi = self.n_eta_max, self.n_phi_max
        return (
            cells // (3 * n_phi * n_eta),
            (cells // (n_phi * n_eta)) % 3,
            (cells // n_phi) % n_eta,
            cells % n_phi,
        )

    def sigma(self, energy: np.ndarray, part: np.ndarray) -> np.ndarray:
        """Energy resolution σ(E) = √(c² E² + a² E) of the cells' parts."""
        e = np.maximum(energy, 0.0)
        return np.sqrt((self.constant[part] * e) ** 2 + self.stochastic[part] ** 2 * e)

    def positions(
        self, ieta: np.ndarray, iphi: np.ndarray, part: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """(η, φ) of towers: uniform inside the cell (Delphes' ``SmearTowerCenter``) or its centre."""
        n = len(ieta)
        offset = rng.random((n, 2)) if self.config.smear_tower_center else np.full((n, 2), 0.5)
        low_edge = -self.config.calo_eta + ieta * self.sizes[part]
        # the last cell may be partial
        high_edge = np.minimum(low_edge + self.sizes[part], self.config.calo_eta)
        tower_eta = low_edge + offset[:, 0] * (high_edge - low_edge)
        tower_phi = -np.pi + (iphi + offset[:, 1]) * (2 * np.pi / self.n_phi[part])
        return tower_eta, tower_phi


@dataclasses.dataclass
class _Flat:
    """A chunk's particles as flat arrays: event index, |PDG id|, visible and tracked masks, pT, η, φ."""

    event: np.ndarray
    aid: np.ndarray
    visible: np.ndarray
    tracked: np.ndarray
    pt: np.ndarray
    eta: np.ndarray
    phi: np.ndarray


def _plain_towers(
    geometry: _CaloGeometry, flat: _Flat, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``eflow=False`` (radar before the e-flow model): every visible particle that is not a track deposits
    in a cell; cell energies Gaussian-smeared (clipped at zero) and kept above the part's threshold."""
    in_calo = flat.visible & ~flat.tracked & (np.abs(flat.eta) < geometry.config.calo_eta)
    part = geometry.part(flat.aid[in_calo], np.abs(flat.eta[in_calo]))
    c_eta = flat.eta[in_calo]
    cells, inverse = geometry.cells(flat.event[in_calo], part, c_eta, flat.phi[in_calo])
    energy = np.bincount(inverse, weights=flat.pt[in_calo] * np.cosh(c_eta), minlength=len(cells))
    cell_event, cell_part, cell_ieta, cell_iphi = geometry.decode(cells)
    sigma = energy * np.hypot(
        geometry.stochastic[cell_part] / np.sqrt(np.maximum(energy, 1e-9)), geometry.constant[cell_part]
    )
    energy = np.maximum(energy + sigma * rng.standard_normal(len(cells)), 0.0)
    tower_eta, tower_phi = geometry.positions(cell_ieta, cell_iphi, cell_part, rng)
    keep = (energy > geometry.threshold[cell_part]) & (energy > 0)
    return cell_event[keep], (energy / np.cosh(tower_eta))[keep], tower_eta[keep], tower_phi[keep]


def _eflow_towers(
    geometry: _CaloGeometry,
    flat: _Flat,
    track_pt: np.ndarray,
    track_resolution: np.ndarray,
    rng: np.random.Generator,
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """The e-flow model (the default): ((tower event, pT, η, φ), track pT after the e-flow).

    Every visible particle but muons deposits its energy in a cell, tracked or not (a track's energy is
    in the calorimeter too). Per cell: E = the smeared sum (log-normal with σ(E), as Delphes 3.4), zeroed
    below the part's ``threshold`` or below ``significance`` σ; the tracks' measured energy E_trk and
    variance σ²_trk; the neutral excess E - E_trk becomes a neutral tower when it exceeds the threshold and
    ``significance`` × √(σ²_trk + σ²); otherwise the cell's tracks are rescaled to the combined estimate
    (E_trk/σ²_trk + E/σ²)/(1/σ²_trk + 1/σ²). So the calorimeter's fluctuations of charged hadrons reach
    the jets (fake neutral towers, rescaled tracks), as in Delphes' ``SimpleCalorimeter`` e-flow.
    """
    config = geometry.config
    cosh = np.cosh(flat.eta)
    in_calo = flat.visible & (flat.aid != 13) & (np.abs(flat.eta) < config.calo_eta)
    part = geometry.part(flat.aid[in_calo], np.abs(flat.eta[in_calo]))
    cells, inverse = geometry.cells(flat.event[in_calo], part, flat.eta[in_calo], flat.phi[in_calo])
    n_cells = len(cells)
    energy = np.bincount(inverse, weights=flat.pt[in_calo] * cosh[in_calo], minlength=n_cells)
    trk = flat.tracked[in_calo]
    track_e = (track_pt * cosh)[in_calo][trk]
    e_trk = np.bincount(inverse[trk], weights=track_e, minlength=n_cells).astype("float64")
    var_trk = np.bincount(
        inverse[trk], weights=(track_resolution[in_calo][trk] * track_e) ** 2, minlength=n_cells
    ).astype("float64")
    cell_event, cell_part, cell_ieta, cell_iphi = geometry.decode(cells)
    sigma = geometry.sigma(energy, cell_part)
    noise = rng.standard_normal(n_cells)
    if config.lognormal:
        b = np.sqrt(np.log1p((sigma / energy) ** 2))
        measured = np.exp(np.log(energy) - 0.5 * b * b + b * noise)
    else:
        measured = np.maximum(energy + sigma * noise, 0.0)
    sigma_m = geometry.sigma(measured, cell_part)
    threshold, significance = geometry.threshold[cell_part], geometry.significance[cell_part]
    measured = np.where((measured < threshold) | (measured < significance * sigma_m), 0.0, measured)
    neutral = np.maximum(measured - e_trk, 0.0)
    significant = (neutral > threshold) & (neutral > significance * np.sqrt(var_trk + sigma_m**2))
    w_trk = np.divide(1.0, var_trk, out=np.zeros(n_cells), where=var_trk > 0)
    w_calo = np.divide(1.0, sigma_m**2, out=np.zeros(n_cells), where=sigma_m > 0)
    best = np.divide(
        w_trk * e_trk + w_calo * measured, w_trk + w_calo, out=e_trk.copy(), where=w_trk + w_calo > 0
    )
    rescale = np.ones(n_cells)
    fix = ~significant & (e_trk > 0)
    rescale[fix] = best[fix] / e_trk[fix]
    scale = np.ones(len(flat.pt))
    scale[np.flatnonzero(in_calo)[trk]] = rescale[inverse[trk]]
    tower_eta, tower_phi = geometry.positions(cell_ieta, cell_iphi, cell_part, rng)
    towers = (
        cell_event[significant],
        (neutral / np.cosh(tower_eta))[significant],
        tower_eta[significant],
        tower_phi[significant],
    )
    return towers, track_pt * scale

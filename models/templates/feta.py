"""FETA (Golling, Klein, Mastandrea, Nachman; arXiv:2212.11285): simulation transported into data.

1. A base flow p_sim(x | m) (:class:`radar.models.flows.ConditionalFlow`) learns the simulation in SB ∪ SR.
2. A transport flow ``F(z; m)`` (masked affine autoregressive, starting as the identity:
   :func:`radar.models.templates.curtains.identity_maf`) is trained on sideband *data* by maximum likelihood
   with the frozen base flow as its base density,

       log p_data(x | m) = log p_sim(F(z; m) | m) + log |det dF/dz|,      z = preprocessed x,

   so ``F`` maps data to simulation and ``F⁻¹`` maps simulation to data.
3. Template: simulation in the SR pushed through ``F⁻¹`` at its mass. ``source="flow"`` (default, as
   the FETA paper's oversampling) draws the simulation from the base flow at the requested SR masses,
   so any number of events can be made; ``source="simulation"`` pushes the actual SR simulation events
   (mass-matched to the requested masses as in SALAD, reused when n exceeds their number).

Both flows share one preprocessing fitted on simulation ∪ sideband data, so they live on one support.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from radar.models.device import resolve_device
from radar.models.flows import ConditionalFlow
from radar.models.persistence import load_state, save_state
from radar.models.preprocessing import Preprocessor
from radar.models.templates import refuse_weights, register, table_arrays
from radar.models.templates.curtains import identity_maf, infer_signal_region
from radar.models.templates.salad import mass_matched_rows
from radar.models.training import loop_settings, train_model
from radar.processors.features import LHCO_FEATURES

log = logging.getLogger(__name__)

SOURCES = ("flow", "simulation")


class _BaseDensity(torch.nn.Module):
    """Frozen ensemble density of the base flow in the preprocessed space: log p(z | ctx) (N,)."""

    def __init__(self, members: list[torch.nn.Module]) -> None:
        super().__init__()
        self.members = torch.nn.ModuleList(members)
        for p in self.members.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> _BaseDensity:  # the base stays in eval mode (batch norm)
        super().train(False)
        return self

    def forward(self, z: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        per_member = torch.stack([member.log_prob(z, context=ctx) for member in self.members])
        return torch.logsumexp(per_member, dim=0) - math.log(len(self.members))


class _Transport(torch.nn.Module):
    def __init__(self, transform: torch.nn.Module, base: _BaseDensity) -> None:
        super().__init__()
        self.transform = transform
        self.base = base

    def log_prob(self, z: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        u, logdet = self.transform(z, context=ctx)
        return self.base(u, ctx) + logdet


def train_transport(
    base_members: list[torch.nn.Module],
    z: torch.Tensor,
    ctx: torch.Tensor,
    *,
    settings: dict[str, Any],
    seed: int,
    what: str,
):
    """Train a transport flow (:func:`identity_maf`, ``settings["n_blocks"]`` × ``settings["hidden"]``)
    on the preprocessed events ``z`` (N, D) at conditions ``ctx`` (N, C) by maximum likelihood with the frozen
    ensemble ``base_members`` as its base density: log p(z | c) = log p_base(F(z; c) | c) + log |det dF/dz|.
    A random ``settings["val_fraction"]`` (default 0.2, seeded) is the validation set. Returns the
    :class:`~radar.models.training.TrainResult`; its ``members[0]`` has ``.transform`` (F; ``inverse`` maps
    base-like events to data-like ones). Used by FETA (condition m_JJ) and the non-resonant morph (context)."""
    device = z.device
    base_density = _BaseDensity(base_members)
    perm = np.random.default_rng(seed).permutation(len(z))
    n_val = max(2, int(round(settings.get("val_fraction", 0.2) * len(z))))
    val_idx, train_idx = torch.as_tensor(perm[:n_val]), torch.as_tensor(perm[n_val:])
    n_features, n_context = z.shape[1], ctx.shape[1]

    def build():
        transform = identity_maf(
            n_features, n_blocks=settings["n_blocks"], hidden=settings["hidden"], context_features=n_context
        )
        return _Transport(transform, base_density).to(device)

    def batch_loss(model, idx):
        rows = train_idx[idx].to(device)
        return -model.log_prob(z[rows], ctx[rows]).mean()

    def val_loss(model):
        rows = val_idx.to(device)
        return float(
            -torch.cat(
                [
                    model.log_prob(z[rows[s : s + 65536]], ctx[rows[s : s + 65536]])
                    for s in range(0, len(rows), 65536)
                ]
            ).mean()
        )

    return train_model(
        build, batch_loss, val_loss, len(train_idx), seed=seed, what=what, **loop_settings(settings)
    )


@register("feta")
class FetaTemplate:
    """FETA background template.

    Parameters
    ----------
    features, seed, device:
        As every template (the base flow uses ``seed``, the transport ``seed + 1``).
    base_kwargs:
        :class:`radar.models.flows.ConditionalFlow` options of the base flow (default: CATHODE-size MAF).
    n_blocks, hidden, epochs, batch_size, lr, patience, val_fraction, max_restarts, progress:
        Transport flow size and training (AdamW, early stopping, restarts on NaN).
    source:
        "flow" (sample the base flow at the requested masses) or "simulation" (push SR simulation).
    signal_region:
        (lo, hi) GeV, needed for ``source="simulation"``; default: the gap between the sidebands.
    """

    TINY_KWARGS: dict[str, Any] = {
        "base_kwargs": {"n_blocks": 2, "hidden": 16, "epochs": 1, "batch_size": 128},
        "n_blocks": 2,
        "hidden": 16,
        "epochs": 1,
        "batch_size": 128,
    }

    def __init__(
        self,
        features: Sequence[str] = LHCO_FEATURES,
        *,
        seed: int = 0,
        device: str = "auto",
        base_kwargs: dict[str, Any] | None = None,
        n_blocks: int = 8,
        hidden: int = 64,
        epochs: int = 100,
        batch_size: int = 256,
        lr: float = 1e-4,
        patience: int = 10,
        val_fraction: float = 0.2,
        source: str = "flow",
        signal_region: tuple[float, float] | None = None,
        max_restarts: int = 3,
        progress: bool = False,
    ) -> None:
        if source not in SOURCES:
            raise ValueError(f"FETA source must be one of {SOURCES}, got {source!r}")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
        self.features = list(features)
        self.seed = int(seed)
        self.device = device
        self.base_kwargs = dict(base_kwargs or {})
        self.config: dict[str, Any] = dict(
            n_blocks=int(n_blocks),
            hidden=int(hidden),
            epochs=int(epochs),
            batch_size=int(batch_size),
            lr=float(lr),
            patience=int(patience),
            val_fraction=float(val_fraction),
            source=source,
            signal_region=None if signal_region is None else [float(v) for v in signal_region],
            max_restarts=int(max_restarts),
            progress=bool(progress),
        )
        self.base: ConditionalFlow | None = None
        self.transport: _Transport | None = None
        self.history: dict[str, Any] = {}
        self.n_trainings = 0
        self._n_failed_transport = 0
        self._x_sr: np.ndarray | None = None
        self._m_sr: np.ndarray | None = None
        self._n_sample_calls = 0

    @property
    def n_failed(self) -> int:
        """Trainings (base flow and transport flow) that hit a non-finite loss and were restarted."""
        return self._n_failed_transport + (0 if self.base is None else self.base.n_failed)

    def fit(self, sideband: pd.DataFrame, simulation: pd.DataFrame | None = None) -> FetaTemplate:
        """Train the base flow on simulation (in the sideband m_JJ range) and the transport on SB data."""
        refuse_weights(sideband, "feta", "the sideband data")
        refuse_weights(simulation, "feta", "the simulation")
        if simulation is None:
            raise ValueError(
                "FETA needs a simulation feature table covering the sidebands and the SR "
                "(fit(sideband, simulation=...); `input.simulation` in the search config)"
            )
        c = self.config
        x_sb, m_sb = table_arrays(sideband, self.features, "FETA sideband")
        x_sim, m_sim = table_arrays(simulation, self.features, "FETA simulation")
        in_range = (m_sim >= m_sb.min()) & (m_sim <= m_sb.max())
        x_sim, m_sim = x_sim[in_range], m_sim[in_range]
        if len(x_sim) < 10:
            raise ValueError(
                f"FETA simulation: {len(x_sim)} events in the sideband m_JJ range "
                f"[{m_sb.min():.0f}, {m_sb.max():.0f}] GeV; need >= 10"
            )
        shared = Preprocessor(names=self.features).fit(np.concatenate([x_sim, x_sb]))
        self.base = ConditionalFlow(
            len(self.features), seed=self.seed, **{"device": self.device, **self.base_kwargs}
        )
        self.base.fit(x_sim, m_sim, preprocessor=shared)
        device = resolve_device(self.device)
        z = torch.as_tensor(shared.transform(x_sb)[0], dtype=torch.float32, device=device)
        ctx = torch.as_tensor(self.base.mass_scaler.transform(m_sb), dtype=torch.float32, device=device)
        result = train_transport(
            self.base.members, z, ctx, settings=c, seed=self.seed + 1, what="FETA transport flow"
        )
        self.transport = result.members[0]
        self.history, self._n_failed_transport, self.n_trainings = (
            result.history,
            result.n_failed,
            result.n_trainings,
        )
        lo, hi = c["signal_region"] or infer_signal_region(m_sb)
        in_sr = (m_sim >= lo) & (m_sim <= hi)
        order = np.argsort(m_sim[in_sr], kind="stable")
        self._x_sr, self._m_sr = x_sim[in_sr][order], m_sim[in_sr][order]
        if c["source"] == "simulation" and not len(self._m_sr):
            raise ValueError(
                f"FETA simulation: no events in the SR [{lo:.0f}, {hi:.0f}] GeV for source='simulation'"
            )
        return self

    def push(self, x: np.ndarray, m: np.ndarray) -> np.ndarray:
        """Transport simulated events ``x`` (N, D) at masses ``m`` (N,) GeV into data-like events (N, D)."""
        if self.transport is None:
            raise RuntimeError("FetaTemplate is not fitted: call fit(sideband, simulation) first")
        pre = self.base.preprocessor
        z = pre.transform(np.asarray(x, dtype=np.float64))[0]
        device = next(self.transport.parameters()).device
        out = np.empty_like(z)
        with torch.no_grad():
            for s in range(0, len(z), 65536):
                zt = torch.as_tensor(z[s : s + 65536], dtype=torch.float32, device=device)
                ct = torch.as_tensor(
                    self.base.mass_scaler.transform(m[s : s + 65536]), dtype=torch.float32, device=device
                )
                out[s : s + len(zt)] = (
                    self.transport.transform.inverse(zt, context=ct)[0].double().cpu().numpy()
                )
        return pre.inverse(out)

    def sample(self, n: int, mjj: np.ndarray, *, seed: int | None = None) -> tuple[pd.DataFrame, np.ndarray]:
        """``n`` transported simulation events at the masses ``mjj`` (n,) GeV → (DataFrame
        ``features + ["mjj"]``, ones (n,))."""
        if self.transport is None:
            raise RuntimeError("FetaTemplate is not fitted: call fit(sideband, simulation) first")
        mjj = np.asarray(mjj, dtype=np.float64).reshape(-1)
        if len(mjj) != n:
            raise ValueError(f"FetaTemplate.sample: n = {n} but {len(mjj)} m_JJ values given")
        if seed is None:
            seed = self.seed * 7_777_777 + 9 + self._n_sample_calls
            self._n_sample_calls += 1
        if self.config["source"] == "flow":
            x_sim, m_at = self.base.sample(mjj, seed=seed), mjj
        else:
            rows = mass_matched_rows(self._m_sr, mjj, 5, np.random.default_rng(seed))
            x_sim, m_at = self._x_sr[rows], self._m_sr[rows]
        x = self.push(x_sim, m_at)
        bad = ~np.isfinite(x).all(axis=1)
        if bad.any():
            raise RuntimeError(
                f"FetaTemplate.sample: {int(bad.sum())} of {n} transported events are not finite; "
                "the transport flow is badly trained"
            )
        events = pd.DataFrame(x, columns=self.features)
        events["mjj"] = mjj
        return events, np.ones(n)

    # -- persistence -------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write both flows, the configuration and the SR simulation atomically."""
        if self.transport is None:
            raise RuntimeError("FetaTemplate is not fitted: nothing to save")
        state = {
            "method": "feta",
            "features": self.features,
            "seed": self.seed,
            "config": self.config,
            "base_kwargs": self.base_kwargs,
            "base": self.base.state_dict(),
            "transform": {k: v.detach().cpu() for k, v in self.transport.transform.state_dict().items()},
            "x_sr": torch.tensor(np.array(self._x_sr)),
            "m_sr": torch.tensor(np.array(self._m_sr)),
            "n_failed_transport": self._n_failed_transport,
            "n_trainings": self.n_trainings,
        }
        return save_state(state, path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto") -> FetaTemplate:
        state = load_state(path, "feta", "FETA template")
        out = cls(
            state["features"],
            seed=state["seed"],
            device=device,
            base_kwargs=state["base_kwargs"],
            **state["config"],
        )
        c = out.config
        out.base = ConditionalFlow.from_state_dict(state["base"], device=device)
        transform = identity_maf(
            len(out.features), n_blocks=c["n_blocks"], hidden=c["hidden"], context_features=1
        )
        transform.load_state_dict(state["transform"])
        out.transport = _Transport(transform, _BaseDensity(out.base.members)).to(resolve_device(device))
        out.transport.eval()
        out._x_sr, out._m_sr = state["x_sr"].numpy(), state["m_sr"].numpy()
        out._n_failed_transport, out.n_trainings = int(state["n_failed_transport"]), int(state["n_trainings"])
        return out

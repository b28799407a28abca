"""R-ANODE (Das, Kasieczka, Shih; arXiv:2312.11629): fit the signal density directly in the SR.

In the signal region the data density is modelled as the mixture

    p_data(x | m) = w · p_S(x | m) + (1 - w) · p_B(x | m),

with p_B the background flow learnt in the sidebands and interpolated into the SR (as ANODE/CATHODE:
a :class:`radar.models.flows.ConditionalFlow`, held fixed), and p_S a flow (RQS, as the paper) trained on SR
data by maximising the mixture likelihood. The signal fraction ``w`` is either fixed (``w=0.01``; a
scan over w is several fits) or learnt (``w=None``: a parameter ``w = sigmoid(a)`` trained with the
flow, starting at ``w_init``). The anomaly score is ``log p_S(x | m) - log p_B(x | m)``.

This is the conditional variant of the paper (its P_S(x | m) model): the mass densities of signal and
background are taken as equal inside the narrow SR, so they cancel from the mixture.

Failed trainings of p_S — a non-finite loss, or a validation loss rising ``divergence`` nats above its
first value — are caught, logged and retried with another seed; :attr:`RAnodeDensity.n_failed` and
:attr:`RAnodeDensity.n_trainings` count them (background-flow restarts included).
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

from radar.models.densities import register
from radar.models.device import resolve_device
from radar.models.flows import ConditionalFlow, build_flow
from radar.models.persistence import load_state, save_state
from radar.models.preprocessing import Preprocessor
from radar.models.templates import stacked_weights, table_arrays, table_weights
from radar.models.training import loop_settings, train_model
from radar.processors.features import LHCO_FEATURES

log = logging.getLogger(__name__)


class _SignalModel(torch.nn.Module):
    """The signal flow and the (possibly trainable) logit of the signal fraction."""

    def __init__(self, flow: torch.nn.Module, logit_w: float, learn_w: bool, w_lr: float = 3e-2) -> None:
        super().__init__()
        self.flow = flow
        self.logit_w = torch.nn.Parameter(torch.tensor(float(logit_w)), requires_grad=learn_w)
        self.w_lr = float(w_lr)

    def param_groups(self) -> list[dict[str, Any]]:
        """The flow at the common learning rate; the signal fraction (when learnt) at ``w_lr``, so that
        it can move by O(1) in logit within a few hundred steps."""
        groups: list[dict[str, Any]] = [{"params": list(self.flow.parameters())}]
        if self.logit_w.requires_grad:
            groups.append({"params": [self.logit_w], "lr": self.w_lr, "weight_decay": 0.0})
        return groups

    def log_w(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.nn.functional.logsigmoid(self.logit_w), torch.nn.functional.logsigmoid(-self.logit_w)


@register("ranode")
class RAnodeDensity:
    """R-ANODE density ratio.

    Parameters
    ----------
    features, seed, device:
        As every density method; p_S uses ``seed + 1`` (+ 7919 k on restarts).
    w:
        Fixed signal fraction in (0, 1), or None to learn it (starting at ``w_init``, AdamW learning rate
        ``w_lr`` for its logit).
    bkg_kwargs:
        :class:`~radar.models.flows.ConditionalFlow` options of the background flow (default CATHODE's MAF).
    kind, n_blocks, hidden, n_bins, epochs, batch_size, lr, weight_decay, patience, n_best_epochs,
    val_fraction, max_restarts, divergence, grad_clip, progress:
        Signal flow and its training (defaults after the paper: RQS, 6 blocks × 64, AdamW 3e-4).
    """

    TINY_KWARGS: dict[str, Any] = {
        "bkg_kwargs": {"n_blocks": 2, "hidden": 16, "epochs": 1, "batch_size": 128},
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
        w: float | None = None,
        w_init: float = 0.01,
        w_lr: float = 3e-2,
        bkg_kwargs: dict[str, Any] | None = None,
        kind: str = "rqs",
        n_blocks: int = 6,
        hidden: int = 64,
        n_bins: int = 8,
        epochs: int = 100,
        batch_size: int = 256,
        lr: float = 3e-4,
        weight_decay: float = 0.0,
        patience: int = 10,
        n_best_epochs: int = 5,
        val_fraction: float = 0.2,
        max_restarts: int = 3,
        divergence: float | None = 1.0,
        grad_clip: float | None = 5.0,
        progress: bool = False,
    ) -> None:
        for name, value in (("w", w), ("w_init", w_init)):
            if value is not None and not 0.0 < value < 1.0:
                raise ValueError(f"R-ANODE {name} must lie in (0, 1), got {value}")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
        self.features = list(features)
        self.seed = int(seed)
        self.device = device
        self.bkg_kwargs = dict(bkg_kwargs or {})
        self.config: dict[str, Any] = dict(
            w=None if w is None else float(w),
            w_init=float(w_init),
            w_lr=float(w_lr),
            kind=kind,
            n_blocks=int(n_blocks),
            hidden=int(hidden),
            n_bins=int(n_bins),
            epochs=int(epochs),
            batch_size=int(batch_size),
            lr=float(lr),
            weight_decay=float(weight_decay),
            patience=int(patience),
            n_best_epochs=int(n_best_epochs),
            val_fraction=float(val_fraction),
            max_restarts=int(max_restarts),
            divergence=None if divergence is None else float(divergence),
            grad_clip=None if grad_clip is None else float(grad_clip),
            progress=bool(progress),
        )
        self.bkg: ConditionalFlow | None = None
        self.signal: list[_SignalModel] = []
        self.history: dict[str, Any] = {}
        self.n_failed_signal = 0
        self.n_trainings_signal = 0
        self.w_: float | None = None

    @property
    def n_failed(self) -> int:
        """Failed trainings (signal flow and background flow), each retried with another seed."""
        return self.n_failed_signal + (0 if self.bkg is None else self.bkg.n_failed)

    @property
    def n_trainings(self) -> int:
        """All training attempts (signal flow and background flow)."""
        return self.n_trainings_signal + (0 if self.bkg is None else self.bkg.n_failed + 1)

    def _new_signal_flow(self) -> torch.nn.Module:
        c = self.config
        return build_flow(
            len(self.features), kind=c["kind"], n_blocks=c["n_blocks"], hidden=c["hidden"], n_bins=c["n_bins"]
        )

    @staticmethod
    def _nll(
        log_ps: torch.Tensor,
        log_pb: torch.Tensor,
        log_w: torch.Tensor,
        log_1mw: torch.Tensor,
        weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean negative log mixture likelihood -log(w p_S + (1 - w) p_B) of a batch (scalar); weighted by
        the events' ``weight`` when given."""
        nll = -torch.logaddexp(log_w + log_ps, log_1mw + log_pb)
        return nll.mean() if weight is None else (nll * weight).sum() / weight.sum()

    def fit(self, sideband: pd.DataFrame, signal_region: pd.DataFrame) -> RAnodeDensity:
        """Train p_B on the sideband, then p_S (and w) on the SR data with p_B fixed."""
        c = self.config
        x_sb, m_sb = table_arrays(sideband, self.features, "R-ANODE sideband")
        x_sr, m_sr = table_arrays(signal_region, self.features, "R-ANODE signal region")
        w_sb = table_weights(sideband, "R-ANODE sideband")
        w_sr = table_weights(signal_region, "R-ANODE signal region")
        shared = Preprocessor(names=self.features).fit(
            np.concatenate([x_sb, x_sr]), weights=stacked_weights(w_sb, len(x_sb), w_sr, len(x_sr))
        )
        self.bkg = ConditionalFlow(
            len(self.features), seed=self.seed, **{"device": self.device, **self.bkg_kwargs}
        )
        self.bkg.fit(x_sb, m_sb, preprocessor=shared, sample_weight=w_sb)
        device = resolve_device(self.device)
        z_np, logdet = shared.transform(x_sr)
        # the background density in the preprocessed space (the Jacobian is common to both densities)
        log_pb = torch.as_tensor(self.bkg.log_prob(x_sr, m_sr) - logdet, dtype=torch.float32, device=device)
        z = torch.as_tensor(z_np, dtype=torch.float32, device=device)
        ctx = torch.as_tensor(self.bkg.mass_scaler.transform(m_sr), dtype=torch.float32, device=device)
        weight = None if w_sr is None else torch.as_tensor(w_sr, dtype=torch.float32, device=device)
        perm = np.random.default_rng(self.seed + 1).permutation(len(z))
        n_val = max(2, int(round(c["val_fraction"] * len(z))))
        val_idx, train_idx = torch.as_tensor(perm[:n_val]), torch.as_tensor(perm[n_val:])
        learn_w = c["w"] is None
        w0 = c["w_init"] if learn_w else c["w"]
        logit_w0 = math.log(w0 / (1.0 - w0))

        def build():
            return _SignalModel(self._new_signal_flow(), logit_w0, learn_w, c["w_lr"]).to(device)

        def loss_of(model, rows):
            log_w, log_1mw = model.log_w()
            return self._nll(
                model.flow.log_prob(z[rows], context=ctx[rows]),
                log_pb[rows],
                log_w,
                log_1mw,
                None if weight is None else weight[rows],
            )

        def batch_loss(model, idx):
            return loss_of(model, train_idx[idx].to(device))

        def val_loss(model):
            return loss_of(model, val_idx.to(device))

        result = train_model(
            build,
            batch_loss,
            val_loss,
            len(train_idx),
            seed=self.seed + 1,
            what="R-ANODE signal flow",
            **loop_settings(c),
        )
        self.signal = result.members
        self.history = result.history
        self.n_failed_signal, self.n_trainings_signal = result.n_failed, result.n_trainings
        self.w_ = float(np.mean([torch.sigmoid(m.logit_w).item() for m in self.signal]))
        log.info(
            "R-ANODE: w = %.4g (%s); %d of %d trainings failed",
            self.w_,
            "learnt" if learn_w else "fixed",
            self.n_failed,
            self.n_trainings,
        )
        return self

    def log_prob_signal(self, x: pd.DataFrame) -> np.ndarray:
        """log p_S(x | m) in the original feature space for the events of table ``x`` → (N,)."""
        if self.bkg is None or not self.signal:
            raise RuntimeError("RAnodeDensity is not fitted: call fit(sideband, signal_region) first")
        feats, m = table_arrays(x, self.features, "R-ANODE input", min_events=0)
        z, logdet = self.bkg.preprocessor.transform(feats)
        device = next(self.signal[0].parameters()).device
        zt = torch.as_tensor(z, dtype=torch.float32, device=device)
        ct = torch.as_tensor(self.bkg.mass_scaler.transform(m), dtype=torch.float32, device=device)
        with torch.no_grad():
            per_member = torch.stack(
                [
                    torch.cat(
                        [
                            member.flow.log_prob(zt[s : s + 65536], context=ct[s : s + 65536])
                            for s in range(0, len(zt), 65536)
                        ]
                    )
                    if len(zt)
                    else torch.zeros(0, device=device)
                    for member in self.signal
                ]
            ).double()
        log_ps = torch.logsumexp(per_member, dim=0) - math.log(len(self.signal))
        return log_ps.cpu().numpy() + logdet

    def score(self, x: pd.DataFrame) -> np.ndarray:
        """log p_S(x | m) - log p_B(x | m) for the events of table ``x`` (N,)."""
        log_ps = self.log_prob_signal(x)
        feats, m = table_arrays(x, self.features, "R-ANODE input", min_events=0)
        return log_ps - self.bkg.log_prob(feats, m)

    # -- persistence -------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write both flows, w and the configuration to ``path`` atomically."""
        if self.bkg is None or not self.signal:
            raise RuntimeError("RAnodeDensity is not fitted: nothing to save")
        state = {
            "method": "ranode",
            "features": self.features,
            "seed": self.seed,
            "config": self.config,
            "bkg_kwargs": self.bkg_kwargs,
            "bkg": self.bkg.state_dict(),
            "signal": [{k: v.detach().cpu() for k, v in m.state_dict().items()} for m in self.signal],
            "n_failed_signal": self.n_failed_signal,
            "n_trainings_signal": self.n_trainings_signal,
        }
        return save_state(state, path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto") -> RAnodeDensity:
        state = load_state(path, "ranode", "R-ANODE model")
        out = cls(
            state["features"],
            seed=state["seed"],
            device=device,
            bkg_kwargs=state["bkg_kwargs"],
            **state["config"],
        )
        out.bkg = ConditionalFlow.from_state_dict(state["bkg"], device=device)
        target = resolve_device(device)
        out.signal = []
        for weights in state["signal"]:
            member = _SignalModel(out._new_signal_flow(), 0.0, out.config["w"] is None).to(target)
            member.load_state_dict(weights)
            member.eval()
            out.signal.append(member)
        out.n_failed_signal, out.n_trainings_signal = (
            int(state["n_failed_signal"]),
            int(state["n_trainings_signal"]),
        )
        out.w_ = float(np.mean([torch.sigmoid(m.logit_w).item() for m in out.signal]))
        return out

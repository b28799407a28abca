"""Unsupervised outlier detection: an autoencoder (AE) and a normalized autoencoder (NAE).

Inputs are jet images ``(N, C, P, P)`` (:mod:`radar.processors.images`, C = 2 jets) or feature rows
``(N, F)``. The anomaly score is the reconstruction error ``E(x) = mean((AE(x) - x)^2)`` (Heimel et al.,
arXiv:1808.08979; Farina et al., arXiv:1808.08992): trained on background, events unlike it reconstruct
worse. Its known failure is the *complexity bias* (Finke et al., arXiv:2104.09051): an AE reconstructs
"simple" inputs well whatever it was trained on, so one trained on QCD flags complex signal jets, but one
trained on the signal does not flag QCD.

The NAE (Dillon et al., arXiv:2206.14225, after Yoon et al.'s normalized autoencoder) makes the energy
``E(x)/T`` a normalised density ``p(x) = exp(-E(x)/T) / Z`` and trains it by maximum likelihood: the loss
``E(x_data) - E(x_model)`` (+ a small ``E^2`` regulariser), where ``x_model`` are samples of the model drawn
by Langevin dynamics — first in the latent space (on the decoder's manifold: ``z`` follows
``-grad E(D(z))``), then in input space (``x`` follows ``-grad E(x)``; images kept non-negative). Events
the model gives low probability, simpler or more complex than the training data, get a high energy. The
NAE starts from a trained AE (``pretrain_epochs``).

Training uses :func:`radar.models.training.train_model`'s conventions (seeded, validation split, best
epoch kept) through a small loop of its own (the NAE's negative phase is not a plain loss); runs on the
GPU when present (``device="auto"``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from radar.models.device import resolve_device

log = logging.getLogger(__name__)


def _conv_codec(channels: int, pixels: int, latent: int) -> tuple[nn.Module, nn.Module]:
    if pixels % 4:
        raise ValueError(f"image autoencoder: pixels must be a multiple of 4, got {pixels}")
    q = pixels // 4
    encoder = nn.Sequential(
        nn.Conv2d(channels, 16, 3, padding=1),
        nn.SiLU(),
        nn.AvgPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.SiLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * q * q, 128),
        nn.SiLU(),
        nn.Linear(128, latent),
    )
    decoder = nn.Sequential(
        nn.Linear(latent, 128),
        nn.SiLU(),
        nn.Linear(128, 32 * q * q),
        nn.SiLU(),
        nn.Unflatten(1, (32, q, q)),
        nn.Upsample(scale_factor=2),
        nn.Conv2d(32, 16, 3, padding=1),
        nn.SiLU(),
        nn.Upsample(scale_factor=2),
        nn.Conv2d(16, channels, 3, padding=1),
        nn.Softplus(),  # images are non-negative
    )
    return encoder, decoder


def _dense_codec(features: int, latent: int, hidden: int = 64) -> tuple[nn.Module, nn.Module]:
    encoder = nn.Sequential(
        nn.Linear(features, hidden),
        nn.SiLU(),
        nn.Linear(hidden, hidden),
        nn.SiLU(),
        nn.Linear(hidden, latent),
    )
    decoder = nn.Sequential(
        nn.Linear(latent, hidden),
        nn.SiLU(),
        nn.Linear(hidden, hidden),
        nn.SiLU(),
        nn.Linear(hidden, features),
    )
    return encoder, decoder


class _AE(nn.Module):
    def __init__(self, shape: tuple[int, ...], latent: int):
        super().__init__()
        if len(shape) == 3:
            self.encoder, self.decoder = _conv_codec(shape[0], shape[1], latent)
        elif len(shape) == 1:
            self.encoder, self.decoder = _dense_codec(shape[0], latent)
        else:
            raise ValueError(
                f"autoencoder inputs must be (N, C, P, P) images or (N, F) rows, got (N, {shape})"
            )

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """Per-event reconstruction error (mean squared error over the input's entries)."""
        return ((self.decoder(self.encoder(x)) - x) ** 2).flatten(1).mean(1)


@dataclass
class AutoencoderSettings:
    latent: int = 16
    epochs: int = 30
    batch_size: int = 256
    lr: float = 1e-3
    val_fraction: float = 0.1
    seed: int = 0
    device: str = "auto"
    # NAE only
    nae: bool = False
    pretrain_epochs: int = 10
    temperature: float = 1.0
    latent_steps: int = 20
    latent_step_size: float = 0.1
    latent_noise: float = 0.05
    x_steps: int = 20
    x_step_size: float = 1e-5
    x_noise: float = 1e-4
    energy_l2: float = 1.0


class Autoencoder:
    """``fit(X)`` on background-like events, ``score(X)`` = the energy (higher: more anomalous).

    ``X``: float arrays ``(N, C, P, P)`` (images, used as they are: :mod:`radar.processors.images` normalises
    them) or ``(N, F)`` feature rows (standardised with the training events' mean and std). ``nae=True``
    makes it a normalized autoencoder (module docstring)."""

    def __init__(self, **settings):
        self.settings = AutoencoderSettings(**settings)
        self.model: _AE | None = None
        self.history: list[dict] = []

    # -- inputs -----------------------------------------------------------------------------------------
    def _prepare(self, X: np.ndarray, fit: bool = False) -> torch.Tensor:
        X = np.asarray(X, dtype=np.float32)
        if not np.isfinite(X).all():
            raise ValueError("autoencoder inputs hold NaN or inf")
        if X.ndim == 2:
            if fit:
                self.mean_, self.std_ = X.mean(0), X.std(0) + 1e-8
            X = (X - self.mean_) / self.std_
        elif X.ndim == 4 and fit:
            # images: one overall scale so that a typical pixel is O(1) (sums are 1 per jet)
            self.scale_ = float(X.shape[-1] * X.shape[-2])
        if X.ndim == 4:
            X = X * self.scale_
        return torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))

    # -- training ---------------------------------------------------------------------------------------
    def fit(self, X: np.ndarray) -> Autoencoder:
        s = self.settings
        device = resolve_device(s.device)
        generator = torch.Generator().manual_seed(int(s.seed))
        data = self._prepare(X, fit=True)
        n_val = max(1, int(round(s.val_fraction * len(data))))
        order = torch.randperm(len(data), generator=generator)
        val, train = data[order[:n_val]].to(device), data[order[n_val:]]
        torch.manual_seed(int(s.seed))
        self.model = _AE(tuple(data.shape[1:]), s.latent).to(device)
        optimiser = torch.optim.Adam(self.model.parameters(), lr=s.lr)
        total = s.epochs + (s.pretrain_epochs if s.nae else 0)
        best, best_state = math.inf, None
        for epoch in range(total):
            nae_phase = s.nae and epoch >= s.pretrain_epochs
            self.model.train()
            perm = torch.randperm(len(train), generator=generator)
            losses = []
            for start in range(0, len(train), s.batch_size):
                x = train[perm[start : start + s.batch_size]].to(device)
                e_pos = self.model.energy(x) / s.temperature
                if nae_phase:
                    x_neg = self.sample(len(x), generator)
                    e_neg = self.model.energy(x_neg) / s.temperature
                    loss = e_pos.mean() - e_neg.mean() + s.energy_l2 * (e_pos**2 + e_neg**2).mean()
                else:
                    loss = e_pos.mean()
                if not torch.isfinite(loss):
                    raise RuntimeError(f"autoencoder: non-finite loss at epoch {epoch}")
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                losses.append(float(loss.detach()))
            self.model.eval()
            with torch.no_grad():
                val_energy = float(self.model.energy(val).mean())
            self.history.append({"epoch": epoch, "loss": float(np.mean(losses)), "val_energy": val_energy})
            # the AE keeps its best validation epoch; the NAE its last (its energy scale moves on purpose)
            if not s.nae and val_energy < best:
                best, best_state = (
                    val_energy,
                    {k: v.detach().clone() for k, v in self.model.state_dict().items()},
                )
        if best_state is not None:
            self.model.load_state_dict(best_state)
        log.info(
            "%s trained: %d events, %d epochs, validation energy %.4g",
            "NAE" if s.nae else "AE",
            len(train),
            total,
            self.history[-1]["val_energy"],
        )
        return self

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` samples of the model (NAE negative phase): Langevin dynamics in the latent space, decoded,
        then in input space. Gradients flow only into the parameters through the final energy."""
        s = self.settings
        model = self.model
        device = next(model.parameters()).device
        latent = model.decoder[0].in_features
        z = torch.randn(n, latent, generator=generator).to(device)
        requires = [p.requires_grad for p in model.parameters()]
        for p in model.parameters():
            p.requires_grad_(False)
        try:
            for _ in range(s.latent_steps):
                z = z.detach().requires_grad_(True)
                energy = model.energy(model.decoder(z)).sum() / s.temperature
                (grad,) = torch.autograd.grad(energy, z)
                z = (
                    z
                    - s.latent_step_size * grad
                    + s.latent_noise * torch.randn(z.shape, generator=generator).to(device)
                )
            x = model.decoder(z.detach())
            for _ in range(s.x_steps):
                x = x.detach().requires_grad_(True)
                energy = model.energy(x).sum() / s.temperature
                (grad,) = torch.autograd.grad(energy, x)
                x = (
                    x
                    - s.x_step_size * grad
                    + s.x_noise * torch.randn(x.shape, generator=generator).to(device)
                )
                if x.dim() == 4:
                    x = x.clamp_min(0.0)
        finally:
            for p, r in zip(model.parameters(), requires, strict=True):
                p.requires_grad_(r)
        return x.detach()

    # -- scoring ----------------------------------------------------------------------------------------
    def score(self, X: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("Autoencoder.score called before fit")
        device = next(self.model.parameters()).device
        data = self._prepare(X)
        out = []
        self.model.eval()
        with torch.no_grad():
            for start in range(0, len(data), batch_size):
                out.append(self.model.energy(data[start : start + batch_size].to(device)).cpu().numpy())
        return np.concatenate(out).astype(np.float64) if out else np.zeros(0)

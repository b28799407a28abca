"""Unsupervised outlier detection: an autoencoder (AE) and a normalized autoencoder (NAE).

Inputs are jet images ``(N, C, P, P)`` (:mod:`radar.processors.images`, C = 2 jets) or feature rows
``(N, F)``. The anomaly score is the reconstruction error ``E(x) = mean((AE(x) - x)^2)`` (Heimel et al.,
arXiv:1808.08979; Farina et al., arXiv:1808.08992): trained on background, events unlike it reconstruct
worse. Its known failure is the *complexity bias* (Finke et al., arXiv:2104.09051): an AE reconstructs
"simple" inputs well whatever it was trained on, so one trained on QCD flags complex signal jets, but one
trained on the signal does not flag QCD.

The NAE (Dillon et al., arXiv:2206.14225, after Yoon et al.'s normalized autoencoder) makes the energy
``E(x)/T`` a normalised density ``p(x) = exp(-E(x)/T) / Z`` and trains it by maximum likelihood: the loss
``E(x_data)/T - E(x_model)/T`` (+ ``gamma (E(x_model)/T)^2``, which holds the model samples' energy near
``T / (2 gamma)``), where ``x_model`` are samples of the model drawn by Langevin dynamics initialised on the
decoder's manifold — a chain in the (spherical) latent space on ``E(D(z))``, restarted mostly from a replay
buffer of earlier chains, then a short chain in input space on ``E(x)`` (images kept non-negative), every
step's gradient clipped per event as in the reference code. Events the model gives low probability,
simpler or more complex than the training data, get a high energy. The NAE starts from a trained AE
(``pretrain_epochs``); ``T`` defaults to that AE's mean validation energy, so the same settings serve images
and standardised feature rows.

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
    def __init__(self, shape: tuple[int, ...], latent: int, spherical: bool = False):
        super().__init__()
        if len(shape) == 3:
            self.encoder, self.decoder = _conv_codec(shape[0], shape[1], latent)
        elif len(shape) == 1:
            self.encoder, self.decoder = _dense_codec(shape[0], latent)
        else:
            raise ValueError(
                f"autoencoder inputs must be (N, C, P, P) images or (N, F) rows, got (N, {shape})"
            )
        self.spherical = spherical

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder(x)
        return _to_sphere(z) if self.spherical else z

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """Per-event reconstruction error (mean squared error over the input's entries)."""
        return ((self.decoder(self.encode(x)) - x) ** 2).flatten(1).mean(1)


def _to_sphere(z: torch.Tensor) -> torch.Tensor:
    return z / z.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _clip_per_event(grad: torch.Tensor, max_norm: float) -> torch.Tensor:
    """Each event's gradient scaled down to norm ``max_norm`` at most (``max_norm <= 0``: unchanged)."""
    if max_norm <= 0:
        return grad
    norm = grad.flatten(1).norm(dim=1).clamp_min(1e-30)
    factor = (max_norm / norm).clamp(max=1.0)
    return grad * factor.view(-1, *([1] * (grad.dim() - 1)))


@dataclass
class AutoencoderSettings:
    latent: int = 16
    epochs: int = 30
    batch_size: int = 256
    lr: float = 1e-3
    val_fraction: float = 0.1
    seed: int = 0
    device: str = "auto"
    # NAE only (after the image settings of arXiv:2206.14225's code, heidelberg-hepml/normalized-
    # autoencoders: spherical latent, on-manifold Langevin chains with per-event gradient clipping, a
    # replay buffer of latent chains; the temperature and learning rate are radar's, see docs/outliers.md)
    nae: bool = False
    spherical: bool | None = None  # latent on the unit sphere; None: for the NAE only
    pretrain_epochs: int = 10
    nae_lr: float = 1e-3  # the reference's 1e-5 needs ~10^4 steps; measured on jet images: 1e-3 in 10 epochs
    temperature: float | None = None  # None: the mean validation energy after pretraining
    latent_steps: int = 10
    latent_step_size: float = 50.0
    latent_noise: float = 0.01
    x_steps: int = 5
    x_step_size: float = 50.0
    x_noise: float = 1e-4  # annealed: noise / (1 + step)
    grad_clip: float = 0.01  # per-event norm of the Langevin drift's gradient (0: no clipping)
    buffer_size: int = 10_000
    replay_ratio: float = 0.95
    energy_l2: float = 0.05  # gamma of the (E(negative)/T)^2 regulariser: holds E(negative) near T/(2 gamma)
    # NAE: the model kept is an exponential moving average of the negative phase's weights (decay per
    # step; 0: the last step's weights), which damps the epoch-to-epoch swings of the negative phase
    ema: float = 0.0
    # images only: Gaussian smoothing of each jet image (sigma in pixels; 0: none), for training and scoring
    smooth: float = 0.0
    # chunked sources (an ImageFile): events read per chunk, most validation events kept in memory
    chunk_size: int = 20_000
    val_max: int = 5_000


class Autoencoder:
    """``fit(X)`` on background-like events, ``score(X)`` = the energy (higher: more anomalous).

    ``X``: float arrays ``(N, C, P, P)`` (images, used as they are: :mod:`radar.processors.images` normalises
    them) or ``(N, F)`` feature rows (standardised with the training events' mean and std). ``nae=True``
    makes it a normalized autoencoder (module docstring)."""

    def __init__(self, **settings):
        self.settings = AutoencoderSettings(**settings)
        self.model: _AE | None = None
        self.history: list[dict] = []
        self._buffer: torch.Tensor | None = None
        self.temperature_ = 1.0

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
            if self.settings.smooth > 0:
                from scipy.ndimage import gaussian_filter

                sigma = self.settings.smooth
                X = gaussian_filter(X, sigma=(0.0, 0.0, sigma, sigma), mode="constant").astype(np.float32)
            X = X * self.scale_
        return torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))

    # -- training ---------------------------------------------------------------------------------------
    def fit(self, X) -> Autoencoder:
        """Train on ``X``: an array, or a chunked source such as :class:`radar.processors.images.ImageFile`
        (anything with ``n`` and ``read(start, stop)``), streamed ``chunk_size`` events at a time so that
        memory is bounded by one chunk plus at most ``val_max`` validation events, whatever the file's size.
        The epochs visit the chunks in a seeded order and each chunk's training events in a seeded order;
        which events validate is fixed by the seed and the chunk sizes alone."""
        s = self.settings
        device = resolve_device(s.device)
        generator = torch.Generator().manual_seed(int(s.seed))
        if hasattr(X, "read") and hasattr(X, "n"):
            val, chunks = self._stream(X, generator)
        else:
            data = self._prepare(X, fit=True)
            n_val = max(1, int(round(s.val_fraction * len(data))))
            order = torch.randperm(len(data), generator=generator)
            val, train = data[order[:n_val]], data[order[n_val:]]
            chunks = _InMemory(train)
        val = val.to(device)
        torch.manual_seed(int(s.seed))
        spherical = s.nae if s.spherical is None else s.spherical
        self.model = _AE(tuple(val.shape[1:]), s.latent, spherical=spherical).to(device)
        optimiser = torch.optim.Adam(self.model.parameters(), lr=s.lr)
        self._buffer = None
        self._ema = None
        total = s.epochs + (s.pretrain_epochs if s.nae else 0)
        best, best_state = math.inf, None
        for epoch in range(total):
            nae_phase = s.nae and epoch >= s.pretrain_epochs
            if nae_phase and epoch == s.pretrain_epochs:
                optimiser = torch.optim.Adam(self.model.parameters(), lr=s.nae_lr)
                self.temperature_ = s.temperature or self._mean_energy(val)
                log.info("NAE: negative phase at temperature %.4g", self.temperature_)
            self.model.train()
            losses = []
            for train in chunks.epoch(generator):
                perm = torch.randperm(len(train), generator=generator)
                for start in range(0, len(train), s.batch_size):
                    x = train[perm[start : start + s.batch_size]].to(device)
                    losses.append(self._step(x, nae_phase, optimiser, generator, epoch))
            self.model.eval()
            val_energy = self._mean_energy(val)
            self.history.append({"epoch": epoch, "loss": float(np.mean(losses)), "val_energy": val_energy})
            # the AE keeps its best validation epoch; the NAE its last (its energy scale moves on purpose)
            if not s.nae and val_energy < best:
                best, best_state = (
                    val_energy,
                    {k: v.detach().clone() for k, v in self.model.state_dict().items()},
                )
        if best_state is not None:
            self.model.load_state_dict(best_state)
        if self._ema is not None:
            self.model.load_state_dict(self._ema)
        log.info(
            "%s trained: %d events, %d epochs, validation energy %.4g",
            "NAE" if s.nae else "AE",
            chunks.n,
            total,
            self.history[-1]["val_energy"],
        )
        return self

    def _mean_energy(self, x: torch.Tensor) -> float:
        self.model.eval()
        with torch.no_grad():
            # in batches of the training size: the validation pass's memory stays a training step's
            step = max(self.settings.batch_size, 256)
            return float(torch.cat([self.model.energy(v) for v in torch.split(x, step)]).mean())

    def _step(self, x, nae_phase: bool, optimiser, generator, epoch: int) -> float:
        s = self.settings
        if nae_phase:
            e_pos = self.model.energy(x) / self.temperature_
            x_neg = self.sample(len(x), generator)
            e_neg = self.model.energy(x_neg) / self.temperature_
            loss = e_pos.mean() - e_neg.mean() + s.energy_l2 * (e_neg**2).mean()
        else:
            loss = self.model.energy(x).mean()
        if not torch.isfinite(loss):
            raise RuntimeError(f"autoencoder: non-finite loss at epoch {epoch}")
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if nae_phase and s.ema > 0:
            self._update_ema(s.ema)
        return float(loss.detach())

    def _update_ema(self, decay: float) -> None:
        state = self.model.state_dict()
        if self._ema is None:
            self._ema = {k: v.detach().clone() for k, v in state.items()}
            return
        with torch.no_grad():
            for k, v in state.items():
                if v.is_floating_point():
                    self._ema[k].mul_(decay).add_(v.detach(), alpha=1.0 - decay)
                else:
                    self._ema[k].copy_(v)

    def _stream(self, source, generator: torch.Generator) -> tuple[torch.Tensor, _Streamed]:
        """Validation events (at most ``val_max``) and the training chunks of a chunked source; feature
        rows are standardised with the mean and std of all events, summed chunk by chunk."""
        s = self.settings
        n = int(source.n)
        if n < 2:
            raise ValueError(f"autoencoder: {getattr(source, 'path', 'the source')} holds {n} events")
        bounds = [(a, min(a + s.chunk_size, n)) for a in range(0, n, s.chunk_size)]
        first = np.asarray(source.read(0, 1), dtype=np.float64)
        if first.ndim == 2:
            total, squares = np.zeros(first.shape[1]), np.zeros(first.shape[1])
            for a, b in bounds:
                rows = np.asarray(source.read(a, b), dtype=np.float64)
                total, squares = total + rows.sum(0), squares + (rows**2).sum(0)
            self.mean_ = (total / n).astype(np.float32)
            self.std_ = (np.sqrt(np.maximum(squares / n - (total / n) ** 2, 0.0)) + 1e-8).astype(np.float32)
        else:
            self._prepare(first, fit=True)
        split = _Streamed(source, bounds, self._prepare, s.val_fraction, s.val_max, int(s.seed))
        return split.validation(), split

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` samples of the model (NAE negative phase), initialised on the decoder's manifold: a Langevin
        chain in the latent space on ``E(D(z))`` (started from the replay buffer of earlier chains with
        probability ``replay_ratio``, else at random; kept on the sphere when the latent is spherical),
        decoded, then a chain in input space on ``E(x)`` (noise annealed, images kept non-negative). Each
        step moves by ``step_size`` times the gradient clipped per event to norm ``grad_clip``. Gradients
        flow only into the parameters through the final energy."""
        s = self.settings
        model = self.model
        device = next(model.parameters()).device
        latent = model.decoder[0].in_features
        z = torch.randn(n, latent, generator=generator)
        if self._buffer is not None and len(self._buffer):
            replay = torch.rand(n, generator=generator) < s.replay_ratio
            picks = torch.randint(len(self._buffer), (int(replay.sum()),), generator=generator)
            z[replay] = self._buffer[picks]
        z = (_to_sphere(z) if model.spherical else z).to(device)
        requires = [p.requires_grad for p in model.parameters()]
        for p in model.parameters():
            p.requires_grad_(False)
        try:
            for _ in range(s.latent_steps):
                z = z.detach().requires_grad_(True)
                energy = model.energy(model.decoder(z)).sum() / self.temperature_
                (grad,) = torch.autograd.grad(energy, z)
                z = (
                    z
                    - s.latent_step_size * _clip_per_event(grad, s.grad_clip)
                    + s.latent_noise * torch.randn(z.shape, generator=generator).to(device)
                )
                if model.spherical:
                    z = _to_sphere(z)
            z = z.detach()
            self._remember(z.cpu())
            x = model.decoder(z)
            for step in range(s.x_steps):
                x = x.detach().requires_grad_(True)
                energy = model.energy(x).sum() / self.temperature_
                (grad,) = torch.autograd.grad(energy, x)
                x = (
                    x
                    - s.x_step_size * _clip_per_event(grad, s.grad_clip)
                    + s.x_noise / (1 + step) * torch.randn(x.shape, generator=generator).to(device)
                )
                if x.dim() == 4:
                    x = x.clamp_min(0.0)
        finally:
            for p, r in zip(model.parameters(), requires, strict=True):
                p.requires_grad_(r)
        return x.detach()

    def _remember(self, z: torch.Tensor) -> None:
        """Latent chain ends into the replay buffer (the newest ``buffer_size`` kept)."""
        if self.settings.buffer_size <= 0:
            return
        self._buffer = z if self._buffer is None else torch.cat([z, self._buffer])
        self._buffer = self._buffer[: self.settings.buffer_size]

    # -- scoring ----------------------------------------------------------------------------------------
    def score(self, X: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        out = self._batched(X, batch_size, "score", lambda model, x: model.energy(x))
        return np.concatenate(out).astype(np.float64) if out else np.zeros(0)

    def seen(self, X: np.ndarray) -> np.ndarray:
        """``X`` as the model sees it, in ``X``'s own units: images smoothed when ``smooth`` > 0 (what
        :meth:`reconstruct` reconstructs), anything else unchanged."""
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 4 or self.settings.smooth <= 0:
            return X
        return self._prepare(X).numpy() / self.scale_

    def reconstruct(self, X: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """The autoencoder's reconstruction of ``X``, in ``X``'s own units (images: pT fractions; rows:
        the features as given)."""
        out = self._batched(X, batch_size, "reconstruct", lambda model, x: model.decoder(model.encode(x)))
        rec = np.concatenate(out) if out else np.zeros((0, *np.shape(X)[1:]), np.float32)
        return rec * self.std_ + self.mean_ if rec.ndim == 2 else rec / self.scale_

    def _batched(self, X: np.ndarray, batch_size: int, what: str, function) -> list[np.ndarray]:
        """``function(model, batch)`` of the prepared ``X`` in batches, without gradients, on the model's
        device."""
        if self.model is None:
            raise RuntimeError(f"Autoencoder.{what} called before fit")
        device = next(self.model.parameters()).device
        data = self._prepare(X)
        self.model.eval()
        with torch.no_grad():
            return [
                function(self.model, data[start : start + batch_size].to(device)).cpu().numpy()
                for start in range(0, len(data), batch_size)
            ]


class _InMemory:
    """The training events of an in-memory fit: one chunk."""

    def __init__(self, train: torch.Tensor):
        self.train, self.n = train, len(train)

    def epoch(self, generator: torch.Generator):
        yield self.train


class _Streamed:
    """The training chunks of a chunked source, read one at a time. In chunk ``c`` a permutation seeded by
    ``(seed, c)`` puts the first ``val_fraction`` of its events in the validation set (until ``val_max``
    are held) and the rest in training, so every epoch splits the same way without keeping an index."""

    def __init__(self, source, bounds, prepare, val_fraction: float, val_max: int, seed: int):
        self.source, self.bounds, self.prepare, self.seed = source, bounds, prepare, seed
        self.n = 0
        held = 0
        self.n_val = []
        for a, b in bounds:
            k = min(int(round(val_fraction * (b - a))), max(val_max - held, 0))
            self.n_val.append(k)
            held += k
            self.n += b - a - k

    def _split(self, c: int) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = self.bounds[c]
        order = torch.from_numpy(np.random.default_rng([self.seed, c]).permutation(b - a))
        return order[: self.n_val[c]], order[self.n_val[c] :]

    def _read(self, c: int) -> torch.Tensor:
        return self.prepare(self.source.read(*self.bounds[c]))

    def validation(self) -> torch.Tensor:
        parts = [self._read(c)[self._split(c)[0]] for c in range(len(self.bounds)) if self.n_val[c]]
        if not parts:
            raise ValueError("autoencoder: no validation events (val_fraction or val_max is 0)")
        return torch.cat(parts)

    def epoch(self, generator: torch.Generator):
        for c in torch.randperm(len(self.bounds), generator=generator).tolist():
            yield self._read(c)[self._split(c)[1]]

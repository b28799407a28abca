"""Invertible preprocessing for density estimation that keeps densities exact.

:class:`Preprocessor` maps every feature column through min-max scaling, a logit and a standardisation,

    u = eps + (1 - 2 eps) (x - lo) / (hi - lo),    y = log(u / (1 - u)),    z = (y - mu) / sigma,

and returns ``log|det dz/dx|`` with every transform, so that a density learnt in ``z`` converts back to
the original feature space exactly: ``log p(x) = log p(z) + log|det dz/dx|``. The ``eps`` squeeze keeps
the edges of the training range finite (``x = lo`` maps to ``logit(eps)``, never to ``-inf``), which is
how radar avoids the ±inf values (and dropped events) of a bare logit transform. ``lo``, ``hi`` are the
per-feature minimum and maximum of the data given to :meth:`Preprocessor.fit`.

The map is a bijection from the open interval ``(lo - d, hi + d)``, ``d = eps (hi - lo) / (1 - 2 eps)``,
onto the real line. Inputs outside the training range ``[lo, hi]`` are clipped to it (and counted in a
log line), so scoring events slightly outside the training range gives finite numbers; the Jacobian is
then the one at the clipped value.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy.special import expit

log = logging.getLogger(__name__)


class Preprocessor:
    """Min-max → logit → standardise, with the exact log-Jacobian.

    Parameters
    ----------
    eps:
        Squeeze of the unit interval before the logit (``0 < eps < 0.5``): the training minimum maps to
        ``logit(eps)``, the maximum to ``logit(1 - eps)``.
    names:
        Optional feature names, used only in error messages.
    """

    def __init__(self, eps: float = 1e-3, names: Sequence[str] | None = None) -> None:
        if not 0.0 < eps < 0.5:
            raise ValueError(f"eps must lie in (0, 0.5), got {eps}")
        self.eps = float(eps)
        self.names = list(names) if names is not None else None
        self.lo: np.ndarray | None = None
        self.hi: np.ndarray | None = None
        self.mu: np.ndarray | None = None
        self.sigma: np.ndarray | None = None

    # -- fitting ---------------------------------------------------------------------------------------
    def _name(self, j: int) -> str:
        return f"feature {j} ({self.names[j]})" if self.names and j < len(self.names) else f"feature {j}"

    def _check(self, x: np.ndarray, what: str) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"{what}: expected a 2-d array (N events, D features), got shape {x.shape}")
        bad = ~np.isfinite(x)
        if bad.any():
            cols = np.flatnonzero(bad.any(axis=0))
            rows = np.flatnonzero(bad.any(axis=1))
            raise ValueError(
                f"{what}: {int(bad.sum())} NaN/inf values in {', '.join(self._name(j) for j in cols)} "
                f"(events {rows[:5].tolist()}{' ...' if len(rows) > 5 else ''}); expected finite features"
            )
        return x

    def fit(self, x: np.ndarray, weights: np.ndarray | None = None) -> Preprocessor:
        """Learn ``lo``, ``hi`` (min, max) and the logit-space mean/std from ``x`` of shape (N, D)
        (weighted moments with event ``weights`` (N,))."""
        x = self._check(x, "Preprocessor.fit")
        if len(x) < 2:
            raise ValueError(f"Preprocessor.fit: need at least 2 events, got {len(x)}")
        lo, hi = x.min(axis=0), x.max(axis=0)
        const = np.flatnonzero(hi <= lo)
        if const.size:
            raise ValueError(
                f"Preprocessor.fit: {', '.join(self._name(j) for j in const)} is constant on the training "
                f"data (value {lo[const].tolist()}); a min-max/logit transform needs a non-zero range"
            )
        self.lo, self.hi = lo, hi
        y = self._logit(self._unit(x))
        self.mu, self.sigma = _moments(y, weights)
        self.sigma[self.sigma <= 0] = 1.0
        return self

    @property
    def fitted(self) -> bool:
        return self.lo is not None

    @property
    def n_features(self) -> int:
        self._require_fit()
        return len(self.lo)

    def _require_fit(self) -> None:
        if self.lo is None:
            raise RuntimeError("Preprocessor is not fitted: call fit(x) first")

    # -- maps (numpy and torch share the formulas) ------------------------------------------------------
    def _unit(self, x):
        scale = (1.0 - 2.0 * self.eps) / (self.hi - self.lo)
        if isinstance(x, torch.Tensor):
            lo = torch.as_tensor(self.lo, dtype=x.dtype, device=x.device)
            return self.eps + (x - lo) * torch.as_tensor(scale, dtype=x.dtype, device=x.device)
        return self.eps + (x - self.lo) * scale

    @staticmethod
    def _logit(u):
        if isinstance(u, torch.Tensor):
            return torch.log(u) - torch.log1p(-u)
        return np.log(u) - np.log1p(-u)

    def clip(self, x: np.ndarray, what: str = "Preprocessor.transform") -> np.ndarray:
        """Clip ``x`` (N, D) to the training range ``[lo, hi]``, logging how many values moved."""
        self._require_fit()
        outside = (x < self.lo) | (x > self.hi)
        if outside.any():
            cols = np.flatnonzero(outside.any(axis=0))
            log.info(
                "%s: %d values outside the training range clipped to it (%s)",
                what,
                int(outside.sum()),
                ", ".join(self._name(j) for j in cols),
            )
            x = np.clip(x, self.lo, self.hi)
        return x

    def transform(self, x):
        """Map features ``x`` (N, D) to ``z`` (N, D); also return ``log|det dz/dx|`` of shape (N,).

        Accepts numpy arrays (values outside ``[lo, hi]`` are clipped, non-finite values raise) or
        torch tensors (no clipping, differentiable: used to check the Jacobian against autograd).
        """
        self._require_fit()
        if isinstance(x, torch.Tensor):
            u = self._unit(x)
            mu = torch.as_tensor(self.mu, dtype=x.dtype, device=x.device)
            sigma = torch.as_tensor(self.sigma, dtype=x.dtype, device=x.device)
            z = (self._logit(u) - mu) / sigma
            const = torch.as_tensor(self._const_logdet(), dtype=x.dtype, device=x.device)
            logdet = const - (torch.log(u) + torch.log1p(-u)).sum(dim=1)
            return z, logdet
        x = self._check(x, "Preprocessor.transform")
        if x.shape[1] != len(self.lo):
            raise ValueError(f"Preprocessor.transform: expected {len(self.lo)} features, got {x.shape[1]}")
        x = self.clip(x)
        u = self._unit(x)
        z = (self._logit(u) - self.mu) / self.sigma
        logdet = self._const_logdet() - (np.log(u) + np.log1p(-u)).sum(axis=1)
        return z, logdet

    def _const_logdet(self) -> float:
        # d u/dx = (1 - 2 eps)/(hi - lo); d y/du = 1/(u (1 - u)); d z/dy = 1/sigma
        return float(np.sum(np.log1p(-2.0 * self.eps) - np.log(self.hi - self.lo) - np.log(self.sigma)))

    def inverse(self, z: np.ndarray) -> np.ndarray:
        """Map ``z`` (N, D) back to features (N, D); lands in ``(lo - d, hi + d)`` (see module doc)."""
        self._require_fit()
        z = np.asarray(z, dtype=np.float64)
        y = z * self.sigma + self.mu
        u = expit(y)
        return self.lo + (u - self.eps) * (self.hi - self.lo) / (1.0 - 2.0 * self.eps)

    # -- persistence -------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Plain Python state (lists and floats: safe for ``torch.load(weights_only=True)`` and JSON)."""
        self._require_fit()
        return {
            "eps": self.eps,
            "names": self.names,
            "lo": self.lo.tolist(),
            "hi": self.hi.tolist(),
            "mu": self.mu.tolist(),
            "sigma": self.sigma.tolist(),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Preprocessor:
        out = cls(eps=state["eps"], names=state.get("names"))
        for key in ("lo", "hi", "mu", "sigma"):
            setattr(out, key, np.asarray(state[key], dtype=np.float64))
        return out


class MassScaler:
    """Standardised ``log`` of the conditioning variables: the conditional input of every flow. One
    variable (m_JJ in GeV, shape (N,)) for the resonant search; several (e.g. HT and MET, shape (N, C)) for
    the non-resonant one. Every value must be finite and > 0."""

    def __init__(self, loc: Any = 0.0, scale: Any = 1.0) -> None:
        self.loc = np.asarray(loc, dtype=np.float64)
        self.scale = np.asarray(scale, dtype=np.float64)

    @staticmethod
    def _check(m: np.ndarray, what: str) -> np.ndarray:
        m = np.asarray(m, dtype=np.float64)
        if m.ndim == 2 and m.shape[1] == 1:
            m = m[:, 0]
        if m.ndim not in (1, 2):
            m = m.reshape(-1)
        bad = ~np.isfinite(m) | (m <= 0)
        if m.ndim == 2:
            bad = bad.any(axis=1)
        if bad.any():
            idx = np.flatnonzero(bad)
            raise ValueError(
                f"{what}: {bad.sum()} conditioning values not finite and positive (events {idx[:5].tolist()}); "
                "expected m_JJ (or each context variable) in GeV"
            )
        return m

    def fit(self, m: np.ndarray, weights: np.ndarray | None = None) -> MassScaler:
        logm = np.log(self._check(m, "MassScaler.fit"))
        loc, std = _moments(logm, weights)
        self.loc = np.asarray(loc, dtype=np.float64)
        self.scale = np.where(np.asarray(std) > 0, std, 1.0).astype(np.float64)
        return self

    @property
    def n_context(self) -> int:
        return int(self.loc.size)

    def transform(self, m: np.ndarray) -> np.ndarray:
        """(N,) or (N, C) GeV → (N, C) standardised log values (C = 1 for m_JJ)."""
        out = (np.log(self._check(m, "MassScaler.transform")) - self.loc) / self.scale
        return out[:, None] if out.ndim == 1 else out

    def state_dict(self) -> dict[str, Any]:
        return {"loc": self.loc.tolist(), "scale": self.scale.tolist()}  # floats for one variable

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> MassScaler:
        return cls(state["loc"], state["scale"])


def _moments(y: np.ndarray, weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation along axis 0; weighted (a weight of k counts as k copies) when given."""
    if weights is None:
        return y.mean(axis=0), y.std(axis=0)
    weights = np.asarray(weights, dtype=np.float64)
    mean = np.average(y, axis=0, weights=weights)
    return mean, np.sqrt(np.average((y - mean) ** 2, axis=0, weights=weights))

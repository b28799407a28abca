"""The local significance of an SR excess over a fitted background with uncertainty."""

from __future__ import annotations

import logging

import numpy as np
from scipy import stats

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ significance
def local_significance(
    n_obs: np.ndarray | float, b: np.ndarray | float, sigma_b: np.ndarray | float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-sided local significance of an excess of ``n_obs`` events over a prediction ``b ± sigma_b``.

    Likelihood L(s, β) = Pois(n | s + β) · Gauss(b | β, σ_b); test statistic
    q0 = -2 ln[L(0, β̂̂) / L(ŝ, β̂)] with ŝ = n - b, β̂ = b (the unconstrained fit), β̂̂ the conditional
    maximum under s = 0 (closed form). Z = sqrt(q0) for n > b, Z = 0 for deficits; p = 1 - Φ(Z).
    Arrays broadcast. Returns (Z, p_local, q0).
    """
    n = np.asarray(n_obs, dtype=float)
    b = np.asarray(b, dtype=float)
    var = np.asarray(sigma_b, dtype=float) ** 2
    # beta_hathat solves beta^2 + beta (var - b) - n var = 0 (positive root); var = 0 -> beta = b
    disc = np.sqrt((b - var) ** 2 + 4.0 * n * var)
    beta = np.where(var > 0, 0.5 * ((b - var) + disc), b)
    beta = np.maximum(beta, 1e-300)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_term = np.where(n > 0, n * np.log(np.where(n > 0, n, 1.0) / beta), 0.0)
        constraint = np.where(var > 0, (beta - b) ** 2 / np.where(var > 0, var, 1.0), 0.0)
    q0 = 2.0 * (log_term - (n - beta)) + constraint
    q0 = np.where((n > b) & np.isfinite(q0), np.maximum(q0, 0.0), 0.0)
    z = np.sqrt(q0)
    return z, stats.norm.sf(z), q0

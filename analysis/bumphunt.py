"""The bump hunt: m_JJ spectra after anomaly-score cuts, dijet-function sideband fits, local and global
significance (all masses in GeV).

Procedure (one working point):

1. A working point is a signal-region efficiency ``eff``: the score threshold is the ``1 - eff`` quantile
   of the scores of SR events; the same threshold is applied to every event (SR and sidebands), so the
   sidebands measure what the cut does to the background shape. ``eff = 1`` keeps every event.
2. The selected events are histogrammed in m_JJ (``hist``; bin edges always include the SR edges).
3. The sideband bins (SR bins masked) are fitted with the standard dijet function

       f(m) = p0 (1 - x)^p1 / x^(p2 + p3 ln x),   x = m / sqrt(s),  sqrt(s) = 13 TeV,

   in events per GeV, integrated over each bin, by a binned Poisson likelihood (iminuit, several starting
   points, best valid minimum kept). The 3-parameter form (p3 = 0) is the default; the 4-parameter form is
   chosen only when it lowers -2 ln L by more than ``FitConfig.wilks_threshold`` (Wilks' theorem, one extra
   parameter: 3.84 ↔ p = 0.05) and its covariance is accurate (over narrow ranges the four parameters are
   degenerate). Fits that fail — invalid minimum, inaccurate covariance, goodness of fit p-value below
   ``FitConfig.gof_pvalue_min``, too little data — carry flags; they are kept and reported. A fit that rises
   anywhere gets the warning ``not_falling`` (signal in the sidebands, or a cut that sculpts m_JJ).
4. The background prediction in the SR, b, is the fitted function integrated over the SR, with its fit
   uncertainty σ_b from linear error propagation of the fit covariance (analytic derivatives).
5. The local significance of the SR excess is a profile-likelihood ratio with Poisson statistics for the
   observed SR count n and a Gaussian-constrained nuisance for b (:func:`local_significance`); one-sided,
   Z = 0 for deficits.

The sliding-window scan (:func:`scan`) repeats this for SR windows stepped across m_JJ (each with its own
sidebands and its own scores, e.g. a classifier retrained per window), and turns the largest local
significance into a global one with background-only toy spectra (look-elsewhere effect).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from radar.analysis.sculpting import DEFAULT_SCULPTING, SculptingConfig, efficiency_diagnostics

log = logging.getLogger(__name__)

SQRT_S: float = 13000.0
"""Centre-of-mass energy of the LHC Run 2 (GeV)."""

DEFAULT_EFFICIENCIES: tuple[float, ...] = (1.0, 0.1, 0.01, 0.001)
"""Default working points: fraction of SR events kept by the score cut (1 = no cut)."""

DEFAULT_FIT_RANGE: tuple[float, float] = (2800.0, 6000.0)
"""m_JJ range (GeV) of the sideband fit: above the trigger turn-on of LHCO-like samples (peak ~2.6 TeV)."""

PARAM_NAMES: tuple[str, ...] = ("ln_p0", "p1", "p2", "p3")

# Gauss-Legendre nodes for integrating the dijet function over a bin (exact to ~1e-9 for 100 GeV bins)
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(4)


# --------------------------------------------------------------------------------------------- dijet function
def dijet_function(mjj: np.ndarray, params: Sequence[float], sqrt_s: float = SQRT_S) -> np.ndarray:
    """Dijet function f(m_JJ) in events per GeV.

    mjj: (N,) GeV. params: ``(p0, p1, p2)`` or ``(p0, p1, p2, p3)`` with p0 the normalisation (events/GeV).
    Returns (N,) f = p0 (1-x)^p1 / x^(p2 + p3 ln x), x = m_JJ / sqrt_s.
    """
    p = np.zeros(4)
    p[: len(params)] = params
    if p[0] <= 0:
        raise ValueError(f"dijet function normalisation p0 must be positive, got {p[0]}")
    theta = np.array([math.log(p[0]), p[1], p[2], p[3]])
    return np.exp(_log_density(np.asarray(mjj, dtype=float), theta, sqrt_s))


def _log_density(mjj: np.ndarray, theta: np.ndarray, sqrt_s: float) -> np.ndarray:
    x = mjj / sqrt_s
    lx = np.log(x)
    return theta[0] + theta[1] * np.log1p(-x) - (theta[2] + theta[3] * lx) * lx


def _basis(mjj: np.ndarray, sqrt_s: float, x0: float | None = None) -> np.ndarray:
    """d ln f / d theta, shape (4, *mjj.shape).

    x0 None: theta = (ln p0, p1, p2, p3) of the standard form. x0 given: the fit's centred form
    ln f = t0 + t1 [ln(1-x) - ln(1-x0)] - t2 L - t3 L^2, L = ln(x/x0), the same function family with far
    smaller parameter correlations (see :func:`_to_standard`).
    """
    x = mjj / sqrt_s
    lx = np.log(x)
    l1x = np.log1p(-x)
    if x0 is not None:
        lx = lx - math.log(x0)
        l1x = l1x - math.log1p(-x0)
    return np.stack([np.ones_like(x), l1x, -lx, -lx * lx])


def _to_standard(t: np.ndarray, x0: float) -> tuple[np.ndarray, np.ndarray]:
    """Centred parameters t (see :func:`_basis`) -> standard (ln p0, p1, p2[, p3]) and the linear map A
    (theta = A t + const), so that cov_theta = A cov_t A^T."""
    k = len(t)
    l0, c1 = math.log(x0), math.log1p(-x0)
    a = np.eye(k)
    if k == 4:
        a[2, 3] = -2.0 * l0  # p2 = t2 - 2 t3 l0
    # ln p0 = t0 - t1 c1 + p2 l0 + p3 l0^2
    a[0, :] = 0.0
    a[0, 0] = 1.0
    a[0, 1] = -c1
    a[0, :] += l0 * a[2, :]
    if k == 4:
        a[0, 3] += l0 * l0
    return a @ np.asarray(t, dtype=float), a


def _from_standard(theta: np.ndarray, x0: float) -> np.ndarray:
    """Inverse of :func:`_to_standard`."""
    _, a = _to_standard(np.zeros(len(theta)), x0)
    return np.linalg.solve(a, np.asarray(theta, dtype=float))


class _BinIntegrator:
    """Integrates the dijet function (and its parameter derivatives) over fixed bins by Gauss-Legendre."""

    def __init__(self, edges: np.ndarray, sqrt_s: float, x0: float | None = None) -> None:
        lo, hi = edges[:-1], edges[1:]
        half = 0.5 * (hi - lo)
        self.nodes = (0.5 * (hi + lo))[:, None] + half[:, None] * _GL_NODES[None, :]  # (nbins, 4)
        self.weights = half[:, None] * _GL_WEIGHTS[None, :]
        self.sqrt_s = sqrt_s
        self.basis = _basis(self.nodes, sqrt_s, x0)  # (4, nbins, 4)

    def expected(self, theta: np.ndarray) -> np.ndarray:
        """(nbins,) expected counts."""
        full = np.zeros(4)
        full[: len(theta)] = theta
        with np.errstate(over="ignore", invalid="ignore"):
            dens = np.exp(np.einsum("k,kbn->bn", full, self.basis))
        return (dens * self.weights).sum(axis=1)

    def jacobian(self, theta: np.ndarray) -> np.ndarray:
        """(nbins, len(theta)) derivatives of the expected counts w.r.t. theta."""
        full = np.zeros(4)
        full[: len(theta)] = theta
        with np.errstate(over="ignore", invalid="ignore"):
            dens = np.exp(np.einsum("k,kbn->bn", full, self.basis)) * self.weights
        return np.einsum("bn,kbn->bk", dens, self.basis[: len(theta)])


class _MaskedIntegrator(_BinIntegrator):
    """Bin integrator restricted to a subset of bins (the sidebands)."""

    def __init__(self, edges: np.ndarray, keep: np.ndarray, sqrt_s: float, x0: float | None = None) -> None:
        super().__init__(edges, sqrt_s, x0)
        self.nodes = self.nodes[keep]
        self.weights = self.weights[keep]
        self.basis = self.basis[:, keep]


# ---------------------------------------------------------------------------------------------------- fitting
@dataclass(frozen=True)
class FitConfig:
    """How the sideband fit is done and judged.

    n_params: 3 or 4 forces that function; None chooses by the likelihood-ratio (Wilks) criterion.
    wilks_threshold: the 4-parameter function is used only if it lowers -2 ln L by more than this
        (3.84 = the 95 % quantile of a chi2 with one degree of freedom).
    gof_pvalue_min: a fit whose deviance/ndf goodness-of-fit p-value is below this is flagged ``bad_gof``.
    min_events: sideband fits with fewer selected events are flagged ``insufficient_data``.
    require_falling: warn ``not_falling`` when the fitted spectrum (events/GeV) rises anywhere in the fit
        range: QCD spectra above the trigger turn-on fall, so a rising fit follows signal leaking into
        the sidebands, a score cut that sculpts m_JJ, or too few events. A warning, not a failure flag:
        the fit itself converged (see ``DijetFit.warnings``).
    sqrt_s: centre-of-mass energy (GeV) in x = m_JJ / sqrt_s.
    """

    n_params: int | None = None
    wilks_threshold: float = 3.84
    gof_pvalue_min: float = 1e-3
    min_events: float = 10.0
    sqrt_s: float = SQRT_S
    require_falling: bool = True

    def __post_init__(self) -> None:
        if self.n_params not in (None, 3, 4):
            raise ValueError(f"FitConfig.n_params must be 3, 4 or None, got {self.n_params}")


# starting shapes (p1, p2) that bracket QCD-like spectra; the normalisation is set analytically
_START_SHAPES: tuple[tuple[float, float], ...] = (
    (10.0, 5.0),
    (5.0, 6.0),
    (20.0, 4.0),
    (2.0, 8.0),
    (30.0, 2.0),
    (0.0, 10.0),
    (15.0, 7.0),
    (40.0, 0.0),
)
_START_P3: tuple[float, ...] = (0.0, 0.5, -0.5, 2.0, -2.0)


@dataclass
class DijetFit:
    """A sideband fit of the dijet function.

    theta: fitted parameters (ln p0, p1, p2[, p3]); covariance: their covariance (n_params × n_params).
    deviance: -2 ln(L / L_saturated) over the fitted bins (a chi2-like goodness of fit), ndf its degrees
    of freedom, gof_pvalue = chi2.sf(deviance, ndf). flags: failures (empty when the fit is usable);
    warnings: diagnostics that do not make the fit unusable (``not_falling``).
    alternatives: deviance and validity of every function tried; choice: why this one was kept.
    """

    n_params: int
    theta: np.ndarray
    covariance: np.ndarray
    deviance: float
    ndf: int
    gof_pvalue: float
    valid: bool
    accurate_covariance: bool
    flags: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    alternatives: dict[str, dict[str, Any]] = field(default_factory=dict)
    choice: str = ""
    sqrt_s: float = SQRT_S

    @property
    def ok(self) -> bool:
        """True when no failure flag is set."""
        return not self.flags

    @property
    def params(self) -> np.ndarray:
        """(p0, p1, p2[, p3]) with p0 in events per GeV."""
        out = np.array(self.theta, dtype=float)
        with np.errstate(over="ignore"):
            out[0] = np.exp(out[0]) if np.isfinite(out[0]) else np.nan
        return out

    def expected(self, edges: np.ndarray) -> np.ndarray:
        """(nbins,) expected counts in the bins with these ``edges`` (GeV)."""
        return _BinIntegrator(np.asarray(edges, dtype=float), self.sqrt_s).expected(self.theta)

    def expected_with_covariance(self, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Expected counts (nbins,) and their covariance (nbins, nbins) from the fit covariance."""
        integ = _BinIntegrator(np.asarray(edges, dtype=float), self.sqrt_s)
        jac = integ.jacobian(self.theta)
        return integ.expected(self.theta), jac @ self.covariance @ jac.T

    def to_dict(self) -> dict[str, Any]:
        return {
            "function": f"dijet{self.n_params}",
            "n_params": self.n_params,
            "param_names": list(PARAM_NAMES[: self.n_params]),
            "theta": self.theta.tolist(),
            "params": self.params.tolist(),
            "covariance": self.covariance.tolist(),
            "deviance": self.deviance,
            "ndf": self.ndf,
            "chi2_ndf": self.deviance / self.ndf if self.ndf > 0 else float("nan"),
            "gof_pvalue": self.gof_pvalue,
            "valid": self.valid,
            "accurate_covariance": self.accurate_covariance,
            "ok": self.ok,
            "flags": list(self.flags),
            "warnings": list(self.warnings),
            "alternatives": self.alternatives,
            "choice": self.choice,
            "sqrt_s": self.sqrt_s,
        }


def _deviance_terms(counts: np.ndarray, mu: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        log_term = np.where(counts > 0, counts * np.log(np.where(counts > 0, counts, 1.0) / mu), 0.0)
    return 2.0 * (mu - counts + log_term)


def _fit_one(
    counts: np.ndarray, integ: _BinIntegrator, n_params: int, starts: Sequence[np.ndarray]
) -> tuple[Any, list[dict[str, Any]]]:
    """Minimise the binned Poisson deviance from each start; return the best Minuit and a log of tries."""
    from iminuit import Minuit

    total = counts.sum()

    def cost(theta: np.ndarray) -> float:
        mu = integ.expected(theta)
        if not np.all(np.isfinite(mu)) or np.any(mu <= 0):
            return 1e30
        return float(_deviance_terms(counts, mu).sum())

    def grad(theta: np.ndarray) -> np.ndarray:
        mu = integ.expected(theta)
        jac = integ.jacobian(theta)
        with np.errstate(divide="ignore", invalid="ignore"):
            g = 2.0 * ((1.0 - counts / mu)[:, None] * jac).sum(axis=0)
        return np.where(np.isfinite(g), g, 0.0)

    best, tries = None, []
    for start in starts:
        theta0 = np.zeros(n_params)
        theta0[: min(len(start), n_params)] = np.asarray(start, dtype=float)[:n_params]
        shape = integ.expected(np.concatenate([[0.0], theta0[1:]]))
        if total <= 0 or not np.all(np.isfinite(shape)) or shape.sum() <= 0:
            continue
        theta0[0] = math.log(total / shape.sum())  # analytic normalisation for this shape
        minuit = Minuit(cost, theta0, grad=grad, name=PARAM_NAMES[:n_params])
        minuit.errordef = Minuit.LEAST_SQUARES  # the cost is -2 ln L
        minuit.strategy = 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            minuit.migrad(ncall=5000)
            if minuit.valid:
                minuit.hesse()
        tries.append({"start": theta0.tolist(), "fval": float(minuit.fval), "valid": bool(minuit.valid)})
        if best is None or (minuit.valid, -minuit.fval) > (best.valid, -best.fval):
            best = minuit
        # enough starts once three valid ones agree on the best minimum (saves time on easy spectra;
        # hard ones run through every start)
        agree = [t for t in tries if t["valid"] and t["fval"] - best.fval < 1e-3]
        if best.valid and len(agree) >= 3:
            break
    return best, tries


def fit_sidebands(
    counts: np.ndarray,
    edges: np.ndarray,
    mask: np.ndarray | None = None,
    config: FitConfig = FitConfig(),
    starts: Sequence[Sequence[float]] | None = None,
) -> DijetFit:
    """Fit the dijet function to a binned m_JJ spectrum, ignoring masked (signal-region) bins.

    counts: (nbins,) events per bin (weighted sums are accepted; the likelihood treats them as Poisson).
    edges: (nbins+1,) GeV. mask: (nbins,) bool, True for bins to *exclude* (the SR); None fits every bin.
    starts: optional starting vectors in the standard form (ln p0, p1, p2[, p3]) (ln p0 is ignored: the
    normalisation is set analytically per start); default: a grid of QCD-like shapes.
    Returns a :class:`DijetFit`; failures are flagged in ``fit.flags``, never raised.
    """
    counts = np.asarray(counts, dtype=float)
    edges = np.asarray(edges, dtype=float)
    if edges.shape != (counts.size + 1,):
        raise ValueError(f"fit_sidebands: {counts.size} bins need {counts.size + 1} edges, got {edges.size}")
    if np.any(np.diff(edges) <= 0) or edges[0] <= 0 or edges[-1] >= config.sqrt_s:
        raise ValueError(f"fit_sidebands: edges must increase within (0, sqrt_s={config.sqrt_s}) GeV")
    fit_bins = np.ones(counts.size, bool) if mask is None else ~np.asarray(mask, bool)
    # integrate every bin on the contiguous edges, then keep the fitted ones; the fit runs in the centred
    # parameterisation around the middle of the range (x0), reported in the standard one
    x0 = math.sqrt(edges[0] * edges[-1]) / config.sqrt_s
    integ = _MaskedIntegrator(edges, fit_bins, config.sqrt_s, x0)
    y = counts[fit_bins]

    def centred(start: Sequence[float], n_params: int) -> np.ndarray:
        theta = np.zeros(n_params)
        given = np.asarray(start, dtype=float)[:n_params]
        theta[: given.size] = np.where(np.isfinite(given), given, 0.0)
        return _from_standard(theta, x0)

    def grid(n_params: int) -> list[np.ndarray]:
        if n_params == 3:
            return [centred((0.0, a, b), 3) for a, b in _START_SHAPES]
        return [centred((0.0, a, b, c), 4) for (a, b) in _START_SHAPES[:4] for c in _START_P3[:3]]

    choices = [config.n_params] if config.n_params else [3, 4]
    fits: dict[int, tuple[Any, list]] = {}
    for n_params in choices:
        these = [centred(s, n_params) for s in starts] if starts is not None else grid(n_params)
        if n_params == 4 and 3 in fits and fits[3][0] is not None:
            these.insert(0, np.r_[np.asarray(fits[3][0].values), 0.0])  # exact in the centred form
        minuit, tries = _fit_one(y, integ, n_params, these)
        if starts is not None and (minuit is None or not minuit.valid):
            # the given starts failed: fall back to the full grid rather than report a failure
            minuit, more = _fit_one(y, integ, n_params, grid(n_params))
            tries = tries + more
        fits[n_params] = (minuit, tries)

    alternatives = {}
    for n_params, (minuit, tries) in fits.items():
        ndf = int(y.size - n_params)
        alternatives[f"dijet{n_params}"] = {
            "deviance": float(minuit.fval) if minuit is not None else float("nan"),
            "valid": bool(minuit.valid) if minuit is not None else False,
            "accurate_covariance": bool(
                minuit is not None and minuit.valid and minuit.fmin.has_accurate_covar
            ),
            "ndf": ndf,
            "n_starts": len(tries),
        }

    def usable(n: int, accurate: bool = False) -> bool:
        ok = n in fits and fits[n][0] is not None and fits[n][0].valid
        return ok and (not accurate or fits[n][0].fmin.has_accurate_covar)

    if config.n_params:
        chosen, choice = config.n_params, f"forced dijet{config.n_params}"
    elif usable(3) and usable(4, accurate=True):
        delta = fits[3][0].fval - fits[4][0].fval
        chosen = 4 if delta > config.wilks_threshold else 3
        choice = (
            f"Wilks: -2 ln L(3) - (-2 ln L(4)) = {delta:.2f} "
            f"{'>' if chosen == 4 else '<='} {config.wilks_threshold}"
        )
    elif usable(3):
        # a valid dijet4 minimum whose covariance is not accurate has (near-)degenerate parameters: over a
        # narrow range p1 ln(1-x) and the ln x polynomial are almost collinear; the fourth parameter is
        # then not determined by the data
        chosen = 3
        choice = (
            "dijet4 degenerate (inaccurate covariance); dijet3 kept" if usable(4) else "no valid dijet4 fit"
        )
    elif usable(4):
        chosen, choice = 4, "dijet3 fit invalid; dijet4 valid"
    else:
        chosen, choice = 3, "no valid fit"

    minuit = fits[chosen][0]
    flags: list[str] = []
    warnings_: list[str] = []
    ndf = int(y.size - chosen)
    if y.sum() < config.min_events or ndf < 1:
        flags.append("insufficient_data")
    if minuit is None:
        flags.append("invalid_minimum")
        theta = np.full(chosen, np.nan)
        cov = np.full((chosen, chosen), np.nan)
        deviance, valid, accurate = float("nan"), False, False
    else:
        theta, jac = _to_standard(np.asarray(minuit.values, float), x0)
        valid, deviance = bool(minuit.valid), float(minuit.fval)
        accurate = bool(valid and minuit.covariance is not None and minuit.fmin.has_accurate_covar)
        cov = (
            jac @ np.asarray(minuit.covariance, float) @ jac.T
            if minuit.covariance is not None
            else np.full((chosen, chosen), np.nan)
        )
        if not valid:
            flags.append("invalid_minimum")
        elif not accurate:
            flags.append("inaccurate_covariance")
    if config.require_falling and np.all(np.isfinite(theta)):
        grid = np.linspace(edges[0], edges[-1], 200)
        with np.errstate(over="ignore", invalid="ignore"):
            log_density = _log_density(grid, np.r_[theta, np.zeros(4 - theta.size)], config.sqrt_s)
        if np.any(np.diff(log_density) > 1e-3):
            warnings_.append("not_falling")
    gof = float(stats.chi2.sf(deviance, ndf)) if ndf > 0 and np.isfinite(deviance) else float("nan")
    if np.isfinite(gof) and gof < config.gof_pvalue_min:
        flags.append("bad_gof")
    fit = DijetFit(
        n_params=chosen,
        theta=theta,
        covariance=cov,
        deviance=deviance,
        ndf=ndf,
        gof_pvalue=gof,
        valid=valid,
        accurate_covariance=accurate,
        flags=flags,
        warnings=warnings_,
        alternatives=alternatives,
        choice=choice,
        sqrt_s=config.sqrt_s,
    )
    if warnings_ and not flags:
        log.info("dijet fit over %.0f-%.0f GeV: %s (%s)", edges[0], edges[-1], warnings_, choice)
    if flags:
        log.warning(
            "dijet fit over %d sideband bins (%.0f events, %.0f-%.0f GeV) flagged %s (%s)",
            y.size,
            y.sum(),
            edges[0],
            edges[-1],
            flags,
            choice,
        )
    return fit


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


# --------------------------------------------------------------------------------------------- binning, cuts
def mass_bin_edges(
    fit_range: tuple[float, float], signal_region: tuple[float, float], bin_width: float = 100.0
) -> np.ndarray:
    """Bin edges (GeV) of width ``bin_width`` covering ``fit_range`` that contain both SR edges.

    Sidebands are tiled outwards from the SR edges (a partial bin at either end of the range is dropped);
    the SR is split into round(width / bin_width) equal bins. Returns (nbins+1,) increasing edges.
    """
    lo, hi = map(float, fit_range)
    sr_lo, sr_hi = map(float, signal_region)
    if not (lo <= sr_lo < sr_hi <= hi):
        raise ValueError(f"signal region {signal_region} GeV must lie inside the fit range {fit_range} GeV")
    if bin_width <= 0:
        raise ValueError(f"bin_width must be positive (GeV), got {bin_width}")
    n_left = int(math.floor((sr_lo - lo) / bin_width + 1e-9))
    n_right = int(math.floor((hi - sr_hi) / bin_width + 1e-9))
    n_sr = max(1, round((sr_hi - sr_lo) / bin_width))
    left = sr_lo - bin_width * np.arange(n_left, 0, -1)
    right = sr_hi + bin_width * np.arange(1, n_right + 1)
    return np.concatenate([left, np.linspace(sr_lo, sr_hi, n_sr + 1), right])


TURN_ON_MARGIN: float = 200.0
"""GeV between the peak of the m_JJ spectrum (the end of the trigger turn-on) and the start of the fit."""

MIN_SIDEBAND: float = 300.0
"""Shortest sideband (GeV) on either side of the SR inside the fit range; shorter ones are refused."""


def auto_fit_range(
    mjj: np.ndarray,
    signal_region: tuple[float, float],
    bin_width: float = 100.0,
    margin: float = TURN_ON_MARGIN,
) -> tuple[float, float]:
    """The fit range that the data allow (GeV): from the bin after the peak of the m_JJ spectrum (where it
    starts to fall: above the trigger turn-on, whose rising and bending edge the dijet function cannot
    describe) plus ``margin``, to the upper edge of the last occupied bin. Bin edges lie on
    the grid of the SR edges; a spectrum that falls from its first whole bin on (turn-on cut away) is fitted
    from there. mjj (N,) GeV of all events (no cut)."""
    mjj = np.asarray(mjj, dtype=float)
    mjj = mjj[np.isfinite(mjj)]
    if mjj.size == 0:
        raise ValueError("auto_fit_range: no events with a finite m_JJ")
    sr_lo = float(signal_region[0])
    lo = sr_lo - bin_width * math.ceil((sr_lo - mjj.min()) / bin_width)
    hi = sr_lo + bin_width * math.ceil((mjj.max() - sr_lo) / bin_width + 1e-9)
    edges = np.arange(lo, hi + 0.5 * bin_width, bin_width)
    counts = np.histogram(mjj, edges)[0].astype(float)
    first_full = 0 if mjj.min() - edges[0] < 1e-6 * bin_width else 1  # the first bin may be cut by the range
    # a 3-bin running mean: one noisy bin does not move the peak
    whole = counts[first_full:]
    smooth = np.convolve(np.pad(whole, 1, mode="edge"), np.ones(3) / 3, mode="valid")
    peak = int(np.argmax(smooth)) + first_full
    if peak == first_full:  # falling from the first whole bin on: no turn-on inside the data
        start = float(edges[first_full])
    else:
        start = float(edges[peak + 1]) + bin_width * math.ceil(margin / bin_width - 1e-9)
    top = float(edges[np.flatnonzero(counts)[-1] + 1])
    log.info("fit range from the data: spectrum peaks at %.0f-%.0f GeV; fit %.0f-%.0f GeV",
             edges[peak], edges[peak + 1], start, top)
    return float(start), top


def resolve_fit_range(
    mjj: np.ndarray,
    signal_region: tuple[float, float],
    fit_range: Sequence[float] | None = None,
    bin_width: float = 100.0,
) -> tuple[float, float]:
    """The fit range of a bump hunt on scored events ``mjj`` (N,) GeV: ``fit_range`` clipped to the events'
    m_JJ range (a scores file covers the search's range only: beyond it the spectrum is empty, not falling),
    or, when None, the range the data allow (:func:`auto_fit_range`)."""
    mjj = np.asarray(mjj, dtype=float)
    if fit_range is None:
        return auto_fit_range(mjj, signal_region, bin_width)
    lo, hi = map(float, fit_range)
    top = float(np.ceil(np.nanmax(mjj) / bin_width) * bin_width)
    clipped = (max(lo, float(np.nanmin(mjj))), min(hi, top))
    if clipped != (lo, hi):
        log.info("fit range %.0f-%.0f GeV clipped to the scored events' m_JJ range: %.0f-%.0f GeV", lo, hi, *clipped)
    return clipped


def check_sidebands(fit_range: tuple[float, float], signal_region: tuple[float, float],
                    min_sideband: float = MIN_SIDEBAND) -> None:
    """Refuse an SR whose sideband on either side inside ``fit_range`` is shorter than ``min_sideband`` GeV:
    the fit would extrapolate into the SR instead of interpolating (next to the trigger turn-on, the dijet
    function then over-predicts or under-predicts by several σ)."""
    lower, upper = signal_region[0] - fit_range[0], fit_range[1] - signal_region[1]
    if min(lower, upper) < min_sideband:
        raise ValueError(
            f"signal region {signal_region[0]:.0f}-{signal_region[1]:.0f} GeV leaves {lower:.0f} GeV of lower and "
            f"{upper:.0f} GeV of upper sideband inside the fit range {fit_range[0]:.0f}-{fit_range[1]:.0f} GeV "
            f"(minimum {min_sideband:.0f} GeV); the fit starts above the trigger turn-on: choose an SR from "
            f"{fit_range[0] + min_sideband:.0f} GeV on, or set the fit range / minimum sideband explicitly"
        )


def score_threshold(score_sr: np.ndarray, efficiency: float) -> float:
    """Score cut keeping the top ``efficiency`` fraction of SR events (events pass with score > cut).

    score_sr: (N_SR,) scores of SR events (finite). efficiency in (0, 1]; 1 returns -inf (no cut).
    """
    if not 0 < efficiency <= 1:
        raise ValueError(f"working point efficiency must be in (0, 1], got {efficiency}")
    if efficiency >= 1:
        return -math.inf
    score_sr = np.asarray(score_sr, dtype=float)
    if score_sr.size == 0:
        raise ValueError("no signal-region events to define a score threshold on")
    if not np.all(np.isfinite(score_sr)):
        raise ValueError(f"{np.sum(~np.isfinite(score_sr))} signal-region events have a non-finite score")
    return float(np.quantile(score_sr, 1.0 - efficiency))


def score_cut(score: np.ndarray, in_fit: np.ndarray, in_sr: np.ndarray, efficiency: float, where: str, *,
              empty_sr_selects_nothing: bool = False) -> tuple[np.ndarray, float]:
    """Events kept by a working point: ``in_fit`` events with score above the cut that keeps ``efficiency``
    of the SR events. Returns (selected mask, threshold). Every event in the fit range must have a finite
    score (``where`` names the spectrum in the error). With no SR events the cut is undefined: an error,
    or (``empty_sr_selects_nothing``, for scan windows) nothing is selected and the fit is flagged later.
    """
    if efficiency >= 1:
        return in_fit, score_threshold(score[in_sr], efficiency)
    bad = in_fit & ~np.isfinite(score)
    if bad.any():
        raise ValueError(f"{where}: {int(bad.sum())} events inside the fit range have a non-finite score; the bump "
                         "hunt needs every event (sidebands too) scored")
    if not in_sr.any() and empty_sr_selects_nothing:
        log.warning("%s holds no signal-region events: nothing selected", where)
        return np.zeros_like(in_fit), math.inf
    threshold = score_threshold(score[in_sr], efficiency)
    return in_fit & (score > threshold), threshold


def mjj_histogram(mjj: np.ndarray, edges: np.ndarray, weight: np.ndarray | None = None):
    """A ``hist.Hist`` of m_JJ (GeV) with Weight storage on the given edges."""
    import hist

    h = hist.Hist(
        hist.axis.Variable(edges, name="mjj", label=r"$m_{JJ}$ [GeV]"), storage=hist.storage.Weight()
    )
    h.fill(mjj=np.asarray(mjj, dtype=float), weight=weight if weight is None else np.asarray(weight, float))
    return h


# ---------------------------------------------------------------------------------------------- working points
@dataclass
class WorkingPoint:
    """The bump hunt at one score cut.

    efficiency: target fraction of SR events kept; threshold: the score cut (score > threshold).
    edges (nbins+1,) GeV, counts (nbins,) selected events, sr_mask (nbins,) bins in the SR,
    expected (nbins,) fitted/predicted background, expected_err (nbins,) its fit uncertainty,
    pulls (nbins,) (counts - expected) / sqrt(expected).
    n_obs: selected SR events; b, sigma_b: predicted SR background and its fit uncertainty;
    z_local, p_local: one-sided local significance (:func:`local_significance`).
    truth: counts of true signal/background in the SR after the cut (when labels are known).
    histogram: the ``hist.Hist`` of selected events (not serialised).
    """

    efficiency: float
    threshold: float
    edges: np.ndarray
    counts: np.ndarray
    sr_mask: np.ndarray
    fit: DijetFit
    expected: np.ndarray
    expected_err: np.ndarray
    pulls: np.ndarray
    n_obs: float
    b: float
    sigma_b: float
    z_local: float
    p_local: float
    n_selected: float
    truth: dict[str, Any] = field(default_factory=dict)
    signal_counts: np.ndarray | None = None
    histogram: Any = None
    #: what the cut did to the background (:func:`radar.analysis.sculpting.efficiency_diagnostics`); None: no cut
    sculpting: dict[str, Any] | None = None

    @property
    def sculpted(self) -> bool:
        return bool(self.sculpting and self.sculpting["sculpted"])

    @property
    def usable(self) -> bool:
        """A good fit of a cut that did not sculpt: the only kind that may become the headline."""
        return self.fit.ok and not self.sculpted and bool(np.isfinite(self.z_local))

    def to_dict(self) -> dict[str, Any]:
        return {
            "efficiency": self.efficiency,
            "threshold": self.threshold,
            "edges": self.edges.tolist(),
            "counts": self.counts.tolist(),
            "sr_mask": self.sr_mask.tolist(),
            "expected": self.expected.tolist(),
            "expected_err": self.expected_err.tolist(),
            "pulls": self.pulls.tolist(),
            "fit": self.fit.to_dict(),
            "n_obs": self.n_obs,
            "b": self.b,
            "sigma_b": self.sigma_b,
            "z_local": self.z_local,
            "p_local": self.p_local,
            "n_selected": self.n_selected,
            "fit_ok": self.fit.ok,
            "usable": self.usable,
            "flags": list(self.fit.flags) + (["sculpted"] if self.sculpted else []),
            "sculpting": self.sculpting,
            "truth": self.truth,
            "signal_counts": None if self.signal_counts is None else self.signal_counts.tolist(),
        }


def hunt_spectrum(
    counts: np.ndarray,
    edges: np.ndarray,
    signal_region: tuple[float, float],
    config: FitConfig = FitConfig(),
    starts: Sequence[Sequence[float]] | None = None,
) -> tuple[DijetFit, dict[str, Any]]:
    """Fit the sidebands of one binned spectrum and evaluate the SR: the core of every working point.

    counts (nbins,), edges (nbins+1,) GeV; the SR edges must be bin edges. Returns the fit and a dict with
    sr_mask, expected, expected_err, pulls, n_obs, b, sigma_b, z_local, p_local.
    """
    counts = np.asarray(counts, dtype=float)
    edges = np.asarray(edges, dtype=float)
    sr_mask = _sr_bins(edges, signal_region)
    fit = fit_sidebands(counts, edges, sr_mask, config, starts=starts)
    if np.all(np.isfinite(fit.theta)):
        expected, cov = fit.expected_with_covariance(edges)
        cov = np.where(np.isfinite(cov), cov, 0.0)
        b = float(expected[sr_mask].sum())
        sigma_b = float(math.sqrt(max(cov[np.ix_(sr_mask, sr_mask)].sum(), 0.0)))
        expected_err = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    else:
        expected = np.full(counts.size, np.nan)
        expected_err = np.full(counts.size, np.nan)
        b, sigma_b = float("nan"), float("nan")
    n_obs = float(counts[sr_mask].sum())
    if np.isfinite(b):
        z, p, _ = local_significance(n_obs, b, sigma_b)
        z, p = float(z), float(p)
    else:
        z, p = float("nan"), float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        pulls = np.where(expected > 0, (counts - expected) / np.sqrt(expected), 0.0)
    return fit, {
        "sr_mask": sr_mask,
        "expected": expected,
        "expected_err": expected_err,
        "pulls": pulls,
        "n_obs": n_obs,
        "b": b,
        "sigma_b": sigma_b,
        "z_local": z,
        "p_local": p,
    }


def _sr_bins(edges: np.ndarray, signal_region: tuple[float, float]) -> np.ndarray:
    sr_lo, sr_hi = map(float, signal_region)
    for edge in (sr_lo, sr_hi):
        if not np.any(np.isclose(edges, edge, rtol=0, atol=1e-6)):
            raise ValueError(f"signal-region edge {edge} GeV is not a bin edge of {edges.tolist()}")
    centres = 0.5 * (edges[:-1] + edges[1:])
    return (centres > sr_lo) & (centres < sr_hi)


@dataclass
class BumpHuntResult:
    """The bump hunt at every working point, with what was done (JSON-ready through :meth:`to_dict`)."""

    signal_region: tuple[float, float]
    fit_range: tuple[float, float]
    bin_width: float
    config: FitConfig
    working_points: list[WorkingPoint]
    n_events: int
    n_sr: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "radar.bumphunt",
            "version": 1,
            "signal_region": list(self.signal_region),
            "fit_range": list(self.fit_range),
            "bin_width": self.bin_width,
            "fit_config": asdict(self.config),
            "n_events": self.n_events,
            "n_sr": self.n_sr,
            "working_points": [wp.to_dict() for wp in self.working_points],
        }

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON, atomically."""
        from radar.processors.io import write_json

        return write_json(path, self.to_dict())

    @property
    def best(self) -> WorkingPoint | None:
        """The working point with the largest local significance among usable ones (good fit, no sculpting
        flag); None when there is none."""
        usable = [wp for wp in self.working_points if wp.usable]
        return max(usable, key=lambda wp: wp.z_local) if usable else None


def bump_hunt(
    mjj: np.ndarray,
    score: np.ndarray,
    *,
    in_sr: np.ndarray | None = None,
    signal_region: tuple[float, float] = (3300.0, 3700.0),
    efficiencies: Sequence[float] = DEFAULT_EFFICIENCIES,
    fit_range: tuple[float, float] = DEFAULT_FIT_RANGE,
    bin_width: float = 100.0,
    weight: np.ndarray | None = None,
    label: np.ndarray | None = None,
    config: FitConfig = FitConfig(),
    sculpting_config: SculptingConfig = DEFAULT_SCULPTING,
    min_sideband: float = MIN_SIDEBAND,
) -> BumpHuntResult:
    """Bump hunt at several score working points.

    mjj (N,) GeV; score (N,) anomaly score, higher = more signal-like (must be finite for events inside
    ``fit_range`` when a cut is applied); in_sr (N,) bool, the events whose score distribution defines the
    efficiencies (default: ``signal_region`` on mjj); weight (N,) optional event weights; label (N,)
    optional truth (1 signal, 0 background, -1 unknown) used only to report S and B after each cut.
    efficiencies: fractions of SR events kept (1 = no cut). Every cut also gets the efficiency per m_JJ
    bin and the sculpting tests (:mod:`radar.analysis.sculpting`); a sculpted working point is never the
    :attr:`BumpHuntResult.best`. An SR with less than ``min_sideband`` GeV of sideband on either side inside
    the fit range is refused (:func:`check_sidebands`). Returns a :class:`BumpHuntResult`.
    """
    mjj = np.asarray(mjj, dtype=float)
    score = np.asarray(score, dtype=float)
    n = mjj.size
    if score.shape != (n,):
        raise ValueError(f"bump_hunt: score has shape {score.shape}, expected ({n},) like mjj")
    sr_from_mass = (mjj >= signal_region[0]) & (mjj < signal_region[1])
    if in_sr is None:
        in_sr = sr_from_mass
    else:
        in_sr = np.asarray(in_sr, dtype=bool)
        if in_sr.shape != (n,):
            raise ValueError(f"bump_hunt: in_sr has shape {in_sr.shape}, expected ({n},)")
        disagree = int(np.sum(in_sr != sr_from_mass))
        if disagree:
            log.warning(
                "in_sr disagrees with signal region %s GeV for %d of %d events; efficiencies use "
                "in_sr, the fit masks %s",
                signal_region,
                disagree,
                n,
                signal_region,
            )
    if weight is not None:
        weight = np.asarray(weight, dtype=float)
        if weight.shape != (n,):
            raise ValueError(f"bump_hunt: weight has shape {weight.shape}, expected ({n},)")
        if not np.allclose(weight, 1.0):
            log.warning("non-unit event weights: the Poisson likelihood treats weighted sums as counts")
    check_sidebands(tuple(map(float, fit_range)), signal_region, min_sideband)
    edges = mass_bin_edges(fit_range, signal_region, bin_width)
    in_fit = (mjj >= edges[0]) & (mjj < edges[-1])

    wps = []
    for eff in efficiencies:
        selected, threshold = score_cut(score, in_fit, in_sr, eff, f"bump hunt over {edges[0]:.0f}-{edges[-1]:.0f} GeV")
        h = mjj_histogram(mjj[selected], edges, None if weight is None else weight[selected])
        counts = h.values()
        fit, sr = hunt_spectrum(counts, edges, signal_region, config)
        sculpting = None
        if eff < 1 and in_sr.any():
            sculpting = efficiency_diagnostics(mjj, score, in_sr, edges, sr["sr_mask"], threshold, eff, weight,
                                               sculpting_config)
            if sculpting["sculpted"]:
                log.warning("working point eff=%g is sculpted: %s", eff, "; ".join(sculpting["reasons"]))
        truth: dict[str, Any] = {}
        signal_counts = None
        if label is not None:
            lab = np.asarray(label)
            known = selected & (lab >= 0)
            if known.any():
                w = np.ones(n) if weight is None else weight
                sr_sel = selected & sr_from_mass
                s = float(w[sr_sel & (lab == 1)].sum())
                bkg = float(w[sr_sel & (lab == 0)].sum())
                truth = {
                    "s_sr": s,
                    "b_sr": bkg,
                    "s_over_b": s / bkg if bkg > 0 else float("nan"),
                    "s_over_sqrt_b": s / math.sqrt(bkg) if bkg > 0 else float("nan"),
                    # expected Z for a perfectly known background (Asimov), bounded where B is tiny
                    "z_asimov": math.sqrt(2 * ((s + bkg) * math.log1p(s / bkg) - s))
                    if bkg > 0
                    else float("nan"),
                }
                sig = selected & (lab == 1)
                signal_counts = np.histogram(
                    mjj[sig], bins=edges, weights=None if weight is None else weight[sig]
                )[0].astype(float)
        wp = WorkingPoint(
            efficiency=float(eff),
            threshold=float(threshold),
            edges=edges,
            counts=counts,
            fit=fit,
            n_selected=float(counts.sum()),
            truth=truth,
            signal_counts=signal_counts,
            histogram=h,
            sculpting=sculpting,
            **sr,
        )
        log.info(
            "working point eff=%g: n_SR=%.0f, b=%.1f±%.1f, Z_local=%.2f, fit %s (%s)",
            eff,
            wp.n_obs,
            wp.b,
            wp.sigma_b,
            wp.z_local,
            "ok" if fit.ok else fit.flags,
            fit.choice,
        )
        wps.append(wp)
    return BumpHuntResult(
        signal_region=tuple(map(float, signal_region)),
        fit_range=(float(edges[0]), float(edges[-1])),
        bin_width=float(bin_width),
        config=config,
        working_points=wps,
        n_events=n,
        n_sr=int(in_sr.sum()),
    )


# ------------------------------------------------------------------------------------------------------ scan
@dataclass(frozen=True)
class ScanWindow:
    """One scan window (GeV): SR [sr_low, sr_high) and the fit range around it (its sidebands).

    ``analysis.regions.Regions`` windows are accepted wherever a ScanWindow is (see :func:`as_window`).
    """

    sr_low: float
    sr_high: float
    fit_low: float
    fit_high: float

    @property
    def center(self) -> float:
        return 0.5 * (self.sr_low + self.sr_high)

    @property
    def signal_region(self) -> tuple[float, float]:
        return (self.sr_low, self.sr_high)


def as_window(window: Any, fit_range: tuple[float, float] | None = None) -> ScanWindow:
    """A :class:`ScanWindow` from a ScanWindow or an ``analysis.regions.Regions`` (SR + sidebands),
    clipped to ``fit_range`` (GeV) when given."""
    if isinstance(window, ScanWindow):
        out = window
    elif hasattr(window, "sr") and hasattr(window, "sidebands"):
        (a, _), (_, d) = window.sidebands
        out = ScanWindow(float(window.sr[0]), float(window.sr[1]), float(a), float(d))
    else:
        raise TypeError(f"cannot use {type(window).__name__} as a scan window (need ScanWindow or Regions)")
    if fit_range is not None:
        out = ScanWindow(
            out.sr_low, out.sr_high, max(out.fit_low, fit_range[0]), min(out.fit_high, fit_range[1])
        )
    return out


def sliding_windows(
    fit_range: tuple[float, float] = DEFAULT_FIT_RANGE,
    sr_width: float = 400.0,
    step: float = 200.0,
    sideband_width: float = 1000.0,
    min_sideband: float = 300.0,
) -> list[ScanWindow]:
    """SR windows of ``sr_width`` GeV stepped by ``step`` across ``fit_range``, each fitted over
    ``sideband_width`` GeV on either side (clipped to the range), with at least ``min_sideband`` GeV of
    sideband below and above. Returns windows in increasing m_JJ."""
    lo, hi = fit_range
    first = lo + min_sideband
    out = []
    k = 0
    while first + k * step + sr_width <= hi - min_sideband + 1e-9:
        a = first + k * step
        out.append(
            ScanWindow(a, a + sr_width, max(lo, a - sideband_width), min(hi, a + sr_width + sideband_width))
        )
        k += 1
    if not out:
        raise ValueError(
            f"no scan window of {sr_width} GeV fits in {fit_range} GeV with {min_sideband} GeV sidebands"
        )
    return out


@dataclass
class ScanResult:
    """Sliding-window scan at one working point.

    windows: the scan windows; per window (arrays over windows): z_local, p_local, n_obs, b, sigma_b,
    fit_ok (a good fit of a cut that did not sculpt: :mod:`radar.analysis.sculpting`), flags (the fit's, plus
    ``sculpted``), efficiency_realised (selected fraction of all events in the window's fit range),
    fits (the DijetFit per window), spectra (edges, counts, expected per window, for plots).
    max_window: index of the most significant usable window; z_max its local Z.
    toys_max_z (n_toys,) the largest local Z per background-only toy; p_global, z_global the global
    significance of z_max (look-elsewhere effect); None when no toys were run.
    """

    efficiency: float
    windows: list[ScanWindow]
    z_local: np.ndarray
    p_local: np.ndarray
    n_obs: np.ndarray
    b: np.ndarray
    sigma_b: np.ndarray
    fit_ok: np.ndarray
    flags: list[list[str]]
    efficiency_realised: np.ndarray
    fits: list[DijetFit]
    spectra: list[dict[str, list[float]]]
    max_window: int
    z_max: float
    toys_max_z: np.ndarray | None = None
    p_global: float | None = None
    z_global: float | None = None
    toy_generator: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "radar.scan",
            "version": 1,
            "efficiency": self.efficiency,
            "windows": [asdict(w) | {"center": w.center} for w in self.windows],
            "z_local": self.z_local.tolist(),
            "p_local": self.p_local.tolist(),
            "n_obs": self.n_obs.tolist(),
            "b": self.b.tolist(),
            "sigma_b": self.sigma_b.tolist(),
            "fit_ok": self.fit_ok.tolist(),
            "flags": self.flags,
            "efficiency_realised": self.efficiency_realised.tolist(),
            "fits": [f.to_dict() for f in self.fits],
            "spectra": self.spectra,
            "max_window": self.max_window,
            "z_max": self.z_max,
            "max_window_sr": list(self.windows[self.max_window].signal_region),
            "toys_max_z": None if self.toys_max_z is None else self.toys_max_z.tolist(),
            "n_toys": 0 if self.toys_max_z is None else int(self.toys_max_z.size),
            "p_global": self.p_global,
            "z_global": self.z_global,
            "toy_generator": self.toy_generator,
        }

    def save(self, path: str | Path) -> Path:
        from radar.processors.io import write_json

        return write_json(path, self.to_dict())


ScoreSource = Callable[[ScanWindow], np.ndarray] | Sequence[np.ndarray] | np.ndarray


def _window_scores(scores: ScoreSource, index: int, window: ScanWindow, n: int) -> np.ndarray:
    if callable(scores):
        out = scores(window)
    elif isinstance(scores, np.ndarray) and scores.ndim == 1:
        out = scores
    else:
        out = scores[index]
    out = np.asarray(out, dtype=float)
    if out.shape != (n,):
        raise ValueError(
            f"scan window {index} (SR {window.sr_low:.0f}-{window.sr_high:.0f} GeV): scores have "
            f"shape {out.shape}, expected ({n},) aligned with mjj"
        )
    return out


def scan(
    mjj: np.ndarray,
    scores: ScoreSource,
    windows: Sequence[Any] | None = None,
    *,
    efficiency: float = 0.01,
    bin_width: float = 100.0,
    fit_range: tuple[float, float] = DEFAULT_FIT_RANGE,
    weight: np.ndarray | None = None,
    n_toys: int = 100,
    seed: int = 0,
    config: FitConfig = FitConfig(),
    progress: bool = False,
) -> ScanResult:
    """Sliding-window bump hunt over m_JJ with the global significance from background-only toys.

    mjj (N,) GeV. scores: a callable ``score_window(window) -> (N,) scores`` (e.g. retrain a classifier
    for that window; NaN allowed outside the window's fit range), a sequence of (N,) arrays (one per
    window), or one (N,) array used for every window. windows: ScanWindow or ``analysis.regions.Regions``
    objects (default :func:`sliding_windows` over ``fit_range``); SR edges must lie on the
    ``bin_width`` grid starting at ``fit_range[0]``. efficiency: SR efficiency of each window's cut.

    Global significance: the uncut spectrum over ``fit_range`` is fitted with the dijet function (all bins);
    each toy draws Poisson counts from that fit, and for each window the selected spectrum is a binomial
    thinning of the toy with the window's realised cut efficiency (under the background-only hypothesis
    the score is independent of m_JJ — the assumption the method rests on; benchmarks/bumphunt_null.py
    checks it). Every window of every toy is refitted exactly as on data (same function choice rule, the
    data fit as starting point) and its local Z computed; windows whose toy fit is flagged do not count,
    as on data. p_global = (1 + #toys with max Z >= observed max Z) / (1 + n_toys).
    """
    mjj = np.asarray(mjj, dtype=float)
    n = mjj.size
    w_all = np.ones(n) if weight is None else np.asarray(weight, dtype=float)
    grid = fit_range[0] + bin_width * np.arange(
        int(math.floor((fit_range[1] - fit_range[0]) / bin_width + 1e-9)) + 1
    )
    windows = sliding_windows(fit_range) if windows is None else windows
    wins = [as_window(w, (grid[0], grid[-1])) for w in windows]

    def on_grid(value: float) -> int:
        idx = int(round((value - grid[0]) / bin_width))
        if idx < 0 or idx >= grid.size or abs(grid[idx] - value) > 1e-6:
            raise ValueError(
                f"scan window edge {value} GeV is not on the {bin_width} GeV grid from {grid[0]} GeV"
            )
        return idx

    rng = np.random.default_rng(seed)
    iterator = range(len(wins))
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="scan windows", unit="window")
    slices, fits, spectra, rows, eff_real, flags = [], [], [], [], [], []
    for i in iterator:
        win = wins[i]
        a, b_ = on_grid(win.sr_low), on_grid(win.sr_high)
        lo_i = int(math.ceil((win.fit_low - grid[0]) / bin_width - 1e-9))
        hi_i = int(math.floor((win.fit_high - grid[0]) / bin_width + 1e-9))
        if not lo_i <= a < b_ <= hi_i:
            raise ValueError(f"scan window {i}: SR {win.signal_region} GeV outside its fit range")
        edges = grid[lo_i : hi_i + 1]
        score = _window_scores(scores, i, win, n)
        in_fit = (mjj >= edges[0]) & (mjj < edges[-1])
        in_sr = (mjj >= win.sr_low) & (mjj < win.sr_high)
        selected, threshold = score_cut(score, in_fit, in_sr, efficiency,
                                        f"scan window {i} (SR {win.sr_low:.0f}-{win.sr_high:.0f} GeV)",
                                        empty_sr_selects_nothing=True)
        counts = np.histogram(mjj[selected], bins=edges, weights=w_all[selected])[0].astype(float)
        total = float(w_all[in_fit].sum())
        eff_real.append(float(counts.sum() / total) if total > 0 else float("nan"))
        fit, sr = hunt_spectrum(counts, edges, win.signal_region, config)
        sculpted = False
        if efficiency < 1 and in_sr.any():  # a sculpted window is never the most significant one
            sculpted = efficiency_diagnostics(mjj, score, in_sr, edges, sr["sr_mask"], threshold, efficiency,
                                              w_all)["sculpted"]
        fits.append(fit)
        flags.append(list(fit.flags) + (["sculpted"] if sculpted else []))
        slices.append((lo_i, hi_i))
        rows.append((sr["z_local"], sr["p_local"], sr["n_obs"], sr["b"], sr["sigma_b"], fit.ok and not sculpted))
        spectra.append(
            {"edges": edges.tolist(), "counts": counts.tolist(), "expected": sr["expected"].tolist()}
        )
    z, p, n_obs, b, sigma_b, ok = (np.array(col) for col in zip(*rows))
    z_usable = np.where(ok & np.isfinite(z), z, -np.inf)
    max_window = (
        int(np.argmax(z_usable))
        if np.isfinite(z_usable).any()
        else int(np.nanargmax(np.nan_to_num(z, nan=-1)))
    )
    z_max = float(z[max_window])
    result = ScanResult(
        efficiency=float(efficiency),
        windows=wins,
        z_local=z,
        p_local=p,
        n_obs=n_obs,
        b=b,
        sigma_b=sigma_b,
        fit_ok=ok.astype(bool),
        flags=flags,
        efficiency_realised=np.array(eff_real),
        fits=fits,
        spectra=spectra,
        max_window=max_window,
        z_max=z_max,
    )
    log.info(
        "scan at eff=%g: max local Z = %.2f in SR %s GeV", efficiency, z_max, wins[max_window].signal_region
    )
    if n_toys > 0:
        _scan_toys(result, mjj, w_all, grid, slices, n_toys, rng, config, progress)
    return result


def _scan_toys(
    result: ScanResult,
    mjj: np.ndarray,
    weight: np.ndarray,
    grid: np.ndarray,
    slices: list[tuple[int, int]],
    n_toys: int,
    rng: np.random.Generator,
    config: FitConfig,
    progress: bool,
) -> None:
    full = np.histogram(mjj, bins=grid, weights=weight)[0].astype(float)
    generator = fit_sidebands(full, grid, None, config)
    result.toy_generator = {"fit": generator.to_dict(), "edges": grid.tolist(), "counts": full.tolist()}
    if not np.all(np.isfinite(generator.theta)):
        log.error(
            "scan toys: the background-only fit of the full spectrum failed %s; no global significance",
            generator.flags,
        )
        return
    if not generator.ok:
        log.warning(
            "scan toys: the toy generator fit is flagged %s; the global significance is approximate",
            generator.flags,
        )
    mu = generator.expected(grid)
    max_z = np.empty(n_toys)
    iterator = range(n_toys)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="scan toys", unit="toy")
    for t in iterator:
        toy = rng.poisson(mu)
        best = -np.inf
        for k, (lo_i, hi_i) in enumerate(slices):
            eff = result.efficiency_realised[k]
            counts = toy[lo_i:hi_i].astype(float)
            if eff < 1:
                counts = rng.binomial(toy[lo_i:hi_i], min(max(eff, 0.0), 1.0)).astype(float)
            fit_k = result.fits[k]
            starts = [fit_k.theta[:3]] if np.all(np.isfinite(fit_k.theta)) else None
            fit, sr = hunt_spectrum(
                counts, grid[lo_i : hi_i + 1], result.windows[k].signal_region, config, starts
            )
            if fit.ok and np.isfinite(sr["z_local"]):
                best = max(best, sr["z_local"])
        max_z[t] = best if np.isfinite(best) else 0.0
    result.toys_max_z = max_z
    exceed = int(np.sum(max_z >= result.z_max))
    result.p_global = (1.0 + exceed) / (1.0 + n_toys)
    result.z_global = float(max(stats.norm.isf(result.p_global), 0.0))
    log.info(
        "scan global significance: %d of %d toys with max Z >= %.2f -> p_global = %.3g, Z_global = %.2f",
        exceed,
        n_toys,
        result.z_max,
        result.p_global,
        result.z_global,
    )


# ------------------------------------------------------------------------------------------------ synthetic
def sample_dijet_mjj(
    n: int,
    params: Sequence[float] = (1.0, 10.0, 5.0),
    mjj_range: tuple[float, float] = (2500.0, 7000.0),
    seed: int = 0,
    sqrt_s: float = SQRT_S,
) -> np.ndarray:
    """Draw ``n`` m_JJ values (GeV) from the dijet function shape within ``mjj_range`` (inverse CDF on a
    1 GeV grid; for tests and benchmarks). Returns (n,) GeV."""
    rng = np.random.default_rng(seed)
    grid = np.arange(mjj_range[0], mjj_range[1] + 1.0, 1.0)
    mid = 0.5 * (grid[1:] + grid[:-1])
    dens = dijet_function(mid, (1.0, *params[1:]), sqrt_s)
    cdf = np.concatenate([[0.0], np.cumsum(dens)])
    cdf /= cdf[-1]
    return np.interp(rng.random(n), cdf, grid)


def toy_dataset(
    n_background: int,
    n_signal: int = 0,
    *,
    signal_mass: float = 3500.0,
    signal_width: float = 170.0,
    signal_score_shift: float = 3.0,
    sculpting: float = 0.0,
    sculpting_kind: str = "peaked",
    params: Sequence[float] = (1.0, 10.0, 1.5),
    mjj_range: tuple[float, float] = (2500.0, 7000.0),
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """A synthetic search sample for tests and benchmarks (GeV).

    Background m_JJ follows the dijet function ``params`` in ``mjj_range``; signal m_JJ is Gaussian
    (``signal_mass``, ``signal_width``). Scores: background N(0, 1) independent of m_JJ, signal
    N(signal_score_shift, 1). ``sculpting`` > 0 correlates the background score with m_JJ:
    ``"peaked"`` adds sculpting * exp(-(m - 3500)^2 / (2 * 300^2)) (a classifier that learned m_JJ near the
    SR, which fakes a bump), ``"monotonic"`` adds sculpting * (m - 3500) / 1000 (a smooth bias the fit can
    absorb). Returns dict of (N,) arrays: mjj, score, label (1 signal / 0 background), weight.
    """
    if sculpting_kind not in ("peaked", "monotonic"):
        raise ValueError(f"sculpting_kind must be 'peaked' or 'monotonic', got {sculpting_kind!r}")
    rng = np.random.default_rng(seed)
    m_bkg = sample_dijet_mjj(n_background, params, mjj_range, seed=int(rng.integers(2**31)))
    m_sig = rng.normal(signal_mass, signal_width, n_signal)
    s_bkg = rng.normal(0.0, 1.0, n_background)
    if sculpting:
        shape = (
            np.exp(-0.5 * ((m_bkg - 3500.0) / 300.0) ** 2)
            if sculpting_kind == "peaked"
            else (m_bkg - 3500.0) / 1000.0
        )
        s_bkg = s_bkg + sculpting * shape
    s_sig = rng.normal(signal_score_shift, 1.0, n_signal)
    return {
        "mjj": np.r_[m_bkg, m_sig],
        "score": np.r_[s_bkg, s_sig],
        "label": np.r_[np.zeros(n_background), np.ones(n_signal)],
        "weight": np.ones(n_background + n_signal),
    }


def expected_counts(edges: np.ndarray, params: Sequence[float], sqrt_s: float = SQRT_S) -> np.ndarray:
    """(nbins,) integral of the dijet function with ``params`` (p0 in events/GeV, ...) over the bins."""
    p = np.zeros(4)
    p[: len(params)] = params
    theta = np.array([math.log(p[0]), p[1], p[2], p[3]])
    return _BinIntegrator(np.asarray(edges, dtype=float), sqrt_s).expected(theta)


def result_from_dict(data: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a saved bump-hunt or scan JSON (``kind`` radar.bumphunt / radar.scan) and return it."""
    kind = data.get("kind")
    if kind not in ("radar.bumphunt", "radar.scan"):
        raise ValueError(
            f"not a radar bump-hunt result (kind={kind!r}, expected radar.bumphunt or radar.scan)"
        )
    return dict(data)

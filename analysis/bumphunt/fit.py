"""The dijet function and the binned Poisson fit of the sidebands (iminuit)."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from radar.analysis.bumphunt.constants import _GL_NODES, _GL_WEIGHTS, PARAM_NAMES, SQRT_S

log = logging.getLogger(__name__)


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
    """2 (mu - n + n ln(n / mu)) per bin, written as 2 n (x - ln(1 + x)) with x = (mu - n) / n where n > 0: near
    a good fit (mu ≈ n) the direct form loses the term to rounding (error ~ n·1e-16 against a term ~ n x²/2),
    enough to make the numerical Hessian of an exact fit indefinite."""
    with np.errstate(divide="ignore", invalid="ignore"):
        n = np.where(counts > 0, counts, 1.0)
        x = (mu - n) / n
        terms = np.where(counts > 0, 2.0 * counts * (x - np.log1p(x)), 2.0 * mu)
    return terms


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

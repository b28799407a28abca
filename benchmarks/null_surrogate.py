"""A background-only surrogate of the LHCO R&D QCD background, for closure benchmarks.

A closure benchmark needs many (>= 20) statistically independent background-only datasets of >= 100k
events over m_JJ ~ 2.3-6.5 TeV; generating them with Pythia + Delphes is out of reach. The surrogate is
fitted once to real background (the peer-reclustering files, :mod:`radar.processors.features`) and then draws
any number of datasets from one fixed, smooth distribution:

- **m_JJ spectrum** (:class:`MjjSpectrum`): the 4-parameter dijet function
  f(m) = p0 (1-x)^p1 / x^(p2 + p3 ln x), x = m / 13 TeV (:func:`radar.analysis.bumphunt.dijet_function`), times a
  logistic trigger turn-on T(m) = 1 / (1 + exp(-z)), z = mu ((m/mu)^lam - 1) / (lam w): position ``mu``,
  width ``w`` (GeV) at ``mu`` and a Box-Cox exponent ``lam`` that lets the turn-on be steeper above ``mu``
  than below (a plain logistic or error function leaves +-5 sigma residuals in 50 GeV bins below 2.5 TeV
  with 70k events), while keeping T monotonic for every m. Fitted by an unbinned maximum likelihood
  (the normalisation integral by Gauss-Legendre quadrature) over :data:`FIT_RANGE`. A parametric density
  has no histogram or KDE noise, so no coherent fake bump is copied into every dataset. m_JJ is drawn by
  inverse CDF on a 1 GeV grid restricted to the requested range.
- **Features given m_JJ**: radar's conditional flow (a :class:`radar.models.templates.cathode.CathodeTemplate`,
  i.e. :class:`radar.models.flows.ConditionalFlow` with CATHODE's redraw of samples outside the training range)
  on ``mj1, delta_mj, tau21_j1, tau21_j2`` conditioned on m_JJ, trained on the same events and range.

Every dataset is an independent draw from the *same* fitted surrogate: the surrogate's own fit
fluctuations (finite training data) are common to all datasets, which is what a closure test wants (the
surrogate is the truth).

Fit, save and validate (KS distances against held-out real background per m_JJ slice, the spectrum
fit's chi2/ndf, and a classifier two-sample test of the joint distribution)::

    python benchmarks/null_surrogate.py --fit runs/null_surrogate

Use::

    surrogate = Surrogate.load("runs/null_surrogate")
    data = surrogate.draw(100_000, seed=k, mjj_range=(2300.0, 6500.0))   # feature table, label 0
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from radar.analysis.bumphunt import SQRT_S, dijet_function
from radar.processors.features import LHCO_FEATURES, conform

log = logging.getLogger(__name__)

FORMAT = "radar.NullSurrogate/1"
FIT_RANGE: tuple[float, float] = (1800.0, 7000.0)
"""m_JJ range (GeV) of the spectrum fit and of the flow's training data; draws must lie inside it."""

#: m_JJ slices (GeV) of the validation.
VALIDATION_SLICES: tuple[tuple[float, float], ...] = (
    (2300.0, 2800.0),
    (2800.0, 3300.0),
    (3300.0, 3700.0),
    (3700.0, 4500.0),
    (4500.0, 7000.0),
)

#: Flow settings of the fitted surrogate: a moderate MAF, CPU-trainable in minutes on 70k events.
DEFAULT_FLOW_KWARGS: dict[str, Any] = dict(
    kind="maf",
    n_blocks=8,
    hidden=128,
    epochs=100,
    batch_size=256,
    lr=3e-4,
    patience=15,
    n_best_epochs=5,
)

SPECTRUM_FILE = "spectrum.json"
FLOW_FILE = "flow.pt"
INFO_FILE = "surrogate.json"

_X0 = 3500.0 / SQRT_S  # centre of the fit's dijet parametrisation (small parameter correlations)
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(8)
_QUAD_STEP = 10.0  # GeV: the normalisation integral uses 8 Gauss-Legendre nodes per 10 GeV


# --------------------------------------------------------------------------------------------- m_JJ spectrum
def log_turn_on(mjj: np.ndarray, mu: float, width: float, lam: float) -> np.ndarray:
    """ln T(m_JJ) of the trigger turn-on: T = 1 / (1 + exp(-z)), z = mu ((m/mu)^lam - 1) / (lam width).

    mjj: (N,) GeV; mu, width: GeV; lam: Box-Cox exponent (lam = 1: a plain logistic, lam -> 0: logistic in
    ln m). z rises monotonically with m for any lam, with slope 1/width at m = mu. Returns (N,).
    """
    lm = np.log(np.asarray(mjj, dtype=float) / mu)
    scaled = np.expm1(lam * lm) / lam if abs(lam) > 1e-9 else lm
    return -np.logaddexp(0.0, -mu * scaled / width)


def _log_shape(mjj: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Unnormalised ln density of the fit parametrisation ``theta = (t1, t2, t3, mu, width, lam)``:
    t1 ln((1-x)/(1-x0)) - t2 L - t3 L^2 + ln T, L = ln(x/x0) (the dijet family, centred at 3.5 TeV)."""
    x = mjj / SQRT_S
    big_l = np.log(x / _X0)
    dijet = theta[0] * (np.log1p(-x) - math.log1p(-_X0)) - (theta[1] + theta[2] * big_l) * big_l
    return dijet + log_turn_on(mjj, theta[3], theta[4], theta[5])


def _quadrature(lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    n = max(1, int(math.ceil((hi - lo) / _QUAD_STEP)))
    edges = np.linspace(lo, hi, n + 1)
    half = 0.5 * np.diff(edges)[:, None]
    nodes = (half * _GL_NODES + 0.5 * (edges[1:] + edges[:-1])[:, None]).ravel()
    return nodes, (half * _GL_WEIGHTS).ravel()


@dataclasses.dataclass(frozen=True)
class MjjSpectrum:
    """Fitted m_JJ density: ``dijet_function(m, params) * exp(log_turn_on(m, *turn_on))`` in events/GeV.

    params: (p0 [events/GeV], p1, p2, p3) of :func:`radar.analysis.bumphunt.dijet_function`, with p0 such that
    the density integrates to ``n_events`` over ``fit_range``. turn_on: (mu [GeV], width [GeV], lam).
    chi2, ndf: Pearson chi2 of the fitted events in ``chi2_bin_width`` bins (tail bins merged until the
    expectation is >= 10), ndf = bins - 1 - 6 shape parameters.
    """

    params: tuple[float, float, float, float]
    turn_on: tuple[float, float, float]
    fit_range: tuple[float, float]
    n_events: int
    chi2: float = float("nan")
    ndf: int = 0
    chi2_bin_width: float = 50.0
    nll: float = float("nan")

    def density(self, mjj: np.ndarray) -> np.ndarray:
        """Events per GeV at ``mjj`` (N,) GeV; shape (N,). Only meaningful inside ``fit_range``."""
        mjj = np.asarray(mjj, dtype=float)
        return dijet_function(mjj, self.params) * np.exp(log_turn_on(mjj, *self.turn_on))

    def expected(self, edges: np.ndarray) -> np.ndarray:
        """Expected events in the bins ``edges`` (nbins + 1,) GeV; shape (nbins,)."""
        edges = np.asarray(edges, dtype=float)
        out = np.empty(len(edges) - 1)
        for k, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
            nodes, weights = _quadrature(a, b)
            out[k] = np.sum(weights * self.density(nodes))
        return out

    def check_range(self, mjj_range: Sequence[float]) -> tuple[float, float]:
        lo, hi = (float(v) for v in mjj_range)
        if not self.fit_range[0] <= lo < hi <= self.fit_range[1]:
            raise ValueError(
                f"m_JJ range ({lo}, {hi}) GeV is not inside the surrogate's fit range {self.fit_range} GeV"
            )
        return lo, hi

    def sample(
        self, n: int, rng: np.random.Generator, mjj_range: Sequence[float] | None = None
    ) -> np.ndarray:
        """``n`` m_JJ values (GeV), shape (n,), inverse CDF on a 1 GeV grid over ``mjj_range`` (default:
        the fit range); the density is taken constant within each 1 GeV step."""
        lo, hi = self.check_range(self.fit_range if mjj_range is None else mjj_range)
        grid = np.linspace(lo, hi, max(2, int(math.ceil(hi - lo))) + 1)
        mass = self.density(0.5 * (grid[1:] + grid[:-1])) * np.diff(grid)
        cdf = np.concatenate([[0.0], np.cumsum(mass)])
        return np.interp(rng.random(n), cdf / cdf[-1], grid)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT + "/spectrum", **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MjjSpectrum:
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        values["params"] = tuple(values["params"])
        values["turn_on"] = tuple(values["turn_on"])
        values["fit_range"] = tuple(values["fit_range"])
        return cls(**values)


def fit_spectrum(
    mjj: np.ndarray, fit_range: Sequence[float] = FIT_RANGE, chi2_bin_width: float = 50.0
) -> MjjSpectrum:
    """Unbinned maximum-likelihood fit of dijet function x turn-on to ``mjj`` (N,) GeV inside ``fit_range``.

    Minuit (migrad) from a few starting points, best valid minimum kept; raises RuntimeError when none is
    valid. Returns the :class:`MjjSpectrum` with its chi2/ndf (see there).
    """
    from iminuit import Minuit

    lo, hi = (float(v) for v in fit_range)
    mjj = np.asarray(mjj, dtype=float)
    mjj = mjj[(mjj >= lo) & (mjj <= hi)]
    if len(mjj) < 100:
        raise ValueError(f"fit_spectrum: {len(mjj)} events in {fit_range} GeV; need at least 100")
    nodes, weights = _quadrature(lo, hi)
    n = len(mjj)

    def nll(theta: np.ndarray) -> float:
        theta = np.asarray(theta, dtype=float)
        value = -np.sum(_log_shape(mjj, theta)) + n * math.log(
            np.sum(weights * np.exp(_log_shape(nodes, theta)))
        )
        return float(value) if np.isfinite(value) else 1e300

    nll.errordef = Minuit.LIKELIHOOD
    names = ("t1", "t2", "t3", "mu", "width", "lam")
    best = None
    for start in (
        (10.0, 8.0, 3.0, 2400.0, 60.0, 5.0),
        (5.0, 5.0, 0.0, 2450.0, 90.0, 1.0),
        (20.0, 10.0, 5.0, 2300.0, 150.0, 8.0),
    ):
        minuit = Minuit(nll, np.array(start), name=names)
        minuit.limits["mu"] = (lo - 500.0, lo + 2000.0)
        minuit.limits["width"] = (1.0, 2000.0)
        minuit.limits["lam"] = (-30.0, 30.0)
        minuit.strategy = 1
        minuit.migrad(ncall=20_000)
        minuit.migrad(ncall=20_000)  # a second pass settles the EDM of this strongly correlated fit
        log.debug("spectrum fit from %s: nll %.3f valid %s", start, minuit.fval, minuit.valid)
        if minuit.valid and (best is None or minuit.fval < best.fval):
            best = minuit
    if best is None:
        raise RuntimeError(f"fit_spectrum: no valid minimum for {n} events in {fit_range} GeV")
    theta = np.array(best.values)
    t1, t2, t3 = theta[:3]
    lx0 = math.log(_X0)
    p1, p2, p3 = float(t1), float(t2 - 2.0 * t3 * lx0), float(t3)
    unit = MjjSpectrum((1.0, p1, p2, p3), tuple(float(v) for v in theta[3:]), (lo, hi), n)
    p0 = n / float(np.sum(weights * unit.density(nodes)))
    spectrum = dataclasses.replace(unit, params=(p0, p1, p2, p3), nll=float(best.fval))
    chi2, ndf = spectrum_chi2(spectrum, mjj, chi2_bin_width, n_fitted=6)
    spectrum = dataclasses.replace(spectrum, chi2=chi2, ndf=ndf, chi2_bin_width=float(chi2_bin_width))
    log.info(
        "m_JJ spectrum fit on %d events in %s GeV: chi2/ndf = %.1f/%d, dijet %s, turn-on %s",
        n,
        fit_range,
        chi2,
        ndf,
        np.round(spectrum.params[1:], 3).tolist(),
        np.round(spectrum.turn_on, 3).tolist(),
    )
    return spectrum


def spectrum_chi2(
    spectrum: MjjSpectrum,
    mjj: np.ndarray,
    bin_width: float = 50.0,
    *,
    n_fitted: int = 0,
    min_expected: float = 10.0,
) -> tuple[float, int]:
    """Pearson chi2 of ``mjj`` (N,) GeV against ``spectrum`` scaled to the number of events in its fit range.

    Bins of ``bin_width`` GeV over the fit range; bins from the high end are merged until the merged bin
    expects >= ``min_expected``. ndf = bins - 1 (normalisation) - ``n_fitted``. Returns (chi2, ndf).
    """
    lo, hi = spectrum.fit_range
    mjj = np.asarray(mjj, dtype=float)
    mjj = mjj[(mjj >= lo) & (mjj <= hi)]
    edges = np.linspace(lo, hi, int(round((hi - lo) / bin_width)) + 1)
    expected = spectrum.expected(edges)
    expected *= len(mjj) / expected.sum()
    counts = np.histogram(mjj, edges)[0].astype(float)
    tail = expected.size
    while tail > 1 and expected[tail - 1 :].sum() < min_expected:
        tail -= 1
    exp = np.r_[expected[: tail - 1], expected[tail - 1 :].sum()]
    obs = np.r_[counts[: tail - 1], counts[tail - 1 :].sum()]
    return float(np.sum((obs - exp) ** 2 / exp)), int(len(exp) - 1 - n_fitted)


# ------------------------------------------------------------------------------------------------ surrogate
def _seeds(seed: int, n: int) -> list[int]:
    """``n`` torch seeds (< 2^63) for dataset ``seed``; distinct seeds give independent streams."""
    state = np.random.SeedSequence([int(seed), 0x5EED]).generate_state(n, dtype=np.uint64)
    return [int(s >> np.uint64(1)) for s in state]


class Surrogate:
    """The fitted surrogate: an m_JJ spectrum and a conditional density of the features given m_JJ.

    Attributes: ``spectrum`` (:class:`MjjSpectrum`), ``template`` (the fitted
    :class:`radar.models.templates.cathode.CathodeTemplate`), ``features`` (its columns), ``info`` (provenance
    and timing, saved as JSON).
    """

    def __init__(self, spectrum: MjjSpectrum, template: Any, info: dict[str, Any] | None = None) -> None:
        self.spectrum = spectrum
        self.template = template
        self.features = list(template.features)
        self.info = dict(info or {})

    @property
    def fit_range(self) -> tuple[float, float]:
        return self.spectrum.fit_range

    def draw(
        self, n: int, seed: int, mjj_range: Sequence[float] | None = None, mass_shift: float = 0.0
    ) -> pd.DataFrame:
        """One background-only dataset of ``n`` events as a feature table (GeV, label 0, weight 1).

        m_JJ from the fitted spectrum inside ``mjj_range`` (GeV; default the fit range), then
        ``mj1, delta_mj, tau21_j1, tau21_j2`` from the flow at that m_JJ; ``mj2 = mj1 + delta_mj``.
        ``mass_shift`` s (dimensionless): ``mj1 -> mj1 + s * mjj`` and ``mj2 -> mj2 + s * mjj``,
        ``delta_mj`` unchanged (the m_JJ-correlated shift test of LaCATHODE, arXiv:2210.14924).
        The same ``seed`` gives the identical table; different seeds give independent datasets.
        """
        if n < 1:
            raise ValueError(f"Surrogate.draw: n must be >= 1, got {n}")
        mass_seed, flow_seed = _seeds(seed, 2)
        mjj = self.spectrum.sample(int(n), np.random.default_rng(mass_seed), mjj_range)
        events, _ = self.template.sample(len(mjj), mjj, seed=flow_seed)
        table = events.copy()
        shift = float(mass_shift) * table["mjj"]
        table["mj1"] = table["mj1"] + shift
        table["mj2"] = table["mj1"] + table["delta_mj"]
        table["label"] = 0.0
        table["weight"] = 1.0
        return conform(table, "null surrogate")

    # -- persistence -------------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write ``spectrum.json``, ``flow.pt`` (torch, weights-only loadable) and ``surrogate.json``."""
        from radar.processors.io import atomic_output

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.template.save(directory / FLOW_FILE)
        for name, data in (
            (SPECTRUM_FILE, self.spectrum.to_dict()),
            (INFO_FILE, {"format": FORMAT, **self.info}),
        ):
            with atomic_output(directory / name) as tmp:
                Path(tmp).write_text(json.dumps(data, indent=2, default=float))
        log.info("saved null surrogate to %s", directory)
        return directory

    @classmethod
    def load(cls, directory: str | Path, device: str = "auto") -> Surrogate:
        """Read a surrogate written by :meth:`save`."""
        from radar.models.templates.cathode import CathodeTemplate

        directory = Path(directory)
        for name in (SPECTRUM_FILE, FLOW_FILE, INFO_FILE):
            if not (directory / name).exists():
                raise FileNotFoundError(f"{directory / name}: missing; not a saved null surrogate")
        info = json.loads((directory / INFO_FILE).read_text())
        if info.pop("format", None) != FORMAT:
            raise ValueError(f"{directory / INFO_FILE}: not a saved null surrogate (expected {FORMAT})")
        spectrum = MjjSpectrum.from_dict(json.loads((directory / SPECTRUM_FILE).read_text()))
        template = CathodeTemplate.load(directory / FLOW_FILE, device=device)
        return cls(spectrum, template, info)


def fit_surrogate(
    table: pd.DataFrame,
    out_dir: str | Path | None = None,
    seed: int = 0,
    *,
    fit_range: Sequence[float] = FIT_RANGE,
    features: Sequence[str] = LHCO_FEATURES,
    device: str = "auto",
    **flow_kwargs: Any,
) -> Surrogate:
    """Fit the surrogate to the background feature table ``table`` (GeV; rows outside ``fit_range`` are
    not used) and save it to ``out_dir`` when given.

    ``flow_kwargs`` override :data:`DEFAULT_FLOW_KWARGS` (:class:`radar.models.flows.ConditionalFlow` options).
    Raises ValueError if ``table`` holds signal (label 1) rows.
    """
    from radar.models.templates.cathode import CathodeTemplate

    if "label" in table.columns and (table["label"] == 1).any():
        raise ValueError(
            f"fit_surrogate: the table holds {int((table['label'] == 1).sum())} signal rows (label 1); "
            "the surrogate must be fitted to background only"
        )
    lo, hi = (float(v) for v in fit_range)
    inside = table[(table["mjj"] >= lo) & (table["mjj"] <= hi)].reset_index(drop=True)
    log.info(
        "fitting the null surrogate on %d of %d events inside %s GeV", len(inside), len(table), fit_range
    )
    start = time.perf_counter()
    spectrum = fit_spectrum(inside["mjj"].to_numpy(), (lo, hi))
    spectrum_s = time.perf_counter() - start
    kwargs = {**DEFAULT_FLOW_KWARGS, **flow_kwargs}
    template = CathodeTemplate(list(features), seed=seed, device=device, **kwargs)
    start = time.perf_counter()
    template.fit(inside)
    flow_s = time.perf_counter() - start
    history = template.flow.history
    info = {
        "n_events": len(inside),
        "seed": int(seed),
        "flow_kwargs": kwargs,
        "features": list(features),
        "spectrum_fit_s": round(spectrum_s, 2),
        "flow_training_s": round(flow_s, 1),
        "flow_epochs_run": len(history["train_loss"]),
        "flow_best_epochs": history["best_epochs"],
        "flow_best_val_loss": min(history["val_loss"]),
        "flow_device": str(template.flow.device),
    }
    log.info(
        "flow trained in %.0f s (%d epochs, best %s)", flow_s, info["flow_epochs_run"], history["best_epochs"]
    )
    surrogate = Surrogate(spectrum, template, info)
    if out_dir is not None:
        surrogate.save(out_dir)
    return surrogate


# --------------------------------------------------------------------------------------------- validation
def ks_table(
    surrogate: Surrogate,
    reference: pd.DataFrame,
    seed: int = 12345,
    slices: Sequence[tuple[float, float]] = VALIDATION_SLICES,
    draw_factor: int = 5,
    columns: Sequence[str] = ("mjj", "mj1", "mj2", "delta_mj", "tau21_j1", "tau21_j2"),
) -> pd.DataFrame:
    """Two-sample KS distances between surrogate draws and ``reference`` (real background) per m_JJ slice.

    Per slice the surrogate draws ``draw_factor`` times the reference's events in that slice (at least
    20,000) inside the slice. Returns one row per (slice, column): ``n_real``, ``n_surrogate``, ``ks``, the
    95 % statistical floor ``floor = 1.36 sqrt(1/n1 + 1/n2)``, ``ratio = ks / floor`` and the KS p-value.
    """
    from scipy import stats

    rows = []
    for k, (lo, hi) in enumerate(slices):
        hi = min(hi, surrogate.fit_range[1])
        real = reference[(reference["mjj"] >= lo) & (reference["mjj"] < hi)]
        if len(real) < 10:
            log.warning("validation slice %s GeV holds %d reference events: skipped", (lo, hi), len(real))
            continue
        drawn = surrogate.draw(max(20_000, draw_factor * len(real)), seed=seed + k, mjj_range=(lo, hi))
        for column in columns:
            result = stats.ks_2samp(real[column].to_numpy(), drawn[column].to_numpy())
            floor = 1.36 * math.sqrt(1.0 / len(real) + 1.0 / len(drawn))
            rows.append(
                {
                    "slice": f"{lo / 1000:.1f}-{hi / 1000:.1f}",
                    "column": column,
                    "n_real": len(real),
                    "n_surrogate": len(drawn),
                    "ks": result.statistic,
                    "floor": floor,
                    "ratio": result.statistic / floor,
                    "p_value": result.pvalue,
                }
            )
    return pd.DataFrame(rows)


def classifier_auc(
    surrogate: Surrogate,
    reference: pd.DataFrame,
    control: pd.DataFrame,
    mjj_range: Sequence[float] = (2300.0, 7000.0),
    seed: int = 54321,
    columns: Sequence[str] = ("mjj", *LHCO_FEATURES),
) -> tuple[float, float, int]:
    """Classifier two-sample test of the joint distribution of ``columns`` inside ``mjj_range`` (GeV).

    A gradient-boosted classifier (5-fold cross-validated predictions) separates ``reference`` (real
    background) from as many surrogate events, and, as the null, ``reference`` from as many ``control``
    events (other real background). Returns (AUC real vs surrogate, AUC real vs real, n per class); the
    statistical spread of an AUC at 0.5 is about sqrt((2n + 1) / 12) / n.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import cross_val_predict

    lo, hi = surrogate.spectrum.check_range(mjj_range)
    real = reference[(reference["mjj"] >= lo) & (reference["mjj"] <= hi)]
    other = control[(control["mjj"] >= lo) & (control["mjj"] <= hi)]
    n = min(len(real), len(other))
    real = real.sample(n, random_state=seed)
    other = other.sample(n, random_state=seed + 1)
    drawn = surrogate.draw(n, seed=seed, mjj_range=(lo, hi))
    labels = np.r_[np.zeros(n), np.ones(n)]
    aucs = []
    for second in (drawn, other):
        features = np.r_[real[list(columns)].to_numpy(), second[list(columns)].to_numpy()]
        classifier = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, random_state=seed)
        score = cross_val_predict(classifier, features, labels, cv=5, method="predict_proba")[:, 1]
        aucs.append(float(roc_auc_score(labels, score)))
    return aucs[0], aucs[1], n


def split_background(
    table: pd.DataFrame, fraction: float = 0.8, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Random (fit, held-out) split of the background rows (label 0) of ``table``."""
    background = table[table["label"] == 0].reset_index(drop=True)
    order = np.random.default_rng(seed).permutation(len(background))
    n_fit = int(round(fraction * len(background)))
    return (
        background.iloc[np.sort(order[:n_fit])].reset_index(drop=True),
        background.iloc[np.sort(order[n_fit:])].reset_index(drop=True),
    )


def main(argv: Sequence[str] | None = None) -> int:
    from radar.processors.features import read_feature_table

    default_data = (
        Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lhco" / "peer_reclustering"
    )
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fit", type=Path, metavar="OUTDIR", help="fit the surrogate and save it to OUTDIR")
    parser.add_argument("--validate", type=Path, metavar="DIR", help="validate an already saved surrogate")
    parser.add_argument("--data", type=Path, default=default_data, help="peer-reclustering directory")
    parser.add_argument("--seed", type=int, default=0, help="split and training seed")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--epochs", type=int, default=DEFAULT_FLOW_KWARGS["epochs"])
    args = parser.parse_args(argv)
    if (args.fit is None) == (args.validate is None):
        parser.error("give exactly one of --fit OUTDIR or --validate DIR")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    import torch

    torch.set_num_threads(args.threads)
    table = read_feature_table(args.data)
    fit_part, heldout = split_background(table, 0.8, seed=args.seed)
    if args.fit is not None:
        surrogate = fit_surrogate(fit_part, args.fit, seed=args.seed, device=args.device, epochs=args.epochs)
        out = args.fit
    else:
        surrogate = Surrogate.load(args.validate, device=args.device)
        out = args.validate
    spectrum = surrogate.spectrum
    chi2_held, ndf_held = spectrum_chi2(spectrum, heldout["mjj"].to_numpy(), spectrum.chi2_bin_width)
    ks = ks_table(surrogate, heldout)
    ks.to_csv(out / "validation_ks.csv", index=False)
    auc, auc_null, n_auc = classifier_auc(surrogate, heldout, fit_part)
    (out / "validation.json").write_text(
        json.dumps(
            {
                "spectrum_chi2": spectrum.chi2,
                "spectrum_ndf": spectrum.ndf,
                "heldout_chi2": chi2_held,
                "heldout_ndf": ndf_held,
                "n_fit": len(fit_part),
                "n_heldout": len(heldout),
                "classifier_auc": auc,
                "classifier_auc_real_vs_real": auc_null,
                "classifier_n_per_class": n_auc,
                **surrogate.info,
            },
            indent=2,
            default=float,
        )
    )
    print(
        f"spectrum fit ({spectrum.n_events} events, {spectrum.fit_range} GeV, {spectrum.chi2_bin_width:.0f} GeV "
        f"bins): chi2/ndf = {spectrum.chi2:.1f}/{spectrum.ndf}; held-out 20 %: {chi2_held:.1f}/{ndf_held}"
    )
    print(
        f"dijet p0..p3 = {', '.join(f'{v:.5g}' for v in spectrum.params)}, turn-on (mu, width, lam) = "
        f"{', '.join(f'{v:.5g}' for v in spectrum.turn_on)}"
    )
    print(
        f"flow: {surrogate.info.get('flow_training_s')} s, {surrogate.info.get('flow_epochs_run')} epochs, "
        f"{surrogate.info.get('flow_kwargs')}"
    )
    spread = math.sqrt((2 * n_auc + 1) / 12) / n_auc
    print(
        f"classifier two-sample test 2.3-7 TeV ({n_auc} held-out real events vs as many surrogate events): "
        f"AUC {auc:.4f}; real vs real (fit part) {auc_null:.4f}; spread at 0.5 ~ {spread:.4f}"
    )
    pivot = ks.pivot(index="column", columns="slice", values="ks")
    floors = ks.groupby("slice")["floor"].first()
    print("\nKS distance, surrogate vs held-out real background (95 % floor = 1.36 sqrt(1/n1 + 1/n2)):")
    header = "".join(f"{s + ' TeV':>16}" for s in pivot.columns)
    print(f"{'':10}{header}")
    print(f"{'floor':10}" + "".join(f"{floors[s]:>16.4f}" for s in pivot.columns))
    for column in pivot.index:
        print(
            f"{column:10}"
            + "".join(
                f"{pivot.loc[column, s]:>9.4f} ({pivot.loc[column, s] / floors[s]:.1f}x)"
                for s in pivot.columns
            )
        )
    return 0


# ------------------------------------------------------------------------------------ smooth-by-construction
QUANTILE_LEVELS = np.r_[0.0005, 0.001, 0.002, 0.005, np.linspace(0.01, 0.99, 99), 0.995, 0.998, 0.999, 0.9995]


class SmoothMarginals:
    """Features whose distribution follows m_JJ smoothly *by construction*, for closure tests of methods that
    interpolate from the sidebands into the SR.

    The flow surrogate reproduces the real background's m_JJ dependence, wiggles included: the real Δm_J has a
    1.5-2σ plateau inside 3.3-3.7 TeV, which the flow learnt, so its SR is not the interpolation of its
    sidebands. Here every quantile (levels :data:`QUANTILE_LEVELS`) of every feature is a polynomial of
    degree ``degree`` in log(m_JJ / 3.5 TeV), fitted to a large flow-surrogate sample in equal-count m_JJ
    bins; the dependence between the features is an m_JJ-independent copula (the within-bin ranks of that
    sample). The m_JJ spectrum is the surrogate's. Save/load as one ``.npz`` (no pickle).
    """

    def __init__(
        self, coefficients: np.ndarray, copula: np.ndarray, features: Sequence[str], degree: int
    ) -> None:
        self.coefficients = np.asarray(
            coefficients, float
        )  # (features, levels, degree + 1), highest power first
        self.copula = np.asarray(copula, float)  # (n_pool, features) uniform ranks
        self.features = list(features)
        self.degree = int(degree)

    @classmethod
    def fit(
        cls,
        surrogate: Surrogate,
        n: int = 600_000,
        seed: int = 0,
        mjj_range: Sequence[float] = (2300.0, 6500.0),
        n_bins: int = 40,
        degree: int = 3,
    ) -> SmoothMarginals:
        table = surrogate.draw(n, seed=seed, mjj_range=mjj_range)
        log_m = np.log(table["mjj"].to_numpy() / 3500.0)
        order = np.argsort(log_m)
        bins = np.array_split(order, n_bins)
        centres = np.array([np.median(log_m[b]) for b in bins])
        features = list(surrogate.features)
        coefficients = np.empty((len(features), len(QUANTILE_LEVELS), degree + 1))
        copula = np.empty((n, len(features)))
        for f, name in enumerate(features):
            x = table[name].to_numpy()
            q = np.array([np.quantile(x[b], QUANTILE_LEVELS) for b in bins])  # (bins, levels)
            for j in range(len(QUANTILE_LEVELS)):
                coefficients[f, j] = np.polyfit(centres, q[:, j], degree)
            for b in bins:  # within-bin ranks: the copula, free of the m_JJ dependence
                copula[b, f] = (np.argsort(np.argsort(x[b])) + 0.5) / len(b)
        log.info(
            "smooth marginals: %d features x %d quantile levels, degree %d in log m_JJ, copula of %d events",
            len(features),
            len(QUANTILE_LEVELS),
            degree,
            n,
        )
        return cls(coefficients, copula, features, degree)

    def quantiles(self, log_m: np.ndarray) -> np.ndarray:
        """(features, N, levels) quantile tables at log(m / 3.5 TeV), non-decreasing in the level."""
        powers = np.vander(np.asarray(log_m, float), self.degree + 1)  # (N, degree + 1)
        table = np.einsum("nd,fld->fnl", powers, self.coefficients)
        return np.maximum.accumulate(table, axis=2)

    def features_at(self, mjj: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(N, features) drawn at the masses ``mjj`` (GeV): copula rows without repetition (jittered in
        normal-score space so that no two events share one), mapped through the smooth quantiles."""
        from scipy.stats import norm

        mjj = np.asarray(mjj, float)
        if len(mjj) > len(self.copula):
            raise ValueError(f"SmoothMarginals: {len(mjj)} events asked, the copula holds {len(self.copula)}")
        rows = rng.choice(len(self.copula), size=len(mjj), replace=False)
        u = norm.cdf(norm.ppf(self.copula[rows]) + 0.05 * rng.standard_normal((len(mjj), len(self.features))))
        u = np.clip(u, QUANTILE_LEVELS[0], QUANTILE_LEVELS[-1])
        table = self.quantiles(np.log(mjj / 3500.0))
        out = np.empty((len(mjj), len(self.features)))
        for f in range(len(self.features)):
            # linear interpolation of each event's quantile table at its level
            idx = np.clip(np.searchsorted(QUANTILE_LEVELS, u[:, f]) - 1, 0, len(QUANTILE_LEVELS) - 2)
            lo, hi = QUANTILE_LEVELS[idx], QUANTILE_LEVELS[idx + 1]
            rows_ = np.arange(len(mjj))
            qa, qb = table[f, rows_, idx], table[f, rows_, idx + 1]
            out[:, f] = qa + (u[:, f] - lo) / (hi - lo) * (qb - qa)
        return out

    def save(self, path: str | Path) -> Path:
        from radar.processors.io import atomic_output

        with atomic_output(Path(path)) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(
                    handle,
                    coefficients=self.coefficients,
                    copula=self.copula,
                    features=np.array(self.features),
                    degree=np.array(self.degree),
                )
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> SmoothMarginals:
        with np.load(path, allow_pickle=False) as data:
            return cls(
                data["coefficients"], data["copula"], [str(f) for f in data["features"]], int(data["degree"])
            )


def draw_smooth(
    surrogate: Surrogate,
    marginals: SmoothMarginals,
    n: int,
    seed: int,
    mjj_range: Sequence[float] | None = None,
    mass_shift: float = 0.0,
) -> pd.DataFrame:
    """As :meth:`Surrogate.draw`, with the features from :class:`SmoothMarginals` (smooth in m_JJ)."""
    mass_seed, feature_seed = _seeds(seed, 2)
    mjj = surrogate.spectrum.sample(int(n), np.random.default_rng(mass_seed), mjj_range)
    x = marginals.features_at(mjj, np.random.default_rng(feature_seed))
    table = pd.DataFrame(x, columns=marginals.features)
    table["mjj"] = mjj
    table["delta_mj"] = np.abs(table["delta_mj"])
    table["mj1"] = table["mj1"] + float(mass_shift) * mjj
    table["mj2"] = table["mj1"] + table["delta_mj"]
    table["label"] = 0.0
    table["weight"] = 1.0
    return conform(table, "smooth null surrogate")


if __name__ == "__main__":
    sys.exit(main())

"""Conditional normalising flows p(x | m_JJ) on nflows: MAF (CATHODE's) and autoregressive RQS.

The conditional is m_JJ by default; ``context_features=C`` conditions on C positive variables instead
(e.g. HT and MET of the non-resonant search, :mod:`radar.analysis.nonresonant`), given as (N, C) arrays.

:class:`ConditionalFlow` learns the density of features ``x`` (N, D) given the dijet mass ``m`` (N,) in
GeV, in the sklearn spirit: ``fit(x, m)``, ``log_prob(x, m)``, ``sample(m)``.

- Features go through :class:`radar.models.preprocessing.Preprocessor` (min-max → logit → standardise) and
  its log-Jacobian is added back, so :meth:`ConditionalFlow.log_prob` is a density in the original
  feature space. The conditional is ``(log m - mean) / std`` (:class:`radar.models.preprocessing.MassScaler`).
- ``kind="maf"`` (default, CATHODE's architecture): ``n_blocks`` × [MADE (two hidden layers of
  ``hidden`` units, affine) → batch norm → feature reversal], Adam with ``lr = 1e-4``.
  ``kind="rqs"``: the same stack with rational-quadratic spline MADEs (``n_bins`` bins, linear tails).
- ``engine``: ``"radar"`` computes the MAF with radar's own module (:mod:`radar.models.maf`: the function
  of nflows' MAF in far fewer operations, about twice the CATHODE reference's speed per epoch on a CPU,
  ``benchmarks/training.py``), ``"nflows"`` with
  nflows' transforms (the engine of flows saved before radar had its own; RQS always uses it);
  ``"auto"`` (default) picks radar's for ``maf``. ``compile=True`` compiles the training step of radar's
  engine with ``torch.compile`` (falling back to eager execution where compiling fails); off by default:
  on this CPU it compiled in ≈ 27 s and then ran no faster than eager (``benchmarks/training.py``).
- ``made`` (radar's engine): ``"nflows"`` (default; the MADE and batch norm radar's flows always had) or
  ``"cathode"``: CATHODE's own block (exponential scale, the conditional summed into the first layer,
  batch norm with the biased variance and log γ, orthogonal start) — the reference architecture, which
  ``benchmarks/training.py`` times against the reference's training loop.
- Early stopping on the validation loss (``patience`` epochs) and an ensemble of the ``n_best_epochs``
  epochs with the lowest validation loss: ``log_prob`` averages their probabilities, ``sample`` draws
  from that mixture.
- A training whose loss becomes NaN/inf is stopped, logged and restarted with another seed (at most
  ``max_restarts`` times); :attr:`ConditionalFlow.n_failed` counts them. It never continues silently.
- Warm start: ``fit(..., init=weights)`` starts every training from the weights of one trained network of
  the same architecture (:meth:`ConditionalFlow.warm_start_weights` of another flow) instead of a random
  initialisation; the blind scan uses it to start a window's flow from a trained flow of another window.
- Deterministic given ``seed``: weights come from ``torch.manual_seed`` inside a forked RNG (the
  global torch RNG is left alone) and batches from a dedicated ``torch.Generator``.

Losses in :attr:`ConditionalFlow.history` are negative log-likelihoods per event in the preprocessed
space (the preprocessing Jacobian is a constant of the data, so it does not affect training).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from radar.models.device import resolve_device
from radar.models.preprocessing import MassScaler, Preprocessor
from radar.models.training import check_precision, compiled_or_eager, loop_settings, train_model

log = logging.getLogger(__name__)

FORMAT = "radar.ConditionalFlow/1"
KINDS = ("maf", "rqs")
ENGINES = ("auto", "radar", "nflows")
_EVAL_BATCH = 65536
#: training events whose batch statistics radar's MAF uses in evaluation (set before every validation)
_BN_EVENTS = 16384


def build_flow(
    n_features: int,
    *,
    kind: str = "maf",
    n_blocks: int = 15,
    hidden: int = 128,
    n_bins: int = 8,
    tail_bound: float = 5.0,
    context_features: int = 1,
) -> torch.nn.Module:
    """The nflows model: ``n_blocks`` × [autoregressive MADE → BatchNorm → reversal], normal base.

    MADEs have two hidden layers of ``hidden`` ReLU units and see the conditional in the first layer
    (as CATHODE's MADE). Returns an :class:`nflows.flows.Flow`; ``log_prob(z, context)`` with
    ``z`` (N, n_features) and ``context`` (N, context_features).
    """
    from nflows.distributions.normal import StandardNormal
    from nflows.flows.base import Flow
    from nflows.transforms.autoregressive import (
        MaskedAffineAutoregressiveTransform,
        MaskedPiecewiseRationalQuadraticAutoregressiveTransform,
    )
    from nflows.transforms.base import CompositeTransform
    from nflows.transforms.normalization import BatchNorm
    from nflows.transforms.permutations import ReversePermutation

    if kind not in KINDS:
        raise ValueError(f"unknown flow kind {kind!r}; expected one of {KINDS}")
    if n_features < 1 or n_blocks < 1 or hidden < 1:
        raise ValueError(f"need n_features, n_blocks, hidden >= 1, got {n_features}, {n_blocks}, {hidden}")
    layers: list[torch.nn.Module] = []
    for _ in range(n_blocks):
        common = dict(
            features=n_features,
            hidden_features=hidden,
            context_features=context_features,
            num_blocks=1,
            use_residual_blocks=False,
            random_mask=False,
        )
        if kind == "maf":
            layers.append(MaskedAffineAutoregressiveTransform(**common))
        else:
            layers.append(
                MaskedPiecewiseRationalQuadraticAutoregressiveTransform(
                    num_bins=n_bins,
                    tails="linear",
                    tail_bound=tail_bound,
                    **common,
                )
            )
        norm = BatchNorm(n_features)
        # nflows starts the running variance at 0, which makes eval-mode densities of the first epochs
        # meaningless; the inputs are standardised, so 1 is the right prior.
        norm.running_var.fill_(1.0)
        layers.append(norm)
        layers.append(ReversePermutation(n_features))
    return Flow(CompositeTransform(layers), StandardNormal([n_features]))


def mean_nll(log_prob: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """The training loss: the mean negative log-likelihood of a batch, weighted when ``weight`` is given
    (Σ w·(−log p) / Σ w: a weight of k counts as k copies of the event)."""
    if weight is None:
        return -log_prob.mean()
    return -(log_prob * weight).sum() / weight.sum()


def _checked_weights(weights, n: int, what: str) -> np.ndarray | None:
    from radar.models.templates import checked_weights

    return None if weights is None else checked_weights(weights, n, what)


class ConditionalFlow:
    """Density p(x | m) of D features given m_JJ (GeV); see the module docstring.

    Attributes after :meth:`fit`: ``history`` (``train_loss``, ``val_loss`` lists per epoch,
    ``best_epochs``, ``seed_used``), ``n_failed`` (trainings that hit NaN/inf and were restarted),
    ``preprocessor``, ``mass_scaler``.
    """

    def __init__(
        self,
        n_features: int,
        *,
        kind: str = "maf",
        n_blocks: int = 15,
        hidden: int = 128,
        n_bins: int = 8,
        epochs: int = 100,
        batch_size: int = 256,
        lr: float = 1e-4,
        patience: int = 10,
        n_best_epochs: int = 10,
        val_fraction: float = 0.2,
        device: str = "auto",
        seed: int = 0,
        max_restarts: int = 3,
        progress: bool = False,
        tail_bound: float = 5.0,
        grad_clip: float | None = None,
        weight_decay: float = 0.0,
        context_features: int = 1,
        engine: str = "auto",
        compile: bool = False,
        made: str = "nflows",
        precision: str = "fp32",
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown flow kind {kind!r}; expected one of {KINDS}")
        if engine not in ENGINES:
            raise ValueError(f"unknown flow engine {engine!r}; expected one of {ENGINES}")
        if engine == "auto":
            engine = "radar" if kind == "maf" else "nflows"
        if engine == "radar" and kind != "maf":
            raise ValueError(f"engine 'radar' implements kind 'maf' only, not {kind!r}; use engine 'nflows'")
        from radar.models.maf import MADES

        if made not in MADES:
            raise ValueError(f"unknown MADE variant made={made!r}; expected one of {MADES}")
        if made != "nflows" and engine != "radar":
            raise ValueError(f"made={made!r} needs the radar engine (kind 'maf'), not engine {engine!r}")
        check_precision(precision)
        if not isinstance(compile, bool):
            raise ValueError(f"compile must be true or false, got {compile!r}")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
        if epochs < 1 or batch_size < 1 or n_best_epochs < 1:
            raise ValueError(
                f"need epochs, batch_size, n_best_epochs >= 1, got {epochs}, {batch_size}, {n_best_epochs}"
            )
        self.config: dict[str, Any] = dict(
            n_features=int(n_features),
            kind=kind,
            n_blocks=int(n_blocks),
            hidden=int(hidden),
            n_bins=int(n_bins),
            epochs=int(epochs),
            batch_size=int(batch_size),
            lr=float(lr),
            patience=int(patience),
            n_best_epochs=int(n_best_epochs),
            val_fraction=float(val_fraction),
            device=str(device),
            seed=int(seed),
            max_restarts=int(max_restarts),
            progress=bool(progress),
            tail_bound=float(tail_bound),
            grad_clip=None if grad_clip is None else float(grad_clip),
            weight_decay=float(weight_decay),
            context_features=int(context_features),
            engine=engine,
            compile=compile,
            made=made,
            precision=precision,
        )
        if self.config["context_features"] < 1:
            raise ValueError(f"context_features must be >= 1, got {context_features}")
        self.n_features = int(n_features)
        self.seed = int(seed)
        self.device = resolve_device(device)
        self.preprocessor: Preprocessor | None = None
        self.mass_scaler: MassScaler | None = None
        self.members: list[torch.nn.Module] = []
        self.history: dict[str, Any] = {
            "train_loss": [],
            "val_loss": [],
            "best_epochs": [],
            "seed_used": None,
        }
        self.n_failed = 0
        self._n_sample_calls = 0
        self._init: dict[str, torch.Tensor] | None = None

    # -- helpers -----------------------------------------------------------------------------------------
    def _new_model(self) -> torch.nn.Module:
        c = self.config
        shape = dict(n_blocks=c["n_blocks"], hidden=c["hidden"], context_features=c["context_features"])
        if c["engine"] == "radar":
            from radar.models.maf import MaskedAutoregressiveFlow

            model = MaskedAutoregressiveFlow(self.n_features, made=c["made"], **shape)
        else:
            model = build_flow(
                self.n_features, kind=c["kind"], n_bins=c["n_bins"], tail_bound=c["tail_bound"], **shape
            )
        if self._init is not None:
            model.load_state_dict(self._init)
        return model.to(self.device)

    def _set_init(self, init: dict[str, torch.Tensor] | None) -> None:
        """Check warm-start weights against this flow's architecture (a clear error, not a torch one)."""
        self._init = None
        if init is None:
            return
        reference = self._new_model().state_dict()
        wrong = sorted(
            k
            for k in set(reference) | set(init)
            if k not in init or k not in reference or tuple(init[k].shape) != tuple(reference[k].shape)
        )
        if wrong:
            raise ValueError(
                "ConditionalFlow.fit: the warm-start weights do not fit this flow's architecture "
                f"(kind {self.config['kind']} on the {self.config['engine']} engine, MADE "
                f"{self.config['made']}, "
                f"{self.config['n_blocks']} blocks x {self.config['hidden']}, "
                f"{self.n_features} features, {self.config['context_features']} context); "
                f"mismatched: {wrong[:4]}{' ...' if len(wrong) > 4 else ''}"
            )
        self._init = {k: v.detach().cpu().clone() for k, v in init.items()}

    def warm_start_weights(self) -> dict[str, torch.Tensor]:
        """The weights another flow of the same architecture can start from (``fit(..., init=...)``): the
        best epoch's network (CPU tensors)."""
        self._require_fit()
        return {k: v.detach().cpu().clone() for k, v in self.members[0].state_dict().items()}

    def _check_xm(self, x: np.ndarray, m: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(x, dtype=np.float64)
        m = self._check_m(m, what)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"{what}: x must have shape (N, {self.n_features}), got {x.shape}")
        if len(m) != len(x):
            raise ValueError(f"{what}: x has {len(x)} events but m has {len(m)}")
        return x, m

    def _check_m(self, m: np.ndarray, what: str) -> np.ndarray:
        """The conditioning values: (N,) for one variable (m_JJ), (N, C) for ``context_features`` C > 1."""
        m = np.asarray(m, dtype=np.float64)
        c = self.config["context_features"]
        if c == 1:
            return m.reshape(-1)
        if m.ndim != 2 or m.shape[1] != c:
            raise ValueError(f"{what}: the context must have shape (N, {c}), got {m.shape}")
        return m

    def _require_fit(self) -> None:
        if not self.members:
            raise RuntimeError("ConditionalFlow is not fitted: call fit(x, m) first (or load a saved one)")

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32, device=self.device)

    # -- training ----------------------------------------------------------------------------------------
    def fit(
        self,
        x: np.ndarray,
        m: np.ndarray,
        x_val: np.ndarray | None = None,
        m_val: np.ndarray | None = None,
        *,
        preprocessor: Preprocessor | None = None,
        sample_weight: np.ndarray | None = None,
        w_val: np.ndarray | None = None,
        init: dict[str, torch.Tensor] | None = None,
    ) -> ConditionalFlow:
        """Train on features ``x`` (N, D) given ``m`` (N,) GeV.

        Without ``x_val``/``m_val`` a random ``val_fraction`` of the events (seeded) is held out for
        early stopping and epoch selection. ``preprocessor``: an already fitted
        :class:`~radar.models.preprocessing.Preprocessor` to share (e.g. between ANODE's two flows); by
        default one is fitted on the training plus validation features. ``sample_weight`` (N,) / ``w_val``:
        event weights (finite, > 0): the loss is the weighted mean negative log-likelihood and the
        preprocessing's standardisation uses weighted moments, so a weight of k counts as k copies of the
        event (batch-norm statistics excepted). ``init``: warm start — every training (restarts too) begins
        from these weights (:meth:`warm_start_weights` of a trained flow of the same architecture).
        """
        x, m = self._check_xm(x, m, "ConditionalFlow.fit")
        self._set_init(init)
        w = _checked_weights(sample_weight, len(x), "ConditionalFlow.fit: sample_weight")
        if x_val is None:
            if m_val is not None or w_val is not None:
                raise ValueError("ConditionalFlow.fit: m_val or w_val given without x_val")
            rng = np.random.default_rng(self.seed)
            perm = rng.permutation(len(x))
            n_val = max(1, int(round(self.config["val_fraction"] * len(x))))
            if len(x) - n_val < 2:
                raise ValueError(f"ConditionalFlow.fit: too few events ({len(x)}) to split off validation")
            val_idx, train_idx = perm[:n_val], perm[n_val:]
            x, m, x_val, m_val = x[train_idx], m[train_idx], x[val_idx], m[val_idx]
            if w is not None:
                w, w_val = w[train_idx], w[val_idx]
        else:
            if m_val is None:
                raise ValueError("ConditionalFlow.fit: x_val given without m_val")
            x_val, m_val = self._check_xm(x_val, m_val, "ConditionalFlow.fit (validation)")
            w_val = _checked_weights(w_val, len(x_val), "ConditionalFlow.fit: w_val")
            if (w is None) != (w_val is None):
                w = np.ones(len(x)) if w is None else w
                w_val = np.ones(len(x_val)) if w_val is None else w_val
        if len(x) < 2 or len(x_val) < 1:
            raise ValueError(
                f"ConditionalFlow.fit: need >= 2 training and >= 1 validation events, got "
                f"{len(x)} and {len(x_val)}"
            )
        both = np.concatenate([x, x_val])
        w_both = None if w is None else np.concatenate([w, w_val])
        if preprocessor is None:
            preprocessor = Preprocessor().fit(both, weights=w_both)
        elif not preprocessor.fitted:
            preprocessor.fit(both, weights=w_both)
        self.preprocessor = preprocessor
        self.mass_scaler = MassScaler().fit(np.concatenate([m, m_val]), weights=w_both)
        z, _ = preprocessor.transform(x)
        z_val, _ = preprocessor.transform(x_val)
        data = (self._tensor(z), self._tensor(self.mass_scaler.transform(m)))
        val = (self._tensor(z_val), self._tensor(self.mass_scaler.transform(m_val)))
        if w is not None:  # weights ride along as a third tensor (None: every event weighs 1)
            data, val = (*data, self._tensor(w)), (*val, self._tensor(w_val))

        self._train(data, val)
        return self

    def _train(self, data: tuple[torch.Tensor, ...], val: tuple[torch.Tensor, ...]) -> None:
        """Train with the one loop of :func:`radar.models.training.train_model` (restarts with seed
        ``seed + 7919 k`` on a non-finite loss, counted in ``n_failed``)."""
        c = self.config
        z, ctx = data[:2]
        weight = data[2] if len(data) > 2 else None

        n_train = len(z)
        radar_engine = c["engine"] == "radar"
        use_compile = radar_engine and c["compile"]
        compiled: dict[int, Any] = {}

        # radar's engine: the batch-norm statistics of evaluation come from a fixed subset of the training
        # events, set before every validation (and so saved with every best epoch)
        stats_idx = torch.randperm(n_train, generator=torch.Generator().manual_seed(self.seed))[:_BN_EVENTS]
        stats_idx = stats_idx.to(self.device)

        def batch_loss(model: torch.nn.Module, idx: torch.Tensor) -> torch.Tensor:
            idx = idx.to(self.device)
            log_prob = model.log_prob
            if use_compile and len(idx) == c["batch_size"]:  # one compiled graph: full batches only
                if id(model) not in compiled:
                    compiled[id(model)] = compiled_or_eager(model.log_prob, "ConditionalFlow")
                log_prob = compiled[id(model)]
            return mean_nll(log_prob(z[idx], ctx[idx]), None if weight is None else weight[idx])

        def val_loss(model: torch.nn.Module) -> float:
            if radar_engine:
                model.set_batch_statistics(z[stats_idx], ctx[stats_idx])
            return float(mean_nll(self._log_prob_z(model, *val[:2]), val[2] if len(val) > 2 else None))

        result = train_model(
            self._new_model,
            batch_loss,
            val_loss,
            len(z),
            seed=self.seed,
            what="ConditionalFlow.fit",
            **loop_settings(c),
        )
        self.members = result.members
        self.history = result.history
        self.n_failed = result.n_failed
        self.history["compiled"] = bool(
            use_compile and any(getattr(f, "compiled", False) for f in compiled.values())
        )

    @torch.no_grad()
    def _log_prob_z(self, model: torch.nn.Module, z: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        was_training = model.training
        model.eval()
        out = (
            torch.cat(
                [
                    model.log_prob(z[s : s + _EVAL_BATCH], context=ctx[s : s + _EVAL_BATCH])
                    for s in range(0, len(z), _EVAL_BATCH)
                ]
            )
            if len(z)
            else torch.zeros(0)
        )
        model.train(was_training)
        return out

    # -- inference ---------------------------------------------------------------------------------------
    def log_prob(self, x: np.ndarray, m: np.ndarray) -> np.ndarray:
        """log p(x | m) in the original feature space, shape (N,), float64.

        The ensemble density is the mean of the members' probabilities. Features outside the training
        range are clipped to it first (see :mod:`radar.models.preprocessing`).
        """
        self._require_fit()
        x, m = self._check_xm(x, m, "ConditionalFlow.log_prob")
        z, logdet = self.preprocessor.transform(x)
        zt, ctx = self._tensor(z), self._tensor(self.mass_scaler.transform(m))
        per_member = torch.stack([self._log_prob_z(member, zt, ctx) for member in self.members])
        log_mean = torch.logsumexp(per_member.double(), dim=0) - math.log(len(self.members))
        return log_mean.cpu().numpy() + logdet

    @torch.no_grad()
    def to_latent(self, x: np.ndarray, m: np.ndarray) -> np.ndarray:
        """The flow's base-space (latent) coordinates of events ``x`` (N, D) at masses ``m`` (N,) GeV →
        (N, D) float64, standard normal for events that follow the learnt density.

        Uses the best epoch's model alone (an ensemble has no single latent space). Features outside the
        training range are clipped to it first, as in :meth:`log_prob`. LaCATHODE classifies here: the
        latent coordinates do not depend on m_JJ where the flow describes the background.
        """
        self._require_fit()
        x, m = self._check_xm(x, m, "ConditionalFlow.to_latent")
        z, _ = self.preprocessor.transform(x)
        zt, ctx = self._tensor(z), self._tensor(self.mass_scaler.transform(m))
        best = self.members[0]
        out = [
            best.transform_to_noise(zt[s : s + _EVAL_BATCH], context=ctx[s : s + _EVAL_BATCH])
            for s in range(0, len(zt), _EVAL_BATCH)
        ]
        return (torch.cat(out) if out else torch.zeros(0, self.n_features)).double().cpu().numpy()

    @torch.no_grad()
    def sample(self, m: np.ndarray, seed: int | None = None) -> np.ndarray:
        """One sample of x for each condition value in ``m`` (N,) GeV; returns (N, D).

        Each sample comes from an ensemble member drawn uniformly (the mixture that :meth:`log_prob`
        describes). ``seed=None`` derives a seed from the flow's seed and a call counter, so repeated
        calls differ but a rerun reproduces them.
        """
        self._require_fit()
        m = MassScaler._check(self._check_m(m, "ConditionalFlow.sample"), "ConditionalFlow.sample")
        if seed is None:
            seed = self.seed * 1_000_003 + 17 + self._n_sample_calls
            self._n_sample_calls += 1
        generator = torch.Generator().manual_seed(int(seed))
        n = len(m)
        which = torch.randint(len(self.members), (n,), generator=generator)
        noise = torch.randn(n, self.n_features, generator=generator, dtype=torch.float32)
        ctx = torch.as_tensor(self.mass_scaler.transform(m), dtype=torch.float32)
        z = torch.empty(n, self.n_features, dtype=torch.float32)
        for k, member in enumerate(self.members):
            idx = torch.nonzero(which == k).reshape(-1)
            for s in range(0, len(idx), _EVAL_BATCH):
                part = idx[s : s + _EVAL_BATCH]
                noise_part, ctx_part = noise[part].to(self.device), ctx[part].to(self.device)
                if hasattr(member, "inverse"):  # radar's engine
                    out, _ = member.inverse(noise_part, ctx_part)
                else:
                    out, _ = member._transform.inverse(noise_part, context=ctx_part)
                z[part] = out.cpu()
        return self.preprocessor.inverse(z.double().numpy())

    # -- persistence -------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Config, preprocessing, ensemble weights (CPU tensors) and history: ``torch.save``-able and
        loadable with ``weights_only=True``."""
        self._require_fit()
        return {
            "format": FORMAT,
            "config": dict(self.config),
            "preprocessor": self.preprocessor.state_dict(),
            "mass_scaler": self.mass_scaler.state_dict(),
            "members": [
                {k: v.detach().cpu() for k, v in member.state_dict().items()} for member in self.members
            ],
            "history": self.history,
            "n_failed": self.n_failed,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], device: str | None = None) -> ConditionalFlow:
        if state.get("format") != FORMAT:
            raise ValueError(
                f"not a saved ConditionalFlow (format {state.get('format')!r}, expected {FORMAT!r})"
            )
        config = dict(state["config"])
        # flows saved before radar had its own MAF engine were nflows models
        config.setdefault("engine", "nflows")
        config.setdefault("made", "nflows")  # and before it had the CATHODE variant
        config.setdefault("compile", False)
        if device is not None:
            config["device"] = device
        flow = cls(**config)
        flow.preprocessor = Preprocessor.from_state_dict(state["preprocessor"])
        flow.mass_scaler = MassScaler.from_state_dict(state["mass_scaler"])
        flow.members = []
        for weights in state["members"]:
            member = flow._new_model()
            member.load_state_dict(weights)
            member.eval()
            flow.members.append(member)
        flow.history = state["history"]
        flow.n_failed = int(state["n_failed"])
        return flow

    def save(self, path: str | os.PathLike) -> Path:
        """Write the fitted flow to ``path`` (``torch.save``, atomically)."""
        from radar.models.persistence import save_state

        return save_state(self.state_dict(), path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | None = None) -> ConditionalFlow:
        """Read a flow written by :meth:`save` (``torch.load(weights_only=True)``)."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no saved ConditionalFlow")
        state = torch.load(path, map_location="cpu", weights_only=True)
        try:
            return cls.from_state_dict(state, device=device)
        except (KeyError, ValueError) as error:
            raise ValueError(f"{path}: cannot restore a ConditionalFlow ({error})") from error

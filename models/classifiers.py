"""The CWoLa classifiers: a torch MLP with early stopping and an epoch ensemble, and an HGB ensemble.

Both speak one small API: ``fit(X, y, sample_weight)`` then ``predict_proba(X)`` returning P(y=1) with
shape ``(N,)``. Classes are re-weighted so that each carries half of the total weight (the "class
weights" of the interplay paper), so template/data size imbalances (oversampled templates) do not bias
the classifier towards one class.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from radar.models.registry import Registry
from radar.models.training import train_model

log = logging.getLogger(__name__)


def balanced_weights(y: np.ndarray, sample_weight: np.ndarray | None = None) -> np.ndarray:
    """Per-event weights (N,) scaled so that class 0 and class 1 each sum to N/2."""
    y = np.asarray(y).astype(int)
    w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype="float64").copy()
    if w.shape != y.shape:
        raise ValueError(f"sample_weight has shape {w.shape}, expected {y.shape} (one per event)")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be 0 or 1, got values {np.unique(y)[:10]}")
    out = np.empty_like(w)
    for cls in (0, 1):
        sel = y == cls
        total = w[sel].sum()
        if not sel.any() or total <= 0:
            raise ValueError(f"class {cls} has no events (or zero total weight): cannot train a classifier")
        out[sel] = w[sel] * (0.5 * len(y) / total)
    return out


def stratified_validation_split(
    y: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val) with ``val_fraction`` of each class in val, reproducible with ``seed``."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    train, val = [], []
    for cls in (0, 1):
        idx = np.flatnonzero(np.asarray(y) == cls)
        idx = rng.permutation(idx)
        n_val = max(1, int(round(val_fraction * len(idx)))) if len(idx) > 1 else 0
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def _as_2d(X: Any, name: str = "X") -> np.ndarray:
    array = np.asarray(X, dtype="float64")
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise ValueError(f"{name} must have shape (N, n_features), got {array.shape}")
    if not np.isfinite(array).all():
        bad = np.flatnonzero(~np.isfinite(array).all(axis=1))
        raise ValueError(f"{name} has {len(bad)} rows with NaN/inf features (first rows {bad[:5].tolist()})")
    return array


_registry = Registry("classifier")


@_registry.register("mlp")
class MLPClassifier:
    """CWoLa MLP: ``hidden`` ReLU layers, Adam, weighted BCE, early stopping, ensemble of best epochs (the one
    training loop, :func:`radar.models.training.train_model`).

    Inputs are standardised with the training mean/std. After training, the ``n_best_epochs`` epochs
    with the lowest validation loss are kept and their sigmoid outputs averaged. ``batched_folds``: the
    k fold models of a CWoLa unit are trained as one batched ensemble (same models, several times faster
    on a CPU; see :mod:`radar.models.ensemble`).
    """

    name = "mlp"

    def __init__(
        self,
        hidden: tuple[int, ...] = (64, 64, 64),
        epochs: int = 100,
        batch_size: int = 128,
        lr: float = 1e-3,
        patience: int = 10,
        n_best_epochs: int = 10,
        val_fraction: float = 0.2,
        device: str = "auto",
        seed: int = 0,
        progress: bool = False,
        weight_decay: float = 0.0,
        batched_folds: bool = True,
        precision: str = "fp32",
    ):
        from radar.models.training import check_precision

        self.hidden = tuple(int(h) for h in hidden)
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.lr = float(lr)
        self.patience = int(patience)
        self.n_best_epochs = int(n_best_epochs)
        self.val_fraction = float(val_fraction)
        self.device = device
        self.seed = int(seed)
        self.progress = progress
        self.weight_decay = float(weight_decay)
        #: k-fold callers (CWoLa units) train their k fold models as ONE batched ensemble
        #: (:func:`radar.models.ensemble.fit_mlp_ensemble`); False: k sequential fits
        self.batched_folds = bool(batched_folds)
        #: training precision (:data:`radar.models.training.PRECISIONS`); scores are always float32
        self.precision = check_precision(precision)
        self.states_: list[dict] = []
        self.history_: dict[str, list[float]] = {"train_loss": [], "val_loss": []}

    def _build(self, n_features: int):
        import torch

        layers: list[torch.nn.Module] = []
        width = n_features
        for h in self.hidden:
            layers += [torch.nn.Linear(width, h), torch.nn.ReLU()]
            width = h
        layers.append(torch.nn.Linear(width, 1))
        return torch.nn.Sequential(*layers)

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        sample_weight: np.ndarray | None = None,
        X_val: np.ndarray | None = None,
        y_val: np.ndarray | None = None,
        w_val: np.ndarray | None = None,
    ) -> MLPClassifier:
        """Train on ``X`` (N, F), labels ``y`` (N,) in {0, 1}, optional weights (N,)."""
        import torch

        from radar.models.device import resolve_device

        arrays = self._prepare(X, y, sample_weight, X_val, y_val, w_val)
        device = resolve_device(self.device)

        def tensor(a, dtype=torch.float32):
            return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype, device=device)

        xt, yt, wt, xv, yv, wv = (tensor(a) for a in arrays)
        loss_fn = torch.nn.BCEWithLogitsLoss(reduction="none")

        def batch_loss(model, idx):
            idx = idx.to(device)
            wb = wt[idx]
            return (loss_fn(model(xt[idx]).squeeze(-1), yt[idx]) * wb).sum() / wb.sum()

        def val_loss(model) -> float:
            return float((loss_fn(model(xv).squeeze(-1), yv) * wv).sum() / wv.sum())

        # the one training loop of radar's torch models: early stopping, the best epochs kept, a diverging
        # training restarted with another seed (counted in n_failed_)
        result = train_model(
            lambda: self._build(xt.shape[1]).to(device),
            batch_loss,
            val_loss,
            len(xt),
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            seed=self.seed,
            patience=self.patience,
            n_best=max(1, self.n_best_epochs),
            weight_decay=self.weight_decay,
            what="MLP classifier",
            progress=self.progress,
            precision=self.precision,
        )
        by_epoch = dict(zip(result.history["best_epochs"], result.members))
        self._finish(
            {e: m.state_dict() for e, m in by_epoch.items()},
            result.history,
            result.n_failed,
            result.members[0],
        )
        return self

    def _prepare(
        self, X, y, sample_weight=None, X_val=None, y_val=None, w_val=None
    ) -> tuple[np.ndarray, ...]:
        """Class-balanced weights, the validation split (seed ``seed``) and the standardisation (sets
        ``mean_``, ``std_``, ``n_features_``): returns standardised ``(X, y, w, X_val, y_val, w_val)``."""
        X = _as_2d(X)
        y = np.asarray(y).astype(int)
        w = balanced_weights(y, sample_weight)
        # the standardisation follows the events' own weights (a weight of k counts as k copies)
        raw = None if sample_weight is None else np.asarray(sample_weight, dtype="float64").reshape(-1)
        if raw is not None and np.all(raw == 1.0):
            raw = None  # unit weights: exactly the unweighted numbers
        if X_val is None:
            tr, va = stratified_validation_split(y, self.val_fraction, self.seed)
            X_val, y_val, w_val = X[va], y[va], w[va]
            X, y, w = X[tr], y[tr], w[tr]
            raw = None if raw is None else raw[tr]
        else:
            X_val = _as_2d(X_val, "X_val")
            y_val = np.asarray(y_val).astype(int)
            w_val = balanced_weights(y_val, w_val)
        if raw is None:
            self.mean_, std = X.mean(axis=0), X.std(axis=0)
        else:
            self.mean_ = np.average(X, axis=0, weights=raw)
            std = np.sqrt(np.average((X - self.mean_) ** 2, axis=0, weights=raw))
        self.std_ = np.where(std > 0, std, 1.0)
        self.n_features_ = X.shape[1]
        return (X - self.mean_) / self.std_, y, w, (X_val - self.mean_) / self.std_, y_val, w_val

    def _finish(self, states_by_epoch: dict[int, dict], history: dict, n_failed: int, model) -> None:
        """Keep the best epochs' weights (state dicts, on the CPU) and the losses of a finished training."""
        self.history_ = {"train_loss": list(history["train_loss"]), "val_loss": list(history["val_loss"])}
        self.best_epochs_ = sorted(int(e) for e in states_by_epoch)
        self.states_ = [
            {k: v.detach().cpu().clone() for k, v in states_by_epoch[e].items()} for e in self.best_epochs_
        ]
        self.n_failed_ = n_failed
        self._model = model

    def predict_proba(self, X: np.ndarray, batch: int = 65536) -> np.ndarray:
        """P(y=1) for each row of ``X`` (N, F): mean over the kept epochs, shape (N,)."""
        import torch

        if not self.states_:
            raise RuntimeError("MLPClassifier.predict_proba called before fit/load")
        X = _as_2d(X)
        model = self._model if getattr(self, "_model", None) is not None else self._build(self.n_features_)
        device = next(model.parameters()).device
        xs = torch.as_tensor((X - self.mean_) / self.std_, dtype=torch.float32, device=device)
        out = np.zeros(len(X))
        model.eval()
        with torch.no_grad():
            for state in self.states_:
                model.load_state_dict(state)
                for start in range(0, len(xs), batch):
                    out[start : start + batch] += (
                        torch.sigmoid(model(xs[start : start + batch]).squeeze(-1)).cpu().numpy()
                    )
        return out / len(self.states_)

    def get_params(self) -> dict[str, Any]:
        return {
            "hidden": list(self.hidden),
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "patience": self.patience,
            "n_best_epochs": self.n_best_epochs,
            "val_fraction": self.val_fraction,
            "seed": self.seed,
            "weight_decay": self.weight_decay,
            "precision": self.precision,
        }

    def save(self, path: str | Path) -> Path:
        """Save the kept epoch weights and scaler (torch file, loadable with weights_only=True)."""
        from radar.models.persistence import save_state

        payload = {
            "params": self.get_params(),
            "mean": self.mean_.tolist(),
            "std": self.std_.tolist(),
            "n_features": self.n_features_,
            "states": self.states_,
            "best_epochs": self.best_epochs_,
            "history": self.history_,
        }
        return save_state(payload, path)

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> MLPClassifier:
        import torch

        from radar.models.device import resolve_device

        payload = torch.load(path, map_location="cpu", weights_only=True)
        params = dict(payload["params"])
        params["hidden"] = tuple(params["hidden"])
        clf = cls(device=device, **params)
        clf.mean_ = np.asarray(payload["mean"])
        clf.std_ = np.asarray(payload["std"])
        clf.n_features_ = int(payload["n_features"])
        clf.states_ = payload["states"]
        clf.best_epochs_ = list(payload["best_epochs"])
        clf.history_ = payload["history"]
        clf._model = clf._build(clf.n_features_).to(resolve_device(device))
        return clf


@_registry.register("hgb")
class HGBClassifier:
    """Ensemble of sklearn ``HistGradientBoostingClassifier`` with different seeds (mean probability).

    Each member uses sklearn's early stopping on its own validation split (``val_fraction``), or on
    ``X_val`` when given. ``n_threads`` caps OpenMP threads per fit (None: sklearn's default).
    """

    name = "hgb"

    def __init__(
        self,
        n_models: int = 5,
        max_iter: int = 200,
        learning_rate: float = 0.1,
        max_leaf_nodes: int = 31,
        min_samples_leaf: int = 20,
        l2_regularization: float = 0.0,
        n_iter_no_change: int = 10,
        val_fraction: float = 0.2,
        seed: int = 0,
        n_threads: int | None = None,
        device: str = "auto",
        progress: bool = False,
    ):
        self.n_models = int(n_models)
        self.max_iter = int(max_iter)
        self.learning_rate = float(learning_rate)
        self.max_leaf_nodes = int(max_leaf_nodes)
        self.min_samples_leaf = int(min_samples_leaf)
        self.l2_regularization = float(l2_regularization)
        self.n_iter_no_change = int(n_iter_no_change)
        self.val_fraction = float(val_fraction)
        self.seed = int(seed)
        self.n_threads = n_threads
        self.device = device  # accepted for API symmetry; trees run on the CPU
        self.progress = progress
        self.models_: list = []

    def _threads(self):
        if self.n_threads is None:
            return contextlib.nullcontext()
        from threadpoolctl import threadpool_limits

        return threadpool_limits(limits=int(self.n_threads), user_api="openmp")

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        sample_weight: np.ndarray | None = None,
        X_val: np.ndarray | None = None,
        y_val: np.ndarray | None = None,
        w_val: np.ndarray | None = None,
    ) -> HGBClassifier:
        from sklearn.ensemble import HistGradientBoostingClassifier

        X = _as_2d(X)
        y = np.asarray(y).astype(int)
        w = balanced_weights(y, sample_weight)
        val_kwargs: dict[str, Any] = {}
        if X_val is not None:
            val_kwargs = {
                "X_val": _as_2d(X_val, "X_val"),
                "y_val": np.asarray(y_val).astype(int),
                "sample_weight_val": balanced_weights(np.asarray(y_val).astype(int), w_val),
            }
        self.models_ = []
        with self._threads():
            for i in range(self.n_models):
                model = HistGradientBoostingClassifier(
                    max_iter=self.max_iter,
                    learning_rate=self.learning_rate,
                    max_leaf_nodes=self.max_leaf_nodes,
                    min_samples_leaf=self.min_samples_leaf,
                    l2_regularization=self.l2_regularization,
                    early_stopping=True,
                    validation_fraction=None if val_kwargs else self.val_fraction,
                    n_iter_no_change=self.n_iter_no_change,
                    random_state=(self.seed * 1000 + i) % 2**32,  # sklearn takes 32-bit seeds
                )
                model.fit(X, y, sample_weight=w, **val_kwargs)
                self.models_.append(model)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Mean P(y=1) over the ensemble members, shape (N,)."""
        if not self.models_:
            raise RuntimeError("HGBClassifier.predict_proba called before fit/load")
        X = _as_2d(X)
        with self._threads():
            return np.mean([m.predict_proba(X)[:, 1] for m in self.models_], axis=0)

    def get_params(self) -> dict[str, Any]:
        return {
            k: getattr(self, k)
            for k in (
                "n_models",
                "max_iter",
                "learning_rate",
                "max_leaf_nodes",
                "min_samples_leaf",
                "l2_regularization",
                "n_iter_no_change",
                "val_fraction",
                "seed",
                "n_threads",
            )
        }

    def save(self, path: str | Path) -> Path:
        """Write the fitted ensemble as plain arrays (``.npz``, no pickle): per member its baseline and the
        nodes of its trees (feature, threshold, missing-value side, children, leaf values). Loading can run no
        code; a loaded ensemble predicts with :class:`_TreeEnsemble` (same probabilities as the fit)."""
        from radar.processors.io import atomic_output

        if not self.models_:
            raise RuntimeError("HGBClassifier.save called before fit")
        arrays: dict[str, np.ndarray] = {"params": np.array(json.dumps(self.get_params()))}
        for i, model in enumerate(self.models_):
            if isinstance(model, _TreeEnsemble):
                baseline, nodes, offsets = model.baseline, model.nodes, model.offsets
            else:
                if getattr(model, "is_categorical_", None) is not None and np.any(model.is_categorical_):
                    raise ValueError("HGBClassifier.save: categorical features are not supported")
                trees = [predictors[0].nodes for predictors in model._predictors]
                baseline = float(np.ravel(model._baseline_prediction)[0])
                nodes = np.concatenate(trees)
                offsets = np.cumsum([0] + [len(t) for t in trees])
            arrays[f"m{i}_baseline"] = np.array(baseline)
            arrays[f"m{i}_offsets"] = np.asarray(offsets, dtype=np.int64)
            for field in _NODE_FIELDS:
                arrays[f"m{i}_{field}"] = np.asarray(nodes[field])
        with atomic_output(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> HGBClassifier:
        """Read an ensemble written by :meth:`save` (``allow_pickle=False``: no code can run)."""
        with np.load(path, allow_pickle=False) as payload:
            if "params" not in payload.files:
                raise ValueError(f"{path}: not a saved HGB classifier (no 'params')")
            clf = cls(**json.loads(str(payload["params"])))
            clf.models_ = []
            for i in range(clf.n_models):
                fields = {f: payload[f"m{i}_{f}"] for f in _NODE_FIELDS}
                nodes = np.empty(len(fields["value"]), dtype=[(f, a.dtype) for f, a in fields.items()])
                for f, a in fields.items():
                    nodes[f] = a
                clf.models_.append(
                    _TreeEnsemble(float(payload[f"m{i}_baseline"]), nodes, payload[f"m{i}_offsets"])
                )
        return clf


#: the node fields a saved HGB tree keeps (sklearn's TreePredictor nodes, numerical splits)
_NODE_FIELDS = ("value", "feature_idx", "num_threshold", "missing_go_to_left", "left", "right", "is_leaf")


class _TreeEnsemble:
    """One loaded boosted-tree member: P(y=1) = sigmoid(baseline + sum of the trees' leaf values), the trees
    walked as sklearn does (``x[feature] <= threshold`` goes left, NaN follows ``missing_go_to_left``)."""

    def __init__(self, baseline: float, nodes: np.ndarray, offsets: np.ndarray) -> None:
        self.baseline, self.nodes, self.offsets = float(baseline), nodes, np.asarray(offsets, dtype=np.int64)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        raw = np.full(len(X), self.baseline)
        rows = np.arange(len(X))
        for start, stop in zip(self.offsets[:-1], self.offsets[1:]):
            tree = self.nodes[start:stop]
            node = np.zeros(len(X), dtype=np.int64)
            active = ~tree["is_leaf"][node].astype(bool)
            while active.any():
                idx = node[active]
                x = X[rows[active], tree["feature_idx"][idx]]
                left = np.where(
                    np.isnan(x), tree["missing_go_to_left"][idx].astype(bool), x <= tree["num_threshold"][idx]
                )
                node[active] = np.where(left, tree["left"][idx], tree["right"][idx])
                active = ~tree["is_leaf"][node].astype(bool)
            raw += tree["value"][node]
        p1 = 1.0 / (1.0 + np.exp(-raw))
        return np.column_stack([1.0 - p1, p1])


def available() -> list[str]:
    """Names accepted by :func:`get_classifier`."""
    return _registry.available()


def get_classifier(name: str, **kwargs: Any) -> MLPClassifier | HGBClassifier:
    """A fresh classifier by name ("mlp" | "hgb") with keyword settings."""
    return _registry.get(name)(**copy.deepcopy(kwargs))


def classifier_suffix(name: str) -> str:
    """File suffix for saved models of classifier ``name``."""
    return ".pt" if name == "mlp" else ".npz"


def load_classifier(name: str, path: str | Path, device: str = "auto"):
    """Load a classifier saved by ``.save`` (``name`` as in :func:`get_classifier`)."""
    return _registry.get(name).load(path, device=device)

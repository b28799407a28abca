"""The one training loop of radar's torch models: mini-batch Adam(W) with early stopping on a validation loss,
an ensemble of the best epochs, and one rule for failed trainings (a non-finite loss, or a validation loss
that diverges, restarts the training with another seed and is counted).

Used by the conditional flows (:class:`radar.models.flows.ConditionalFlow`: CATHODE, LaCATHODE, ANODE, the
bases of FETA and R-ANODE), the transport flows of CURTAINs and FETA, and R-ANODE's signal model.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

#: glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory() -> bool:
    """Stop glibc from handing every freed training buffer back to the OS.

    By default glibc serves blocks ≥ 128 KiB with ``mmap`` and trims the heap top as soon as 128 KiB are free, so
    a training step's activations and loss temporaries (a 512 × 512 float32 kernel matrix is 1 MiB; 256 × 128
    activations are 128 KiB) are page-faulted in anew at every step: 230k minor faults per second and a quarter
    of a CURTAINs worker's CPU time in the kernel, 240k faults for 500 allocations of 1 MiB. With the mmap
    threshold at 32 MiB and the trim threshold at 1 GiB the heap keeps them (0 faults). Called when this module
    is imported; linux/glibc only; a user's own ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` or
    ``RADAR_MALLOC_TUNING=0`` leaves malloc alone. Returns whether it changed anything.
    """
    import ctypes
    import os
    import sys

    if sys.platform != "linux" or os.environ.get("RADAR_MALLOC_TUNING", "1") == "0":
        return False
    if any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        done = bool(libc.mallopt(_M_MMAP_THRESHOLD, 32 * 2**20)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, 2**30)
        )
    except (OSError, AttributeError):  # not glibc
        return False
    log.debug("malloc: mmap threshold 32 MiB, trim threshold 1 GiB (%s)", "set" if done else "refused")
    return done


keep_freed_memory()

__all__ = [
    "TrainResult",
    "TrainingDiverged",
    "PRECISIONS",
    "check_precision",
    "compiled_or_eager",
    "loop_settings",
    "make_adamw",
    "training_autocast",
    "train_model",
]


class TrainingDiverged(RuntimeError):
    """A training produced a non-finite loss (or a diverging validation loss)."""


#: a model's config keys that are settings of the loop (``n_best_epochs`` is the loop's ``n_best``)
LOOP_KEYS = (
    "epochs",
    "batch_size",
    "lr",
    "patience",
    "max_restarts",
    "weight_decay",
    "grad_clip",
    "divergence",
    "progress",
    "precision",
)

#: the training precisions: ``fp32`` (default); ``bf16`` / ``fp16``: mixed precision (``torch.autocast``) for
#: the training batches only, validation losses (early stopping, the best epochs) always in float32.
#: ``fp16`` needs a CUDA device (and scales the loss, ``torch.amp.GradScaler``); ``bf16`` runs anywhere but
#: is only fast where the hardware has bfloat16 arithmetic (recent GPUs; on a CPU without it, slower).
PRECISIONS = ("fp32", "bf16", "fp16")


def check_precision(precision: str) -> str:
    """``precision`` checked against :data:`PRECISIONS` (a ValueError naming the choices otherwise)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    return precision


def training_autocast(precision: str, device: torch.device):
    """The context a training batch runs in: mixed precision, or nothing for ``fp32``."""
    import contextlib

    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(
            f"precision 'fp16' needs a CUDA device, the model is on {device.type!r}; use 'bf16' or 'fp32'"
        )
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


class _CompiledOrEager:
    """``fn`` compiled with ``torch.compile`` on its first call; where compiling fails (no C++ compiler,
    an unsupported platform) a warning is logged once and ``fn`` runs eagerly from then on.
    ``compiled`` tells which of the two ran."""

    def __init__(self, fn: Callable, what: str) -> None:
        self.fn, self.what, self.compiled = fn, what, None
        self._compiled_fn: Callable | None = None

    def __call__(self, *args):
        if self.compiled is False:
            return self.fn(*args)
        try:
            if self._compiled_fn is None:
                import multiprocessing

                if multiprocessing.current_process().daemon:
                    # a daemonic process (a Dask worker's) may not start the compiler's worker pool
                    import torch._inductor.config as inductor_config

                    inductor_config.compile_threads = 1
                self._compiled_fn = torch.compile(self.fn, dynamic=False)
            out = self._compiled_fn(*args)
        except Exception as error:  # noqa: BLE001 - any compiler failure falls back to eager execution
            if self.compiled:  # it compiled and ran before: a real error of the model, not of compiling
                raise
            log.warning(
                "%s: torch.compile failed (%s: %s); training without compiling",
                self.what,
                type(error).__name__,
                str(error).splitlines()[0] if str(error) else "",
            )
            self.compiled = False
            return self.fn(*args)
        self.compiled = True
        return out


def compiled_or_eager(fn: Callable, what: str = "model") -> _CompiledOrEager:
    """``fn`` compiled on first use, or ``fn`` itself where compiling fails (see :class:`_CompiledOrEager`)."""
    return _CompiledOrEager(fn, what)


def make_adamw(groups, *, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW with the fused (one-kernel) update where this torch has it for the parameters' device; the
    for-loop update otherwise. Same algorithm, fewer operations per step."""
    try:
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)


def loop_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The :func:`train_model` keyword arguments a model's ``config`` holds (keys it lacks keep the loop's
    defaults)."""
    out = {key: config[key] for key in LOOP_KEYS if key in config}
    if "n_best_epochs" in config:
        out["n_best"] = config["n_best_epochs"]
    return out


@dataclass
class TrainResult:
    """Outcome of :func:`train_model`: the best-epoch modules (eval mode), losses, failure counts."""

    members: list[torch.nn.Module]
    history: dict[str, Any] = field(default_factory=dict)
    n_failed: int = 0
    n_trainings: int = 0


def train_model(
    build: Callable[[], torch.nn.Module],
    batch_loss: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor],
    val_loss: Callable[[torch.nn.Module], float],
    n_train: int,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    patience: int = 10,
    n_best: int = 1,
    max_restarts: int = 3,
    weight_decay: float = 0.0,
    grad_clip: float | None = None,
    divergence: float | None = None,
    what: str = "model",
    progress: bool = False,
    precision: str = "fp32",
) -> TrainResult:
    """Mini-batch AdamW training with early stopping, best-epoch ensemble and restarts on failure.

    ``build()`` makes a fresh module (called under ``torch.manual_seed`` of the attempt's seed inside a
    forked RNG; if it has a ``param_groups()`` method, its result is given to the optimiser); ``batch_loss(module, idx)`` gives the loss of the training events ``idx`` (a LongTensor
    of indices in ``[0, n_train)``); ``val_loss(module)`` the validation loss (module in eval mode).

    A training *fails* when a loss is NaN/inf or (with ``divergence``) the validation loss rises more
    than ``divergence`` above its first value; it is logged and restarted with seed ``seed + 7919 k``
    (at most ``max_restarts`` times), counted in ``n_failed``; ``n_trainings`` counts all attempts.
    RuntimeError when every attempt fails. The ``n_best`` epochs of lowest validation loss are returned.
    ``precision``: see :data:`PRECISIONS`.
    """
    check_precision(precision)
    n_failed = 0
    for attempt in range(max_restarts + 1):
        attempt_seed = seed + 7919 * attempt
        try:
            members, history = _train_once(
                build,
                batch_loss,
                val_loss,
                n_train,
                epochs=epochs,
                batch_size=batch_size,
                lr=lr,
                seed=attempt_seed,
                patience=patience,
                n_best=n_best,
                weight_decay=weight_decay,
                grad_clip=grad_clip,
                divergence=divergence,
                what=what,
                progress=progress,
                precision=precision,
            )
            return TrainResult(members, history, n_failed, attempt + 1)
        except TrainingDiverged as error:
            n_failed += 1
            log.warning(
                "%s training (seed %d) failed: %s; %s",
                what,
                attempt_seed,
                error,
                "restarting with another seed" if attempt < max_restarts else "giving up",
            )
    raise RuntimeError(
        f"{what}: all {max_restarts + 1} trainings failed (seeds {seed} + 7919*k); "
        "try a lower lr, grad_clip or check the inputs"
    )


def _train_once(
    build,
    batch_loss,
    val_loss,
    n_train,
    *,
    epochs,
    batch_size,
    lr,
    seed,
    patience,
    n_best,
    weight_decay,
    grad_clip,
    divergence,
    what,
    progress,
    precision="fp32",
):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build()
    params = [p for p in model.parameters() if p.requires_grad]
    # a module may ask for its own parameter groups (e.g. R-ANODE's signal fraction with a larger lr)
    groups = model.param_groups() if hasattr(model, "param_groups") else [{"params": params}]
    optimizer = make_adamw(groups, lr=lr, weight_decay=weight_decay)
    device = params[0].device if params else torch.device("cpu")
    autocast = training_autocast(precision, device)  # checked before the first epoch
    # fp16's narrow range: the loss is scaled up before backward and the gradients back before the step
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    generator = torch.Generator().manual_seed(seed)
    min_batch = max(2, batch_size // 8)
    history: dict[str, Any] = {
        "train_loss": [],
        "val_loss": [],
        "best_epochs": [],
        "seed_used": seed,
        "epoch_s": [],  # wall seconds of each epoch (training and validation)
    }
    best: list[tuple[float, int, dict[str, torch.Tensor]]] = []
    best_loss, waited, first_val = math.inf, 0, None
    bar = tqdm(range(epochs), desc=what, unit="epoch", disable=not progress, leave=False)
    for epoch in bar:
        started = time.perf_counter()
        model.train()
        order = torch.randperm(n_train, generator=generator)
        # the epoch's loss is summed on the model's device and checked once per epoch: a per-batch check
        # would synchronise a GPU after every batch (a NaN batch still fails the epoch, which is discarded)
        total, seen = None, 0
        for start in range(0, n_train, batch_size):
            idx = order[start : start + batch_size]
            if len(idx) < min_batch and start > 0:
                continue  # a tiny remainder batch gives noisy batch statistics: skip it
            with autocast:
                loss = batch_loss(model, idx).float()
            optimizer.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                if grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, grad_clip)
                optimizer.step()
            else:
                scaler.scale(loss).backward()
                if grad_clip is not None:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(params, grad_clip)
                scaler.step(optimizer)
                scaler.update()
            part = loss.detach() * len(idx)
            total = part if total is None else total + part
            seen += len(idx)
        train_loss = float(total) / max(seen, 1) if total is not None else math.nan
        if not math.isfinite(train_loss):
            raise TrainingDiverged(f"non-finite training loss at epoch {epoch}")
        model.eval()
        with torch.no_grad():
            val = float(val_loss(model))
        if not math.isfinite(val):
            raise TrainingDiverged(f"non-finite validation loss at epoch {epoch}")
        first_val = val if first_val is None else first_val
        if divergence is not None and val > first_val + divergence:
            raise TrainingDiverged(f"validation loss rose from {first_val:.4f} to {val:.4f} at epoch {epoch}")
        history["train_loss"].append(train_loss)
        history["val_loss"].append(val)
        history["epoch_s"].append(time.perf_counter() - started)
        bar.set_postfix(val=f"{val:.4f}")
        if len(best) < n_best or val < best[-1][0]:
            best.append((val, epoch, {k: v.detach().clone() for k, v in model.state_dict().items()}))
            best.sort(key=lambda item: (item[0], item[1]))
            del best[n_best:]
        if val < best_loss:
            best_loss, waited = val, 0
        else:
            waited += 1
            if patience > 0 and waited >= patience:
                log.info("%s: early stopping at epoch %d (best val loss %.5f)", what, epoch, best_loss)
                break
    bar.close()
    members = []
    for _, _, state in best:
        member = copy.deepcopy(model)
        member.load_state_dict(state)
        member.eval()
        members.append(member)
    history["best_epochs"] = [epoch for _, epoch, _ in best]
    return members, history

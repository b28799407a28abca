"""Saving and loading fitted models: one torch file per model, written atomically, read weights-only."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from radar.processors.io import atomic_output


def save_state(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """``torch.save`` a model's state (tensors, numbers, strings, lists, dicts) to ``path`` atomically."""
    with atomic_output(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_state(path: str | os.PathLike, method: str, name: str) -> dict[str, Any]:
    """Read a state written by :func:`save_state` (``weights_only=True``: no code is unpickled) and check
    that it is a ``method`` model; ``name`` names it in the error message (e.g. "CATHODE template")."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    if state.get("method") != method:
        raise ValueError(f"{path}: not a saved {name} (method {state.get('method')!r})")
    return state

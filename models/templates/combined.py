"""Sample-level combination of templates (the interplay paper's "combined events").

Every member template is fitted on the same inputs; a request for ``n`` events at masses ``mjj`` is
split at random (seeded) into equal shares, one per member, and each member's weights are rescaled so
that its share carries the same total weight as its event count. Each member thus contributes equal
weight to the one template, whatever its own weight scale (SALAD's likelihood ratios, ones elsewhere).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from radar.models.templates import get, register
from radar.processors.features import LHCO_FEATURES

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_MEMBERS", "CombinedTemplate", "stack_equal_weight"]

DEFAULT_MEMBERS: tuple[str, ...] = ("salad", "cathode", "curtains", "feta")


def stack_equal_weight(
    parts: Sequence[tuple[pd.DataFrame, np.ndarray]], rows: Sequence[np.ndarray], n: int
) -> tuple[pd.DataFrame, np.ndarray]:
    """Interleave member samples into one template of ``n`` events with equal weight per member.

    ``parts[k]`` = (events, weights) of member k for the output rows ``rows[k]`` (disjoint index arrays
    covering ``range(n)``). Weights of member k are scaled to sum to ``len(rows[k])``. Returns the
    DataFrame (in output-row order) and weights (n,).
    """
    if sum(len(r) for r in rows) != n:
        raise ValueError(
            f"stack_equal_weight: member rows cover {sum(len(r) for r in rows)} events, expected {n}"
        )
    columns = list(parts[0][0].columns)
    values = np.empty((n, len(columns)))
    weights = np.empty(n)
    for (events, w), r in zip(parts, rows):
        w = np.asarray(w, dtype=np.float64)
        if list(events.columns) != columns or len(events) != len(r) or w.shape != (len(r),):
            raise ValueError(
                f"stack_equal_weight: a member returned {len(events)} events with columns "
                f"{list(events.columns)} and weights {w.shape}; expected {len(r)} with {columns}"
            )
        total = w.sum()
        if len(r) and (not np.isfinite(total) or total <= 0):
            raise ValueError(
                f"stack_equal_weight: a member's weights sum to {total}; expected a positive number"
            )
        values[r] = events.to_numpy(dtype=np.float64)
        weights[r] = w * (len(r) / total) if len(r) else w
    return pd.DataFrame(values, columns=columns), weights


@register("combined_events")
class CombinedTemplate:
    """Equal-weight union of several templates.

    Parameters
    ----------
    features, seed, device:
        Passed to every member (member k gets ``seed``: members differ by method, not by seed).
    members:
        Registered template names (default: SALAD, CATHODE, CURTAINs, FETA as in the interplay paper).
    member_kwargs:
        ``{name: kwargs}`` for individual members, or the string "tiny" for every member's
        ``TINY_KWARGS`` (used by the registry tests).
    """

    TINY_KWARGS: dict[str, Any] = {"members": ("salad", "cathode", "curtains"), "member_kwargs": "tiny"}

    def __init__(
        self,
        features: Sequence[str] = LHCO_FEATURES,
        *,
        seed: int = 0,
        device: str = "auto",
        members: Sequence[str] = DEFAULT_MEMBERS,
        member_kwargs: dict[str, dict[str, Any]] | str | None = None,
    ) -> None:
        members = list(members)
        if not members or "combined_events" in members:
            raise ValueError(
                f"combined_events: members must be a non-empty list of other templates, got {members}"
            )
        if len(set(members)) != len(members):
            raise ValueError(f"combined_events: duplicate members in {members}")
        self.features = list(features)
        self.seed = int(seed)
        self.device = device
        self.member_names = members
        classes = {name: get(name) for name in members}
        if member_kwargs == "tiny":
            member_kwargs = {name: dict(getattr(cls, "TINY_KWARGS", {})) for name, cls in classes.items()}
        member_kwargs = dict(member_kwargs or {})
        unknown = set(member_kwargs) - set(members)
        if unknown:
            raise ValueError(
                f"combined_events: member_kwargs for {sorted(unknown)} which are not members {members}"
            )
        self.members = {
            name: classes[name](
                self.features, seed=self.seed, **{"device": device, **member_kwargs.get(name, {})}
            )
            for name in members
        }
        self.last_counts: dict[str, int] = {}
        self._n_sample_calls = 0

    @property
    def max_distinct(self) -> int | None:
        """Members × the smallest member's ``max_distinct`` (None when no member has a limit)."""
        limits = [getattr(m, "max_distinct", None) for m in self.members.values()]
        limits = [int(v) for v in limits if v is not None]
        return len(self.members) * min(limits) if limits else None

    @property
    def n_failed(self) -> int:
        return sum(int(getattr(m, "n_failed", 0)) for m in self.members.values())

    def fit(self, sideband: pd.DataFrame, simulation: pd.DataFrame | None = None) -> CombinedTemplate:
        """Fit every member on the same sideband (and simulation)."""
        for name, member in self.members.items():
            log.info("combined_events: fitting member %s", name)
            member.fit(sideband, simulation=simulation)
        return self

    def sample(self, n: int, mjj: np.ndarray, *, seed: int | None = None) -> tuple[pd.DataFrame, np.ndarray]:
        """``n`` events at masses ``mjj`` (n,) GeV, an equal random share from each member."""
        mjj = np.asarray(mjj, dtype=np.float64).reshape(-1)
        if len(mjj) != n:
            raise ValueError(f"CombinedTemplate.sample: n = {n} but {len(mjj)} m_JJ values given")
        if seed is None:
            seed = self.seed * 7_777_777 + 11 + self._n_sample_calls
            self._n_sample_calls += 1
        rows = np.array_split(np.random.default_rng(seed).permutation(n), len(self.members))
        parts = []
        for k, ((name, member), r) in enumerate(zip(self.members.items(), rows)):
            parts.append(member.sample(len(r), mjj[r], seed=seed + 1000 * (k + 1)))
            self.last_counts[name] = len(r)
        events, weights = stack_equal_weight(parts, rows, n)
        events["mjj"] = mjj  # exact requested masses (members return them too; avoid float round trips)
        return events, weights

"""The columns of radar's feature tables, defined once (no imports: the jet stage and the table readers share
them without importing each other)."""

from __future__ import annotations

KINEMATIC_COLUMNS: tuple[str, ...] = (
    "mjj",
    "mj1",
    "mj2",
    "delta_mj",
    "tau21_j1",
    "tau21_j2",
    "tau32_j1",
    "tau32_j2",
    "delta_r_jj",
    "pt_j1",
    "pt_j2",
    "eta_j1",
    "eta_j2",
    "ht",
    "met",
)
"""The per-event quantities the jet stage computes (GeV), in table order."""

FEATURE_COLUMNS: tuple[str, ...] = (*KINEMATIC_COLUMNS, "label", "weight")
"""Columns of every feature table, in order (GeV). ``label``: 1 signal, 0 background, -1 unknown."""

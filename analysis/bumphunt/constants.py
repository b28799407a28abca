"""Constants of the bump hunt (GeV)."""

from __future__ import annotations

import numpy as np

SQRT_S: float = 13000.0
"""Centre-of-mass energy of the LHC Run 2 (GeV)."""

DEFAULT_EFFICIENCIES: tuple[float, ...] = (1.0, 0.1, 0.01, 0.001)
"""Default working points: fraction of SR events kept by the score cut (1 = no cut)."""

DEFAULT_FIT_RANGE: tuple[float, float] = (2800.0, 6000.0)
"""m_JJ range (GeV) of the sideband fit: above the trigger turn-on of LHCO-like samples (peak ~2.6 TeV)."""

DEFAULT_FIT_SIDEBAND: float = 600.0
"""Default fit window (GeV on each side of the SR) inside the range the data allow. Measured on background-only
surrogate spectra (benchmarks/null_chain.py, docs/closure.md): over the whole range the
cut spectra of CWoLa Hunting and LaCATHODE, whose efficiency bends with m_JJ, gave fake 3-4σ excesses that
SR ± 600 GeV does not; SR ± 1000 GeV biased even the uncut fit next to the trigger turn-on."""

PARAM_NAMES: tuple[str, ...] = ("ln_p0", "p1", "p2", "p3")

# Gauss-Legendre nodes for integrating the dijet function over a bin (exact to ~1e-9 for 100 GeV bins)
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(4)

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

from radar.analysis.bumphunt.constants import *  # noqa: F403
from radar.analysis.bumphunt.fit import *  # noqa: F403
from radar.analysis.bumphunt.scan import *  # noqa: F403
from radar.analysis.bumphunt.significance import *  # noqa: F403
from radar.analysis.bumphunt.spectrum import *  # noqa: F403
from radar.analysis.bumphunt.synthetic import *  # noqa: F403
from radar.analysis.bumphunt.workingpoints import *  # noqa: F403
from radar.analysis.bumphunt.workingpoints import _sr_bins  # noqa: F401  (used by the plots)

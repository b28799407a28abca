"""N-subjettiness in one pass over the constituents: exclusive-kt axes and τ1..τ3 in compiled code (numba).

fastjet-contrib's ``Nsubjettiness`` with ``KT_Axes`` and ``NormalizedMeasure`` finds its axes by
reclustering each jet's constituents with the kt algorithm (R = 1000, E-scheme) and stopping when N
jets are left. Doing that with fastjet from Python means a second ClusterSequence over all jets of a
chunk and three ``exclusive_jets_up_to`` calls, about as much time as the anti-kt clustering itself.
Here one compiled loop per jet runs the kt clustering down to one jet, keeps the axes when three, two and
one remain, and sums τN = Σ_i pT_i min_k ΔR(i, axis_k)^β / (Σ_i pT_i R0^β) over the constituents
(ΔR in rapidity–φ, as contrib), without any intermediate array per particle.

The clustering keeps each pseudojet's geometric nearest neighbour (the N² "plain" strategy of fastjet):
the pair of smallest d_ij = min(kt_i², kt_j²) ΔR_ij² is always a jet and its geometric nearest
neighbour, so each step is one scan of the jets plus the neighbour updates of the merged pair. With
R = 1000 the beam distance kt² is never the smallest, so every step merges a pair. Ties between exactly
equal distances may be broken in another order than fastjet's (nowhere in the real LHCO events tested).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["kt_nsubjettiness"]

_TWO_PI = 2.0 * math.pi


def _kernel():
    """The numba-compiled kernel (compiled on first use; cached on disk where numba can write)."""
    import numba

    @numba.njit(cache=True, error_model="numpy", inline="always")
    def delta_r2(y1, phi1, y2, phi2):
        dphi = abs(phi1 - phi2)
        dphi = min(dphi, _TWO_PI - dphi)  # φ in [0, 2π): branch-free wrap
        dy = y1 - y2
        return dy * dy + dphi * dphi

    @numba.njit(cache=True, error_model="numpy")
    def rap_phi(px, py, pz, e):
        pt2 = px * px + py * py
        phi = math.atan2(py, px)
        if phi < 0.0:
            phi += _TWO_PI
        if e == abs(pz) and pt2 == 0.0:
            y = 1e5 if pz >= 0.0 else -1e5  # fastjet's MaxRap for massless longitudinal momenta
        else:
            y = 0.5 * math.log((e + pz) / (e - pz))
        return y, phi

    @numba.njit(cache=True, error_model="numpy")
    def distances(k, na, y, phi, out):
        """ΔR² of jet k to jets 0 … na-1 into out[:na] (a branch-free loop the compiler vectorises)."""
        yk, phik = y[k], phi[k]
        for m in range(na):
            out[m] = delta_r2(yk, phik, y[m], phi[m])

    @numba.njit(cache=True, error_model="numpy")
    def nearest(k, na, y, phi, scratch):
        distances(k, na, y, phi, scratch)
        scratch[k] = np.inf
        best, best_d = 0, scratch[0]
        for m in range(1, na):
            if scratch[m] < best_d:
                best, best_d = m, scratch[m]
        return best, best_d

    @numba.njit(cache=True, error_model="numpy")
    def cluster_axes(jpx, jpy, jpz, je, y, phi, axes_y, axes_phi):
        """kt-cluster the n pseudojets (momenta, rapidity y, φ: all modified in place) down to one, writing
        the rapidity and φ of the jets left when 3, 2 and 1 remain into axes_*[N - 1, :N]. The live jets are
        kept in slots 0 … na-1 (a merged-away jet's slot takes the last live jet), so every scan shrinks with
        the clustering. After a merge, one pass over the live jets updates their neighbours, finds the merged
        jet's neighbour and the next pair (first index wins every tie, as a separate scan would)."""
        n = len(jpx)
        kt2 = jpx * jpx + jpy * jpy
        nn = np.empty(n, dtype=np.int64)
        nn_d = np.empty(n)
        scratch = np.empty(n)
        to_i = np.empty(n)
        for k in range(n):
            nn[k], nn_d[k] = nearest(k, n, y, phi, scratch)
        na = n
        if na <= 3:
            for k in range(na):
                axes_y[na - 1, k], axes_phi[na - 1, k] = y[k], phi[k]
        # the smallest d_ij: a jet and its geometric nearest neighbour
        i, d_min = 0, kt2[0] * nn_d[0]
        for k in range(1, na):
            d = kt2[k] * nn_d[k]
            if d < d_min:
                i, d_min = k, d
        while na > 1:
            j = nn[i]
            # E-scheme merge into i
            jpx[i] += jpx[j]
            jpy[i] += jpy[j]
            jpz[i] += jpz[j]
            je[i] += je[j]
            kt2[i] = jpx[i] * jpx[i] + jpy[i] * jpy[i]
            y[i], phi[i] = rap_phi(jpx[i], jpy[i], jpz[i], je[i])
            # j leaves: the last live jet moves into its slot
            last = na - 1
            merged = i
            if j != last:
                jpx[j], jpy[j], jpz[j], je[j] = jpx[last], jpy[last], jpz[last], je[last]
                kt2[j], y[j], phi[j] = kt2[last], y[last], phi[last]
                nn[j], nn_d[j] = nn[last], nn_d[last]
                if i == last:
                    i = j
            na = last
            distances(i, na, y, phi, to_i)
            best_k, best_d = -1, np.inf  # the next pair among the jets other than i
            nb, nb_d = 0, np.inf  # i's nearest neighbour
            for k in range(na):
                if k == i:
                    continue
                target = nn[k]
                if target == merged or target == j:
                    # its neighbour moved or left: the new i when strictly closer than the old neighbour
                    # (nn_d[k] is at most the distance to every unchanged jet), else a full scan
                    if to_i[k] < nn_d[k]:
                        nn[k], nn_d[k] = i, to_i[k]
                    else:
                        nn[k], nn_d[k] = nearest(k, na, y, phi, scratch)
                else:
                    if target == last:
                        nn[k] = j
                    if to_i[k] < nn_d[k]:
                        nn[k], nn_d[k] = i, to_i[k]
                if to_i[k] < nb_d:
                    nb, nb_d = k, to_i[k]
                d = kt2[k] * nn_d[k]
                if d < best_d:
                    best_k, best_d = k, d
            if na > 1:
                nn[i], nn_d[i] = nb, nb_d
                d = kt2[i] * nn_d[i]
                if d < best_d or (d == best_d and i < best_k):
                    best_k, best_d = i, d
                i = best_k
            if na <= 3:
                for k in range(na):
                    axes_y[na - 1, k], axes_phi[na - 1, k] = y[k], phi[k]

    @numba.njit(cache=True, error_model="numpy")
    def run(px, py, pz, e, offsets, beta, r0):
        n_jets = len(offsets) - 1
        taus = np.zeros((n_jets, 3))
        axes_y = np.zeros((3, 3))  # [N - 1, axis]
        axes_phi = np.zeros((3, 3))
        for jet in range(n_jets):
            start, stop = offsets[jet], offsets[jet + 1]
            n = stop - start
            if n == 0:
                continue
            p_y = np.empty(n)
            p_phi = np.empty(n)
            p_pt = np.empty(n)
            norm = 0.0
            for p in range(n):
                q = start + p
                p_y[p], p_phi[p] = rap_phi(px[q], py[q], pz[q], e[q])
                p_pt[p] = math.sqrt(px[q] * px[q] + py[q] * py[q])
                norm += p_pt[p]
            norm *= r0**beta
            if norm <= 0.0:
                continue
            cluster_axes(
                px[start:stop].copy(),
                py[start:stop].copy(),
                pz[start:stop].copy(),
                e[start:stop].copy(),
                p_y.copy(),
                p_phi.copy(),
                axes_y,
                axes_phi,
            )
            totals = np.zeros(3)
            for p in range(n):
                for n_axes in range(1, min(n, 3) + 1):  # τN = 0 for jets with fewer than N constituents
                    best = np.inf
                    for a in range(n_axes):
                        d = delta_r2(p_y[p], p_phi[p], axes_y[n_axes - 1, a], axes_phi[n_axes - 1, a])
                        if d < best:
                            best = d
                    totals[n_axes - 1] += p_pt[p] * (math.sqrt(best) if beta == 1.0 else best ** (0.5 * beta))
            for n_axes in range(min(n, 3)):
                taus[jet, n_axes] = totals[n_axes] / norm
        return taus

    return run


_RUN = None


def kt_nsubjettiness(
    px: np.ndarray,
    py: np.ndarray,
    pz: np.ndarray,
    energy: np.ndarray,
    counts: np.ndarray,
    *,
    beta: float,
    r0: float,
) -> np.ndarray:
    """τ1, τ2, τ3 (contrib's ``KT_Axes`` + ``NormalizedMeasure``) of jets given by their constituents:
    flat ``px, py, pz, energy`` (GeV) with ``counts`` constituents per jet, in order. Returns (n_jets, 3);
    τN is 0 for a jet with fewer than N constituents."""
    global _RUN
    if _RUN is None:
        _RUN = _kernel()
    counts = np.asarray(counts, dtype=np.int64)
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    arrays = [np.ascontiguousarray(a, dtype=np.float64) for a in (px, py, pz, energy)]
    if any(len(a) != offsets[-1] for a in arrays):
        raise ValueError(f"kt_nsubjettiness: {offsets[-1]} constituents in counts, {len(arrays[0])} given")
    return _RUN(*arrays, offsets, float(beta), float(r0))

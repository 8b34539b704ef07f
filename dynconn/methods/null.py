"""The null model: how cohesive would communities be, and how strong components, without co-activation?

Surrogate data keep each neuron's own statistics (its trace, event rate, amplitudes, noise and
bleaching, exactly) but destroy co-activation between neurons: in each animal every neuron's
trace is circularly shifted by its own random lag (:func:`shift_traces`). Each surrogate runs
through the same chain as the data (:func:`dynconn.stages.surrogates.surrogate`: the affinity
stage's tensor, :func:`dynconn.methods.ntf.ncp_hals` at the run's rank, the communities stage's
partitions), and its communities' cohesion (:func:`cohesion_of`, the report's definition) and
its components' share of the tensor's energy (:func:`component_shares`) form the null
distributions.

*p*-values: a community's cohesion is compared with the surrogate communities of a
comparable size (:func:`size_pool`: ⌈s/2⌉ … s neurons; cohesion is a ratio of mean pair
loadings, and small groups reach high ratios by chance more easily than large ones), by the
permutation form ``p = (1 + #null ≥ observed) / (1 + #null)`` where enough null values
reach the observation, else from a fitted tail (:func:`tail_p`), so that a few surrogates
can give p < 0.01. A component's p-value is its most significant cohesive community's,
Bonferroni-corrected (:func:`component_p_value`): the surrogates destroy co-activation, and
a component is a finding about co-activation only through a group of neurons. Its energy
share against the surrogate components' (:func:`component_p_values`) is reported beside it.

Everything here is pure (arrays in, arrays out); :mod:`dynconn.stages.surrogates` runs the
surrogates, caches each one on disk and runs them in parallel.
"""

from __future__ import annotations

import numpy as np

#: A shift shorter than this fraction of the recording could leave slow co-fluctuations in
#: place (neighbouring lags); lags are drawn uniformly from [MIN_SHIFT, 1 − MIN_SHIFT] × frames.
MIN_SHIFT = 0.1


def shift_traces(traces: np.ndarray, present: np.ndarray, n_frames: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray:
    """Each recorded neuron's trace circularly shifted by an independent random lag, per animal.

    ``traces`` (A, N, F_max) (frames past ``n_frames[a]`` are padding and stay as they are),
    ``present`` (N, A), ``n_frames`` (A,). A lag is uniform in ``[MIN_SHIFT·F, (1−MIN_SHIFT)·F]``
    frames of that animal's own length F. Returns a new array."""
    out = np.array(traces, dtype=np.float64, copy=True)
    n_animals, n_neurons, _ = out.shape
    for a in range(n_animals):
        f = int(n_frames[a])
        lo, hi = max(1, int(MIN_SHIFT * f)), max(1, int((1 - MIN_SHIFT) * f))
        lags = rng.integers(lo, hi + 1, size=n_neurons)
        for i in np.flatnonzero(present[:, a]):
            out[a, i, :f] = np.roll(out[a, i, :f], lags[i])
    return out


def cohesion_of(w: np.ndarray, membership_row: np.ndarray) -> dict[int, tuple[int, float, float]]:
    """``{community id: (size, density, cohesion)}`` of one component's partition.

    *density*: mean pair loading between the community's members; *cohesion*: density / the
    mean pair loading over the component's whole graph (every neuron with a positive loading,
    assigned or not: the communities stage leaves neurons that do not contrast with the rest
    unassigned, and a community must be compared with them, not only with the other
    communities); NaN for a single neuron (no pair)."""
    out: dict[int, tuple[int, float, float]] = {}
    if not (membership_row >= 0).any():
        return out
    inside = np.flatnonzero(w.sum(axis=1) > 0)
    n = inside.size
    graph_density = w[np.ix_(inside, inside)].sum() / (n * (n - 1)) if n > 1 else 0.0
    for k in np.unique(membership_row[membership_row >= 0]):
        members = np.flatnonzero(membership_row == k)
        size = int(members.size)
        density = float(w[np.ix_(members, members)].sum() / (size * (size - 1))) if size > 1 else float("nan")
        cohesion = density / graph_density if size > 1 and graph_density > 0 else float("nan")
        out[int(k)] = (size, density, float(cohesion))
    return out


def component_shares(weights: np.ndarray, X: np.ndarray, mask: np.ndarray | None = None,
                     time_groups: np.ndarray | None = None) -> np.ndarray:
    """Each component's share of the observed tensor's energy: ``weight_r² / ‖M∘X‖²`` (R,).

    Factors are unit-norm, so ``weight_r²`` is the squared norm of component r; the share is
    the "gain" a component brings, on a scale that is comparable between the data and a
    surrogate of it (same traces, so nearly the same ‖X‖)."""
    X = np.asarray(X)
    if mask is None:
        total = float(np.sum(np.asarray(X, dtype=np.float64) ** 2))
    else:
        m = np.asarray(mask, dtype=bool)
        if time_groups is not None:
            m = m[:, np.asarray(time_groups)][:, :, None]  # (P, T, 1)
        else:
            m = m[:, None, :]  # (P, 1, A)
        total = float(np.sum(np.where(m, np.asarray(X, dtype=np.float64), 0.0) ** 2))
    w = np.asarray(weights, dtype=np.float64)
    return w ** 2 / total if total > 0 else np.zeros_like(w)


def permutation_p(observed: float, null: np.ndarray) -> float:
    """``(1 + #null ≥ observed) / (1 + #null)``; NaN without a null or an observation."""
    null = np.asarray(null, dtype=float)
    null = null[np.isfinite(null)]
    if not null.size or not np.isfinite(observed):
        return float("nan")
    return float((1 + np.count_nonzero(null >= observed)) / (1 + null.size))


#: Permutation p-values rest on the null values at least as large as the observation; with fewer
#: than this many of them the p-value comes from the fitted tail instead (Knijnenburg et al.,
#: Bioinformatics 2009: a permutation p is well estimated from about 10 exceedances on).
MIN_EXCEEDANCES = 10
#: With fewer comparable surrogate communities than this, every smaller one is compared too.
MIN_POOL = 20


def tail_p(observed: float, null: np.ndarray, floor: float = 1.0) -> float:
    """p-value of ``observed`` against ``null`` values.

    The permutation p-value (:func:`permutation_p`) when at least ``MIN_EXCEEDANCES`` null
    values reach the observation. Beyond that the permutation p is only a bound
    (``1 / (1 + #null)`` at best), so the tail is fitted: chance communities fall in two
    modes (docs/benchmarks.md) — diffuse ones below ``floor`` (the cohesion threshold) and
    dense ones above it, whose log-cohesions are close to normal. With the n log null values
    above the floor (mean m, SD s), a new draw from that normal is Student-t distributed
    around m, ``(x − m) / (s·√(1 + 1/n)) ~ t(n − 1)`` (the predictive distribution: it
    carries the uncertainty of m and s, so few surrogates give wide tails, not small
    p-values), and ``p = (n / #null) · T(log observed) / T(log floor)`` with T that
    distribution's survival function. Falls back to the permutation p with fewer than 3
    values above the floor."""
    from scipy.stats import t as student

    null = np.asarray(null, dtype=float)
    null = null[np.isfinite(null)]
    if not null.size or not np.isfinite(observed):
        return float("nan")
    if np.count_nonzero(null >= observed) >= MIN_EXCEEDANCES or observed < floor:
        return permutation_p(observed, null)
    upper = null[(null >= floor) & (null > 0)]
    if upper.size < 3 or not np.log(upper).std(ddof=1) > 0:
        return permutation_p(observed, null)
    logs = np.log(upper)
    n = logs.size
    centre, scale = logs.mean(), logs.std(ddof=1) * np.sqrt(1 + 1 / n)
    above_floor = student.sf((np.log(floor) - centre) / scale, n - 1) if floor > 0 else 1.0
    conditional = min(1.0, student.sf((np.log(observed) - centre) / scale, n - 1) / above_floor)
    return float(n / null.size * conditional)


def size_pool(size: int, null_sizes: np.ndarray) -> np.ndarray:
    """Which surrogate communities a community of ``size`` neurons is compared with: those of
    ⌈size/2⌉ … size neurons, or, when fewer than ``MIN_POOL`` are, every one of 2 … size.
    Never larger ones: a smaller group reaches a high cohesion by chance more easily (fewer
    pairs to keep dense), so comparing with smaller groups errs on the safe side."""
    null_sizes = np.asarray(null_sizes)
    pool = (null_sizes >= max(2, -(-int(size) // 2))) & (null_sizes <= size)
    if pool.sum() < MIN_POOL:
        pool = (null_sizes >= 2) & (null_sizes <= size)
    return pool


def community_p_values(sizes: np.ndarray, cohesions: np.ndarray, null_sizes: np.ndarray,
                       null_cohesions: np.ndarray, floor: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """p-value (:func:`tail_p`, ``floor``: the cohesion threshold) of each community's
    cohesion against the surrogate communities of a comparable size (:func:`size_pool`).
    Returns ``(p (K,), n_null (K,))``: NaN (and 0) for a single neuron."""
    sizes = np.asarray(sizes)
    null_cohesions = np.asarray(null_cohesions, dtype=float)
    p = np.full(sizes.size, np.nan)
    n_null = np.zeros(sizes.size, dtype=np.int64)
    for k, (size, coh) in enumerate(zip(sizes, np.asarray(cohesions, dtype=float))):
        if size < 2:
            continue
        pool = null_cohesions[size_pool(int(size), null_sizes)]
        n_null[k] = pool.size
        p[k] = tail_p(coh, pool, floor)
    return p, n_null


def component_p_value(community_p: np.ndarray) -> float:
    """A component's p-value for co-activation: its most significant community's, corrected
    for the number of its communities tested (Bonferroni, capped at 1). NaN when none was."""
    p = np.asarray(community_p, dtype=float)
    p = p[np.isfinite(p)]
    return float(min(1.0, p.min() * p.size)) if p.size else float("nan")


def component_p_values(shares: np.ndarray, null_shares: np.ndarray) -> np.ndarray:
    """p-value (:func:`permutation_p`) of each component's energy share against every
    surrogate component's (pooled): does it explain more of the data than chance components
    do? Informative only — a strong component may be made of single neurons' activity."""
    return np.asarray([permutation_p(s, null_shares) for s in np.asarray(shares, dtype=float)])

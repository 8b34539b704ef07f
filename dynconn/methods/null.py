"""The null model: would a community replicate across animals without co-activation?

Surrogate data keep each neuron's own statistics (its trace, event rate, amplitudes, noise and
bleaching, exactly) but destroy co-activation between neurons: in each animal every neuron's
trace is circularly shifted by its own random lag (:func:`shift_traces`). Each surrogate runs
through the same chain as the data (:func:`dynconn.stages.surrogates.surrogate`: the affinity
stage's tensor, :func:`dynconn.methods.ntf.ncp_hals` at the run's rank, the communities stage's
partitions).

The statistic is a community's **replication** (:func:`replication`): in each animal, the
contrast of its members' affinity with each other against their affinity with the other
recorded neurons, both weighted by the component's temporal loading
(:func:`projected_affinity`, :func:`animal_contrasts`); then the geometric mean over animals.
Why not the cohesion of the pair loadings (:func:`cohesion_of`, still what makes a community
*cohesive*): the factorization pools the animals, so a chance group that is dense in one
animal's noise reaches a high cohesion as easily as a motif seen in every animal, and the
communities stage keeps few, small, dense chance communities — a thin null that left planted
motifs of the realistic simulator at p = 0.1–0.3 (docs/benchmarks.md). A co-activation motif
raises the contrast in each animal that has it; a chance group, in one at most.

*p*-values: each surrogate component contributes its graph's largest replication
(:func:`graph_maxima`, 0 without a community), and a community's replication is compared with
those maxima (:func:`community_p_values`): the p-value of the best community of a component is
then that of the component (chance would have to produce such a community *anywhere* in a
graph), and the other communities' are conservative. The comparison is conditional on a
community being there (null components without one do not count: :func:`tail_p` says why).
Within the null's range the permutation p-value; beyond its largest value a fitted tail, so
that a few surrogates can give p < 0.01. A component's p-value is its smallest community p-value
(:func:`component_p_value`); its energy share against the surrogate components'
(:func:`component_p_values`) is reported beside it.

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


def component_shares(weights: np.ndarray, X, mask: np.ndarray | None = None,
                     time_groups: np.ndarray | None = None) -> np.ndarray:
    """Each component's share of the observed tensor's energy: ``weight_r² / ‖M∘X‖²`` (R,).

    Factors are unit-norm, so ``weight_r²`` is the squared norm of component r; the share is
    the "gain" a component brings, on a scale that is comparable between the data and a
    surrogate of it (same traces, so nearly the same ‖X‖). ``X`` (P, T, A), any array or a
    handle read by row ranges (``X[start:stop]``: an h5py dataset, a
    :class:`~dynconn.io.artifacts.RowBlocks`), summed by ``PROJECT_BLOCK`` pairs in float64, so
    the memory is a block's whatever P."""
    P = X.shape[0]
    m = None if mask is None else np.asarray(mask, dtype=bool)
    groups = None if time_groups is None else np.asarray(time_groups, dtype=np.int64)
    total = 0.0
    for start in range(0, P, PROJECT_BLOCK):
        stop = min(P, start + PROJECT_BLOCK)
        block = np.asarray(X[start:stop], dtype=np.float64)  # (b, T, A)
        if m is not None:
            seen = m[start:stop]
            # (b, T, 1) with time groups (each bin belongs to one animal's group), else (b, 1, A)
            block = np.where(seen[:, groups][:, :, None] if groups is not None else seen[:, None, :], block, 0.0)
        total += float(np.einsum("bta,bta->", block, block))
    w = np.asarray(weights, dtype=np.float64)
    return w ** 2 / total if total > 0 else np.zeros_like(w)


def permutation_p(observed: float, null: np.ndarray) -> float:
    """``(1 + #null ≥ observed) / (1 + #null)``; NaN without a null or an observation."""
    null = np.asarray(null, dtype=float)
    null = null[np.isfinite(null)]
    if not null.size or not np.isfinite(observed):
        return float("nan")
    return float((1 + np.count_nonzero(null >= observed)) / (1 + null.size))


#: Per-animal contrasts are clipped to [MIN_CONTRAST, 1 / MIN_CONTRAST] before the geometric
#: mean: an animal where the members' affinity is (nearly) zero, or where nothing else has any,
#: must not send the mean to 0 or infinity on its own.
MIN_CONTRAST = 0.01
#: Pairs projected at once by :func:`projected_affinity` (bounds its memory: block × T × A values).
PROJECT_BLOCK = 8192


def tail_p(observed: float, null: np.ndarray) -> float:
    """p-value of a community's replication ``observed`` against the null graphs' largest
    replications ``null`` (≥ 0; 0 = a null component without a community).

    *Conditional on a community*: only the positive null values count. A community is reported
    only where the communities stage found one, and on data without co-activation most
    components have none (on the realistic standard preset, 24 of 30 surrogate components);
    counting those zeros as "less extreme" would divide every chance community's p-value by
    the fraction of null graphs with a community (about 5× there), so that far more than α of
    the reported chance communities would reach p < α.

    Within the null's range, the permutation p-value ``(1 + #positive ≥ observed) /
    (1 + #positive)``: exact under no co-activation (the observation is exchangeable with the
    surrogates'). Beyond the largest null value the permutation p is only a bound
    (``1 / (1 + #positive)``), so the tail is extrapolated: with the n positive null values (log
    mean m, SD s), a new one's log is Student-t distributed around m,
    ``(x − m) / (s·√(1 + 1/n)) ~ t(n − 1)`` (the predictive distribution: it carries the
    uncertainty of m and s, so few surrogates give wide tails), and ``p = min(1 / (1 + n),
    T(log observed))`` with T its survival function. The fit only ever lowers a p-value that
    is already the smallest the permutation can give, so the p-values stay valid at every
    α ≥ 1 / (1 + n); a fitted tail that is too light (measured: the log maxima are right-skewed)
    cannot make chance communities between the null values look significant. With fewer than 3
    positive null values, the permutation bound (1 when the surrogates made no community at
    all: nothing to compare with; raise ``report.surrogates``)."""
    from scipy.stats import t as student

    null = np.asarray(null, dtype=float)
    if not np.isfinite(observed) or not np.isfinite(null).any():
        return float("nan")
    positive = null[np.isfinite(null) & (null > 0)]
    reached = int(np.count_nonzero(positive >= observed))
    direct = (1 + reached) / (1 + positive.size)
    if reached or observed <= 0 or positive.size < 3:
        return float(direct)
    logs = np.log(positive)
    n, spread = logs.size, logs.std(ddof=1)
    if not spread > 0:
        return float(direct)
    scale = spread * np.sqrt(1 + 1 / n)
    return float(min(direct, student.sf((np.log(observed) - logs.mean()) / scale, n - 1)))


def projected_affinity(X, mask: np.ndarray | None, f_time: np.ndarray,
                       time_groups: np.ndarray | None = None) -> np.ndarray:
    """Each pair's affinity in each animal, averaged over time with each component's temporal
    loading as weights: ``Y[p, a, r] = Σ_t f_time[t, r] X[p, t, a] / Σ_t f_time[t, r]``.

    ``X`` (P, T, A) — with ``time_groups`` (T,) (the concatenated layout), X (P, T, 1) and
    the sums run over each group's (animal's) bins —, any array or an h5py dataset (read by
    ``PROJECT_BLOCK`` pairs); ``mask`` (P, A) or (P, G), True = observed (None: all);
    ``f_time`` (T, R). Returns (P, A or G, R) float64, NaN where the pair is not observed
    (or the component has no loading in that animal's bins)."""
    f = np.asarray(f_time, dtype=np.float64)
    P, T = X.shape[0], X.shape[1]
    if time_groups is not None:
        groups = np.asarray(time_groups, dtype=np.int64)
        n_groups = int(np.shape(mask)[1]) if mask is not None else int(groups.max()) + 1
        weights = np.zeros((T, n_groups, f.shape[1]))  # (T, G, R): the loading within its animal's bins
        weights[np.arange(T), groups] = f
    else:
        weights = f[:, None, :]  # (T, 1, R)
    totals = weights.sum(axis=0)  # (A or G, R)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.where(totals > 0, 1.0 / totals, np.nan)
    out = np.empty((P, totals.shape[0] if time_groups is not None else X.shape[2], f.shape[1]))
    for start in range(0, P, PROJECT_BLOCK):
        stop = min(P, start + PROJECT_BLOCK)
        block = np.asarray(X[start:stop], dtype=np.float64)  # (b, T, A)
        if time_groups is not None:
            out[start:stop] = np.einsum("bt,tgr->bgr", block[:, :, 0], weights) * norm
        else:
            out[start:stop] = np.einsum("bta,tr->bar", block, f) * norm
    if mask is not None:
        out[~np.asarray(mask, dtype=bool)] = np.nan
    return out


def animal_contrasts(Y: np.ndarray, pairs: np.ndarray, members) -> np.ndarray:
    """Per animal, the mean affinity between the members / the mean affinity between a member
    and any other recorded neuron (``Y`` (P, A): one component's :func:`projected_affinity`,
    NaN = not observed; ``pairs`` (P, 2) neuron indices). Returns (A,): NaN in an animal with
    fewer than 2 recorded members or no other recorded neuron; ``inf`` where the members'
    links to the others are all 0 and theirs are not."""
    members = np.asarray(members, dtype=np.int64)
    inside = np.zeros(int(max(pairs.max(initial=-1), members.max(initial=-1))) + 1, dtype=bool)
    inside[members] = True
    a_in, b_in = inside[pairs[:, 0]], inside[pairs[:, 1]]

    def mean(rows):
        values = Y[rows]
        seen = np.isfinite(values)
        count = seen.sum(axis=0)
        total = np.where(seen, values, 0.0).sum(axis=0)
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)

    within, between = mean(a_in & b_in), mean(a_in ^ b_in)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(between > 0, within / between, np.where((between == 0) & (within > 0), np.inf, np.nan))


def replication(contrasts: np.ndarray) -> float:
    """The geometric mean over animals of :func:`animal_contrasts`, each clipped to
    ``[MIN_CONTRAST, 1 / MIN_CONTRAST]``; an animal without a contrast (fewer than 2 recorded
    members) counts as 1 — no evidence either way, so a group recorded in few animals needs
    stronger contrasts there to reach the same replication."""
    c = np.asarray(contrasts, dtype=float)
    c = np.where(np.isnan(c), 1.0, np.clip(c, MIN_CONTRAST, 1.0 / MIN_CONTRAST))
    return float(np.exp(np.mean(np.log(c)))) if c.size else float("nan")


def community_replication(Y: np.ndarray, pairs: np.ndarray, membership_row: np.ndarray) -> dict[int, float]:
    """``{community id: replication}`` for every community of ≥ 2 neurons of one component's
    partition (``Y`` (P, A): that component's :func:`projected_affinity`)."""
    row = np.asarray(membership_row)
    out: dict[int, float] = {}
    for k in np.unique(row[row >= 0]):
        members = np.flatnonzero(row == k)
        if members.size > 1:
            out[int(k)] = replication(animal_contrasts(Y, pairs, members))
    return out


def component_replications(X, mask: np.ndarray | None, f_time: np.ndarray, pairs: np.ndarray,
                           membership: np.ndarray, time_groups: np.ndarray | None = None) -> list[dict[int, float]]:
    """Per component, ``{community id: replication}`` (:func:`community_replication`) of the
    partitions ``membership`` (R, N), from the tensor ``X`` (:func:`projected_affinity`'s
    arguments): the data's and each surrogate's, the same way."""
    Y = projected_affinity(X, mask, f_time, time_groups)
    return [community_replication(Y[:, :, r], pairs, membership[r]) for r in range(np.shape(membership)[0])]


def graph_maxima(per_component: list[dict[int, float]]) -> np.ndarray:
    """Each component's largest community replication (R,); 0 for a component without a
    community of ≥ 2 neurons (chance made no group there)."""
    return np.asarray([max(d.values()) if d else 0.0 for d in per_component], dtype=np.float64)


def community_p_values(replications: np.ndarray, null_maxima: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """p-value (:func:`tail_p`) of each community's replication against the surrogate
    components' largest replications (:func:`graph_maxima`, pooled). Returns ``(p (K,),
    n_null (K,))``, ``n_null`` the null components with a community (those compared): NaN
    (and 0) where a community has no replication (a single neuron)."""
    reps = np.asarray(replications, dtype=float)
    null_maxima = np.asarray(null_maxima, dtype=float)
    p = np.full(reps.size, np.nan)
    n_null = np.zeros(reps.size, dtype=np.int64)
    for k, rep in enumerate(reps):
        if np.isfinite(rep):
            p[k] = tail_p(rep, null_maxima)
            n_null[k] = np.count_nonzero(np.isfinite(null_maxima) & (null_maxima > 0))
    return p, n_null


def component_p_value(community_p: np.ndarray) -> float:
    """A component's p-value for co-activation: its most significant community's. No further
    correction: community p-values compare with the null *graphs'* largest replication, so the
    smallest of them already answers "could chance make such a community anywhere in this
    component's graph?". NaN when none was tested."""
    p = np.asarray(community_p, dtype=float)
    p = p[np.isfinite(p)]
    return float(p.min()) if p.size else float("nan")


def component_p_values(shares: np.ndarray, null_shares: np.ndarray) -> np.ndarray:
    """p-value (:func:`permutation_p`) of each component's energy share against every
    surrogate component's (pooled): does it explain more of the data than chance components
    do? Informative only — a strong component may be made of single neurons' activity."""
    return np.asarray([permutation_p(s, null_shares) for s in np.asarray(shares, dtype=float)])

"""One motif, one component: merge CP components that are the same motif (in different animals,
or its pairs split at the same times), and fit a time course per animal (``factorize.time_courses: per_animal``: :func:`unfold_animals`,
:func:`prepare_unfolded`, :func:`fold_animals`).

A CP component has one temporal loading shared by the animals that carry it. When a motif's
timing differs between animals (onset jitter of a few seconds, per-animal latency), one rank-one
term cannot follow every animal, and the fit spends several components on the same pair pattern,
each carried by the animals whose timing it follows: one motif becomes per-animal components with
identical communities. Such components are recognised after the fit by two facts together:

- their **pair patterns are alike** (Pearson correlation of the pair factors ≥ ``similarity``);
- their **animals are complementary** (cosine of their per-animal energy profiles ≤
  ``max_animal_overlap``): each animal carries one of them, not both; **or their time courses
  agree** (Pearson correlation of their time × animal courses ≥ ``time_similarity``): they are
  active at the same times in the same animals. The second case is one motif whose pairs the
  fit split in two: a motif's events each recruit a random subset of its members, so its
  affinity is not rank one and a least-squares fit with components to spare spends two
  overlapping pair sets on it (measured on the easy preset, docs/benchmarks.md). Two components with the same pairs in the
  same animals at *different* times are different temporal events; they are left apart (the
  report's duplicate flag is for them).

A merged group G becomes one reported component whose pair factor is the weight-averaged pair
factor (``Σ_{r∈G} w_r U_r``, unit norm), and whose temporal × animal pattern is the best
rank-one fit of the group's combined slab ``M = Σ_{r∈G} w_r V_r W_rᵀ`` (T × A; its leading
singular pair, non-negative for a non-negative M). In the concatenated layout the animal mode is
trivial and ``M`` is a single column, so the combined temporal loading is exact: each animal's
stretch of time keeps its own component's loading. Shift-CP (a per-animal time shift per
component) was the alternative; docs/method.md gives the measurement behind this choice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .evidence import component_energy_by_animal


@dataclass
class MergedCP:
    """The reported components: ``weights`` (R'), ``pairs`` (P, R'), ``time`` (T, R'),
    ``animals`` (A, R'), sorted by weight; ``merged_from`` (R,) the reported component of
    each fitted component; ``groups`` the fitted components of each reported one."""

    weights: np.ndarray
    pairs: np.ndarray
    time: np.ndarray
    animals: np.ndarray
    merged_from: np.ndarray
    groups: list[list[int]]


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x)
    return x / norm if norm > 0 else x


def _slab(weights, time_f, animal_f, members) -> np.ndarray:
    """The combined temporal × animal slab Σ_{r∈members} w_r V_r W_rᵀ (T, A)."""
    return sum(weights[r] * np.outer(time_f[:, r], animal_f[:, r]) for r in members)


def _profile(weights, time_f, animal_f, time_groups, n_animals, members) -> np.ndarray:
    """Unit per-animal energy profile (A,) of the combined slab of ``members``."""
    if time_groups is None:
        slab = _slab(weights, time_f, animal_f, members)
        energy = (slab ** 2).sum(axis=0)
    else:
        v = sum(weights[r] * time_f[:, r] for r in members)
        energy = component_energy_by_animal(v[:, None], None, time_groups, n_animals)[:, 0]
    return _unit(np.sqrt(energy))


def _course(weights, time_f, animal_f, members) -> np.ndarray:
    """Centred unit time × animal course (T·A,) of the combined slab of ``members`` (in the
    unfolded and concatenated layouts the animal mode is trivial: the per-animal courses one after
    another); the inner product of two is their Pearson correlation."""
    slab = _slab(weights, time_f, animal_f, members).ravel()
    return _unit(slab - slab.mean())


def combine(group: list[int], weights: np.ndarray, pair_f: np.ndarray | None, time_f: np.ndarray,
            animal_f: np.ndarray) -> tuple[float, np.ndarray | None, np.ndarray, np.ndarray]:
    """One reported component from the fitted components ``group``: ``(weight, pair factor
    (P,) or None when ``pair_f`` is None, temporal loading (T,), animal loading (A,))``. A
    single component is itself; a group is its weight-averaged unit pair factor and the best
    rank-one fit of its combined temporal x animal slab (module docstring)."""
    weights = np.asarray(weights, dtype=np.float64)
    if len(group) == 1:
        r = group[0]
        return (float(weights[r]), None if pair_f is None else pair_f[:, r], np.asarray(time_f[:, r], dtype=np.float64),
                np.asarray(animal_f[:, r], dtype=np.float64))
    u = None if pair_f is None else _unit(np.asarray(pair_f, dtype=np.float64)[:, group] @ weights[group])
    slab = _slab(weights, time_f, animal_f, group)
    s, v, a = rank_one(slab)
    return s, u, v, a


def rank_one(slab: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """``(s, v, a)``: the best rank-one fit ``s · v aᵀ`` of a non-negative (T, A) slab, ``v``
    (T,) and ``a`` (A,) of unit norm and non-negative."""
    left, sv, right = np.linalg.svd(np.asarray(slab, dtype=np.float64), full_matrices=False)
    # the leading singular vectors of a non-negative matrix are one-signed (Perron-Frobenius);
    # abs() fixes the arbitrary sign and round-off at zero entries
    return float(sv[0]), np.abs(left[:, 0]), np.abs(right[0])


def fits_per_animal(time_courses: str, time_groups) -> bool:
    """Whether a fit unfolds the animals (:func:`prepare_unfolded`): ``factorize.time_courses:
    per_animal`` on an aligned tensor (no ``time_groups``; a concatenated one is per animal already)."""
    return time_courses == "per_animal" and time_groups is None


def observed_mass(pairs_f: np.ndarray, mask) -> np.ndarray | None:
    """(A, R): the share of each component's pair energy (Σ_p U[p, r]²) recorded in each animal,
    from the pair factor ``pairs_f`` (P, R) and the mask (P, A) (True = recorded); None without a
    mask (every pair recorded everywhere)."""
    if mask is None:
        return None
    energy = np.asarray(pairs_f, dtype=np.float64) ** 2
    total = energy.sum(axis=0)
    recorded = np.asarray(mask, dtype=np.float64).T @ energy
    return np.divide(recorded, total, out=np.ones_like(recorded), where=total > 0)


def fold_animals(weights: np.ndarray, time_f: np.ndarray, n_animals: int,
                 mass: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """Per-animal time courses (``factorize.time_courses: per_animal``) in the design's CP shapes.

    ``weights`` (R) and ``time_f`` (A·T, R), unit-norm columns, the animals' bins one after
    another (animal-major, as :func:`unfold_animals` lays them out; the animal mode of that fit
    is trivial). Returns ``(weights', time (T, R), animals (A, R), courses (A, T, R))``: each
    component's best rank-one time × animal summary of its slab (:func:`rank_one`: exact when
    every animal has the same course up to a scale) with ``weights'`` its norm, and the fitted
    courses scaled so that ``weights'[r] · courses[:, :, r]`` is the fitted slab — the summary is
    the CP model the later stages read; the courses are the fit.

    ``mass`` (A, R), :func:`observed_mass`: the summary is the best rank-one fit of what the
    component puts on the *recorded* entries — animal a's course weighs √mass[a] in the time
    summary — and each animal's loading is its course's projection on that summary. Without it
    every animal counts as if all of the component's pairs were recorded there. Why: a component
    whose best pairs were not recorded in an animal is left free there; its course in that animal
    fits, through the weak loadings of other pairs, activity that is not the motif's, and could
    dominate the summary (docs/factorization.md, "The time summary")."""
    weights, time_f = np.asarray(weights, dtype=np.float64), np.asarray(time_f, dtype=np.float64)
    n_animals = int(n_animals)
    n_time = time_f.shape[0] // n_animals
    if n_time * n_animals != time_f.shape[0]:
        raise ValueError(f"time factor of {time_f.shape[0]} bins is not {n_animals} animals' equal stretches")
    slabs = weights * time_f.reshape(n_animals, n_time, weights.size)  # (A, T, R)
    if mass is None:
        fits = [rank_one(slabs[:, :, r].T) for r in range(weights.size)]
    else:
        fits = [_rank_one_weighted(slabs[:, :, r].T, np.sqrt(np.clip(mass[:, r], 0.0, 1.0)))
                for r in range(weights.size)]
    out_w = np.array([s for s, _, _ in fits])
    courses = np.divide(slabs, out_w, out=np.zeros_like(slabs), where=out_w > 0)
    return out_w, np.stack([v for _, v, _ in fits], axis=1), np.stack([a for _, _, a in fits], axis=1), courses


def _rank_one_weighted(slab: np.ndarray, column_weights: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """:func:`rank_one` of a (T, A) slab whose columns weigh ``column_weights`` in the time
    vector: ``v`` the leading left singular vector of ``slab · diag(column_weights)``, then each
    column's loading its projection ``slabᵀ v`` (for a given ``v`` the best loading of a column
    whatever its weight), ``s`` their norm. Weights of 1 are :func:`rank_one`."""
    _, v, _ = rank_one(slab * column_weights[None, :])
    loadings = np.clip(np.asarray(slab, dtype=np.float64).T @ v, 0.0, None)
    s = float(np.linalg.norm(loadings))
    return s, v, (loadings / s if s > 0 else loadings)


def fold_sorted(weights: np.ndarray, time_f: np.ndarray, n_animals: int,
                mass: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """:func:`fold_animals` with the components sorted by their summary's weight, descending:
    ``(order, weights', time, animals, courses)``, ``order`` the fitted component of each."""
    weights, time_f, animal_f, courses = fold_animals(weights, time_f, n_animals, mass)
    order = np.argsort(-weights, kind="stable")
    return order, weights[order], time_f[:, order], animal_f[:, order], courses[:, :, order]


def unfold_animals(X) -> tuple:
    """``(X', groups)``: an aligned tensor (P, T, A) as (P, A·T, 1), each animal's bins one after
    another, and the animal of each bin (A·T,) — the concatenated layout's shape, so that the
    solver fits a time course per animal (its ``time_groups``). An array is copied; a tensor read
    by blocks of pairs (anything sliced ``X[start:stop]``, e.g. the solver's out-of-core source)
    is wrapped, each block unfolded as it is read (:class:`UnfoldedRows`)."""
    n_pairs, n_time, n_animals = (int(d) for d in X.shape)
    groups = np.repeat(np.arange(n_animals, dtype=np.int64), n_time)
    if not isinstance(X, np.ndarray):
        return UnfoldedRows(X), groups
    return np.ascontiguousarray(np.swapaxes(X, 1, 2)).reshape(n_pairs, n_animals * n_time, 1), groups


def prepare_unfolded(X, mask=None, *, observed_sum_of_squares=None, dtype="float32"):
    """``(data, groups)``: X (P, T, A) validated and scanned in its own shape
    (:func:`dynconn.methods.ntf.prepare`, so the observed sum of squares has the same bits as the
    affinity stage's record of it), then unfolded (:func:`unfold_animals`) and prepared for the
    solver with its time groups."""
    from . import ntf

    data = ntf.prepare(X, mask, dtype=dtype, observed_sum_of_squares=observed_sum_of_squares)
    unfolded, groups = unfold_animals(data.X)
    if mask is None:  # time groups need one: every pair observed in every animal
        mask = np.ones((data.shape[0], data.shape[2]), dtype=bool)
    return ntf.prepare(unfolded, mask, time_groups=groups, dtype=dtype, observed_sum_of_squares=data.norm_sq), groups


class UnfoldedRows:
    """A (P, T, A) tensor read by blocks of pairs, seen as (P, A·T, 1) (:func:`unfold_animals`):
    the solver's out-of-core protocol (``shape``, ``dtype``, ``read_rows``)."""

    def __init__(self, source):
        self.source = source
        n_pairs, self._time, self._animals = (int(d) for d in source.shape)
        self.shape = (n_pairs, self._animals * self._time, 1)
        self.dtype = np.dtype(source.dtype)

    def read_rows(self, start: int, stop: int, out: np.ndarray) -> np.ndarray:
        out[...] = np.swapaxes(np.asarray(self.source[start:stop]), 1, 2).reshape(stop - start, -1, 1)
        return out


def reported_time(groups: list[list[int]], weights: np.ndarray, time_f: np.ndarray,
                  animal_f: np.ndarray) -> np.ndarray:
    """(T, len(groups)) the temporal loadings of the reported components ``groups`` (as
    :attr:`MergedCP.groups`) built from another fit whose components are in the same order as
    the fit that was merged (e.g. a restart matched to the best one)."""
    return np.stack([combine(g, weights, None, time_f, animal_f)[2] for g in groups], axis=1) if groups \
        else np.zeros((time_f.shape[0], 0))


def merge_duplicates(
    weights: np.ndarray, pair_f: np.ndarray, time_f: np.ndarray, animal_f: np.ndarray, *,
    time_groups: np.ndarray | None = None, n_animals: int | None = None,
    similarity: float = 0.4, max_animal_overlap: float = 0.5, time_similarity: float = 0.2,
) -> MergedCP:
    """Merge components with similar pair patterns carried by complementary animals or active
    at the same times (module docstring).

    ``weights`` (R), ``pair_f`` (P, R), ``time_f`` (T, R), ``animal_f`` (A, R) (unit-norm
    columns, as the solver returns them); ``time_groups`` the animal of each bin in the
    concatenated layout (``n_animals`` animals), else None. ``similarity`` > 1 disables merging;
    ``time_similarity`` > 1 merges only across complementary animals. Greedy: the most similar
    pair of groups first, while the groups' combined profiles stay complementary or their
    combined courses agree.
    """
    weights = np.asarray(weights, dtype=np.float64)
    pair_f, time_f = np.asarray(pair_f, dtype=np.float64), np.asarray(time_f, dtype=np.float64)
    animal_f = np.asarray(animal_f, dtype=np.float64)
    n_comp = weights.size
    n_animals = int(n_animals if n_animals is not None else animal_f.shape[0])
    groups: list[list[int]] = [[r] for r in range(n_comp)]
    # Similarity is Pearson correlation, not cosine: non-negative patterns have a positive cosine
    # by chance (two dense uniform patterns ≈ 0.75), correlation is ≈ 0 for unrelated ones
    # whatever their density. A group's pair pattern is Σ_{r∈g} w_r u_r; its centred inner
    # products with another's follow from the R × R Gram matrix of the centred unit pair factors:
    # one GEMM over the P pairs instead of P-long vectors per group and pair of groups (which
    # cost seconds at 10⁵ pairs in small BLAS calls).
    norms = np.linalg.norm(pair_f, axis=0)
    units = pair_f / np.where(norms > 0, norms, 1.0)
    units -= units.mean(axis=0)  # in place: P × R can be large
    gram = units.T @ units
    while len(groups) > 1:
        best = None
        coef = np.zeros((len(groups), n_comp))
        for i, g in enumerate(groups):
            coef[i, g] = weights[g]
        inner = coef @ gram @ coef.T
        length = np.sqrt(np.clip(np.diag(inner), 0.0, None))
        length = np.where(length > 0, length, np.inf)  # a constant pattern correlates with nothing
        corr = inner / length[:, None] / length[None, :]  # correlation of the groups' pair patterns
        profile = [_profile(weights, time_f, animal_f, time_groups, n_animals, g) for g in groups]
        course = [_course(weights, time_f, animal_f, g) for g in groups]
        for i in range(len(groups)):
            for j in range(i + 1, len(groups)):
                r = float(corr[i, j])
                if r < similarity or (best is not None and r <= best[0]):
                    continue
                if float(profile[i] @ profile[j]) <= max_animal_overlap \
                        or float(course[i] @ course[j]) >= time_similarity:
                    best = (r, i, j)
        if best is None:
            break
        _, i, j = best
        groups[i] = sorted(groups[i] + groups[j])
        del groups[j]

    out_w, out_u, out_v, out_a = [], [], [], []
    for g in groups:
        w, u, v, a = combine(g, weights, pair_f, time_f, animal_f)
        out_w.append(w); out_u.append(u); out_v.append(v); out_a.append(a)
    order = np.argsort(-np.asarray(out_w), kind="stable")
    merged_from = np.empty(n_comp, dtype=np.int32)
    for new, old in enumerate(order):
        merged_from[groups[old]] = new
    def in_order(columns: list) -> np.ndarray:
        return np.stack([columns[k] for k in order], axis=1)

    return MergedCP(np.asarray(out_w)[order], in_order(out_u), in_order(out_v), in_order(out_a), merged_from,
                    [groups[k] for k in order])

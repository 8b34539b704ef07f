"""Red flags: the reasons not to trust a finding, computed from the run's results.

Every flag is a short name (in ``summary.json`` ``components[].flags`` and
``communities_detail[].flags``) with a one-line explanation (``flag_notes``). The rules and
their thresholds (docs/report.md, "Red flags"):

``rank_at_edge``        the rank was chosen automatically and is the smallest or largest of the
                        sweep (the best rank may lie outside it) — on every component.
``missing_neurons``     a cohesive community of ≥ ``MISSING_MIN_SIZE`` neurons overlaps the
                        neurons missing in some animal with Jaccard ≥ ``MISSING_JACCARD``: the
                        "group" may be the pattern of what was not recorded, not of co-activation.
``not_significant``     the component's p-value (its best cohesive community's) is ≥ alpha;
                        for a community: its replication's p-value is ≥ alpha.
``community_not_significant``  a cohesive community of the component is ``not_significant``.
``unstable``            the partition's stability across community-detection runs (mean ARI)
                        is below ``MIN_STABILITY``.
``negative_modularity`` the reported partition's weighted modularity is < 0: it is no better
                        than random at putting strong pairs inside communities.
``one_animal``          with ≥ 2 animals, more than ``ONE_ANIMAL_SHARE`` of the energy of the
                        component's animal loading lies in one animal.
``duplicate``           another component has the same cohesive communities (each one's best
                        match in the other has Jaccard ≥ ``DUPLICATE_JACCARD``, both ways).
``transient``           the component puts more than ``communities.max_event_share`` of its
                        energy in one time bin of one animal: one event (a motion artefact, a
                        brain-wide burst), left without communities (docs/communities.md).

Pure: arrays and plain structures in, names out.
"""

from __future__ import annotations

import numpy as np

MISSING_JACCARD = 0.5
MISSING_MIN_SIZE = 3
MIN_STABILITY = 0.8
ONE_ANIMAL_SHARE = 0.9
DUPLICATE_JACCARD = 0.8

EXPLAIN = {
    "rank_at_edge": "the chosen rank is at the edge of the sweep (factorize.ranks): widen the sweep",
    "missing_neurons": "a community coincides with the neurons missing in an animal",
    "not_significant": "not above the surrogates (no co-activation needed to explain it)",
    "community_not_significant": "a cohesive community does not replicate across animals more than the surrogates' best",
    "unstable": "the communities differ between community-detection runs",
    "negative_modularity": "the partition's modularity is negative",
    "one_animal": "carried by one animal",
    "duplicate": "another component has the same communities",
    "transient": "one transient event (its energy in one time bin of one animal): no communities",
}


def jaccard(a, b) -> float:
    a, b = set(a), set(b)
    return len(a & b) / len(a | b) if a | b else 0.0


def rank_at_edge(rank: int, swept_ranks) -> bool:
    """The chosen rank is the smallest or largest of a sweep of ≥ 2 ranks."""
    swept = np.asarray(swept_ranks).astype(int).ravel()
    return bool(swept.size >= 2 and (rank == swept.min() or rank == swept.max()))


def missing_overlap(members, present: np.ndarray) -> tuple[float, int]:
    """The largest Jaccard index between a community and the set of neurons missing in an
    animal (``present`` (N, A)), and that animal."""
    best, where = 0.0, -1
    for a in range(present.shape[1]):
        missing = np.flatnonzero(~present[:, a])
        if missing.size:
            j = jaccard(members, missing.tolist())
            if j > best:
                best, where = j, a
    return best, where


def animal_energy_share(loading: np.ndarray) -> float:
    """Largest share of ``Σ loading²`` in one animal (loading (A,) per animal)."""
    e = np.asarray(loading, dtype=float) ** 2
    return float(e.max() / e.sum()) if e.sum() > 0 else 0.0


def duplicates(cohesive: list[list[list[int]]]) -> list[list[int]]:
    """For each component, the others whose cohesive communities are the same
    (``cohesive[r]``: its cohesive communities as lists of neuron indices)."""
    def covered(xs, ys):
        return all(max((jaccard(x, y) for y in ys), default=0.0) >= DUPLICATE_JACCARD for x in xs)

    out: list[list[int]] = [[] for _ in cohesive]
    for r in range(len(cohesive)):
        for s in range(r + 1, len(cohesive)):
            if cohesive[r] and cohesive[s] and covered(cohesive[r], cohesive[s]) and covered(cohesive[s], cohesive[r]):
                out[r].append(s)
                out[s].append(r)
    return out


def community_flags(members, present: np.ndarray, p_value: float, alpha: float) -> list[str]:
    """Flags of one cohesive community."""
    flags = []
    if len(members) >= MISSING_MIN_SIZE and missing_overlap(members, present)[0] >= MISSING_JACCARD:
        flags.append("missing_neurons")
    if np.isfinite(p_value) and p_value >= alpha:
        flags.append("not_significant")
    return flags


def component_flags(*, rank: int, swept_ranks, p_value: float, alpha: float, stability: float,
                    modularity: float, animal_loading: np.ndarray, community_flags: list[list[str]],
                    duplicate_of: list[int], event_share: float = 0.0, max_event_share: float = 1.0) -> list[str]:
    """Flags of one component (``community_flags``: those of its cohesive communities;
    ``event_share``: its largest share of energy in one bin of one animal,
    :func:`dynconn.stages.communities.event_share`)."""
    flags = []
    if swept_ranks is not None and rank_at_edge(rank, swept_ranks):
        flags.append("rank_at_edge")
    if np.isfinite(p_value) and p_value >= alpha:
        flags.append("not_significant")
    if any("not_significant" in f for f in community_flags):
        flags.append("community_not_significant")
    if any("missing_neurons" in f for f in community_flags):
        flags.append("missing_neurons")
    if np.isfinite(stability) and stability < MIN_STABILITY:
        flags.append("unstable")
    if np.isfinite(modularity) and modularity < 0:
        flags.append("negative_modularity")
    if np.asarray(animal_loading).size >= 2 and animal_energy_share(animal_loading) > ONE_ANIMAL_SHARE:
        flags.append("one_animal")
    if duplicate_of:
        flags.append("duplicate")
    if event_share > max_event_share:
        flags.append("transient")
    return flags

"""Reference graphs and the test of whether their links fall within communities.

A community of functionally coupled neurons is more credible when known links (anatomical
synapses, causal links, left/right homologs) fall inside it more often than between
communities. Pure: names, arrays and records in, arrays and records out; the files are read by
:mod:`dynconn.io.references`.

* :class:`ReferenceGraph`: an undirected graph on named nodes, with the pairs it tested;
  built from directed contacts (:func:`connectome_graph`) or a q-value matrix
  (:func:`signal_propagation_graph`);
* :func:`reference_matrices`: its weights and tested pairs on a run's neurons, names matched
  by :func:`canonical_name`;
* :func:`within_between`: reference weight within vs between communities (pooled over the
  components' partitions), with a permutation p-value (labels shuffled, sizes kept);
* :func:`community_enrichment`: the same question for one community: links per tested pair
  inside it against random groups of its size drawn from its component's graph;
* :func:`homolog_pairs`: the left/right homolog graph, for the same test.

Name matching (:func:`canonical_name`), applied to both sides for the worm references:
whitespace removed and upper case; zero-padded cell numbers dropped (``VB02`` → ``VB2``,
``DA01`` → ``DA1``: NeuroPAL files pad, the connectomes do not); ``AWCON`` → ``AWCR`` and
``AWCOFF`` → ``AWCL`` (the signal propagation atlas names AWC by its ON/OFF fate, the
connectomes by side; ``wormneuroatlas`` maps them so, and we follow it — the ON side is chosen
at random in each animal, so this pairing is a convention, not an identity). A user's CSV is
matched on whitespace and case only (other species' names need not follow these rules).
A run's neuron that is not a node of the reference but whose two sides are (``AVA`` when the
reference has ``AVAL`` and ``AVAR``: ingest's ``merge_bilateral`` averaged them) stands for both:
its links are those of either side (:meth:`ReferenceGraph.members`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

SIGNAL_PROPAGATION = "randi2023"


@dataclass(frozen=True)
class ReferenceGraph:
    """An undirected reference graph on named nodes.

    ``edges``: ``{(a, b): weight}`` with ``a < b`` (canonical names, weight > 0).
    ``nodes``: every node the reference knows. ``tested``: the node pairs whose status is
    known (an edge or a measured absence); ``None`` means every pair of ``nodes`` (a
    connectome: no synapse is an observation). The signal propagation atlas measured only a
    part of the pairs, so untested pairs count neither as links nor as non-links.
    ``worm_names``: match names with :func:`canonical_name` (else whitespace and case only).
    """

    name: str
    description: str
    edges: dict
    nodes: frozenset
    tested: frozenset | None = None
    worm_names: bool = True
    label: str = ""  # short, for tables

    @property
    def short(self) -> str:
        return self.label or self.name

    def match(self, name: str) -> str:
        return canonical_name(name) if self.worm_names else plain_name(name)

    def members(self, name: str) -> tuple[str, ...]:
        """The reference nodes a run's neuron stands for: its own name when the reference has
        it; else, for worm names, both sides of a merged left/right pair (``AVA`` → ``AVAL``,
        ``AVAR``) when the reference has both; else none."""
        key = self.match(name)
        if key in self.nodes:
            return (key,)
        if self.worm_names and f"{key}L" in self.nodes and f"{key}R" in self.nodes:
            return (f"{key}L", f"{key}R")
        return ()


def plain_name(name: str) -> str:
    return re.sub(r"\s+", "", str(name)).upper()


_PADDED = re.compile(r"^(.*[A-Z])0+([1-9][0-9]*)$")
_AWC = {"AWCON": "AWCR", "AWCOFF": "AWCL", "AWCOF": "AWCL"}  # AWCOF: the atlas's 5-byte ids


def canonical_name(name: str) -> str:
    """One spelling per *C. elegans* neuron: ``" vb02 "`` → ``VB2``, ``AWCON`` → ``AWCR``
    (module docstring for the rules and why)."""
    n = plain_name(name)
    n = _AWC.get(n, n)
    m = _PADDED.match(n)
    return m.group(1) + m.group(2) if m else n


def pair_key(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a < b else (b, a)



def connectome_graph(rows, name: str, description: str, kinds=("chemical", "electrical"),
                     nodes=None) -> ReferenceGraph:
    """Undirected graph from directed contacts ``(pre, post, type, count)``: the weight of a
    pair is its count of contacts of the chosen ``kinds`` summed over both directions (and
    over the datasets given). ``nodes`` defaults to every name in ``rows``."""
    edges: dict = {}
    seen = set()
    for pre, post, kind, count in rows:
        a, b = canonical_name(pre), canonical_name(post)
        seen.update((a, b))
        if kind in kinds and count > 0 and a != b:
            key = pair_key(a, b)
            edges[key] = edges.get(key, 0.0) + float(count)
    return ReferenceGraph(name, description, edges, frozenset(seen if nodes is None else nodes))


def signal_propagation_graph(q: np.ndarray, ids, q_max: float = 0.05) -> ReferenceGraph:
    """Links from a matrix of q-values (``q[i, j]``: response of ``ids[i]`` to stimulation of
    ``ids[j]``, NaN = not measured): a pair is linked when q < ``q_max`` in either direction,
    tested when measured in either direction."""
    names = [canonical_name(n) for n in ids]
    q = np.asarray(q, dtype=float)
    measured = np.isfinite(q)
    linked = measured & (q < q_max)
    edges, tested = {}, set()
    ii, jj = np.nonzero(measured | measured.T)
    for i, j in zip(ii.tolist(), jj.tolist()):
        if i < j and names[i] != names[j]:
            key = pair_key(names[i], names[j])
            tested.add(key)
            if linked[i, j] or linked[j, i]:
                edges[key] = 1.0
    return ReferenceGraph(SIGNAL_PROPAGATION, f"Randi et al. 2023 signal propagation, q < {q_max:g}",
                          edges, frozenset(names), frozenset(tested),
                          label=f"signal propagation (Randi 2023, q<{q_max:g})")


# ----------------------------------------------------------------------------------------------
# Matrices on a run's neurons
# ----------------------------------------------------------------------------------------------
def reference_matrices(ref: ReferenceGraph, names) -> tuple[np.ndarray, np.ndarray]:
    """``(weight, tested)`` (N, N) for the neurons ``names``: the reference weight of each
    pair (0 = no link; a merged left/right neuron sums the links of its sides,
    :meth:`ReferenceGraph.members`) and whether the pair's status is known (both neurons in
    the reference, and, where the reference says which pairs it tested, at least one of the
    pairs between their nodes tested). Symmetric, zero diagonal."""
    groups = [ref.members(n) for n in names]
    n = len(groups)
    weight = np.zeros((n, n))
    tested = np.zeros((n, n), dtype=bool)
    for i in range(n):
        if not groups[i]:
            continue
        for j in range(i + 1, n):
            if not groups[j]:
                continue
            keys = [pair_key(a, b) for a in groups[i] for b in groups[j] if a != b]
            known = keys if ref.tested is None else [k for k in keys if k in ref.tested]
            if known:
                tested[i, j] = tested[j, i] = True
                weight[i, j] = weight[j, i] = sum(ref.edges.get(k, 0.0) for k in known)
    return weight, tested


# ----------------------------------------------------------------------------------------------
# Enrichment within vs between communities
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WithinBetween:
    """Reference weight inside vs between communities, pooled over the partitions given.

    ``ratio`` = (weight per tested pair within communities) / (weight per tested pair between
    them): 1 when communities ignore the reference, > 1 when its links fall inside.
    ``fraction`` = share of the reference weight that lies within; ``chance_fraction`` and
    ``chance_ratio`` their means over the permutations (chance_ratio over those where it is
    finite); ``p_value`` = (1 + permutations with a
    ratio ≥ the observed) / (1 + permutations), one-sided.
    """

    within_weight: float
    between_weight: float
    within_pairs: int
    between_pairs: int
    ratio: float
    fraction: float
    chance_fraction: float
    chance_ratio: float
    p_value: float
    n_permutations: int

    def as_dict(self) -> dict:
        """JSON-ready: NaN (undefined, e.g. no tested pair between) becomes None."""
        return {k: (None if isinstance(v, float) and np.isnan(v) else v)
                for k, v in self.__dict__.items()}


def _onehot(labels: np.ndarray) -> np.ndarray:
    _, inverse = np.unique(labels, return_inverse=True)
    out = np.zeros((len(labels), inverse.max() + 1))
    out[np.arange(len(labels)), inverse] = 1.0
    return out


def _within_sums(onehot: np.ndarray, weight: np.ndarray, tested: np.ndarray) -> tuple[float, float]:
    """Reference weight and tested pairs within communities (rows of ``onehot``: nodes,
    columns: communities): Σ_k m_kᵀ W m_k / 2 with m_k the indicator of community k."""
    return (float((onehot * (weight @ onehot)).sum()) / 2,
            float((onehot * (tested @ onehot)).sum()) / 2)


def _ratio(w_in, t_in, w_all, t_all):
    t_out = t_all - t_in
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((t_in > 0) & (t_out > 0),
                        (w_in / np.maximum(t_in, 1)) / ((w_all - w_in) / np.maximum(t_out, 1)),
                        np.nan)


def within_between(labels, weight, tested=None, n_permutations: int = 1000,
                   seed: int = 0) -> WithinBetween:
    """Enrichment of a reference graph within communities, with a permutation p-value.

    ``labels``: (N,) or (R, N) community labels, −1 = not assigned; with R rows (one
    partition per component) the counts are pooled over the rows and each permutation
    shuffles every row's assigned labels independently (sizes kept). ``weight``: (N, N)
    symmetric non-negative reference weights; ``tested``: (N, N) bool, the pairs whose status
    is known (default: all off-diagonal pairs). Only pairs of assigned, tested nodes count.
    """
    labels = np.atleast_2d(np.asarray(labels))
    weight = np.asarray(weight, dtype=float)
    n = labels.shape[1]
    if weight.shape != (n, n):
        raise ValueError(f"weight must be ({n}, {n}) for {n} labels, got {weight.shape}")
    if not np.allclose(weight, weight.T) or (weight < 0).any():
        raise ValueError("weight must be symmetric and non-negative")
    tested = ~np.eye(n, dtype=bool) if tested is None else np.asarray(tested, dtype=bool) & ~np.eye(n, dtype=bool)
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be ≥ 1, got {n_permutations}")
    weight = np.where(tested, weight, 0.0)
    rows = []
    for row in labels:
        idx = np.flatnonzero(row >= 0)
        if len(idx) >= 2:
            rows.append((_onehot(row[idx]), weight[np.ix_(idx, idx)],
                         tested[np.ix_(idx, idx)].astype(float)))
    w_all = sum(float(w.sum()) / 2 for _, w, _ in rows)
    t_all = sum(float(t.sum()) / 2 for _, _, t in rows)
    w_in = t_in = 0.0
    for onehot, w, t in rows:
        a, b = _within_sums(onehot, w, t)
        w_in, t_in = w_in + a, t_in + b
    rng = np.random.default_rng(seed)
    null_w = np.zeros(n_permutations)
    null_t = np.zeros(n_permutations)
    for p in range(n_permutations):
        for onehot, w, t in rows:
            a, b = _within_sums(onehot[rng.permutation(len(onehot))], w, t)
            null_w[p] += a
            null_t[p] += b
    ratio = float(_ratio(w_in, t_in, w_all, t_all))
    null_ratio = _ratio(null_w, null_t, w_all, t_all)
    # ratios are quotients of sums of the same reference weights; a permutation that lands on
    # the observed partition's sums must count as "≥" despite rounding in the last bits
    ties = 1e-9 * abs(ratio) if np.isfinite(ratio) else 0.0
    exceed = int(np.sum(null_ratio >= ratio - ties))  # NaN (undefined) never counts
    p_value = (1 + exceed) / (1 + n_permutations) if not np.isnan(ratio) else float("nan")
    fraction = w_in / w_all if w_all > 0 else float("nan")
    chance_fraction = float(null_w.mean() / w_all) if w_all > 0 else float("nan")
    finite = null_ratio[np.isfinite(null_ratio)]
    return WithinBetween(w_in, w_all - w_in, int(round(t_in)), int(round(t_all - t_in)), ratio,
                         float(fraction), chance_fraction,
                         float(finite.mean()) if len(finite) else float("nan"), p_value, n_permutations)


def community_enrichment(members, pool, linked: np.ndarray, tested: np.ndarray,
                         n_permutations: int = 999, seed=0) -> dict | None:
    """Reference links inside one community against random groups of its size.

    ``members``: the community's neuron indices; ``pool``: the indices it could have been
    drawn from (its component's graph; the members among them); ``linked``, ``tested``:
    (N, N) bool, :func:`reference_matrices` (a link is ``weight > 0``). Only neurons with at
    least one tested pair in the pool count (the rest are unknown to the reference). Returns
    ``{"links", "pairs"}`` (linked and tested pairs inside), ``"density"`` (links / pairs),
    ``"pool_density"`` (the same over the pool), ``ratio`` (density / pool density; None when
    the pool has no link), ``matched`` (members known to the reference), ``p_value`` =
    (1 + groups at least as dense) / (1 + groups) over ``n_permutations`` groups of
    ``matched`` neurons drawn without replacement from the pool's known neurons (one-sided;
    groups without a tested pair are left out, ``n_permutations`` in the result counts the
    rest); None when
    fewer than 2 members are known or no pair among them was tested.
    """
    pool = np.asarray(sorted(set(int(i) for i in pool) | set(int(i) for i in members)), dtype=int)
    sub_t = tested[np.ix_(pool, pool)]
    known = pool[sub_t.any(axis=1)]
    inside = np.asarray(sorted(set(int(i) for i in members) & set(known.tolist())), dtype=int)
    if inside.size < 2:
        return None
    t_in = int(np.triu(tested[np.ix_(inside, inside)], 1).sum())
    if t_in == 0:
        return None
    lk = (linked & tested)[np.ix_(known, known)].astype(float)
    tk = tested[np.ix_(known, known)].astype(float)
    l_in = int(np.triu((linked & tested)[np.ix_(inside, inside)], 1).sum())
    pool_pairs = float(np.triu(tk, 1).sum())
    pool_links = float(np.triu(lk, 1).sum())
    density = l_in / t_in
    pool_density = pool_links / pool_pairs if pool_pairs else float("nan")
    rng = np.random.default_rng(seed)
    s, m = inside.size, known.size
    exceed = valid = 0
    for start in range(0, n_permutations, 256):  # blocks keep the indicator matrix small
        k = min(256, n_permutations - start)
        pick = np.argsort(rng.random((k, m)), axis=1)[:, :s]
        x = np.zeros((k, m))
        np.put_along_axis(x, pick, 1.0, axis=1)
        links = ((x @ lk) * x).sum(axis=1) / 2
        pairs = ((x @ tk) * x).sum(axis=1) / 2
        with np.errstate(invalid="ignore", divide="ignore"):
            dens = np.where(pairs > 0, links / np.maximum(pairs, 1), np.nan)
        # densities are ratios of small integers: a tie with the observed value must count
        exceed += int(np.sum(dens >= density - 1e-12))
        valid += int(np.isfinite(dens).sum())  # a group without a tested pair says nothing
    return {"links": l_in, "pairs": t_in, "matched": int(s), "density": density,
            "pool_density": pool_density,
            "ratio": density / pool_density if pool_density > 0 else None,
            "p_value": (1 + exceed) / (1 + valid), "n_permutations": int(valid)}


def homolog_pairs(names, mapping: dict[str, str]) -> np.ndarray:
    """(N, N) 0/1 matrix of left/right homologs among ``names``, from ``mapping`` = ``{name:
    class}`` as :func:`dynconn.stages.ingest.bilateral_map` gives it (AVAL, AVAR → AVA): the
    names ending in L and R that map to the same class are a pair."""
    names = list(names)
    index = {n: i for i, n in enumerate(names)}
    out = np.zeros((len(names), len(names)))
    for n, stem in mapping.items():
        partner = stem + "R"
        if n.endswith("L") and n in index and partner in index and mapping.get(partner) == stem:
            i, j = index[n], index[partner]
            out[i, j] = out[j, i] = 1.0
    return out

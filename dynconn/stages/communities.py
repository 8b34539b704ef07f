"""Stage 4, communities: partition each component's neuron × neuron graph.

Each CP component r has a pair factor (P,) — one weight per neuron pair. Rearranged as a
symmetric N × N matrix it is a weighted graph of which neurons interact in that component.
Edge weights are the pair loadings weighed by their evidence (``communities.evidence``,
:mod:`dynconn.methods.evidence`): a pair recorded only where the component is weak is fitted
from little data, so neurons missing in some animal would otherwise form communities.
Neurons whose strength (weighted degree) is below ``min_strength`` × the strongest
neuron's are left out of that component's graph (membership −1): they take no part in it.
The rest are partitioned into communities by :func:`dynconn.methods.wsbm.partition` (default: the
weighted degree-corrected SBM of minimum description length; Leiden variants selectable).

After partitioning, communities (and members) no denser inside than toward the rest of the
graph are background and left unassigned (−1; ``communities.min_contrast``,
:func:`keep_contrasting`).

Pure core: :func:`pair_matrix`, :func:`component_graph`, :func:`partition_components`.
Reading a graph file for ``dynconn partition``: :func:`read_graph`.

Artifact ``communities.h5``: ``/membership`` int32 (R, N), −1 where a neuron is in none of that
component's communities; ``/levels`` int32 (R, L, N) nested levels, finest first (``/membership``
is level ``communities.level``); ``/score`` (R) the partition's description length (wsbm,
nats) or quality (Leiden); ``/stability`` (R) mean ARI between the runs; ``/modularity`` (R)
weighted modularity of the reported communities over their neurons; ``/n_communities`` (R); ``/neurons`` (N).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..config import Config
from ..console import Console, warn
from ..errors import InputError
from ..io.readers import read_text

if TYPE_CHECKING:  # igraph and the model are imported where used: fast start-up
    import igraph as ig

NAME = "communities"
OUTPUT = "communities.h5"
UPSTREAM = ("affinity", "factorize")
# the pair loadings, the mask and the pairs make the graphs: the tensor itself stays on disk
UNREAD_INPUTS = {"affinity": ("affinity",)}
ENGINE = True  # run() takes the pipeline's engine: each component's fit is a task


# ----------------------------------------------------------------------------- pure core
def pair_matrix(pair_values: np.ndarray, pairs: np.ndarray, n: int) -> np.ndarray:
    """Symmetric (n, n) matrix with zero diagonal from per-pair values (P,) at ``pairs``."""
    w = np.zeros((n, n), dtype=np.float64)
    w[pairs[:, 0], pairs[:, 1]] = pair_values
    w[pairs[:, 1], pairs[:, 0]] = pair_values
    return w


#: Loadings below this fraction of a component's largest are rounding residue, set to 0: the
#: factors are float32 (one ulp = 6e-8 of the largest loading) and a loading that HALS clamps to
#: exactly 0 on one BLAS kernel can come out a few ulps above it on another; 2^-20 ≈ 16 ulps.
#: Zero pairs are absent edges, and whether a component graph is complete changes its model.
ROUNDING_FLOOR = 2.0**-20


def floor_rounding_residue(values: np.ndarray) -> np.ndarray:
    """``values`` (P,) with entries below :data:`ROUNDING_FLOOR` × their largest set to 0."""
    values = np.asarray(values, dtype=np.float64)
    top = values.max(initial=0.0)
    return np.where(values < ROUNDING_FLOOR * top, 0.0, values)


def strongest_edges(w: np.ndarray, k: int) -> np.ndarray:
    """(n, n) bool mask of the pairs kept by the kNN rule: (i, j) is kept when w_ij > 0 and
    it is among i's ``k`` strongest pairs or among j's (union). Ties with a node's k-th
    strongest weight are all kept, so the rule does not depend on the order of the nodes.
    Rows are ranked in chunks (memory O(n²) bool, no sort of all pairs)."""
    n = w.shape[0]
    mask = np.zeros((n, n), dtype=bool)
    if n < 2:
        return mask
    k = min(int(k), n - 1)
    step = max(1, (64 << 20) // (8 * n))
    for a in range(0, n, step):
        rows = w[a:a + step].copy()
        rows[np.arange(rows.shape[0]), np.arange(a, a + rows.shape[0])] = -np.inf  # no self-pairs
        kth = np.partition(rows, n - k, axis=1)[:, n - k]  # the k-th largest of each row
        mask[a:a + step] = (rows >= kth[:, None]) & (rows > 0)
    return mask | mask.T


def component_graph(w: np.ndarray, min_strength: float,
                    max_edges_per_node: int = 0) -> tuple[ig.Graph, np.ndarray]:
    """The graph of one component over its non-negligible neurons.

    Returns the complete weighted graph (every positive pair is an edge; the measurement
    behind this choice is in docs/communities.md) with vertices renumbered 0..k−1, and the
    original indices of its vertices. A neuron is kept when its strength ``Σ_j w_ij`` is at
    least ``min_strength`` × the largest strength. When a kept neuron has more than
    ``max_edges_per_node`` pairs (0: never), the graph is sparsified by
    :func:`strongest_edges` (each neuron's ``max_edges_per_node`` strongest pairs, union).
    """
    import igraph as ig

    from ..methods import wsbm

    strength = w.sum(axis=1)
    top = strength.max() if strength.size else 0.0
    if not top > 0:
        return ig.Graph(n=0), np.zeros(0, dtype=int)
    kept = np.flatnonzero(strength >= min_strength * top)
    sub = w[np.ix_(kept, kept)]
    if max_edges_per_node and kept.size - 1 > max_edges_per_node:
        # a large component's graph: each neuron keeps its strongest pairs (docs/communities.md)
        sub = np.where(strongest_edges(sub, max_edges_per_node), sub, 0.0)
    return wsbm.graph_from_dense(sub), kept


# A component's pair pattern is a dense matrix whose group pattern is ~u_i u_j: dividing node
# weight propensities out would remove the group itself, so the wsbm keeps the raw weights
# (exact zeros are absent edges; when every pair is positive the edge set is not modelled).
# Measured on the simulator, docs/communities.md ("Graphs from CP components").
DENSE_GRAPH_OPTIONS = {"wsbm": {"node_correction": False}}


@dataclass
class ComponentPartitions:
    """Partitions of every component: ``membership`` int32 (R, N) (−1 = not in the
    component's graph), ``levels`` int32 (R, L, N) nested levels (finest first, padded by
    repeating the coarsest), ``score``, ``stability`` and ``n_communities`` (R,)."""

    membership: np.ndarray
    levels: np.ndarray
    score: np.ndarray
    stability: np.ndarray
    modularity: np.ndarray
    n_communities: np.ndarray
    params: dict


def inside_mean(w: np.ndarray, members: np.ndarray) -> float:
    """Mean weight over ordered pairs of distinct ``members`` (≥ 2 of them)."""
    block = w[np.ix_(members, members)]
    return float((block.sum() - np.trace(block)) / (members.size * (members.size - 1)))


def background_contrast(w: np.ndarray, members: np.ndarray, node: int | None = None) -> float:
    """Mean weight inside ``members`` over the mean weight from them to every other neuron.

    With ``node``: that neuron's mean weight to the other members over its mean weight to the
    neurons outside. ``inf`` when there is nothing outside (or it weighs nothing), ``nan`` when
    there is nothing inside. The block-model comparison behind unassigned neurons: a block
    whose within-block mean weight is no higher than its weight to the rest of the graph is
    background, not a community.
    """
    n = w.shape[0]
    inside = np.zeros(n, dtype=bool)
    inside[members] = True
    if node is None:
        if members.size < 2:
            return float("nan")
        within = inside_mean(w, members)
        outside = w[np.ix_(members, np.flatnonzero(~inside))]
    else:
        others = members[members != node]
        if others.size == 0:
            return float("nan")
        within = w[node, others].mean()
        outside = w[node, np.flatnonzero(~inside)]
    background = outside.mean() if outside.size else 0.0
    if not background > 0:
        return float("inf") if within > 0 else float("nan")
    return float(within / background)


def keep_contrasting(w: np.ndarray, labels: np.ndarray, min_contrast: float) -> np.ndarray:
    """``labels`` (N,) with background left unassigned (−1).

    Each member of a community stays when its own contrast (:func:`background_contrast`: mean
    weight to the other members over mean weight to the neurons outside, all members counted) is
    > ``min_contrast``; the community stays when those members are ≥ 2 and their own contrast as
    a block is > ``min_contrast``; otherwise it is dissolved. Singletons are not communities.
    ``min_contrast`` 0 keeps every community of ≥ 2 (the partition as it came).

    Members are judged first, with every member of the block present, so that a motif's core is
    not lost for the weak neurons the block model put with it (the whole block's contrast then
    falls below the threshold; on the realistic simulator a spontaneous motif's three recorded
    members at 2.0–2.3 with two strays at 1.4–1.5, docs/communities.md), and a block of
    uniformly weak neurons cannot be whittled down to a chance core: a member is dropped on
    what it shows with all of them, once. The members that pass are then cut to the community's
    core (:func:`core_members`): a neuron the community contrasts with as it does with the
    outside is not one of it.
    """
    out = np.array(labels, dtype=np.int32, copy=True)
    for c in np.unique(out[out >= 0]):
        members = np.flatnonzero(out == c)
        if min_contrast > 0 and members.size >= 2:
            out[members] = -1
            members = np.asarray([i for i in members if background_contrast(w, members, node=i) > min_contrast],
                                 dtype=members.dtype)
            members = core_members(w, members, min_contrast)
        if members.size < 2 or not background_contrast(w, members) > min_contrast:
            out[members] = -1
        else:
            out[members] = c
    return out


def core_members(w: np.ndarray, members: np.ndarray, min_contrast: float) -> np.ndarray:
    """``members`` without their periphery: while the weakest member's mean weight to the other
    members is below 1/``min_contrast`` of the community's mean weight inside
    (:func:`inside_mean`), it is removed and the means are taken again (at least 2 stay).

    Why: the block model is degree-corrected, so a dense motif and the weak pairs that a
    component's fit gives its neighbours (loadings a fifth of the motif's) are one block to it —
    the high weights inside are explained by the motif's high degrees. The contrast test against
    the outside keeps such neighbours (their weight to the motif is still well above their weight
    to the rest). A member that the community's inside outweighs by more than ``min_contrast`` is
    to the community what the outside is; the same threshold decides both (docs/communities.md,
    "Core of a community"). O(k²) for k members.
    """
    members = np.asarray(members)
    if not min_contrast > 0 or members.size <= 2:
        return members
    block = np.asarray(w[np.ix_(members, members)], dtype=np.float64)
    np.fill_diagonal(block, 0.0)
    to_others = block.sum(axis=1)  # each member's total weight to the other members
    keep = np.ones(members.size, dtype=bool)
    total, k = float(to_others.sum()), members.size
    while k > 2:
        closeness = np.where(keep, to_others / (k - 1), np.inf)
        weakest = int(np.argmin(closeness))
        if not total > 0 or closeness[weakest] * min_contrast >= total / (k * (k - 1)):
            break
        keep[weakest] = False
        to_others -= block[:, weakest]
        total -= 2.0 * block[weakest].sum(where=keep)
        k -= 1
    return members[keep]


def join_close_neurons(w: np.ndarray, labels: np.ndarray, fraction: float,
                       min_contrast: float = 0.0, candidates: np.ndarray | None = None) -> np.ndarray:
    """``labels`` (N,) with each unassigned neuron (−1) added to the community it is closest to,
    when it is close enough to be a member.

    A neuron's closeness to a community is its mean weight to the members over the community's
    mean weight inside (mean over ordered pairs of distinct members). An unassigned neuron with
    a positive weight joins the community of highest closeness when that closeness is at least
    ``fraction`` and its own contrast as a member (:func:`background_contrast`) is more than
    ``min_contrast``. Only ``candidates`` (indices; default all) may join. The communities are
    those of ``labels`` (their inside means, :func:`inside_mean`, are not updated as neurons
    join, so the order of the neurons does not matter). ``fraction`` 0 adds nothing.

    Why: a neuron shared by two motifs takes part in both components, but in each it carries
    a share of its activity, so its pairs with one motif weigh a fraction of that motif's inside
    pairs; the block model may then give it (with other stray neurons) a block of its own,
    which the contrast test dissolves. Background neurons sit far lower (docs/communities.md,
    "Shared neurons").
    """
    out = np.array(labels, dtype=np.int32, copy=True)
    ids = np.unique(out[out >= 0])
    if not fraction > 0 or ids.size == 0:
        return out
    groups = [np.flatnonzero(out == c) for c in ids]
    inside = np.array([inside_mean(w, m) for m in groups])
    pool = np.arange(out.size) if candidates is None else np.asarray(candidates)
    for i in pool[out[pool] < 0]:
        if not w[i].any():
            continue
        closeness = np.array([w[i, m].mean() for m in groups]) / inside
        best = int(np.argmax(closeness))
        if closeness[best] >= fraction and \
                background_contrast(w, np.append(groups[best], i), node=i) > min_contrast:
            out[i] = ids[best]
    return out


def partition_components(
    pair_factors: np.ndarray,
    pairs: np.ndarray,
    n_neurons: int,
    *,
    method: str = "wsbm",
    min_strength: float = 0.05,
    min_contrast: float = 0.0,
    join_fraction: float = 0.0,
    n_runs: int = 3,
    resolution: float = 1.0,
    level: int = 0,
    max_edges_per_node: int = 0,
    max_event_share: float = 1.0,
    event_share: np.ndarray | None = None,
    random_state: int = 0,
    advance=None,
    mapper=None,
) -> ComponentPartitions:
    """Partition every component's neuron × neuron graph (:func:`dynconn.methods.wsbm.partition`).

    Parameters
    ----------
    pair_factors : (P, R) non-negative edge weights (the pair loadings, weighed by their
        evidence: :func:`dynconn.methods.evidence.weigh_by_evidence`)
    pairs : (P, 2) neuron indices of each pair
    n_neurons : N
    method, n_runs, resolution : passed to :func:`dynconn.methods.wsbm.partition`
    min_contrast : communities (and members) no denser than the background are left
        unassigned, :func:`keep_contrasting` (0: keep the partition as it came)
    join_fraction : an unassigned neuron this close to a community joins it,
        :func:`join_close_neurons` (0: none)
    level : nested level reported as ``membership`` (0 = finest; clipped to the coarsest)
    max_edges_per_node : sparsify graphs where a neuron has more pairs than this
        (:func:`component_graph`; 0 = never)
    event_share : (R,) each component's largest share of its energy in one time bin of one
        animal (:func:`event_share`); a component above ``max_event_share`` is one transient
        event and gets no communities (warned). None: every component is partitioned.
    mapper : run each component's fit as an independent task, ``mapper(fn, items, shared=...,
        on_result=...)`` returning the results in order (:meth:`dynconn.runner.engine.Engine.map`:
        Dask workers). Component r draws from the same seed either way: the same partitions.
    """
    n_comp = pair_factors.shape[1]
    transient = np.zeros(n_comp, dtype=bool)
    if event_share is not None:
        transient = np.asarray(event_share, dtype=np.float64) > max_event_share
        for r in np.flatnonzero(transient):
            warn(f"component {r} holds {event_share[r]:.0%} of its energy in one time bin of one animal: "
                 f"a transient event (a motion artefact or a brain-wide burst), not a recurring "
                 f"interaction; it has no communities (communities.max_event_share = {max_event_share:g})")
        if transient.any():  # their pair patterns are left out of the fit: components without communities
            pair_factors = np.where(transient[None, :], 0.0, pair_factors)
    seeds = np.random.SeedSequence(random_state).generate_state(n_comp)
    fit = {"min_strength": min_strength, "max_edges_per_node": max_edges_per_node, "method": method,
           "n_runs": n_runs, "resolution": resolution, "keep_matrix": mapper is None}
    items = [(r, np.ascontiguousarray(pair_factors[:, r]), int(seeds[r] & 0x7FFFFFFF)) for r in range(n_comp)]
    shared = {"pairs": np.asarray(pairs), "n_neurons": int(n_neurons), "fit": fit}
    if mapper is None:
        fits = []
        for item in items:
            fits.append(_fit_component(item, **shared))
            if advance is not None:
                advance()
    else:
        fits = mapper(_fit_component, items, shared=shared,
                      on_result=(lambda i, _: advance()) if advance is not None else None)
    results, graphs_w = [], []
    for r, (w, graph, kept, result) in enumerate(fits):
        if kept.size == 0 and not transient[r]:
            warn(f"component {r} has an all-zero pair pattern; it has no communities")
        if w is None and (min_contrast > 0 or join_fraction > 0):  # fitted elsewhere: not sent back
            w = pair_matrix(floor_rounding_residue(pair_factors[:, r]), pairs, n_neurons)
        results.append((kept, graph, result))
        graphs_w.append(w)
    depth = max([len(res.levels) for _, _, res in results if res is not None] + [1])
    levels = np.full((n_comp, depth, n_neurons), -1, dtype=np.int32)
    score, stability, modularity = (np.full(n_comp, np.nan) for _ in range(3))
    n_communities = np.zeros(n_comp, dtype=np.int32)
    for r, (kept, _, res) in enumerate(results):
        if res is None:
            continue
        for k in range(depth):
            levels[r, k, kept] = res.levels[min(k, len(res.levels) - 1)]
        score[r], stability[r] = res.score, res.stability
    membership = levels[:, min(level, depth - 1), :].copy()
    if min_contrast > 0:
        for r in range(n_comp):
            membership[r] = keep_contrasting(graphs_w[r], membership[r], min_contrast)
    if join_fraction > 0:
        for r, (kept, _, res) in enumerate(results):
            if res is not None:  # only neurons of the component's graph (not below min_strength)
                membership[r] = join_close_neurons(graphs_w[r], membership[r], join_fraction,
                                                   min_contrast, candidates=kept)
    for r, (kept, graph, res) in enumerate(results):
        labels = membership[r][kept] if res is not None else np.zeros(0, dtype=np.int32)
        n_communities[r] = len(np.unique(labels[labels >= 0]))
        assigned = np.flatnonzero(labels >= 0)
        if res is not None and assigned.size:
            # modularity of the reported communities, over the neurons they hold
            sub = graph.induced_subgraph(assigned.tolist())
            if sub.ecount():
                modularity[r] = sub.modularity(labels[assigned].tolist(), weights="weight")
    params = {"method": method, "min_strength": min_strength, "min_contrast": min_contrast,
              "join_fraction": join_fraction, "n_runs": n_runs, "resolution": resolution, "level": level,
              "max_edges_per_node": max_edges_per_node, "max_event_share": max_event_share,
              "random_state": random_state}
    return ComponentPartitions(membership, levels, score, stability, modularity, n_communities, params)


def _fit_component(item, pairs: np.ndarray, n_neurons: int, fit: dict):
    """One component's graph and partition (a task of :func:`partition_components`): ``item =
    (r, pair values (P,), seed)``. Returns ``(w or None, graph, kept, result or None)``: the
    dense matrix only with ``fit["keep_matrix"]``, the result None for an all-zero pattern."""
    from ..methods import wsbm

    _, column, seed = item
    w = pair_matrix(floor_rounding_residue(column), pairs, n_neurons)
    graph, kept = component_graph(w, fit["min_strength"], fit["max_edges_per_node"])
    result = None
    if kept.size:
        result = wsbm.partition(graph, method=fit["method"], n_runs=fit["n_runs"], resolution=fit["resolution"],
                                random_state=seed, **DENSE_GRAPH_OPTIONS.get(fit["method"], {}))
    return (w if fit["keep_matrix"] else None), graph, kept, result


def read_graph(path: Path) -> tuple[ig.Graph, list[str], bool]:
    """A weighted graph from a dense symmetric ``.npy`` matrix or a CSV edge list.

    Returns the graph, its node labels (row indices as strings for a matrix, names for an
    edge list, in order of first appearance) and whether it came from a dense matrix.
    """
    import igraph as ig

    from ..methods import wsbm

    if not path.exists():
        raise InputError(f"{path}: graph file not found")
    if path.suffix.lower() == ".npy":
        try:
            w = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: not a readable .npy matrix ({exc})") from None
        if w.ndim != 2 or w.shape[0] != w.shape[1]:
            raise InputError(f"{path}: expected a square matrix, got shape {w.shape}")
        if w.shape[0] == 0:
            raise InputError(f"{path}: the matrix is empty (0 nodes)")
        if w.dtype.kind not in "fiub" or not np.isfinite(w).all():
            raise InputError(f"{path}: matrix must hold finite numbers")
        if not np.allclose(w, w.T):
            raise InputError(f"{path}: matrix is not symmetric")
        if (w < 0).any():
            raise InputError(f"{path}: negative weights; the graph must be non-negative")
        w = np.array(w, dtype=np.float64)
        np.fill_diagonal(w, 0.0)
        return wsbm.graph_from_dense(w), [str(i) for i in range(w.shape[0])], True
    text = read_text(path, "graph file")
    rows = [r for r in csv.reader(io.StringIO(text)) if r and any(c.strip() for c in r)]
    if not rows or [c.strip() for c in rows[0]] != ["source", "target", "weight"]:
        raise InputError(f"{path}: expected a CSV edge list with header source,target,weight")
    names: dict[str, int] = {}
    edges, weights = [], []
    for lineno, row in enumerate(rows[1:], start=2):
        if len(row) != 3:
            raise InputError(f"{path}: line {lineno}: expected source,target,weight")
        try:
            weight = float(row[2])
        except ValueError:
            raise InputError(f"{path}: line {lineno}: weight {row[2]!r} is not a number") from None
        if not np.isfinite(weight) or weight < 0:
            raise InputError(f"{path}: line {lineno}: weight must be finite and ≥ 0")
        s, t = (names.setdefault(x.strip(), len(names)) for x in row[:2])
        if s != t and weight > 0:
            edges.append((s, t))
            weights.append(weight)
    if not names:
        raise InputError(f"{path}: the edge list has no edges")
    g = ig.Graph(n=len(names), edges=edges, directed=False)
    g.es["weight"] = weights
    g.simplify(combine_edges="sum")
    return g, list(names), False


# ----------------------------------------------------------------------------- stage
def params(config: Config) -> dict:
    return dict(config["communities"])


def edge_weights(aff, fac, how: str) -> np.ndarray:
    """(P, R) edge weights of every component: its pair loadings weighed by their evidence
    (:mod:`dynconn.methods.evidence`) under the artifacts' layout."""
    from ..methods.evidence import pair_evidence, weigh_by_evidence

    pair_factors = np.asarray(fac["factors/pairs"], dtype=np.float64)
    if how == "none":
        return pair_factors
    layout = str(aff.attrs.get("layout", "aligned"))
    groups = np.asarray(aff["time_animal"], dtype=np.int64) if layout == "concatenated" else None
    time_f, animal_f = fac["factors/time"], fac["factors/animals"]
    if "factors/time_by_animal" in fac:  # per-animal courses: each animal's own energy, not the summary's
        courses = np.asarray(fac["factors/time_by_animal"], dtype=np.float64)  # (A, T, R)
        n_animals, n_time, n_rank = courses.shape
        time_f, animal_f = courses.reshape(n_animals * n_time, n_rank), np.ones((1, n_rank))
        groups = np.repeat(np.arange(n_animals), n_time)
    evidence = pair_evidence(aff["mask"], time_f, animal_f, groups)
    return weigh_by_evidence(pair_factors, evidence, how)


def event_share(fac) -> np.ndarray:
    """(R,) each component's largest share of its fitted energy in one time bin of one animal:
    over the per-animal courses ``factors/time_by_animal`` (A, T, R) when the fit has them,
    otherwise over the CP slab time ⊗ animals (with the concatenated layout, over its bins).
    1 for a component that is one bin of one animal; 1/(A·T) for one spread evenly.

    Why: a motion artefact, or any brain-wide burst, makes many pairs co-active in one bin, and a
    component with free courses can fit that one slice. On the realistic simulator such
    components (more than half their energy in one slice) held 94 communities over the `hard`,
    `standard` and `full-size` runs measured, 71 of them false and 3 matching a planted motif
    (docs/benchmarks.md, "At the size of a real recording").

    Examples
    --------
    >>> courses = np.zeros((2, 4, 2)); courses[0, 1, 0] = 3.0; courses[:, :, 1] = 1.0
    >>> event_share({"factors/time_by_animal": courses}).tolist()
    [1.0, 0.125]
    """
    if "factors/time_by_animal" in fac:
        courses = np.asarray(fac["factors/time_by_animal"], dtype=np.float64)
        energy = (courses ** 2).reshape(-1, courses.shape[-1])
        total = energy.sum(axis=0)
        return np.divide(energy.max(axis=0), total, out=np.zeros_like(total), where=total > 0)
    time_f = np.asarray(fac["factors/time"], dtype=np.float64) ** 2
    animal_f = np.asarray(fac["factors/animals"], dtype=np.float64) ** 2
    shares = []
    for f in (time_f, animal_f):
        total = f.sum(axis=0)
        shares.append(np.divide(f.max(axis=0), total, out=np.zeros_like(total), where=total > 0))
    return shares[0] * shares[1]


def partition_options(p: dict) -> dict:
    """:func:`partition_components` keywords from the ``communities`` config section ``p``
    (the stage and the report's surrogates partition alike)."""
    return {k: p[k] for k in ("method", "min_strength", "min_contrast", "join_fraction", "n_runs",
                              "resolution", "level", "max_edges_per_node", "max_event_share")}


def run(config: Config, workdir: Path, console: Console, upstream: dict, engine=None) -> tuple[dict, dict]:
    aff, fac = upstream["affinity"], upstream["factorize"]
    p = config["communities"]
    weights = edge_weights(aff, fac, p["evidence"])
    # with a distributed engine each component's fit is one task on its workers
    mapper = engine.map if engine is not None and engine.distributed else None
    with console.progress("communities (components)", weights.shape[1]) as advance:
        parts = partition_components(weights, aff["pairs"], len(aff["neurons"]), **partition_options(p),
                                     event_share=event_share(fac), random_state=p["seed"], advance=advance,
                                     mapper=mapper)
    return {
        "membership": parts.membership,
        "levels": parts.levels,
        "score": parts.score,
        "stability": parts.stability,
        "modularity": parts.modularity,
        "n_communities": parts.n_communities,
        "neurons": aff["neurons"],
    }, {}

"""Stage 4, communities: partition each component's neuron × neuron graph.

Each CP component r has a pair factor (P,) — one weight per neuron pair. Rearranged as a
symmetric N × N matrix it is a weighted graph of which neurons interact in that component.
Neurons whose strength (weighted degree) is below ``min_strength`` × the strongest
neuron's are left out of that component's graph (membership −1): they take no part in it.
The rest are partitioned into communities by :func:`dynconn.methods.wsbm.partition` (default: the
weighted degree-corrected SBM of minimum description length; Leiden variants selectable).

Pure core: :func:`pair_matrix`, :func:`component_graph`, :func:`partition_components`.
Reading a graph file for ``dynconn partition``: :func:`read_graph`.

Artifact ``communities.h5``: ``/membership`` int32 (R, N), −1 where a neuron is not in that
component's graph; ``/levels`` int32 (R, L, N) nested levels, finest first (``/membership``
is level ``communities.level``); ``/score`` (R) the partition's description length (wsbm,
nats) or quality (Leiden); ``/stability`` (R) mean ARI between the runs; ``/modularity`` (R)
weighted modularity of the reported partition; ``/n_communities`` (R); ``/neurons`` (N).
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


# ----------------------------------------------------------------------------- pure core
def pair_matrix(pair_values: np.ndarray, pairs: np.ndarray, n: int) -> np.ndarray:
    """Symmetric (n, n) matrix with zero diagonal from per-pair values (P,) at ``pairs``."""
    w = np.zeros((n, n), dtype=np.float64)
    w[pairs[:, 0], pairs[:, 1]] = pair_values
    w[pairs[:, 1], pairs[:, 0]] = pair_values
    return w


def component_graph(w: np.ndarray, min_strength: float) -> tuple[ig.Graph, np.ndarray]:
    """The graph of one component over its non-negligible neurons.

    Returns the complete weighted graph (every positive pair is an edge; the measurement
    behind this choice is in docs/communities.md) with vertices renumbered 0..k−1, and the
    original indices of its vertices. A neuron is kept when its strength ``Σ_j w_ij`` is at
    least ``min_strength`` × the largest strength.
    """
    import igraph as ig

    from ..methods import wsbm

    strength = w.sum(axis=1)
    top = strength.max() if strength.size else 0.0
    if not top > 0:
        return ig.Graph(n=0), np.zeros(0, dtype=int)
    kept = np.flatnonzero(strength >= min_strength * top)
    return wsbm.graph_from_dense(w[np.ix_(kept, kept)]), kept


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


def partition_components(
    pair_factors: np.ndarray,
    pairs: np.ndarray,
    n_neurons: int,
    *,
    method: str = "wsbm",
    min_strength: float = 0.05,
    n_runs: int = 3,
    resolution: float = 1.0,
    level: int = 0,
    random_state: int = 0,
    advance=None,
) -> ComponentPartitions:
    """Partition every component's neuron × neuron graph (:func:`dynconn.methods.wsbm.partition`).

    Parameters
    ----------
    pair_factors : (P, R) non-negative pair loadings
    pairs : (P, 2) neuron indices of each pair
    n_neurons : N
    method, n_runs, resolution : passed to :func:`dynconn.methods.wsbm.partition`
    level : nested level reported as ``membership`` (0 = finest; clipped to the coarsest)
    """
    from ..methods import wsbm

    n_comp = pair_factors.shape[1]
    results = []
    seeds = np.random.SeedSequence(random_state).generate_state(n_comp)
    for r in range(n_comp):
        w = pair_matrix(pair_factors[:, r], pairs, n_neurons)
        graph, kept = component_graph(w, min_strength)
        result = None
        if kept.size == 0:
            warn(f"component {r} has an all-zero pair pattern; it has no communities")
        else:
            result = wsbm.partition(graph, method=method, n_runs=n_runs, resolution=resolution,
                                    random_state=int(seeds[r] & 0x7FFFFFFF), **DENSE_GRAPH_OPTIONS.get(method, {}))
        results.append((kept, graph, result))
        if advance is not None:
            advance()
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
    for r, (kept, graph, res) in enumerate(results):
        labels = membership[r][kept] if res is not None else np.zeros(0, dtype=np.int32)
        n_communities[r] = len(np.unique(labels[labels >= 0]))
        if res is not None and graph.ecount() and (labels >= 0).all():
            modularity[r] = graph.modularity(labels.tolist(), weights="weight")
    params = {"method": method, "min_strength": min_strength, "n_runs": n_runs,
              "resolution": resolution, "level": level, "random_state": random_state}
    return ComponentPartitions(membership, levels, score, stability, modularity, n_communities, params)


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


def run(config: Config, workdir: Path, console: Console, upstream: dict) -> tuple[dict, dict]:
    aff, fac = upstream["affinity"], upstream["factorize"]
    p = config["communities"]
    pair_factors = fac["factors/pairs"]
    with console.progress("communities (components)", pair_factors.shape[1]) as advance:
        parts = partition_components(
            pair_factors,
            aff["pairs"],
            len(aff["neurons"]),
            method=p["method"],
            min_strength=p["min_strength"],
            n_runs=p["n_runs"],
            resolution=p["resolution"],
            level=p["level"],
            random_state=p["seed"],
            advance=advance,
        )
    return {
        "membership": parts.membership,
        "levels": parts.levels,
        "score": parts.score,
        "stability": parts.stability,
        "modularity": parts.modularity,
        "n_communities": parts.n_communities,
        "neurons": aff["neurons"],
    }, {}

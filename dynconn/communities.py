"""Stage 4, communities: partition each component's neuron × neuron graph.

Each CP component r has a pair factor (P,) — one weight per neuron pair. Rearranged as a
symmetric N × N matrix it is a weighted graph of which neurons interact in that component.
Neurons whose strength (weighted degree) is below ``min_strength`` × the strongest
neuron's are left out of that component's graph (membership −1): they take no part in it.
The rest are partitioned into communities.

Pure core: :func:`pair_matrix`, :func:`component_graph`, :func:`partition_graph`,
:func:`partition_components`. Reading a graph file for ``dynconn partition``:
:func:`read_graph`.

Artifact ``communities.h5``: ``/membership`` int32 (R, N), −1 where a neuron is not in that
component's graph; ``/neurons`` (N); ``/modularity`` float64 (R) of each partition.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import igraph as ig
import leidenalg
import numpy as np

from .config import Config
from .console import Console, warn
from .errors import InputError

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


def graph_from_matrix(w: np.ndarray, names: list[str] | None = None) -> ig.Graph:
    """Undirected weighted igraph graph of the positive entries of a symmetric matrix."""
    i, j = np.nonzero(np.triu(w, k=1) > 0)
    g = ig.Graph(n=w.shape[0], edges=list(zip(i.tolist(), j.tolist())), directed=False)
    g.es["weight"] = w[i, j].astype(float).tolist()
    if names is not None:
        g.vs["name"] = list(names)
    return g


def component_graph(w: np.ndarray, min_strength: float) -> tuple[ig.Graph, np.ndarray]:
    """The graph of one component over its non-negligible neurons.

    Returns the graph (vertices renumbered 0..k−1) and the original indices of its
    vertices. A neuron is kept when its strength ``Σ_j w_ij`` is at least
    ``min_strength`` × the largest strength.
    """
    strength = w.sum(axis=1)
    top = strength.max() if strength.size else 0.0
    if not top > 0:
        return ig.Graph(n=0), np.zeros(0, dtype=int)
    kept = np.flatnonzero(strength >= min_strength * top)
    return graph_from_matrix(w[np.ix_(kept, kept)]), kept


def renumber_by_size(membership: np.ndarray) -> np.ndarray:
    """Relabel communities 0..K−1 by decreasing size (ties: by first member)."""
    membership = np.asarray(membership)
    labels, first, counts = np.unique(membership, return_index=True, return_counts=True)
    order = sorted(range(labels.size), key=lambda k: (-counts[k], first[k]))
    mapping = {labels[k]: new for new, k in enumerate(order)}
    return np.asarray([mapping[m] for m in membership], dtype=np.int32)


def partition_graph(
    graph: ig.Graph, *, n_runs: int = 10, random_state: int = 0, weights: str | None = "weight"
) -> tuple[np.ndarray, float]:
    """Leiden (weighted modularity), best of ``n_runs`` seeds.

    Returns (membership int32 numbered by decreasing size, modularity).
    """
    if graph.vcount() == 0:
        return np.zeros(0, dtype=np.int32), float("nan")
    if graph.ecount() == 0:
        return np.arange(graph.vcount(), dtype=np.int32), 0.0
    w = weights if weights in graph.es.attributes() else None
    best, best_q = None, -np.inf
    seeds = np.random.SeedSequence(random_state).generate_state(n_runs)
    for seed in seeds:
        part = leidenalg.find_partition(
            graph, leidenalg.ModularityVertexPartition, weights=w, seed=int(seed) & 0x7FFFFFFF
        )
        q = part.quality() / (2 * sum(graph.es[w]) if w else 2 * graph.ecount())
        if q > best_q:
            best, best_q = part.membership, q
    return renumber_by_size(best), float(graph.modularity(best, weights=w))


def partition_components(
    pair_factors: np.ndarray,
    pairs: np.ndarray,
    n_neurons: int,
    *,
    min_strength: float = 0.05,
    n_runs: int = 10,
    random_state: int = 0,
    advance=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Partition every component.

    Parameters
    ----------
    pair_factors : (P, R) non-negative pair loadings
    pairs : (P, 2) neuron indices of each pair
    n_neurons : N

    Returns ``membership`` int32 (R, N) (−1 = not in the component's graph) and the
    modularity of each partition (R,).
    """
    n_comp = pair_factors.shape[1]
    membership = np.full((n_comp, n_neurons), -1, dtype=np.int32)
    modularity = np.full(n_comp, np.nan)
    seeds = np.random.SeedSequence(random_state).generate_state(n_comp)
    for r in range(n_comp):
        w = pair_matrix(pair_factors[:, r], pairs, n_neurons)
        graph, kept = component_graph(w, min_strength)
        if kept.size == 0:
            warn(f"component {r} has an all-zero pair pattern; it has no communities")
        else:
            membership[r, kept], modularity[r] = partition_graph(
                graph, n_runs=n_runs, random_state=int(seeds[r])
            )
        if advance is not None:
            advance()
    return membership, modularity


def read_graph(path: Path) -> tuple[ig.Graph, list[str]]:
    """A weighted graph from a dense symmetric ``.npy`` matrix or a CSV edge list.

    Returns the graph and its node labels (row indices as strings for a matrix, names
    for an edge list, in order of first appearance).
    """
    if not path.exists():
        raise InputError(f"{path}: graph file not found")
    if path.suffix.lower() == ".npy":
        try:
            w = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: not a readable .npy matrix ({exc})") from None
        if w.ndim != 2 or w.shape[0] != w.shape[1]:
            raise InputError(f"{path}: expected a square matrix, got shape {w.shape}")
        if w.dtype.kind not in "fiub" or not np.isfinite(w).all():
            raise InputError(f"{path}: matrix must hold finite numbers")
        if not np.allclose(w, w.T):
            raise InputError(f"{path}: matrix is not symmetric")
        if (w < 0).any():
            raise InputError(f"{path}: negative weights; the graph must be non-negative")
        w = np.array(w, dtype=np.float64)
        np.fill_diagonal(w, 0.0)
        return graph_from_matrix(w), [str(i) for i in range(w.shape[0])]
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from None
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
    g = ig.Graph(n=len(names), edges=edges, directed=False)
    g.es["weight"] = weights
    g.simplify(combine_edges="sum")
    return g, list(names)


# ----------------------------------------------------------------------------- stage
def params(config: Config) -> dict:
    return dict(config["communities"])


def run(config: Config, workdir: Path, console: Console, upstream: dict) -> tuple[dict, dict]:
    aff, fac = upstream["affinity"], upstream["factorize"]
    p = config["communities"]
    pair_factors = fac["factors/pairs"]
    with console.progress("communities (components)", pair_factors.shape[1]) as advance:
        membership, modularity = partition_components(
            pair_factors,
            aff["pairs"],
            len(aff["neurons"]),
            min_strength=p["min_strength"],
            n_runs=p["n_runs"],
            random_state=p["seed"],
            advance=advance,
        )
    return {"membership": membership, "neurons": aff["neurons"], "modularity": modularity}, {}

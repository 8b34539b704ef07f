"""Community detection on weighted graphs: a weighted degree-corrected SBM, and Leiden.

Pure core of the communities stage: graphs in, partitions out (no files, no printing).

``partition(graph, method="wsbm")`` (the default) infers the partition of minimum description
length (DL) under a weighted, degree-corrected stochastic block model:

* topology: Peixoto's microcanonical degree-corrected SBM with its nonparametric priors
  (partition, block edge counts, "distributed" degree prior) -- Peixoto, PRE 95, 012317 (2017);
* weights: given the edges, weights are i.i.d. within classes of edges -- one class per block
  pair ("pairs", Peixoto, PRE 97, 012306, 2018) or one per block plus one shared by all
  between-block edges ("assortative", the weighted planted-partition analogue) -- from an
  exponential or log-normal distribution whose parameters are integrated over a conjugate
  prior. Family and structure are chosen by DL ("auto"). Before that, node effects (a
  log-additive fit with strength interactions, the weight analogue of degree correction) are
  divided out of the weights, so blocks are not made of "heavy" and "light" nodes.
* complete graphs (a dense matrix with all pairs): the edge set carries no information, the
  topology terms are dropped and the model is weights-only.

Model selection is part of the DL: the number of blocks is whatever minimises it, and a single
block (no structure) wins when the evidence is absent. Fitting: Leiden partitions at several
resolutions (weighted and unweighted) seed the search; the best by DL are refined by greedy
single-node moves and block merges until no move or merge lowers the DL. This is repeated
``n_runs`` times with different seeds; the partition of lowest DL is returned, and the mean
pairwise ARI between the runs' partitions is reported as ``stability``. Nested levels above it
come from the nested-SBM prior on the block graph (Peixoto, PRX 4, 011047, 2014).
See docs/communities.md.

Leiden (Traag, Waltman & van Eck 2019) stays selectable: ``"leiden-modularity"``,
``"leiden-rb"`` (RBConfiguration with ``resolution``), ``"leiden-cpm"`` (``resolution``).

Vertices without any edge of positive weight (isolated, zero strength) are not partitioned:
their membership is ``-1`` and they are not counted in ``n_communities``. Self-loops are
ignored; parallel edges are merged by summing their weights; edges of weight 0 are absent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import igraph
import leidenalg
import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import spsolve

from ._sbm_engine import SBMState, _lbinom, _lf, _lmulti, make_weight_model
from .clustering_metrics import adjusted_rand_index

__all__ = ["PartitionResult", "partition", "graph_from_dense", "METHODS"]

METHODS = ("wsbm", "leiden-modularity", "leiden-rb", "leiden-cpm")
WEIGHT_MODELS = ("exponential", "lognormal")  # "auto" picks one of these by DL
WEIGHT_STRUCTURES = ("pairs", "assortative")  # likewise
SPARSIFY = ("none", "knn", "top")


@dataclass
class PartitionResult:
    """Result of :func:`partition`.

    membership: int32 (n vertices); communities 0..K-1 numbered by decreasing size (ties by
        lowest vertex index); -1 for vertices with no edge of positive weight.
    n_communities: K.
    score: for ``wsbm``, the description length in nats of graph + flat partition (level 0)
        under the model (lower is better; comparable only between partitions of the same graph
        and model; ``details["dl_one_block"]`` is the DL of "no structure");
        for Leiden methods, the quality function leidenalg maximised (higher is better).
    stability: mean pairwise adjusted Rand index between the partitions of the ``n_runs``
        runs (1 = every run agreed); NaN when n_runs == 1.
    levels: nested partitions, finest first, coarsest last; ``levels[0]`` is the flat
        partition; ``[membership]`` when there is no hierarchy.
    method: the method used.
    params: every parameter used, defaults included (for provenance).
    details: extra diagnostics (DL terms, per-run scores and memberships, ...).
    """

    membership: np.ndarray
    n_communities: int
    score: float
    stability: float
    levels: list
    method: str
    params: dict
    details: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# input handling
# ---------------------------------------------------------------------------------------------
def _edge_weights(graph: igraph.Graph, weights) -> np.ndarray | None:
    if weights is None:
        return None
    if isinstance(weights, str):
        if weights not in graph.es.attributes():
            raise ValueError(
                f"graph has no edge attribute {weights!r} (attributes: "
                f"{graph.es.attributes()}); pass weights=None for an unweighted graph")
        w = graph.es[weights]
    else:
        w = weights
    try:
        w = np.asarray(w, dtype=float).ravel()
    except (TypeError, ValueError):
        raise ValueError("edge weights must be numbers") from None
    if w.shape[0] != graph.ecount():
        raise ValueError(f"got {w.shape[0]} weights for {graph.ecount()} edges")
    if np.isnan(w).any():
        raise ValueError("edge weights contain NaN")
    if np.isinf(w).any():
        raise ValueError("edge weights contain infinite values")
    if (w < 0).any():
        raise ValueError("edge weights must be non-negative (found a negative weight)")
    return w


def _simple_edges(graph: igraph.Graph, weights):
    """(N, edges (E,2) with i<j unique, weights (E,) > 0 or None) of a validated graph."""
    if not isinstance(graph, igraph.Graph):
        raise ValueError(f"graph must be an igraph.Graph, not {type(graph).__name__}")
    if graph.is_directed():
        raise ValueError("graph must be undirected (got a directed graph)")
    N = graph.vcount()
    w = _edge_weights(graph, weights)
    el = np.asarray(graph.get_edgelist(), dtype=np.int64).reshape(-1, 2)
    keep = el[:, 0] != el[:, 1]  # self-loops are ignored
    if w is not None:
        keep &= w > 0  # zero weight = no edge
    el = np.sort(el[keep], axis=1)
    ww = None if w is None else w[keep]
    if len(el):
        key = el[:, 0] * N + el[:, 1]
        uniq, inv = np.unique(key, return_inverse=True)
        if len(uniq) < len(key):  # parallel edges: merged, weights summed
            el = np.column_stack([uniq // N, uniq % N])
            if ww is not None:
                ww = np.bincount(inv, weights=ww, minlength=len(uniq))
    return N, el, ww


def _check_int(name, v, lo=1):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueError(f"{name} must be an integer >= {lo} (got {v!r})")
    return int(v)


def _check_pos(name, v):
    try:
        v = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number (got {v!r})") from None
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a positive number (got {v!r})")
    return v


def _relabel_by_size(b: np.ndarray) -> np.ndarray:
    """Communities renumbered 0..K-1 by decreasing size (ties: lowest first vertex); -1 kept."""
    b = np.asarray(b, dtype=np.int64)
    out = np.full(b.shape, -1, dtype=np.int32)
    m = b >= 0
    if not m.any():
        return out
    labs, first, counts = np.unique(b[m], return_index=True, return_counts=True)
    idx_first = np.flatnonzero(m)[first]
    order = np.lexsort((idx_first, -counts))
    newlab = np.empty(len(labs), dtype=np.int32)
    newlab[order] = np.arange(len(labs), dtype=np.int32)
    out[m] = newlab[np.searchsorted(labs, b[m])]
    return out


def _stability(runs: list) -> float:
    if len(runs) < 2:
        return float("nan")
    return float(np.mean([adjusted_rand_index(a, b) for a, b in combinations(runs, 2)]))


# ---------------------------------------------------------------------------------------------
# Leiden
# ---------------------------------------------------------------------------------------------
def _leiden(g: igraph.Graph, wname, kind: str, resolution: float, seed: int, n_iterations=2):
    if kind == "modularity":
        p = leidenalg.find_partition(g, leidenalg.ModularityVertexPartition, weights=wname,
                                     seed=seed, n_iterations=n_iterations)
    elif kind == "rb":
        p = leidenalg.find_partition(g, leidenalg.RBConfigurationVertexPartition, weights=wname,
                                     resolution_parameter=resolution, seed=seed,
                                     n_iterations=n_iterations)
    else:
        p = leidenalg.find_partition(g, leidenalg.CPMVertexPartition, weights=wname,
                                     resolution_parameter=resolution, seed=seed,
                                     n_iterations=n_iterations)
    return np.asarray(p.membership, dtype=np.int64), float(p.quality())


def _seed_partition(g: igraph.Graph, wname, resolution: float, seed: int) -> np.ndarray:
    """Fast Leiden (igraph's C implementation, modularity objective with ``resolution``,
    i.e. RBConfiguration) used only to seed the SBM search; seeded via a private RNG."""
    import random

    igraph.set_random_number_generator(random.Random(seed))
    try:
        cl = g.community_leiden(objective_function="modularity", weights=wname,
                                resolution=resolution, n_iterations=2)
    finally:
        igraph.set_random_number_generator(random)
    return np.asarray(cl.membership, dtype=np.int64)


def _sub_graph(n, edges, w):
    g = igraph.Graph(n=n, edges=edges.tolist())
    if w is not None:
        g.es["weight"] = w.tolist()
    return g


# ---------------------------------------------------------------------------------------------
# weighted SBM
# ---------------------------------------------------------------------------------------------
def node_corrected_weights(edges: np.ndarray, w: np.ndarray, n: int,
                           interactions: bool = True) -> np.ndarray:
    """Weights with the node-level part of their variation divided out.

    Least-squares fit, over the edges, of
    ``ln w_ij ~ c + a_i + a_j [+ g(x_i, x_j)]`` where a_i is a free effect per node (each
    node's typical weight) and, with ``interactions``, g is a symmetric polynomial
    interaction of the standardised log strengths x (terms x_i x_j, x_i x_j (x_i + x_j),
    x_i^2 x_j^2) -- so weights that depend on the product or the combination of the two
    ends' strengths are explained too. The fit is done once, independently of any partition
    (the weight analogue of degree correction); the returned weights exp(residual) are then
    modelled per block pair. Positive weights out.
    """
    y = np.log(w)
    E = len(edges)
    i, j = edges[:, 0], edges[:, 1]
    s = np.bincount(i, weights=w, minlength=n) + np.bincount(j, weights=w, minlength=n)
    cols = [np.ones(E)]
    if interactions:
        x = np.log(np.maximum(s, 1e-300))
        sd = x[s > 0].std()
        x = (x - x[s > 0].mean()) / (sd if sd > 1e-12 else 1.0)
        xi, xj = x[i], x[j]
        cols += [xi * xj, xi * xj * (xi + xj), (xi * xj) ** 2]
    F = np.column_stack(cols)  # (E, p)
    # normal equations of [incidence | F] with a tiny ridge: the intercept is collinear with
    # the node effects (and bipartite components add another direction); the ridge picks one
    # solution, the residuals -- all that is used -- are the same for every solution
    Inc = sp.csr_matrix((np.ones(2 * E), (np.r_[np.arange(E), np.arange(E)], np.r_[i, j])),
                        shape=(E, n))
    X = sp.hstack([Inc, sp.csr_matrix(F)]).tocsr()
    G = (X.T @ X).tocsc()
    G = G + sp.diags(1e-9 * (1.0 + np.abs(G.diagonal())))
    # sparse direct solve: single-threaded and quick for these small systems (a dense LAPACK
    # solve was erratic on a loaded multi-user machine)
    beta = spsolve(G.tocsc(), X.T @ y)
    r = y - X @ beta
    return np.exp(r)


def _greedy_merges(st: SBMState) -> None:
    while st.B > 1:
        occ, D = st.merge_costs()
        x, y = np.unravel_index(int(np.argmin(D)), D.shape)
        if not D[x, y] < -1e-9:
            break
        st.merge(int(occ[x]), int(occ[y]))


def _refine(st: SBMState, rng, max_sweeps: int, tol: float) -> None:
    """Greedy node moves until no single move lowers the DL, then merges; repeat until stable."""
    for _ in range(50):
        st.screened_sweeps(rng, max_rounds=max_sweeps, tol=tol)
        st.compact()
        before = st.B
        _greedy_merges(st)
        if st.B == before:
            break


def _nested_levels(st: SBMState) -> list:
    """Nested levels above the flat partition, from the nested-SBM prior on the block graph.

    The block graph (B nodes, e_rs edges) is itself described by a non-degree-corrected
    multigraph SBM: a grouping c of the B blocks into C groups costs
    sum_{g<h} ln (( n_g n_h, m_gh )) + sum_g ln (( n_g(n_g+1)/2, m_gg )) + partition prior,
    plus ln (( C(C+1)/2, E )) for the level above it, against ln (( B(B+1)/2, E )) for no
    level. Groupings are built by greedy merges; a level is kept while it lowers the DL.
    Returns a list of block->group maps, finest first.
    """
    occ = np.flatnonzero(st.nr > 0)
    e = st.e[np.ix_(occ, occ)].copy()
    m = e.copy()
    m[np.diag_indices_from(m)] /= 2.0  # edges, self-loops once
    E = float(st.E)
    maps = []
    while m.shape[0] > 2:
        B = m.shape[0]

        def cost(c):
            C = int(c.max()) + 1
            n = np.bincount(c, minlength=C).astype(float)
            onehot = np.zeros((B, C))
            onehot[np.arange(B), c] = 1.0
            mu = np.triu(m)
            mg = onehot.T @ mu @ onehot
            mg = np.triu(mg) + np.triu(mg.T, 1)
            iu = np.triu_indices(C, 1)
            L = _lmulti(n[iu[0]] * n[iu[1]], mg[iu]).sum()
            L += _lmulti(n * (n + 1) / 2.0, np.diag(mg)).sum()
            L += np.log(B) + _lbinom(B - 1.0, C - 1.0) + _lf(B) - _lf(n).sum()
            L += _lmulti(C * (C + 1) / 2.0, E)
            return float(L)

        c = np.arange(B)
        best = cost(c)
        flat = float(_lmulti(B * (B + 1) / 2.0, E))
        while c.max() > 0:
            C = int(c.max()) + 1
            trial = []
            for x, y in combinations(range(C), 2):
                cc = c.copy()
                cc[cc == y] = x
                _, cc = np.unique(cc, return_inverse=True)
                trial.append((cost(cc), cc))
            val, cc = min(trial, key=lambda t: t[0])
            if val < best - 1e-9:
                best, c = val, cc
            else:
                break
        C = int(c.max()) + 1
        if C >= B or C < 2 or best >= flat - 1e-9:
            break
        maps.append(c)
        onehot = np.zeros((B, C))
        onehot[np.arange(B), c] = 1.0
        mu = np.triu(m)
        mg = onehot.T @ mu @ onehot
        m = np.triu(mg) + np.triu(mg.T, 1)
        m = m + np.triu(m, 1).T
    return maps


def _wsbm(graph, weights, *, random_state, n_runs, weight_model, weight_structure,
          node_correction, weight_interactions,
          degree_prior, resolutions, n_refine, max_sweeps, tol, hierarchy, level, topology):
    N, edges, w = _simple_edges(graph, weights)
    present = np.zeros(N, dtype=bool)
    present[edges.ravel()] = True
    params = dict(method="wsbm", weights=weights if isinstance(weights, (str, type(None)))
                  else "<array>", n_runs=n_runs, random_state=random_state,
                  weight_model=weight_model if w is not None else "none",
                  weight_structure=weight_structure if w is not None else "none",
                  node_correction=bool(node_correction) and w is not None,
                  weight_interactions=bool(weight_interactions) and bool(node_correction)
                  and w is not None,
                  degree_prior=degree_prior, resolutions=list(resolutions), n_refine=n_refine,
                  max_sweeps=max_sweeps, tol=tol, hierarchy=hierarchy, level=level,
                  topology=topology)
    idx = np.flatnonzero(present)
    n = len(idx)
    if n == 0:
        mem = np.full(N, -1, dtype=np.int32)
        return PartitionResult(mem, 0, 0.0, float("nan") if n_runs < 2 else 1.0, [mem], "wsbm",
                               params, {"note": "no edges of positive weight"})
    remap = np.full(N, -1, dtype=np.int64)
    remap[idx] = np.arange(n)
    sedges = remap[edges]
    complete = len(sedges) == n * (n - 1) // 2
    use_topology = (not complete) if topology == "auto" else bool(topology)
    params["topology_used"] = use_topology
    ww = None
    if w is not None:
        ww = (node_corrected_weights(sedges, w, n, interactions=weight_interactions)
              if node_correction else w)
    g = _sub_graph(n, sedges, w)
    rng = np.random.default_rng(random_state)
    seeds = [int(x) for x in rng.integers(0, 2**31 - 1, size=n_runs)]

    def candidates(seed):
        cands = [np.zeros(n, dtype=np.int64)]
        for wname in ([None, "weight"] if w is not None else [None]):
            for res in resolutions:
                cands.append(_seed_partition(g, wname, res, seed))
        return cands

    first = candidates(seeds[0])
    family_dl = {}
    if ww is None:
        family, structure = "none", "pairs"
    else:
        # weight family and structure: given, or chosen by description length at the best
        # seed partition (Bayesian model selection between the alternatives)
        fams = WEIGHT_MODELS if weight_model == "auto" else (weight_model,)
        structs = WEIGHT_STRUCTURES if weight_structure == "auto" else (weight_structure,)
        for fam in fams:
            for struct in structs:
                s_f = SBMState(n, sedges, ww, np.zeros(n, dtype=np.int64),
                               make_weight_model(fam, ww), degree_prior=degree_prior,
                               topology=use_topology, weight_structure=struct)
                vals = []
                for b in first:
                    s_f.set_partition(b)
                    vals.append(s_f.dl())
                family_dl[f"{fam}/{struct}"] = float(min(vals))
        family, structure = min(family_dl, key=family_dl.get).split("/")
    params["weight_model_used"] = family
    params["weight_structure_used"] = structure
    wm = make_weight_model(family, ww)
    st = SBMState(n, sedges, ww, np.zeros(n, dtype=np.int64), wm, degree_prior=degree_prior,
                  topology=use_topology, weight_structure=structure)
    one_dl = st.dl()
    runs, dls = [], []
    for run in range(n_runs):
        cands = first if run == 0 else candidates(seeds[run])
        scored = []
        seen = set()
        for b in cands:
            _, b = np.unique(b, return_inverse=True)
            key = tuple(b)
            if key in seen:
                continue
            seen.add(key)
            st.set_partition(b)
            scored.append((st.dl(), b))
        scored.sort(key=lambda t: t[0])
        best_dl, best_b = np.inf, None
        for _, b in scored[:n_refine]:
            st.set_partition(b)
            _refine(st, rng, max_sweeps, tol)
            d = st.dl()
            if d < best_dl:
                best_dl, best_b = d, st.b.copy()
        runs.append(best_b)
        dls.append(best_dl)
    j = int(np.argmin(dls))
    st.set_partition(runs[j])
    terms = st.dl_terms()
    flat = np.full(N, -1, dtype=np.int64)
    flat[idx] = st.b
    levels = [_relabel_by_size(flat)]
    # the nested levels describe the block graph's edge counts; on a complete graph (no
    # topology in the model) those are just n_r n_s, so there is no hierarchy to infer
    if hierarchy and use_topology and st.B > 2:
        cur = st.b.copy()
        for cmap in _nested_levels(st):
            cur = cmap[cur]
            lv = np.full(N, -1, dtype=np.int64)
            lv[idx] = cur
            levels.append(_relabel_by_size(lv))
    if not 0 <= level < len(levels):
        raise ValueError(f"level={level} but the hierarchy has {len(levels)} level(s) "
                         f"(0..{len(levels) - 1})")
    mem = levels[level]
    run_mems = []
    for b in runs:
        full = np.full(N, -1, dtype=np.int64)
        full[idx] = b
        run_mems.append(_relabel_by_size(full))
    details = dict(dl_terms=terms, weight_family_dl=family_dl, run_seeds=seeds,
                   run_scores=[float(x) for x in dls],
                   run_memberships=run_mems, dl_one_block=float(one_dl),
                   n_levels=len(levels))
    return PartitionResult(mem, int(mem.max()) + 1 if (mem >= 0).any() else 0,
                           float(dls[j]), _stability([r[idx] for r in run_mems]), levels,
                           "wsbm", params, details)


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------
def partition(graph: igraph.Graph, *, weights="weight", method: str = "wsbm", random_state=None,
              n_runs: int = 3, resolution: float = 1.0, weight_model: str = "auto",
              weight_structure: str = "auto",
              node_correction: bool = True, weight_interactions: bool = True,
              degree_prior: str = "distributed",
              resolutions=(0.5, 1.0, 2.0), n_refine: int = 3, max_sweeps: int = 100,
              tol: float = 1e-6, hierarchy: bool = True, level: int = 0,
              topology="auto") -> PartitionResult:
    """Partition an undirected weighted graph into communities.

    Parameters
    ----------
    graph: undirected ``igraph.Graph``.
    weights: name of a non-negative edge attribute, a sequence of one weight per edge, or
        None (unweighted). Zero-weight edges count as absent.
    method: ``"wsbm"`` (default), ``"leiden-modularity"``, ``"leiden-rb"``, ``"leiden-cpm"``.
    random_state: int seed (or None for fresh entropy); the same seed gives the same result.
    n_runs: independent runs (different seeds); the best is returned and their agreement is
        the ``stability``.
    resolution: resolution of ``leiden-rb`` and ``leiden-cpm`` (ignored by the others).
    weight_model: ``wsbm`` only: ``"exponential"``, ``"lognormal"`` or ``"auto"`` (smaller DL).
    weight_structure: ``wsbm`` only: ``"pairs"`` (a weight distribution per block pair),
        ``"assortative"`` (per block, plus one for all between-block edges) or ``"auto"``.
    node_correction: ``wsbm`` only: divide node weight propensities out of the weights first.
    weight_interactions: ``wsbm`` only: include strength-interaction terms in that correction.
    degree_prior: ``wsbm`` only: ``"distributed"`` (Peixoto 2017) or ``"uniform"``.
    resolutions: ``wsbm`` only: resolutions of the Leiden (RBConfiguration) seed partitions,
        each run weighted and unweighted.
    n_refine: ``wsbm`` only: seed partitions refined in each run (the best by DL).
    max_sweeps, tol: ``wsbm`` only: cap on node-move rounds per refinement step, and the DL
        gain (nats) below which a move does not count.
    hierarchy: ``wsbm`` only: infer nested levels above the flat partition.
    level: which level becomes ``membership`` (0 = the flat, finest partition).
    topology: ``wsbm`` only: model which pairs are connected (True), not (False), or
        ``"auto"``: not for a complete graph (where the edge set carries no information).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    n_runs = _check_int("n_runs", n_runs)
    if random_state is not None and not isinstance(random_state, (int, np.integer)):
        raise ValueError(f"random_state must be an integer or None (got {random_state!r})")
    if method == "wsbm":
        if weight_model not in WEIGHT_MODELS + ("auto",):
            raise ValueError(f"unknown weight_model {weight_model!r}; choose one of "
                             f"auto, {', '.join(WEIGHT_MODELS)}")
        if weight_structure not in WEIGHT_STRUCTURES + ("auto",):
            raise ValueError(f"unknown weight_structure {weight_structure!r}; choose one of "
                             f"auto, {', '.join(WEIGHT_STRUCTURES)}")
        if degree_prior not in ("distributed", "uniform"):
            raise ValueError(f"unknown degree_prior {degree_prior!r}; choose 'distributed' "
                             "or 'uniform'")
        if topology not in ("auto", True, False):
            raise ValueError(f"topology must be 'auto', True or False (got {topology!r})")
        resolutions = tuple(_check_pos("resolutions entry", r) for r in resolutions)
        if not resolutions:
            raise ValueError("resolutions must not be empty")
        _check_int("level", level, lo=0)
        return _wsbm(graph, weights, random_state=random_state, n_runs=n_runs,
                     weight_model=weight_model, weight_structure=weight_structure,
                     node_correction=node_correction,
                     weight_interactions=weight_interactions, degree_prior=degree_prior,
                     resolutions=resolutions,
                     n_refine=_check_int("n_refine", n_refine),
                     max_sweeps=_check_int("max_sweeps", max_sweeps), tol=float(tol),
                     hierarchy=bool(hierarchy), level=level, topology=topology)
    kind = method.split("-", 1)[1]
    resolution = _check_pos("resolution", resolution)
    if level != 0:
        raise ValueError(f"{method} has a single level (level must be 0)")
    N, edges, w = _simple_edges(graph, weights)
    present = np.zeros(N, dtype=bool)
    present[edges.ravel()] = True
    idx = np.flatnonzero(present)
    remap = np.full(N, -1, dtype=np.int64)
    remap[idx] = np.arange(len(idx))
    g = _sub_graph(len(idx), remap[edges], w)
    rng = np.random.default_rng(random_state)
    params = dict(method=method, weights=weights if isinstance(weights, (str, type(None)))
                  else "<array>", n_runs=n_runs, random_state=random_state,
                  resolution=resolution if kind != "modularity" else None, n_iterations=2)
    runs, quals = [], []
    for _ in range(n_runs):
        seed = int(rng.integers(0, 2**31 - 1))
        if len(idx):
            b, q = _leiden(g, "weight" if w is not None else None, kind, resolution, seed)
        else:
            b, q = np.zeros(0, dtype=np.int64), 0.0
        full = np.full(N, -1, dtype=np.int64)
        full[idx] = b
        runs.append(_relabel_by_size(full))
        quals.append(q)
    j = int(np.argmax(quals))
    mem = runs[j]
    return PartitionResult(mem, int(mem.max()) + 1 if (mem >= 0).any() else 0, float(quals[j]),
                           _stability([r[idx] for r in runs]), [mem], method, params,
                           dict(run_scores=quals, run_memberships=runs))


def graph_from_dense(W, *, names=None, sparsify: str = "none", k: int | None = None,
                     fraction: float | None = None) -> igraph.Graph:
    """Undirected weighted igraph graph from a dense symmetric non-negative matrix.

    The diagonal is ignored; zero entries are not edges. ``sparsify``:
    ``"none"`` keeps every positive pair; ``"knn"`` keeps a pair when either end has it among
    its ``k`` heaviest pairs (default k = round(sqrt(n))); ``"top"`` keeps the heaviest
    ``fraction`` of the positive pairs (default 0.1). Edge attribute ``weight``; vertex
    attribute ``name`` when ``names`` is given.
    """
    A = np.asarray(W, dtype=float)
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"matrix must be square (got shape {A.shape})")
    if np.isnan(A).any():
        raise ValueError("matrix contains NaN")
    if np.isinf(A).any():
        raise ValueError("matrix contains infinite values")
    if (A < 0).any():
        raise ValueError("matrix must be non-negative (found a negative entry)")
    scale = max(float(np.abs(A).max()), 1e-300)
    if not np.allclose(A, A.T, rtol=1e-6, atol=1e-9 * scale):
        raise ValueError("matrix must be symmetric")
    if sparsify not in SPARSIFY:
        raise ValueError(f"unknown sparsify {sparsify!r}; choose one of {', '.join(SPARSIFY)}")
    n = A.shape[0]
    if names is not None:
        names = [str(x) for x in names]
        if len(names) != n:
            raise ValueError(f"got {len(names)} names for a {n} x {n} matrix")
    A = (A + A.T) / 2.0
    np.fill_diagonal(A, 0.0)
    iu = np.triu_indices(n, 1)
    keep = A[iu] > 0
    if sparsify == "knn":
        k = int(round(np.sqrt(n))) if k is None else _check_int("k", k)
        k = min(k, max(n - 1, 1))
        M = A.copy()
        np.fill_diagonal(M, -np.inf)
        nn = np.argsort(-M, axis=1, kind="stable")[:, :k]
        mark = np.zeros((n, n), dtype=bool)
        mark[np.repeat(np.arange(n), k), nn.ravel()] = True
        mark |= mark.T
        keep &= mark[iu]
    elif sparsify == "top":
        fraction = 0.1 if fraction is None else float(fraction)
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1] (got {fraction!r})")
        vals = A[iu][keep]
        if vals.size:
            m = max(1, int(round(fraction * vals.size)))
            thr = np.sort(vals)[::-1][m - 1]
            keep &= A[iu] >= thr
    src, dst = iu[0][keep], iu[1][keep]
    g = igraph.Graph(n=n, edges=list(zip(src.tolist(), dst.tolist())))
    g.es["weight"] = A[src, dst].tolist()
    if names is not None:
        g.vs["name"] = names
    return g

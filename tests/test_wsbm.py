"""Tests of the community-detection core (dynconn.methods.wsbm) and the partition metrics."""

from __future__ import annotations

import itertools
import math
import sys
from pathlib import Path

import igraph
import numpy as np
import pytest

from dynconn.methods.wsbm import SBMState, make_weight_model
from dynconn.methods.clustering_metrics import (
    adjusted_mutual_info,
    adjusted_rand_index,
    expected_mutual_info,
    contingency_table,
    mutual_info,
    normalized_mutual_info,
)
from dynconn.methods.wsbm import PartitionResult, graph_from_dense, partition

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data"


# ---------------------------------------------------------------------------------------------
# graph builders
# ---------------------------------------------------------------------------------------------
def planted_graph(sizes, p, rng, weight_mean=None):
    """Blocks of ``sizes``, edge probability p[a][b], weights ~ Exp(mean weight_mean[a][b])."""
    labels = np.repeat(np.arange(len(sizes)), sizes)
    n = len(labels)
    edges, weights = [], []
    for i in range(n):
        for j in range(i + 1, n):
            a, b = labels[i], labels[j]
            if rng.random() < p[a][b]:
                edges.append((i, j))
                if weight_mean is not None:
                    weights.append(rng.exponential(weight_mean[a][b]))
    g = igraph.Graph(n=n, edges=edges)
    if weight_mean is not None:
        g.es["weight"] = weights
    return g, labels


def two_block_disagreeing(seed=0):
    """Two blocks of 30: edges mostly inside (topology), weights much heavier between -- the
    between-block edges carry more total weight than the within-block ones (as at mu_t=0.25 in
    the weighted LFR benchmark)."""
    rng = np.random.default_rng(seed)
    g, labels = planted_graph([30, 30], [[0.5, 0.1], [0.1, 0.5]], rng,
                              weight_mean=[[1.0, 10.0], [10.0, 1.0]])
    return g, labels


# ---------------------------------------------------------------------------------------------
# the weighted SBM
# ---------------------------------------------------------------------------------------------
def test_disagreeing_weights_and_topology_recovered():
    g, labels = two_block_disagreeing()
    w = np.array(g.es["weight"])
    same = labels[np.array(g.get_edgelist())[:, 0]] == labels[np.array(g.get_edgelist())[:, 1]]
    assert w[~same].sum() > w[same].sum()  # the weights really do "disagree" with topology
    res = partition(g, random_state=1)
    assert res.n_communities == 2
    assert adjusted_rand_index(labels, res.membership) > 0.95
    # weighted modularity is misled by such weights; the model is not
    leiden = partition(g, method="leiden-modularity", random_state=1)
    assert adjusted_rand_index(labels, res.membership) > adjusted_rand_index(
        labels, leiden.membership)


def test_weights_alone_carry_the_blocks():
    # same edge density everywhere, block structure only in the weights
    rng = np.random.default_rng(3)
    g, labels = planted_graph([25, 25], [[0.3, 0.3], [0.3, 0.3]], rng,
                              weight_mean=[[5.0, 1.0], [1.0, 5.0]])
    res = partition(g, random_state=0)
    assert adjusted_rand_index(labels, res.membership) > 0.9
    # ignoring the weights there is nothing to find
    res_u = partition(g, weights=None, random_state=0)
    assert res_u.n_communities == 1


@pytest.mark.parametrize("seed", [0, 1])
def test_erdos_renyi_with_iid_weights_is_one_community(seed):
    rng = np.random.default_rng(seed)
    g = igraph.Graph.Erdos_Renyi(n=80, p=0.15)
    g.es["weight"] = rng.exponential(1.0, g.ecount()).tolist()
    res = partition(g, random_state=seed)
    assert res.n_communities == 1
    assert np.all(res.membership == 0)
    res_u = partition(g, weights=None, random_state=seed)
    assert res_u.n_communities == 1


def test_complete_graph_weights_only_model():
    # dense matrix, planted groups in the weights: all pairs enter, topology terms are off
    rng = np.random.default_rng(0)
    n = 60
    labels = np.repeat([0, 1, 2], 20)
    M = np.where(labels[:, None] == labels[None, :], 4.0, 1.0)
    Z = np.triu(rng.normal(0, 0.4, (n, n)), 1)
    W = M * np.exp(Z + Z.T)
    np.fill_diagonal(W, 0)
    g = graph_from_dense(W)
    assert g.ecount() == n * (n - 1) // 2
    res = partition(g, random_state=0)
    assert res.params["topology_used"] is False
    assert adjusted_rand_index(labels, res.membership) > 0.9
    # no structure: i.i.d. weights on the complete graph -> one community
    Z = np.triu(rng.normal(0, 0.4, (n, n)), 1)
    W0 = np.exp(Z + Z.T)
    np.fill_diagonal(W0, 0)
    assert partition(graph_from_dense(W0), random_state=0).n_communities == 1


def test_many_small_groups_in_a_dense_matrix():
    # 8 groups of 10 neurons + 40 background neurons, every pair weighted (a CP-like pattern)
    rng = np.random.default_rng(2)
    n = 120
    labels = np.full(n, 8)
    labels[:80] = np.repeat(np.arange(8), 10)
    same = (labels[:, None] == labels[None, :]) & (labels[:, None] < 8)
    a = rng.lognormal(0, 0.3, n)
    Z = np.triu(rng.normal(0, 0.5, (n, n)), 1)
    W = np.outer(a, a) * np.where(same, 7.0, 1.0) * np.exp(Z + Z.T)
    np.fill_diagonal(W, 0)
    res = partition(graph_from_dense(W), random_state=0, n_runs=1)
    assert res.params["weight_structure_used"] == "assortative"
    assert adjusted_mutual_info(labels, res.membership) > 0.9


def test_result_fields_numbering_and_provenance():
    rng = np.random.default_rng(5)
    g, labels = planted_graph([30, 18, 10], [[0.6, 0.03, 0.03], [0.03, 0.6, 0.03],
                                             [0.03, 0.03, 0.6]], rng,
                              weight_mean=[[1, 1, 1], [1, 1, 1], [1, 1, 1]])
    g.add_vertices(2)  # two isolated vertices
    res = partition(g, random_state=0, n_runs=3)
    assert isinstance(res, PartitionResult)
    m = res.membership
    assert m.dtype == np.int32 and m.shape == (g.vcount(),)
    assert np.all(m[-2:] == -1)  # isolated vertices are not partitioned
    sizes = np.bincount(m[m >= 0])
    assert res.n_communities == len(sizes) == 3
    assert np.all(np.diff(sizes) <= 0)  # numbered by decreasing size
    assert adjusted_rand_index(labels, m[:-2]) > 0.95
    assert -1.0 <= res.stability <= 1.0
    assert res.stability == pytest.approx(1.0)  # an easy graph: every run agrees (float64 mean of 1s)
    assert res.method == "wsbm"
    assert np.isfinite(res.score)
    assert res.score == pytest.approx(sum(res.details["dl_terms"].values()))  # float64 sum of ~5 terms: 1e-6 rel
    assert res.score < res.details["dl_one_block"]  # structure beats "no structure"
    for key in ("n_runs", "random_state", "weight_model", "weight_model_used",
                "weight_structure", "weight_structure_used", "weight_interactions",
                "node_correction", "degree_prior", "resolutions", "n_refine", "hierarchy",
                "level", "topology", "topology_used"):
        assert key in res.params
    assert res.levels[0] is res.membership or np.array_equal(res.levels[0], m)


def test_stability_nan_for_one_run_and_determinism():
    g, _ = two_block_disagreeing(seed=2)
    r1 = partition(g, random_state=7, n_runs=1)
    assert math.isnan(r1.stability)
    r2 = partition(g, random_state=7, n_runs=1)
    assert np.array_equal(r1.membership, r2.membership)
    assert r1.score == r2.score


def test_hierarchy_levels_are_nested():
    # 6 blocks of 20 in 2 super-groups of 3
    rng = np.random.default_rng(11)
    k = 6
    p = [[0.8 if a == b else (0.1 if a // 3 == b // 3 else 0.002) for b in range(k)]
         for a in range(k)]
    g, labels = planted_graph([20] * k, p, rng)
    res = partition(g, weights=None, random_state=0)
    assert adjusted_rand_index(labels, res.levels[0]) > 0.9
    assert len(res.levels) >= 2
    for fine, coarse in zip(res.levels, res.levels[1:]):
        assert len(np.unique(coarse)) < len(np.unique(fine))
        for c in np.unique(fine):  # every fine group lies inside one coarse group
            assert len(np.unique(coarse[fine == c])) == 1
    top = partition(g, weights=None, random_state=0, level=1)
    assert np.array_equal(top.membership, res.levels[1])
    assert adjusted_rand_index(labels // 3, res.levels[-1]) > 0.9


# ---------------------------------------------------------------------------------------------
# Leiden variants
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method,kw", [("leiden-modularity", {}),
                                       ("leiden-rb", {"resolution": 1.0}),
                                       ("leiden-cpm", {"resolution": 0.2})])
def test_leiden_variants_find_obvious_communities(method, kw):
    g = igraph.Graph.Full(10)
    for _ in range(3):
        g = g.disjoint_union(igraph.Graph.Full(10))
    g.add_edges([(0, 10), (10, 20), (20, 30), (30, 0)])
    g.es["weight"] = [1.0] * g.ecount()
    labels = np.repeat(np.arange(4), 10)
    res = partition(g, method=method, random_state=0, n_runs=3, **kw)
    assert res.method == method
    assert res.n_communities == 4
    assert adjusted_rand_index(labels, res.membership) == pytest.approx(1.0)
    assert res.stability == pytest.approx(1.0)
    assert res.levels == [res.membership]
    if method != "leiden-modularity":
        assert res.params["resolution"] == kw["resolution"]


# ---------------------------------------------------------------------------------------------
# the description length engine: incremental updates agree with full recomputation
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family,structure", [("none", "pairs"), ("exponential", "pairs"),
                                              ("lognormal", "pairs"),
                                              ("exponential", "assortative"),
                                              ("lognormal", "assortative")])
@pytest.mark.parametrize("topology", [True, False])
def test_engine_move_and_merge_costs_match_full_dl(family, structure, topology):
    rng = np.random.default_rng(4)
    g = igraph.Graph.Erdos_Renyi(n=40, p=0.2)
    edges = np.array(g.get_edgelist(), dtype=np.int64)
    w = rng.exponential(1.0, len(edges))
    ww = None if family == "none" else w
    b = rng.integers(0, 4, 40)
    b[:2] = 5  # a block of two and a singleton: empty-block cases
    b[7] = 6
    wm = make_weight_model(family, ww)
    kw = dict(topology=topology, weight_structure=structure)
    st = SBMState(40, edges, ww, b, wm, **kw)
    base = st.dl()
    costs = st.move_costs_all()
    for i in [0, 1, 7, 10, 20]:
        for s in range(st.cap):
            if not np.isfinite(costs[i, s]):
                continue
            b2 = st.b.copy()
            b2[i] = s
            full = SBMState(40, edges, ww, b2, wm, **kw).dl()
            # DLs ~1e3 nats in float64 (1e-13 each): a difference of two recomputed DLs vs the
            # incremental cost is good to ~1e-12; 1e-7 nats is far below any real move's cost
            assert full - base == pytest.approx(costs[i, s], abs=1e-7)
    occ, D = st.merge_costs()
    for x, y in [(0, 1), (1, 3), (2, len(occ) - 1)]:
        b2 = st.b.copy()
        b2[b2 == occ[y]] = occ[x]
        full = SBMState(40, edges, ww, b2, wm, **kw).dl()
        assert full - base == pytest.approx(D[x, y], abs=1e-7)
    moves, ddl = st.sweep(np.random.default_rng(0))
    # a sweep's ddl sums up to 40 incremental moves' costs, each good to ~1e-12 nats
    assert st.dl() - base == pytest.approx(ddl, abs=1e-6)
    assert ddl <= 1e-9  # greedy sweeps never increase the DL (moves are taken only when they lower it)


@pytest.mark.parametrize("batch", [True, False])
def test_screened_sweeps_end_at_a_local_minimum(batch):
    """Batch or sequential node moves: the DL never rises and at the end no single move
    lowers it by more than tol."""
    rng = np.random.default_rng(5)
    g, _ = planted_graph([20, 20, 20], [[0.4, 0.05, 0.05], [0.05, 0.4, 0.05],
                                        [0.05, 0.05, 0.4]], rng,
                         weight_mean=[[2.0, 1.0, 1.0], [1.0, 2.0, 1.0], [1.0, 1.0, 2.0]])
    edges = np.array(g.get_edgelist(), dtype=np.int64)
    w = np.array(g.es["weight"])
    st = SBMState(60, edges, w, rng.integers(0, 5, 60), make_weight_model("lognormal", w))
    start = st.dl()
    st.screened_sweeps(np.random.default_rng(0), tol=1e-6, batch=batch)
    st.compact()
    assert st.dl() < start
    # move costs are exact to ~1e-12 nats (test above); the stopping rule is tol = 1e-6
    assert st.move_costs_all().min() >= -1e-6


def test_batch_move_is_kept_only_if_the_dl_falls():
    """A batch whose moves raise the DL (costs that lie: every node "improves" by moving to a
    random block) is undone: the state and its DL are as before."""
    rng = np.random.default_rng(6)
    g, _ = planted_graph([15, 15], [[0.3, 0.05], [0.05, 0.3]], rng,
                         weight_mean=[[1.0, 1.0], [1.0, 1.0]])
    edges = np.array(g.get_edgelist(), dtype=np.int64)
    w = np.array(g.es["weight"])
    st = SBMState(30, edges, w, np.repeat([0, 1], 15), make_weight_model("exponential", w))
    st.compact()
    before, dl0 = st.b.copy(), st.dl()
    movers = np.arange(30)
    fake = np.zeros((30, st.cap))
    fake[movers, (st.b + 1) % 2] = -1.0  # "moving to the other block is better" for everyone
    moved, dl = st._batch_move(movers, fake, 1e-6)
    assert moved is None
    assert dl == dl0
    assert np.array_equal(st.b, before) and st.dl() == dl0


# ---------------------------------------------------------------------------------------------
# dense matrices
# ---------------------------------------------------------------------------------------------
def test_graph_from_dense_options():
    rng = np.random.default_rng(0)
    A = rng.random((12, 12))
    A = A + A.T
    np.fill_diagonal(A, 5.0)  # the diagonal is ignored
    A[0, 1] = A[1, 0] = 0.0  # zero = no edge
    g = graph_from_dense(A, names=[f"n{i}" for i in range(12)])
    assert g.vcount() == 12 and g.ecount() == 66 - 1
    assert not g.is_directed()
    assert g.vs["name"][3] == "n3"
    assert g.es[g.get_eid(2, 5)]["weight"] == pytest.approx(A[2, 5])  # the same float64, copied
    gk = graph_from_dense(A, sparsify="knn", k=2)
    deg = np.array(gk.degree())
    assert deg.min() >= 2 and gk.ecount() < 66
    for i in range(12):  # each node keeps its 2 heaviest pairs
        row = A[i].copy()
        row[i] = -1
        for j in np.argsort(-row)[:2]:
            assert gk.are_adjacent(i, int(j))
    gt = graph_from_dense(A, sparsify="top", fraction=0.1)
    assert gt.ecount() == round(0.1 * 65)
    assert min(gt.es["weight"]) >= np.sort(A[np.triu_indices(12, 1)])[-gt.ecount()]


@pytest.mark.parametrize("bad,msg", [
    (np.array([[0, 1], [2, 0]], float), "symmetric"),
    (np.array([[0, -1], [-1, 0]], float), "non-negative"),
    (np.array([[0, np.nan], [np.nan, 0]], float), "NaN"),
    (np.ones((2, 3)), "square"),
])
def test_graph_from_dense_rejects_bad_matrices(bad, msg):
    with pytest.raises(ValueError, match=msg):
        graph_from_dense(bad)


# ---------------------------------------------------------------------------------------------
# input validation
# ---------------------------------------------------------------------------------------------
def _small():
    g = igraph.Graph.Ring(6)
    g.es["weight"] = [1.0] * 6
    return g


def test_bad_inputs_raise():
    g = _small()
    g.es["weight"] = [1.0, -1.0, 1.0, 1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="non-negative"):
        partition(g)
    g.es["weight"] = [1.0, float("nan"), 1.0, 1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="NaN"):
        partition(g)
    with pytest.raises(ValueError, match="undirected"):
        partition(igraph.Graph.Ring(6, directed=True), weights=None)
    with pytest.raises(ValueError, match="unknown method"):
        partition(_small(), method="louvain")
    with pytest.raises(ValueError, match="no edge attribute"):
        partition(_small(), weights="strength")
    with pytest.raises(ValueError, match="igraph.Graph"):
        partition(np.eye(3))
    with pytest.raises(ValueError, match="n_runs"):
        partition(_small(), n_runs=0)
    with pytest.raises(ValueError, match="weight_model"):
        partition(_small(), weight_model="gamma")
    with pytest.raises(ValueError, match="weight_structure"):
        partition(_small(), weight_structure="diagonal")
    with pytest.raises(ValueError, match="resolution"):
        partition(_small(), method="leiden-cpm", resolution=-1)
    with pytest.raises(ValueError, match="level"):
        partition(_small(), level=5)


def test_degenerate_graphs():
    g = igraph.Graph(n=5)  # no edges at all
    res = partition(g, weights=None, random_state=0)
    assert res.n_communities == 0 and np.all(res.membership == -1)
    g = igraph.Graph(n=4, edges=[(0, 1), (0, 1), (2, 2)])  # parallel edges, a self-loop
    g.es["weight"] = [1.0, 2.0, 5.0]
    res = partition(g, random_state=0)
    assert res.membership[2] == -1 and res.membership[3] == -1
    assert res.membership[0] == res.membership[1] == 0
    g = igraph.Graph(n=3, edges=[(0, 1), (1, 2)])
    g.es["weight"] = [0.0, 1.0]  # zero weight = absent edge
    res = partition(g, random_state=0)
    assert res.membership[0] == -1


# ---------------------------------------------------------------------------------------------
# partition-comparison metrics (hand-computed values)
# ---------------------------------------------------------------------------------------------
def test_metrics_hand_computed():
    a = [0, 0, 0, 1, 1, 1]
    b = [0, 0, 1, 1, 2, 2]
    # contingency [[2,1,0],[0,1,2]]: MI = (2/3) ln 2; H(a) = ln 2, H(b) = ln 3. Every value below
    # is a float64 sum of <= 9 logs: pytest.approx's rel 1e-6 is far above its ~1e-15 rounding
    assert mutual_info(a, b) == pytest.approx(2 / 3 * math.log(2))
    assert normalized_mutual_info(a, b) == pytest.approx(
        (2 / 3 * math.log(2)) / ((math.log(2) + math.log(3)) / 2))
    # ARI: sum C(n_ij,2) = 2, sum C(a_i,2) = 6, sum C(b_j,2) = 3, C(6,2) = 15
    expected = 6 * 3 / 15
    assert adjusted_rand_index(a, b) == pytest.approx((2 - expected) / (4.5 - expected))
    assert adjusted_rand_index([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(-0.5)
    # identical up to renaming
    assert adjusted_mutual_info([0, 0, 1, 2], [5, 5, 3, 9]) == pytest.approx(1.0)
    assert adjusted_rand_index([0, 0, 1, 2], [5, 5, 3, 9]) == pytest.approx(1.0)
    assert normalized_mutual_info([0, 0, 1, 2], [5, 5, 3, 9]) == pytest.approx(1.0)
    # every node alone vs a real partition: NMI is flattered, AMI is not
    truth = np.repeat(np.arange(3), 10)
    singletons = np.arange(30)
    assert normalized_mutual_info(truth, singletons) > 0.4
    assert abs(adjusted_mutual_info(truth, singletons)) < 1e-9  # (MI - E[MI]) of equal float64 sums
    # reference value (scikit-learn 1.x adjusted_mutual_info_score, arithmetic)
    assert adjusted_mutual_info(a, b) == pytest.approx(0.2987924581708901, abs=1e-12)  # float64 of O(1) terms


def test_expected_mutual_info_matches_permutation_average():
    a = np.array([0, 0, 0, 1, 1, 2])
    b = np.array([0, 0, 1, 1, 1, 1])
    mis = [mutual_info(a, b[list(p)]) for p in itertools.permutations(range(6))]
    assert expected_mutual_info(contingency_table(a, b)) == pytest.approx(np.mean(mis))  # exact vs a 720-term mean


def test_metrics_reject_length_mismatch():
    with pytest.raises(ValueError, match="length"):
        adjusted_mutual_info([0, 1], [0, 1, 2])


# ---------------------------------------------------------------------------------------------
# shared data (skipped in a fresh clone without ../shared)
# ---------------------------------------------------------------------------------------------
def test_lfr_graph_mu_t_025_recovered():
    f = DATA / "lfr" / "s3_r0.npz"
    if not f.exists():
        pytest.skip("shared LFR data not available")
    d = np.load(f)
    g = igraph.Graph(n=len(d["labels"]), edges=d["edges"].tolist())
    g.es["weight"] = d["weights"].tolist()
    res = partition(g, random_state=0, n_runs=1)
    assert adjusted_mutual_info(d["labels"], res.membership) > 0.5
    # the observation: weighted modularity fails here
    lm = partition(g, method="leiden-modularity", random_state=0, n_runs=1)
    assert adjusted_mutual_info(d["labels"], lm.membership) < 0.2


def test_benchmark_script_without_data(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import lfr
    finally:
        sys.path.pop(0)
    assert lfr.main(["--data", str(tmp_path / "absent")]) == 0
    assert "no LFR graphs found" in capsys.readouterr().out

"""Community stage at scale: the block-model temporaries are chunked (no N³ allocation)."""

import igraph
import numpy as np
import pytest

from dynconn.methods import wsbm


def _state(n=60, blocks=12, seed=0):
    rng = np.random.default_rng(seed)
    iu = np.triu_indices(n, 1)
    edges = np.column_stack(iu)
    w = rng.lognormal(0, 0.5, len(edges))
    b = rng.integers(0, blocks, n)
    return wsbm.SBMState(n, edges, w, b, wsbm.make_weight_model("lognormal", w),
                         topology=True, weight_structure="pairs")


def test_chunked_move_and_merge_costs_equal_unchunked(monkeypatch):
    st = _state()
    st.compact()
    whole_moves = st.move_costs_all()
    whole_occ, whole_merges = st.merge_costs()
    # one row per chunk: the smallest chunks the rule can give
    monkeypatch.setattr(wsbm, "CHUNK_BYTES", 1)
    moves = st.move_costs_all()
    occ, merges = st.merge_costs()
    # each row is the same reduction in any chunk (same values, same summation order): exact
    np.testing.assert_array_equal(moves, whole_moves)
    np.testing.assert_array_equal(occ, whole_occ)
    np.testing.assert_array_equal(merges, whole_merges)


@pytest.mark.parametrize("family,structure", [("none", "pairs"), ("exponential", "pairs"),
                                              ("lognormal", "pairs"),
                                              ("exponential", "assortative"),
                                              ("lognormal", "assortative")])
@pytest.mark.parametrize("topology,prior", [(True, "distributed"), (True, "uniform"),
                                            (False, "distributed")])
@pytest.mark.parametrize("dense_cap,stack_max", [(0, 0), (0, 1 << 30), (None, None)])
def test_sparse_screening_equals_dense_reference(family, structure, topology, prior,
                                                 dense_cap, stack_max, monkeypatch):
    """The move costs summed over each node's (node, adjacent block) pairs only equal the
    dense (nodes, cap, cap) evaluation (the screening before the sparse sums, kept for few
    block slots) to rounding (the summation order differs), on sparse
    and dense graphs with few or many blocks, singletons and empty slots, after moves; with
    the pair terms in their own call or stacked with the others, and (defaults) dense below
    _DENSE_CAP slots."""
    if dense_cap is not None:
        monkeypatch.setattr(wsbm, "_DENSE_CAP", dense_cap)
        monkeypatch.setattr(wsbm, "_STACK_MAX", stack_max)
    rng = np.random.default_rng(11)
    for trial in range(6):
        n = int(rng.integers(30, 90))
        p = [0.05, 0.15, 0.6][trial % 3]
        g = igraph.Graph.Erdos_Renyi(n=n, p=p)
        g.delete_vertices([v for v in range(n) if g.degree(v) == 0])
        n = g.vcount()
        edges = np.array(g.get_edgelist(), dtype=np.int64)
        w = rng.lognormal(0.0, 0.7, len(edges))
        ww = None if family == "none" else w
        nb = int(rng.integers(2, 8)) if trial % 2 else int(rng.integers(8, n // 2))
        b = rng.integers(0, nb, n)
        st = wsbm.SBMState(n, edges, ww, b, wsbm.make_weight_model(family, ww),
                           degree_prior=prior, topology=topology, weight_structure=structure)
        for _ in range(2):  # as built, then after incremental moves (a sweep)
            st.compact()
            # the sparse sums read e[s, u] as e[u, s]: the integer counts stay symmetric
            np.testing.assert_array_equal(st.e, st.e.T)
            costs = st.move_costs_all()
            with monkeypatch.context() as dense:  # the (nodes, cap, cap) evaluation, every term
                dense.setattr(wsbm, "_DENSE_CAP", st.cap)
                want = st.move_costs_all()
            np.testing.assert_array_equal(np.isinf(costs), np.isinf(want))
            fin = np.isfinite(want)
            scale = max(1.0, np.abs(want[fin]).max())
            assert np.abs(costs[fin] - want[fin]).max() <= 1e-9 * scale
            # a subset of nodes (screened_sweeps' active rows) gives the same rows
            sub = np.sort(rng.choice(n, n // 3, replace=False))
            np.testing.assert_array_equal(st.move_costs_all(sub), costs[sub])
            st.sweep(np.random.default_rng(trial), nodes=rng.choice(n, n // 2, replace=False))


def test_chunks_by_row_bytes():
    c = wsbm.CHUNK_BYTES
    rows = np.array([c // 2, c // 2, c // 4, c, 2 * c, 1, 1])
    assert [(s.start, s.stop) for s in wsbm._chunks(7, rows)] == [(0, 2), (2, 3), (3, 4),
                                                                   (4, 5), (5, 7)]
    # the same slices as one number per row when every row needs the same
    assert wsbm._chunks(5, np.full(5, c // 2)) == wsbm._chunks(5, c // 2)


def test_chunks_bound_rows():
    assert [(s.start, s.stop) for s in wsbm._chunks(5, wsbm.CHUNK_BYTES // 2)] == [(0, 2), (2, 4), (4, 5)]
    assert len(wsbm._chunks(3, 10 * wsbm.CHUNK_BYTES)) == 3  # at least one row per chunk


def test_strongest_edges_keeps_each_nodes_k_strongest_union():
    from dynconn.stages.communities import component_graph, strongest_edges

    # hand-checkable: 4 nodes, k = 1; 0's strongest is 1, 1's is 0, 2's is 3, 3's is 2 ... and
    # the (0, 2) pair is nobody's strongest, so it goes
    w = np.array([[0, 5, 2, 0], [5, 0, 1, 1], [2, 1, 0, 4], [0, 1, 4, 0]], float)
    mask = strongest_edges(w, 1)
    kept = {(i, j) for i, j in zip(*np.nonzero(np.triu(mask, 1)))}
    assert kept == {(0, 1), (2, 3)}
    # ties with the k-th weight are all kept: node 1 has 1 and 1 toward 2 and 3 at k = 2
    kept2 = {(i, j) for i, j in zip(*np.nonzero(np.triu(strongest_edges(w, 2), 1)))}
    assert kept2 == {(0, 1), (0, 2), (1, 2), (1, 3), (2, 3)}
    g, nodes = component_graph(w, 0.0, max_edges_per_node=1)
    assert g.ecount() == 2 and nodes.tolist() == [0, 1, 2, 3]
    g_all, _ = component_graph(w, 0.0, max_edges_per_node=3)  # k ≥ n − 1: unchanged
    assert g_all.ecount() == 5


def test_component_graph_2000_nodes_is_sparse_and_bounded():
    from dynconn.stages.communities import component_graph, pair_matrix

    n, k = 2000, 10
    rng = np.random.default_rng(1)
    iu = np.triu_indices(n, 1)
    u = rng.random(n)  # a rank-1 factor's pair pattern u_i u_j
    w = pair_matrix(u[iu[0]] * u[iu[1]], np.column_stack(iu), n)
    g, nodes = component_graph(w, 0.05, max_edges_per_node=k)
    assert g.ecount() <= len(nodes) * k  # O(n k) edges, not n²/2
    assert min(g.degree()) >= k

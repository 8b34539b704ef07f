"""Community stage at scale: the block-model temporaries are chunked (no N³ allocation)."""

import numpy as np

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

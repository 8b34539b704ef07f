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


def _dense_move_costs_block(self, nodes):
    """The screening before it skipped the zero terms (dynconn before the wsbm-screen
    branch): every Z[i, s, u] on (nodes, cap, cap) arrays. The reference for the sparse sums."""
    K = self.cap
    N = len(nodes)
    ar = np.arange(N)
    # each node's edge statistics per block: sums in neighbour order (see __init__)
    lens = self.sdeg[nodes]
    first = np.repeat(self.ptr[nodes] - np.cumsum(lens) + lens, lens)
    pos = first + np.arange(int(lens.sum()))
    key = np.repeat(ar * K, lens) + self.b[self.snbr[pos]]
    D4 = np.zeros((N, K, 4))
    D4[:, :, 0] = np.bincount(key, minlength=N * K).reshape(N, K)
    if self.has_w:
        for j in (1, 2, 3):
            D4[:, :, j] = np.bincount(key, weights=self.sst[j, pos],
                                      minlength=N * K).reshape(N, K)
    c = D4[:, :, 0]
    nr, er = self.nr, self.er
    B = int((nr > 0).sum())
    rr = self.b[nodes]
    cr = c[ar, rr]
    cost = np.zeros((N, K))
    # number of blocks and (when not cancelled by the degree prior) the partition prior
    r_empties = nr[rr] == 1
    s_new = nr == 0
    Bp = r_empties[:, None].astype(int) * -1 + s_new[None, :].astype(int) + 1  # B-1..B+1
    cost += np.array([self._b_terms(B + x) - self._b_terms(B) for x in (-1, 0, 1)])[Bp]
    if not (self.topology and self.degree_prior == "distributed"):
        cost += np.log(nr[rr])[:, None] - np.log(nr + 1)[None, :]
    # Terms of the same kind are evaluated in one call on their stacked arguments (the
    # values are elementwise the same as term by term; numpy's per-call cost dominates
    # at these sizes, so fewer, larger calls are quicker).
    if self.topology:
        e = self.e
        ki = self.k[nodes].astype(float)
        erow = e[rr]  # (N, K): e[r_i, u]
        err_ = erow[ar, rr]  # e[r_i, r_i]
        ess = np.diag(e)[None, :]
        # ln e! terms; g(x) = x/2 ln 2 + ln (x/2)! for the diagonal (e_rr counts both ends)
        lf_rm, lf_row, lf_add, lf_e, lf_rs, h_rn, h_r, h_sn, h_s = wsbm._stacked(wsbm._lf, [
            erow - c, erow, e[None, :, :] + c[:, None, :], e, erow - c + cr[:, None],
            (err_ - 2 * cr) / 2, err_ / 2, (ess + 2 * c) / 2, ess / 2])
        X = lf_rm - lf_row  # (N, K), u = r_i excluded below
        XR = X.sum(1) - X[ar, rr]
        Z = lf_add - lf_e[None, :, :]  # (N, s, u)
        kk = np.arange(K)
        ZS = Z.sum(2) - Z[:, kk, kk] - Z[ar[:, None], kk[None, :], rr[:, None]]
        rs = lf_rs - lf_row
        dr = ((err_ - 2 * cr) / 2 * wsbm._LN2 + h_rn) - (err_ / 2 * wsbm._LN2 + h_r)
        ds = ((ess + 2 * c) / 2 * wsbm._LN2 + h_sn) - (ess / 2 * wsbm._LN2 + h_s)
        cost -= (XR[:, None] - X) + ZS + rs + dr[:, None] + ds
        er_r, nr_r = er[rr], nr[rr]
        er_s = er[None, :] + ki[:, None]
        nr_s = np.broadcast_to(nr[None, :] + 1, er_s.shape)
        bt_rm, bt_r0, bt_sa, bt_s0 = wsbm._stacked(self._block_term, [er_r - ki, er_r, er_s, er],
                                               [nr_r - 1, nr_r, nr_s, nr])
        cost += (bt_rm - bt_r0)[:, None] + (bt_sa - bt_s0[None, :])
        if self.degree_prior == "distributed":
            kk = self.kidx[nodes]
            cost += np.log(self.H[rr, kk])[:, None] - np.log(self.H[:, kk].T + 1)
    if self.has_w and self.wstruct == "assortative":
        kk = np.arange(K)
        Wd = self.W[kk, kk]  # (K, 4)
        off = self.Wtot - Wd.sum(0)
        Drr = D4[ar, rr]  # (N, 4)
        lm_rm, lm_r, lm_sa, lm_s, lm_oa, lm_o = wsbm._stacked(self.wm.logmarg, [
            Wd[rr] - Drr, Wd[rr], Wd[None, :, :] + D4, Wd,
            off[None, None, :] + Drr[:, None, :] - D4, off[None, :]], vector=True)
        cost -= (lm_rm - lm_r)[:, None] + (lm_sa - lm_s[None, :]) + (lm_oa - lm_o)
    elif self.has_w:
        W = self.W
        Wr = W[rr]  # (N, K, 4)
        Drr = D4[ar, rr]  # (N, 4)
        kk = np.arange(K)
        Wrr = W[rr, rr]
        Wss = W[kk, kk]  # (K, 4)
        lmW, lm_rm, lm_add, lm_rs, lm_rrm, lm_sa = wsbm._stacked(self.wm.logmarg, [
            W, Wr - D4, W[None, :, :, :] + D4[:, None, :, :], Wr - D4 + Drr[:, None, :],
            Wrr - Drr, Wss[None, :, :] + D4], vector=True)
        X = lm_rm - lmW[rr]
        XR = X.sum(1) - X[ar, rr]
        Z = lm_add - lmW[None, :, :]  # (N, s, u)
        ZS = Z.sum(2) - Z[:, kk, kk] - Z[ar[:, None], kk[None, :], rr[:, None]]
        rs = lm_rs - lmW[rr]
        dr = lm_rrm - lmW[rr, rr]
        ds = lm_sa - lmW[kk, kk][None, :]
        cost -= (XR[:, None] - X) + ZS + rs + dr[:, None] + ds
    cost[ar, rr] = 0.0
    empty = np.flatnonzero(nr == 0)
    if empty.size > 1:
        cost[:, empty[1:]] = np.inf
    # moving the only node of a block into an empty block changes nothing
    if r_empties.any():
        cost[np.ix_(r_empties, s_new)] = np.where(cost[np.ix_(r_empties, s_new)] == np.inf,
                                                  np.inf, 0.0)
    return cost


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
    dense (nodes, cap, cap) evaluation to rounding (the summation order differs), on sparse
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
            want = _dense_move_costs_block(st, np.arange(n))
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

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

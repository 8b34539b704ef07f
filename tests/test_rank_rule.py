"""The rank rule of ``rank: auto`` by hand (docs/factorization.md, rank selection): which
restarts reach the best fit, which ranks are confirmed or ambiguous, where the sweep ends, and
the warning when the chosen rank is at an end of the sweep."""

from __future__ import annotations

import numpy as np
import pytest

from dynconn.methods import ntf
from dynconn.console import DynconnWarning
from dynconn.stages.factorize import _warn_at_edge


def test_agreement_counts_only_the_restarts_that_reach_the_best():
    errors = np.array([[0.5, 0.5005, 0.6],    # 0.5005² − 0.5² = 0.0005 ≤ tie; 0.6² − 0.5² = 0.11
                       [0.4, 0.5, 0.6],       # nobody else reaches 0.4: NaN (found once)
                       [0.3, 0.3, 0.3001]])   # both reach it
    similarity = np.array([[1.0, 0.9, 0.2], [1.0, 0.99, 0.99], [0.8, 1.0, 0.6]])
    agreement = ntf._agreement(errors, similarity, np.array([0, 0, 1]), tie=0.001)
    # means of two given floats: exact to rounding (pytest.approx's 1e-6 relative is far above it)
    assert agreement[0] == pytest.approx(0.9)  # the far restart (0.2) does not count
    assert np.isnan(agreement[1])
    assert agreement[2] == pytest.approx(0.7)  # mean of 0.8 and 0.6, the best itself left out
    # one restart: nothing to compare, every rank agrees with itself
    assert ntf._agreement(errors[:, :1], similarity[:, :1], np.zeros(3, int), 0.001).tolist() == [1, 1, 1]


def choose(agreement, gain=None, rule="reached-elbow"):
    """The rule (default reached-elbow) on ranks 2, 3, ... with errors giving ``gain`` (default 0.05
    each); ``agreement`` is the stable-* rules' mean similarity."""
    n = len(agreement)
    gain = np.full(n, 0.05) if gain is None else np.asarray(gain, float)
    explained = np.empty(n)
    explained[0] = 2 * gain[0]  # the first rank's gain is its explained fraction / its rank (2)
    explained[1:] = explained[0] + np.cumsum(gain[1:])
    best_error = np.sqrt(1 - explained)
    values = np.asarray(agreement, float)
    rank, eligible, g = ntf._choose_rank(np.arange(2, 2 + n), best_error, values, values, rule, 0.85, 0.002)
    np.testing.assert_allclose(g, gain, atol=1e-12)  # the gain the test meant (float rounding only)
    return rank, eligible


def test_the_sweep_ends_at_the_first_ambiguous_rank_after_a_confirmed_one():
    # rank 2 ambiguous for want of components (ignored), 3 confirmed, 4 found once (skipped),
    # 5 confirmed, 6 ambiguous (the end), 7 confirmed again (noise fits can agree: not trusted)
    rank, eligible = choose([0.5, 0.95, np.nan, 0.9, 0.6, 0.95])
    assert rank == 5
    assert eligible.tolist() == [False, True, False, True, False, True]


def test_the_sweep_ends_where_components_stop_being_worth_it():
    rank, _ = choose([1.0, 1.0, 1.0, 1.0], gain=[0.3, 0.05, 0.001, 0.05])
    assert rank == 3


def test_nothing_confirmed_takes_the_largest_rank_before_the_end():
    assert choose([np.nan, np.nan, np.nan], gain=[0.3, 0.05, 0.001])[0] == 3
    assert choose([0.5, 0.5, 0.5])[0] == 4  # all ambiguous, none confirmed: no end found either


def test_stable_run_does_not_take_a_stable_rank_past_an_unstable_one():
    # the tiny preset with the unobserved penalty (docs/benchmarks.md): ranks 2-5 with mean
    # similarity 1.00 1.00 0.72 0.87; stable-elbow takes 5 (the largest stable), stable-run 3
    similarity = [1.0, 1.0, 0.72, 0.87]
    assert choose(similarity, rule="stable-elbow")[0] == 5
    rank, eligible = choose(similarity, rule="stable-run")
    assert rank == 3 and eligible.tolist() == [True, True, False, True]
    # unstable ranks before the first stable one do not end the sweep: ranks 3-5 are the first run
    assert choose([0.66, 0.9, 0.9, 0.9, 0.7, 0.95], rule="stable-run")[0] == 5
    # the gain elbow still ends it, and nothing stable falls back as stable-elbow does
    assert choose([1.0, 1.0, 1.0, 1.0], gain=[0.3, 0.05, 0.001, 0.05], rule="stable-run")[0] == 3
    assert choose([0.5, 0.8, 0.6], rule="stable-run")[0] == choose([0.5, 0.8, 0.6], rule="stable-elbow")[0] == 3


def test_a_rank_at_an_end_of_the_sweep_warns():
    with pytest.warns(DynconnWarning, match=r"rank 10 is the largest of factorize.ranks \[2, 10\].*widen"):
        _warn_at_edge(10, 2, 10)
    with pytest.warns(DynconnWarning, match=r"rank 2 is the smallest of factorize.ranks \[2, 10\]"):
        _warn_at_edge(2, 2, 10)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _warn_at_edge(5, 2, 10)  # inside: no warning
        _warn_at_edge(1, 1, 10)  # rank 1 is the smallest there is
        _warn_at_edge(4, 4, 4)   # a one-rank sweep has no edge to speak of


# ----------------------------------------------------------------------- rank_similarity: observed
def test_observed_congruence_ignores_loadings_the_data_do_not_determine():
    from tensorly.cp_tensor import CPTensor

    rng = np.random.default_rng(0)
    n_pairs, n_time = 30, 12
    mask = np.ones((n_pairs, 3), bool)
    mask[:10, 0] = False  # pairs 0-9 not recorded in animal 0
    U, V = rng.random((n_pairs, 2)), rng.random((n_time, 2))
    W = np.array([[1.0, 0.3], [0.0, 0.5], [0.0, 0.8]])  # component 0 lives in animal 0 only
    # so its loadings at pairs 0-9 are fitted from no entry at all: let them differ
    free = U.copy()
    free[:10, 0] = 50 * rng.random(10)
    a, b = CPTensor((np.ones(2), [U, V, W])), CPTensor((np.ones(2), [free, V, W]))
    assert ntf.factor_congruence(a, b)[0] < 0.9
    # evidence 0 at those pairs in both fits: the same weighed factors, congruence 1 to rounding
    assert ntf.observed_congruence(a, b, mask) == pytest.approx(1.0, abs=1e-12)
    # the same difference at observed pairs counts
    seen = U.copy()
    seen[10:20, 0] = 50 * rng.random(10)
    assert ntf.observed_congruence(a, CPTensor((np.ones(2), [seen, V, W])), mask) < 0.9
    assert ntf.observed_congruence(a, b) == ntf.factor_congruence(a, b)[0]  # no mask: nothing to weigh


def test_select_rank_compares_restarts_on_what_the_data_determine():
    rng = np.random.default_rng(3)
    n, n_time, n_animals = 16, 20, 4
    i, j = np.triu_indices(n, 1)
    present = rng.random((n, n_animals)) >= 0.2
    mask = present[i] & present[j]
    X = rng.random((len(i), n_time, n_animals)).astype(np.float32) * mask[:, None, :]
    results = {}
    kw = dict(mask=mask, n_restarts=3, random_state=0, max_iter=30)
    sel = ntf.select_rank(X, [2, 3], similarity="observed", on_rank=lambda r, res: results.__setitem__(r, res), **kw)
    assert sel.rule_params["similarity"] == "observed"
    for row, r in enumerate((2, 3)):
        res = results[r]
        best = res.fits[res.best_index]
        expected = [1.0 if k == res.best_index else ntf.observed_congruence(best, cp, mask) for k, cp in enumerate(res.fits)]
        np.testing.assert_allclose(sel.similarity[row], expected, rtol=0, atol=0)  # the same computation
    # the default compares the fitted factors, as before; same fits (same seeds), other similarity
    plain = ntf.select_rank(X, [2, 3], **kw)
    np.testing.assert_array_equal(plain.errors, sel.errors)
    np.testing.assert_array_equal(plain.similarity[0], results[2].similarity)
    with pytest.raises(ValueError, match="similarity must be one of"):
        ntf.select_rank(X, [2], similarity="evidence", **kw)


# ----------------------------------------------------------------------------- parallel analysis
def test_shifted_null_moves_each_course_and_keeps_its_values():
    rng = np.random.default_rng(3)
    X = rng.random((5, 7, 3))
    X[1, :, 2] = 0.0  # an unobserved (pair, animal): stays zero
    Y = ntf.shifted_null(X, random_state=0)
    # every (pair, animal) course is a circular shift of itself: the same values in a rotated order
    for p in range(5):
        for a in range(3):
            assert any(np.array_equal(Y[p, :, a], np.roll(X[p, :, a], k)) for k in range(7))
    assert not Y[1, :, 2].any()
    assert not np.array_equal(Y, X)  # 15 lags drawn from 0-6: all 0 has chance 7**-15
    np.testing.assert_array_equal(Y, ntf.shifted_null(X, random_state=0))  # reproducible
    # with time groups (P, T, 1): each pair's bins of one group rotate among themselves only
    groups = np.array([0, 0, 0, 1, 1, 1, 1])
    Z = ntf.shifted_null(X[:, :, :1], groups, random_state=1)
    for p in range(5):
        for cols in (np.arange(3), np.arange(3, 7)):
            assert any(np.array_equal(Z[p, cols, 0], np.roll(X[p, cols, 0], k)) for k in range(cols.size))


def test_shifted_null_of_an_out_of_core_tensor_is_the_in_memory_one():
    class Rows:  # the solver's row-source protocol
        def __init__(self, a):
            self.a, self.shape, self.dtype = a, a.shape, a.dtype

        def read_rows(self, start, stop, out):
            out[...] = self.a[start:stop]
            return out

    X = np.random.default_rng(4).random((6, 5, 2)).astype(np.float32)
    lazy = ntf.shifted_null(ntf.prepare(Rows(X)), random_state=2)
    assert lazy.out_of_core
    np.testing.assert_array_equal(lazy.X[0:6], ntf.shifted_null(X, random_state=2))


def test_null_gain_trend_by_hand():
    # null gains per component 0.4, 0.10, 0.08, 0.09 at ranks 1-4; the line through ranks 2-4
    # has slope ((-1)(0.01) + 0 + (1)(0)) / 2 = -0.005 through (3, 0.09)
    explained = np.cumsum([0.4, 0.10, 0.08, 0.09])
    trend = ntf.null_gain_trend([1, 2, 3, 4], np.stack([explained, explained]))
    # sums and a least-squares line of four numbers ≤ 1: float64 rounding, ~1e-16
    np.testing.assert_allclose(trend, [0.4, 0.095, 0.09, 0.085], atol=1e-12)


def test_parallel_analysis_chooses_the_rank_with_the_largest_excess_over_the_null():
    ranks = np.array([1, 2, 3, 4])
    gain = np.array([0.5, 0.3, 0.02, 0.01])
    null = np.array([0.2, 0.05, 0.04, 0.03])
    pick = lambda g, n, ratio=1.5: ntf._choose_rank(ranks, np.sqrt(1 - np.cumsum(g)), None, None,
                                                     "parallel-analysis", 0.85, 0.002, n, ratio)
    # gain - 1.5 x null = 0.2, 0.225, -0.04, -0.035: cumulated 0.2, 0.425, 0.385, 0.35
    rank, eligible, g = pick(gain, null)
    assert rank == 2 and eligible.tolist() == [True, True, False, False]
    # ratio 1.0: rank 3's 0.02 - 0.04 < 0 still; ratio 0.4 lets it in (0.02 - 0.016 > 0), not
    # rank 4 (0.01 - 0.012 < 0)
    assert pick(gain, null, 1.0)[0] == 2 and pick(gain, null, 0.4)[0] == 3
    # a rank past a dip counts when the later gain makes up for it: 0.4 - 0.3 = 0.1, 0.225, then
    # -0.04, then 0.2 - 0.045 = 0.155 > 0.04
    assert pick(np.array([0.4, 0.3, 0.02, 0.2]), null)[0] == 4
    # nothing beats the null: the smallest rank of the sweep
    assert pick(np.array([0.2, 0.01, 0.01, 0.01]), null)[0] == 1


def test_parallel_analysis_sweep_finds_two_sparse_components_in_noise():
    rng = np.random.default_rng(0)
    U = np.zeros((40, 2)); U[:15, 0] = 1; U[20:35, 1] = 1
    V = np.zeros((60, 2)); V[5:15, 0] = 1; V[30:40, 1] = 1
    X = np.einsum("pr,tr,ar->pta", U, V, np.ones((3, 2))) + rng.exponential(0.1, (40, 60, 3))
    sel = ntf.select_rank(X, [1, 2, 3, 4], n_restarts=2, random_state=0, rule="parallel-analysis")
    assert sel.rank == 2
    assert sel.null_explained.shape == (ntf.NULL_SHUFFLES, 4)
    assert "null_gain" in sel.as_arrays() and sel.rule_params["null_ratio"] == ntf.NULL_RATIO
    # the planted components gain more than 1.5 null components (the first: 0.57 against 0.34,
    # the null keeps the pairs' mean levels; the second 0.37 against 0.05), the third less than one
    assert sel.gain[0] > ntf.NULL_RATIO * sel.null_gain[0] and sel.gain[1] > 3 * sel.null_gain[1]
    assert sel.gain[2] < sel.null_gain[2]
    # the stable-* rules leave the null out
    assert ntf.select_rank(X, [1, 2], n_restarts=2, random_state=0).null_gain is None

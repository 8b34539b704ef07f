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

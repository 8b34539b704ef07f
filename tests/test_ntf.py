"""Tests of the factorization core (dynconn.methods.ntf): exactness, missing data, checkpoints, restarts, rank."""

import importlib.util
import subprocess
import sys

import threading

import numpy as np
import pytest
from tensorly.cp_tensor import CPTensor
from tensorly.metrics.factors import congruence_coefficient

from dynconn.methods import ntf


def planted(seed, n_neurons=24, n_time=40, n_animals=8, rank=3, noise=0.02, missing=0.2):
    """A pairs x time x animals tensor with planted communities, epochs and animal loadings.

    ``missing`` of the neurons are absent in each animal: every pair touching an absent neuron is
    unobserved in that animal (stored as 0, as the pipeline does). Returns X, mask, true factors.
    """
    rng = np.random.default_rng(seed)
    i, j = np.triu_indices(n_neurons, 1)
    pairs = np.zeros((len(i), rank))
    for r in range(rank):
        members = np.zeros(n_neurons, bool)
        members[rng.choice(n_neurons, n_neurons // 3, replace=False)] = True
        strength = rng.uniform(0.5, 1.5, n_neurons)
        pairs[:, r] = members[i] * members[j] * strength[i] * strength[j]
    pairs += 0.02 * rng.random(pairs.shape)
    times = 0.05 * rng.random((n_time, rank))
    for r in range(rank):
        start = rng.integers(0, n_time - 12)
        times[start:start + rng.integers(6, 12), r] += 1.0
    animals = rng.uniform(0.2, 1.0, (n_animals, rank))
    X = np.einsum("pr,tr,ar->pta", pairs, times, animals)
    X += noise * X.std() * rng.random(X.shape)
    present = rng.random((n_neurons, n_animals)) >= missing
    mask = present[i] & present[j]
    X *= mask[:, None, :]
    return X.astype(np.float32), mask, (pairs, times, animals)


def truth_cp(factors):
    return CPTensor((None, list(factors)))


# ------------------------------------------------------------------------------------------------
# exact small cases
# ------------------------------------------------------------------------------------------------


def test_rank_one_tensor_is_recovered_exactly():
    rng = np.random.default_rng(0)
    u, v, w = rng.random(20) + 0.1, rng.random(7) + 0.1, rng.random(4) + 0.1
    X = np.einsum("p,t,a->pta", u, v, w)
    cp, info = ntf.ncp_hals(X, 1, dtype="float64", random_state=0, max_iter=50, tol=0)
    # the per-iteration loss is a difference of squared norms: its floor is sqrt(8 eps) ~ 4e-8
    # (ntf.loss_resolution), so a perfect fit reports < 1e-6; the direct float64 residual of a
    # rank-1 fit of 560 entries is ~eps-level, 1e-10 leaves a factor 1e5 for the sums' rounding
    assert info.loss <= 2 * ntf.loss_resolution(0.0, "float64") < 1e-6
    assert ntf.relative_error(X, cp) < 1e-10
    # factors of an exact fit: a relative error e on the model allows ~e on each unit column; at
    # e < 1e-10 a 1e-8 tolerance is 100x above what the fit leaves
    for got, want in zip(cp.factors, (u, v, w)):
        np.testing.assert_allclose(got[:, 0], want / np.linalg.norm(want), rtol=1e-8)
    np.testing.assert_allclose(cp.weights[0], np.linalg.norm(u) * np.linalg.norm(v) * np.linalg.norm(w), rtol=1e-8)


def test_loss_history_is_the_exact_masked_error_and_never_increases():
    X, mask, _ = planted(1)
    cp, info = ntf.ncp_hals(X, 3, mask=mask, dtype="float64", random_state=1, max_iter=40, tol=0)
    # The per-iteration loss comes from Gram matrices and the MTTKRPs, never from a pass over the
    # residual: it must still equal the directly computed error on observed entries.
    # float64, e ~ 0.02 here: the formula resolves e to ~2e-14 (ntf.loss_resolution); rtol 1e-9
    # is 1e3 above it and far below any real difference between the two computations
    np.testing.assert_allclose(info.loss, ntf.relative_error(X, cp, mask), rtol=1e-9)
    # HALS is block coordinate descent with exact block updates: the loss cannot increase (to the
    # formula's rounding, which differs between BLAS kernels)
    h = info.loss_history
    assert np.all(np.diff(h) <= ntf.loss_resolution(h[1:], "float64"))
    assert info.n_iter == 40 and len(info.loss_history) == 40 and not info.converged


def test_unobserved_values_are_ignored_exactly():
    X, mask, _ = planted(2)
    junk = X.copy()
    unobserved = ~np.broadcast_to(mask[:, None, :], X.shape)
    junk[unobserved] = np.random.default_rng(0).random(unobserved.sum()) * 100
    junk[np.nonzero(unobserved)[0][0], 0, np.nonzero(unobserved)[2][0]] = np.nan
    a, info_a = ntf.ncp_hals(X, 3, mask=mask, random_state=3, max_iter=30, tol=0)
    b, info_b = ntf.ncp_hals(junk, 3, mask=mask, random_state=3, max_iter=30, tol=0)
    for fa, fb in zip(a.factors, b.factors):
        np.testing.assert_array_equal(fa, fb)
    np.testing.assert_array_equal(info_a.loss_history, info_b.loss_history)
    assert np.isnan(junk).any()  # the caller's array was not modified


def test_pairs_never_observed_get_zero_loadings():
    X, mask, _ = planted(3)
    mask[:5] = False
    X[:5] = 0
    cp, _ = ntf.ncp_hals(X, 3, mask=mask, random_state=0, max_iter=20, tol=0)
    assert np.all(cp.factors[0][:5] == 0)


# ------------------------------------------------------------------------------------------------
# missing data: recovery, and zeros are not a substitute for the mask
# ------------------------------------------------------------------------------------------------


def test_planted_factors_recovered_with_20_percent_neurons_missing_and_zeros_are_worse():
    X, mask, truth = planted(4, n_neurons=30, n_time=50, n_animals=10, rank=4, missing=0.2)
    assert 0.25 < 1 - mask.mean() < 0.5  # 20 % neurons missing -> ~36 % of pair blocks
    masked = ntf.ncp_restarts(X, 4, mask=mask, n_restarts=3, random_state=0, max_iter=300, tol=1e-6)
    zeros = ntf.ncp_restarts(X, 4, mask=None, n_restarts=3, random_state=0, max_iter=300, tol=1e-6)
    score_masked = ntf.factor_congruence(masked.cp, truth_cp(truth))[0]
    score_zeros = ntf.factor_congruence(zeros.cp, truth_cp(truth))[0]
    assert score_masked >= 0.95
    assert score_zeros < score_masked - 0.05
    # ... and on the observed entries, the zero-filled fit is far worse too.
    err_masked = ntf.relative_error(X, masked.cp, mask)
    err_zeros = ntf.relative_error(X, zeros.cp, mask)
    assert err_zeros > 3 * err_masked


def test_em_imputation_reaches_the_same_fit():
    X, mask, truth = planted(5)
    exact, _ = ntf.ncp_hals(X, 3, mask=mask, random_state=2, max_iter=300, tol=1e-7)
    em, _ = ntf.ncp_hals(X, 3, mask=mask, random_state=2, max_iter=300, tol=1e-7, missing="em")
    assert ntf.factor_congruence(exact, em)[0] > 0.99
    # not rounding: EM converges more slowly, so after 300 iterations its error is up to ~1 %
    # above the exact updates' (docs/factorization.md); 2 % separates "the same optimum" from a
    # different one (another local minimum differs by >= 5 % on this problem)
    np.testing.assert_allclose(ntf.relative_error(X, exact, mask), ntf.relative_error(X, em, mask), rtol=2e-2)


# ------------------------------------------------------------------------------------------------
# output conventions and inits
# ------------------------------------------------------------------------------------------------


def test_components_sorted_by_weight_with_unit_columns():
    X, mask, _ = planted(6, rank=4)
    cp, _ = ntf.ncp_hals(X, 4, mask=mask, random_state=0, max_iter=50, tol=0)
    assert np.all(np.diff(cp.weights) <= 0)
    for f in cp.factors:
        assert f.dtype == np.float32
        # float32 columns of <= 276 entries: their norm rounds to ~sqrt(276) * 6e-8 ~ 1e-6
        np.testing.assert_allclose(np.linalg.norm(f, axis=0), 1, rtol=1e-5)
        assert f.min() >= 0
    # weights carry the scale: the model rebuilt from (weights, factors) fits the data
    assert ntf.relative_error(X, cp, mask) < 0.1


@pytest.mark.parametrize("init", ["random", "nndsvd"])
def test_inits_fit(init):
    X, mask, truth = planted(7)
    cp, info = ntf.ncp_hals(X, 3, mask=mask, init=init, random_state=0, max_iter=200, tol=1e-6)
    assert info.init == init
    assert ntf.factor_congruence(cp, truth_cp(truth))[0] > 0.9


def test_explicit_init_is_used_and_seed_reproducible():
    X, mask, _ = planted(8)
    a, _ = ntf.ncp_hals(X, 3, mask=mask, random_state=5, max_iter=5, tol=0)
    b, _ = ntf.ncp_hals(X, 3, mask=mask, random_state=np.random.default_rng(5), max_iter=5, tol=0)
    for fa, fb in zip(a.factors, b.factors):
        np.testing.assert_array_equal(fa, fb)
    # starting from a converged fit, the solver stays there
    c, info = ntf.ncp_hals(X, 3, mask=mask, init=a, max_iter=1, tol=0)
    assert info.init == "given"


def test_same_iterates_as_tensorly_hals_from_the_same_init():
    X, _, _ = planted(9, missing=0.0)
    init = CPTensor((np.ones(3), [np.random.default_rng(0).random((n, 3)) for n in X.shape]))
    ours, info = ntf.ncp_hals(X, 3, init=init, max_iter=30, tol=0)
    ref, ref_info = ntf.ncp_hals(X, 3, init=init, max_iter=30, tol=0, method="tensorly-hals")
    assert ref_info.method == "tensorly-hals" and len(ref_info.loss_history) == 30
    # Same algorithm (HALS, 5 inner sweeps per mode, same update order): same error, up to float32
    # (30 iterations of float32 products, each rounding ~1e-7 relative, amplified by the
    # iteration's conditioning: measured <= 2e-6 apart on Haswell, SkylakeX and Sandybridge kernels)
    np.testing.assert_allclose(ntf.relative_error(X, ours), ntf.relative_error(X, ref), rtol=1e-4)
    assert ntf.factor_congruence(ours, ref)[0] > 0.999


def test_factor_congruence_matches_tensorly():
    rng = np.random.default_rng(0)
    a = [rng.random((n, 4)) for n in (30, 10, 5)]
    b = [f[:, [2, 0, 3, 1]] + 0.1 * rng.random(f.shape) for f in a]
    score, per_component, perm = ntf.factor_congruence((None, a), (None, b))
    ref_score, ref_perm = congruence_coefficient(a, b)
    np.testing.assert_allclose(score, ref_score)  # float64 means of 4 cosines: default rtol 1e-7
    np.testing.assert_array_equal(perm, [1, 3, 0, 2])
    assert ntf.factor_congruence((None, a), (None, a))[0] == pytest.approx(1.0)  # float64 cosines: 1 to 1e-15


# ------------------------------------------------------------------------------------------------
# checkpoints
# ------------------------------------------------------------------------------------------------


def test_resume_from_checkpoint_equals_uninterrupted_run():
    X, mask, _ = planted(10)
    kw = dict(mask=mask, random_state=7, max_iter=45, tol=0)
    full, full_info = ntf.ncp_hals(X, 3, **kw)
    states = []
    ntf.ncp_hals(X, 3, checkpoint_every=10, on_checkpoint=states.append, **kw)
    assert [s["iteration"] for s in states] == [10, 20, 30, 40]
    state = states[1]
    assert state["format"] == "dynconn.ntf.fit/1" and state["pairs"].shape == (X.shape[0], 3)
    resumed, info = ntf.ncp_hals(X, 3, resume=state, **kw)
    for a, b in zip(full.factors, resumed.factors):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(full.weights, resumed.weights)
    np.testing.assert_array_equal(full_info.loss_history, info.loss_history)
    assert info.n_iter == 45


@pytest.mark.parametrize("masked", [False, True])
def test_resume_is_bitwise_with_several_blocks_of_pairs(monkeypatch, masked):
    # the fused pass over X by blocks of pairs (numpy), with a partial last block
    monkeypatch.setattr(ntf, "PAIRS_BLOCK", 64)
    X, mask, _ = planted(10)
    assert X.shape[0] > 4 * 64 and X.shape[0] % 64
    kw = dict(mask=mask if masked else None, random_state=7, max_iter=25, tol=0)
    full, full_info = ntf.ncp_hals(X, 3, **kw)
    states = []
    again, again_info = ntf.ncp_hals(X, 3, checkpoint_every=10, on_checkpoint=states.append, **kw)
    resumed, info = ntf.ncp_hals(X, 3, resume=states[0], **kw)
    for a, b, c in zip(full.factors, again.factors, resumed.factors):
        np.testing.assert_array_equal(a, b)  # deterministic
        np.testing.assert_array_equal(a, c)  # resume: bitwise
    np.testing.assert_array_equal(full_info.loss_history, info.loss_history)


def test_resume_with_convergence_and_wrong_state_rejected():
    X, mask, _ = planted(11)
    kw = dict(mask=mask, random_state=1, max_iter=400, tol=1e-5)
    full, full_info = ntf.ncp_hals(X, 3, **kw)
    states = []
    ntf.ncp_hals(X, 3, checkpoint_every=5, on_checkpoint=states.append, **kw)
    resumed, info = ntf.ncp_hals(X, 3, resume=states[0], **kw)
    assert info.n_iter == full_info.n_iter and info.converged == full_info.converged
    for a, b in zip(full.factors, resumed.factors):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="rank"):
        ntf.ncp_hals(X, 2, resume=states[0], **kw)
    with pytest.raises(ValueError, match="different data"):
        ntf.ncp_hals(X * 2, 3, resume=states[0], **kw)


class _Interrupt(Exception):
    pass


def saved_until_interrupted(fit, die_when):
    """Run ``fit(on_checkpoint=...)``, interrupted at the first saved state for which
    ``die_when(state)`` holds (as a kill right after a checkpoint); returns every saved state."""
    states = []

    def save_then_die(state):
        states.append(state)
        if die_when(state):
            raise _Interrupt

    with pytest.raises(_Interrupt):
        fit(on_checkpoint=save_then_die)
    return states


def test_restarts_keep_best_reproduce_and_resume():
    X, mask, _ = planted(12)
    kw = dict(mask=mask, n_restarts=4, random_state=123, max_iter=40, tol=0)
    res = ntf.ncp_restarts(X, 3, **kw)
    assert res.best_index == int(np.argmin(res.losses))
    assert res.info.loss == res.losses.min()
    # a congruence is a product of three float64 cosines, each <= 1 up to ~1e-15 rounding
    assert res.similarity[res.best_index] == 1.0 and np.all(res.similarity <= 1 + 1e-12)
    assert res.losses.shape == (4,) and res.weights.shape == (4, 3)
    # restart k is reproducible on its own from its derived seed
    cp2, info2 = ntf.ncp_hals(X, 3, mask=mask, random_state=ntf.restart_seed(res.seed_entropy, 2),
                              max_iter=40, tol=0)
    np.testing.assert_array_equal(cp2.factors[0], res.fits[2].factors[0])

    # interrupt during restart 2 (after its first checkpoint), then resume from the last state
    states = saved_until_interrupted(lambda **cb: ntf.ncp_restarts(X, 3, checkpoint_every=15, **cb, **kw),
                                     lambda state: state["restart"] == 2 and "current" in state)
    last = states[-1]
    assert last["format"] == "dynconn.ntf.restarts/1" and last["current"]["iteration"] == 15
    assert last["init"] == "random,random"
    # states hold only what HDF5 stores as is: numeric/bool arrays, numbers, str, nested dicts
    def plain(state):
        for value in state.values():
            if isinstance(value, dict):
                plain(value)
            else:
                assert isinstance(value, (int, float, str, np.ndarray)), type(value)
                if isinstance(value, np.ndarray):
                    assert value.dtype.kind in "biuf", value.dtype
    plain(last)
    resumed = ntf.ncp_restarts(X, 3, resume=last, **kw)
    np.testing.assert_array_equal(resumed.losses, res.losses)
    for a, b in zip(resumed.cp.factors, res.cp.factors):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(resumed.similarity, res.similarity)  # same factors bitwise: float64 rtol 1e-7


# ------------------------------------------------------------------------------------------------
# rank selection
# ------------------------------------------------------------------------------------------------


def test_select_rank_picks_planted_rank():
    X, mask, _ = planted(13, n_neurons=30, n_time=50, n_animals=10, rank=4, noise=0.02)
    sel = ntf.select_rank(X, [1, 2, 3, 4, 5, 6], mask=mask, n_restarts=3, random_state=0)
    assert sel.rank == 4
    assert sel.errors.shape == (6, 3) and sel.similarity.shape == (6, 3)
    # more components never fit much worse: not rounding but the sweep's loose stop (tol 1e-4 on
    # the relative change, 200 iterations) leaves each fit up to ~1e-3 short of its optimum
    assert np.all(np.diff(sel.best_error) <= 1e-3)
    arrays = sel.as_arrays()
    assert set(arrays) >= {"ranks", "errors", "similarity", "mean_similarity", "gain", "rank"}
    assert all(isinstance(v, np.ndarray) for v in arrays.values())
    assert len(sel.best_fits) == 6 and sel.best_fits[3].rank == 4


def test_select_rank_resumes():
    X, mask, _ = planted(14)
    kw = dict(mask=mask, n_restarts=2, random_state=3, max_iter=30)
    full = ntf.select_rank(X, [1, 2, 3], **kw)
    states = saved_until_interrupted(
        lambda **cb: ntf.select_rank(X, [1, 2, 3], checkpoint_every=10, **cb, **kw),
        lambda state: state["rank_index"] == 1 and "current" in state and state["current"]["restart"] == 1)
    resumed = ntf.select_rank(X, [1, 2, 3], resume=states[-1], **kw)
    np.testing.assert_array_equal(resumed.errors, full.errors)
    assert resumed.rank == full.rank


def test_checkpoint_due_builds_states_only_when_due_and_resumes():
    X, mask, _ = planted(17)
    kw = dict(mask=mask, n_restarts=2, random_state=9, max_iter=30, tol=0)
    full = ntf.ncp_restarts(X, 3, **kw)
    asked, states = [], []

    def due():
        asked.append(1)
        return len(asked) in (7, 40)  # a clock says "save" twice

    ntf.ncp_restarts(X, 3, checkpoint_due=due, on_checkpoint=states.append, **kw)
    # asked after every iteration but the last of each fit, and once between the restarts
    assert len(asked) == 29 + 1 + 29
    assert [s["restart"] for s in states] == [0, 1]
    assert states[0]["current"]["iteration"] == 7 and states[1]["current"]["iteration"] == 10
    resumed = ntf.ncp_restarts(X, 3, resume=states[1], **kw)
    for a, b in zip(resumed.cp.factors, full.cp.factors):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="checkpoint_due"):
        ntf.ncp_hals(X, 3, checkpoint_due=5)


def test_finished_sweep_state_resumes_to_the_same_selection_at_once():
    X, mask, _ = planted(18)
    states = []
    kw = dict(mask=mask, n_restarts=2, random_state=1, max_iter=20)
    full = ntf.select_rank(X, [1, 2, 3], checkpoint_due=lambda: False, on_checkpoint=states.append, **kw)
    assert len(states) == 1 and states[0]["rank_index"] == 3 and "current" not in states[0]
    again = ntf.select_rank(X, [1, 2, 3], resume=states[0], on_rank=lambda *a: pytest.fail("refitted"), **kw)
    assert again.rank == full.rank
    np.testing.assert_array_equal(again.errors, full.errors)
    for a, b in zip(again.best_fits[again.rank - 1].factors, full.best_fits[full.rank - 1].factors):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------------------------
# time groups (the concatenated layout): X (P, T, 1), entry (p, t) observed iff mask[p, g(t)]
# ------------------------------------------------------------------------------------------------


def planted_groups(seed, n_neurons=24, lengths=(30, 45), rank=3, noise=0.0, missing=0.2):
    """Two groups (animals) whose bins follow one another on the time axis; in each group
    ``missing`` of the neurons are absent, so the pairs touching them are unobserved in that
    group's bins only (stored as 0). Returns X (P, T, 1), mask (P, G), groups (T,), true factors."""
    rng = np.random.default_rng(seed)
    i, j = np.triu_indices(n_neurons, 1)
    groups = np.repeat(np.arange(len(lengths)), lengths)
    pairs = np.zeros((len(i), rank))
    for r in range(rank):
        members = rng.random(n_neurons) < 0.4
        strength = rng.uniform(0.5, 1.5, n_neurons)
        pairs[:, r] = members[i] * members[j] * strength[i] * strength[j]
    pairs += 0.02 * rng.random(pairs.shape)
    times = 0.05 * rng.random((groups.size, rank))
    for g, n in enumerate(lengths):  # every component active once in every group, at its own time
        offset = int(np.sum(lengths[:g]))
        for r in range(rank):
            start = offset + rng.integers(0, n - 10)
            times[start:start + rng.integers(5, 10), r] += 1.0
    X = np.einsum("pr,tr->pt", pairs, times)[:, :, None]
    X += noise * X.std() * rng.random(X.shape)
    present = rng.random((n_neurons, len(lengths))) >= missing
    mask = present[i] & present[j]
    X *= mask[:, groups][:, :, None]
    return X, mask, groups, (pairs, times, np.ones((1, rank)))


def _dense_weighted_gradients(X, cp, weight):
    """Gradients of 0.5 * ||weight * (X - Xhat)||^2 with respect to the three (scaled) factors,
    computed the obvious way with a dense weight tensor (what the solver never builds)."""
    weights, (U, V, W) = cp
    U = U * weights
    resid = weight * (np.einsum("pr,tr,ar->pta", U, V, W) - X)
    return [np.einsum("pta,tr,ar->pr", resid, V, W), np.einsum("pta,pr,ar->tr", resid, U, W),
            np.einsum("pta,pr,tr->ar", resid, U, V)], [U, V, W]


def test_time_groups_recover_planted_factors_and_missing_pairs_are_not_zeros():
    X, mask, groups, truth = planted_groups(20)
    assert 0.2 < 1 - mask.mean() < 0.6 and not np.array_equal(mask[:, 0], mask[:, 1])
    res = ntf.ncp_restarts(X, 3, mask=mask, time_groups=groups, n_restarts=3, random_state=0,
                           dtype="float64", max_iter=500, tol=1e-9)
    assert ntf.factor_congruence(res.cp, truth_cp(truth))[0] >= 0.98
    assert res.info.loss < 1e-3
    # the loss history is the exact error on the observed entries, and it never increases -- both
    # to the loss formula's resolution: near this perfect fit (e ~ 1e-7) a difference of float64
    # squares resolves e to ~7e-9 (ntf.loss_resolution; an AVX-512 BLAS was seen to rise by 1e-9)
    h = res.info.loss_history
    assert res.info.loss == pytest.approx(ntf.relative_error(X, res.cp, mask, groups), rel=1e-6,
                                          abs=ntf.loss_resolution(res.info.loss, "float64"))
    assert np.all(np.diff(h) <= ntf.loss_resolution(h[1:], "float64"))
    # treating the missing pairs as zeros (no mask) fits the observed entries far worse
    zeros = ntf.ncp_restarts(X, 3, n_restarts=3, random_state=0, dtype="float64", max_iter=500, tol=1e-9)
    assert ntf.relative_error(X, zeros.cp, mask, groups) > 10 * res.info.loss
    assert ntf.factor_congruence(zeros.cp, truth_cp(truth))[0] < ntf.factor_congruence(res.cp, truth_cp(truth))[0]


def test_time_groups_fit_is_a_stationary_point_of_the_dense_weighted_problem():
    X, mask, groups, _ = planted_groups(21, noise=0.3)
    cp, info = ntf.ncp_hals(X, 3, mask=mask, time_groups=groups, dtype="float64", random_state=1,
                            max_iter=3000, tol=1e-13)
    weight = mask[:, groups][:, :, None].astype(float)
    grads, factors = _dense_weighted_gradients(X, cp, weight)
    scale = np.linalg.norm(weight * X) ** 2
    for g, f in zip(grads, factors):
        # KKT of min over f >= 0: gradient zero where f > 0, non-negative where f == 0. Not rounding
        # but optimisation: after 3000 iterations to tol 1e-13 the gradient is ~1e-8 of its scale
        # ||WX||^2/||f||; 1e-6 is the stationarity the test asks for, 1e-9 * max the "zero" cut
        assert np.abs(g[f > 1e-9 * f.max()]).max() < 1e-6 * scale / np.linalg.norm(f)
        assert g[f == 0].min(initial=0) > -1e-6 * scale / np.linalg.norm(f)


def test_time_groups_equal_the_ungrouped_computation_where_they_coincide():
    X, mask, groups, _ = planted_groups(22, noise=0.1)
    kw = dict(dtype="float64", random_state=4, max_iter=30, tol=0)
    # every group observing the same pairs = one (P, 1) mask for all bins
    same = np.repeat(mask[:, :1], 2, axis=1)
    Xs = X * same[:, groups][:, :, None]
    a, ia = ntf.ncp_hals(Xs, 3, mask=same, time_groups=groups, **kw)
    b, ib = ntf.ncp_hals(Xs, 3, mask=mask[:, :1], **kw)
    # float64, 30 iterations of the same update by two paths (per-group Grams vs one shared Gram):
    # unit columns differ by rounding, ~30 iterations x 1e-15; 1e-12 leaves a factor 30. The
    # losses, a difference of squares, amplify it by ~1/e^2 (e ~ 0.1 here): ~1e-11 relative, 1e-8
    for fa, fb in zip(a.factors, b.factors):
        np.testing.assert_allclose(fa, fb, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ia.loss_history, ib.loss_history, rtol=1e-8)
    # everything observed: the groups change nothing (the unmasked path)
    full = np.ones_like(mask)
    c, ic = ntf.ncp_hals(X, 3, mask=full, time_groups=groups, **kw)
    d, id_ = ntf.ncp_hals(X, 3, **kw)
    np.testing.assert_array_equal(ic.loss_history, id_.loss_history)
    assert ic.missing == "none"
    # the exact error agrees with a dense weighted computation
    weight = mask[:, groups][:, :, None]
    cp, _ = ntf.ncp_hals(X, 3, mask=mask, time_groups=groups, **kw)
    weights, (U, V, W) = cp
    dense = np.linalg.norm(weight * (X - np.einsum("pr,tr,ar->pta", U * weights, V, W))) / np.linalg.norm(weight * X)
    # both float64 direct residual sums over ~6e4 entries, in different orders: ~1e-14 apart
    assert ntf.relative_error(X, cp, mask, groups) == pytest.approx(dense, rel=1e-12)


def test_time_groups_unobserved_values_ignored_and_em_reaches_the_same_fit():
    X, mask, groups, _ = planted_groups(23, noise=0.05)
    junk = X.copy()
    unobserved = ~mask[:, groups]
    junk[:, :, 0][unobserved] = 50.0
    junk[np.nonzero(unobserved)[0][0], np.nonzero(unobserved)[1][0], 0] = np.nan
    kw = dict(mask=mask, time_groups=groups, random_state=2, max_iter=300, tol=1e-8, dtype="float64")
    exact, ie = ntf.ncp_hals(X, 3, **kw)
    again, ia = ntf.ncp_hals(junk, 3, **kw)
    np.testing.assert_array_equal(ie.loss_history, ia.loss_history)
    em, _ = ntf.ncp_hals(junk, 3, missing="em", **kw)
    assert ntf.factor_congruence(exact, em)[0] > 0.99
    # EM's slower convergence, not rounding (as in test_em_imputation_reaches_the_same_fit)
    np.testing.assert_allclose(ntf.relative_error(X, em, mask, groups), ie.loss, rtol=2e-2)


def test_time_groups_checkpoints_resume_and_pass_through_rank_selection():
    X, mask, groups, _ = planted_groups(24, noise=0.02)
    kw = dict(mask=mask, time_groups=groups, n_restarts=2, random_state=5, max_iter=40, tol=0)
    full = ntf.ncp_restarts(X, 3, **kw)
    states = saved_until_interrupted(lambda **cb: ntf.ncp_restarts(X, 3, checkpoint_every=10, **cb, **kw),
                                     lambda state: state["restart"] == 1 and "current" in state)
    resumed = ntf.ncp_restarts(X, 3, resume=states[-1], **kw)
    np.testing.assert_array_equal(resumed.losses, full.losses)
    for a, b in zip(resumed.cp.factors, full.cp.factors):
        np.testing.assert_array_equal(a, b)
    # a fit state of another mask is refused even when the norms agree (X is 0 where they differ)
    fit_state = states[-1]["current"]
    other = mask.copy()
    other[np.flatnonzero(~mask[:, 1])[:5], 1] = True
    with pytest.raises(ValueError, match="another mask"):
        ntf.ncp_hals(X, 3, mask=other, time_groups=groups, resume=fit_state, max_iter=40)
    sel = ntf.select_rank(X, [1, 2, 3, 4, 5], mask=mask, time_groups=groups, n_restarts=3, random_state=0)
    assert sel.rank == 3


def block_case(case):
    """X and the solver's keywords for a test case of the pairs mode by blocks: "full" (no mask),
    "exact" / "em" (20 % of neurons missing), "groups" / "groups-em" (two time groups)."""
    if case.startswith("groups"):
        X, mask, groups, _ = planted_groups(25, noise=0.1)
        kw = dict(mask=mask, time_groups=groups)
    else:
        X, mask, _ = planted(19)
        kw = dict(mask=None if case == "full" else mask)
    kw["missing"] = "em" if case.endswith("em") else "exact"
    return X, kw


@pytest.mark.parametrize("case", ["full", "exact", "em", "groups", "groups-em"])
def test_pairs_mode_by_blocks_is_the_same_update(monkeypatch, case):
    """The pairs mode is solved by blocks of rows (numpy: one fused pass over X by blocks).
    The rows are independent subproblems, so this is the same HALS update: the fused pass equals
    the two-GEMM computation with the same blocks, and with a fixed number of inner sweeps (no
    per-block early stop) any block size gives the one-block result -- up to rounding."""
    X, kw = block_case(case)
    kw.update(random_state=2, max_iter=15, tol=0, dtype="float64")
    assert X.shape[0] > 4 * 64 and X.shape[0] % 64  # several blocks, the last one partial

    def fit(block, fused, **extra):
        monkeypatch.setattr(ntf, "PAIRS_BLOCK", block)
        monkeypatch.setattr(ntf, "_FUSED_PASS", fused)
        return ntf.ncp_hals(X, 3, **kw, **extra)

    fused, info_fused = fit(64, True)
    gemms, info_gemms = fit(64, False)
    # float64, 15 iterations; the two paths sum the same products in other orders (~1e-15 each).
    # The loss, a difference of squares, amplifies rounding ~1/e^2 ~ 1e3-fold: ~1e-12, so 1e-9
    np.testing.assert_allclose(info_fused.loss_history, info_gemms.loss_history, rtol=1e-9)
    for a, b in zip(fused.factors, gemms.factors):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    _, info_one = fit(10**6, True, inner_stop=0.0)
    _, info_many = fit(64, True, inner_stop=0.0)
    np.testing.assert_allclose(info_one.loss_history, info_many.loss_history, rtol=1e-9)


@pytest.mark.parametrize("case", ["full", "exact", "em", "groups"])
def test_fused_pass_threads_give_the_same_result(monkeypatch, case):
    """Threads share the fused pass block by block and each block's part of Z is summed in block
    order, so 1, 2 or 3 threads give bit-identical factors and losses (float32, inner early stop
    on: every block's own stopping decision is the same whoever runs it)."""
    X, kw = block_case(case)
    kw.update(random_state=4, max_iter=12, tol=0)
    monkeypatch.setattr(ntf, "PAIRS_BLOCK", 32)
    runs = {}
    for threads in (1, 2, 3):
        monkeypatch.setattr(ntf, "_PASS_THREADS", threads)
        runs[threads] = ntf.ncp_hals(X, 3, **kw)
    for threads in (2, 3):
        cp, info = runs[threads]
        np.testing.assert_array_equal(info.loss_history, runs[1][1].loss_history)
        for a, b in zip(cp.factors, runs[1][0].factors):
            np.testing.assert_array_equal(a, b)


def test_fused_pass_error_in_a_helper_thread_reaches_the_caller(monkeypatch):
    """An exception in a helper thread of the fused pass is raised in the caller, after every
    thread has stopped (no thread left running on the factors)."""
    X, mask, _ = planted(19)
    monkeypatch.setattr(ntf, "PAIRS_BLOCK", 32)
    monkeypatch.setattr(ntf, "_PASS_THREADS", 2)
    real = ntf._hals_shared
    calls = []

    def failing(*args, **kwargs):
        calls.append(threading.current_thread().name)
        if threading.current_thread() is not threading.main_thread():
            raise FloatingPointError("boom in a helper")
        return real(*args, **kwargs)

    monkeypatch.setattr(ntf, "_hals_shared", failing)
    with pytest.raises(FloatingPointError, match="boom in a helper"):
        ntf.ncp_hals(X, 3, random_state=0, max_iter=3)
    assert any(name.startswith("dynconn-ntf-") for name in calls)
    assert not [t for t in threading.enumerate() if t.name.startswith("dynconn-ntf-")]


@pytest.mark.parametrize(
    "X, kw, message",
    [
        (np.ones((4, 6, 2)), {"mask": np.ones((4, 2), bool), "time_groups": np.zeros(6, int)}, "shape \\(pairs, time, 1\\)"),
        (np.ones((4, 6, 1)), {"time_groups": np.zeros(6, int)}, "needs a mask"),
        (np.ones((4, 6, 1)), {"mask": np.ones((4, 2), bool), "time_groups": np.zeros(5, int)}, "6 integers"),
        (np.ones((4, 6, 1)), {"mask": np.ones((4, 2), bool), "time_groups": np.full(6, 0.5)}, "6 integers"),
        (np.ones((4, 6, 1)), {"mask": np.ones((4, 2), bool), "time_groups": np.arange(6)}, r"\[0, 2\)"),
        (np.ones((4, 6, 1)), {"mask": np.ones((3, 2), bool), "time_groups": np.zeros(6, int)}, "pairs, groups"),
    ],
)
def test_time_groups_bad_inputs(X, kw, message):
    with pytest.raises(ValueError, match=message):
        ntf.ncp_hals(X, 1, **kw)


# ------------------------------------------------------------------------------------------------
# bad inputs
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "X, rank, kw, message",
    [
        (np.ones((4, 5)), 2, {}, "3-way"),
        (np.ones((4, 5, 3)), 0, {}, "rank: expected"),
        (np.ones((4, 5, 3)), -1, {}, "rank: expected"),
        (np.ones((4, 5, 3)), 1.5, {}, "rank: expected"),
        (np.ones((4, 5, 3)), True, {}, "rank: expected"),
        (-np.ones((4, 5, 3)), 2, {}, "non-negative"),
        (np.full((4, 5, 3), np.nan), 2, {}, "NaN"),
        (np.zeros((4, 5, 3)), 2, {}, "zero"),
        (np.ones((4, 5, 3)), 2, {"mask": np.ones((4, 2), bool)}, r"\(4, 3\)"),
        (np.ones((4, 5, 3)), 2, {"mask": np.zeros((4, 3), bool)}, "no entry"),
        (np.ones((4, 5, 3)), 2, {"init": "svd"}, "init"),
        (np.ones((4, 5, 3)), 2, {"init": CPTensor((None, [np.ones((4, 2)), np.ones((5, 2)), np.ones((2, 2))]))}, "shapes"),
        (np.ones((4, 5, 3)), 2, {"backend": "jax"}, "backend"),
        (np.ones((4, 5, 3)), 2, {"dtype": "int32"}, "dtype"),
        (np.ones((4, 5, 3)), 2, {"max_iter": -1}, "max_iter"),
        (np.ones((4, 5, 3)), 2, {"tol": -1.0}, "tol"),
        (np.ones((4, 5, 3)), 2, {"method": "als"}, "method"),
        (np.ones((4, 5, 3)), 2, {"random_state": "seed"}, "random_state"),
    ],
)
def test_bad_inputs_raise(X, rank, kw, message):
    with pytest.raises(ValueError, match=message):
        ntf.ncp_hals(X, rank, **kw)


def test_negative_value_at_observed_entry_raises_but_not_at_unobserved():
    X = np.ones((4, 5, 3))
    mask = np.ones((4, 3), bool)
    mask[0, 0] = False
    X[0, :, 0] = -5  # unobserved: fine
    ntf.ncp_hals(X, 1, mask=mask, max_iter=2, random_state=0)
    X[1, 2, 1] = -1  # observed: not fine
    with pytest.raises(ValueError, match="non-negative"):
        ntf.ncp_hals(X, 1, mask=mask, max_iter=2)


def test_bad_restart_and_rank_arguments():
    X = np.ones((4, 5, 3))
    with pytest.raises(ValueError, match="n_restarts"):
        ntf.ncp_restarts(X, 1, n_restarts=0)
    with pytest.raises(ValueError, match="empty"):
        ntf.select_rank(X, [])
    with pytest.raises(ValueError, match="rank: expected a value ≥ 1, got 0"):
        ntf.select_rank(X, [1, 0])
    with pytest.raises(ValueError, match="rule"):
        ntf.select_rank(X, [1], rule="aic")
    with pytest.raises(ValueError, match="tensorly-hals"):
        ntf.ncp_hals(X, 1, mask=np.eye(4, 3, dtype=bool) | True, method="tensorly-hals", checkpoint_every=2)


# ------------------------------------------------------------------------------------------------
# backends
# ------------------------------------------------------------------------------------------------


def test_numpy_path_never_imports_torch():
    code = (
        "import sys, numpy as np\n"
        "from dynconn.methods import ntf\n"
        "ntf.ncp_hals(np.random.default_rng(0).random((20, 6, 3)), 2, max_iter=3, random_state=0)\n"
        "ntf.ncp_restarts(np.random.default_rng(0).random((20, 6, 3)), 2, n_restarts=2, max_iter=3)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_pytorch_backend_matches_numpy():
    torch = pytest.importorskip("torch")
    X, mask, _ = planted(15)
    a, ia = ntf.ncp_hals(X, 3, mask=mask, random_state=0, max_iter=30, tol=0, dtype="float64")
    b, ib = ntf.ncp_hals(X, 3, mask=mask, random_state=0, max_iter=30, tol=0, dtype="float64",
                         backend="pytorch")
    assert ib.backend == "pytorch"
    # float64 in both, but torch's own BLAS and two GEMMs instead of the fused pass: rounding
    # ~1e-15 per product, amplified ~1/e^2 by the loss formula and over 30 iterations: 1e-6
    np.testing.assert_allclose(ia.loss_history, ib.loss_history, rtol=1e-6)
    assert ntf.factor_congruence(a, b)[0] > 0.9999


@pytest.mark.parametrize("case", ["full", "exact", "em", "groups", "groups-em"])
def test_pytorch_two_gemms_match_the_fused_numpy_pass(monkeypatch, case):
    pytest.importorskip("torch")
    monkeypatch.setattr(ntf, "PAIRS_BLOCK", 64)  # numpy: several blocks; torch: one
    if case.startswith("groups"):
        X, mask, groups, _ = planted_groups(26, noise=0.1)
        kw = dict(mask=mask, time_groups=groups)
    else:
        X, mask, _ = planted(27)
        kw = dict(mask=None if case == "full" else mask)
    kw.update(random_state=3, max_iter=20, tol=0, dtype="float64", inner_stop=0.0,
              missing="em" if case.endswith("em") else "exact")
    a, ia = ntf.ncp_hals(X, 3, **kw)
    b, ib = ntf.ncp_hals(X, 3, backend="pytorch", **kw)
    # float64, no early stop, 20 iterations: as test_pairs_mode_by_blocks_is_the_same_update
    np.testing.assert_allclose(ia.loss_history, ib.loss_history, rtol=1e-9)
    for fa, fb in zip(a.factors, b.factors):
        np.testing.assert_allclose(fa, fb, rtol=1e-8, atol=1e-11)


def test_pytorch_resume_equals_uninterrupted():
    pytest.importorskip("torch")
    X, mask, _ = planted(16)
    kw = dict(mask=mask, random_state=4, max_iter=24, tol=0, backend="pytorch")
    full, _ = ntf.ncp_hals(X, 3, **kw)
    states = []
    ntf.ncp_hals(X, 3, checkpoint_every=8, on_checkpoint=states.append, **kw)
    resumed, info = ntf.ncp_hals(X, 3, resume=states[0], **kw)
    # float32 on torch, whose CPU/CUDA reductions are not bitwise reproducible run to run: a few
    # float32 ulps (6e-8) per iteration over 16 iterations
    for a, b in zip(full.factors, resumed.factors):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def _write_h5(group, state):
    for key, value in state.items():
        if isinstance(value, dict):
            _write_h5(group.create_group(key), value)
        elif isinstance(value, np.ndarray):
            group.create_dataset(key, data=value)
        else:
            group.attrs[key] = value


def _read_h5(group):
    import h5py

    out = {k: (v.decode() if isinstance(v, bytes) else v.item() if isinstance(v, np.generic) else v)
           for k, v in group.attrs.items()}
    for key, item in group.items():
        out[key] = _read_h5(item) if isinstance(item, h5py.Group) else item[()]
    return out


def test_checkpoint_survives_an_hdf5_round_trip(tmp_path):
    h5py = pytest.importorskip("h5py")
    X, mask, _ = planted(17)
    kw = dict(mask=mask, n_restarts=2, random_state=9, max_iter=20, tol=0)
    full = ntf.ncp_restarts(X, 3, **kw)
    states = []
    ntf.ncp_restarts(X, 3, checkpoint_every=10, on_checkpoint=states.append, **kw)
    state = next(s for s in states if s["restart"] == 1 and "current" in s)
    with h5py.File(tmp_path / "ckpt.h5", "w") as f:
        _write_h5(f, state)
    with h5py.File(tmp_path / "ckpt.h5", "r") as f:
        loaded = _read_h5(f)
    resumed = ntf.ncp_restarts(X, 3, resume=loaded, **kw)
    np.testing.assert_array_equal(resumed.losses, full.losses)
    for a, b in zip(resumed.cp.factors, full.cp.factors):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------------------------
# the unobserved penalty (issue 11 part 6: a pair seen in few animals carries less evidence)
# ------------------------------------------------------------------------------------------------


def rank_one_one_animal(dtype="float64"):
    """A rank-1 tensor (10 pairs, 6 bins, 4 animals, animal loadings w = 1, 2, 1, 1) in which
    pair 0 is recorded in animal 0 only; every other pair everywhere. Returns X, mask, truth."""
    rng = np.random.default_rng(3)
    u, v, w = rng.uniform(0.5, 1.5, 10), rng.uniform(0.5, 1.5, 6), np.array([1.0, 2.0, 1.0, 1.0])
    mask = np.ones((10, 4), bool)
    mask[0, 1:] = False
    X = np.einsum("p,t,a->pta", u, v, w) * mask[:, None, :]
    return X.astype(dtype), mask, (u[:, None], v[:, None], w[:, None])


@pytest.mark.parametrize("missing", ["exact", "em"])
@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-12), ("float32", 2e-6)])
def test_unobserved_penalty_shrinks_a_pair_seen_in_one_animal_by_the_predicted_factor(missing, dtype, rtol):
    """One iteration from the true factors. Pair 0's Gram is G_0 = |v|^2 w_0^2 = |v|^2, the full
    one Gfull = |v|^2 |w|^2 = 7 |v|^2, and its right-hand side F_0 = u_0 G_0 (the data are exact).
    The penalty term is lam max(0, Gfull - 2 G_0) = 5 lam |v|^2 (the unrecorded energy, 6, beyond
    the recorded, 1). Exact update: u_0 <- F_0 / (G_0 + 5 lam |v|^2) = u_0 / (1 + 5 lam). EM
    imputes the unobserved entries with the model first (F~_0 = F_0 + (Gfull - G_0) u_0 = u_0
    Gfull), then u_0 <- F~_0 / (Gfull + 5 lam |v|^2) = u_0 / (1 + 5 lam / 7). The fully observed
    pairs keep their values (no penalty: Gfull - 2 G_p < 0), so the ratios to them show the factor.
    Tolerance: float64 ~10 roundings of 1e-16; float32 ~10 roundings of 6e-8 each (2e-6)."""
    X, mask, truth = rank_one_one_animal(dtype)
    lam = 0.1
    expected = 1 / (1 + 5 * lam) if missing == "exact" else 1 / (1 + 5 * lam / 7)
    for penalty, factor in ((0.0, 1.0), (lam, expected)):
        cp, _ = ntf.ncp_hals(X, 1, mask=mask, init=truth_cp(truth), max_iter=1, tol=0, dtype=dtype,
                             missing=missing, unobserved_penalty=penalty)
        u = cp.factors[0][:, 0].astype(np.float64)
        ratio = (u / u[1:].mean()) / (truth[0][:, 0] / truth[0][1:, 0].mean())
        np.testing.assert_allclose(ratio[0], factor, rtol=rtol)
        np.testing.assert_allclose(ratio[1:], 1.0, rtol=rtol)


@pytest.mark.parametrize("missing", ["exact", "em"])
def test_unobserved_penalty_leaves_a_pair_recorded_where_the_component_mostly_lives(missing):
    """Pair 0 recorded in animals 0 and 1 (w = 1, 2: G_0 = 5 |v|^2 of Gfull = 7 |v|^2): the
    unrecorded energy (2) is below the recorded (5), so max(0, Gfull - 2 G_0) = 0 and one
    iteration from the true factors keeps every loading, as without the penalty (float64 ~10
    roundings of 1e-16)."""
    X, mask, truth = rank_one_one_animal()
    mask[0, :2] = True
    X = np.einsum("p,t,a->pta", truth[0][:, 0], truth[1][:, 0], truth[2][:, 0]) * mask[:, None, :]
    cp, _ = ntf.ncp_hals(X, 1, mask=mask, init=truth_cp(truth), max_iter=1, tol=0, dtype="float64",
                         missing=missing, unobserved_penalty=10.0)
    u = cp.factors[0][:, 0]
    np.testing.assert_allclose((u / u[1:].mean()) / (truth[0][:, 0] / truth[0][1:, 0].mean()), 1.0, rtol=1e-12)


def test_unobserved_penalty_with_time_groups_shrinks_by_the_predicted_factor():
    """The same with time groups (concatenated layout, A = 1): pair 0 recorded in group 0's bins
    only; its Gram is w^2 |v_0|^2 (v_0: group 0's bins), the full one w^2 |v|^2: with s =
    |v_0|^2 / |v|^2 (0.28 here) the row is shrunk to s / (s + lam max(0, 1 - 2 s))."""
    rng = np.random.default_rng(4)
    groups = np.repeat([0, 1, 2], [5, 7, 6])
    u, v = rng.uniform(0.5, 1.5, 10), rng.uniform(0.5, 1.5, groups.size)
    mask = np.ones((10, 3), bool)
    mask[0, 1:] = False
    X = (np.einsum("p,t->pt", u, v) * mask[:, groups])[:, :, None]
    lam = 0.2
    share = np.sum(v[groups == 0] ** 2) / np.sum(v ** 2)
    cp, _ = ntf.ncp_hals(X, 1, mask=mask, time_groups=groups, init=truth_cp((u[:, None], v[:, None], np.ones((1, 1)))),
                         max_iter=1, tol=0, dtype="float64", unobserved_penalty=lam)
    got = cp.factors[0][:, 0]
    ratio = (got / got[1:].mean()) / (u / u[1:].mean())
    assert share < 0.5
    np.testing.assert_allclose(ratio[0], share / (share + lam * (1 - 2 * share)), rtol=1e-12)
    np.testing.assert_allclose(ratio[1:], 1.0, rtol=1e-12)


@pytest.mark.parametrize("case", ["exact", "em", "groups"])
def test_unobserved_penalty_zero_is_the_unpenalised_solver_bit_for_bit(monkeypatch, case):
    """lam = 0 takes the unpenalised code path: the same bits as a fit that does not pass the
    option, on the fused pass with threads and on the two-GEMM path."""
    X, kw = block_case(case)
    kw.update(random_state=5, max_iter=10, tol=0)
    monkeypatch.setattr(ntf, "PAIRS_BLOCK", 64)
    for fused, threads in ((True, 2), (False, 1)):
        monkeypatch.setattr(ntf, "_FUSED_PASS", fused)
        monkeypatch.setattr(ntf, "_PASS_THREADS", threads)
        a, ia = ntf.ncp_hals(X, 3, **kw)
        b, ib = ntf.ncp_hals(X, 3, unobserved_penalty=0.0, **kw)
        c, _ = ntf.ncp_hals(X, 3, unobserved_penalty=0.05, **kw)
        np.testing.assert_array_equal(ia.loss_history, ib.loss_history)
        for fa, fb in zip(a.factors, b.factors):
            np.testing.assert_array_equal(fa, fb)
        assert np.abs(a.factors[0] - c.factors[0]).max() > 1e-3  # and lam > 0 does change the fit
        assert ib.unobserved_penalty == 0.0


@pytest.mark.parametrize("case", ["exact", "em", "groups", "groups-em"])
def test_unobserved_penalty_is_the_same_on_every_solver_path(monkeypatch, case):
    """The fused pass (1 and 3 threads: bitwise, as without the penalty), the two-GEMM path (what
    torch runs), a 2-worker Dask pass (_remote_block) and, where installed, torch all apply it.
    float32, 15 iterations: the paths sum the same products in other orders, a float32 rounding
    (6e-8) per product, which the iterations carry further the farther the fit is from converged.
    Measured on unit-norm columns against the fused pass (two GEMMs / Dask / torch CPU): exact
    2e-7, groups 9e-7, EM 5e-6 / 6e-6 / 1.6e-5 (EM without the penalty: 4e-6 / 3e-6 / 8e-6 already).
    5e-5 (~400 ulps of 1) as
    tests/test_scale.py::test_pass_on_two_dask_workers_equals_the_local_fit; the penalty's own
    effect on these fits is > 1e-2, so a path that ignored it would fail by 200x.
    Losses: within the loss formula's float32 resolution (ntf.loss_resolution), 4x."""
    X, kw = block_case(case)
    # no early stop of the inner sweeps: torch solves all pairs as one block, numpy by blocks of
    # 64 rows, and each block stops its sweeps on its own (as test_pytorch_two_gemms_match_...)
    kw.update(random_state=2, max_iter=15, tol=0, unobserved_penalty=0.1, inner_stop=0.0)
    monkeypatch.setattr(ntf, "PAIRS_BLOCK", 64)

    def fit(fused=True, threads=1, **extra):
        monkeypatch.setattr(ntf, "_FUSED_PASS", fused)
        monkeypatch.setattr(ntf, "_PASS_THREADS", threads)
        return ntf.ncp_hals(X, 3, **{**kw, **extra})

    ref, info = fit()
    assert info.unobserved_penalty == 0.1
    unpenalised, _ = fit(unobserved_penalty=0.0)
    assert max(np.abs(a - b).max() for a, b in zip(ref.factors, unpenalised.factors)) > 1e-2
    runs = {"gemms": fit(fused=False)}
    threads3, info3 = fit(threads=3)
    np.testing.assert_array_equal(info3.loss_history, info.loss_history)
    for a, b in zip(threads3.factors, ref.factors):
        np.testing.assert_array_equal(a, b)
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        runs["dask"] = fit(client=client)
    if importlib.util.find_spec("torch") is not None:
        runs["pytorch"] = fit(fused=False, backend="pytorch", device="cpu")
    for name, (cp, other) in runs.items():
        for a, b in zip(cp.factors, ref.factors):
            np.testing.assert_allclose(a, b, atol=5e-5, err_msg=name)
        np.testing.assert_allclose(other.loss_history, info.loss_history,
                                   atol=4 * ntf.loss_resolution(info.loss_history).max(), err_msg=name)


def test_penalised_fixed_point_shrinks_the_pair_by_its_evidence():
    """Where the fit converges with the penalty (rank 1, exact data, pair 0 in animal 0 only).
    The penalty is on the pairs mode only: each iteration the pair update shrinks U and the
    unpenalised time and animal updates re-inflate V and W, so the fit is no stationary point of
    one loss (and the observed error may rise while it converges). At the fixed point the pair
    row is the penalised solution for the fitted v, w: u_p = F_p / (G_p + lam max(0, Gfull - 2 G_p)),
    with F_p = u*_p (v*.v)(w*.w over p's animals). Against a fully observed pair q (v* and |v|
    cancel): u_0 / u_q = (u*_0 / u*_q) (w*_0 / w_0) (|w|^2 / w*.w) / (1 + lam (|w|^2 / w_0^2 - 2)),
    w the fitted animal loadings (animal 0's moves by ~1 % at lam = 0.1). float64: rounding 1e-16,
    the fit converged to tol 1e-14 -> 1e-10."""
    X, mask, truth = rank_one_one_animal()
    lam = 0.1
    cp, info = ntf.ncp_hals(X, 1, mask=mask, dtype="float64", random_state=0, max_iter=5000, tol=1e-14,
                            unobserved_penalty=lam)
    assert info.converged
    u, w = cp.factors[0][:, 0], cp.factors[2][:, 0]
    u_true, w_true = truth[0][:, 0], truth[2][:, 0]
    predicted = (u_true[0] / u_true[1:]) * (w_true[0] / w[0]) * (w @ w / (w_true @ w)) / (
        1 + lam * (w @ w / w[0] ** 2 - 2))
    np.testing.assert_allclose(u[0] / u[1:], predicted, rtol=1e-10)
    assert np.all(u[0] / u[1:] < 0.7 * u_true[0] / u_true[1:])  # shrunk by ~1 / (1 + 5 lam) = 0.67


def test_unobserved_penalty_is_checked_and_recorded_in_checkpoints():
    X, mask, _ = planted(12)
    kw = dict(mask=mask, random_state=1, max_iter=12, tol=0)
    for bad in (-0.1, float("nan"), "0.1", True, None):
        with pytest.raises(ValueError, match="unobserved_penalty"):
            ntf.ncp_hals(X, 3, unobserved_penalty=bad, **kw)
    states = []
    full, _ = ntf.ncp_hals(X, 3, unobserved_penalty=0.03, **kw)
    ntf.ncp_hals(X, 3, unobserved_penalty=0.03, checkpoint_every=4, on_checkpoint=states.append, **kw)
    assert states[0]["unobserved_penalty"] == 0.03
    resumed, _ = ntf.ncp_hals(X, 3, unobserved_penalty=0.03, resume=states[0], **kw)
    for a, b in zip(full.factors, resumed.factors):
        np.testing.assert_array_equal(a, b)
    # a resumed fit with another lam must not silently continue; a state made before the option
    # existed was made without the penalty (lam = 0)
    with pytest.raises(ValueError, match="unobserved_penalty 0.03, asked 0"):
        ntf.ncp_hals(X, 3, unobserved_penalty=0.0, resume=states[0], **kw)
    old = {k: v for k, v in states[0].items() if k != "unobserved_penalty"}
    ntf.ncp_hals(X, 3, resume=old, **kw)
    with pytest.raises(ValueError, match="unobserved_penalty 0, asked 0.03"):
        ntf.ncp_hals(X, 3, unobserved_penalty=0.03, resume=old, **kw)
    # restarts and rank-sweep states too (their finished fits were made with the state's lam)
    rkw = dict(mask=mask, random_state=1, max_iter=6, tol=0, unobserved_penalty=0.03)
    r_states, s_states = [], []
    ntf.ncp_restarts(X, 2, n_restarts=2, checkpoint_every=3, on_checkpoint=r_states.append, **rkw)
    ntf.select_rank(X, [1, 2], n_restarts=2, checkpoint_every=3, on_checkpoint=s_states.append, **rkw)
    assert r_states[-1]["unobserved_penalty"] == 0.03 and s_states[-1]["unobserved_penalty"] == 0.03
    with pytest.raises(ValueError, match="unobserved_penalty"):
        ntf.ncp_restarts(X, 2, n_restarts=2, resume=r_states[-1], **{**rkw, "unobserved_penalty": 0.1})
    with pytest.raises(ValueError, match="unobserved_penalty"):
        ntf.select_rank(X, [1, 2], n_restarts=2, resume=s_states[-1], **{**rkw, "unobserved_penalty": 0.1})

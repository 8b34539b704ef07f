"""factors.h5 ``/fit/restarts/*``: every restart's temporal loading, matched to the kept fit's
components (the report's spread band around each temporal loading)."""

from __future__ import annotations

import numpy as np

from dynconn import config
from dynconn.console import Console
from dynconn.methods import merging, ntf
from dynconn.stages import factorize
from test_factorize import FakeAffinity, planted


def section(**overrides):
    return config._check_section("factorize", config.SCHEMA["factorize"], overrides, None)


def test_match_components_reorders_a_permuted_fit():
    rng = np.random.default_rng(0)
    factors = [rng.random((20, 3)), rng.random((8, 3)), rng.random((4, 3))]
    best = (np.array([3.0, 2.0, 1.0]), factors)
    perm = [2, 0, 1]
    shuffled = (best[0][perm], [f[:, perm] for f in factors])
    matched, congruence = ntf.match_components(best, shuffled)
    np.testing.assert_array_equal(matched[0], best[0])
    for a, b in zip(matched[1], factors):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(congruence, 1.0)


def test_reported_time_of_a_group_is_its_merged_loading():
    rng = np.random.default_rng(1)
    w, u, v, a = rng.random(3) + 0.5, rng.random((30, 3)), rng.random((10, 3)), rng.random((4, 3))
    merged = merging.merge_duplicates(w, u, v, a, similarity=-1.0, max_animal_overlap=2.0)  # merge all
    assert merged.groups == [[0, 1, 2]]
    np.testing.assert_allclose(merging.reported_time(merged.groups, w, v, a), merged.time)


def test_fixed_rank_stores_every_restart_in_the_kept_order():
    X, mask = planted(2, noise=0.05)
    p = section(rank=3, restarts=3, max_iter=200, merge_similarity=2.0)
    datasets, _ = factorize.compute(FakeAffinity(X, mask), p, Console(True))
    spread = datasets["fit/restarts/time"]
    assert spread.shape == (3, X.shape[1], 3)
    best = int(datasets["fit/best_index"])
    # the kept restart is the reported temporal factor itself (no merging here)
    np.testing.assert_allclose(spread[best], datasets["factors/time"], rtol=1e-12)
    congruence = datasets["fit/restarts/congruence"]
    assert congruence.shape == (3, 3) and np.allclose(congruence[best], 1.0)
    # a planted rank-3 tensor: every restart finds the same components, so matched loadings agree
    # (unit columns; 0.05 is far above the fits' residual differences, ~1e-3, and far below a
    # mismatched component's distance, ~1)
    assert np.abs(spread - spread[best]).max() < 0.05


def test_auto_rank_stores_the_chosen_ranks_sweep_restarts():
    X, mask = planted(1, missing=0.2, noise=0.05)
    p = section(rank="auto", ranks=[2, 4], restarts=2, max_iter=300, tol=1e-7, merge_similarity=2.0)
    datasets, attrs = factorize.compute(FakeAffinity(X, mask), p, Console(True))
    spread = datasets["fit/restarts/time"]
    assert spread.shape == (2, X.shape[1], attrs["rank"])
    kept = int(datasets["rank_selection/best_index"][list(datasets["rank_selection/ranks"]).index(attrs["rank"])])
    np.testing.assert_allclose(spread[kept], datasets["factors/time"], rtol=1e-12)

"""Missing neurons are not structure (issue 11 part 6): pair evidence and its pipeline effect."""

import numpy as np
import pytest

from conftest import cli
from dynconn.io.artifacts import read_h5
from dynconn.methods.evidence import component_energy_by_animal, pair_evidence, unobserved_mass, weigh_by_evidence
from methods_data import structureless


def test_aligned_evidence_is_the_observed_share_of_animal_energy():
    # hand-checkable: W[:, 0] = (3, 4)/5 -> energy shares 9/25, 16/25
    mask = np.array([[True, True], [True, False], [False, True]])
    animals = np.array([[0.6, 1.0], [0.8, 0.0]])
    e = pair_evidence(mask, np.ones((5, 2)), animals)
    np.testing.assert_allclose(e, [[1.0, 1.0], [0.36, 1.0], [0.64, 0.0]], atol=1e-12)  # exact ratios


def test_concatenated_evidence_is_the_observed_share_of_time_energy():
    groups = np.array([0, 0, 1, 1, 1])
    time = np.array([[1.0], [1.0], [2.0], [0.0], [0.0]])  # energy 2 in animal 0, 4 in animal 1
    share = component_energy_by_animal(time, None, groups, 2)
    np.testing.assert_allclose(share[:, 0], [1 / 3, 2 / 3], atol=1e-12)
    e = pair_evidence(np.array([[True, False], [False, True]]), time, np.ones((1, 1)), groups)
    np.testing.assert_allclose(e[:, 0], [1 / 3, 2 / 3], atol=1e-12)


def test_weighing_rules():
    u = np.array([[0.2], [0.4]])
    e = np.array([[1.0], [0.25]])
    np.testing.assert_allclose(weigh_by_evidence(u, e, "evidence"), [[0.2], [0.1]], atol=1e-12)
    np.testing.assert_allclose(weigh_by_evidence(u, e, "sqrt"), [[0.2], [0.2]], atol=1e-12)
    np.testing.assert_allclose(weigh_by_evidence(u, e, "shrink"), [[0.2], [0.1 + 0.75 * 0.3]], atol=1e-12)
    assert np.array_equal(weigh_by_evidence(u, e, "none"), u)
    with pytest.raises(ValueError):
        weigh_by_evidence(u, e, "bogus")


def coinciding(membership: np.ndarray, sets) -> list:
    """Communities of >= 3 neurons with Jaccard >= 0.5 with some animal's missing set."""
    hits = []
    for r in range(membership.shape[0]):
        for c in np.unique(membership[r][membership[r] >= 0]):
            members = set(np.flatnonzero(membership[r] == c).tolist())
            jaccard = max(len(members & set(s)) / len(members | set(s)) for s in sets)
            if len(members) >= 3 and jaccard >= 0.5:
                hits.append((r, sorted(members), jaccard))
    return hits


@pytest.mark.parametrize("layout", ["aligned", "concatenated"])
def test_missingness_alone_makes_no_community(tmp_path, layout):
    """Independent noise in 4 animals, 5 different neurons missing in each: the pipeline's
    default communities contain none that coincides with a missing set."""
    found = []
    for seed in (0, 1):
        config, sets = structureless(tmp_path / f"s{seed}", seed=seed, config={
            "data": {"layout": layout}, "factorize": {"rank": 3, "restarts": 2}})
        result = cli("run", config, "-q", "--until", "communities")
        assert result.exit_code == 0, result.output
        com = read_h5(config.parent / "run" / "communities.h5")
        found += coinciding(np.asarray(com["membership"]), sets)
    assert found == []


def test_unobserved_mass_by_hand():
    # u^2 = (1, 4, 9); the pairs' missing shares of the animal energy (1/2, 1/2): 0, 1/2, 1
    mask = np.array([[True, True], [True, False], [False, False]])
    pairs = np.array([[1.0, 1.0], [2.0, 0.0], [3.0, 0.0]])
    animals = np.array([[1.0, 0.0], [1.0, 1.0]])
    m = unobserved_mass(mask, pairs, np.ones((4, 2)), animals)
    # component 1: only pair 0 loads, and W = (0, 1) lives in animal 1 where pair 0 is recorded
    np.testing.assert_allclose(m, [(0 + 2 + 9) / 14, 0.0], atol=1e-12)
    assert unobserved_mass(mask, np.zeros((3, 1)), np.ones((4, 1)), np.ones((2, 1)))[0] == 0.0


@pytest.mark.parametrize("layout", ["aligned", "concatenated"])
def test_unobserved_mass_is_the_model_mass_off_the_mask(layout):
    """Against the brute-force sum of the squared model tensor over the unobserved entries."""
    rng = np.random.default_rng(3)
    P, R = 7, 3
    if layout == "aligned":
        T, A, groups = 5, 4, None
        mask = rng.random((P, A)) < 0.6
        U, V, W = rng.random((P, R)), rng.random((T, R)), rng.random((A, R))
        full = np.broadcast_to(mask[:, None, :], (P, T, A))
    else:
        groups = np.array([0, 0, 1, 1, 1, 2])
        T, A = groups.size, 3
        mask = rng.random((P, A)) < 0.6
        U, V, W = rng.random((P, R)), rng.random((T, R)), rng.random((1, R))
        full = mask[:, groups][:, :, None]
    for r in range(R):
        model2 = np.einsum("p,t,a->pta", U[:, r], V[:, r], W[:, r]) ** 2
        expected = model2[~full].sum() / model2.sum()
        got = unobserved_mass(mask, U, V, W, groups)[r]
        assert abs(got - expected) < 1e-12  # float64 sums of 7*6*3 terms: rounding only

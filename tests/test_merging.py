"""Timing that differs between animals (issue 11 part 5): duplicates merged into one component."""

import numpy as np

from conftest import cli
from dynconn.io.artifacts import read_h5
from dynconn.methods.merging import merge_duplicates
from methods_data import jittered_motif


def unit(x):
    x = np.asarray(x, dtype=float)
    return x / np.linalg.norm(x)


def test_same_pairs_in_complementary_animals_merge():
    pair = unit([1, 1, 1, 0, 0.1])
    other = unit([0, 0, 0.1, 1, 1])
    pairs = np.stack([pair, other, pair], axis=1)
    time = np.stack([unit([1, 0, 0, 0]), unit([0, 0, 1, 1]), unit([0, 1, 0, 0])], axis=1)
    animals = np.stack([unit([1, 0]), unit([1, 1]), unit([0, 1])], axis=1)
    m = merge_duplicates(np.array([3.0, 2.0, 1.0]), pairs, time, animals)
    assert m.groups == [[0, 2], [1]] and m.merged_from.tolist() == [0, 1, 0]
    # the merged slab 3·e0⊗a0 + 1·e1⊗a1 has singular values 3 and 1: the rank-one fit keeps the 3
    np.testing.assert_allclose(m.weights, [3.0, 2.0], atol=1e-12)
    np.testing.assert_allclose(m.pairs[:, 0], pair, atol=1e-12)  # identical patterns average to themselves
    np.testing.assert_allclose(m.time[:, 1], time[:, 1], atol=1e-12)  # the unmerged one is untouched
    assert (m.time >= 0).all() and (m.animals >= 0).all()


def test_same_pairs_in_the_same_animals_stay_apart():
    pair = unit([1, 1, 1, 0])
    pairs = np.stack([pair, pair], axis=1)
    time = np.stack([unit([1, 0, 0]), unit([0, 0, 1])], axis=1)
    animals = np.stack([unit([1, 1]), unit([1, 0.9])], axis=1)
    m = merge_duplicates(np.array([2.0, 1.0]), pairs, time, animals)
    assert m.groups == [[0], [1]]


def test_concatenated_merge_keeps_each_animals_own_loading():
    groups = np.array([0, 0, 1, 1])
    pair = unit([1, 1, 0])
    pairs = np.stack([pair, pair], axis=1)
    time = np.stack([unit([1, 2, 0, 0]), unit([0, 0, 2, 1])], axis=1)
    m = merge_duplicates(np.array([1.0, 1.0]), pairs, time, np.ones((1, 2)), time_groups=groups, n_animals=2)
    assert m.groups == [[0, 1]]
    # concatenated: the merged temporal loading is exactly the sum of the two (time mode only)
    np.testing.assert_allclose(m.time[:, 0] * m.weights[0] * m.animals[0, 0],
                               time[:, 0] + time[:, 1], atol=1e-12)


def test_disabled_above_one():
    pair = unit([1, 1])
    m = merge_duplicates(np.ones(2), np.stack([pair, pair], 1), np.eye(2), np.eye(2), similarity=1.01)
    assert m.groups == [[0], [1]]


def motif_components(workdir):
    com = read_h5(workdir / "communities.h5")
    motif = set(range(8))
    hits = []
    for r, row in enumerate(np.asarray(com["membership"])):
        for c in np.unique(row[row >= 0]):
            members = set(np.flatnonzero(row == c).tolist())
            if len(members & motif) / len(members | motif) >= 0.75:
                hits.append(r)
    return hits


def test_jittered_motif_is_one_component(tmp_path):
    """One motif responding 0, 4 and 8 s late in three animals: the fit spends a component on each
    animal (shown with merging off), the reported result has one component holding the motif."""
    base = {"affinity": {"bin_seconds": 2.0}, "factorize": {"rank": 3, "restarts": 2}}
    config = jittered_motif(tmp_path / "data", [0.0, 4.0, 8.0], config=base)
    assert cli("run", config, "-q", "--until", "communities").exit_code == 0
    workdir = config.parent / "run"
    fac = read_h5(workdir / "factors.h5")
    assert motif_components(workdir) == [0]
    assert np.asarray(fac["fit/raw/weights"]).size == 3  # the fitted model is kept as it was
    assert len(set(np.asarray(fac["merged_from"]).tolist())) == 1
    assert fac.json_attr("params")["merge_similarity"] == 0.9  # the default, in the artifact
    # control: the same data without merging split the motif by animal
    result = cli("run", config, "-q", "--until", "communities", "--set", "factorize.merge_similarity=2")
    assert result.exit_code == 0
    assert len(motif_components(workdir)) == 3

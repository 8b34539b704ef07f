"""One motif, one component (issue 11 part 5): duplicates merged — timing that differs between animals, pairs split at the same times."""

import numpy as np

from conftest import cli
from dynconn.io.artifacts import read_h5
from dynconn.methods.merging import fold_animals, merge_duplicates, observed_mass, unfold_animals
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


def test_overlapping_pairs_active_at_the_same_times_merge():
    # one motif whose pairs the fit split: patterns 11100000 and 01110000, mean 3/8, correlation
    # (2·25 − 2·15 + 4·9)/64 / (120/64) = 7/15 = 0.47 >= 0.4; the same animals (overlap 1);
    # courses (1, 1, 0) and (1, 0.5, 0) (each entry twice, once per animal): correlation
    # (1/6 + 1/3) / sqrt(2/3 · 1/2) = 0.87 >= 0.2
    pairs = np.stack([unit([1, 1, 1, 0, 0, 0, 0, 0]), unit([0, 1, 1, 1, 0, 0, 0, 0])], axis=1)
    time = np.stack([unit([1, 1, 0]), unit([1, 0.5, 0])], axis=1)
    animals = np.stack([unit([1, 1]), unit([1, 1])], axis=1)
    m = merge_duplicates(np.array([2.0, 1.0]), pairs, time, animals)
    assert m.groups == [[0, 1]]
    # the merged pair factor is the weight-averaged pattern: 2·a + 1·b, unit norm
    np.testing.assert_allclose(m.pairs[:, 0], unit(2 * pairs[:, 0] + pairs[:, 1]), atol=1e-12)
    # the same pairs at different times (correlation -0.5) are different events: apart
    apart = merge_duplicates(np.array([2.0, 1.0]), pairs, np.stack([unit([1, 0, 0]), unit([0, 0, 1])], 1), animals)
    assert apart.groups == [[0], [1]]
    # patterns 11100000 and 00011100: correlation (−45 − 45 + 18)/64 / (120/64) = −0.6, apart at the same times
    disjoint = np.stack([unit([1, 1, 1, 0, 0, 0, 0, 0]), unit([0, 0, 0, 1, 1, 1, 0, 0])], axis=1)
    assert merge_duplicates(np.array([2.0, 1.0]), disjoint, time, animals).groups == [[0], [1]]


def test_time_agreement_threshold_is_the_correlation_of_the_courses():
    # courses (1, 0, 0) and (1, 1, 0) in the same two animals: correlation (1/3) / (2/3) = 0.5;
    # pair patterns (1, 1, 0) and (1, 1, 0.2): correlation 1
    pairs = np.stack([unit([1, 1, 0]), unit([1, 1, 0.2])], axis=1)
    time = np.stack([unit([1, 0, 0]), unit([1, 1, 0])], axis=1)
    animals = np.ones((2, 2)) / np.sqrt(2)
    w = np.array([1.0, 1.0])
    assert merge_duplicates(w, pairs, time, animals, time_similarity=0.49).groups == [[0, 1]]
    assert merge_duplicates(w, pairs, time, animals, time_similarity=0.51).groups == [[0], [1]]
    assert merge_duplicates(w, pairs, time, animals, time_similarity=1.01).groups == [[0], [1]]  # route off


def test_unrelated_dense_patterns_stay_apart():
    # dense non-negative patterns have a large cosine by chance (uniform: ≈ 0.75) but a
    # correlation ≈ 0 (SD 1/sqrt(P) = 0.03 here): three independent components, the same times
    rng = np.random.default_rng(0)
    pairs = rng.random((1000, 3))
    time = np.repeat(unit([1, 1, 0])[:, None], 3, axis=1)
    m = merge_duplicates(np.ones(3), pairs / np.linalg.norm(pairs, axis=0), time, np.ones((1, 3)))
    assert m.groups == [[0], [1], [2]]


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
    """One motif responding 0, 4 and 8 s late in three animals, one time course per component
    (``time_courses: shared``): the fit spends a component on each animal (shown with merging
    off), the reported result has one component holding the motif."""
    base = {"affinity": {"bin_seconds": 2.0}, "factorize": {"rank": 3, "restarts": 2, "time_courses": "shared"}}
    config = jittered_motif(tmp_path / "data", [0.0, 4.0, 8.0], config=base)
    assert cli("run", config, "-q", "--until", "communities").exit_code == 0
    workdir = config.parent / "run"
    fac = read_h5(workdir / "factors.h5")
    assert motif_components(workdir) == [0]
    assert np.asarray(fac["fit/raw/weights"]).size == 3  # the fitted model is kept as it was
    assert len(set(np.asarray(fac["merged_from"]).tolist())) == 1
    assert fac.json_attr("params")["merge_similarity"] == 0.4  # the default, in the artifact
    # control: the same data without merging split the motif by animal
    result = cli("run", config, "-q", "--until", "communities", "--set", "factorize.merge_similarity=2")
    assert result.exit_code == 0
    assert len(motif_components(workdir)) == 3


def test_fold_animals_summarises_per_animal_courses_exactly_when_they_share_a_shape():
    """Per-animal courses (``time_courses: per_animal``) written in the design's shapes: a course
    that is one shape scaled per animal gives that shape and those scales exactly; one whose
    timing differs gives its best rank-one summary, and the courses times the weight are the fit."""
    shape, scale = unit([0, 1, 2, 1]), unit([3, 1, 0])
    shared = (scale[:, None] * shape[None, :]).reshape(-1)  # (A·T,) animal-major, unit norm
    shifted = unit(np.concatenate([[0, 1, 2, 1], [1, 2, 1, 0], [0, 0, 1, 2]]))
    w, v, a, courses = fold_animals(np.array([2.0, 5.0]), np.stack([shared, shifted], 1), 3)
    assert v.shape == (4, 2) and a.shape == (3, 2) and courses.shape == (3, 4, 2)
    np.testing.assert_allclose([w[0], *v[:, 0], *a[:, 0]], [2.0, *shape, *scale], atol=1e-12)
    # timing differs: the rank-one summary keeps less than the fitted weight (singular value 1st of 3)
    assert 0 < w[1] < 5.0 and (v >= 0).all() and (a >= 0).all()
    np.testing.assert_allclose(w[1] * courses[:, :, 1], 5.0 * shifted.reshape(3, 4), atol=1e-12)
    np.testing.assert_allclose(courses[:, :, 0], np.outer(scale, shape), atol=1e-12)


def test_the_time_summary_weighs_each_animal_by_the_pairs_recorded_there():
    """A component whose main pair was not recorded in animal 1 (loadings 0.8, 0.6; pair 0 recorded
    in animal 0 only): its recorded mass is 0.64 + 0.36 = 1 in animal 0 and 0.36 in animal 1. Its
    course there (1.5 at bin 1, fitted through the weak pair alone) outweighs animal 0's (1 at bin
    0) unweighted; weighted by √mass (0.6) it is 0.9 < 1, so the summary is animal 0's timing."""
    mass = observed_mass(np.array([[0.8], [0.6]]), np.array([[True, False], [True, True]]))
    np.testing.assert_allclose(mass, [[1.0], [0.36]], atol=1e-15)  # sums of squares of 0.8, 0.6
    assert observed_mass(np.ones((2, 1)), None) is None
    courses = np.array([[1.0], [0.0], [0.0], [1.5]])  # animal 0: (1, 0); animal 1: (0, 1.5)
    w, v, a, folded = fold_animals(np.ones(1), courses, 2)
    np.testing.assert_allclose([w[0], *v[:, 0], *a[:, 0]], [1.5, 0, 1, 0, 1], atol=1e-12)
    w, v, a, folded = fold_animals(np.ones(1), courses, 2, mass)
    # the time of animal 0; each animal's loading its course's projection on it: 1 and 0
    np.testing.assert_allclose([w[0], *v[:, 0], *a[:, 0]], [1.0, 1, 0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(w[0] * folded[:, :, 0], [[1, 0], [0, 1.5]], atol=1e-12)  # the fit kept
    # a mass of 1 everywhere is the unweighted summary
    np.testing.assert_allclose(fold_animals(np.ones(1), courses, 2, np.ones((2, 1)))[1], [[0], [1]], atol=1e-12)

def test_unfold_animals_puts_each_animals_bins_one_after_another():
    X = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)  # (P, T, A)
    unfolded, groups = unfold_animals(X)
    assert unfolded.shape == (2, 12, 1) and groups.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    assert all(unfolded[p, a * 3 + t, 0] == X[p, t, a] for p in range(2) for t in range(3) for a in range(4))


def test_per_animal_time_courses_give_a_jittered_motif_one_component_in_the_design_shapes(tmp_path):
    """With ``factorize.time_courses: per_animal`` the jittered motif is one component without
    any merging (merging off), each animal's course peaks at its own latency, and factors.h5
    keeps the design's (T, R) and (A, R) with the courses beside them."""
    base = {"affinity": {"bin_seconds": 2.0},
            "factorize": {"rank": 2, "restarts": 2, "time_courses": "per_animal", "merge_similarity": 2}}
    config = jittered_motif(tmp_path / "data", [0.0, 8.0, 16.0], config=base)
    assert cli("run", config, "-q", "--until", "communities").exit_code == 0
    workdir = config.parent / "run"
    fac, aff = read_h5(workdir / "factors.h5"), read_h5(workdir / "affinity.h5")
    P, T, A = np.asarray(aff["affinity"]).shape
    courses = np.asarray(fac["factors/time_by_animal"])
    assert courses.shape == (A, T, 2) and np.asarray(fac["factors/time"]).shape == (T, 2)
    assert np.asarray(fac["factors/animals"]).shape == (A, 2) and fac.attrs["time_courses"] == "per_animal"
    hits = motif_components(workdir)
    assert len(hits) == 1
    # each animal's course, folded over the 40 s pulse period (20 bins of 2 s), peaks 8 s (4 bins)
    # after the previous animal's
    period = 20
    usable = T // period * period
    folded = courses[:, :usable, hits[0]].reshape(A, -1, period).sum(axis=1)
    assert folded.argmax(axis=1).tolist() == [5, 9, 13]  # pulses at 10 s + 40 s k: bin 5 + 20 k
    # control: one shared course per component, merging off, splits the motif (as in the test above)
    result = cli("run", config, "-q", "--until", "communities", "--set", "factorize.time_courses=shared",
                 "--set", "factorize.rank=3")
    assert result.exit_code == 0 and len(motif_components(workdir)) > 1

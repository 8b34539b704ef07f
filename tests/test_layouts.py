"""The two layouts: aligned (one protocol clock) and concatenated (each animal its own
clock and length): the solver's time groups, the artifacts' contract, exports, recovery."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import yaml

from conftest import cli
from dynconn.methods import ntf
from dynconn.io.artifacts import read_h5
from dynconn.simulate import score_recovery, write_dataset


# ----------------------------------------------------------------------------- the solver
def planted(seed=0, P=240, R=3, lengths=(20, 35, 25), missing=0.3):
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(len(lengths)), lengths)
    U, V = rng.random((P, R)) ** 3, rng.random((groups.size, R)) ** 3
    X = np.einsum("pr,tr->pt", U, V)[:, :, None].astype(np.float32)
    mask = rng.random((P, len(lengths))) > missing
    return X, mask, groups, (None, [U, V, np.ones((1, R))])


def test_time_groups_fit_observed_entries_only_and_recover_the_factors():
    X, mask, groups, truth = planted()
    observed = mask[:, groups][:, :, None]
    junk = np.where(observed, X, 7.0).astype(np.float32)  # unobserved entries must not matter
    cp, info = ntf.ncp_hals(junk, 3, mask=mask, time_groups=groups, dtype="float64", random_state=1,
                            max_iter=300, tol=1e-9)
    assert ntf.factor_congruence(cp, truth)[0] > 0.98
    # the solver's loss formula vs the direct float64 residual: equal to the formula's resolution
    # (ntf.loss_resolution, ~1e-9 absolute near this e ~ 1e-6 fit)
    assert info.loss == pytest.approx(ntf.relative_error(junk, cp, mask, groups), rel=1e-6,
                                      abs=ntf.loss_resolution(info.loss, "float64"))
    assert info.loss < 1e-3
    # the same data with unobserved entries zeroed: ignoring them is not fitting zeros
    zeros = ntf.ncp_hals(np.where(observed, X, 0).astype(np.float32), 3, dtype="float64", random_state=1,
                         max_iter=300, tol=1e-9)[0]
    assert ntf.relative_error(X, zeros, mask, groups) > 10 * info.loss


def test_time_groups_with_one_shared_mask_equal_the_plain_masked_fit():
    X, mask, groups, _ = planted(seed=2)
    shared = np.repeat(mask[:, :1], 3, axis=1)
    a = ntf.ncp_hals(X, 3, mask=shared, time_groups=groups, dtype="float64", random_state=3, max_iter=25, tol=0)
    b = ntf.ncp_hals(X, 3, mask=mask[:, :1], dtype="float64", random_state=3, max_iter=25, tol=0)
    # unit columns after 25 float64 iterations by two paths: ~25 x 1e-15 apart
    for fa, fb in zip(a[0].factors, b[0].factors):
        np.testing.assert_allclose(fa, fb, rtol=0, atol=1e-12)
    # the per-iteration loss is a difference of squared norms: at e ~ 1e-3 its float64 floor is
    # ~eps / e^2 ~ 1e-10 relative, and the two paths round differently (per-row vs shared Grams)
    np.testing.assert_allclose(a[1].loss_history, b[1].loss_history, rtol=1e-8)


def test_time_groups_pass_through_restarts_and_rank_selection():
    X, mask, groups, _ = planted(seed=4)
    sel = ntf.select_rank(X, [2, 3, 4], mask=mask, time_groups=groups, n_restarts=2, random_state=0)
    assert sel.rank == 3
    with pytest.raises(ValueError, match="time_groups needs X of shape"):
        ntf.ncp_hals(np.ones((4, 6, 2)), 1, mask=np.ones((4, 2), bool), time_groups=np.zeros(6, int))


# ----------------------------------------------------------------------------- the pipeline
@pytest.fixture(scope="module")
def concatenated_run(tmp_path_factory):
    """The small preset with worm2 cut to 2/3 of its length, run concatenated (rank 3)."""
    folder = tmp_path_factory.mktemp("concat") / "data"
    config = write_dataset(folder, "small", 1)
    lines = (folder / "worm2.csv").read_text().splitlines()
    (folder / "worm2.csv").write_text("\n".join(lines[: 1 + 2 * (len(lines) - 1) // 3]) + "\n")
    cfg = yaml.safe_load(config.read_text())
    cfg["data"]["layout"] = "concatenated"
    config.write_text(yaml.safe_dump(cfg))
    result = cli("run", config, "-q")
    assert result.exit_code == 0, result.output
    return folder


def test_aligned_refuses_recordings_of_different_lengths(concatenated_run, tmp_path):
    result = cli("run", concatenated_run / "config.yaml", "-q", "--set", "data.layout=aligned",
                 "--workdir", tmp_path / "w")
    assert result.exit_code == 1 and "use data.layout: concatenated" in result.stderr


def test_concatenated_artifacts_follow_the_contract(concatenated_run):
    run = concatenated_run / "run"
    ing = read_h5(run / "ingest.h5")
    rate = float(ing.attrs["sampling_rate"])
    A, N, F = ing["traces"].shape
    n_frames = ing["n_frames"]
    assert ing.attrs["layout"] == "concatenated" and n_frames.dtype == np.int64
    assert n_frames[1] < n_frames[0] == n_frames[2] == F
    assert np.isnan(ing["traces"][1, :, n_frames[1]:]).all()
    np.testing.assert_allclose(ing["time"], np.arange(F) / rate)

    aff = read_h5(run / "affinity.h5")
    fpb = int(aff.attrs["frames_per_bin"])
    bins = n_frames // fpb
    P = N * (N - 1) // 2
    assert aff.attrs["layout"] == "concatenated"
    assert aff["affinity"].shape == (P, bins.sum(), 1) and aff["affinity"].dtype == np.float32
    assert aff["mask"].shape == (P, A)
    ta = aff["time_animal"]
    assert ta.dtype == np.int32 and np.bincount(ta).tolist() == bins.tolist()
    for a in range(A):  # each animal's bins on its own clock, from its own start
        t = aff["time"][ta == a]
        np.testing.assert_allclose(t, ((np.arange(bins[a]) * fpb) + (fpb - 1) / 2) / rate)
    unobserved = ~aff["mask"][:, ta]  # (P, T_total)
    assert (aff["affinity"][:, :, 0][unobserved] == 0).all()

    fac = read_h5(run / "factors.h5")
    R = fac["weights"].size
    assert fac["factors/animals"].shape == (1, R) and fac["factors/time"].shape == (bins.sum(), R)
    assert fac.attrs["layout"] == "concatenated"


def test_concatenated_exports_show_each_animal_on_its_own_clock(concatenated_run):
    run = concatenated_run / "run"
    aff, fac = read_h5(run / "affinity.h5"), read_h5(run / "factors.h5")
    animals = list(aff["animals"])
    rows = list(csv.reader((run / "exports" / "factors_time.csv").open()))
    R = fac["weights"].size
    assert rows[0] == ["time_s", "animal"] + [f"component_{r}" for r in range(R)]
    assert [r[1] for r in rows[1:]] == [animals[a] for a in aff["time_animal"]]
    # the CSV writes times with 6 significant digits ({:g}): <= 5e-6 relative
    np.testing.assert_allclose([float(r[0]) for r in rows[1:]], aff["time"], rtol=1e-5)
    table = list(csv.reader((run / "exports" / "factors_animal.csv").open()))
    means = np.array([[float(v) for v in r[1:]] for r in table[1:]])
    expected = np.stack([fac["factors/time"][aff["time_animal"] == a].mean(axis=0) for a in range(len(animals))])
    assert [r[0] for r in table[1:]] == animals
    np.testing.assert_allclose(means, expected, rtol=1e-5)  # 6 significant digits (.6g): <= 5e-6
    summary = json.loads((run / "exports" / "summary.json").read_text())
    comp = summary["components"][0]
    assert set(comp["active_intervals_by_animal"]) == set(animals)
    assert "report.html" in {p.name for p in run.iterdir()}


def test_concatenated_recovers_planted_groups(concatenated_run):
    truth = json.loads((concatenated_run / "truth.json").read_text())
    run = concatenated_run / "run"
    aff, fac, com = (read_h5(run / f) for f in ("affinity.h5", "factors.h5", "communities.h5"))
    score, details = score_recovery(truth, aff["time"], fac["factors/time"], com["membership"],
                                    list(aff["neurons"]))
    print("concatenated recovery", score)
    assert score >= 0.65, details  # measured 0.75 (seeded)

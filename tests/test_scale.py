"""Out-of-core tensor: the affinity tensor written by blocks of pairs and the factorization streaming
it from affinity.h5 give the same numbers as the in-memory computation (issue 15, part 1)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from conftest import cli, cli_subprocess, edit_config
from dynconn.io import artifacts
from dynconn.io.artifacts import RowBlocks, StreamedDataset, checksum, read_h5, verify_h5, write_h5
from dynconn.methods import ntf
from dynconn.simulate import write_dataset
from dynconn.stages import affinity as aff


def _planted(P=2500, T=24, A=3, R=3, missing=0.15, seed=0):
    """A non-negative rank-R tensor with pair blocks missing (0 there, as affinity.h5 stores)."""
    rng = np.random.default_rng(seed)
    U, V, W = rng.random((P, R)), rng.random((T, R)), rng.random((A, R))
    X = np.einsum("pr,tr,ar->pta", U, V, W).astype(np.float32)
    mask = rng.random((P, A)) > missing
    return X * mask[:, None, :], mask


def test_streamed_dataset_checksum_is_the_in_memory_one(tmp_path):
    X, _ = _planted()
    blocks = ((s, X[s:s + 700]) for s in range(0, X.shape[0], 700))
    write_h5(tmp_path / "s.h5", {"affinity": StreamedDataset(X.shape, np.float32, blocks, 700)},
             stage="t", params={})
    write_h5(tmp_path / "m.h5", {"affinity": X}, stage="t", params={})
    streamed, whole = read_h5(tmp_path / "s.h5"), read_h5(tmp_path / "m.h5")
    assert streamed.fingerprint == whole.fingerprint  # the same content, whichever way it was written
    assert checksum(streamed["affinity"]) == checksum(X)
    with h5py.File(tmp_path / "s.h5") as f:
        assert f["affinity"].chunks == (700, *X.shape[1:])  # chunked by blocks of pairs
    verify_h5(tmp_path / "s.h5")
    lazy = read_h5(tmp_path / "s.h5", lazy=("affinity",))
    assert isinstance(lazy["affinity"], RowBlocks) and lazy["affinity"].shape == X.shape
    np.testing.assert_array_equal(lazy["affinity"][1000:1300], X[1000:1300])
    with pytest.raises(TypeError, match="kept on disk"):
        np.asarray(lazy["affinity"])  # never loaded whole by accident


def test_streamed_write_refuses_gaps_and_keeps_nothing(tmp_path):
    X, _ = _planted(P=100)
    blocks = iter([(0, X[:40]), (50, X[50:])])  # rows 40:50 missing
    with pytest.raises(ValueError, match="does not continue"):
        write_h5(tmp_path / "s.h5", {"affinity": StreamedDataset(X.shape, np.float32, blocks, 40)},
                 stage="t", params={})
    assert list(tmp_path.iterdir()) == []  # no artifact, no temporary file


def test_damaged_streamed_tensor_fails_its_checksum_when_read_lazily(tmp_path):
    X, _ = _planted(P=300)
    write_h5(tmp_path / "s.h5", {"affinity": StreamedDataset(X.shape, np.float32, iter([(0, X)]), 100)},
             stage="t", params={})
    with h5py.File(tmp_path / "s.h5", "r+") as f:
        f["affinity"][5, 0, 0] += 1
    with pytest.raises(artifacts.ArtifactError, match="/affinity fails its checksum"):
        read_h5(tmp_path / "s.h5", lazy=("affinity",))


@pytest.mark.parametrize("groups", [False, True])
def test_out_of_core_fit_equals_the_in_memory_fit(tmp_path, groups):
    """Random init: the pass reads the same blocks of rows in the same order either way, so the
    factors agree bit for bit (aligned and concatenated layouts)."""
    X, mask = _planted()
    kw = {"mask": mask}
    if groups:  # concatenated layout: (P, T_total, 1) with each bin's animal
        X = np.ascontiguousarray(np.transpose(X, (0, 2, 1)).reshape(X.shape[0], -1, 1))
        kw["time_groups"] = np.repeat(np.arange(mask.shape[1]), X.shape[1] // mask.shape[1])
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("affinity", data=X, chunks=(1024, *X.shape[1:]))
    disk = RowBlocks(tmp_path / "x.h5", "affinity")
    (w1, f1), info1 = ntf.ncp_hals(X, 3, random_state=1, max_iter=15, **kw)
    (w2, f2), info2 = ntf.ncp_hals(disk, 3, random_state=1, max_iter=15, **kw)
    np.testing.assert_array_equal(w1, w2)
    for a, b in zip(f1, f2):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(info1.loss_history, info2.loss_history)


def test_out_of_core_nndsvd_init_agrees_to_float32_rounding(tmp_path):
    """NNDSVD's randomized SVD sums its products block by block out of core (one GEMM over all
    rows in memory): the factors then agree to float32 rounding of those products, amplified a
    little by 20 iterations -- 1e-5 on unit-norm columns is ~100 float32 ulps."""
    X, mask = _planted()
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("affinity", data=X)
    disk = RowBlocks(tmp_path / "x.h5", "affinity")
    (_, f1), _ = ntf.ncp_hals(X, 3, mask=mask, init="nndsvd", random_state=1, max_iter=20)
    (_, f2), _ = ntf.ncp_hals(disk, 3, mask=mask, init="nndsvd", random_state=1, max_iter=20)
    for a, b in zip(f1, f2):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_out_of_core_tensor_must_hold_zeros_where_unobserved(tmp_path):
    X, mask = _planted(P=200)
    X[~mask[:, 0], :, 0] = 1.0
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("affinity", data=X)
    with pytest.raises(ValueError, match="hold 0 at its unobserved entries"):
        ntf.ncp_hals(RowBlocks(tmp_path / "x.h5", "affinity"), 2, mask=mask, max_iter=1)


def test_pair_blocks_cover_every_pair_once():
    n = 57
    blocks = aff.pair_blocks(n, row_bytes=4 * 10, target=4000)
    assert blocks[0][:3:2] == (0, 0) and blocks[-1][1] == n - 1 and blocks[-1][3] == n * (n - 1) // 2
    for (_, i1, _, p1), (j0, _, q0, _) in zip(blocks, blocks[1:]):
        assert (i1, p1) == (j0, q0)  # consecutive, no gap, no overlap
    pairs = aff.pair_index(n)
    for i0, i1, p0, p1 in blocks:
        assert set(pairs[p0:p1, 0]) == set(range(i0, i1))


@pytest.mark.parametrize("method", ["differential", "window-corr"])
def test_block_computation_equals_one_animal_at_a_time(method):
    """The blocks of pairs give each animal's compute_affinity (full Gram per bin), value for value:
    the same dot products of the same rows (K = frames per bin, summed in frame order)."""
    rng = np.random.default_rng(3)
    A, N, F = 2, 30, 400
    traces = rng.random((A, N, F)).cumsum(axis=2)
    present = rng.random((N, A)) > 0.2
    for a in range(A):
        traces[a, ~present[:, a]] = np.nan
    plan = aff.plan_affinity(traces, present, sampling_rate=2.0, method=method, block_bytes=4 * 120 * A * 40)
    assert len(plan.block_list) > 3  # several blocks, one pair range each
    tensor = aff.stack_affinity(traces, present, sampling_rate=2.0, neurons=range(N), animals=range(A),
                                method=method)
    for a in range(A):
        rows = np.flatnonzero(present[:, a])
        local = np.searchsorted(rows, tensor.pairs[tensor.mask[:, a]]).astype(np.int32)
        alone = aff.compute_affinity(traces[a, rows], sampling_rate=2.0, method=method, pairs=local)
        np.testing.assert_allclose(tensor.affinity[tensor.mask[:, a], :, a], alone, rtol=2e-7, atol=0)
        assert not tensor.affinity[~tensor.mask[:, a], :, a].any()  # 0 where not recorded together
    # (rtol: one float32 rounding step of a float64 product; equal in practice)


def test_pipeline_with_a_tiny_memory_budget_gives_the_same_artifacts(tmp_path, monkeypatch):
    """`compute.memory_budget` far below the tensor: factorize streams it from affinity.h5, and
    both artifacts are the same as with the tensor in memory."""
    config = write_dataset(tmp_path / "data", "tiny", 0)
    edit_config(config.parent, lambda c: c.update(factorize={"rank": 3, "restarts": 2, "max_iter": 60}))
    assert cli("run", config, "--until", "factorize", "-q", "--set", "compute.memory_budget=10GB").exit_code == 0
    run = config.parent / "run"
    in_memory = {n: read_h5(run / n).fingerprint for n in ("affinity.h5", "factors.h5")}
    seen = []
    real = ntf._Data.__init__

    def spy(self, X, *a, **k):
        seen.append(type(X).__name__)
        real(self, X, *a, **k)

    monkeypatch.setattr(ntf._Data, "__init__", spy)
    assert cli("run", config, "--until", "factorize", "-q", "--force", "--set", "compute.memory_budget=1KB").exit_code == 0
    # the solver got the handle on the file, not an array, then (per-animal time courses, the
    # default) that handle unfolded block by block
    assert seen == ["RowBlocks", "UnfoldedRows"]
    assert {n: read_h5(run / n).fingerprint for n in ("affinity.h5", "factors.h5")} == in_memory
    # and the standalone command, over its budget, too
    out = tmp_path / "f.h5"
    from dynconn.runner import resources

    monkeypatch.setattr(resources, "memory_budget", lambda config: 1024)  # (its default: half the free memory)
    assert cli("factorize", "--in", run / "affinity.h5", "--out", out, "--rank", "3", "--restarts", "2",
               "--max-iter", "60", "-q").exit_code == 0
    assert seen[-2:] == ["RowBlocks", "UnfoldedRows"]
    np.testing.assert_array_equal(read_h5(out)["factors/pairs"], read_h5(run / "factors.h5")["factors/pairs"])


@pytest.mark.parametrize("missing", ["exact", "em"])
def test_pass_on_two_dask_workers_equals_the_local_fit(missing):
    """The blocks of pairs (X rows, U rows) on a 2-worker LocalCluster: the same fit as the local one.
    The Z parts are summed in block order as locally; the pair Grams and U's norms are summed block by
    block (one product over all pairs locally), a float32 rounding difference per iteration, which 30
    iterations carry to ~1e-6 on unit-norm columns (measured: ≤ 1e-5); 5e-5 ≈ 400 float32 ulps of 1."""
    distributed = pytest.importorskip("distributed")
    X, mask = _planted(P=2100)
    local = ntf.ncp_hals(X, 3, mask=mask, random_state=1, max_iter=30, missing=missing)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        remote = ntf.ncp_hals(X, 3, mask=mask, random_state=1, max_iter=30, missing=missing, client=client)
        assert len(client.who_has()) >= 3  # the three blocks of pairs (and results being released) are on workers
    for a, b in zip(local[0][1], remote[0][1]):
        np.testing.assert_allclose(a, b, atol=5e-5)
    np.testing.assert_allclose(local[1].loss_history, remote[1].loss_history, rtol=1e-4)


def test_report_statistics_read_by_blocks_equal_the_in_memory_ones(tmp_path):
    """The report's energy shares and community replications from a RowBlocks handle on
    affinity.h5 (a tensor over the budget) are the in-memory ones bit for bit: the same
    blocks of pairs, summed in the same order."""
    from dynconn.methods import null

    X, mask = _planted(P=20_000, T=12, A=3, R=2)  # over null.PROJECT_BLOCK pairs: several blocks
    path = tmp_path / "a.h5"
    write_h5(path, {"affinity": X, "mask": mask}, stage="affinity", params={})
    handle = read_h5(path, lazy=("affinity",))["affinity"]
    assert isinstance(handle, RowBlocks)
    weights = np.array([3.0, 1.5])
    assert np.array_equal(null.component_shares(weights, handle, mask), null.component_shares(weights, X, mask))
    n = int(round((1 + np.sqrt(1 + 8 * X.shape[0])) / 2))  # 200 neurons: 19,900 pairs
    pairs = np.column_stack(np.triu_indices(n, 1))[: X.shape[0]]
    f_time = np.random.default_rng(1).random((X.shape[1], 2))
    membership = np.full((2, n), -1)
    membership[0, :10], membership[1, 20:35] = 0, 1
    from_file = null.component_replications(handle, mask, f_time, pairs, membership)
    assert from_file == null.component_replications(X, mask, f_time, pairs, membership)
    assert set(from_file[0]) == {0} and set(from_file[1]) == {1}  # a value for each community


def test_whole_run_over_a_tiny_memory_budget(tmp_path, monkeypatch):
    """`compute.memory_budget` far below the tensor, ingest to report: the communities stage does
    not read the tensor at all and gives the in-memory communities; the report's surrogates,
    which would each hold a tensor of that size, are refused in one line naming the keys, with
    every artifact kept."""
    from dynconn.stages import communities

    config = write_dataset(tmp_path / "data", "tiny", 0)
    edit_config(config.parent, lambda c: c.update(factorize={"rank": 3, "restarts": 1, "max_iter": 40},
                                                  report={"surrogates": 0}))
    assert cli("run", config, "-q", "--set", "compute.memory_budget=10GB").exit_code == 0
    run = config.parent / "run"
    names = ("affinity.h5", "factors.h5", "communities.h5")
    in_memory = {n: read_h5(run / n).fingerprint for n in names}
    table = (run / "exports" / "communities.csv").read_bytes()
    seen = []
    real = communities.run

    def spy(config, workdir, console, upstream, **kw):
        seen.append(sorted(upstream["affinity"].data))
        return real(config, workdir, console, upstream, **kw)

    monkeypatch.setattr(communities, "run", spy)
    assert cli("run", config, "-q", "--force", "--set", "compute.memory_budget=1KB").exit_code == 0
    assert seen and "affinity" not in seen[0] and "mask" in seen[0]
    assert {n: read_h5(run / n).fingerprint for n in names} == in_memory
    assert (run / "exports" / "communities.csv").read_bytes() == table  # the report's table too
    before = {n: (run / n).stat().st_mtime_ns for n in names}
    result = cli_subprocess("report", config, "-q", "--force", "--set", "compute.memory_budget=1KB",
                            "--set", "report.surrogates=5")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "report.surrogates" in lines[0] and "compute.memory_budget" in lines[0]
    assert {n: (run / n).stat().st_mtime_ns for n in names} == before


def test_run_refuses_surrogates_over_the_budget_right_after_the_affinity_stage(tmp_path):
    """`dynconn run` with the report's surrogates on and the tensor over compute.memory_budget
    stops as soon as the tensor exists (one line naming both keys, exit 1), before factorize and
    communities spend their time; the artifacts made so far are kept. With a distributed engine
    the surrogates run on its workers, and the check does not apply."""
    from dynconn.config import load as load_config
    from dynconn.runner.pipeline import check_ahead

    config = write_dataset(tmp_path / "data", "tiny", 0)
    edit_config(config.parent, lambda c: c.update(factorize={"rank": 3, "restarts": 1, "max_iter": 40},
                                                  report={"surrogates": 5}))
    result = cli_subprocess("run", config, "-q", "--set", "compute.memory_budget=1KB")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "report.surrogates" in lines[0] and "compute.memory_budget" in lines[0], lines
    run = config.parent / "run"
    assert (run / "affinity.h5").is_file() and not (run / "factors.h5").exists()
    cfg = load_config(config, overrides=["compute.memory_budget=1KB", "compute.scheduler=dask"])
    assert cfg["compute"]["scheduler"] == "dask"
    check_ahead("affinity", ["factorize", "report"], cfg, run)  # no error: the workers hold the tensors
    with pytest.raises(Exception, match="report.surrogates"):
        check_ahead("affinity", ["report"], load_config(config, overrides=["compute.memory_budget=1KB"]), run)
    check_ahead("ingest", ["report"], load_config(config, overrides=["compute.memory_budget=1KB"]), run)

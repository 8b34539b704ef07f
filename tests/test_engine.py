"""The engine (dynconn/runner/engine.py): the compute keys, where tasks run, and that a run on a
2-worker Dask LocalCluster gives the local run's results."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import cli, edit_config
from dynconn.config import validate
from dynconn.errors import ConfigError
from dynconn.io.artifacts import read_h5
from dynconn.methods import ntf
from dynconn.runner import engine as engines
from dynconn.runner.engine import Engine
from dynconn.simulate import write_dataset


def _config(tmp_path: Path, compute: dict):
    return validate({"data": {"sampling_rate": 2.0, "animals": [{"name": "w", "path": "w.csv"}]},
                     "compute": compute}, base=tmp_path)


# ----------------------------------------------------------------------------- the keys
def test_default_is_the_local_scheduler(tmp_path):
    c = _config(tmp_path, {})["compute"]
    assert c["scheduler"] == "local" and c["address"] is None and c["cluster"] is None
    assert not Engine.from_config(_config(tmp_path, {})).distributed


def test_dask_without_address_starts_a_local_cluster(tmp_path):
    c = _config(tmp_path, {"scheduler": "dask"})["compute"]
    assert c["cluster"] == "local" and c["workers"] == 2


def test_unknown_scheduler_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"^compute.scheduler: expected one of local, dask"):
        _config(tmp_path, {"scheduler": "ray"})


def test_unknown_cluster_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"^compute.cluster: expected one of local, slurm"):
        _config(tmp_path, {"scheduler": "dask", "cluster": "pbs"})


def test_address_and_cluster_together_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"^compute.cluster: not with compute.address"):
        _config(tmp_path, {"scheduler": "dask", "address": "tcp://host:8786", "cluster": "local"})


def test_workers_with_an_address_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"^compute.workers: not with compute.address"):
        _config(tmp_path, {"scheduler": "dask", "address": "tcp://host:8786", "workers": 4})


def test_an_address_must_be_a_scheduler_address(tmp_path):
    with pytest.raises(ConfigError, match=r"^compute.address: expected a scheduler address like tcp://"):
        _config(tmp_path, {"scheduler": "dask", "address": "host:8786"})


def test_dask_keys_need_the_dask_scheduler(tmp_path):
    with pytest.raises(ConfigError, match=r"^compute.workers: only used with compute.scheduler: dask"):
        _config(tmp_path, {"workers": 4})


def test_slurm_keys_need_the_slurm_cluster(tmp_path):
    with pytest.raises(ConfigError, match=r"^compute.slurm: only used with compute.cluster: slurm"):
        _config(tmp_path, {"scheduler": "dask", "cluster": "local", "slurm": {"queue": "gpu"}})


def test_unknown_slurm_key_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"^compute.slurm.partition: unknown key"):
        _config(tmp_path, {"scheduler": "dask", "cluster": "slurm", "slurm": {"partition": "gpu"}})


@pytest.mark.parametrize("walltime", [90, "1h", "01:61:00"])
def test_walltime_must_be_a_quoted_time_limit(tmp_path, walltime):
    with pytest.raises(ConfigError, match=r"^compute.slurm.walltime: expected a time limit"):
        _config(tmp_path, {"scheduler": "dask", "cluster": "slurm", "slurm": {"walltime": walltime}})


def test_dask_not_installed_is_one_line_before_any_stage(tmp_path, monkeypatch):
    config = write_dataset(tmp_path / "data", "tiny", 0)
    monkeypatch.setattr(engines, "_installed", lambda module: False)
    result = cli("run", config, "--set", "compute.scheduler=dask")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "compute.scheduler: dask" in lines[0] and "pip install 'dynconn[dask]'" in lines[0]
    assert not (config.parent / "run").exists()  # nothing ran


def test_slurm_without_dask_jobqueue_names_the_fix(tmp_path, monkeypatch):
    compute = _config(tmp_path, {"scheduler": "dask", "cluster": "slurm"})["compute"]
    monkeypatch.setattr(engines, "_installed", lambda module: module != "dask_jobqueue")
    with pytest.raises(ConfigError, match=r"^compute.cluster: slurm needs dask-jobqueue.*dynconn\[slurm\]"):
        engines.check(compute)


def test_slurm_config_makes_the_job_script(tmp_path):
    """The SLURMCluster's worker job script from compute.slurm (no SLURM needed: nothing is submitted)."""
    pytest.importorskip("dask_jobqueue")
    compute = _config(tmp_path, {"scheduler": "dask", "cluster": "slurm", "workers": 8,
                                 "slurm": {"queue": "short", "account": "lab42", "cores": 4, "memory": "16GB",
                                           "walltime": "02:30:00"}})["compute"]
    assert engines.slurm_options(compute) == {"cores": 4, "processes": 1, "memory": f"{16 << 30}B",
                                              "walltime": "02:30:00", "queue": "short", "account": "lab42"}
    script = engines.slurm_job_script(compute)
    for line in ("#SBATCH -p short", "#SBATCH -A lab42", "#SBATCH -n 1", "#SBATCH --cpus-per-task=4",
                 "#SBATCH --mem=16G", "#SBATCH -t 02:30:00"):
        assert line in script


# ----------------------------------------------------------------------------- map
def _square(x, offset=0):
    return x * x + offset


def _slow_first(x):
    time.sleep(0.3 if x == 0 else 0.0)  # the first task finishes last
    return x


def test_local_engine_maps_in_order_here():
    seen = []
    with Engine("local") as eng:
        assert eng.client is None
        out = eng.map(_square, [3, 1, 2], shared={"offset": 10}, on_result=lambda i, r: seen.append((i, r)))
    assert out == [19, 11, 14] and seen == [(0, 19), (1, 11), (2, 14)]


def test_dask_engine_returns_results_in_order_and_raises_task_errors():
    pytest.importorskip("distributed")
    seen = []
    with Engine("dask", workers=2, processes=False) as eng:
        assert eng.map(_slow_first, range(4), on_result=lambda i, r: seen.append(i)) == [0, 1, 2, 3]
        assert sorted(seen) == [0, 1, 2, 3]  # each result announced once, as it arrived
        with pytest.raises(TypeError):  # raised here as the task raised it (int + None)
            eng.map(_square, [1, 2], shared={"offset": None})
    assert eng._client is None  # closed on exit


def test_an_unreachable_scheduler_is_one_line_naming_the_address(monkeypatch):
    pytest.importorskip("distributed")
    from dynconn.errors import DynconnError

    monkeypatch.setattr(engines, "CONNECT_TIMEOUT", "1s")
    with Engine("dask", address="tcp://127.0.0.1:1") as eng:  # (port 1: nothing listens there)
        with pytest.raises(DynconnError, match=r"^compute.address: could not connect to the Dask scheduler at "
                                               r"tcp://127.0.0.1:1 .*check that the scheduler runs"):
            eng.map(_square, [1])


def _dies_once(x, marker):
    if x == 1 and not os.path.exists(marker):
        Path(marker).touch()
        os._exit(1)  # the worker process dies in the middle of the task
    return 10 * x


def test_a_task_whose_worker_dies_runs_again():
    pytest.importorskip("distributed")
    import tempfile

    marker = os.path.join(tempfile.mkdtemp(), "died")
    with Engine("dask", workers=2) as eng:
        assert eng.map(_dies_once, [0, 1, 2], shared={"marker": marker}) == [0, 10, 20]
    assert os.path.exists(marker)


# ----------------------------------------------------------------------------- tasks of the fit
def _tensor():
    rng = np.random.default_rng(0)
    P, T, A, R = 200, 30, 3, 3
    X = np.einsum("pr,tr,ar->pta", rng.random((P, R)), rng.random((T, R)), rng.random((A, R))).astype(np.float32)
    X += np.float32(0.05) * rng.random(X.shape, dtype=np.float32)
    mask = rng.random((P, A)) > 0.1
    X *= mask[:, None, :]
    return X, mask


def _same_cp(a, b):
    return all(np.array_equal(x, y) for x, y in zip([a[0], *a[1]], [b[0], *b[1]]))


class _Stop(Exception):
    pass


def test_restarts_as_tasks_are_the_loop_and_resume_from_a_checkpoint():
    """mapper= runs the same seeds (the local engine's map: bitwise the loop), and a checkpoint taken
    between tasks resumes to the same result."""
    X, mask = _tensor()
    kw = dict(mask=mask, n_restarts=4, random_state=3, max_iter=40, init="nndsvd")
    loop = ntf.ncp_restarts(X, 3, **kw)
    tasks = ntf.ncp_restarts(X, 3, mapper=Engine("local").map, **kw)
    assert _same_cp(loop.cp, tasks.cp) and np.array_equal(loop.losses, tasks.losses)
    states = []

    def stop_after_two(state):
        states.append(state)
        if state["restart"] == 2:
            raise _Stop

    with pytest.raises(_Stop):
        ntf.ncp_restarts(X, 3, mapper=Engine("local").map, checkpoint_every=1, on_checkpoint=stop_after_two, **kw)
    resumed = ntf.ncp_restarts(X, 3, mapper=Engine("local").map, resume=states[-1], **kw)
    assert _same_cp(loop.cp, resumed.cp) and np.array_equal(loop.losses, resumed.losses)


def test_rank_sweep_as_tasks_is_the_loop_and_resumes():
    X, mask = _tensor()
    kw = dict(mask=mask, n_restarts=2, random_state=5, max_iter=30)
    loop = ntf.select_rank(X, [2, 3, 4], **kw)
    states = []

    def stop_in_rank_3(state):
        states.append(state)
        if state["rank_index"] == 1 and state["current"]["restart"] == 1:
            raise _Stop

    with pytest.raises(_Stop):
        ntf.select_rank(X, [2, 3, 4], mapper=Engine("local").map, checkpoint_every=1, on_checkpoint=stop_in_rank_3,
                        **kw)
    resumed = ntf.select_rank(X, [2, 3, 4], mapper=Engine("local").map, resume=states[-1], **kw)
    for sel in (resumed, ntf.select_rank(X, [2, 3, 4], mapper=Engine("local").map, **kw)):
        assert sel.rank == loop.rank and np.array_equal(sel.errors, loop.errors)
        assert all(_same_cp(a, b) for a, b in zip(sel.best_fits, loop.best_fits))


# ----------------------------------------------------------------------------- the pipeline
def test_two_dask_workers_give_the_local_run(tmp_path):
    """`compute.scheduler: dask, cluster: local, workers: 2` on the tiny preset: the same rank and
    communities (member for member) as the local run, the factors equal to float32 rounding, the surrogates' null values
    too. Not bitwise: the workers' BLAS runs one thread, this process's all cores, and OpenBLAS
    sums a product's terms in another order then (one thread against two, here: 2e-8 on the
    errors, 3e-7 on unit-norm factor columns, 4e-6 relative on the weights, through 200 HALS
    iterations); 1e-5 on the columns is ~100 float32 ulps of 1, 1e-4 relative on the weights."""
    pytest.importorskip("distributed")
    config = write_dataset(tmp_path / "data", "tiny", 0)
    edit_config(config.parent, lambda c: (c["factorize"].update(ranks=[2, 4], restarts=2),
                                          c.setdefault("report", {}).update(surrogates=2, workers=1)))
    runs = {}
    for name, extra in (("local", []), ("dask", ["--set", "compute.scheduler=dask", "--set", "compute.workers=2"])):
        result = cli("run", config, "--workdir", tmp_path / name, "-q", *extra)
        assert result.exit_code == 0, result.output
        runs[name] = tmp_path / name
    local, dask = ({n: read_h5(run / f"{n}.h5") for n in ("affinity", "factors", "communities")}
                   for run in runs.values())
    assert local["affinity"].fingerprint == dask["affinity"].fingerprint
    assert int(local["factors"].attrs["rank"]) == int(dask["factors"].attrs["rank"])
    for key in ("factors/pairs", "factors/time", "factors/animals"):
        np.testing.assert_allclose(np.asarray(dask["factors"][key]), np.asarray(local["factors"][key]), atol=1e-5)
    np.testing.assert_allclose(np.asarray(dask["factors"]["weights"]), np.asarray(local["factors"]["weights"]),
                               rtol=1e-4)
    # the same communities, member for member; not the same labels or /levels: where two block
    # models' description lengths nearly tie, float32 rounding picks one (tiny preset: the dask
    # run's block model splits the background block in two, which the contrast test then
    # dissolves; factors 6e-8 apart) and the surviving community keeps its block's label
    def communities(run):
        membership = np.asarray(run["communities"]["membership"])
        return [sorted(tuple(np.flatnonzero(row == c)) for c in np.unique(row[row >= 0])) for row in membership]

    assert communities(dask) == communities(local)
    np.testing.assert_array_equal(np.asarray(dask["communities"]["n_communities"]),
                                  np.asarray(local["communities"]["n_communities"]))
    # each surrogate, cached by the report (computed here serially, there as a task each)
    caches = [sorted((run / "checkpoints" / "surrogates").rglob("*.npz")) for run in runs.values()]
    assert len(caches[0]) == len(caches[1]) == 2
    for a, b in zip(*caches):
        with np.load(a) as za, np.load(b) as zb:
            # the same partitions (a community found in one and not the other would be 0 vs > 0);
            # replications are means of the tensor weighted by float32 time factors that agree to ~1e-5
            np.testing.assert_array_equal(za["replication"] > 0, zb["replication"] > 0)
            np.testing.assert_allclose(za["replication"], zb["replication"], rtol=1e-4)


def _describe(item, options, table):
    return f"{item}:{options['method']}:{table[item]}"


def test_shared_mappings_and_lists_reach_every_task_whole():
    """A dict or list in `shared` is one value (scatter would otherwise spread it over keys named
    after its entries, which a later map's entries of the same names could replace)."""
    pytest.importorskip("distributed")
    with Engine("dask", workers=2, processes=False) as eng:
        assert eng.map(_describe, [0, 1], shared={"options": {"method": "hals"}, "table": ["a", "b"]}) == \
            ["0:hals:a", "1:hals:b"]
        assert eng.map(_describe, [1], shared={"options": {"method": "wsbm"}, "table": ["c", "d"]}) == ["1:wsbm:d"]


class _FakeEngine:
    distributed = True
    client = "the client"

    def map(self, fn, items, **kw):  # pragma: no cover - never called here
        raise AssertionError


def test_factorize_sends_fits_as_tasks_and_a_streamed_tensor_by_blocks():
    """A tensor in memory: restarts and sweep fits as tasks (each worker a copy); one over the memory
    budget (a row-block handle on affinity.h5): each fit's pass on the workers holding the blocks."""
    from dynconn.stages import factorize

    eng, p = _FakeEngine(), {"method": "hals", "backend": "numpy"}
    mapper, client = factorize.distribution(np.zeros((3, 2, 1), np.float32), p, eng)
    assert mapper.__func__ is _FakeEngine.map and client is None
    assert factorize.distribution(object(), p, eng) == (None, "the client")
    assert factorize.distribution(object(), {**p, "backend": "pytorch"}, eng) == (None, None)
    assert factorize.distribution(np.zeros(1), p, Engine("local")) == (None, None)
    assert factorize.distribution(np.zeros(1), p, None) == (None, None)


def _dies_once_big(x, data, marker):
    if x == 2 and not os.path.exists(marker):
        Path(marker).touch()
        os._exit(1)  # the worker dies in the middle of the map, with the scattered data it holds
    return float(data[x]) * 10 + float(data.sum())


@pytest.mark.parametrize("workers", [1, 2])
def test_scattered_data_lost_with_their_worker_are_sent_again(workers):
    """A shared value over SMALL_SHARED_BYTES is scattered; when the only worker holding it dies
    (one worker: always), the scheduler cancels the tasks needing it. The map scatters it again
    and runs the unfinished tasks again: the same results, each announced once. (With two workers
    the other one's copy usually survives: the same results either way.)"""
    pytest.importorskip("distributed")
    import tempfile

    data = np.arange(engines.SMALL_SHARED_BYTES // 8 + 1000, dtype=np.float64)  # > 1 MB
    assert not engines._small(data)
    marker = os.path.join(tempfile.mkdtemp(), "died")
    seen = []
    with Engine("dask", workers=workers) as eng:
        out = eng.map(_dies_once_big, range(5), shared={"data": data, "marker": marker},
                      on_result=lambda i, r: seen.append(i))
    assert os.path.exists(marker)
    assert out == [_dies_once_big(x, data, marker) for x in range(5)]
    assert sorted(seen) == [0, 1, 2, 3, 4]


def _always_dies(x, data):
    if x == 1:
        os._exit(1)
    return x


def test_scattered_data_lost_again_and_again_is_one_line(monkeypatch):
    pytest.importorskip("distributed")
    from dynconn.errors import DynconnError

    monkeypatch.setattr(engines, "SHARED_DATA_RETRIES", 1)
    data = np.zeros(engines.SMALL_SHARED_BYTES // 8 + 1000)
    with Engine("dask", workers=1) as eng:
        with pytest.raises(DynconnError, match=r"^a local Dask cluster of 1 worker process\(es\): the data shared "
                                               r"by the tasks \(data\) were lost 2 times with the workers"):
            eng.map(_always_dies, range(3), shared={"data": data})

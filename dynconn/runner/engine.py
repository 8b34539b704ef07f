"""Where a command's independent tasks run: in this process, or on a Dask cluster.

An :class:`Engine` is made from the ``compute`` section of the config (``compute.scheduler``;
docs/config.md, docs/scaling.md) and handed by the pipeline to the stages that declare
``ENGINE = True`` (as the ``engine`` keyword of their ``run``):

- ``scheduler: local`` -- every task runs here, one after another: the stages run exactly as
  without an engine (they do not even go through :meth:`Engine.map`; ``client`` is None).
- ``scheduler: dask`` -- a ``distributed.Client``: to a running scheduler (``compute.address``),
  or to a cluster this engine starts and stops: a ``LocalCluster`` of ``compute.workers``
  single-threaded worker processes (``cluster: local``) or dask-jobqueue's ``SLURMCluster``
  scaled to ``compute.workers`` jobs (``cluster: slurm``, ``compute.slurm``). The cluster is
  started on first use (a command whose stages are all up to date starts none) and closed when
  the engine's ``with`` block ends, also on an error or a stop signal.

:meth:`Engine.map` runs independent tasks (restarts of a factorization, the rank sweep's fits,
one component's community fit, one surrogate) and returns their results in order. Each task
draws from its own seed, so the results do not depend on where or in which order the tasks
ran. When a worker dies, the scheduler runs its tasks again on another worker (Dask's
``distributed.scheduler.allowed-failures``, 3 by default); shared data over 1 MB, scattered to
the workers, that no surviving worker holds are scattered again and the tasks that needed them
resubmitted (:data:`SHARED_DATA_RETRIES` times at most); when the whole command is stopped,
the stages' checkpoints hold every task that had finished, and a rerun resumes from them.

The stages only see ``map``, ``client`` and ``distributed``: stage modules never import the
runner (docs/architecture.md).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from concurrent.futures import CancelledError
from typing import Any, Callable, Iterable

from ..errors import ConfigError, DynconnError

#: Longest wait for a result before :meth:`Engine.map` calls its ``tick`` (seconds): how soon a
#: stop signal is answered (a stage's tick saves its checkpoint and raises the stop).
TICK_SECONDS = 0.5

#: How long connecting to ``compute.address`` may take before the command gives up.
CONNECT_TIMEOUT = "30s"

DASK_HINT = "pip install 'dynconn[dask]'"
SLURM_HINT = "pip install 'dynconn[slurm]'"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check(compute: dict) -> None:
    """What the ``compute`` section asks must be possible here (checked before any stage runs):
    the Dask packages are installed. One line naming the key and the fix otherwise."""
    if compute.get("scheduler", "local") != "dask":
        return
    if not _installed("distributed"):
        raise ConfigError(f"compute.scheduler: dask needs dask.distributed, which is not installed here; "
                          f"{DASK_HINT} (or use scheduler: local)")
    if compute.get("address") is None and compute.get("cluster") == "slurm" and not _installed("dask_jobqueue"):
        raise ConfigError(f"compute.cluster: slurm needs dask-jobqueue, which is not installed here; "
                          f"{SLURM_HINT} (or pip install dask-jobqueue)")


def slurm_options(compute: dict) -> dict:
    """Keyword arguments of ``dask_jobqueue.SLURMCluster`` from the ``compute`` section: one
    worker process per job with ``slurm.cores`` threads and ``slurm.memory`` bytes."""
    s = compute["slurm"]
    options = {"cores": int(s["cores"]), "processes": 1, "memory": f"{int(s['memory'])}B",
               "walltime": s["walltime"]}
    if s.get("queue"):
        options["queue"] = s["queue"]
    if s.get("account"):
        options["account"] = s["account"]
    return options


def slurm_job_script(compute: dict) -> str:
    """The batch script the SLURMCluster would submit for each worker (for checks and docs;
    submits nothing)."""
    from dask_jobqueue import SLURMCluster

    cluster = SLURMCluster(**slurm_options(compute), scheduler_options={"dashboard_address": None})
    try:
        return cluster.job_script()
    finally:
        cluster.close()


# distributed's nanny writes these into this process's os.environ when it spawns worker processes
# (its "pre-spawn-environ": one BLAS thread per worker) and leaves them there: every later
# subprocess of this process would then run single-threaded BLAS, and sum in another order.
DASK_SPAWN_ENVIRON = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MALLOC_TRIM_THRESHOLD_")


def _restore_environ(saved: dict) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


class Engine:
    """Runs independent tasks here (``scheduler="local"``) or on a Dask cluster (``"dask"``).

    ``Engine.from_config(config)`` makes one from the ``compute`` section; use it as a context
    manager (the cluster it started is closed on exit). ``processes=False`` (tests) runs a local
    cluster's workers as threads of this process.
    """

    def __init__(self, scheduler: str = "local", *, address: str | None = None, cluster: str | None = None,
                 workers: int = 2, slurm: dict | None = None, console=None, processes: bool = True):
        if scheduler not in ("local", "dask"):
            raise ValueError(f"scheduler must be local or dask, got {scheduler!r}")
        self.scheduler = scheduler
        self.address = address
        self.cluster_kind = None if scheduler == "local" else (None if address else (cluster or "local"))
        self.workers = int(workers)
        self.slurm = slurm
        self.console = console
        self.processes = processes
        self._client = None
        self._cluster = None

    @classmethod
    def from_config(cls, config, console=None, **kwargs) -> "Engine":
        c = config["compute"] if "compute" in getattr(config, "values", config) else {}
        if c.get("scheduler", "local") == "local":
            return cls("local", console=console)
        return cls("dask", address=c.get("address"), cluster=c.get("cluster"), workers=c.get("workers", 2),
                   slurm=c.get("slurm"), console=console, **kwargs)

    # ------------------------------------------------------------------ state
    @property
    def distributed(self) -> bool:
        """True when tasks run on Dask workers."""
        return self.scheduler == "dask"

    def describe(self) -> str:
        if not self.distributed:
            return "this process"
        if self.address:
            return f"the Dask scheduler at {self.address}"
        if self.cluster_kind == "slurm":
            return f"a SLURM cluster of {self.workers} worker job(s)"
        return f"a local Dask cluster of {self.workers} worker process(es)"

    @property
    def client(self):
        """The ``distributed.Client`` (started on first use); None for the local engine."""
        if not self.distributed:
            return None
        if self._client is None:
            self._start()
        return self._client

    def _start(self) -> None:
        check({"scheduler": "dask", "address": self.address, "cluster": self.cluster_kind})
        from distributed import Client

        self._environ = {k: os.environ.get(k) for k in DASK_SPAWN_ENVIRON}
        try:
            if self.address:
                self._client = Client(self.address, timeout=CONNECT_TIMEOUT)
            elif self.cluster_kind == "slurm":
                from dask_jobqueue import SLURMCluster

                self._cluster = SLURMCluster(**slurm_options({"slurm": self.slurm}))
                self._cluster.scale(jobs=self.workers)
                self._client = Client(self._cluster)
            else:
                from distributed import LocalCluster

                # worker processes ignore Ctrl-C: this process stops them (runner/worker.py)
                setup = {"preload": ["dynconn.runner.worker"]} if self.processes else {}
                self._cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1,
                                             processes=self.processes, dashboard_address=None,
                                             silence_logs=logging.ERROR, **setup)
                self._client = Client(self._cluster)
                # every worker registered before the first scatter: shared data broadcast to all of
                # them survive one worker's death (a slow start on a loaded machine could leave it
                # on one worker only, and lose it with that worker)
                self._client.wait_for_workers(self.workers, timeout=CONNECT_TIMEOUT)
        except OSError as exc:  # the scheduler cannot be reached (timeout, refused)
            self.close()
            where = "compute.address" if self.address else "compute.cluster"
            raise DynconnError(f"{where}: could not connect to {self.describe()} ({exc}); check that the "
                               "scheduler runs and is reachable from here") from None
        except BaseException:
            self.close()
            raise
        finally:
            _restore_environ(self._environ)
        if self.console is not None:
            self.console.info(f"  engine: {self.describe()}")

    def close(self) -> None:
        """Close the client and the cluster this engine started (not a running scheduler)."""
        client, cluster = self._client, self._cluster
        self._client = self._cluster = None
        for thing in (client, cluster):
            if thing is not None:
                try:
                    thing.close()
                except Exception:  # noqa: BLE001 - closing is best effort (the cluster may be gone)
                    pass
        if getattr(self, "_environ", None) is not None:
            _restore_environ(self._environ)

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ lost data
    def _lost(self, futures) -> bool:
        """Whether some of these scattered data are held by no worker any more."""
        if any(f.status != "finished" for f in futures):
            return True
        try:
            holders = self._client.who_has(futures)
        except Exception:  # noqa: BLE001 - the scheduler cannot say: take the data as lost
            return True
        return any(not holders.get(f.key) for f in futures)

    def _wait_for_workers(self) -> None:
        """Before scattering again: every worker of a cluster this engine started registered (its
        nanny restarts a dead one), at least one of a running scheduler's."""
        n = self.workers if self._cluster is not None else 1
        try:
            self._client.wait_for_workers(n, timeout=CONNECT_TIMEOUT)
        except TimeoutError:
            raise DynconnError(f"{self.describe()}: no worker came back within {CONNECT_TIMEOUT} after the "
                               "workers holding the tasks' shared data died; see the workers' logs") from None

    # ------------------------------------------------------------------ tasks
    def map(self, fn: Callable, items: Iterable, *, shared: dict | None = None,
            on_result: Callable[[int, Any], Any] | None = None,
            tick: Callable[[], Any] | None = None) -> list:
        """``[fn(item, **shared) for item in items]``, the tasks run where this engine runs them.

        ``shared``: keyword arguments common to every task (e.g. the tensor), sent to each worker
        once (a value over :data:`SMALL_SHARED_BYTES`; a smaller one goes inside each task). When
        the workers holding it died, it is sent again and the unfinished tasks run again. ``on_result(i, result)`` is called here as each result arrives (in any order on
        Dask); ``tick()`` after each result and at least every :data:`TICK_SECONDS` while waiting
        (a stage saves its checkpoint there and raises a pending stop). Tasks still running when
        an exception leaves ``map`` are cancelled. ``fn`` must be importable by the workers (a
        module-level function).
        """
        items = list(items)
        shared = dict(shared or {})
        results: list = [None] * len(items)
        if not self.distributed:
            for i, item in enumerate(items):
                results[i] = fn(item, **shared)
                if on_result is not None:
                    on_result(i, results[i])
                if tick is not None:
                    tick()
            return results
        if not items:
            return results
        from distributed import wait

        client = self.client
        # a small value goes with each task: a task whose inputs are all in its own description
        # can be rerun anywhere after its worker died. A bigger one (the tensor) is scattered to
        # every worker once, as one piece of data: inside a list, since scatter would spread a dict
        # or a list over keys of their own (a dict's keys as the data's names). Scattered data that
        # no surviving worker holds (the only worker died, or all that held it) cannot be recomputed:
        # the scheduler cancels every task that needs it ("already forgotten"); they are then
        # scattered again and the unfinished tasks submitted again, up to SHARED_DATA_RETRIES times.
        big = [k for k, v in shared.items() if not _small(v)]
        remote_shared = dict(shared)

        def scatter():
            for k in big:
                remote_shared[k] = client.scatter([shared[k]], broadcast=True, hash=False)[0]

        index: dict = {}  # a future's key -> (its item's index, the scatter it needs)
        generation = 0  # how many times the big values were scattered again

        def submit(i):
            future = client.submit(fn, items[i], pure=False, **remote_shared)
            index[future.key] = (i, generation)
            return future

        scatter()
        pending = {submit(i) for i in range(len(items))}
        losses = 0
        try:
            while pending:
                try:
                    done, pending = wait(pending, timeout=TICK_SECONDS, return_when="FIRST_COMPLETED")
                except TimeoutError:
                    done = set()
                except CancelledError:  # some were cancelled (distributed's wait raises then): below
                    done = {f for f in pending if f.status != "pending"}
                    pending -= done
                redo = []
                for future in sorted(done, key=lambda f: index[f.key]):
                    i, scattered = index[future.key]
                    try:
                        results[i] = future.result()  # a task's exception is raised here
                    except CancelledError:
                        # cancelled by the scheduler when data it needs were lost: the scattered
                        # values (also after it had finished: its result lived on the dead worker)
                        if not big:
                            raise
                        if scattered == generation:  # not yet scattered again
                            if not self._lost([remote_shared[k] for k in big]):
                                raise
                            losses += 1
                            if losses > SHARED_DATA_RETRIES:
                                raise DynconnError(
                                    f"{self.describe()}: the data shared by the tasks ({', '.join(big)}) were "
                                    f"lost {losses} times with the workers holding them (every worker that "
                                    "held them died); see the workers' logs (a worker killed for memory needs "
                                    "more memory or fewer workers: compute.workers)") from None
                            if self.console is not None:
                                self.console.warn(f"engine: the workers holding the tasks' shared data "
                                                  f"({', '.join(big)}) died; sending it again and running the "
                                                  "unfinished tasks again")
                            self._wait_for_workers()
                            scatter()
                            generation += 1
                        redo.append(i)
                        continue
                    if on_result is not None:
                        on_result(i, results[i])
                # (the other tasks that needed the lost data arrive here cancelled in turn)
                pending |= {submit(i) for i in redo}
                if tick is not None:
                    tick()
        finally:
            if pending:
                client.cancel(list(pending))
        return results


#: shared values up to this size travel inside each task rather than being scattered once
SMALL_SHARED_BYTES = 1 << 20

#: How many times one :meth:`Engine.map` scatters its shared data again after they were lost with
#: the workers holding them, before it gives up with one line.
SHARED_DATA_RETRIES = 3


def _small(value) -> bool:
    """Whether a shared value is small enough to send with every task (``SMALL_SHARED_BYTES``)."""
    import pickle

    nbytes = getattr(value, "nbytes", None)  # an array: no need to pickle it to know
    if isinstance(nbytes, int):
        return nbytes <= SMALL_SHARED_BYTES
    # pickled with its arrays' buffers out of band (counted, not copied): measuring a value that
    # holds the tensor (the solver's prepared data) costs no copy of it
    out_of_band = 0

    def count(buffer) -> None:
        nonlocal out_of_band
        out_of_band += buffer.raw().nbytes

    try:
        in_band = len(pickle.dumps(value, protocol=5, buffer_callback=count))
    except Exception:  # noqa: BLE001 -- not picklable here: let distributed's scatter say why
        return False
    return in_band + out_of_band <= SMALL_SHARED_BYTES


#: The engine of code that runs outside the pipeline (a stage called directly): this process.
LOCAL = Engine("local")

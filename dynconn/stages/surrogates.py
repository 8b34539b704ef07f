"""The report's null model (the statistics are :mod:`dynconn.methods.null`): one surrogate
through the stages' own cores (:func:`surrogate`), and the machinery that runs the report's
surrogates in parallel, each cached on disk as soon as it is done (:func:`run`).

Surrogate k draws from ``SeedSequence([report.seed, k])``: its result does not depend on the
number of workers or on which surrogates were computed before. Each finished surrogate is
written (atomically) to ``<workdir>/checkpoints/surrogates/<key>/<k>.npz``, where ``key``
hashes everything the surrogates depend on (the ingest artifact's fingerprint, the
affinity, factorize and communities settings, the rank and the seed): an interrupted report
recomputes only the surrogates that are missing, and a report rerun for another reason
(figures, thresholds) reuses them all.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np

from ..console import DynconnWarning
from ..io.artifacts import atomic_write_bytes
from ..methods import null
from .communities import partition_options

CACHE_DIR = Path("checkpoints") / "surrogates"


class _Upstream(dict):
    """Datasets and root attributes, as the communities stage reads an affinity artifact."""

    def __init__(self, datasets: dict, **attrs):
        super().__init__(datasets)
        self.attrs = attrs


def options(config, rank: int) -> dict:
    """The surrogate chain's settings from the run's config: the data's affinity settings;
    the factorization at the rank sweep's settings (``sweep_max_iter``, ``sweep_tol``), one
    start; the communities stage's settings with one run (docs/report.md: their cost)."""
    aff = config["affinity"]
    fac = config["factorize"]
    com = config["communities"]
    return {
        "rank": int(rank),
        "affinity": {k: aff[k] for k in ("method", "bin_seconds", "smooth_seconds", "noise_threshold",
                                         "window_seconds", "shared_level", "lag_seconds")},
        "factorize": {"max_iter": int(fac["sweep_max_iter"]), "tol": float(fac["sweep_tol"]),
                      "init": fac["init"], "backend": fac["backend"],
                      "unobserved_penalty": float(fac["unobserved_penalty"]), "time_courses": fac["time_courses"]},
        "communities": {**partition_options(com), "n_runs": 1},
        "evidence": com["evidence"],
    }


def cache_key(fingerprint: str, opts: dict, seed: int) -> str:
    text = json.dumps({"input": fingerprint, "options": opts, "seed": int(seed), "format": 2}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def surrogate(traces: np.ndarray, present: np.ndarray, n_frames: np.ndarray, *, rank: int,
              sampling_rate: float, layout: str, affinity: dict, factorize: dict, communities: dict,
              random_state, evidence: str = "none") -> dict:
    """One surrogate through affinity → factorize → communities at ``rank``.

    ``affinity``: :func:`dynconn.stages.affinity.compute_affinity` options (method, bin_seconds, …);
    ``factorize``: :func:`dynconn.methods.ntf.ncp_hals` options (max_iter, tol, init, backend,
    unobserved_penalty) and ``time_courses`` (``per_animal``: fitted and summarised as the
    factorize stage does, :func:`dynconn.methods.merging.fold_animals`);
    ``communities``: :func:`dynconn.stages.communities.partition_components` options (method,
    min_strength, n_runs, resolution, level). ``random_state``: a SeedSequence (or int) from
    which the shifts, the factorization's start and the partitions draw their own streams.

    Returns ``{"replication" (R,): each component's largest community replication
    (:func:`dynconn.methods.null.graph_maxima`), "share" (R,): each component's energy share}``."""
    from ..methods import ntf
    from ..methods.merging import fits_per_animal, fold_animals, observed_mass, prepare_unfolded
    from . import affinity as aff
    from .communities import edge_weights, event_share, partition_components

    seq = random_state if isinstance(random_state, np.random.SeedSequence) else np.random.SeedSequence(random_state)
    shift_seq, fit_seq, part_seq = seq.spawn(3)
    shifted = null.shift_traces(traces, present, n_frames, np.random.default_rng(shift_seq))
    n_animals, n_neurons = shifted.shape[:2]
    tensor = aff.stack_affinity(shifted, present, sampling_rate=sampling_rate, neurons=range(n_neurons),
                                animals=range(n_animals), n_frames=n_frames, layout=layout, **affinity)
    X, mask, pairs, groups = tensor.affinity, tensor.mask, tensor.pairs, tensor.time_groups
    fit = dict(factorize)
    if fits_per_animal(fit.pop("time_courses", "shared"), groups):  # as the factorize stage
        unfolded, _ = prepare_unfolded(X, mask)
        cp, _ = ntf.ncp_hals(unfolded, rank, random_state=fit_seq, **fit)
        weights, f_time, f_animals, courses = fold_animals(cp[0], cp[1][1], X.shape[2], observed_mass(cp[1][0], mask))
        factors = {"factors/pairs": cp[1][0], "factors/time": f_time, "factors/animals": f_animals,
                   "factors/time_by_animal": courses}
    else:
        cp, _ = ntf.ncp_hals(X, rank, mask=mask, time_groups=groups, random_state=fit_seq, **fit)
        weights, (f_pairs, f_time, f_animals) = cp
        factors = {"factors/pairs": f_pairs, "factors/time": f_time, "factors/animals": f_animals}
    # the communities stage's own edge weights (evidence of each pair), as for the real data
    edges = edge_weights(_Upstream({"mask": mask, "time_animal": groups}, layout=layout), factors, evidence)
    with warnings.catch_warnings():  # a surrogate's transient components are not the result's to warn of
        warnings.simplefilter("ignore", DynconnWarning)
        parts = partition_components(edges, pairs, n_neurons, event_share=event_share(factors),
                                     random_state=int(part_seq.generate_state(1)[0] & 0x7FFFFFFF), **communities)
    return {"replication": null.graph_maxima(null.component_replications(X, mask, f_time, pairs, parts.membership,
                                                                        groups)),
            "share": null.component_shares(weights, X, mask, groups)}


_JOB: dict = {}  # the forked workers' shared inputs (set before the pool forks)


def _plain_signals() -> None:
    """In a worker: SIGTERM (how the pool ends its workers when the report stops) ends it
    quietly; Ctrl-C is the parent's to handle (it stops the report, whose finished surrogates
    are already on disk)."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _one(k: int) -> dict:
    job = _JOB
    result = _surrogate_task(k, job["traces"], job["present"], job["n_frames"], job["rate"], job["layout"],
                             job["seed"], job["opts"])
    _keep(job["folder"], k, result)
    return result


def _surrogate_task(k: int, traces, present, n_frames, rate, layout, seed, opts) -> dict:
    """Surrogate ``k`` as an independent task (a distributed engine's ``map``); the caller keeps
    the result in the cache, so the workers need not see the work directory."""
    return surrogate(traces, present, n_frames, sampling_rate=rate, layout=layout,
                     random_state=np.random.SeedSequence([seed, k]), **opts)


def _keep(folder: Path, k: int, result: dict) -> None:
    buf = io.BytesIO()
    np.savez(buf, **result)
    atomic_write_bytes(folder / f"{k:05d}.npz", buf.getvalue())


def _load(path: Path) -> dict | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: np.asarray(z[k]) for k in ("replication", "share")}
    except (OSError, ValueError, KeyError, EOFError):
        return None  # a damaged cache entry is recomputed


def over_budget_error(tensor_bytes: int):
    """The error for surrogates that cannot run here: the data's tensor (``tensor_bytes``) is over
    ``compute.memory_budget``, and each surrogate would hold one like it in memory."""
    from ..errors import ConfigError

    return ConfigError(f"report.surrogates: each surrogate holds its own affinity tensor in memory "
                       f"({tensor_bytes / 2**30:.1f} GiB, like the data's), more than compute.memory_budget; "
                       "set report.surrogates: 0 (no p-values), raise compute.memory_budget, or run the "
                       "surrogates on a Dask cluster (compute.scheduler: dask)")


def local_workers(X, workers: int, budget: int | None) -> int:
    """How many surrogates run at once in this machine's processes: each holds its own affinity
    tensor of ``X``'s shape in memory (and the solver's working copy), so with an explicit
    ``compute.memory_budget`` (bytes) at most ``budget // tensor bytes`` of them, at least one.
    ``X`` is the data's tensor: a handle read by blocks (not an ndarray) means it is over the
    budget, and a surrogate's copy would be too: refused (:func:`over_budget_error`)."""
    tensor = int(np.prod(X.shape, dtype=np.int64)) * np.dtype(np.float32).itemsize
    if not isinstance(X, np.ndarray):
        raise over_budget_error(tensor)
    if budget is None:
        return workers
    return max(1, min(workers, int(budget) // max(1, tensor)))


def run(data, opts: dict, *, n: int, seed: int, fingerprint: str, workdir: Path, workers: int,
        console=None, mapper=None) -> list[dict]:
    """The ``n`` surrogates of a run (``data``: the report's :class:`RunData`), cached and
    computed in ``workers`` forked processes, or each as a task of ``mapper`` (a distributed
    engine's ``map``: Dask workers; each kept in the cache as it arrives). Caches of other keys
    are removed."""
    if n <= 0:
        return []
    root = Path(workdir) / CACHE_DIR
    key = cache_key(fingerprint, opts, seed)
    folder = root / key
    if root.is_dir():
        for old in root.iterdir():
            if old.name != key:
                shutil.rmtree(old, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    results: dict[int, dict] = {}
    for k in range(n):
        path = folder / f"{k:05d}.npz"
        if path.is_file():
            loaded = _load(path)
            if loaded is not None:
                results[k] = loaded
    todo = [k for k in range(n) if k not in results]
    if todo and console is not None:
        console.info(f"  surrogates: {len(todo)} to compute" + (f" ({n - len(todo)} cached)" if results else ""))
    if mapper is not None and todo:
        shared = {"traces": np.asarray(data.traces), "present": np.asarray(data.present),
                  "n_frames": np.asarray(data.n_frames), "rate": data.sampling_rate, "layout": data.layout,
                  "seed": int(seed), "opts": opts}

        def keep(i, result):
            _keep(folder, todo[i], result)
            results[todo[i]] = result

        mapper(_surrogate_task, todo, shared=shared, on_result=keep)
        return [results[k] for k in range(n)]
    _JOB.clear()
    _JOB.update(traces=np.asarray(data.traces), present=np.asarray(data.present), n_frames=np.asarray(data.n_frames),
                rate=data.sampling_rate, layout=data.layout, seed=int(seed), opts=opts, folder=folder)
    try:
        if workers > 1 and len(todo) > 1 and hasattr(os, "fork"):
            import multiprocessing as mp

            with mp.get_context("fork").Pool(min(workers, len(todo)), initializer=_plain_signals) as pool:
                for k, res in zip(todo, pool.imap(_one, todo)):
                    results[k] = res
        else:
            for k in todo:
                results[k] = _one(k)
    finally:
        _JOB.clear()
    return [results[k] for k in range(n)]


def pooled(results: list[dict]) -> dict:
    """The surrogates' null values pooled: ``replication`` (every surrogate component's largest
    community replication), ``share`` (every component's energy share), ``n`` surrogates."""
    if not results:
        return {"replication": np.zeros(0), "share": np.zeros(0), "n": 0}
    return {"replication": np.concatenate([r["replication"] for r in results]),
            "share": np.concatenate([r["share"] for r in results]), "n": len(results)}

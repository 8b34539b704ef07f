"""Stage 3, factorize: non-negative decomposition of the affinity tensor (CP, or a time course per animal).

The maths lives in :mod:`dynconn.methods.ntf` (masked HALS solver, restarts, rank selection);
this module is the thin wrapper that reads ``affinity.h5`` and writes ``factors.h5``:

``/factors/pairs`` (P, R), ``/factors/time`` (T, R), ``/factors/animals`` (A, R),
``/weights`` (R) — components sorted by weight, each factor column of unit L2 norm;
``/fit/...`` diagnostics of the final fit: ``losses``, ``n_iter``, ``converged``,
``similarity`` (one entry per restart), ``best_index``, ``loss_history`` (the kept fit's
relative error after every iteration); ``/rank_selection/...`` every diagnostic of the
sweep when ``rank: auto`` (:meth:`dynconn.methods.ntf.RankSelection.as_arrays`). Wall-clock
seconds are attributes (``fit_seconds``, ``rank_selection_seconds``), never datasets: the
datasets are the artifact's content and must not change when the same fit is recomputed.

``rank: auto`` (docs/factorization.md): :func:`dynconn.methods.ntf.select_rank` sweeps ``ranks``
with ``restarts`` restarts each, at the sweep's own ``sweep_max_iter`` / ``sweep_tol``; the
chosen rank's best sweep fit is then *refined* (continued from where the sweep left it, to
``max_iter`` / ``tol``) rather than refitted from new random starts: the sweep has already
run the restarts of that rank. A fixed rank is fitted with ``restarts`` restarts.

Layouts (docs/layouts.md): with an aligned affinity (P, T, A) the mask (P, A) applies at
every time. With a concatenated one (P, T_total, 1) the solver gets ``time_groups =
/time_animal``, so entry (p, t) counts iff ``mask[p, time_animal[t]]``: a pair missing in
one animal is ignored in that animal's bins only. ``/factors/animals`` is then (1, R) (the
trivial third mode); each component's activity per animal is its temporal loading over
that animal's bins. Root attribute ``layout``.

Per-animal time courses (``time_courses: per_animal``, the default; docs/method.md): an aligned
tensor is fitted unfolded, (P, A·T, 1) with the animals' bins in turn and ``time_groups``, as
the concatenated layout is (:func:`dynconn.methods.merging.prepare_unfolded`); the reported
components are then written back in the aligned shapes (:func:`_fold`): ``/factors/time`` (T, R)
and ``/factors/animals`` (A, R) each component's rank-one summary, ``/factors/time_by_animal``
(A, T, R) its fitted courses; ``/fit/raw/time`` stays the fitted (A·T, R). Root attribute
``time_courses``.

Duplicates (docs/method.md, "One motif, one component"): components with similar pair patterns
carried by complementary animals (one motif whose timing differs between animals) or active at
the same times (one motif whose pairs the fit split) are one motif;
:func:`dynconn.methods.merging.merge_duplicates` merges them. ``/factors/*`` and
``/weights`` are the *reported* components (merged, sorted by weight) that every later stage
reads; ``/merged_from`` (R_fit,) gives the reported component of each fitted one, attribute
``merged_components`` the groups merged; the fitted CP model itself is kept under
``/fit/raw/{weights,pairs,time,animals}``.

Restarts (the spread the report draws around each temporal loading): ``/fit/restarts/time``
(K, T, R) is every restart's temporal loading in the reported components' order — each restart's
components matched to the kept fit's (:func:`dynconn.methods.ntf.match_components`), then merged
like it (:func:`dynconn.methods.merging.reported_time`) — and ``/fit/restarts/congruence`` (K, R)
each matched component's congruence with the kept one (for a merged component the mean over its
fitted components). With ``rank: auto`` the restarts are the chosen rank's restarts in the sweep
(the kept one as refined).

Checkpoints: the stage saves the solver's state through the pipeline's checkpoint hook
(``<workdir>/checkpoints/factorize.h5``) every ``checkpoint_seconds`` and when a stop signal
arrives; the next run resumes from it and reaches the same factors, bit for bit.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
from pathlib import Path

import numpy as np

from ..config import SCHEMA, Config
from ..console import Console, warn
from ..errors import ConfigError
from ..methods.merging import (MergedCP, fits_per_animal, fold_animals, fold_sorted, merge_duplicates, observed_mass,
                               prepare_unfolded)

NAME = "factorize"
OUTPUT = "factors.h5"
UPSTREAM = ("affinity",)
CHECKPOINTS = True  # run() takes the pipeline's checkpoint hook
ENGINE = True  # run() takes the pipeline's engine (docs/scaling.md)
#: Read by blocks of pairs from affinity.h5 when larger than compute.memory_budget (docs/config.md):
#: the solver's pass over X then streams it (dynconn.methods.ntf, out-of-core X).
STREAMED_INPUTS = {"affinity": ("affinity",)}
# tensorly (the CPTensor result) imports scipy: ≈ 0.5 s, loaded in a thread while the fit runs
SLOW_IMPORTS = ("tensorly.cp_tensor",)

#: Format of the stage's checkpoint state: ``{"format", "sweep": select state, "final": fit or
#: restarts state, "restarts": {"r<rank>": matched restarts of a finished sweep rank}}`` (the
#: solver states of :mod:`dynconn.methods.ntf`, nested).
STATE_FORMAT = "dynconn.factorize/2"  # /2: with "restarts" (the sweep's matched restarts)

#: Keys that do not change the result: left out of the stage's parameters (its provenance),
#: so changing them neither reruns the stage nor discards its checkpoint.
NOT_PROVENANCE = ("checkpoint_seconds",)


def params(config: Config) -> dict:
    return {k: v for k, v in config["factorize"].items() if k not in NOT_PROVENANCE}


def preflight(config: Config) -> None:
    """Checked before any stage runs: the backend can be loaded."""
    check_backend(config["factorize"])


def check_backend(p: dict) -> None:
    """The solver's backend must be installed here (checked before the first stage runs)."""
    if p["backend"] == "pytorch" and importlib.util.find_spec("torch") is None:
        raise ConfigError("factorize.backend: pytorch is not installed here; install it "
                          "(pip install torch) or use backend: numpy")


def _check_options(p: dict, mask: np.ndarray, X=None) -> None:
    """What the config asks must be possible here: one line naming the key otherwise."""
    check_backend(p)
    if p["method"] == "tensorly-hals":
        if X is not None and not isinstance(X, np.ndarray):
            raise ConfigError("factorize.method: tensorly-hals needs the tensor in memory, and it is larger "
                              "than compute.memory_budget; use method: hals or raise compute.memory_budget")
        if p["backend"] != "numpy":
            raise ConfigError("factorize.method: tensorly-hals runs on backend: numpy only")
        if not np.all(mask):
            missing = 1.0 - float(np.mean(mask))
            raise ConfigError(f"factorize.method: tensorly-hals cannot leave out missing pairs "
                              f"({missing:.0%} of the pair blocks are unobserved); use method: hals")


class _Saver:
    """Routes the solver's checkpoint states to the pipeline's checkpoint as one stage state.

    The state is ``{"format": STATE_FORMAT, "sweep": ..., "final": ...}``: while the rank sweep
    runs, its state; once it is finished, its final state (which resumes to the finished
    selection at once) together with the running final fit's state. States are built only when
    the checkpoint is due (``checkpoint.due()``), so saving costs nothing between saves.
    """

    def __init__(self, checkpoint, seconds: float):
        self.checkpoint = checkpoint
        checkpoint.interval = float(seconds)
        self.sweep_done = None  # the finished sweep's state
        self.restarts: dict = {}  # the sweep's matched restarts per rank (kept in the state)

    def load(self) -> dict:
        state = self.checkpoint.load()
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            return {}
        sweep = state.get("sweep")
        if sweep is not None and int(sweep["rank_index"]) == len(np.atleast_1d(sweep["ranks"])):
            self.sweep_done = sweep
        self.restarts = dict(state.get("restarts") or {})
        return state

    def hooks(self, phase: str) -> dict:
        def offer(inner: dict) -> None:
            if phase == "sweep" and int(inner["rank_index"]) == len(inner["ranks"]):
                self.sweep_done = inner
            state = {"format": STATE_FORMAT, phase: inner}
            if phase == "final" and self.sweep_done is not None:
                state["sweep"] = self.sweep_done
            if self.restarts:
                state["restarts"] = self.restarts
            self.checkpoint.offer(state)

        return {"checkpoint_due": self.checkpoint.due, "on_checkpoint": offer}

    def stops_deferred(self):
        return self.checkpoint.saving_on_stop()


def _restarts_progress(state: dict) -> str:
    """``restart k, iteration i`` of a restarts state (or ``iteration i`` of a fit state)."""
    if "restart" not in state:
        return f"iteration {int(state['iteration'])}"
    current = state.get("current")
    return f"restart {int(state['restart']) + 1}, iteration {int(current['iteration']) if current else 0}"


def _describe_resume(state: dict) -> str | None:
    """Where an interrupted run stopped, for the console (None when starting afresh)."""
    final, sweep = state.get("final"), state.get("sweep")
    if final is not None:
        return f"resuming the final fit from its checkpoint ({_restarts_progress(final)})"
    if sweep is not None:
        ranks = np.atleast_1d(sweep["ranks"])
        i = int(sweep["rank_index"])
        if i >= len(ranks):
            return "resuming after the rank sweep, from its checkpoint"
        current = sweep.get("current")
        where = _restarts_progress(current) if current is not None else "restart 1, iteration 0"
        return f"resuming the rank sweep from its checkpoint (rank {int(ranks[i])}, {where})"
    return None


def _fit_datasets(result) -> tuple[dict[str, np.ndarray], list[float]]:
    """``/fit/...`` datasets and the seconds per restart, from a RestartsResult or (cp, FitInfo)."""
    from ..methods import ntf  # the solver (tensorly, scipy) is imported where used: fast start-up
    if isinstance(result, ntf.RestartsResult):
        info = result.info
        out = {"losses": result.losses, "n_iter": result.n_iter, "converged": result.converged,
               "similarity": result.similarity, "best_index": np.asarray(result.best_index),
               "seed_entropy": np.asarray(result.seed_entropy, dtype=np.int64)}
        seconds = np.atleast_1d(result.seconds).tolist()
    else:
        info = result[1]
        out = {"losses": np.asarray([info.loss]), "n_iter": np.asarray([info.n_iter]),
               "converged": np.asarray([info.converged]), "similarity": np.ones(1),
               "best_index": np.asarray(0)}
        seconds = [float(info.seconds)]
    out["loss_history"] = np.asarray(info.loss_history, dtype=np.float64)
    return {f"fit/{k}": np.asarray(v) for k, v in out.items()}, seconds


def _warn_at_edge(rank: int, lo: int, hi: int) -> None:
    """A rank chosen at an end of the sweep may be the sweep's limit, not the data's."""
    if lo == hi:
        return
    if rank == hi:
        warn(f"factorize: rank {rank} is the largest of factorize.ranks [{lo}, {hi}]: the data may hold "
             f"more components; widen the sweep (--set 'factorize.ranks=[{lo}, {2 * hi}]') and compare the "
             f"two runs' communities: on large recordings the rule can run to the top of any sweep "
             f"(docs/benchmarks.md, \"At the size of a real recording\")")
    elif rank == lo and lo > 1:
        warn(f"factorize: rank {rank} is the smallest of factorize.ranks [{lo}, {hi}]: no larger rank "
             f"passed the rule, and smaller ones were not tried; see the report's rank selection figure "
             f"(docs/factorization.md) or set factorize.rank")


def distribution(X, p: dict, engine) -> tuple:
    """How the fits use a distributed engine: ``(mapper, client)``.

    A tensor in memory: every restart (and every fit of the rank sweep) is one task on the
    workers, each worker holding a copy of the tensor (``mapper``; the chosen rank's refinement
    runs here). A tensor over ``compute.memory_budget`` (streamed from affinity.h5): the fits run
    one after another, each iteration's pass over the pairs on the workers, which hold the
    blocks of pairs (``client``; hals on numpy). Local engine: ``(None, None)``, the fits as
    without an engine."""
    if engine is None or not engine.distributed:
        return None, None
    if isinstance(X, np.ndarray):
        return engine.map, None
    if p["method"] == "hals" and p["backend"] == "numpy":
        return None, engine.client
    return None, None


def recorded_sum_of_squares(affinity) -> float | None:
    """The observed sum of squares the affinity stage recorded in affinity.h5 (its root attribute
    ``observed_scan``, :data:`dynconn.stages.affinity.SCAN_ATTR`), or None -- and the solver then
    scans X itself -- where it is absent (an affinity file made otherwise, or by an older
    version), found the tensor not clean, was made with other scan blocks, or was made for other
    data: it counts only when the checksums it names are the artifact's own for /affinity, /mask
    (and /time_animal), which reading the artifact verifies (before anything is written)."""
    from .affinity import SCAN_ATTR, SCAN_FORMAT
    from ..methods import ntf

    attrs = getattr(affinity, "attrs", None) or {}
    try:
        record = json.loads(attrs[SCAN_ATTR])
        own = json.loads(attrs["checksums"])
        X = affinity["affinity"]
        names = ("affinity", "mask") + (("time_animal",) if "time_animal" in own else ())
        if (record.get("format") != SCAN_FORMAT or int(record["scan_rows"]) != ntf.ObservedScan(X.shape).rows
                or np.dtype(X.dtype) != np.float32
                or any(record["checksums"].get(name) != own.get(name) or own.get(name) is None
                       for name in names)):
            return None
        value = record["sum_of_squares"]
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, float) and value > 0 else None


def _matched_restarts(best, fits) -> dict[str, np.ndarray]:
    """Every fit of ``fits`` with its components in ``best``'s order: ``weights`` (K, R),
    ``time`` (K, T, R), ``animals`` (K, A, R), ``congruence`` (K, R) (small: no pair factors)."""
    from ..methods import ntf

    matched = [ntf.match_components(best, cp) for cp in fits]
    return {"weights": np.stack([np.asarray(m[0][0], dtype=np.float64) for m in matched]),
            "time": np.stack([np.asarray(m[0][1][1], dtype=np.float64) for m in matched]),
            "animals": np.stack([np.asarray(m[0][1][2], dtype=np.float64) for m in matched]),
            "congruence": np.stack([m[1] for m in matched])}


def _restarts_datasets(restarts: dict, groups: list[list[int]], fold: int | None = None,
                       mass: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """``/fit/restarts/*`` of the reported components from matched restarts (fitted order);
    ``fold``: the number of animals when the time courses are per animal (:func:`_fold`), summarised
    with the reported components' recorded ``mass`` (A, R) as they are."""
    from ..methods.merging import reported_time

    times = [reported_time(groups, w, v, a) for w, v, a in
             zip(restarts["weights"], restarts["time"], restarts["animals"])]
    if fold is not None:
        times = [fold_animals(np.ones(t.shape[1]), t, fold, mass)[1] for t in times]
    congruence = np.stack([[float(np.mean(c[g])) for g in groups] for c in restarts["congruence"]])
    return {"fit/restarts/time": np.stack(times), "fit/restarts/congruence": congruence}


def compute(affinity: dict, p: dict, console: Console, checkpoint=None, engine=None) -> tuple[dict, dict]:
    """Factorize an affinity artifact's tensor with parameters ``p`` (the config section).

    ``checkpoint``: the pipeline's :class:`dynconn.io.artifacts.Checkpoint` (or None): the solver's
    state is saved through it and an interrupted run resumes from it. ``engine``: the pipeline's
    :class:`dynconn.runner.engine.Engine` (or None): see :func:`distribution`.
    """
    from ..methods import ntf  # the solver (tensorly, scipy) is imported where used: fast start-up

    X, mask = affinity["affinity"], affinity["mask"]
    _check_options(p, mask, X)
    layout = str(affinity.attrs.get("layout", "aligned"))
    groups = np.asarray(affinity["time_animal"], dtype=np.int64) if layout == "concatenated" else None
    per_animal = fits_per_animal(p["time_courses"], groups)
    solver = {"mask": mask, "time_groups": groups, "backend": p["backend"], "method": p["method"],
              "unobserved_penalty": float(p["unobserved_penalty"])}
    mapper, client = distribution(X, p, engine)
    # validated once for every fit (the sweep, the refinement); the scan of X skipped when the
    # affinity stage recorded it (recorded_sum_of_squares)
    if per_animal:  # fitted as the concatenated layout is; written back in the aligned shapes (_fold)
        X, groups = prepare_unfolded(X, mask, observed_sum_of_squares=recorded_sum_of_squares(affinity))
    else:
        X = ntf.prepare(X, mask, time_groups=groups, observed_sum_of_squares=recorded_sum_of_squares(affinity))
    if client is not None:
        solver["client"] = client
    tasks = {"mapper": mapper} if mapper is not None else {}
    saver = None
    if checkpoint is not None and p["method"] == "hals":  # the reference method has no checkpoints
        saver = _Saver(checkpoint, p.get("checkpoint_seconds", SCHEMA["factorize"]["checkpoint_seconds"].default))
    state = saver.load() if saver is not None else {}
    message = _describe_resume(state)
    if message:
        console.info(f"  {message}")

    datasets: dict[str, np.ndarray] = {}
    attrs: dict = {"layout": layout, "time_courses": "per_animal" if groups is not None else "shared"}
    rank = p["rank"]
    final_loss = None  # set when the kept fit is not the solver's last iterate
    sweep_restarts = saver.restarts if saver is not None else {}  # rank -> matched restarts of the sweep

    def keep_restarts(r, res) -> None:
        sweep_restarts[f"r{int(r)}"] = _matched_restarts(res.cp, res.fits)
    with saver.stops_deferred() if saver is not None else contextlib.nullcontext():
        if rank == "auto":
            lo, hi = p["ranks"]
            ranks = list(range(lo, hi + 1))
            with console.progress(f"rank selection ({lo}–{hi})", len(ranks)) as advance:
                selection = ntf.select_rank(
                    X, ranks, n_restarts=p["restarts"], random_state=p["seed"], init=p["init"], rule=p["rank_rule"],
                    similarity=p["rank_similarity"],
                    similarity_threshold=p["similarity_threshold"], min_gain=p["min_gain"],
                    null_ratio=p["null_ratio"],
                    max_iter=p["sweep_max_iter"], tol=p["sweep_tol"], resume=state.get("sweep"),
                    on_rank=lambda r, res: (keep_restarts(r, res), advance()), **solver, **tasks,
                    **(saver.hooks("sweep") if saver else {}))
            rank = int(selection.rank)
            sweep = selection.as_arrays()
            attrs["rank_selection_seconds"] = np.asarray(sweep.pop("seconds")).tolist()
            datasets.update({f"rank_selection/{k}": v for k, v in sweep.items()})
            attrs["rank_rule"] = selection.rule
            attrs["rank_rule_params"] = selection.rule_params
            console.info(f"  rank {rank} chosen ({selection.rule})")
            _warn_at_edge(rank, lo, hi)
            # refine the chosen rank's best sweep fit to the full tolerance
            chosen = int(np.flatnonzero(selection.ranks == rank)[0])
            best, start_error = selection.best_fits[chosen], float(selection.best_error[chosen])
            with console.progress(f"refining rank {rank}", p["max_iter"]) as advance:
                result = ntf.ncp_hals(
                    X, rank, init=best, max_iter=p["max_iter"], tol=p["tol"], resume=state.get("final"),
                    on_iteration=lambda i, loss: advance(), **solver,
                    **(saver.hooks("final") if saver else {}))
            cp = result[0]
            attrs["final_fit"] = "refined from the rank sweep's best fit"
            restarts = sweep_restarts.get(f"r{rank}")
            if not result[1].loss <= start_error and not p["unobserved_penalty"] > 0:
                # Refining never ends above its start: an exact HALS step cannot raise the error, so
                # a refined loss above the sweep's is the loss formula's rounding near convergence
                # (ntf.loss_resolution) -- keep the sweep's fit, whose error is the lower estimate.
                # Not with the unobserved penalty: its pair updates shrink what the data leave
                # uncertain, so the observed error may rise as the fit converges (ntf.ncp_hals).
                cp = best
                final_loss = start_error
                attrs["final_fit"] = "the rank sweep's best fit (refining it did not lower the error)"
        else:
            with console.progress(f"factorizing, rank {rank}", p["restarts"] * p["max_iter"]) as advance:
                # (restarts run as tasks report when each ends: a whole restart's share of the bar)
                progress = ({"on_restart": lambda *a: advance(p["max_iter"])} if mapper is not None
                            else {"on_iteration": lambda i, loss: advance()})
                result = ntf.ncp_restarts(
                    X, rank, n_restarts=p["restarts"], random_state=p["seed"], init=p["init"],
                    max_iter=p["max_iter"], tol=p["tol"], resume=state.get("final"),
                    **progress, **solver, **tasks, **(saver.hooks("final") if saver else {}))
            cp = result.cp
            attrs["final_fit"] = f"best of {p['restarts']} restarts"
            restarts = _matched_restarts(cp, result.fits)
    if p["rank"] == "auto" and restarts is not None:
        # the sweep's restarts are in its best fit's order; refining may reorder (by weight):
        # put them in the kept fit's order, the kept restart as refined
        perm = ntf.factor_congruence(cp, best)[2]
        restarts = {k: v[..., perm] for k, v in restarts.items()}
        kept = int(selection.best_index[chosen])
        restarts["weights"][kept] = np.asarray(cp[0], dtype=np.float64)
        restarts["time"][kept] = np.asarray(cp[1][1], dtype=np.float64)
        restarts["animals"][kept] = np.asarray(cp[1][2], dtype=np.float64)
        restarts["congruence"][kept] = 1.0
    weights, (f_pairs, f_time, f_animals) = cp
    merged = merge_duplicates(weights, f_pairs, f_time, f_animals, time_groups=groups,
                              n_animals=mask.shape[1], similarity=p["merge_similarity"],
                              max_animal_overlap=p["merge_max_overlap"],
                              time_similarity=p["merge_time_similarity"])
    if per_animal:
        merged = _fold(merged, mask, datasets)
    datasets.update({
        "weights": merged.weights,
        "factors/pairs": np.asarray(merged.pairs, dtype=np.float32),
        "factors/time": merged.time,
        "factors/animals": merged.animals,
        "merged_from": merged.merged_from,
        # the fitted CP model itself, before duplicates were merged (its error is /fit/losses)
        "fit/raw/weights": np.asarray(weights, dtype=np.float64),
        "fit/raw/pairs": np.asarray(f_pairs, dtype=np.float32),
        "fit/raw/time": np.asarray(f_time, dtype=np.float64),
        "fit/raw/animals": np.asarray(f_animals, dtype=np.float64),
    })
    merges = [g for g in merged.groups if len(g) > 1]
    attrs["merged_components"] = [[int(r) for r in g] for g in merges]
    if merges:
        console.info("  merged " + "; ".join("fitted components " + "+".join(map(str, g)) for g in merges)
                     + " (one motif: complementary animals or the same times)")
    if restarts is not None:
        fold = (mask.shape[1], observed_mass(merged.pairs, mask)) if per_animal else (None, None)
        datasets.update(_restarts_datasets(restarts, merged.groups, *fold))
    fit, seconds = _fit_datasets(result)
    if final_loss is not None:
        fit["fit/losses"] = np.asarray([final_loss])  # the kept fit's error; the history is the refinement's
    datasets.update(fit)
    attrs["fit_seconds"] = seconds
    attrs["rank"] = rank
    return datasets, attrs


def _fold(merged, mask, datasets: dict):
    """The reported components of a per-animal fit (``time_courses: per_animal``) in the design's
    shapes: ``/factors/time`` (T, R) and ``/factors/animals`` (A, R) each component's rank-one
    summary (:func:`dynconn.methods.merging.fold_animals`), sorted by its weight again, and the
    fitted courses as ``/factors/time_by_animal`` (A, T, R) (into ``datasets``)."""
    n_animals = mask.shape[1]
    order, weights, time_f, animal_f, courses = fold_sorted(merged.weights, merged.time * merged.animals[0], n_animals,
                                                            observed_mass(merged.pairs, mask))
    position = np.empty_like(order)
    position[order] = np.arange(order.size)
    datasets["factors/time_by_animal"] = courses
    return MergedCP(weights, merged.pairs[:, order], time_f, animal_f, position[merged.merged_from].astype(np.int32),
                    [merged.groups[k] for k in order])


def run(config: Config, workdir: Path, console: Console, upstream: dict, checkpoint=None,
        engine=None) -> tuple[dict, dict]:
    # a local engine changes nothing: the fits run here exactly as without one
    distributed = {"engine": engine} if engine is not None and engine.distributed else {}
    return compute(upstream["affinity"], config["factorize"], console, checkpoint, **distributed)


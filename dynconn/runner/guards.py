"""Numerical safety: non-finite values are caught where they appear, with names.

The pipeline calls :func:`check_output` on every stage's datasets before they are
written. A NaN or ±Inf in a place that must be finite raises
:class:`~dynconn.errors.NumericalError` naming the stage, the dataset, the animal(s) and
the neuron(s) (or neuron pairs) involved, so a bad value can never reach an artifact
silently. NaN is allowed only where it means "not recorded": ``ingest``'s ``/traces`` for
absent neurons and for gaps longer than ``ingest.max_gap_seconds``, ``communities``'
``/modularity`` of a component without a graph, and the solver's diagnostics.

:func:`check_inputs` refuses a stage input that cannot give a meaningful result (an
affinity tensor that is zero everywhere) and :func:`degenerate_warnings` lists the
degenerate-but-usable cases (an animal with fewer than three neurons).
"""

from __future__ import annotations

import numpy as np

from ..console import warn
from ..errors import NumericalError
from ..io.artifacts import RowBlocks, StreamedDataset

_MAX_NAMED = 4


def _names(values, index) -> list[str]:
    return [str(values[i]) for i in index]


def _listing(items: list[str], total: int) -> str:
    text = ", ".join(items[:_MAX_NAMED])
    return text + (f" and {total - _MAX_NAMED} more" if total > _MAX_NAMED else "")


def _kind(values: np.ndarray) -> str:
    has_nan, has_inf = bool(np.isnan(values).any()), bool(np.isinf(values).any())
    return "NaN and infinite values" if has_nan and has_inf else "NaN" if has_nan else "infinite values"


def _raise(stage: str, dataset: str, bad: np.ndarray, where: str, values: np.ndarray) -> None:
    raise NumericalError(
        f"{stage}: {int(bad.sum())} non-finite value(s) ({_kind(values[bad])}) in /{dataset}: {where}; "
        "the artifact was not written. Check those traces for extreme values, or report it "
        "as a bug if the input looks normal"
    )


def _pair_names(pairs: np.ndarray, neurons, index: np.ndarray) -> list[str]:
    return [f"{neurons[pairs[p, 0]]}–{neurons[pairs[p, 1]]}" for p in index]


def _culprits(pairs: np.ndarray, neurons, p_idx: np.ndarray) -> str:
    """Name the neurons behind bad pairs: those that take part in every bad pair when
    there are such neurons (one bad trace spoils all its pairs), else the pairs."""
    involved = pairs[p_idx]
    counts = np.bincount(involved.ravel(), minlength=len(neurons))
    common = np.flatnonzero(counts == p_idx.size)
    if p_idx.size > 1 and common.size:
        return (f"neuron {_listing(_names(neurons, common), common.size)} "
                f"(in all {p_idx.size} affected pairs)")
    worst = np.argsort(-counts, kind="stable")[: min(_MAX_NAMED, int((counts > 0).sum()))]
    return (f"pairs {_listing(_pair_names(pairs, neurons, p_idx[:_MAX_NAMED]), p_idx.size)} "
            f"(neurons most involved: {', '.join(_names(neurons, worst))})")


def check_output(stage: str, datasets: dict, upstream: dict) -> None:
    """Raise NumericalError when a stage's output holds a non-finite value where it must
    not; the message names the animal(s) and neuron(s)."""
    if stage == "ingest":
        traces = np.asarray(datasets["traces"])
        bad = np.isinf(traces)  # NaN is "missing" here; infinity never is
        if bad.any():
            animals, neurons = datasets["animals"], datasets["neurons"]
            a_idx = np.flatnonzero(bad.any(axis=(1, 2)))
            n_idx = np.flatnonzero(bad.any(axis=(0, 2)))
            where = (f"animal {_listing(_names(animals, a_idx), a_idx.size)}, neurons "
                     f"{_listing(_names(neurons, n_idx), n_idx.size)}")
            _raise(stage, "traces", bad, where, traces)
        return
    if stage == "affinity":
        def check(start: int, tensor: np.ndarray) -> None:
            bad = ~np.isfinite(tensor)
            if bad.any():
                pairs, neurons, animals = datasets["pairs"], datasets["neurons"], datasets["animals"]
                p_idx = start + np.flatnonzero(bad.any(axis=(1, 2)))
                a_idx = np.flatnonzero(bad.any(axis=(0, 1)))
                where = f"animal {_listing(_names(animals, a_idx), a_idx.size)}, {_culprits(pairs, neurons, p_idx)}"
                _raise(stage, "affinity", bad, where, tensor)

        if isinstance(datasets["affinity"], StreamedDataset):
            datasets["affinity"].checks.append(check)  # each block, as it is written
        else:
            check(0, np.asarray(datasets["affinity"]))
        return
    if stage == "factorize":
        aff = upstream.get("affinity")
        for name in ("weights", "factors/pairs", "factors/time", "factors/animals"):
            if name not in datasets:
                continue
            values = np.asarray(datasets[name], dtype=np.float64)
            bad = ~np.isfinite(values)
            if not bad.any():
                continue
            rows = np.flatnonzero(bad.reshape(bad.shape[0], -1).any(axis=1)) if values.ndim else np.zeros(0, int)
            comps = np.flatnonzero(bad.any(axis=0)) if values.ndim == 2 else rows
            where = f"components {_listing([str(c) for c in comps], comps.size)}"
            if aff is not None and name == "factors/pairs":
                where += f", pairs {_listing(_pair_names(aff['pairs'], aff['neurons'], rows[:_MAX_NAMED]), rows.size)}"
            elif aff is not None and name == "factors/animals":
                where += f", animals {_listing(_names(aff['animals'], rows), rows.size)}"
            _raise(stage, name, bad, where, values)
        return


def max_cp_rank(shape: tuple[int, int, int]) -> int:
    """The largest rank a CP model of a (P, T, A) tensor can usefully have: any such tensor
    is an exact sum of min(P·T, P·A, T·A) rank-one terms."""
    p, t, a = shape
    return max(1, min(p * t, p * a, t * a))


def check_inputs(stage: str, upstream: dict, params: dict | None = None) -> None:
    """Refuse inputs (and requests) that cannot give a meaningful result, saying why."""
    if stage == "factorize" and "affinity" in upstream:
        aff = upstream["affinity"]
        if aff["affinity"].size == 0:
            raise NumericalError(
                f"factorize: the affinity tensor is empty ({'×'.join(map(str, aff['affinity'].shape))}: "
                "fewer than two neurons, or no time bins); nothing to factorize"
            )
        if params is not None:
            limit = max_cp_rank(aff["affinity"].shape)
            rank, ranks = params.get("rank"), params.get("ranks")
            if isinstance(rank, int) and rank > limit:
                raise NumericalError(
                    f"factorize.rank: {rank} is more than a {'×'.join(map(str, aff['affinity'].shape))} "
                    f"tensor can hold (at most {limit} components); choose a smaller rank"
                )
            if rank == "auto" and ranks and ranks[0] > limit:
                raise NumericalError(
                    f"factorize.ranks: the smallest rank tried ({ranks[0]}) is more than a "
                    f"{'×'.join(map(str, aff['affinity'].shape))} tensor can hold (at most {limit})"
                )
        # unobserved entries hold 0 (affinity.h5 contract), so "all observed are zero" is
        # "the tensor is zero" -- in either layout, without indexing by the (P, A) mask
        if not aff["mask"].any() or not _any_nonzero(aff["affinity"]):
            raise NumericalError(
                "factorize: every observed affinity is zero (no two neurons change together "
                "beyond their noise level: constant or too short traces?); nothing to factorize. "
                "Lower affinity.noise_threshold or check the input traces"
            )


def _any_nonzero(tensor) -> bool:
    """Whether a tensor, in memory or a :class:`~dynconn.io.artifacts.RowBlocks` handle on disk
    (read by blocks), holds a non-zero value."""
    if isinstance(tensor, RowBlocks):
        return any(np.any(block) for _, block in tensor.iter_blocks())
    # by blocks of rows, so that a tensor with a non-zero value early (any real one) is not
    # read whole: np.any does not stop at the first True
    step = max(1, (1 << 20) // max(1, int(np.prod(tensor.shape[1:], dtype=np.int64))))
    return any(bool(np.any(tensor[start:start + step])) for start in range(0, tensor.shape[0], step))


def degenerate_warnings(stage: str, datasets: dict) -> None:
    """Warn (DynconnWarning) about degenerate but usable results."""
    if stage == "ingest":
        present = np.asarray(datasets["present"])
        for a, name in enumerate(datasets["animals"]):
            count = int(present[:, a].sum())
            if count < 3:
                warn(f"animal {name} has only {count} neuron(s): it contributes "
                     f"{count * (count - 1) // 2} pair(s) and carries little information")
    elif stage == "factorize":
        weights = np.asarray(datasets.get("weights", []), dtype=np.float64)
        dead = np.flatnonzero(~(weights > 0))
        if dead.size:
            warn(f"factorize: component(s) {', '.join(map(str, dead))} came out all zero "
                 "(the rank is higher than the data support); consider a lower factorize.rank")

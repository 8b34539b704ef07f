"""Stage 3, factorize: non-negative CP decomposition of the affinity tensor.

The maths lives in :mod:`dynconn.ntf` (masked HALS solver, restarts, rank selection);
this module is the thin wrapper that reads ``affinity.h5`` and writes ``factors.h5``:

``/factors/pairs`` (P, R), ``/factors/time`` (T, R), ``/factors/animals`` (A, R),
``/weights`` (R) — components sorted by weight, each factor column of unit L2 norm;
``/fit/loss`` (iterations) relative error on observed entries of the kept fit, and
``/fit/restart_loss`` (K) the final loss of every restart;
``/rank_selection/...`` every diagnostic of the sweep when ``rank: auto``.

Layouts (docs/layouts.md): with an aligned affinity (P, T, A) the mask (P, A) applies at
every time. With a concatenated one (P, T_total, 1) the solver gets ``time_groups =
/time_animal``, so entry (p, t) counts iff ``mask[p, time_animal[t]]``: a pair missing in
one animal is ignored in that animal's bins only. ``/factors/animals`` is then (1, R) (the
trivial third mode); each component's activity per animal is its temporal loading over
that animal's bins. Root attribute ``layout``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from . import ntf
from .artifacts import read_h5, write_h5
from .config import SCHEMA, Config, _check_section
from .console import Console

NAME = "factorize"
OUTPUT = "factors.h5"
UPSTREAM = ("affinity",)


def params(config: Config) -> dict:
    return dict(config["factorize"])


def _arrays(prefix: str, obj) -> dict[str, np.ndarray]:
    """Numeric fields of a result dataclass as datasets under ``prefix/``.

    Wall-clock ``seconds`` are left out: datasets are the artifact's content (its
    fingerprint), which must be the same whenever the same fit is recomputed; timings go
    to attributes (see :func:`_timings`)."""
    out = {}
    for f in dataclasses.fields(obj):
        if f.name == "seconds":
            continue
        value = getattr(obj, f.name)
        if isinstance(value, (int, float, bool, np.integer, np.floating, np.ndarray)):
            array = np.asarray(value)
            if array.dtype.kind in "fiub":
                out[f"{prefix}/{f.name}"] = array
    return out


def _timings(obj) -> list[float]:
    return np.atleast_1d(np.asarray(getattr(obj, "seconds", []), dtype=np.float64)).tolist()


def compute(affinity: dict, p: dict, console: Console) -> tuple[dict, dict]:
    """Factorize an affinity artifact's tensor with parameters ``p`` (the config section)."""
    X, mask = affinity["affinity"], affinity["mask"]
    layout = str(affinity.attrs.get("layout", "aligned"))
    groups = {"time_groups": np.asarray(affinity["time_animal"], dtype=np.int64)} \
        if layout == "concatenated" else {}
    fit_kw = {"max_iter": p["max_iter"], "tol": p["tol"], "init": p["init"], **groups}
    datasets: dict[str, np.ndarray] = {}
    attrs: dict = {"layout": layout}
    rank = p["rank"]
    if rank == "auto":
        lo, hi = p["ranks"]
        ranks = list(range(lo, hi + 1))
        with console.progress(f"rank selection ({lo}–{hi})", len(ranks)) as advance:
            selection = ntf.select_rank(X, ranks, mask=mask, n_restarts=p["restarts"],
                                        random_state=p["seed"], init=p["init"],
                                        on_rank=lambda *a: advance(), **groups)
        rank = int(selection.rank)
        datasets.update(_arrays("rank_selection", selection))
        attrs["rank_selection_seconds"] = _timings(selection)
        attrs["rank_rule"] = selection.rule
        console.info(f"  rank {rank} chosen ({selection.rule})")
    with console.progress(f"factorizing, rank {rank}", p["restarts"] * p["max_iter"]) as advance:
        result = ntf.ncp_restarts(X, rank, mask=mask, n_restarts=p["restarts"], random_state=p["seed"],
                                  on_iteration=lambda i, loss: advance(), **fit_kw)
    weights, (f_pairs, f_time, f_animals) = result.cp
    datasets.update({
        "weights": np.asarray(weights, dtype=np.float64),
        "factors/pairs": np.asarray(f_pairs, dtype=np.float32),
        "factors/time": np.asarray(f_time, dtype=np.float64),
        "factors/animals": np.asarray(f_animals, dtype=np.float64),
    })
    datasets.update(_arrays("fit", result))
    attrs["fit_seconds"] = _timings(result)
    attrs["rank"] = rank
    return datasets, attrs


def run(config: Config, workdir: Path, console: Console, upstream: dict) -> tuple[dict, dict]:
    return compute(upstream["affinity"], config["factorize"], console)


def factorize_file(in_path: Path, out_path: Path, options: dict, console: Console) -> None:
    """``dynconn factorize --in AFFINITY.h5 --out FACTORS.h5``: the stage without a config."""
    p = _check_section("factorize", SCHEMA["factorize"], options, Path.cwd())
    affinity = read_h5(in_path)
    with console.capture_warnings() as seen:
        datasets, attrs = compute(affinity, p, console)
    write_h5(out_path, datasets, stage=NAME, params=p, inputs={"affinity": affinity.fingerprint},
             attrs={**attrs, "warnings": seen})

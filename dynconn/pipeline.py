"""Chaining the stages: up-to-date checks, provenance, atomic artifacts.

A stage module provides ``NAME``, ``OUTPUT``, ``UPSTREAM`` (names of the stages whose
artifacts it reads), ``params(config) -> dict`` and ``run(config, workdir, console,
upstream) -> (datasets, attrs)``; ``ingest`` also ``inputs(config, workdir)`` (fingerprints
of the data files it reads). The report stage writes files instead of HDF5 and provides
``write(...)``.

A stage is *up to date* when its artifact exists, verifies, and records the same dynconn
version, the same parameters and the same input fingerprints as it would now. ``run``
skips such a stage and says so.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import ModuleType

from . import __version__, affinity, communities, factorize, ingest, report
from .artifacts import ArtifactError, clean_temporaries, read_attrs, read_h5, write_h5
from .config import Config
from .console import Console
from .errors import DynconnError

STAGES: dict[str, ModuleType] = {
    m.NAME: m for m in (ingest, affinity, factorize, communities, report)
}
ORDER = list(STAGES)


def stage_range(start: str | None, stop: str | None) -> list[str]:
    """Stage names from ``start`` to ``stop`` inclusive (validated)."""
    for name in (start, stop):
        if name is not None and name not in STAGES:
            raise DynconnError(f"unknown stage {name!r}; stages are {', '.join(ORDER)}")
    lo = ORDER.index(start) if start else 0
    hi = ORDER.index(stop) if stop else len(ORDER) - 1
    if lo > hi:
        raise DynconnError(f"--from {start} comes after --until {stop}")
    return ORDER[lo : hi + 1]


def recorded_provenance(name: str, workdir: Path) -> dict | None:
    """What the stage's existing output records about how it was made (None if absent)."""
    module = STAGES[name]
    if hasattr(module, "recorded_provenance"):
        return module.recorded_provenance(workdir)
    attrs = read_attrs(workdir / module.OUTPUT)
    if attrs is None or "fingerprint" not in attrs:
        return None
    return {
        "dynconn_version": attrs.get("dynconn_version"),
        "params": json.loads(attrs.get("params", "null")),
        "inputs": json.loads(attrs.get("inputs", "null")),
        "fingerprint": attrs["fingerprint"],
    }


def upstream_fingerprints(name: str, workdir: Path) -> dict[str, str]:
    """Fingerprints of the artifacts a stage reads; error if one is missing."""
    out = {}
    for up in STAGES[name].UPSTREAM:
        rec = recorded_provenance(up, workdir)
        if rec is None:
            path = workdir / STAGES[up].OUTPUT
            raise DynconnError(
                f"{path}: missing or unreadable; run `dynconn {up}` (or `dynconn run`) first"
            )
        out[up] = rec["fingerprint"]
    return out


def expected_provenance(name: str, config: Config, workdir: Path) -> dict:
    module = STAGES[name]
    inputs = module.inputs(config, workdir) if hasattr(module, "inputs") else {}
    inputs.update(upstream_fingerprints(name, workdir))
    return {"dynconn_version": __version__, "params": _jsonable(module.params(config)), "inputs": inputs}


def _jsonable(value):
    return json.loads(json.dumps(value))


def is_up_to_date(name: str, expected: dict, workdir: Path) -> bool:
    rec = recorded_provenance(name, workdir)
    return rec is not None and all(rec.get(k) == v for k, v in expected.items())


def run_stage(name: str, config: Config, workdir: Path, console: Console, *, force: bool = False) -> bool:
    """Run one stage unless it is up to date. Returns True when it ran."""
    module = STAGES[name]
    expected = expected_provenance(name, config, workdir)
    output = workdir / module.OUTPUT
    if not force and is_up_to_date(name, expected, workdir):
        console.info(f"[green]✓[/green] {name}: up to date ({output})")
        return False
    console.info(f"[bold]→ {name}[/bold]")
    started = time.perf_counter()
    upstream = {}
    for up in module.UPSTREAM:
        try:
            upstream[up] = read_h5(workdir / STAGES[up].OUTPUT)
        except ArtifactError as exc:
            raise DynconnError(f"{exc}; rerun `dynconn {up}` with --force") from None
    with console.capture_warnings() as warnings_seen:
        result = module.run(config, workdir, console, upstream)
    seconds = time.perf_counter() - started
    if hasattr(module, "write"):
        module.write(workdir, result, provenance=expected, seconds=seconds, warnings=warnings_seen)
    else:
        datasets, attrs = result
        write_h5(
            output,
            datasets,
            stage=name,
            params=expected["params"],
            config=config.values,
            inputs=expected["inputs"],
            attrs={**attrs, "seconds": seconds, "warnings": warnings_seen},
        )
    console.info(f"[green]✓[/green] {name}: wrote {output} ({seconds:.1f} s)")
    return True


def run_pipeline(
    config: Config,
    workdir: Path,
    console: Console,
    *,
    force: bool = False,
    start: str | None = None,
    stop: str | None = None,
) -> list[str]:
    """Run the stages from ``start`` to ``stop``; ``start`` and later are recomputed when
    ``start`` is given explicitly. Returns the names of the stages that ran."""
    names = stage_range(start, stop)
    for leftover in clean_temporaries(workdir):
        console.info(f"removed a temporary file left by an interrupted run: {leftover.name}")
    ran = []
    for name in names:
        if run_stage(name, config, workdir, console, force=force or start is not None):
            ran.append(name)
    return ran

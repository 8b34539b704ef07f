"""Chaining the stages: locks, up-to-date checks, provenance, integrity, atomic artifacts.

Every stage is seen through its :class:`~dynconn.runner.stage.Stage` (the protocol and the
list of stages are in :mod:`dynconn.runner.stage`).

Every command that writes into a work directory holds its lock (:mod:`dynconn.runner.lock`)
for its whole duration; under the lock, temporary files left by killed runs are removed.

A stage is *up to date* when its artifact exists, records the same dynconn version, the
same parameters and the same input fingerprints as it would now, *and verifies*: every
dataset matches its recorded sha256 (report files: their recorded sha256). ``run`` skips
such a stage and says so; an artifact that fails verification is reported and recomputed.
Each artifact is verified at most once per command (inputs read later reuse the result
while the file is unchanged).

A stage that is not up to date but whose computation (same provenance) is in the work
directory's result cache is restored from there instead of recomputed (not with
``force``); an output replaced by another computation's is kept there first
(:mod:`dynconn.runner.cache`). The cache is bounded to ``compute.cache_size`` at the end of
each command.

Before a stage runs, its memory need is estimated (:mod:`dynconn.runner.resources`) and the
stage is refused when it cannot fit; before an artifact is written, its size is checked
against the free disk space. Outputs are checked for NaN/Inf (:mod:`dynconn.runner.guards`).

Each command makes one :class:`~dynconn.runner.engine.Engine` from ``compute`` (where the
stages' independent tasks run: this process, or a Dask cluster started on first use and closed
when the command ends) and hands it to the stages that take one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from pathlib import Path

from .. import __version__
from . import cache, engine as engines, interrupt, resources
from ..io.artifacts import (
    ArtifactError,
    Checkpoint,
    clean_temporaries,
    dataset_shapes,
    read_attrs,
    read_h5,
    sha256_file,
    verified_on_exit,
    verify_h5,
    write_h5,
)
from ..config import Config
from ..console import Console
from ..errors import DynconnError, InputError, Interrupted, NumericalError, ResourceError
from .lock import WorkdirLock
from .stage import STAGES, Stage

ORDER = list(STAGES)
CHECKPOINT_DIR = "checkpoints"
#: Largest stimuli file read before the first stage (a real one is a few hundred bytes; a
#: larger one is left to ingest, whose memory estimate covers its inputs).


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


def checkpoint_path(workdir: Path, name: str) -> Path:
    """Where stage ``name`` keeps resumable partial work."""
    return Path(workdir) / CHECKPOINT_DIR / f"{name}.h5"


# ----------------------------------------------------------------------------- verification
class Verified:
    """Which artifacts were verified during this command (by path and file identity)."""

    def __init__(self):
        self._seen: dict[Path, tuple] = {}

    @staticmethod
    def _identity(path: Path) -> tuple | None:
        try:
            st = path.stat()
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def __contains__(self, path: Path) -> bool:
        ident = self._identity(path)
        return ident is not None and self._seen.get(path) == ident

    def add(self, path: Path) -> None:
        ident = self._identity(path)
        if ident is not None:
            self._seen[path] = ident



def verify_output(name: str, workdir: Path, verified: Verified | None = None) -> str | None:
    """None when stage ``name``'s output verifies, else a one-line description of the problem."""
    stage = STAGES[name]
    output = workdir / stage.output
    if verified is not None and output in verified:
        return None
    if stage.writes_files:  # checksums recorded in its provenance
        rec = recorded_provenance(name, workdir) or {}
        for rel, digest in (rec.get("files") or {}).items():
            path = workdir / rel
            try:
                actual = sha256_file(path)
            except OSError:
                return f"{path}: missing or unreadable"
            if actual != digest:
                return f"{path}: does not match its recorded checksum (modified or damaged)"
    else:
        try:
            verify_h5(output)
        except ArtifactError as exc:
            return str(exc)
    if verified is not None:
        verified.add(output)
    return None


def _over_budget(path: Path, streamable: tuple[str, ...], budget: int | None) -> tuple[str, ...]:
    """The ``streamable`` datasets of ``path`` larger than ``budget`` bytes (read by blocks)."""
    if not streamable or budget is None:
        return ()
    shapes = dataset_shapes(path)
    return tuple(n for n in streamable if n in shapes and resources.nbytes(*shapes[n]) > budget)


def read_upstream(up: str, workdir: Path, verified: Verified | None = None, streamable: tuple[str, ...] = (),
                  budget: int | None = None, meanwhile: bool = False, skip: tuple[str, ...] = ()):
    """Read an upstream artifact, verified (once per command); ``skip``: datasets left unread.

    ``streamable`` datasets larger than ``budget`` bytes are left on disk as
    :class:`~dynconn.io.artifacts.RowBlocks` handles (checksummed by one streamed read).
    ``meanwhile``: big datasets are checksummed in a thread (``read_h5``); run the stage in
    :func:`~dynconn.io.artifacts.verified_on_exit`."""
    path = workdir / STAGES[up].output
    check = verified is None or path not in verified
    hint = f" (run `dynconn run` or `dynconn {up}` to recompute it)"
    try:
        art = read_h5(path, verify=check, skip=skip, lazy=_over_budget(path, streamable, budget), meanwhile=meanwhile)
    except ArtifactError as exc:
        raise ArtifactError(f"{exc}{hint}") from None
    art.hint = hint
    if verified is not None and not skip:  # a dataset left unread is not verified
        verified.add(path)
    return art


# ----------------------------------------------------------------------------- provenance
def recorded_provenance(name: str, workdir: Path) -> dict | None:
    """What the stage's existing output records about how it was made (None if absent)."""
    stage = STAGES[name]
    if stage.writes_files:
        return stage.recorded_provenance(workdir)
    attrs = read_attrs(workdir / stage.output)
    if attrs is None or "fingerprint" not in attrs:
        return None
    try:
        return {
            "dynconn_version": attrs.get("dynconn_version"),
            "params": json.loads(attrs.get("params", "null")),
            "inputs": json.loads(attrs.get("inputs", "null")),
            "fingerprint": attrs["fingerprint"],
        }
    except (TypeError, ValueError):
        return None


def upstream_fingerprints(name: str, workdir: Path) -> dict[str, str]:
    """Fingerprints of the artifacts a stage reads; error if one is missing."""
    out = {}
    for up in STAGES[name].inputs:
        rec = recorded_provenance(up, workdir)
        if rec is None:
            path = workdir / STAGES[up].output
            raise DynconnError(
                f"{path}: missing or unreadable; run `dynconn {up}` (or `dynconn run`) first"
            )
        out[up] = rec["fingerprint"]
    return out


def expected_provenance(name: str, config: Config, workdir: Path) -> dict:
    stage = STAGES[name]
    inputs = stage.input_fingerprints(config, workdir)
    inputs.update(upstream_fingerprints(name, workdir))
    return {"dynconn_version": __version__, "params": _jsonable(stage.params(config)), "inputs": inputs}


def _jsonable(value):
    return json.loads(json.dumps(value))


def is_up_to_date(name: str, expected: dict, workdir: Path) -> bool:
    """Provenance matches (attributes only; :func:`run_stage` verifies checksums too)."""
    rec = recorded_provenance(name, workdir)
    return rec is not None and all(rec.get(k) == v for k, v in expected.items())


# ----------------------------------------------------------------------------- resources
def _check_memory(name: str, config: Config, workdir: Path) -> str:
    """Refuse a stage whose estimated memory need exceeds what is available; returns the
    remedy text (for a MemoryError that happens anyway)."""
    stage = STAGES[name]
    shapes = {up: {k: v for k, v in dataset_shapes(workdir / STAGES[up].output).items()
                   if k not in stage.unread_inputs(up)}
              for up in stage.inputs if not STAGES[up].writes_files}
    need, remedy = stage.estimate_memory(config, shapes)
    resources.check_memory(name, need, remedy)
    return remedy


# ----------------------------------------------------------------------------- up-front checks
def preflight(config: Config, names: list[str]) -> None:
    """Everything about the stages ``names`` that can be checked from the config (and the
    small stimuli file) is checked here, before the first stage runs and before the work
    directory is touched: a mistake costs no computation and changes no artifact
    (:meth:`Stage.preflight` of each)."""
    engines.check(config["compute"])
    for name in names:
        STAGES[name].preflight(config)


def check_ahead(done: str, later: list[str], config: Config, workdir: Path) -> None:
    """The ``later`` stages' checks that need the artifacts of ``done`` and the stages before it
    (:meth:`Stage.check_ahead`; an artifact further on may be stale): run after each stage of
    ``dynconn run``, so a setting that cannot work stops the run before the stages in between
    spend their time."""
    if not later:
        return
    shapes = {name: dataset_shapes(workdir / STAGES[name].output)
              for name in ORDER[:ORDER.index(done) + 1] if not STAGES[name].writes_files}
    for name in later:
        STAGES[name].check_ahead(config, shapes)


# ----------------------------------------------------------------------------- stages
def _judge(name: str, expected: dict, workdir: Path, console: Console, verified: Verified) -> bool:
    """True when the stage's output is up to date and verifies; warns about damaged outputs."""
    stage = STAGES[name]
    output = workdir / stage.output
    rec = recorded_provenance(name, workdir)
    if rec is None:
        if output.exists() and not stage.writes_files:
            console.warn(f"{output}: unreadable or truncated; recomputing it")
        return False
    if not all(rec.get(k) == v for k, v in expected.items()):
        return False
    problem = verify_output(name, workdir, verified)
    if problem is not None:
        console.warn(f"{problem.removesuffix('; recompute it')}; recomputing it")
        return False
    return True


def run_stage(name: str, config: Config, workdir: Path, console: Console, *, force: bool = False,
              verified: Verified | None = None, engine: engines.Engine | None = None) -> bool:
    """Run one stage unless it is up to date. Returns True when it ran.

    The caller holds the work-directory lock (:func:`run_pipeline`, :func:`run_one`).
    ``engine``: where the stage's independent tasks run (None: this process).
    """
    stage = STAGES[name]
    verified = verified if verified is not None else Verified()
    workdir = Path(workdir)
    if stage.reads_data_files:
        stage.check_input_files(config)
        _check_memory(name, config, workdir)  # before hashing inputs that may be huge
    expected = expected_provenance(name, config, workdir)
    output = workdir / stage.output
    ckpt = None
    if stage.checkpoints:
        ckpt = Checkpoint(checkpoint_path(workdir, name), expected, warn=console.warn)
        if force:
            ckpt.clear()
    if not force and _judge(name, expected, workdir, console, verified):
        console.info(f"[green]✓[/green] {name}: up to date ({output})")
        if ckpt is not None and ckpt.path.exists():
            # partial work of a run that was stopped after an earlier one had finished
            # (e.g. `--from factorize`, interrupted): the artifact it would have made is here
            ckpt.clear()
            console.info(f"  removed {ckpt.path}: partial work of an interrupted run, no longer needed")
        return False
    key = cache.provenance_key(expected)
    cache_size = config["compute"]["cache_size"]
    if not force and cache.restore(stage, workdir, expected, recorded_provenance(name, workdir), console.warn,
                                   keep_current=cache_size > 0):
        verified.add(output)
        if ckpt is not None:
            ckpt.clear()
        console.info(f"[green]✓[/green] {name}: restored from cache ({output})")
        return False
    remedy = _check_memory(name, config, workdir)
    console.info(f"[bold]→ {name}[/bold]")
    started = time.perf_counter()
    with _stage_errors(name, remedy, ckpt):
        budget = resources.memory_budget(config)
        # the checksums of big inputs are computed in a thread while the stage starts on them,
        # and waited for before anything it computed is checked or written; the stage's slow
        # imports load in a thread meanwhile (after the reads: h5py reads holding the GIL, an
        # import beside them only slows them down)
        upstream = {up: read_upstream(up, workdir, verified, stage.streamed_inputs(up), budget, meanwhile=True,
                                      skip=stage.unread_inputs(up))
                    for up in stage.inputs}
        with stage.importing_meanwhile(), verified_on_exit(upstream.values()), \
                console.capture_warnings() as warnings_seen:
            stage.check_inputs(upstream, expected["params"])
            kwargs = {"checkpoint": ckpt} if ckpt is not None else {}
            if stage.uses_engine and engine is not None:
                kwargs["engine"] = engine
            result = stage.run(config, workdir, console, upstream, **kwargs)
            if not stage.writes_files:
                stage.check_output(result[0], upstream)
    seconds = time.perf_counter() - started
    if cache_size > 0:
        cache.keep(stage, workdir, recorded_provenance(name, workdir), key)
    if stage.writes_files:
        files = result.get("files", {}) if isinstance(result, dict) else {}
        digests = {rel: hashlib.sha256(data).hexdigest() for rel, data in files.items()}
        resources.check_disk(workdir, sum(len(d) for d in files.values()), f"the {name} files")
        stage.write(workdir, result, provenance={**expected, "files": digests}, seconds=seconds,
                     warnings=warnings_seen)
    else:
        datasets, attrs = result
        with _stage_errors(name, remedy, ckpt):  # a streamed dataset is computed while it is written
            write_h5(
                output,
                datasets,
                stage=name,
                params=expected["params"],
                config=config.values,
                inputs=expected["inputs"],
                # (seconds with the write: a streamed dataset is computed while it is written)
                attrs={**attrs, "seconds": lambda: time.perf_counter() - started, "warnings": warnings_seen},
            )
    verified.add(output)
    if ckpt is not None:
        ckpt.clear()
    cache.discard(stage, workdir, key)  # (after --force) superseded by this fresh result
    seconds = time.perf_counter() - started  # (with the write: a streamed dataset is computed then)
    console.info(f"[green]✓[/green] {name}: wrote {output} ({seconds:.1f} s)")
    return True


@contextlib.contextmanager
def _stage_errors(name: str, remedy: str, ckpt):
    """A stage's failures as one-line errors naming it (around its run, and around the write of
    its artifact, where a streamed dataset is computed)."""
    try:
        yield
    except Interrupted as exc:
        exc.stage = name
        if ckpt is not None and ckpt.path.exists():
            exc.checkpoint = ckpt.path
        raise
    except MemoryError as exc:
        raise ResourceError(f"{name}: ran out of memory ({exc or 'allocation failed'}); {remedy}") from None
    except FloatingPointError as exc:
        raise NumericalError(f"{name}: {exc}; check the input traces for extreme values") from None


def _bound_cache(workdir: Path, limit: int, console: Console) -> None:
    """At the end of a command (not after each stage: a run switching back to earlier
    results must not evict the ones its later stages are about to restore)."""
    removed, _ = cache.collect(workdir, limit)
    if removed:
        freed = resources.format_bytes(sum(e.size for e in removed))
        console.info(f"cache: removed {len(removed)} earlier result(s) ({freed}) to stay within "
                     f"compute.cache_size ({resources.format_bytes(limit)})")


def _prepare(workdir: Path, console: Console) -> None:
    for leftover in clean_temporaries(workdir):
        console.info(f"removed a temporary file left by an interrupted run: {leftover.name}")


def run_pipeline(
    config: Config,
    workdir: Path,
    console: Console,
    *,
    force: bool = False,
    start: str | None = None,
    stop: str | None = None,
) -> list[str]:
    """Run the stages from ``start`` to ``stop`` under the work-directory lock; ``start``
    and later are recomputed when ``start`` is given explicitly. Returns the names of the
    stages that ran."""
    names = stage_range(start, stop)
    preflight(config, names)
    ran = []
    with WorkdirLock(workdir, console, command="dynconn run"), engines.Engine.from_config(config, console) as engine:
        _prepare(workdir, console)
        verified = Verified()
        for i, name in enumerate(names):
            interrupt.check()  # a stop whose exception was swallowed during the last stage
            if run_stage(name, config, workdir, console, force=force or start is not None,
                         verified=verified, engine=engine):
                ran.append(name)
            check_ahead(name, names[i + 1:], config, workdir)
        _bound_cache(workdir, config["compute"]["cache_size"], console)
    return ran


def run_one(name: str, config: Config, workdir: Path, console: Console, *, force: bool = False) -> bool:
    """One stage command (``dynconn affinity CONFIG``) under the work-directory lock."""
    if name not in STAGES:
        raise DynconnError(f"unknown stage {name!r}; stages are {', '.join(ORDER)}")
    preflight(config, [name])
    with WorkdirLock(workdir, console, command=f"dynconn {name}"), engines.Engine.from_config(config, console) as engine:
        _prepare(workdir, console)
        ran = run_stage(name, config, workdir, console, force=force, engine=engine)
        _bound_cache(workdir, config["compute"]["cache_size"], console)
        return ran


def collect_cache(workdir: Path, limit: int, console: Console) -> tuple[list, list]:
    """``dynconn gc``: under the work-directory lock, remove temporaries left by killed
    runs and the least recently kept cache entries until the cache holds at most ``limit``
    bytes. Returns (removed, remaining) entries."""
    with WorkdirLock(workdir, console, command="dynconn gc"):
        _prepare(workdir, console)
        return cache.collect(workdir, limit)


def factorize_file(in_path: Path, out_path: Path, options: dict, console: Console) -> None:
    """``dynconn factorize --in AFFINITY.h5 --out FACTORS.h5``: the factorize stage on one file,
    through the same :class:`Stage` calls as ``dynconn run`` (memory estimate, input checks,
    output guards), under the output folder's lock; the input is read and verified once."""
    from ..config import SCHEMA, _check_section

    stage = STAGES["factorize"]
    in_path, out_path = Path(in_path), Path(out_path)
    section = _check_section("factorize", SCHEMA["factorize"], options, Path.cwd())
    config = {"factorize": section}
    with WorkdirLock(out_path.parent.absolute(), console, command="dynconn factorize --out"):
        for leftover in clean_temporaries(out_path.parent, only=out_path.name):
            console.info(f"removed a temporary file left by an interrupted run: {leftover.name}")
        need, remedy = stage.estimate_memory(config, {"affinity": dataset_shapes(in_path)})
        resources.check_memory(stage.name, need, remedy)
        try:
            # verified against its checksums; over the memory budget the tensor stays on disk
            lazy = _over_budget(in_path, stage.streamed_inputs("affinity"), resources.memory_budget(config))
            upstream = {"affinity": read_h5(in_path, lazy=lazy, meanwhile=True)}
            # the solver's slow imports (tensorly) in a thread while it fits and the tensor's
            # checksum is computed; not beside the read, which holds the GIL (run_stage)
            with stage.importing_meanwhile(), verified_on_exit(upstream.values()), \
                    console.capture_warnings() as seen:
                stage.check_inputs(upstream, section)
                datasets, attrs = stage.run(config, out_path.parent, console, upstream)
                stage.check_output(datasets, upstream)
        except MemoryError as exc:
            raise ResourceError(f"factorize: ran out of memory ({exc or 'allocation failed'}); {remedy}") from None
        except FloatingPointError as exc:
            raise NumericalError(f"factorize: {exc}") from None
        write_h5(out_path, datasets, stage=stage.name, params=stage.params(config),
                 inputs={"affinity": upstream["affinity"].fingerprint}, attrs={**attrs, "warnings": seen})

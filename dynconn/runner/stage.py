"""The stage protocol and the list of stages, as the runner sees them.

A stage module (``dynconn/stages/<name>.py``) provides ``NAME``, ``OUTPUT``, ``UPSTREAM``
(names of the stages whose artifacts it reads), ``params(config) -> dict`` and
``run(config, workdir, console, upstream) -> (datasets, attrs)``; optionally ``inputs(config,
workdir)`` and ``input_files(config)`` (the data files it reads: ingest), ``CHECKPOINTS = True``
(it saves partial work and receives a :class:`~dynconn.io.artifacts.Checkpoint` as the
``checkpoint`` keyword), ``ENGINE = True`` (it receives the command's
:class:`~dynconn.runner.engine.Engine` as the ``engine`` keyword: where its independent tasks
run), ``SLOW_IMPORTS`` (modules its ``run`` imports that take long to import: the runner
imports them in a thread while it reads and verifies the stage's inputs), and ``write(...)`` with ``recorded_provenance(workdir)`` for a stage
whose output is files rather than one HDF5 artifact (the report: its ``run`` returns
``{"files": {relative path: bytes}, ...}``; it also names the file recording its provenance,
``SUMMARY``, and provides ``remove_stale(workdir, files)``). ``STREAMED_INPUTS`` and
``UNREAD_INPUTS`` (``{upstream stage: (dataset, ...)}``) name the upstream datasets it reads by
blocks of rows when they exceed ``compute.memory_budget``, and those it never reads (left on
disk). Stage modules know nothing of the runner.

:class:`Stage` wraps such a module with what the runner adds per stage (memory estimate,
input and output guards), so that :mod:`dynconn.runner.pipeline` and the standalone
``dynconn factorize --in/--out`` run every stage through the same calls, without asking which
stage it is.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
from collections.abc import MutableMapping
from pathlib import Path
from types import ModuleType

from ..stages import ORDER
from ..errors import InputError
from . import guards, resources


class Stage:
    """One pipeline stage: ``name``, ``inputs`` (upstream stages), ``output`` (its file in the
    work directory), ``params``, ``estimate_memory``, ``check_inputs``, ``run``,
    ``check_output`` and, for a stage that writes files, ``write``."""

    def __init__(self, module: ModuleType):
        self.module = module

    def __repr__(self) -> str:
        return f"Stage({self.name})"

    @property
    def name(self) -> str:
        return self.module.NAME

    @property
    def output(self) -> str:
        return self.module.OUTPUT

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(self.module.UPSTREAM)

    def streamed_inputs(self, upstream: str) -> tuple[str, ...]:
        """Datasets of the ``upstream`` artifact this stage can read by blocks of rows from the
        file (a :class:`~dynconn.io.artifacts.RowBlocks` handle) instead of whole, when they
        exceed ``compute.memory_budget`` (module attribute ``STREAMED_INPUTS``)."""
        return tuple(getattr(self.module, "STREAMED_INPUTS", {}).get(upstream, ()))

    def unread_inputs(self, upstream: str) -> tuple[str, ...]:
        """Datasets of the ``upstream`` artifact this stage never reads (module attribute
        ``UNREAD_INPUTS``): the runner leaves them on disk, neither loaded nor counted in the
        stage's memory estimate (the communities stage and the affinity tensor)."""
        return tuple(getattr(self.module, "UNREAD_INPUTS", {}).get(upstream, ()))

    @property
    def checkpoints(self) -> bool:
        return getattr(self.module, "CHECKPOINTS", False)

    @property
    def uses_engine(self) -> bool:
        """True when ``run`` takes the pipeline's :class:`~dynconn.runner.engine.Engine` (the
        ``engine`` keyword; module attribute ``ENGINE = True``): its independent tasks can run
        on a Dask cluster."""
        return getattr(self.module, "ENGINE", False)

    @property
    def writes_files(self) -> bool:
        """True when the output is files written by the stage's own ``write`` (the report),
        not one HDF5 artifact written by the runner."""
        return hasattr(self.module, "write")

    @property
    def reads_data_files(self) -> bool:
        """True for the stage that reads the user's data files (ingest)."""
        return hasattr(self.module, "input_files")

    @contextlib.contextmanager
    def importing_meanwhile(self):
        """Import the module's ``SLOW_IMPORTS`` in a background thread for the duration of the
        block (the runner opens it once the inputs are read -- an h5py read holds the GIL, an
        import beside it slows it down -- around the stage's run: the solver's BLAS and the
        inputs' checksums, computed meanwhile, release the GIL, so the imports use the second core).
        An import that fails there is left to fail again, with its own error, where ``run``
        imports it; the thread is joined on leaving, so no import outlives the block."""
        names = tuple(getattr(self.module, "SLOW_IMPORTS", ()))

        def load() -> None:
            for module in names:
                try:
                    importlib.import_module(module)
                except Exception:  # noqa: BLE001 -- reported by run()'s own import
                    continue

        thread = threading.Thread(target=load, name=f"dynconn-{self.name}-imports", daemon=True)
        if names:
            thread.start()
        try:
            yield
        finally:
            if names:
                thread.join()

    def check_input_files(self, config) -> None:
        """Data inputs must be regular files (a FIFO or a device would hang the fingerprint)."""
        for path in self.input_files(config):
            if path.exists() and not (path.is_file() or path.is_dir()):
                raise InputError(f"{path}: not a regular file (a device, pipe or socket); give a data file")

    def preflight(self, config) -> None:
        """What can be checked from the config alone, before any stage runs: the data inputs
        are regular files (a FIFO would block), then the module's own ``preflight(config)``."""
        if self.reads_data_files:
            self.check_input_files(config)
        check = getattr(self.module, "preflight", None)
        if check is not None:
            check(config)

    def check_ahead(self, config, shapes: dict) -> None:
        """What this stage can check once earlier stages' artifacts exist (``shapes[stage]``:
        their datasets' shapes), before the stages in between run: ``dynconn run`` asks every
        later stage after each stage. The module's own ``check_ahead(config, shapes, budget)``, if
        any (``budget``: ``compute.memory_budget`` in bytes, resolved)."""
        check = getattr(self.module, "check_ahead", None)
        if check is not None:
            check(config, shapes, resources.memory_budget(config))

    def params(self, config) -> dict:
        return self.module.params(config)

    def input_files(self, config) -> list[Path]:
        """The data files this stage reads (none for a stage that reads only artifacts)."""
        return self.module.input_files(config) if self.reads_data_files else []

    def input_fingerprints(self, config, workdir: Path) -> dict[str, str]:
        """Fingerprints of the data files this stage reads, for its provenance."""
        return self.module.inputs(config, workdir) if hasattr(self.module, "inputs") else {}

    def estimate_memory(self, config, upstream_shapes: dict) -> tuple[int, str]:
        """(bytes needed, the option that lowers it); ``upstream_shapes[stage][dataset] =
        (shape, itemsize)`` of the HDF5 artifacts it reads (see :func:`resources.estimate`)."""
        return resources.estimate(self.name, config, upstream_shapes, self.input_files(config))

    def check_inputs(self, upstream: dict, params: dict) -> None:
        guards.check_inputs(self.name, upstream, params)

    def run(self, config, workdir: Path, console, upstream: dict, **kwargs):
        return self.module.run(config, workdir, console, upstream, **kwargs)

    def check_output(self, datasets: dict, upstream: dict) -> None:
        """Refuse non-finite values where they must not be; warn about degenerate results."""
        guards.check_output(self.name, datasets, upstream)
        guards.degenerate_warnings(self.name, datasets)

    def write(self, workdir: Path, result: dict, **kwargs) -> None:
        self.module.write(workdir, result, **kwargs)

    def recorded_provenance(self, workdir: Path) -> dict | None:
        """For a file-writing stage: what its output records about how it was made."""
        return self.module.recorded_provenance(workdir)

    @property
    def provenance_file(self) -> str:
        """For a file-writing stage: the relative path of the file that records its
        provenance (written last; the result cache restores it last too)."""
        return str(Path(self.module.SUMMARY))

    def remove_stale(self, workdir: Path, files: set[str]) -> None:
        """For a file-writing stage: remove the files it owns that are not among ``files``."""
        self.module.remove_stale(workdir, files)


class _Stages(MutableMapping):
    """Stage name -> :class:`Stage`, in pipeline order; a stage's module is imported when the
    stage is first asked for (``dynconn factorize --in`` needs neither the report's plotting nor
    the ingest readers)."""

    def __init__(self, names):
        self._names = tuple(names)
        self._loaded: dict[str, Stage] = {}

    def __getitem__(self, name: str) -> Stage:
        if name not in self._names:
            raise KeyError(name)
        if name not in self._loaded:
            self._loaded[name] = Stage(importlib.import_module(f"dynconn.stages.{name}"))
        return self._loaded[name]

    def __setitem__(self, name: str, stage: Stage) -> None:  # (tests put a modified stage in)
        if name not in self._names:
            raise KeyError(f"unknown stage {name!r}")
        self._loaded[name] = stage

    def __delitem__(self, name: str) -> None:  # the stage is imported again when next asked for
        self._loaded.pop(name, None)

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


#: every stage, in pipeline order (the order is :data:`dynconn.stages.ORDER`)
STAGES: MutableMapping[str, Stage] = _Stages(ORDER)

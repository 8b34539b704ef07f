"""Shared fixtures: a simulated dataset and one pipeline run on it, reused by many tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

# Tests must see real bugs: internal errors re-raise instead of becoming one line (cli.py).
os.environ.setdefault("DYNCONN_DEBUG", "1")

from dynconn.cli import main
from dynconn.simulate import write_dataset

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def cli(*args, cwd: Path | None = None):
    """Run the CLI in-process; returns click's Result (exit_code, stdout, stderr)."""
    runner = CliRunner()
    old = Path.cwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)
    finally:
        os.chdir(old)


def cli_subprocess(*args, cwd: Path | None = None, timeout: float = 600):
    """Run ``python -m dynconn`` in a child process (exit status, stderr as a user sees them)."""
    return subprocess.run([sys.executable, "-m", "dynconn", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under a folder with its size and mtime: to check nothing changed."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def finished_dataset(tmp_path_factory, seed: int, *run_args) -> Path:
    """A small simulated dataset with a finished ``dynconn run`` (``run_args`` e.g.
    ``--until affinity``); returns its folder. For module-scoped fixtures."""
    config = write_dataset(tmp_path_factory.mktemp("finished") / "data", "small", seed)
    without_surrogates(config.parent)
    result = cli("run", config, "-q", *run_args)
    assert result.exit_code == 0, result.output
    return config.parent


def copy_dataset(folder: Path, tmp_path: Path) -> Path:
    """A fresh copy of a dataset folder (with its run) that a test may break."""
    copy = tmp_path / "data"
    shutil.copytree(folder, copy)
    return copy


def edit_config(folder: Path, change) -> None:
    """Apply ``change(dict)`` to ``folder/config.yaml``."""
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    change(cfg)
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))


@pytest.fixture(scope="session")
def standard_dataset(tmp_path_factory) -> Path:
    """The simulator's ``basic`` preset (seed 0; it was ``standard`` before the realistic
    generator, and the tests' measurements were made on it); returns its config.yaml."""
    return write_dataset(tmp_path_factory.mktemp("standard"), "basic", 0)


@pytest.fixture(scope="session")
def standard_run(standard_dataset) -> Path:
    """The whole pipeline run once on the ``basic`` preset; returns the workdir."""
    result = cli("run", standard_dataset, "--quiet")
    assert result.exit_code == 0, result.output
    return standard_dataset.parent / "run"


def without_surrogates(folder: Path) -> None:
    """``report.surrogates: 0`` in a dataset's config: the many pipeline runs of the tests
    that are not about significance skip the null model (its cost, docs/benchmarks.md);
    tests/test_trust.py runs it."""
    edit_config(folder, lambda cfg: cfg.setdefault("report", {}).update(surrogates=0))


@pytest.fixture
def small_dataset(tmp_path) -> Path:
    """A fresh small simulated dataset per test (safe to modify; without surrogates); returns config.yaml."""
    config = write_dataset(tmp_path / "data", "small", 1)
    without_surrogates(config.parent)
    return config


_BLAS = None


@pytest.fixture(autouse=True)
def blas_threads_restored():
    """Every test starts with the BLAS thread counts the session started with, and leaves the
    thread variables of os.environ as it found them.

    BLAS's thread count is process-wide; tests that fit in several threads of this process at once
    (Dask workers with processes=False) can leave it changed (the limit nested across threads is
    restored in the wrong order), and a later test's in-process fit then sums in another order
    than its subprocess did (seen under OPENBLAS_CORETYPE=Sandybridge: a resumed artifact's
    diagnostics differed in the last bit)."""
    global _BLAS
    from threadpoolctl import ThreadpoolController

    if _BLAS is None:
        controller = ThreadpoolController().select(user_api="blas")
        _BLAS = (controller, [lib.num_threads for lib in controller.lib_controllers])
    controller, counts = _BLAS
    for lib, n in zip(controller.lib_controllers, counts):
        if lib.num_threads != n:
            lib.set_num_threads(n)
    environ = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    yield
    for key, value in environ.items():  # (distributed's nanny sets them in this process: runner/engine.py)
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value

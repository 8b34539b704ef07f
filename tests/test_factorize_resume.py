"""Issue 4, checkpoints: `dynconn run` killed during factorize (SIGTERM or SIGKILL) resumes from
the stage's last checkpoint on the next run, and ends with the factors of an uninterrupted run."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import cli
from dynconn.io.artifacts import read_h5
from dynconn.runner.pipeline import checkpoint_path

# The standard preset's tensor is 1128 pairs x 120 bins x 4 animals, ~1 ms per iteration on an idle
# 2-core machine (several times more when it is busy). With tol 0 these settings make factorize run
# a fixed number of iterations (1.5 s or more), saving every 0.1 s; the signal comes at the first save.
SETTINGS = {
    # rank sweep (4 ranks x 2 restarts x 150 iterations), then the chosen rank refined (400 iterations)
    "auto": ["factorize.rank=auto", "factorize.ranks=[2, 5]", "factorize.restarts=2",
             "factorize.sweep_max_iter=150", "factorize.sweep_tol=0", "factorize.max_iter=400",
             "factorize.tol=0"],
    # a fixed rank: 3 restarts x 500 iterations
    "fixed": ["factorize.rank=4", "factorize.restarts=3", "factorize.max_iter=500", "factorize.tol=0"],
}
CHECKPOINT_SECONDS = "factorize.checkpoint_seconds=0.1"


def sets(kind):
    return [x for s in (*SETTINGS[kind], CHECKPOINT_SECONDS) for x in ("--set", s)]


@pytest.fixture(scope="module")
def upstream(standard_run):
    """ingest.h5 and affinity.h5 of the standard preset (the session's run)."""
    return {name: (standard_run / name).read_bytes() for name in ("ingest.h5", "affinity.h5")}


def workdir_with(upstream, path):
    path.mkdir()
    for name, data in upstream.items():  # the same upstream artifacts: up to date, not recomputed
        (path / name).write_bytes(data)
    return path


def kill_during_factorize(config, workdir, kind, sig, tmp_path):
    """Start `dynconn run` in a child process, wait for factorize's checkpoint, send ``sig``."""
    log = tmp_path / f"{kind}-{sig.name}.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "dynconn", "run", str(config), "--until", "factorize",
                                 "--workdir", str(workdir), *sets(kind)], stdout=subprocess.DEVNULL, stderr=err)
        ckpt = checkpoint_path(workdir, "factorize")
        deadline = time.monotonic() + 120
        while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ckpt.exists(), f"no checkpoint appeared: {log.read_text()}"
        proc.send_signal(sig)
        status = proc.wait(timeout=60)
    return status, log.read_text()


@pytest.mark.parametrize("kind, sig", [("auto", signal.SIGTERM), ("fixed", signal.SIGKILL)])
def test_interrupted_factorize_resumes_to_the_uninterrupted_factors(upstream, standard_dataset, tmp_path,
                                                                    kind, sig):
    reference = workdir_with(upstream, tmp_path / "reference")
    result = cli("run", standard_dataset, "-q", "--until", "factorize", "--workdir", reference, *sets(kind))
    assert result.exit_code == 0, result.output
    assert not checkpoint_path(reference, "factorize").exists()  # removed once factors.h5 is written

    workdir = workdir_with(upstream, tmp_path / "interrupted")
    status, err = kill_during_factorize(standard_dataset, workdir, kind, sig, tmp_path)
    assert not (workdir / "factors.h5").exists(), "factorize finished before the signal"
    if sig == signal.SIGTERM:
        assert status == 143, err
        assert "partial work saved in" in err.strip().splitlines()[-1], err
    else:
        assert status == -signal.SIGKILL
    # the checkpoint holds work done: some finished rank, restart or iteration
    saved = read_h5(checkpoint_path(workdir, "factorize"))
    progress = {k: int(np.ravel(v)[0]) for k, v in saved.data.items()
                if k.rsplit("/", 1)[-1] in ("rank_index", "restart", "iteration")}
    assert sum(progress.values()) > 0, progress

    result = cli("run", standard_dataset, "--until", "factorize", "--workdir", workdir, *sets(kind))
    assert result.exit_code == 0, result.output
    found = re.search(r"resuming (the rank sweep|the final fit|after the rank sweep)[^\n]*", result.stderr)
    assert found, result.stderr  # it resumed from the checkpoint
    print(found.group(0), progress)
    assert not checkpoint_path(workdir, "factorize").exists()

    want, got = read_h5(reference / "factors.h5"), read_h5(workdir / "factors.h5")
    for name in ("weights", "factors/pairs", "factors/time", "factors/animals"):
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert got.fingerprint == want.fingerprint  # every dataset, diagnostics included

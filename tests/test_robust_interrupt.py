"""Interruption: stop signals end cleanly; a checkpointing stage saves and resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import types

import numpy as np
import pytest

from conftest import cli
from dynconn.methods import ntf
from dynconn.runner import interrupt, pipeline
from dynconn.stages import factorize
from dynconn.io.artifacts import Checkpoint, read_h5
from dynconn.errors import Interrupted
from dynconn.runner.lock import LOCK_NAME
from dynconn.runner.stage import Stage
from dynconn.simulate import write_dataset

# makes the small preset's factorize stage last a few seconds
SLOW = ["--set", "factorize.restarts=8", "--set", "factorize.tol=0"]


def start_run(config, *extra):
    return subprocess.Popen([sys.executable, "-m", "dynconn", "run", str(config), *SLOW, *extra],
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def wait_for(proc, text, timeout=120):
    """Read the child's stderr until a line contains ``text``."""
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        if text in line:
            return seen
    raise AssertionError(f"never saw {text!r}: {''.join(seen)}")


@pytest.mark.parametrize("sig,status,name", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "SIGINT")])
def test_stop_signal_during_a_stage_exits_cleanly(tmp_path, sig, status, name):
    config = write_dataset(tmp_path / "d", "small", 6)
    workdir = config.parent / "run"
    proc = start_run(config)
    wait_for(proc, "→ factorize")
    time.sleep(0.5)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == status, err
    # factorize saves its solver state when stopped mid-fit (docs/factorization.md, "Checkpoints")
    ckpt = pipeline.checkpoint_path(workdir, "factorize")
    saved = f"partial work saved in {ckpt}; " if ckpt.exists() else ""
    assert err.strip().splitlines()[-1] == (
        f"interrupted by {name} during factorize; finished artifacts are kept; {saved}rerun the same "
        "command to continue")
    assert "Traceback" not in err
    names = sorted(p.name for p in workdir.iterdir() if p.name != "checkpoints")
    assert names == ["affinity.h5", "ingest.h5"], names  # no temp file, no lock, no partial factors
    if ckpt.exists():
        assert [p.name for p in ckpt.parent.iterdir()] == ["factorize.h5"]
    result = cli("run", config, *SLOW, "--until", "affinity")
    assert result.exit_code == 0
    assert "ingest: up to date" in result.stderr and "affinity: up to date" in result.stderr


def test_a_stop_swallowed_by_library_code_still_ends_the_run(tmp_path, monkeypatch):
    """The handler runs wherever the main thread is; code there may swallow the exception (a
    bare ``except:`` around a library's optional import). The stop is remembered: the run ends
    before the next stage, with the usual message and status, and nothing after it is written."""
    config = write_dataset(tmp_path / "d", "small", 6)
    workdir = config.parent / "run"
    real_run = pipeline.STAGES["affinity"].run

    def swallowing_run(*args, **kwargs):
        try:  # what a careless library does
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        except:  # noqa: E722
            pass
        return real_run(*args, **kwargs)

    monkeypatch.setattr(pipeline.STAGES["affinity"], "run", swallowing_run)
    result = cli("run", config)
    assert result.exit_code == 143, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "interrupted by SIGTERM; finished artifacts are kept; rerun the same command to continue")
    # affinity finished (its result is valid), factorize never started
    assert sorted(p.name for p in workdir.iterdir()) == ["affinity.h5", "ingest.h5"]
    assert "→ factorize" not in result.stderr
    # the same in a single-stage command: not reported as a success
    monkeypatch.setattr(pipeline.STAGES["affinity"], "run", swallowing_run)
    result = cli("affinity", config, "--force")
    assert result.exit_code == 143, result.stderr


def test_signal_handlers_are_restored():
    before = signal.getsignal(signal.SIGTERM)
    with interrupt.signals_handled():
        assert signal.getsignal(signal.SIGTERM) is not before
        with pytest.raises(Interrupted) as info:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        assert info.value.exit_status == 143
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_stop_raised_in_a_finalizer_prints_no_traceback_and_is_raised_again(monkeypatch):
    """A signal can arrive while the main thread runs a finalizer (a weakref callback at exit,
    logging's lock release): what the handler raises there goes to sys.unraisablehook, which
    prints "Exception ignored in" with a traceback; the stop must stay pending instead and show
    as the one-line message only (the chaos benchmark saw such a traceback after SIGTERM)."""
    printed = []  # what would have been printed: the hook in place before the block
    monkeypatch.setattr(sys, "unraisablehook", printed.append)

    class Finalized:
        def __init__(self, error):
            self.error = error

        def __del__(self):
            if self.error is None:
                interrupt._handler(signal.SIGTERM, None)  # what the signal handler does there
            raise self.error

    with interrupt.signals_handled():
        Finalized(None)  # collected at once: __del__ runs and raises Interrupted inside it
        assert printed == [] and interrupt.stop_requested()
        with pytest.raises(Interrupted):
            interrupt.check()
        Finalized(ValueError("other"))  # any other unraisable error is printed as before
        assert [type(info.exc_value) for info in printed] == [ValueError]
    assert sys.unraisablehook == printed.append


def test_deferred_stop_is_raised_at_the_safe_point():
    with interrupt.signals_handled():
        with pytest.raises(Interrupted):
            with interrupt.deferred():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)
                assert interrupt.stop_requested()  # not raised yet: the stage decides when
                interrupt.check()
                raise AssertionError("check() must raise")
        # a second signal while one is pending raises at once
        with pytest.raises(Interrupted):
            with interrupt.deferred():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)
                raise AssertionError("the second signal must raise")


def checkpointing_factorize(stop_after: int | None):
    """The factorize stage as a checkpointing stage (what the hook is for): the solver's
    state goes through ``checkpoint.offer``; SIGTERM arrives after ``stop_after`` iterations."""
    count = {"n": 0}

    def run(config, workdir, console, upstream, checkpoint):
        aff, p = upstream["affinity"], config["factorize"]
        state = checkpoint.load()
        count["resumed_at"] = None if state is None else int(state.get("current", {}).get("iteration", -1))

        def on_iteration(i, loss):
            count["n"] += 1
            if stop_after is not None and count["n"] == stop_after:
                os.kill(os.getpid(), signal.SIGTERM)

        with checkpoint.saving_on_stop():
            result = ntf.ncp_restarts(aff["affinity"], p["rank"], mask=aff["mask"], n_restarts=p["restarts"],
                                      random_state=p["seed"], max_iter=p["max_iter"], tol=p["tol"],
                                      init=p["init"], resume=state, checkpoint_every=1,
                                      on_checkpoint=checkpoint.offer, on_iteration=on_iteration)
        weights, (f_pairs, f_time, f_animals) = result.cp
        return {"weights": np.asarray(weights, np.float64), "factors/pairs": np.asarray(f_pairs, np.float32),
                "factors/time": np.asarray(f_time, np.float64),
                "factors/animals": np.asarray(f_animals, np.float64)}, {"rank": p["rank"]}

    module = types.SimpleNamespace(NAME="factorize", OUTPUT=factorize.OUTPUT, UPSTREAM=factorize.UPSTREAM,
                                   params=factorize.params, CHECKPOINTS=True, run=run)
    return module, count


def test_checkpointing_stage_saves_on_sigterm_and_resumes_to_the_same_result(tmp_path, monkeypatch):
    config = write_dataset(tmp_path / "d", "small", 7)
    workdir = config.parent / "run"
    args = ["--until", "factorize", "--set", "factorize.restarts=2", "--set", "factorize.tol=0",
            "--set", "factorize.max_iter=60"]
    assert cli("run", config, "-q", "--until", "affinity").exit_code == 0

    # uninterrupted reference
    module, _ = checkpointing_factorize(None)
    monkeypatch.setitem(pipeline.STAGES, "factorize", Stage(module))
    assert cli("run", config, "-q", *args).exit_code == 0
    reference = read_h5(workdir / "factors.h5").fingerprint
    (workdir / "factors.h5").unlink()

    # interrupted after 75 iterations (second restart), then resumed
    module, count = checkpointing_factorize(75)
    monkeypatch.setitem(pipeline.STAGES, "factorize", Stage(module))
    result = cli("run", config, *args)
    assert result.exit_code == 143
    ckpt = pipeline.checkpoint_path(workdir, "factorize")
    assert result.stderr.strip().splitlines()[-1] == (
        f"interrupted by SIGTERM during factorize; finished artifacts are kept; partial work saved in "
        f"{ckpt}; rerun the same command to continue")
    assert ckpt.exists() and not (workdir / "factors.h5").exists()

    module, count = checkpointing_factorize(None)
    monkeypatch.setitem(pipeline.STAGES, "factorize", Stage(module))
    result = cli("run", config, *args)
    assert result.exit_code == 0, result.output
    assert count["resumed_at"] == 15  # the second restart resumed at its 15th iteration
    assert count["n"] == 45  # only the remaining iterations ran
    assert read_h5(workdir / "factors.h5").fingerprint == reference
    assert not ckpt.exists() and not ckpt.parent.exists()  # removed once the artifact is written
    assert not (workdir / LOCK_NAME).exists()


def test_checkpoint_of_another_computation_or_damaged_is_ignored(tmp_path):
    path = tmp_path / "checkpoints" / "x.h5"
    state = {"format": "s/1", "iteration": 3, "arr": np.arange(4.0), "inner": {"a": np.ones(2), "none": None}}
    Checkpoint(path, {"params": 1}).save(state)
    loaded = Checkpoint(path, {"params": 1}).load()
    assert loaded["format"] == "s/1" and loaded["iteration"] == 3 and loaded["inner"]["none"] is None
    np.testing.assert_array_equal(loaded["arr"], state["arr"])
    assert Checkpoint(path, {"params": 2}).load() is None and not path.exists()
    Checkpoint(path, {"params": 1}).save(state)
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size // 2)
    warned = []
    assert Checkpoint(path, {"params": 1}, warn=warned.append).load() is None
    assert warned and "damaged checkpoint" in warned[0]

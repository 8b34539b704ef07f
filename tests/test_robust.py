"""Nothing lost, nothing silently wrong: locks, integrity, resources, numerics, internal errors."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys

import h5py
import numpy as np
import pytest

from conftest import cli, copy_dataset, finished_dataset, snapshot
from dynconn.io import artifacts
from dynconn.runner import pipeline
from dynconn.stages import affinity
from dynconn.io.artifacts import read_h5
from dynconn.runner.lock import LOCK_NAME, WorkdirLock
from dynconn.simulate import write_dataset

H5 = ("ingest.h5", "affinity.h5", "factors.h5", "communities.h5")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A small dataset with one finished run (copied fresh for each test)."""
    return finished_dataset(tmp_path_factory, 4)


@pytest.fixture
def data(finished, tmp_path):
    return copy_dataset(finished, tmp_path)


def fingerprints(workdir):
    return {name: read_h5(workdir / name).fingerprint for name in H5}


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def last_line(result) -> str:
    return result.stderr.strip().splitlines()[-1]


# ----------------------------------------------------------------------------- lock
def test_second_run_on_a_locked_workdir_is_refused_at_once(data):
    workdir = data / "run"
    before = snapshot(workdir)
    with WorkdirLock(workdir, command="dynconn run"):
        for args in (["run"], ["affinity"], ["report", "--force"]):
            result = cli(*args, data / "config.yaml")
            assert result.exit_code == 1
            line = last_line(result)
            assert line.startswith("error: ") and "in use by pid" in line, line
            assert f"pid {os.getpid()}" in line and socket.gethostname() in line and "started" in line
    assert not (workdir / LOCK_NAME).exists()  # released and removed
    before.pop(LOCK_NAME, None)
    assert snapshot(workdir) == before


def test_lock_held_by_another_process(data):
    """A real second process: flock excludes across processes, and is freed by SIGKILL."""
    workdir = data / "run"
    code = ("import sys, time; from pathlib import Path; from dynconn.runner.lock import WorkdirLock\n"
            "l = WorkdirLock(Path(sys.argv[1]), command='holder').acquire(); print('held', flush=True);"
            " time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(workdir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        result = cli("run", data / "config.yaml")
        assert result.exit_code == 1 and f"in use by pid {holder.pid}" in last_line(result)
    finally:
        holder.kill()
        holder.wait()
    result = cli("run", data / "config.yaml")  # the killed holder left a stale lock file
    assert result.exit_code == 0, result.output
    assert f"took over the lock of pid {holder.pid} on {socket.gethostname()}" in result.stderr
    assert "which is no longer running" in result.stderr and "pid reused" not in result.stderr
    assert not (workdir / LOCK_NAME).exists()


def test_stale_lock_is_taken_over_with_a_warning(data):
    workdir = data / "run"
    pid = dead_pid()
    (workdir / LOCK_NAME).write_text(json.dumps(
        {"pid": pid, "host": socket.gethostname(), "started": "2024-01-01T00:00:00", "command": "dynconn run"}))
    result = cli("run", data / "config.yaml")
    assert result.exit_code == 0, result.output
    assert (f"{workdir}: took over the lock of pid {pid} on {socket.gethostname()}, started "
            "2024-01-01T00:00:00 (dynconn run), which is no longer running") in " ".join(result.stderr.split())
    assert not (workdir / LOCK_NAME).exists()


def test_lock_left_by_another_host_is_not_taken_over(data):
    workdir = data / "run"
    (workdir / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "otherhost", "started": "x"}))
    result = cli("run", data / "config.yaml")
    assert result.exit_code == 1
    assert "otherhost" in last_line(result) and f"delete {workdir / LOCK_NAME}" in last_line(result)


def test_lock_is_released_when_a_stage_fails(data):
    (data / "worm1.csv").write_text("A,B\n1,x\n")
    assert cli("run", data / "config.yaml", "--force").exit_code == 1
    assert not (data / "run" / LOCK_NAME).exists()


# ----------------------------------------------------------------------------- leftovers
def test_killed_writers_temporaries_are_removed_but_live_ones_kept(data):
    workdir = data / "run"
    dead = dead_pid()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        stale = [workdir / f"affinity.h5.tmp-{dead}", workdir / "exports" / f"summary.json.tmp-{dead}"]
        alive = workdir / f"factors.h5.tmp-{live.pid}"
        other = workdir / "notes.tmp-draft"  # not one of ours: never touched
        for p in stale + [alive, other]:
            p.write_bytes(b"partial")
        result = cli("run", data / "config.yaml")
        assert result.exit_code == 0
        assert not any(p.exists() for p in stale)
        assert alive.exists() and other.exists()
        assert "removed a temporary file left by an interrupted run" in result.stderr
    finally:
        live.kill()
        live.wait()


# ----------------------------------------------------------------------------- integrity
def flip_byte(path, dataset, at=100):
    with h5py.File(path, "r") as f:
        ds = f[dataset]
        # a chunked dataset (affinity.h5's /affinity) has no single offset: its first chunk's
        offset = ds.id.get_offset() if ds.chunks is None else ds.id.get_chunk_info(0).byte_offset
    with open(path, "r+b") as fh:
        fh.seek(offset + at)
        byte = fh.read(1)
        fh.seek(offset + at)
        fh.write(bytes([byte[0] ^ 0x5A]))


def test_flipped_byte_in_a_dataset_is_detected_and_recomputed(data):
    workdir = data / "run"
    before = fingerprints(workdir)
    flip_byte(workdir / "affinity.h5", "affinity")
    insp = cli("inspect", workdir / "affinity.h5")
    assert insp.exit_code == 1
    assert "/affinity" in insp.stdout and "CHECKSUM MISMATCH" in insp.stdout
    assert "verifies: NO" in insp.stdout
    with pytest.raises(artifacts.ArtifactError, match="dataset /affinity fails its checksum"):
        read_h5(workdir / "affinity.h5")
    result = cli("run", data / "config.yaml")
    assert result.exit_code == 0, result.output
    assert "affinity.h5: dataset /affinity fails its checksum (corrupted); recomputing it" in result.stderr
    assert "→ affinity" in result.stderr
    # recomputed identically, so everything downstream stays up to date
    for stage in ("factorize", "communities", "report"):  # (ingest reruns: the copy moved its inputs)
        assert f"{stage}: up to date" in result.stderr
    assert fingerprints(workdir) == before
    assert cli("inspect", workdir / "affinity.h5").exit_code == 0


def test_truncated_artifact_is_detected_and_recomputed(data):
    workdir = data / "run"
    before = fingerprints(workdir)
    path = workdir / "ingest.h5"
    os.truncate(path, path.stat().st_size // 2)
    insp = cli("inspect", path)
    assert insp.exit_code == 1 and "unreadable or truncated" in insp.stdout
    # a single-stage command that reads it refuses, naming it
    result = cli("affinity", data / "config.yaml", "--force")
    assert result.exit_code == 1 and "ingest.h5" in last_line(result)
    result = cli("run", data / "config.yaml")
    assert result.exit_code == 0, result.output
    assert "ingest.h5: unreadable or truncated; recomputing it" in result.stderr
    assert fingerprints(workdir) == before


def test_corrupted_artifact_with_valid_metadata_is_never_used(data):
    """The data are damaged but every attribute still reads: the up-to-date check must
    not trust the attributes alone."""
    workdir = data / "run"
    flip_byte(workdir / "factors.h5", "factors/pairs", at=8)
    result = cli("run", data / "config.yaml")
    assert result.exit_code == 0
    assert "factors.h5: dataset /factors/pairs fails its checksum" in result.stderr
    assert "→ factorize" in result.stderr
    read_h5(workdir / "factors.h5")  # verifies


def test_inputs_checksummed_in_a_thread_are_read_only_and_give_the_same_run(data, monkeypatch):
    """Big inputs are checksummed in a thread while a stage starts on them (read_h5's
    ``meanwhile``); here every dataset takes that path: no stage may write into its inputs, and
    the run must be the same."""
    workdir = data / "run"
    before = fingerprints(workdir)
    monkeypatch.setattr(artifacts, "_MEANWHILE_BYTES", 0)
    result = cli("run", data / "config.yaml", "-q", "--force", "--from", "affinity")
    assert result.exit_code == 0, result.output
    assert fingerprints(workdir) == before
    art = read_h5(workdir / "affinity.h5", meanwhile=True)
    assert art.pending and not art["affinity"].flags.writeable
    art.wait_verified()
    assert not art.pending and art["affinity"].flags.writeable


def test_damage_found_by_the_checksum_thread_is_the_error_reported(data, monkeypatch, tmp_path):
    """Computing on damaged data can fail in its own way (here: NaN in the tensor); the error
    reported is the damage, and nothing is written."""
    monkeypatch.setattr(artifacts, "_MEANWHILE_BYTES", 0)
    damaged = tmp_path / "affinity.h5"
    shutil.copy(data / "run" / "affinity.h5", damaged)
    with h5py.File(damaged, "r+") as f:  # the data change, their recorded checksum does not
        f["affinity"][0, :, :] = np.nan
    result = cli("factorize", "--in", damaged, "--out", tmp_path / "factors.h5", "--rank", "2")
    assert result.exit_code == 1
    assert last_line(result) == f"error: {damaged}: dataset /affinity fails its checksum (corrupted); recompute it"
    assert not (tmp_path / "factors.h5").exists()
    with pytest.raises(artifacts.ArtifactError, match="fails its checksum"):
        with artifacts.verified_on_exit([read_h5(damaged, meanwhile=True)]):
            raise ValueError("X has NaN")  # what the solver would have said


def test_modified_report_file_is_rewritten(data):
    workdir = data / "run"
    original = (workdir / "exports" / "communities.csv").read_bytes()
    (workdir / "exports" / "communities.csv").write_bytes(original[: len(original) // 2])
    result = cli("run", data / "config.yaml")
    assert result.exit_code == 0
    assert "communities.csv: does not match its recorded checksum" in result.stderr
    assert (workdir / "exports" / "communities.csv").read_bytes() == original


def test_inspect_prints_contents_and_provenance(data):
    result = cli("inspect", data / "run" / "factors.h5")
    assert result.exit_code == 0
    out = result.stdout
    for text in ("stage:           factorize", "params:", "inputs:", '"affinity"', "/factors/pairs",
                 "float32", "verifies: yes"):
        assert text in out, text
    (data / "junk.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + os.urandom(300))
    for target in (data / "junk.h5", data / "missing.h5", data):
        bad = cli("inspect", target)
        assert bad.exit_code == 1 and "verifies: NO" in bad.stdout


# ----------------------------------------------------------------------------- disk
def test_disk_full_during_a_write_leaves_no_partial_artifact(data, monkeypatch):
    workdir = data / "run"
    before = snapshot(workdir)
    real = h5py.Group.create_dataset

    def full(self, name, *args, **kwargs):
        if name == "affinity":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, name, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", full)
    result = cli("run", data / "config.yaml", "--force")
    assert result.exit_code == 1
    line = last_line(result)
    assert "affinity.h5: disk full while writing the artifact" in line, line
    assert "nothing was written under this name" in line
    after = snapshot(workdir)
    assert not [p for p in after if ".tmp-" in p]
    # ingest was rewritten (identical content), affinity.h5 is the previous, intact one
    assert after["affinity.h5"] == before["affinity.h5"]
    read_h5(workdir / "affinity.h5")


def test_not_enough_disk_is_refused_before_writing(data, monkeypatch):
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    shutil.rmtree(data / "run")
    result = cli("run", data / "config.yaml")
    assert result.exit_code == 1
    assert "not enough disk space to write ingest.h5" in last_line(result)
    assert not (data / "run").exists()  # a failed first run leaves nothing


UNSHARE = shutil.which("unshare")


def _can_mount_tmpfs() -> bool:
    if not UNSHARE:
        return False
    probe = subprocess.run([UNSHARE, "-rm", "sh", "-c", "mount -t tmpfs -o size=1m none /mnt"],
                           capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs user namespaces to mount a tiny tmpfs")
def test_real_full_disk_and_read_only_workdir_on_a_tiny_tmpfs(data):
    """Real file systems in a private mount namespace: a 700 KB tmpfs fills up, then is
    remounted read-only."""
    mnt = data / "mnt"
    mnt.mkdir()
    py, cfg, run = sys.executable, data / "config.yaml", mnt / "run"
    write_big = (
        "import sys, numpy as np; from pathlib import Path; from dynconn.io.artifacts import write_h5, ArtifactError\n"
        "try:\n"
        f"    write_h5(Path('{run}/big.h5'), {{'x': np.ones(200_000)}}, stage='t', params={{}}, check_space=False)\n"
        "except ArtifactError as exc:\n"
        "    print('ArtifactError:', exc)\n"
    )
    script = (
        f"mount -t tmpfs -o size=700k none {mnt} || exit 9; "
        f"{py} -m dynconn run {cfg} --workdir {run} -q; echo rc=$?; ls -a {run}; "
        f"{py} -c \"$WRITE_BIG\"; echo listing; ls -a {run}; "
        f"mount -o remount,ro {mnt}; {py} -m dynconn run {cfg} --workdir {run} -q; echo rc=$?"
    )
    env = {**os.environ, "DYNCONN_DEBUG": "1", "WRITE_BIG": write_big}
    proc = subprocess.run([UNSHARE, "-rm", "sh", "-c", script], capture_output=True, text=True,
                          env=env, timeout=300)
    out, err = proc.stdout, proc.stderr
    assert "Traceback" not in err, err
    assert out.count("rc=1") == 2, (out, err)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 2, err
    # the report does not fit: refused before writing, finished artifacts kept
    assert "not enough disk space to write" in errors[0], errors[0]
    first_listing = out.split("rc=1")[1].split("ArtifactError")[0]
    assert "ingest.h5" in first_listing and "report.html" not in first_listing
    # a write that runs out of space for real (ENOSPC from HDF5): clear error, no partial file
    assert "ArtifactError:" in out and "big.h5: disk full while writing the artifact" in out, out
    after = out.split("listing")[1].split("rc=")[0]
    assert ".tmp-" not in after and "big.h5" not in after, after
    # read-only: refused up front with the reason
    assert "cannot write into the work directory (Read-only file system)" in errors[1], errors[1]


# ----------------------------------------------------------------------------- memory
def test_oversized_request_is_refused_with_the_option_that_reduces_it(data, monkeypatch):
    # (estimates on this dataset: 2.5 MiB at the default 5 s bins, 4.7 MiB at 0.75 s = 3 frames a bin:
    # the tensor is smaller than one block of stages.affinity.BLOCK_BYTES here)
    monkeypatch.setenv("DYNCONN_MAX_MEMORY", "3M")
    assert cli("affinity", data / "config.yaml", "--force", "-q").exit_code == 0  # the default fits
    result = cli("affinity", data / "config.yaml", "--set", "affinity.bin_seconds=0.75")
    assert result.exit_code == 1
    line = last_line(result)
    assert line.startswith("error: affinity: needs about") and "DYNCONN_MAX_MEMORY" in line, line
    assert "affinity.bin_seconds" in line
    assert read_h5(data / "run" / "affinity.h5").json_attr("params")["bin_seconds"] == 5.0  # untouched


def test_estimate_scales_with_the_tensor():
    from dynconn.config import validate
    from dynconn.runner.resources import estimate

    cfg = validate({"data": {"sampling_rate": 4.0, "animals": [{"name": "a", "path": "a.csv"}]}}, base=".")
    shapes = {"ingest": {"traces": ((10, 300, 4 * 3600), 4)}}
    need, remedy = estimate("affinity", cfg, shapes)
    tensor = 300 * 299 // 2 * (4 * 3600 // 20) * 10 * 4
    signals = 10 * 2 * 300 * 4 * 3600 * 8  # every animal's positive and negative parts, float64
    assert signals <= need < tensor  # written by blocks of pairs: never the whole tensor
    assert "affinity.bin_seconds" in remedy
    aff = {"affinity": {"affinity": ((300 * 299 // 2, 4 * 3600 // 20, 10), 4)}}
    held, remedy = estimate("factorize", validate({**cfg.values, "compute": {"memory_budget": "10GB"}}, base="."), aff)
    assert 3 * tensor <= held and "compute.memory_budget" in remedy  # read, and unfolded (per-animal courses)
    shared = validate({**cfg.values, "compute": {"memory_budget": "10GB"}, "factorize": {"time_courses": "shared"}},
                      base=".")
    assert held - estimate("factorize", shared, aff)[0] == tensor  # the unfolded copy, exactly
    streamed, _ = estimate("factorize", validate({**cfg.values, "compute": {"memory_budget": "100MB"}}, base="."), aff)
    assert streamed < tensor / 4  # read from the file by blocks of 1024 pairs (and unfolded block by block)


def test_memory_error_during_a_stage_is_one_line(data, monkeypatch):
    def exhausted(*a, **k):
        raise MemoryError("Unable to allocate 80.0 GiB for an array")

    monkeypatch.setattr(affinity, "_block_values", exhausted)
    before = snapshot(data / "run")
    result = cli("affinity", data / "config.yaml", "--force")
    assert result.exit_code == 1
    line = last_line(result)
    assert "affinity: ran out of memory (Unable to allocate 80.0 GiB" in line and "bin_seconds" in line
    assert snapshot(data / "run") == before


def test_available_memory_takes_the_smallest_limit(monkeypatch):
    from dynconn.runner import resources

    monkeypatch.setattr(resources, "_meminfo_available", lambda: 8 << 30)
    monkeypatch.setattr(resources, "_cgroup_available", lambda: 2 << 30)
    monkeypatch.delenv("DYNCONN_MAX_MEMORY", raising=False)
    assert resources.available_memory().bytes == 2 << 30
    monkeypatch.setenv("DYNCONN_MAX_MEMORY", "500M")
    got = resources.available_memory()
    assert got.bytes == 500 << 20 and got.source == "DYNCONN_MAX_MEMORY"
    monkeypatch.setenv("DYNCONN_MAX_MEMORY", "lots")
    with pytest.raises(resources.ConfigError):
        resources.available_memory()


# ----------------------------------------------------------------------------- numerics
def test_nan_in_one_trace_is_reported_by_stage_animal_and_neuron(data, monkeypatch):
    """A NaN that appears in one neuron's signal inside the affinity stage."""
    real = affinity.differential_signal
    calls = []

    def poisoned(traces, *a, **k):
        s = real(traces, *a, **k)
        calls.append(1)
        if len(calls) == 2:  # second animal, third neuron of that animal
            s[2, 40] = np.nan
        return s

    monkeypatch.setattr(affinity, "differential_signal", poisoned)
    result = cli("affinity", data / "config.yaml", "--force")
    assert result.exit_code == 1
    line = last_line(result)
    ing = read_h5(data / "run" / "ingest.h5")
    animal = str(ing["animals"][1])
    neuron = str(np.asarray(ing["neurons"])[np.flatnonzero(ing["present"][:, 1])[2]])
    assert line.startswith("error: affinity: ") and "NaN" in line, line
    assert f"animal {animal}" in line and f"neuron {neuron} (in all" in line, line
    read_h5(data / "run" / "affinity.h5")  # the previous artifact is intact


def test_overflowing_value_in_an_input_trace_is_named(data):
    path = data / "worm2.csv"
    lines = path.read_text().splitlines()
    name = lines[0].split(",")[3]
    row = lines[50].split(",")
    row[3] = "1e308"
    lines[50] = ",".join(row)
    path.write_text("\n".join(lines) + "\n")
    result = cli("run", data / "config.yaml")
    assert result.exit_code == 1
    line = last_line(result)
    assert line.startswith("error: ingest: ") and "animal worm2" in line and f"neurons {name}" in line, line
    assert "Warning" not in result.stderr


def test_degenerate_inputs_warn_and_finish(tmp_path):
    """A constant neuron, an animal with two neurons: warnings, no crash, no NaN."""
    config = write_dataset(tmp_path / "d", "small", 5)
    folder = config.parent
    lines = (folder / "worm1.csv").read_text().splitlines()
    header = lines[0].split(",")
    lines = [lines[0]] + [",".join(["100"] + r.split(",")[1:]) for r in lines[1:]]
    (folder / "worm1.csv").write_text("\n".join(lines) + "\n")
    rows = (folder / "worm2.csv").read_text().splitlines()
    keep = [",".join(r.split(",")[:2]) for r in rows]
    (folder / "worm2.csv").write_text("\n".join(keep) + "\n")
    result = cli("run", config)
    assert result.exit_code == 0, result.output
    assert f"constant trace for {header[0]}" in result.stderr
    assert "animal worm2 has only 2 neuron(s)" in result.stderr
    summary = (folder / "run" / "exports" / "summary.json").read_text()
    assert "NaN" not in summary and "Infinity" not in summary


def test_all_zero_component_is_a_warning_not_a_crash(data, monkeypatch):
    from dynconn.stages import factorize

    real = factorize.compute

    def with_dead_component(aff, p, console, checkpoint=None):
        datasets, attrs = real(aff, p, console, checkpoint)
        for key in ("factors/pairs", "factors/time", "factors/animals"):
            datasets[key] = datasets[key].copy()
            datasets[key][:, -1] = 0
        datasets["weights"] = datasets["weights"].copy()
        datasets["weights"][-1] = 0
        return datasets, attrs

    monkeypatch.setattr(factorize, "compute", with_dead_component)
    result = cli("run", data / "config.yaml", "--from", "factorize")
    assert result.exit_code == 0, result.output
    assert "came out all zero" in result.stderr and "all-zero pair pattern" in result.stderr
    summary = json.loads((data / "run" / "exports" / "summary.json").read_text())
    assert summary["components"][-1]["communities"] == []


def test_all_zero_affinity_is_refused_clearly(data, monkeypatch):
    monkeypatch.setattr(affinity, "_block_values", lambda *a, **k: None)  # every block stays 0
    result = cli("run", data / "config.yaml", "--from", "affinity")
    assert result.exit_code == 1
    assert "factorize: every observed affinity is zero" in last_line(result)


# ----------------------------------------------------------------------------- internal errors
def test_internal_error_is_one_line_with_a_log_file(data, monkeypatch, tmp_path):
    def bug(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(affinity, "_block_values", bug)
    monkeypatch.delenv("DYNCONN_DEBUG")
    monkeypatch.setenv("DYNCONN_LOG_DIR", str(tmp_path / "logs"))
    result = cli("affinity", data / "config.yaml", "--force")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("internal error: RuntimeError: boom — please report it; details in ")
    assert "Traceback" not in result.stderr
    log = lines[-1].rsplit("details in ", 1)[1]
    text = open(log).read()
    assert "Traceback" in text and "RuntimeError: boom" in text
    assert not (data / "run" / LOCK_NAME).exists()
    monkeypatch.setenv("DYNCONN_DEBUG", "1")  # tests see the real exception
    with pytest.raises(RuntimeError, match="boom"):
        cli("affinity", data / "config.yaml", "--force")


def test_factorize_standalone_is_locked_and_verified(data):
    aff = data / "run" / "affinity.h5"
    out = data / "standalone" / "factors.h5"
    result = cli("factorize", "--in", aff, "--out", out, "--rank", "2", "--restarts", "1")
    assert result.exit_code == 0, result.output
    read_h5(out)
    flip_byte(aff, "affinity")
    result = cli("factorize", "--in", aff, "--out", out, "--rank", "2")
    assert result.exit_code == 1 and "fails its checksum" in last_line(result)
    with WorkdirLock(out.parent):
        result = cli("factorize", "--in", data / "run" / "ingest.h5", "--out", out, "--rank", "2")
        assert result.exit_code == 1 and "in use by" in last_line(result)


def test_verified_once_per_command(data, monkeypatch):
    """Each artifact is checksummed once per command, not once per use."""
    counts: dict[str, int] = {}
    real_verify, real_read = artifacts.verify_h5, artifacts.read_h5

    def counting_verify(path):
        counts[path.name] = counts.get(path.name, 0) + 1
        return real_verify(path)

    def counting_read(path, *, verify=True, **kwargs):
        if verify:
            counts[path.name] = counts.get(path.name, 0) + 1
        return real_read(path, verify=verify, **kwargs)

    monkeypatch.setattr(pipeline, "verify_h5", counting_verify)
    monkeypatch.setattr(pipeline, "read_h5", counting_read)
    assert cli("run", data / "config.yaml", "--force", "-q").exit_code == 0
    assert counts == {}  # everything read was written by this very command
    assert cli("run", data / "config.yaml", "-q").exit_code == 0
    assert counts == {name: 1 for name in H5}


def test_unusable_workdir_is_reported_before_any_work(data, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for workdir, message in ((blocker, "exists and is not a folder"),
                             (blocker / "sub", "cannot create the work directory")):
        result = cli("run", data / "config.yaml", "--set", f"workdir={workdir}")
        assert result.exit_code == 1
        assert message in last_line(result) and "--workdir" in last_line(result), last_line(result)
        assert "→ ingest" not in result.stderr


def test_damaged_attribute_is_detected_and_recomputed(data):
    """Attributes carry data too (the bin width the report uses)."""
    path = data / "run" / "affinity.h5"
    with h5py.File(path, "r+") as f:
        f.attrs["frames_per_bin"] = 10
    with pytest.raises(artifacts.ArtifactError, match="attributes .* are damaged"):
        read_h5(path)
    assert cli("inspect", path).exit_code == 1
    result = cli("run", data / "config.yaml")
    assert result.exit_code == 0
    assert "affinity.h5: its attributes (provenance, parameters) are damaged; recomputing it" in result.stderr
    assert int(read_h5(path).attrs["frames_per_bin"]) == 20

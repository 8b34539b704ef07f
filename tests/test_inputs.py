"""Issue 14, parts 2 and 4: inputs that used to be misread silently or refused late, and the
wording of what a user reads. Every refusal is one line naming the file or key and the fix,
exit status 1, given before anything is written (the work directory is compared file by file)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import cli, snapshot
from dynconn.runner import pipeline
from dynconn.io.artifacts import read_h5
from dynconn.runner.lock import LOCK_NAME, WorkdirLock, takeover_text
from formats_util import reference_traces, write_config, write_names, write_nwb

RATE = 4.0
NAMES = ["AVAL", "AVAR", "RIML", "RIMR"]


def write_csv(path, names, values, delimiter=","):
    lines = ([delimiter.join(names)] if names is not None else []) + [
        delimiter.join("" if np.isnan(v) else f"{v:.4f}" for v in row) for row in values]
    path.write_text("\n".join(lines) + "\n")
    return path


def two_animals(folder, *, second=None, **sections):
    """Two CSV animals (160 frames at 4 Hz, 40 s); ``second`` replaces the second's entry."""
    write_csv(folder / "w1.csv", NAMES, reference_traces(160, 4, seed=1))
    write_csv(folder / "w2.csv", NAMES, reference_traces(160, 4, seed=2))
    animals = [{"name": "w1", "path": "w1.csv"}, second or {"name": "w2", "path": "w2.csv"}]
    sections.setdefault("affinity", {"bin_seconds": 2.0})
    data = {"sampling_rate": RATE, **sections.pop("data", {})}
    return write_config(folder, animals, data=data, **sections)


def refused(result, *fragments):
    """Exit 1 with one ``error:`` line holding every fragment; returns the line."""
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]
    return lines[-1]


# ----------------------------------------------------------------------------- no header
@pytest.mark.parametrize("suffix, delimiter", [(".csv", ","), (".tsv", "\t"), (".txt", ",")])
def test_a_table_without_a_header_is_refused_naming_the_fix(tmp_path, suffix, delimiter):
    config = two_animals(tmp_path, second={"name": "w2", "path": f"w2{suffix}"})
    write_csv(tmp_path / f"w2{suffix}", None, reference_traces(160, 4, seed=2), delimiter)
    line = refused(cli("run", config, "-q"), f"w2{suffix}: the first row (",
                   "holds only numbers, so the file has no header row",
                   "data.animals[1].header: false", "data.animals[1].neurons")
    assert "\n" not in line
    assert not (tmp_path / "run").exists()  # nothing written, not even the work directory


def test_header_false_reads_every_row_as_a_frame_with_a_names_file(tmp_path):
    traces = reference_traces(160, 4, seed=2)
    write_csv(tmp_path / "w2.csv", None, traces)
    write_names(tmp_path / "w2-names.csv", NAMES)
    config = two_animals(tmp_path, second={"name": "w2", "path": "w2.csv", "header": False,
                                           "neurons": "w2-names.csv"})
    write_csv(tmp_path / "w2.csv", None, traces)
    assert cli("ingest", config, "-q").exit_code == 0
    ing = read_h5(tmp_path / "run" / "ingest.h5")
    assert list(ing["neurons"]) == sorted(NAMES)
    assert int(ing["n_frames"][1]) == 160  # the first row is a frame, not lost to a header


def test_header_false_without_names_and_numeric_names_with_header_true(tmp_path):
    config = two_animals(tmp_path, second={"name": "w2", "path": "w2.csv", "header": False})
    refused(cli("run", config, "-q"), "data.animals[1].header: false needs data.animals[1].neurons")
    # ROI ids as column names: `header: true` takes them as names
    write_csv(tmp_path / "w2.csv", ["0", "1", "2", "3"], reference_traces(160, 4, seed=2))
    config = two_animals(tmp_path, second={"name": "w2", "path": "w2.csv", "header": True})
    write_csv(tmp_path / "w2.csv", ["0", "1", "2", "3"], reference_traces(160, 4, seed=2))
    assert cli("ingest", config, "-q").exit_code == 0
    assert {"0", "1", "2", "3"} <= set(read_h5(tmp_path / "run" / "ingest.h5")["neurons"])


def test_a_covariates_file_without_a_header_is_refused(tmp_path):
    config = two_animals(tmp_path, second={"name": "w2", "path": "w2.csv", "covariates": "cov.csv"})
    (tmp_path / "cov.csv").write_text("".join(f"{i / RATE},{np.sin(i)}\n" for i in range(160)))
    refused(cli("run", config, "-q"), "cov.csv: the first row (", "add a header row of covariate names")
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- transposed
@pytest.mark.parametrize("kind", ["npy", "h5"])
def test_a_transposed_array_suggests_time_axis(tmp_path, kind):
    import h5py

    data = reference_traces(160, 4, seed=2).T  # neurons × frames, read as frames × neurons
    if kind == "npy":
        np.save(tmp_path / "w2.npy", data)
        entry = {"name": "w2", "path": "w2.npy", "neurons": "names.csv"}
    else:
        with h5py.File(tmp_path / "w2.h5", "w") as f:
            f["traces"] = data
        entry = {"name": "w2", "path": "w2.h5", "dataset": "traces", "neurons": "names.csv"}
    config = two_animals(tmp_path, second=entry)
    write_names(tmp_path / "names.csv", NAMES)
    line = refused(cli("run", config, "-q"), "names.csv: names file lists 4 neurons",
                   "frames and neurons look swapped", "set data.animals[1].time_axis: 1")
    assert "concatenated" not in line
    assert not (tmp_path / "run").exists()
    # and with that key set, it runs
    entry["time_axis"] = 1
    config = two_animals(tmp_path, second=entry)
    assert cli("ingest", config, "-q").exit_code == 0


def test_an_animal_with_fewer_frames_than_neurons_suggests_time_axis_not_concatenated(tmp_path):
    many = [f"N{i}" for i in range(20)]
    config = two_animals(tmp_path)
    write_csv(tmp_path / "w2.csv", many, 100 + np.random.default_rng(3).normal(size=(12, 20)))  # 12 × 20
    line = refused(cli("run", config, "-q"), "w2.csv: 12 frames × 20 neurons",
                   "frames and neurons look swapped", "data.animals[1].time_axis")
    assert "concatenated" not in line
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- all-NaN neuron
def test_an_all_nan_neuron_is_missing_in_that_animal_only(tmp_path):
    config = two_animals(tmp_path)
    x = reference_traces(160, 4, seed=2)
    x[:, 2] = np.nan  # RIML never has a value in w2
    write_csv(tmp_path / "w2.csv", NAMES, x)
    result = cli("run", config, "--until", "affinity")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if "no finite value" in line]
    assert len(warnings) == 1, result.stderr
    assert "w2.csv: 1 neuron with no finite value (RIML) treated as not recorded in animal 'w2'" in warnings[0]
    ing = read_h5(tmp_path / "run" / "ingest.h5")
    neurons = list(ing["neurons"])
    k = neurons.index("RIML")
    assert ing["present"][k].tolist() == [True, False]
    aff = read_h5(tmp_path / "run" / "affinity.h5")
    with_riml = (aff["pairs"] == k).any(axis=1)
    assert with_riml.sum() == 3
    assert aff["mask"][with_riml, 0].all() and not aff["mask"][with_riml, 1].any()
    assert aff["mask"][~with_riml].all()  # every other pair observed in both
    assert not aff["affinity"][with_riml, :, 1].any()  # unobserved entries hold 0 (contract)


def test_a_neuron_empty_inside_the_window_is_missing_there(tmp_path):
    config = two_animals(tmp_path, ingest={"start_s": 20.0})
    x = reference_traces(160, 4, seed=2)
    x[60:, 3] = np.nan  # RIMR has values only before 15 s (then a long gap, left missing)
    write_csv(tmp_path / "w2.csv", NAMES, x)
    result = cli("run", config, "--until", "affinity")
    assert result.exit_code == 0, result.output
    assert "no finite value in the window (RIMR) treated as not recorded in animal 'w2'" in result.stderr
    ing = read_h5(tmp_path / "run" / "ingest.h5")
    assert ing["present"][list(ing["neurons"]).index("RIMR")].tolist() == [True, False]


def test_an_animal_whose_neurons_are_all_empty_is_refused(tmp_path):
    config = two_animals(tmp_path)
    write_csv(tmp_path / "w2.csv", NAMES, np.full((160, 4), np.nan))
    refused(cli("run", config, "-q"), "w2.csv: no neuron has a finite value")
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- bins
def test_bins_of_fewer_than_three_frames_are_refused_before_the_first_stage(tmp_path):
    config = two_animals(tmp_path, affinity={"bin_seconds": 0.5})  # 2 frames at 4 Hz
    refused(cli("run", config, "-q"), "affinity.bin_seconds: a 0.5 s bin holds 2 frames at 4 Hz "
            "(data.sampling_rate); a bin needs at least 3 frames: set affinity.bin_seconds to 0.75 s or more")
    assert not (tmp_path / "run").exists()
    # with finished artifacts: the same, and nothing changes
    config = two_animals(tmp_path)
    assert cli("run", config, "-q", "--until", "affinity").exit_code == 0
    before = snapshot(tmp_path / "run")
    for command in (["run"], ["affinity"], ["ingest"]):
        refused(cli(*command, config, "-q", "--set", "affinity.bin_seconds=0.25"),
                "a 0.25 s bin holds 1 frame at 4 Hz")
        assert snapshot(tmp_path / "run") == before


def test_a_low_rate_names_the_rate_key(tmp_path):
    config = two_animals(tmp_path, affinity={"bin_seconds": 5.0}, data={"sampling_rate": 0.3})
    refused(cli("run", config, "-q"), "holds 2 frames at 0.3 Hz (data.sampling_rate)")
    config = two_animals(tmp_path, data={"resample": 1.0})
    refused(cli("run", config, "-q"), "a 2 s bin holds 2 frames at 1 Hz (data.resample)")
    assert not (tmp_path / "run").exists()


def test_a_rate_given_by_the_file_is_checked_before_anything_is_written(tmp_path):
    write_nwb(tmp_path / "w2.nwb", reference_traces(160, 4, seed=2), NAMES, rate=1.0)
    config = two_animals(tmp_path, second={"name": "w2", "path": "w2.nwb", "name_column": "neuron_name"},
                         data={"sampling_rate": None, "resample": None})
    write_csv(tmp_path / "w1.csv", NAMES, reference_traces(160, 4, seed=1))
    config = write_config(tmp_path, [{"name": "w2", "path": "w2.nwb", "name_column": "neuron_name"}],
                          affinity={"bin_seconds": 2.0})
    refused(cli("run", config, "-q"), "a 2 s bin holds 2 frames at 1 Hz")
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- stimuli
def test_overlapping_epochs_are_refused_naming_both(tmp_path):
    (tmp_path / "stim.csv").write_text("label,start_s,stop_s\nodor,0,20\nlight,15,30\nrest,30,40\n")
    config = two_animals(tmp_path, data={"stimuli": "stim.csv"})
    refused(cli("run", config, "-q"), "stim.csv: lines 2 and 3: epochs 'odor' (0–20 s) and 'light' "
            "(15–30 s) overlap", "make them disjoint")
    assert not (tmp_path / "run").exists()
    config = two_animals(tmp_path, data={"stimuli": [{"label": "a", "start_s": 0, "stop_s": 10},
                                                    {"label": "b", "start_s": 12, "stop_s": 20},
                                                    {"label": "c", "start_s": 5, "stop_s": 6}]})
    refused(cli("run", config, "-q"), "data.stimuli: epochs 'a' (0–10 s) and 'c' (5–6 s) overlap")
    # touching epochs are fine
    config = two_animals(tmp_path, data={"stimuli": [{"label": "a", "start_s": 0, "stop_s": 10},
                                                    {"label": "b", "start_s": 10, "stop_s": 20}]})
    assert cli("run", config, "-q", "--until", "ingest").exit_code == 0


def test_a_clipped_epoch_gives_its_new_range(tmp_path):
    config = two_animals(tmp_path, data={"stimuli": [{"label": "a", "start_s": 0, "stop_s": 10},
                                                    {"label": "late", "start_s": 30, "stop_s": 90}]})
    result = cli("run", config, "--until", "ingest")
    assert result.exit_code == 0, result.output
    assert ("epoch 'late' (30–90 s) extends beyond the recording (0–40 s); clipped to 30–40 s"
            in " ".join(result.stderr.split()))


# ----------------------------------------------------------------------------- backend
@pytest.mark.skipif(__import__("importlib").util.find_spec("torch") is not None,
                    reason="PyTorch is installed here")
def test_a_missing_backend_is_refused_for_the_factorize_command_too(tmp_path):
    config = two_animals(tmp_path)
    assert cli("run", config, "-q", "--until", "affinity").exit_code == 0
    before = snapshot(tmp_path / "run")
    refused(cli("factorize", config, "-q", "--backend", "pytorch"), "factorize.backend: pytorch is not installed")
    assert snapshot(tmp_path / "run") == before


# ----------------------------------------------------------------------------- wording
def test_one_pair_is_singular_and_paths_are_normalised(tmp_path):
    sub = tmp_path / "configs"
    sub.mkdir()
    write_csv(sub / "w1.csv", ["AVAL", "AVAR", "RIML"], reference_traces(160, 3, seed=1))
    write_csv(sub / "w2.csv", ["AVAL", "AVAR", "SMDL"], reference_traces(160, 3, seed=2))
    config = write_config(sub, [{"name": "w1", "path": "w1.csv"}, {"name": "w2", "path": "w2.csv"}],
                          data={"sampling_rate": RATE}, affinity={"bin_seconds": 2.0},
                          factorize={"rank": 2, "restarts": 1, "max_iter": 20})
    config.write_text(config.read_text().replace("workdir: run", "workdir: ../runs/x"))
    result = cli("run", config, "--until", "affinity")
    assert result.exit_code == 0, result.output
    text = " ".join(result.stderr.split())
    assert "1 pair is never recorded together in any animal" in text  # RIML–SMDL
    assert f"wrote {tmp_path / 'runs' / 'x' / 'ingest.h5'}" in text
    assert "/../" not in result.stderr


# ----------------------------------------------------------------------------- clean-up
def test_a_stale_factorize_checkpoint_is_removed_once_factorize_is_up_to_date(tmp_path, monkeypatch):
    from test_robust_interrupt import checkpointing_factorize
    from dynconn.runner.stage import Stage
    from dynconn.simulate import write_dataset

    config = write_dataset(tmp_path / "d", "small", 7)
    workdir = config.parent / "run"
    args = ["--until", "factorize", "--set", "factorize.restarts=2", "--set", "factorize.tol=0",
            "--set", "factorize.max_iter=60"]
    module, _ = checkpointing_factorize(None)
    monkeypatch.setitem(pipeline.STAGES, "factorize", Stage(module))
    assert cli("run", config, "-q", *args).exit_code == 0
    factors = snapshot(workdir)["factors.h5"]
    module, _ = checkpointing_factorize(30)  # `--from factorize`, stopped mid-way
    monkeypatch.setitem(pipeline.STAGES, "factorize", Stage(module))
    assert cli("run", config, "-q", "--from", "factorize", *args[2:]).exit_code == 143
    ckpt = pipeline.checkpoint_path(workdir, "factorize")
    assert ckpt.exists() and snapshot(workdir)["factors.h5"] == factors  # the finished one is kept
    module, count = checkpointing_factorize(None)
    monkeypatch.setitem(pipeline.STAGES, "factorize", Stage(module))
    result = cli("run", config, *args)
    assert result.exit_code == 0, result.output
    assert "factorize: up to date" in result.stderr and count["n"] == 0
    assert f"removed {ckpt}: partial work of an interrupted run" in " ".join(result.stderr.split())
    assert not ckpt.exists() and not ckpt.parent.exists()
    assert snapshot(workdir)["factors.h5"] == factors


def _lock_file(workdir, pid):
    workdir.mkdir(exist_ok=True)
    (workdir / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": socket.gethostname(),
                                                 "started": "2024-01-01T00:00:00", "command": "dynconn run"}))


def test_lock_takeover_says_what_happened(tmp_path):
    host = socket.gethostname()
    # a killed process not yet reaped by its parent (a zombie) is not running
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        child.send_signal(signal.SIGKILL)
        time.sleep(0.5)  # killed; not waited for
        info = {"pid": child.pid, "host": host, "started": "2024-01-01T00:00:00"}
        assert takeover_text(info, child.pid) == (
            f"took over the lock of pid {child.pid} on {host}, started 2024-01-01T00:00:00, which is no "
            "longer running (killed or crashed)")
    finally:
        child.wait()
    # a pid that is alive but cannot hold the lock (it is free): reused by another process
    info = {"pid": os.getppid(), "host": host}
    assert "its pid now belongs to another process" in takeover_text(info, os.getppid())
    # this very process (an earlier command in it did not release the lock)
    assert "an earlier command in this same process" in takeover_text({"pid": os.getpid()}, os.getpid())

    class Said:
        warnings: list = []

        def warn(self, message):
            self.warnings.append(message)

    said = Said()
    _lock_file(tmp_path / "w", child.pid)
    with WorkdirLock(tmp_path / "w", said):
        pass
    assert said.warnings == [f"{tmp_path / 'w'}: took over the lock of pid {child.pid} on {host}, started "
                             "2024-01-01T00:00:00 (dynconn run), which is no longer running (killed or crashed)"]

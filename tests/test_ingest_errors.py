"""Corrupt or unsupported inputs: exit 1, one line naming the file and the problem, and the
workdir exactly as it was (a finished run stays intact)."""

from __future__ import annotations


import pytest

from conftest import cli, copy_dataset, edit_config, finished_dataset, snapshot
from formats_util import reference_traces, write_mat5, write_nwb


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """The simulator's small dataset with a finished run up to the affinity (fast)."""
    return finished_dataset(tmp_path_factory, 4, "--until", "affinity")


@pytest.fixture
def dataset(finished, tmp_path):
    return copy_dataset(finished, tmp_path)


def truncate_hdf5(d):
    path = d / "worm3.h5"  # the simulator writes its last animal as a lab-style HDF5 file
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def nwb_without_ophys(d):
    write_nwb(d / "worm1.nwb", reference_traces(), ["A", "B", "C", "D", "E", "F"], ophys=False)
    edit_config(d, lambda c: c["data"]["animals"][0].update(path="worm1.nwb", name_column="neuron_name"))


def mat_without_variable(d):
    write_mat5(d / "worm1.mat", reference_traces(), variable="traces")
    (d / "names.csv").write_text("".join(f"{i},N{i:03d}\n" for i in range(6)))
    edit_config(d, lambda c: c["data"]["animals"][0].update(path="worm1.mat", variable="dff", neurons="names.csv"))


def different_rates(d):
    edit_config(d, lambda c: c["data"]["animals"][1].update(sampling_rate=2.0))


def epoch_outside(d):
    with open(d / "stimuli.csv", "a") as fh:
        fh.write("late,5000,5100\n")


CASES = {
    "truncated HDF5": (truncate_hdf5, "worm3.h5: not a readable HDF5 file"),
    "NWB without ophys data": (nwb_without_ophys, "worm1.nwb: no optical-physiology traces"),
    ".mat without the named variable": (mat_without_variable, "worm1.mat: no variable 'dff' (it has"),
    "empty file": (lambda d: (d / "worm2.csv").write_bytes(b""), "worm2.csv: file is empty"),
    "different rates without resample": (different_rates, "worm2.csv: recorded at 2 Hz but"),
    "stimulus epoch outside the recording": (epoch_outside, "stimuli.csv: epoch 'late' (5000–5100 s) lies outside"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_corrupt_input_exits_1_with_one_line_and_keeps_the_workdir(dataset, case):
    breaker, message = CASES[case]
    workdir = dataset / "run"
    before = snapshot(workdir)
    assert before  # there is a finished run to protect
    breaker(dataset)
    result = cli("run", dataset / "config.yaml", "-q")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(workdir) == before


def test_different_rates_resampled_when_asked(dataset):
    lines = (dataset / "worm2.csv").read_text().splitlines()
    (dataset / "worm2.csv").write_text("\n".join(lines[:1] + lines[1::2]) + "\n")  # really 2 Hz now
    different_rates(dataset)
    edit_config(dataset, lambda c: c["data"].update(resample=4.0))
    result = cli("run", dataset / "config.yaml", "-q", "--until", "affinity")
    assert result.exit_code == 0, result.output

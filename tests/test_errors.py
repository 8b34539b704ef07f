"""Bad inputs: exit 1, one clear line naming the file or key, no traceback, nothing lost."""


import pytest

from conftest import cli, cli_subprocess, copy_dataset, edit_config, finished_dataset, snapshot
from dynconn.simulate import write_dataset


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return finished_dataset(tmp_path_factory, 2)


@pytest.fixture
def dataset(finished, tmp_path):
    return copy_dataset(finished, tmp_path)


def rewrite_csv(path, change):
    lines = path.read_text().splitlines()
    path.write_text("\n".join(change(lines)) + "\n")


def wrong_dataset(cfg):
    cfg["data"]["animals"][-1]["dataset"] = "gcamp/nope"


def names_mismatch(folder):
    p = folder / "worm3-neurons.csv"
    p.write_text("\n".join(p.read_text().splitlines()[:-2]) + "\n")


CASES = {
    "unknown config key": (lambda d: edit_config(d, lambda c: c.setdefault("affinity", {}).update(bin_secs=3)),
                           "affinity.bin_secs: unknown key"),
    "missing data file": (lambda d: (d / "worm1.csv").unlink(), "worm1.csv: data file not found"),
    "wrong HDF5 dataset": (lambda d: edit_config(d, wrong_dataset), "no dataset 'gcamp/nope'"),
    "non-numeric CSV cell": (lambda d: rewrite_csv(d / "worm2.csv", lambda ls: ls[:5] + ["x" + ls[5]] + ls[6:]),
                             "worm2.csv: line 6"),
    "names file length": (names_mismatch, "worm3-neurons.csv: names file lists"),
    "no animals": (lambda d: edit_config(d, lambda c: c["data"].update(animals=[])), "data.animals: no animals"),
    # (an all-NaN neuron is not an error: it is missing in that animal, tests/test_inputs.py)
    "CSV without a header": (lambda d: rewrite_csv(d / "worm1.csv", lambda ls: ls[1:]),
                             "worm1.csv: the first row ("),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_1_with_one_line(dataset, case):
    breaker, message = CASES[case]
    workdir = dataset / "run"
    before = snapshot(workdir)
    breaker(dataset)
    result = cli("run", dataset / "config.yaml")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and message in lines[-1], result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(workdir) == before  # nothing written, nothing lost


def test_fresh_workdir_is_not_created_on_error(tmp_path):
    config = write_dataset(tmp_path / "d", "small", 3)
    (tmp_path / "d" / "worm2.csv").write_text("A,B\n1,zz\n")
    proc = cli_subprocess("run", config, "--quiet")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]  # exactly one line
    assert not (tmp_path / "d" / "run").exists()


def test_missing_config_and_usage_errors(tmp_path):
    proc = cli_subprocess("run", tmp_path / "nope.yaml")
    assert proc.returncode == 1 and "nope.yaml: config file not found" in proc.stderr
    assert cli_subprocess("run").returncode == 2  # click usage error

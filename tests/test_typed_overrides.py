"""Numbers are numbers wherever a number is expected: ``1e-6``, ``1E-6`` and ``.5`` in a config
file, in ``--set`` and in the CLI's typed options (issue 13, part 4). YAML 1.1 (PyYAML) reads
``1e-6`` as a string; the config used to reject it with ``expected a number, got "1e-6"``."""

import json

import pytest

from conftest import cli, edit_config
from dynconn import config
from dynconn.io.artifacts import read_attrs
from dynconn.errors import ConfigError
from dynconn.validation import yaml_load

BASE = "data:\n  sampling_rate: 4.0\n  animals:\n    - {name: w1, path: w1.csv}\n"


def load_text(tmp_path, text, overrides=()):
    path = tmp_path / "c.yaml"
    path.write_text(BASE + text)
    return config.load(path, overrides)


@pytest.mark.parametrize("literal, value", [
    ("1e-6", 1e-6), ("1E-6", 1e-6), ("1e+3", 1e3), ("-2.5e-1", -0.25), (".5", 0.5), ("5.", 5.0),
    ("1_000.5", 1000.5), ("3", 3), ("+.25", 0.25),
])
def test_yaml_numbers(literal, value):
    got = yaml_load(f"x: {literal}")["x"]
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize("literal", ["1e-6x", "e5", "1.2.3", "0x1F", "2024-01-02", "1e", ".", "1:20"])
def test_yaml_non_floats_are_unchanged(literal):
    import yaml

    assert yaml_load(f"x: {literal}") == yaml.safe_load(f"x: {literal}")


def test_plain_safe_loader_is_left_alone():
    import yaml

    yaml_load("x: 1e-6")
    assert yaml.safe_load("x: 1e-6") == {"x": "1e-6"}  # only our loader reads YAML 1.2 floats


def test_config_file_exponents(tmp_path):
    cfg = load_text(tmp_path, "factorize: {tol: 1e-6, sweep_tol: 1E-4, max_iter: 1e3}\n"
                              "affinity: {bin_seconds: .5}\n")
    assert cfg["factorize"]["tol"] == 1e-6 and cfg["factorize"]["sweep_tol"] == 1e-4
    assert cfg["factorize"]["max_iter"] == 1000 and type(cfg["factorize"]["max_iter"]) is int
    assert cfg["affinity"]["bin_seconds"] == 0.5


def test_set_exponents(tmp_path):
    cfg = load_text(tmp_path, "", ["factorize.tol=1e-6", "factorize.sweep_tol=1E-5", "affinity.bin_seconds=.5"])
    assert cfg["factorize"]["tol"] == 1e-6 and cfg["factorize"]["sweep_tol"] == 1e-5
    assert cfg["affinity"]["bin_seconds"] == 0.5


def test_typed_overrides_are_used_as_given(tmp_path):
    cfg = load_text(tmp_path, "", {"factorize.tol": 1e-7, "factorize.rank": 4, "workdir": "1e-6"})
    assert cfg["factorize"]["tol"] == 1e-7 and cfg["factorize"]["rank"] == 4
    assert cfg["workdir"] == "1e-6"  # a typed string stays a string (no YAML re-reading)
    with pytest.raises(ConfigError, match=r'^factorize\.tol: expected a number, got "1e-6"$'):
        load_text(tmp_path, "", {"factorize.tol": "1e-6"})  # a typed string is not re-parsed
    with pytest.raises(ConfigError, match="factorize.rnak: unknown config key"):
        load_text(tmp_path, "", {"factorize.rnak": 1})


def test_still_rejected(tmp_path):
    with pytest.raises(ConfigError, match=r'factorize\.tol: expected a number, got "1e-6x"'):
        load_text(tmp_path, "factorize: {tol: 1e-6x}\n")
    with pytest.raises(ConfigError, match=r"factorize\.max_iter: expected an integer, got 0.5"):
        load_text(tmp_path, "", ["factorize.max_iter=.5"])
    with pytest.raises(ConfigError, match=r"factorize\.tol: expected a value ≥ 0, got -1e-06"):
        load_text(tmp_path, "", ["factorize.tol=-1e-6"])


def test_cli_tol_option_and_set_reach_the_stage(small_dataset):
    """``dynconn factorize CONFIG --tol 1e-6`` and ``--set factorize.tol=1E-6`` run, and the
    factors record the tolerance as the number (the stage's parameters in factors.h5)."""
    folder = small_dataset.parent
    edit_config(folder, lambda c: c.setdefault("factorize", {}).update(rank=2, restarts=1, max_iter=5))
    result = cli("run", small_dataset, "-q", "--until", "affinity")
    assert result.exit_code == 0, result.output
    workdir = folder / "run"
    result = cli("factorize", small_dataset, "-q", "--tol", "1e-6", "--max-iter", "4")
    assert result.exit_code == 0, result.output
    params = json.loads(read_attrs(workdir / "factors.h5")["params"])
    assert params["tol"] == 1e-6 and params["max_iter"] == 4
    result = cli("factorize", small_dataset, "-q", "--set", "factorize.tol=1E-5")
    assert result.exit_code == 0, result.output
    assert json.loads(read_attrs(workdir / "factors.h5")["params"])["tol"] == 1e-5
    (folder / "config.yaml").write_text((folder / "config.yaml").read_text().replace(
        "max_iter: 5", "max_iter: 5\n  tol: 1e-6"))
    assert "tol: 1e-6" in (folder / "config.yaml").read_text()
    result = cli("factorize", small_dataset, "-q")
    assert result.exit_code == 0, result.output
    assert json.loads(read_attrs(workdir / "factors.h5")["params"])["tol"] == 1e-6


def test_rank_written_as_a_float(tmp_path):
    assert load_text(tmp_path, "factorize: {rank: 1e1}\n")["factorize"]["rank"] == 10
    with pytest.raises(ConfigError, match=r'factorize\.rank: expected an integer ≥ 1 or "auto", got 2.5'):
        load_text(tmp_path, "", ["factorize.rank=2.5"])


def test_validation_examples_run():
    import doctest

    from dynconn import validation

    result = doctest.testmod(validation, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 6 and result.failed == 0

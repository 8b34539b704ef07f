"""Config validation, defaults and --set overrides."""

from pathlib import Path

import pytest
import yaml

from dynconn import config
from dynconn.errors import ConfigError

MINIMAL = {"data": {"sampling_rate": 4.0, "animals": [{"name": "w1", "path": "w1.csv"}]}}


def load_dict(tmp_path, raw, overrides=()):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(raw))
    return config.load(p, list(overrides))


def test_defaults_are_filled(tmp_path):
    cfg = load_dict(tmp_path, MINIMAL)
    assert cfg["affinity"]["method"] == "differential"
    assert cfg["factorize"]["rank"] == "auto"
    assert cfg["data"]["animals"][0]["time_axis"] == 0
    assert cfg.workdir() == (tmp_path / "runs" / "c").absolute()


@pytest.mark.parametrize("raw, message", [
    ({**MINIMAL, "factorise": {}}, "factorise: unknown key"),
    ({**MINIMAL, "factorize": {"rank": "fifteen"}}, 'factorize.rank: expected an integer ≥ 1 or "auto", got "fifteen"'),
    ({**MINIMAL, "affinity": {"bin_seconds": -1}}, "affinity.bin_seconds: expected a value > 0"),
    ({**MINIMAL, "affinity": {"method": "pearson"}}, "affinity.method: expected one of"),
    ({"data": {"sampling_rate": 4.0, "animals": []}}, "data.animals: no animals listed"),
    ({"data": {"animals": [{"name": "w", "path": "w.csv"}], "layout": "stacked"}}, "data.layout: expected one of"),
    ({**MINIMAL, "ingest": {"start_s": 10, "stop_s": 5}}, "ingest.stop_s: 5 must be after ingest.start_s"),
    ({**MINIMAL, "ingest": {"exclude": [1]}}, "ingest.exclude: expected a list of names"),
    ({"data": {"sampling_rate": 4, "animals": [{"name": "w", "path": "w.csv", "colour": 1}]}},
     "data.animals[0].colour: unknown key"),
    ({"data": {"sampling_rate": 4, "animals": [{"name": "w", "path": "a"}, {"name": "w", "path": "b"}]}},
     "data.animals[1].name: animal name 'w' already used"),
    ({**MINIMAL, "factorize": {"ranks": [5, 2]}}, "factorize.ranks: expected [smallest, largest]"),
    ({**MINIMAL, "factorize": {"unobserved_penalty": -0.1}}, "factorize.unobserved_penalty: expected a value ≥ 0, got -0.1"),
    ({**MINIMAL, "factorize": {"unobserved_penalty": "lots"}}, 'factorize.unobserved_penalty: expected a number, got "lots"'),
    ({**MINIMAL, "factorize": {"unobserved_penalty": True}}, "factorize.unobserved_penalty: expected a number, got True"),
])
def test_bad_values_name_the_key(tmp_path, raw, message):
    with pytest.raises(ConfigError) as err:
        load_dict(tmp_path, raw)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_set_overrides(tmp_path):
    cfg = load_dict(tmp_path, MINIMAL, ["factorize.rank=12", "affinity.bin_seconds=2.5", "workdir=out"])
    assert cfg["factorize"]["rank"] == 12 and cfg["affinity"]["bin_seconds"] == 2.5
    assert cfg.workdir() == (tmp_path / "out").absolute()
    with pytest.raises(ConfigError, match="factorize.rnak: unknown config key"):
        load_dict(tmp_path, MINIMAL, ["factorize.rnak=3"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_dict(tmp_path, MINIMAL, ["factorize.rank"])


def test_design_card_leiden_is_weighted_modularity(tmp_path):
    cfg = load_dict(tmp_path, {**MINIMAL, "communities": {"method": "leiden"}})
    assert cfg["communities"]["method"] == "leiden-modularity"
    assert load_dict(tmp_path, MINIMAL)["communities"]["method"] == "wsbm"


def test_invalid_yaml_names_the_line(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("data:\n  animals: [\n")
    with pytest.raises(ConfigError, match=r"c.yaml: line \d+: invalid YAML"):
        config.load(p)


def test_every_key_is_documented():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "config.md").read_text()
    missing = [k for k, _ in config.iter_keys() if f"`{k}`" not in doc]
    assert not missing, f"keys missing from docs/config.md: {missing}"

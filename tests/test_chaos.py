"""The chaos benchmark, short: kill `dynconn run` twice (SIGKILL, SIGTERM), rerun, compare."""

import importlib.util
from pathlib import Path

from dynconn.simulate import write_dataset

ROOT = Path(__file__).resolve().parents[1]


def load_chaos():
    spec = importlib.util.spec_from_file_location("chaos", ROOT / "benchmarks" / "chaos.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_killed_runs_rerun_to_identical_artifacts(tmp_path):
    chaos = load_chaos()
    config = write_dataset(tmp_path / "data", "small", 0)
    lines = []
    # both from an empty work directory, 3.2 s in: past start-up, inside the stages
    summary = chaos.chaos(config, tmp_path, kills=2, seed=0, log=lines.append, delays=[3.2, 3.2])
    assert summary["failed"] == 0, "\n".join(lines)
    assert summary["identical"] == 2
    for record in summary["records"]:
        assert not record["damaged"]

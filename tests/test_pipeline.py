"""The whole chain on simulated data: recovery, up-to-date checks, exports, CLI."""

import csv
import json

import numpy as np

from conftest import cli, snapshot
from dynconn.io.artifacts import read_h5
from dynconn.simulate import score_recovery


def test_recovers_planted_groups(standard_run, standard_dataset):
    truth = json.loads((standard_dataset.parent / "truth.json").read_text())
    aff, fac, com = (read_h5(standard_run / f) for f in ("affinity.h5", "factors.h5", "communities.h5"))
    score, details = score_recovery(truth, aff["time"], fac["factors/time"], com["membership"],
                                    list(aff["neurons"]))
    print("recovery", score, details)
    assert score >= 0.8, details


def test_default_communities_recover_at_least_as_well_as_leiden(standard_run, standard_dataset):
    """Issue 5: the wsbm default does not lose recovery against Leiden on the same factors."""
    from dynconn.stages.communities import partition_components

    truth = json.loads((standard_dataset.parent / "truth.json").read_text())
    aff, fac, com = (read_h5(standard_run / f) for f in ("affinity.h5", "factors.h5", "communities.h5"))
    neurons = list(aff["neurons"])
    default, _ = score_recovery(truth, aff["time"], fac["factors/time"], com["membership"], neurons)
    leiden = partition_components(fac["factors/pairs"], aff["pairs"], len(neurons), method="leiden-modularity")
    baseline, _ = score_recovery(truth, aff["time"], fac["factors/time"], leiden.membership, neurons)
    print("recovery wsbm", default, "leiden", baseline)
    assert com.json_attr("params")["method"] == "wsbm"
    assert default >= baseline
    assert np.isfinite(com["stability"]).all() and ((com["stability"] >= -1) & (com["stability"] <= 1)).all()


def test_second_run_recomputes_nothing(standard_run, standard_dataset):
    before = snapshot(standard_run)
    result = cli("run", standard_dataset)
    assert result.exit_code == 0
    for stage in ("ingest", "affinity", "factorize", "communities", "report"):
        assert f"{stage}: up to date" in result.stderr
    assert snapshot(standard_run) == before


def test_from_and_until(small_dataset):
    assert cli("run", small_dataset, "-q", "--until", "affinity").exit_code == 0
    workdir = small_dataset.parent / "run"
    assert sorted(p.name for p in workdir.iterdir()) == ["affinity.h5", "ingest.h5"]
    result = cli("run", small_dataset, "--from", "affinity", "--until", "factorize")
    assert result.exit_code == 0 and "→ affinity" in result.stderr and "ingest:" not in result.stderr
    assert (workdir / "factors.h5").exists() and not (workdir / "report.html").exists()


def test_artifacts_follow_the_design(standard_run):
    aff = read_h5(standard_run / "affinity.h5")
    P, T, A = aff["affinity"].shape
    N = len(aff["neurons"])
    assert aff["affinity"].dtype == np.float32 and P == N * (N - 1) // 2
    assert aff["pairs"].dtype == np.int32 and (aff["pairs"][:, 0] < aff["pairs"][:, 1]).all()
    assert aff["mask"].shape == (P, A) and aff["mask"].dtype == bool
    assert (aff["affinity"].transpose(0, 2, 1)[~aff["mask"]] == 0).all()
    fac = read_h5(standard_run / "factors.h5")
    R = fac["weights"].size
    assert fac["factors/pairs"].shape == (P, R) and fac["factors/time"].shape == (T, R)
    assert fac["factors/animals"].shape == (A, R)
    com = read_h5(standard_run / "communities.h5")
    assert com["membership"].shape == (R, N) and com["membership"].dtype == np.int32
    for art in (aff, fac, com):
        assert {"dynconn_version", "params", "inputs", "created", "config"} <= set(art.attrs)
    assert json.loads(fac.attrs["config"])["factorize"]["max_iter"] == 500  # defaults stored


def test_exports(standard_run):
    ex = standard_run / "exports"
    rows = list(csv.reader((ex / "communities.csv").open()))
    assert rows[0] == ["component", "neuron", "community", "cohesion", "p_value", "cohesive"]  # DESIGN.md Exports
    ft = list(csv.reader((ex / "factors_time.csv").open()))
    summary = json.loads((ex / "summary.json").read_text())
    R = summary["rank"]
    assert ft[0] == ["time_s"] + [f"component_{r}" for r in range(R)]
    fa = list(csv.reader((ex / "factors_animal.csv").open()))
    assert fa[0][0] == "animal" and [r[0] for r in fa[1:]] == ["worm1", "worm2", "worm3", "worm4"]
    comp = summary["components"][0]
    assert {"id", "weight", "active_intervals", "epochs", "communities"} <= set(comp)
    assert {"epoch", "start_s", "stop_s", "components"} <= set(summary["atlas"][0])
    html = (standard_run / "report.html").read_text()
    # traces overview + atlas + one composite figure per component (time, animals, matrix, network)
    assert html.count("data:image/png;base64,") >= 2 + R and "<script src" not in html


def test_partition_command(tmp_path):
    w = np.zeros((8, 8))
    w[:4, :4] = w[4:, 4:] = 1.0
    w[0, 4] = w[4, 0] = 0.1
    np.fill_diagonal(w, 0)
    np.save(tmp_path / "g.npy", w)
    result = cli("partition", tmp_path / "g.npy", "--out", tmp_path / "m.csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.reader((tmp_path / "m.csv").open()))
    assert rows[0] == ["node", "community"]
    labels = [int(r[1]) for r in rows[1:]]
    assert len(set(labels[:4])) == 1 and len(set(labels[4:])) == 1 and labels[0] != labels[4]
    left, right = ["AVAL", "AVAR", "AVEL", "AVER", "AIBL", "AIBR"], ["RIML", "RIMR", "SMDL", "SMDR", "RIBL", "RIBR"]
    lines = ["source,target,weight"]
    for group in (left, right):
        lines += [f"{a},{b},{1 + (i + j) % 3}" for i, a in enumerate(group) for j, b in enumerate(group) if i < j]
    lines.append("AVAL,RIML,0.1")
    (tmp_path / "e.csv").write_text("\n".join(lines) + "\n")
    assert cli("partition", tmp_path / "e.csv", "--out", tmp_path / "m2.csv").exit_code == 0
    rows = dict(list(csv.reader((tmp_path / "m2.csv").open()))[1:])
    assert len({rows[n] for n in left}) == 1 and len({rows[n] for n in right}) == 1
    assert rows["AVAL"] != rows["RIML"]

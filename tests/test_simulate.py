"""The realistic simulator (docs/simulator.md): its files look like a lab's, its truth.json is
consistent with them, and the pipeline recovers what it planted; the scoring by hand."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from conftest import cli
from dynconn.io.artifacts import read_h5
from dynconn.simulate import PRESETS, score_run, simulate_realistic, write_dataset


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny preset, seed 0, written to files."""
    return write_dataset(tmp_path_factory.mktemp("tiny") / "data", "tiny", 0).parent


def headers(folder) -> dict[str, list[str]]:
    truth = json.loads((folder / "truth.json").read_text())
    out = {}
    for animal in truth["animals"]:
        with open(folder / f"{animal['name']}.csv", newline="") as f:
            out[animal["name"]] = next(csv.reader(f))
    return out


def test_each_file_has_its_own_missing_neurons_and_column_order(tiny):
    truth = json.loads((tiny / "truth.json").read_text())
    heads = headers(tiny)
    everyone = set(truth["neuron_names"])
    missing = {a["name"]: set(a["missing"]) for a in truth["animals"]}
    for name, head in heads.items():
        assert len(set(head)) == len(head)  # no name twice
        assert set(head) == everyone - missing[name]  # truth's missing = the columns absent
        assert head != sorted(head)  # shuffled
        lo, hi = PRESETS["tiny"]().missing_fraction
        n = len(everyone)
        assert round(lo * n) <= len(missing[name]) <= round(hi * n)
    assert len({frozenset(m) for m in missing.values()}) == len(missing)  # different neurons
    orders = [tuple(h) for h in heads.values()]
    common = set.intersection(*(set(h) for h in heads.values()))
    # the neurons every animal has come in a different order in every file
    assert len({tuple(x for x in o if x in common) for o in orders}) == len(orders)


def test_truth_matches_the_plan(tiny):
    preset = PRESETS["tiny"]()
    truth = json.loads((tiny / "truth.json").read_text())
    names = set(truth["neuron_names"])
    specs = {m.name: m for m in preset.motifs}
    assert truth["n_motifs"] == len(truth["groups"]) == len(specs)
    background = set(truth["background"]["neuron_names"])
    assert len(background) == preset.background_size and background <= names
    stimuli = [(e["label"], e["start_s"], e["stop_s"]) for e in truth["epochs"]]
    assert stimuli == [(lab, float(s), float(e)) for lab, s, e in preset.stimuli]
    for g in truth["groups"]:
        spec = specs[g["name"]]
        members = set(g["neuron_names"])
        assert len(members) == spec.size and members <= names and not members & background
        assert len(g["animals"]) == spec.n_animals
        assert g["animal_names"] == [f"worm{a + 1}" for a in g["animals"]]
        for other, k in spec.share:
            assert len(members & set(next(o for o in truth["groups"] if o["name"] == other)["neuron_names"])) >= k
        if g["kind"] == "stimulus":
            assert g["intervals"] == [[s, e] for lab, s, e in stimuli if lab in spec.epochs]
        else:  # spontaneous: outside every stimulus epoch
            for s, e in g["intervals"]:
                assert all(e <= s0 or s >= e0 for _, s0, e0 in stimuli)
        # per-animal onset jitter for exactly the animals it lives in, one per interval
        for a, animal in enumerate(truth["animals"]):
            jitter = animal["onset_jitter_s"].get(g["name"])
            assert (jitter is not None) == (a in g["animals"])
            if jitter is not None:
                assert len(jitter) == len(g["intervals"])
    # the behaviour network has its own sequence in every animal: not locked to the protocol
    sequences = [tuple(map(tuple, a["reversal_intervals"])) for a in truth["animals"]]
    assert all(sequences) and len(set(sequences)) == len(sequences)


def test_the_same_seed_writes_the_same_files(tiny, tmp_path):
    again = write_dataset(tmp_path / "again", "tiny", 0).parent
    for path in sorted(tiny.glob("*.csv")) + [tiny / "truth.json"]:
        assert (again / path.name).read_bytes() == path.read_bytes(), path.name


def test_realistic_properties_are_in_the_traces():
    sim = simulate_realistic(PRESETS["standard"](), 3)
    truth = sim["truth"]
    index = {n: i for i, n in enumerate(sim["names"])}
    # the behaviour network dominates: its neurons vary far more than neurons in no group
    planted = {n for g in truth["groups"] for n in g["neuron_names"]} | set(truth["background"]["neuron_names"])
    rev = [index[n] for n in truth["background"]["reversal_neuron_names"]]
    other = [i for n, i in index.items() if n not in planted]
    x = sim["traces"][0]
    dff = x / np.percentile(x, 10, axis=0) - 1
    assert np.median(dff[:, rev].std(axis=0)) > 2 * np.median(dff[:, other].std(axis=0))
    # reversal neurons are higher during the animal's reversals than outside them
    t = sim["time"]
    inside = np.zeros(t.size, bool)
    for s, e in truth["animals"][0]["reversal_intervals"]:
        inside |= (t >= s + 3) & (t < e)
    assert (dff[inside][:, rev].mean(axis=0) > dff[~inside][:, rev].mean(axis=0)).all()
    # missing fractions as the preset asks, different neurons per animal
    frac = 1 - sim["present"].mean(axis=0)
    assert ((frac >= 0.05 - 1 / 60) & (frac <= 0.30 + 1 / 60)).all()  # rounding to whole neurons
    assert len({tuple(col) for col in sim["present"].T}) == sim["present"].shape[1]


def test_the_full_size_preset_has_a_real_recordings_size():
    """full-size: 150 neurons at 1.7 Hz for 16 min in 5 animals, 10 motifs as specified."""
    preset = PRESETS["full-size"]()
    sim = simulate_realistic(preset, 0)
    truth = sim["truth"]
    assert len(sim["traces"]) == 5 and len(sim["names"]) == 150
    assert all(x.shape == (1632, 150) for x in sim["traces"])  # 960 s at 1.7 Hz
    assert truth["sampling_rate"] == 1.7 and truth["duration_s"] == 960.0
    assert len(truth["background"]["neuron_names"]) == 20
    specs = {m.name: m for m in preset.motifs}
    assert [g["name"] for g in truth["groups"]] == list(specs) and truth["n_motifs"] == 10
    for g in truth["groups"]:
        assert len(g["neuron_names"]) == specs[g["name"]].size
        assert len(g["animals"]) == specs[g["name"]].n_animals
    frac = 1 - sim["present"].mean(axis=0)
    assert ((frac >= 0.05 - 1 / 150) & (frac <= 0.30 + 1 / 150)).all()  # rounding to whole neurons


def test_score_run_by_hand():
    truth = {"epochs": [], "n_motifs": 2,
             "groups": [{"name": "a", "neuron_names": ["A", "B", "C", "D"], "intervals": [[0, 10]]},
                        {"name": "b", "neuron_names": ["E", "F"], "intervals": [[10, 20]]}],
             "background": {"neuron_names": ["G", "H", "I"]}}
    neurons = ["A", "B", "C", "D", "E", "F", "G", "H", "I", "J", "K", "L"]
    time_s = np.array([2.5, 7.5, 12.5, 17.5])
    factors_time = np.array([[1, 1, 0, 0], [0, 0.1, 1, 1]], float).T  # comp 0 ~ a, comp 1 ~ b
    membership = np.array([
        [0, 0, 0, 1, -1, -1, 2, 2, 2, 3, 3, 3],  # {A,B,C} of a; {G,H,I} background; {J,K,L} false
        [-1, -1, -1, -1, 0, 0, 0, -1, -1, -1, -1, -1],  # {E,F,G}: b + one stranger
    ])
    s = score_run(truth, time_s, factors_time, membership, neurons)
    assert [d["component"] for d in s["details"]] == [0, 1]
    # exact fractions of small counts: equal to rounding (approx's 1e-6 relative is far above it)
    assert s["recovery"] == pytest.approx((3 / 4 + 2 / 3) / 2)
    assert s["precision"] == pytest.approx((1 + 2 / 3) / 2)
    assert s["recall"] == pytest.approx((3 / 4 + 1) / 2)
    assert s["false_communities"] == 1  # {J,K,L}; {D} is too small, {E,F,G} is mostly b
    assert (s["rank"], s["planted_rank"]) == (2, 3)


def test_pipeline_recovers_the_tiny_presets_motifs(tiny, tmp_path):
    """The whole default pipeline (rank: auto) on the tiny realistic preset."""
    result = cli("run", tiny / "config.yaml", "-q", "--until", "communities", "--workdir", tmp_path / "run")
    assert result.exit_code == 0, result.output
    truth = json.loads((tiny / "truth.json").read_text())
    aff, fac, com = (read_h5(tmp_path / "run" / f) for f in ("affinity.h5", "factors.h5", "communities.h5"))
    s = score_run(truth, aff["time"], fac["factors/time"], com["membership"], list(aff["neurons"]))
    # measured 1.00 at rank 4 on this seed with either rank rule (seeds 0-4 with reached-elbow:
    # 1.00 0.86 1.00 0.64 0.44, docs/benchmarks.md: issue 11 is not met on every seed yet). One neuron lost from a motif (of 7 or
    # 6) costs 0.07-0.08 of the mean: 0.85 allows one such loss, or one stranger in each community
    assert s["recovery"] >= 0.85, s["details"]
    assert abs(s["rank"] - s["planted_rank"]) <= 1


def test_simulate_command(tmp_path):
    result = cli("simulate", tmp_path / "d", "--preset", "tiny", "--seed", "2")
    assert result.exit_code == 0, result.output
    truth = json.loads((tmp_path / "d" / "truth.json").read_text())
    assert (truth["preset"], truth["seed"], truth["generator"]) == ("tiny", 2, "realistic")
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [
        "config.yaml", "stimuli.csv", "truth.json", "worm1.csv", "worm2.csv", "worm3.csv"]
    bad = cli("simulate", tmp_path / "e", "--preset", "medium")
    assert bad.exit_code == 2 and "medium" in bad.output and not (tmp_path / "e").exists()

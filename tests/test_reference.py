"""Reference graphs and the within/between enrichment test: dynconn.methods.reference (pure)
and dynconn.io.references (the files).

The core tests need no optional package; the last ones read the wormneuroatlas data files
and are skipped when the extra ``dynconn[worm]`` is not installed."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from dynconn.errors import DynconnError, InputError
from dynconn.io import references as refio
from dynconn.methods import reference as ref
from dynconn.stages.ingest import bilateral_map


def _matrix(n, edges, w=1.0):
    m = np.zeros((n, n))
    for i, j in edges:
        m[i, j] = m[j, i] = w
    return m


# Six nodes in two communities of three; reference edges 3 within, 1 between.
LABELS = np.array([0, 0, 0, 1, 1, 1])
EDGES = [(0, 1), (0, 2), (3, 4), (2, 3)]


def test_canonical_names():
    assert ref.canonical_name(" vb02 ") == "VB2"        # NeuroPAL pads cell numbers
    assert ref.canonical_name("DA01") == "DA1"
    assert ref.canonical_name("AS10") == "AS10"          # no padding: unchanged
    assert ref.canonical_name("VA1") == "VA1"
    assert ref.canonical_name("IL2DL") == "IL2DL"
    assert ref.canonical_name("BWM-DL01") == "BWM-DL1"
    assert ref.canonical_name("AWCON") == "AWCR"         # fate vs side: wormneuroatlas's convention
    assert ref.canonical_name("awcoff") == "AWCL"
    assert ref.canonical_name("AWCOF") == "AWCL"         # the atlas's 5-byte ids
    assert ref.canonical_name("AVAL") == "AVAL"


def test_enrichment_by_hand():
    r = ref.within_between(LABELS, _matrix(6, EDGES), n_permutations=50)
    # within: 2 communities × 3 pairs = 6 pairs, 3 edges; between: 9 pairs, 1 edge
    assert (r.within_pairs, r.between_pairs) == (6, 9)
    assert (r.within_weight, r.between_weight) == (3.0, 1.0)
    # the sums are of 0/1 weights, exact in float64 on any BLAS; only the divisions round
    assert r.ratio == pytest.approx((3 / 6) / (1 / 9), rel=1e-12)  # 4.5
    assert r.fraction == pytest.approx(0.75, rel=1e-12)


def test_enrichment_pools_partitions_and_skips_unassigned():
    rows = np.array([LABELS, [0, 0, 1, 1, -1, -1]])
    r = ref.within_between(rows, _matrix(6, EDGES), n_permutations=20)
    # row 2 on nodes 0-3: within pairs (0,1),(2,3) both edges; between 4 pairs, edge (0,2)
    assert (r.within_pairs, r.between_pairs) == (6 + 2, 9 + 4)
    assert (r.within_weight, r.between_weight) == (3.0 + 2.0, 1.0 + 1.0)
    assert r.ratio == pytest.approx((5 / 8) / (2 / 13), rel=1e-12)  # exact sums, rounded divisions


def test_untested_pairs_count_neither_way():
    tested = ~np.eye(6, dtype=bool)
    tested[0, 5] = tested[5, 0] = False   # a between pair the reference never measured
    tested[2, 3] = tested[3, 2] = False   # the one between edge: unmeasured, so not a link
    r = ref.within_between(LABELS, _matrix(6, EDGES), tested, n_permutations=20)
    assert (r.within_pairs, r.between_pairs) == (6, 7)
    assert r.between_weight == 0.0 and math.isinf(r.ratio)


def test_permutation_p_value_and_chance_match_exhaustive_enumeration():
    """Every one of the 720 relabellings, counted exactly, against the Monte Carlo estimate."""
    w = _matrix(6, EDGES)
    observed = ref.within_between(LABELS, w, n_permutations=1).ratio
    ratios, fractions = [], []
    for perm in itertools.permutations(range(6)):
        e = ref.within_between(LABELS[list(perm)], w, n_permutations=1)
        ratios.append(e.ratio)
        fractions.append(e.fraction)
    exact_p = np.mean(np.asarray(ratios) >= observed - 1e-12)
    # a pair is within with probability 6/15 under random labels of sizes 3, 3
    assert np.mean(fractions) == pytest.approx(6 / 15, rel=1e-12)  # mean of 720 exact quarters
    r = ref.within_between(LABELS, w, n_permutations=4000, seed=1)
    # Monte Carlo: p̂ has sd sqrt(p(1-p)/4000) ≈ 0.006 at p ≈ 0.2; 5 sd, plus 1e-3 for the
    # "+1" in (1 + k) / (1 + n) that the exact proportion does not have (≤ 1/4001)
    assert r.p_value == pytest.approx(exact_p, abs=5 * math.sqrt(exact_p * (1 - exact_p) / 4000) + 1e-3)
    # mean within fraction over 4000 draws: per-draw sd ≤ 0.5, so the mean's sd ≤ 0.008; 5 sd
    assert r.chance_fraction == pytest.approx(0.4, abs=0.04)


def test_planted_partition_is_enriched_and_random_labels_are_not():
    rng = np.random.default_rng(0)
    groups = np.repeat([0, 1, 2], 20)
    same = groups[:, None] == groups[None, :]
    upper = np.triu(rng.random((60, 60)) < np.where(same, 0.5, 0.1), k=1)
    w = (upper | upper.T).astype(float)
    planted = ref.within_between(groups, w, n_permutations=500)
    # planted densities 0.5 vs 0.1: ratio ≈ 5; the realised one over 570 within / 1200
    # between pairs has a relative sd of ≈ 0.1, so it lies within 3.5 … 7 (well over 3 sd)
    assert 3.5 < planted.ratio < 7 and planted.p_value == 1 / 501
    shuffled = ref.within_between(rng.permutation(groups), w, n_permutations=500)
    assert 0.7 < shuffled.ratio < 1.4 and shuffled.p_value > 0.01


def test_within_between_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(6, 6\)"):
        ref.within_between(LABELS, np.zeros((5, 5)))
    with pytest.raises(ValueError, match="symmetric"):
        bad = _matrix(6, EDGES)
        bad[0, 1] = 2.0
        ref.within_between(LABELS, bad)
    with pytest.raises(ValueError, match="n_permutations"):
        ref.within_between(LABELS, _matrix(6, EDGES), n_permutations=0)


def test_homolog_pairs_follow_the_bilateral_rule():
    names = ["AVAL", "AVAR", "AVL", "RIML", "SMDDL", "SMDDR", "RMED", "RMEV"]
    h = ref.homolog_pairs(names, bilateral_map(names))
    pairs = {(names[i], names[j]) for i, j in zip(*np.nonzero(np.triu(h)))}
    assert pairs == {("AVAL", "AVAR"), ("SMDDL", "SMDDR")}  # AVL, RIML (no RIMR), RMED/RMEV: none


def test_connectome_rows_become_an_undirected_graph_on_canonical_names():
    rows = [("VB02", "AVAL", "chemical", 2), ("AVAL", "VB2", "electrical", 1),
            ("AVAL", "AVAR", "chemical", 0), ("AVAR", "AVAR", "electrical", 4)]
    both = ref.connectome_graph(rows, "t", "test")
    assert both.edges == {("AVAL", "VB2"): 3.0} and both.nodes == {"AVAL", "AVAR", "VB2"}
    chem = ref.connectome_graph(rows, "t", "test", kinds=("chemical",))
    assert chem.edges == {("AVAL", "VB2"): 2.0}
    weight, tested = ref.reference_matrices(both, ["vb02", "AVAL", "AVAR", "XYZ"])
    assert weight[0, 1] == weight[1, 0] == 3.0 and weight[1, 2] == 0.0
    assert tested[1, 2] and not tested[0, 3] and not tested.diagonal().any()  # XYZ unknown


def test_signal_propagation_links_and_tested_pairs():
    nan = np.nan
    q = np.array([[nan, 0.01, nan],     # AVAL responds to AWCON stimulation: linked
                  [0.5, nan, nan],
                  [nan, 0.2, nan]])     # VB02 measured against AWCON, not linked
    g = ref.signal_propagation_graph(q, ["AVAL", "AWCON", "VB02"])
    assert g.edges == {("AVAL", "AWCR"): 1.0}
    assert g.tested == {("AVAL", "AWCR"), ("AWCR", "VB2")}
    weight, tested = ref.reference_matrices(g, ["AWCR", "AVAL", "VB2"])
    assert weight[0, 1] == 1.0 and tested[0, 2] and not tested[1, 2]  # AVAL–VB2 never measured


def test_csv_edge_list(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("source,target,weight\n a , b ,1.5\nB,A,0.5\nb,c,0\nc,c,3\n\nd,a,2\n")
    g = refio.read_edge_list(path)
    assert g.edges == {("A", "B"): 2.0, ("A", "D"): 2.0}  # duplicates sum; 0 and self-loops dropped
    assert g.nodes == {"A", "B", "C", "D"} and not g.worm_names
    weight, tested = ref.reference_matrices(g, ["a", "B", "c", "e"])
    assert weight[0, 1] == 2.0 and tested[1, 2] and not tested[0, 3]
    # zero padding is kept for other species' names unless asked for
    (tmp_path / "pad.csv").write_text("source,target,weight\nROI01,ROI1,1\n")
    assert refio.read_edge_list(tmp_path / "pad.csv").edges == {("ROI01", "ROI1"): 1.0}
    assert refio.read_edge_list(tmp_path / "pad.csv", worm_names=True).edges == {}


@pytest.mark.parametrize("text, message", [
    ("from,to,w\na,b,1\n", "header must be source,target,weight"),
    ("", "an empty file"),
    ("source,target,weight\na,b,strong\n", "line 2: weight 'strong' is not a number"),
    ("source,target,weight\na,b\n", "line 2: expected source,target,weight"),
    ("source,target,weight\na,b,inf\n", "not finite"),
])
def test_csv_edge_list_errors_name_the_file(tmp_path, text, message):
    path = tmp_path / "edges.csv"
    path.write_text(text)
    with pytest.raises(InputError, match=message) as exc:
        refio.read_edge_list(path)
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)


def test_worm_references_off_without_the_extra(monkeypatch):
    monkeypatch.setattr(refio, "worm_data_folder", lambda: None)
    assert not refio.worm_references_available()
    with pytest.raises(DynconnError, match=r"dynconn\[worm\]"):
        refio.reference_graph("white1986")


def test_unknown_reference_and_kind():
    with pytest.raises(DynconnError, match="unknown reference graph 'white1968'"):
        refio.reference_graph("white1968")
    if refio.worm_references_available():
        with pytest.raises(DynconnError, match="unknown synapse kind"):
            refio.reference_graph("white1986", kind="gap")


# --- with the optional extra -------------------------------------------------------------------
# Found by its spec, not imported: importing wormneuroatlas takes ~10 s (pandas, WormBase) and
# dynconn.io.references reads only its data files.
needs_worm = pytest.mark.skipif(not refio.worm_references_available(),
                                reason="optional extra dynconn[worm] (wormneuroatlas) not installed")


@needs_worm
def test_wormneuroatlas_connectomes():
    white = refio.reference_graph("white1986")
    # White 1986: AVAL→AVAR 2 and AVAR→AVAL 1 chemical synapses, 5 gap junctions; AVEL→AVAL 12
    assert white.edges[("AVAL", "AVAR")] == 8.0 and white.edges[("AVAL", "AVEL")] == 12.0
    assert refio.reference_graph("white1986", "electrical").edges[("AVAL", "AVAR")] == 5.0
    assert refio.reference_graph("white1986", "chemical").edges[("AVAL", "AVAR")] == 3.0
    witvliet = refio.reference_graph("witvliet2020")
    assert len(witvliet.edges) > len(refio.reference_graph("witvliet2020_8").edges)  # 7 ∪ 8
    assert {"AWCL", "AWCR", "VB2"} <= white.nodes


@needs_worm
def test_wormneuroatlas_signal_propagation():
    spa = refio.reference_graph("randi2023")
    assert "AWCL" in spa.nodes and "AWCR" in spa.nodes      # AWCOF/AWCON matched to sides
    assert set(spa.edges) <= spa.tested and 500 < len(spa.edges) < len(spa.tested)
    fewer = refio.reference_graph("randi2023", q_max=0.01)
    assert set(fewer.edges) < set(spa.edges)


# --- the real-data benchmark's own helpers ---------------------------------------------------
def _realdata():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "realdata.py"
    spec = importlib.util.spec_from_file_location("realdata", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pooled_correlation_is_the_frame_weighted_mean_of_per_animal_correlations():
    realdata = _realdata()
    rng = np.random.default_rng(0)
    traces = np.full((2, 6, 40), np.nan)
    traces[0] = rng.normal(size=(6, 40))
    traces[1, :, :25] = rng.normal(size=(6, 25)) * 3 + 1   # scale and offset must not matter
    traces[1, 5] = np.nan                                   # neuron 5 missing in animal 2
    shared = np.array([True] * 5 + [False])
    corr = realdata.pooled_correlation(traces, np.array([40, 25]), shared)
    expected = (40 * np.corrcoef(traces[0, :5]) + 25 * np.corrcoef(traces[1, :5, :25])) / 65
    np.fill_diagonal(expected, 0)
    assert np.abs(corr - expected).max() < 1e-12  # float64 sums of ≤ 65 products: ~1e-16


def test_reversal_module_picks_the_community_with_most_reversal_neurons():
    realdata = _realdata()
    names = ["AVAL", "AVAR", "AIBL", "RIMR", "AVBL", "RIBL", "OLLL"]
    rows = np.array([[0, 0, 1, 1, 0, 1, 1],      # reversal neurons split 2/2
                     [0, 0, 0, 1, 1, 1, -1]])    # 3 together (AVAL, AVAR, AIBL), AVB/RIB apart
    r = realdata.reversal_module(rows, names)
    assert r["component"] == 1 and r["reversal_together"] == ["AVAL", "AVAR", "AIBL"]
    assert r["forward_inside"] == [] and r["community_size"] == 3
    assert r["reversal_present"] == ["AVAL", "AVAR", "AIBL", "RIMR"]


def test_seed_table_gives_each_seed_then_mean_and_sample_sd():
    """Hand-checked: margins 0.10, 0.30 → mean +0.20, sample SD 0.14 (√0.02); a seed whose
    ratio is undefined (one community: no pair between communities) is left out of its mean;
    the static baseline's own value in the last row."""
    realdata = _realdata()
    hom = {"fraction": 0.9, "chance_fraction": 0.8}
    rev = {"reversal_together": ["AVAL"], "reversal_present": ["AVAL", "AVAR"], "community_size": 5}
    one = {"neurons_assigned": 12, "communities": [2, 1], "homologs": hom, "reversal": rev,
           "white1986:all": {"ratio": 2.0}}
    first = realdata.headline(one)
    assert abs(first["homolog_margin"] - 0.10) < 1e-12 and first["reversal"] == "1/2 (size 5)"
    second = dict(first, homolog_margin=0.30, **{"white1986:all": None})
    static = dict(first, homolog_margin=0.32, **{"white1986:all": 1.23})
    text = realdata.seed_table([dict(first, seed="0", rank=2), dict(second, seed="1", rank=3)], static)
    lines = text.splitlines()
    assert lines[2].startswith("| 0 | 2 | 12 × 2/1 | +0.10 | 2.00× |") and "| 1 | 3 |" in lines[3]
    assert "+0.20 ± 0.14" in lines[4] and "2.00× ± 0.00" in lines[4]   # the undefined ratio left out
    assert lines[5].startswith("| static baseline |") and "+0.32" in lines[5] and "1.23×" in lines[5]


def test_report_shows_enrichment_of_a_users_csv_edge_list(tmp_path):
    """A user's edge list linking the planted group N00–N04 of the report's synthetic run (and
    two pairs elsewhere): that community holds all 10 of its pairs' links against 12 of the 36
    pairs among the 9 neurons the list knows (ratio 3), and only 1 of the C(9,5) = 126 groups
    of 5 is as dense, so p ≈ 1/126; in summary.json and on the page; names match on case and
    whitespace."""
    from test_report import PARAMS, synthetic

    from dynconn.io.references import read_edge_list
    from dynconn.stages import report

    path = tmp_path / "mine.csv"
    path.write_text("source,target,weight\n" + "".join(
        f" n{i:02d},N{j:02d} ,1\n" for i in range(5) for j in range(i + 1, 5)) + "N05,N10,1\nN06,N11,1\n")
    data = report.gather(*synthetic("aligned"))
    out = report.build(data, {**PARAMS, "reference_permutations": 199},
                       references=([read_edge_list(path)], []))
    entry = out["summary"]["references"][0]
    assert entry["neurons_matched"] == 9 and entry["links"] == 12
    detail = next(d for d in out["summary"]["components"][0]["communities_detail"] if d["cohesive"])
    res = detail["references"]["mine"]
    assert (res["links"], res["pairs"]) == (10, 10)
    assert res["ratio"] == pytest.approx(3.0, rel=1e-3)  # rounded to 4 digits in summary.json
    # 199 random groups, each the planted one with probability 1/126: p = (1 + hits) / 200,
    # hits ~ Binomial(199, 1/126), below 10 with probability > 0.999
    assert res["p_value"] < 0.05
    page = out["files"]["report.html"].decode()
    assert "Reference connectomes" in page and "10/10" in page

"""Publication quality and evidence in the report (issue 12 parts 4 and 6): fonts of at least
8 pt at print size, no overlapping labels, rounded times, readable rows at 24 animals, the
evidence figures, the spread over restarts, merged components, and the neuron search box
(names are data, never code)."""

from __future__ import annotations

import functools
import json
import re

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.text import Text

from dynconn.report import figures, palette
from dynconn.stages import report
from test_report import PARAMS, synthetic

HOSTILE = "<script>alert('x')</script>"


def built(layout="aligned", *, dpi=60, **kw):
    data = report.gather(*synthetic(layout, **kw))
    return data, report.build(data, {**PARAMS, "dpi": dpi})


def draw(job):
    """A figure of the report, drawn once with the Agg renderer (text positions final)."""
    fig = getattr(figures, job[1])(**job[2])
    FigureCanvasAgg(fig).draw()
    return fig


def shown_texts(fig) -> list[Text]:
    """Every text the renderer draws: non-empty, visible, tick labels only of the ticks drawn."""
    tick_labels, drawn = set(), []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                tick_labels.update((id(tick.label1), id(tick.label2)))
            if not ax.axison or not axis.get_visible():
                continue
            for tick in axis._update_ticks():
                drawn += [lab for lab in (tick.label1, tick.label2) if lab.get_visible()]
    others = [t for t in fig.findobj(Text) if id(t) not in tick_labels and t.get_visible()]
    return [t for t in others + drawn if t.get_text().strip()]


#: every figure of both layouts, with 3 animals (aligned) and 24 (concatenated), and the
#: figures that draw animals with 24 aligned ones
CASES = {"aligned-3": ("aligned", None, None), "concatenated-24": ("concatenated", 24, None),
         "aligned-24": ("aligned", 24, ("component_00", "evidence_00", "data_traces"))}


def all_jobs(cases=tuple(CASES)):
    jobs = []
    for case in cases:
        layout, n_animals, stems = CASES[case]
        data = report.gather(*synthetic(layout, n_animals=n_animals))
        jobs += [(f"{layout}-{n_animals}-{j[0]}", j) for j in report.analyse(data, PARAMS)["jobs"]
                 if stems is None or j[0] in stems]
    return jobs


@functools.lru_cache(maxsize=None)
def drawn_case(case: str) -> tuple:
    return tuple((name, job, draw(job)) for name, job in all_jobs((case,)))


@pytest.fixture(params=list(CASES))
def drawn(request):
    return drawn_case(request.param)


def test_every_text_is_at_least_8_pt_at_print_size(drawn):
    small = []
    for name, _, fig in drawn:
        width = fig.get_figwidth()
        assert width <= palette.MAX_PRINT_WIDTH + 1e-9, (name, width)
        scale = min(1.0, palette.MAX_PRINT_WIDTH / width)  # printed at its own size (at most a page wide)
        texts = shown_texts(fig)
        small += [(name, t.get_text(), t.get_fontsize()) for t in texts
                  if t.get_fontsize() * scale < palette.MIN_FONT - 1e-9]
        # and every text inside its figure (1 px slack for antialiasing)
        renderer, (fw, fh) = fig.canvas.get_renderer(), fig.canvas.get_width_height()
        for t in texts:
            x0, y0, x1, y1 = t.get_window_extent(renderer).extents
            if x0 < -1 or y0 < -1 or x1 > fw + 1 or y1 > fh + 1:
                small.append((name, t.get_text(), "outside the figure"))
    assert not small, small[:20]


def test_no_two_labels_overlap(drawn):
    overlaps = []
    for name, _, fig in drawn:
        renderer = fig.canvas.get_renderer()
        texts = shown_texts(fig)
        boxes = np.array([t.get_window_extent(renderer).extents for t in texts]).reshape(-1, 4)
        # 0.5 px at the drawing's 100 dpi: glyph boxes of neighbours that only touch do not count
        boxes += np.array([0.5, 0.5, -0.5, -0.5])
        x0, y0, x1, y1 = boxes.T
        hit = (x0[:, None] < x1[None, :]) & (x0[None, :] < x1[:, None]) & \
              (y0[:, None] < y1[None, :]) & (y0[None, :] < y1[:, None])
        i, j = np.nonzero(np.triu(hit, 1))
        overlaps += [(name, texts[a].get_text(), texts[b].get_text()) for a, b in zip(i, j)]
    assert not overlaps, overlaps[:20]


def test_overlap_check_can_fail():
    """The check above finds two labels drawn on one another."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 2))
    ax = fig.add_axes((0.1, 0.1, 0.8, 0.8))
    ax.text(0.5, 0.5, "AVAL")
    ax.text(0.52, 0.5, "AVAR")
    FigureCanvasAgg(fig).draw()
    texts = [t for t in shown_texts(fig) if t.get_text().startswith("AVA")]
    a, b = (t.get_window_extent(fig.canvas.get_renderer()) for t in texts)
    assert a.overlaps(b)


def test_24_animals_stay_readable():
    by_name = {name: fig for case in ("concatenated-24", "aligned-24") for name, _, fig in drawn_case(case)}
    # one row per animal on its own clock: each row tall enough for its 8-pt name, the figure bounded
    fig = by_name["concatenated-24-component_00"]
    rows = [ax for ax in fig.axes if ax.get_ylabel().startswith("worm")]
    assert len(rows) == 24
    assert all(ax.get_position().height * fig.get_figheight() * 72 >= palette.ROW_POINTS for ax in rows)
    assert fig.get_figheight() < 24 * 1.0 + 8  # rows, each with its covariate, and the bottom panels
    # every animal named in the "in whom" bars of the aligned layout, and in the evidence rows
    fig = by_name["aligned-24-component_00"]
    labels = {t.get_text() for t in shown_texts(fig)}
    assert {f"worm{a:02d}" for a in range(1, 25)} <= labels
    fig = by_name["aligned-24-evidence_00"]
    assert {f"worm{a:02d}" for a in range(1, 25)} <= {t.get_text() for t in shown_texts(fig)}


def test_row_names_when_readable_else_a_note():
    assert palette.readable_rows(10, 10 * palette.ROW_POINTS / 72)
    assert not palette.readable_rows(11, 10 * palette.ROW_POINTS / 72)
    assert "too small" in palette.rows_note(500, 2.6)
    data, out = built()
    job = next(j for j in out_jobs(data) if j[0] == "data_traces")
    names = {t.get_text() for t in shown_texts(draw(job))}
    assert {f"N{i:02d}" for i in range(12)} <= names  # 12 rows: named
    data = report.gather(*synthetic("aligned", n=400, groups=[list(range(0, 150)), list(range(150, 300))]))
    job = next(j for j in report.analyse(data, PARAMS)["jobs"] if j[0] == "data_traces")
    texts = [t.get_text() for t in shown_texts(draw(job))]
    assert not any(re.fullmatch(r"N\d+", t) for t in texts)  # 400 rows: no names ...
    assert any("too small for names" in t for t in texts)  # ... and a note saying why


def out_jobs(data):
    return report.analyse(data, PARAMS)["jobs"]


def test_times_are_rounded_everywhere():
    data = report.gather(*synthetic("aligned"))
    # what the flavell run showed: an epoch from round-off zero to a bin edge
    data.epochs = [{"label": "a", "start_s": 2.220446049250313e-16, "stop_s": 100.0},
                   {"label": "b", "start_s": 100.0, "stop_s": 480.659}]
    out = report.build(data, PARAMS)
    page = out["files"]["report.html"].decode()
    body = page.split("<details><summary>Resolved configuration")[0]  # the config is verbatim
    assert "e-16" not in body and "2.22045" not in body
    # 2 Hz frames: times to 0.1 s (no time on the page with more decimals)
    assert not re.findall(r"\d\.\d{2,}(?:–[\d.]+)? s\b", body), re.findall(r"\d\.\d{2,}(?:–[\d.]+)? s\b", body)[:5]
    assert "0–100 s" in body and "100–480.7 s" in body
    atlas = next(j for j in report.analyse(data, PARAMS)["jobs"] if j[0] == "atlas")
    assert atlas[2]["row_labels"][:2] == ["a (0–100 s)", "b (100–480.7 s)"]
    assert palette.seconds(-1e-12) == "0" and palette.seconds(12.0) == "12" and palette.time_decimals(0.25) == 1


def test_evidence_figure_per_component_with_active_stretches():
    data, out = built()
    page = out["files"]["report.html"].decode()
    assert "figures/evidence_00.png" in out["files"] and "figures/evidence_01.png" in out["files"]
    assert "fig-evidence_00" in page
    job = next(j for j in out_jobs(data) if j[0] == "evidence_00")
    panel = job[2]["panels"][0]
    assert panel["label"].startswith("C0·0") and len(panel["traces"]) == 3
    # the mean of the members' traces, per animal (display bins of 1 frame here: 400 frames)
    t, mean = panel["traces"][0]
    # float32 traces: the two means differ by summation order, a few float32 ulps (|mean| < 3: ~1e-6)
    np.testing.assert_allclose(mean, np.nanmean(data.traces[0][[0, 1, 2, 3, 4], :400], axis=0), atol=1e-5)
    assert job[2]["active"][0] == [[0.0, 100.0]]  # component 0 is active in epoch a
    fig = draw(job)
    spans = [p for ax in fig.axes for p in ax.patches if p.get_facecolor()[:3] == pytest.approx((0.835, 0.369, 0.0), abs=0.01)]
    assert len(spans) == 3  # one shaded active stretch per animal


def test_spread_over_restarts_is_drawn():
    ing, aff, fac, com = synthetic("aligned")
    rng = np.random.default_rng(3)
    base = fac.data["factors/time"]
    fac.data["fit/restarts/time"] = np.stack([base * (1 + 0.1 * rng.standard_normal(base.shape)) for _ in range(4)])
    data = report.gather(ing, aff, fac, com)
    assert data.restart_time.shape == (4,) + base.shape
    job = next(j for j in report.analyse(data, PARAMS)["jobs"] if j[0] == "component_00")
    lo, hi = job[2]["tracks"][0]["spread"]
    np.testing.assert_array_equal(lo, data.restart_time[:, :, 0].min(axis=0))
    np.testing.assert_array_equal(hi, data.restart_time[:, :, 0].max(axis=0))
    assert "4 restarts" in job[3]
    fig = draw(job)
    assert any(isinstance(c, PolyCollection) and len(c.get_paths()) == 1 for c in fig.axes[0].collections)
    # without restarts no band (and no claim about one)
    job = next(j for j in out_jobs(report.gather(*synthetic("aligned"))) if j[0] == "component_00")
    assert job[2]["tracks"][0]["spread"] is None and "restarts" not in job[3]


def test_merged_components_are_shown():
    ing, aff, fac, com = synthetic("aligned")
    fac.attrs["merged_components"] = json.dumps([[0, 2]])
    fac.data["merged_from"] = np.array([0, 1, 0], dtype=np.int32)
    data = report.gather(ing, aff, fac, com)
    assert data.merged == [(0, [0, 2])]
    out = report.build(data, PARAMS)
    page = out["files"]["report.html"].decode()
    assert "Merged duplicates" in page and "Merged from fitted components 0 + 2" in page
    sub = next(j for j in report.analyse(data, PARAMS)["jobs"] if j[0] == "component_00")[2]["subtitle"]
    assert "merged from fitted components 0+2" in sub


def test_neuron_names_are_data_in_the_page_and_figures():
    data = report.gather(*synthetic("aligned"))
    data.neurons = [HOSTILE] + data.neurons[1:]
    data.epochs[0]["label"] = "<script>epoch()</script>"
    out = report.build(data, PARAMS)
    page = out["files"]["report.html"].decode()
    assert HOSTILE not in page and "<script>alert" not in page and "<script>epoch" not in page
    assert "&lt;script&gt;epoch()&lt;/script&gt;" in page  # shown as text
    # exactly two scripts: the index (JSON, not run) and the inline search code; nothing external
    scripts = re.findall(r"<script([^>]*)>", page)
    assert scripts == [' type="application/json" id="dynconn-index"', ""]
    assert not re.findall(r"src=['\"](?!data:image/png;base64,)", page)  # only embedded figures
    assert "http://" not in page.replace("http://graphml", "") and "https://" not in page
    raw = re.search(r'<script type="application/json" id="dynconn-index">(.*?)</script>', page, re.S).group(1)
    index = json.loads(raw)
    assert index["neurons"][HOSTILE] == [[0, 0, True], [1, 1, False]]
    assert index["neurons"]["N11"] == []  # in no component's graph
    assert "<script>epoch()</script>" in index["components"][0]  # the epoch label, as data
    assert "<" not in raw  # the name is written with JSON escapes
    assert "id='neuron-search'" in page and "type='search'" in page
    svgs = {name: blob for name, blob in out["files"].items() if name.endswith(".svg")}
    for name, blob in svgs.items():
        assert b"<script" not in blob, name
    # ... and the names are there, as escaped text (svg.fonttype none): the check above is not empty
    assert b"&lt;script&gt;alert('x')&lt;/script&gt;" in svgs["figures/neuron_view.svg"]
    assert b"&lt;script&gt;epoch()&lt;/script&gt;" in svgs["figures/atlas.svg"]


def test_chips_carry_their_component_and_community(aligned_page):
    assert "data-comp='0' data-comm='0'" in aligned_page and "data-comp='1' data-comm='0'" in aligned_page


@pytest.fixture(scope="module")
def aligned_page():
    return built()[1]["files"]["report.html"].decode()


# ----------------------------------------------------------------------------- in a browser
@pytest.fixture(scope="module")
def browser():
    from test_report_browser import find_browser

    path = find_browser()
    if path is None:
        pytest.skip("no chromium here (the browser test of test_report_browser.py installs one)")
    return path


def test_search_box_in_chromium(browser, tmp_path):
    from test_report_browser import IMAGE_CHECK, Chromium

    data = report.gather(*synthetic("aligned"))
    data.neurons = [HOSTILE] + data.neurons[1:]
    data.epochs[0]["label"] = "<script>epoch()</script>"
    out = report.build(data, PARAMS)
    report.write(tmp_path, out, provenance={}, seconds=0.0, warnings=[])
    find = ("(q => { const box = document.getElementById('neuron-search'); box.value = q;"
            " box.dispatchEvent(new Event('input')); return {items: Array.from("
            "document.querySelectorAll('#neuron-results li')).map(li => li.textContent),"
            " hits: Array.from(document.querySelectorAll('.chip.hit')).map(c => c.textContent)}; })")
    with Chromium(browser) as chrome:
        chrome.open((tmp_path / "report.html").resolve().as_uri())
        images = chrome.evaluate(IMAGE_CHECK)
        n07 = chrome.evaluate(find + "('n07')")
        prefix = chrome.evaluate(find + "('N0')")
        hostile = chrome.evaluate(find + "('<script')")
        hostile_bold = chrome.evaluate("document.querySelector('#neuron-results li b').textContent")
        scripts = chrome.evaluate("document.scripts.length")
        epoch_shown = chrome.evaluate("document.body.innerText.includes('<script>epoch()</script>')")
        none = chrome.evaluate(find + "('XYZ')")
        errors = chrome.console_errors()
        dialogs = [e for e in chrome.events if e.get("method") == "Page.javascriptDialogOpening"]
        n07_where = chrome.evaluate(find.replace("map(c => c.textContent)", "map(c => (c.closest('section') "
                                                 "|| {id: 'top'}).id)") + "('N07')")
        chips = chrome.evaluate("document.querySelectorAll(\".chip[data-comp='1'][data-comm='0']\").length")
    assert len(images) >= 9 and all(i["complete"] and i["width"] > 0 for i in images), images
    # the evidence figures (each component's communities' mean traces) are among the decoded images
    alts = [i["alt"] for i in images]
    assert all(f"component {r}: mean traces of its communities' members per animal" in alts for r in (0, 1)), alts
    assert not errors, errors
    # case-insensitive exact match: its communities listed, their chips outlined on the page --
    # every chip of its cohesive community C1·0 (the diffuse C0·1 has none), in the atlas' epoch
    # rows, the components table and the neuron view among them
    assert n07["items"] == ["N07 C0·1 (diffuse) C1·0"] and n07["hits"] == ["C1·0"] * chips and chips >= 3
    assert {"atlas", "components", "neurons"} <= set(n07_where["hits"])
    assert none["hits"] == []  # a new search clears the old outline
    assert len(prefix["items"]) == 9 and prefix["hits"] == []  # N01…N09: listed, nothing outlined
    assert hostile_bold == HOSTILE and hostile["items"][0].startswith(HOSTILE)  # shown as text
    assert scripts == 2 and not dialogs and epoch_shown  # the names are text on the page, never run
    assert none["items"] == ["no neuron named XYZ"]


# ----------------------------------------------------------------------------- at scale
def overlapping(fig) -> list[tuple[str, str]]:
    renderer = fig.canvas.get_renderer()
    texts = shown_texts(fig)
    boxes = np.array([t.get_window_extent(renderer).extents for t in texts]).reshape(-1, 4) + [0.5, 0.5, -0.5, -0.5]
    x0, y0, x1, y1 = boxes.T
    hit = (x0[:, None] < x1[None, :]) & (x0[None, :] < x1[:, None]) & (y0[:, None] < y1[None, :]) & (y0[None, :] < y1[:, None])
    w, h = fig.canvas.get_width_height()
    outside = [(t.get_text(), "outside") for t, (a, b, c, d) in zip(texts, boxes) if a < -1 or b < -1 or c > w + 1 or d > h + 1]
    return [(texts[a].get_text(), texts[b].get_text()) for a, b in zip(*np.nonzero(np.triu(hit, 1)))] + outside


def test_a_large_run_gets_aggregated_views(monkeypatch):
    """700 neurons (the views switch at the same thresholds for 5,000: benchmarks/report_scale.py,
    docs/benchmarks.md): the component matrix community by community, the overview's rows averaged
    (thresholds lowered here, to stay fast), no names where rows are under 8 pt, the neuron-view
    table left to the search box, and the page far below 20 MB."""
    monkeypatch.setattr(report, "OVERVIEW_ROWS", 300)
    monkeypatch.setattr(report, "NEURON_TABLE_ROWS", 200)  # 240 neurons in cohesive communities here
    n = 700
    data = report.gather(*synthetic("aligned", n=n, groups=[list(range(0, 120)), list(range(120, 240))]))
    out = report.build(data, PARAMS)
    page = out["files"]["report.html"].decode()
    assert len(page) < 2e6  # 20 MB at 5,000 neurons and 300 dpi; here 60 dpi
    assert "too many for a table on this page" in page and "Find a neuron" in page
    jobs = {j[0]: j for j in report.analyse(data, PARAMS)["jobs"]}
    matrix = jobs["component_00"][2]["matrix"]
    assert "w" not in matrix and matrix["blocks"]["values"].shape == (2, 2)
    assert matrix["blocks"]["edges"].tolist() == [0, 119, n - 1]  # C0·0 (N11 is in no graph), then the diffuse rest
    # block means: the planted pairs (1.0 + noise), the rest 0.01 + noise
    assert matrix["blocks"]["values"][0, 0] == pytest.approx(1.0, abs=0.01)
    assert matrix["blocks"]["values"][1, 1] == pytest.approx(0.0125, abs=0.003)
    assert all(t.shape[0] <= 300 for t in jobs["data_traces"][2]["traces"])
    for stem in ("component_00", "data_traces", "neuron_view", "evidence_00"):
        fig = draw(jobs[stem])
        texts = [t.get_text() for t in shown_texts(fig)]
        assert not any(re.fullmatch(r"N\d+", t) for t in texts), stem
        assert not overlapping(fig), (stem, overlapping(fig)[:5])
        assert all(t.get_fontsize() >= palette.MIN_FONT for t in shown_texts(fig))


def test_graphml_of_a_large_graph_keeps_each_nodes_strongest_edges():
    import xml.etree.ElementTree as ET

    data = report.gather(*synthetic("aligned"))
    an = report.analyse(data, PARAMS)
    w, stats = an["matrices"][0], an["stats"][0]
    backbone = {(0, 1), (2, 3)}
    full = ET.fromstring(report.graphml(0, w, data.membership[0], stats, data.neurons, backbone))
    small = ET.fromstring(report.graphml(0, w, data.membership[0], stats, data.neurons, backbone, max_edges=20))
    ns = {"g": "http://graphml.graphdrawing.org/xmlns"}
    n_full, n_small = (len(x.findall("g:graph/g:edge", ns)) for x in (full, small))
    assert n_full == 55 and n_small <= 20 + len(backbone) and n_small < n_full
    note = small.find("g:graph/g:data[@key='edges']", ns).text
    assert "2 strongest" in note and f"of {n_full} positive pairs" in note
    edges = {(e.get("source"), e.get("target")) for e in small.findall("g:graph/g:edge", ns)}
    assert ("N00", "N01") in edges and ("N02", "N03") in edges  # the backbone is kept

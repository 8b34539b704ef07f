"""Stage 5, report: the HTML atlas and the plain-file exports.

Outputs (DESIGN.md):

``report.html``                 one self-contained file, figures embedded
``exports/communities.csv``     ``component,neuron,community``
``exports/factors_time.csv``    ``time_s,component_0,…`` (``time_s,animal,component_0,…`` when
                                the layout is concatenated: each animal's bins on its own clock)
``exports/factors_animal.csv``  ``animal,component_0,…`` (concatenated: each animal's mean
                                temporal loading)
``exports/covariates_time.csv`` ``time_s,animal,<covariate>,…`` binned like the affinity (only
                                when covariates were given)
``exports/summary.json``        rank, components (weight, active intervals, epochs,
                                communities), atlas, and this stage's provenance

:func:`summarize` and :func:`export_tables` are pure; :func:`render_html` builds the page.
"""

from __future__ import annotations

import base64
import html
import io
import json
import platform
from pathlib import Path

import numpy as np

from . import __version__, atlas, figures
from .artifacts import atomic_write_bytes
from .communities import pair_matrix
from .config import Config
from .console import Console

NAME = "report"
OUTPUT = "report.html"
UPSTREAM = ("ingest", "affinity", "factorize", "communities")
SUMMARY = Path("exports") / "summary.json"


# ----------------------------------------------------------------------------- pure core
def community_lists(membership_row: np.ndarray, neurons: list[str]) -> list[list[str]]:
    """Members of each community of one component, community 0 first."""
    labels = np.unique(membership_row[membership_row >= 0])
    return [[neurons[i] for i in np.flatnonzero(membership_row == k)] for k in labels]


def summarize(
    *, weights: np.ndarray, factors_time: np.ndarray, time_s: np.ndarray, bin_seconds: float,
    membership: np.ndarray, neurons: list[str], epochs: list[dict], threshold: float,
    time_animal: np.ndarray | None = None, animals: list[str] | None = None,
) -> dict:
    """The content of ``summary.json`` (without provenance).

    ``time_animal`` (T,) (concatenated layout): the animal of each bin; intervals are then
    found per animal on its own clock (``active_intervals_by_animal``) and
    ``active_intervals`` is their union."""
    rows = atlas.epoch_rows(epochs, time_s, bin_seconds)
    components = []
    for r in range(weights.size):
        loading = factors_time[:, r]
        active = atlas.active_bins(loading, threshold)
        extra = {}
        if time_animal is None:
            intervals = atlas.active_intervals(time_s, active, bin_seconds)
        else:
            by_animal = {name: atlas.active_intervals(time_s[time_animal == a], active[time_animal == a],
                                                      bin_seconds) for a, name in enumerate(animals)}
            intervals = _union(sum(by_animal.values(), []))
            extra["active_intervals_by_animal"] = by_animal
        components.append({
            "id": r,
            "weight": float(weights[r]),
            "active_intervals": intervals,
            **extra,
            "epochs": [row["label"] for row, on in zip(rows, atlas.active_epochs(loading, time_s, rows, threshold))
                       if on and row["label"] != atlas.NO_STIMULUS],
            "communities": community_lists(membership[r], neurons),
        })
    return {
        "rank": int(weights.size),
        "active_threshold": threshold,
        "active_rule": "active in a bin where the temporal loading is >= active_threshold x its maximum; "
                       "in an epoch when its mean loading over the epoch is >= active_threshold x its "
                       "largest mean over any epoch",
        "components": components,
        "atlas": atlas.build_atlas(time_s, factors_time, epochs, bin_seconds, threshold),
    }


def _union(intervals: list[list[float]]) -> list[list[float]]:
    """Sorted union of ``[start, stop]`` intervals (touching ones merged)."""
    out: list[list[float]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1] + 1e-9:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


def per_animal_means(factors_time: np.ndarray, time_animal: np.ndarray, n_animals: int) -> np.ndarray:
    """(A, R): each animal's mean temporal loading (the concatenated layout's animal table)."""
    return np.stack([factors_time[time_animal == a].mean(axis=0) if (time_animal == a).any()
                     else np.zeros(factors_time.shape[1]) for a in range(n_animals)])


def _csv(header: list[str], rows) -> bytes:
    lines = [",".join(header)]
    lines += [",".join(str(v) for v in row) for row in rows]
    return ("\n".join(lines) + "\n").encode()


def export_tables(
    *, membership: np.ndarray, neurons: list[str], time_s: np.ndarray, factors_time: np.ndarray,
    animals: list[str], factors_animal: np.ndarray, time_animal: np.ndarray | None = None,
    covariates: tuple[list[str], np.ndarray] | None = None,
) -> dict[str, bytes]:
    """The CSV exports as bytes, keyed by their path under the workdir.

    ``time_animal`` (T,) (concatenated layout) adds the ``animal`` column to
    factors_time.csv. ``covariates`` = (names (C), values (C, T, A) or (C, T, 1) with
    ``time_animal``) writes covariates_time.csv, one row per bin and animal."""
    rank = factors_time.shape[1]
    comp_cols = [f"component_{r}" for r in range(rank)]
    communities_rows = [(r, neurons[i], int(membership[r, i]))
                        for r in range(membership.shape[0]) for i in np.flatnonzero(membership[r] >= 0)]
    if time_animal is None:
        time_header = ["time_s", *comp_cols]
        time_rows = ([f"{t:g}", *(f"{v:.6g}" for v in row)] for t, row in zip(time_s, factors_time))
    else:
        time_header = ["time_s", "animal", *comp_cols]
        time_rows = ([f"{t:g}", animals[a], *(f"{v:.6g}" for v in row)]
                     for t, a, row in zip(time_s, time_animal, factors_time))
    files = {
        "exports/communities.csv": _csv(["component", "neuron", "community"], communities_rows),
        "exports/factors_time.csv": _csv(time_header, time_rows),
        "exports/factors_animal.csv": _csv(
            ["animal", *comp_cols],
            ([a, *(f"{v:.6g}" for v in row)] for a, row in zip(animals, factors_animal))),
    }
    if covariates is not None:
        names, values = covariates
        if time_animal is None:
            cov_rows = ([f"{t:g}", animals[a], *(f"{v:.6g}" for v in values[:, k, a])]
                        for a in range(len(animals)) for k, t in enumerate(time_s))
        else:
            cov_rows = ([f"{t:g}", animals[a], *(f"{v:.6g}" for v in values[:, k, 0])]
                        for k, (t, a) in enumerate(zip(time_s, time_animal)))
        files["exports/covariates_time.csv"] = _csv(["time_s", "animal", *names], cov_rows)
    return files


def figure_png(fig) -> str:
    """A figure as a base64 PNG data URI (the figure is closed)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    figures.plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#222;line-height:1.45}
main{max-width:1100px;margin:0 auto;padding:1.5em 2em 4em}
nav{background:#f4f4f4;padding:.8em 2em;border-bottom:1px solid #ddd;position:sticky;top:0}
nav a{margin-right:1.2em;color:#0072B2;text-decoration:none}
h1{margin-bottom:.2em} h2{border-bottom:2px solid #0072B2;padding-bottom:.2em;margin-top:2em}
.how{background:#eef5fb;border-left:4px solid #0072B2;padding:.5em 1em;font-size:.93em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f4f4f4} img{max-width:100%} .comp{border:1px solid #ddd;padding:0 1em 1em;margin:1.2em 0}
.swatch{display:inline-block;width:.8em;height:.8em;margin-right:.3em;border-radius:2px}
pre{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:.85em}
"""


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(ctx: dict) -> str:
    """The report page. ``ctx`` holds the summary, figure URIs and run facts."""
    esc = html.escape
    s = ctx["summary"]
    comps_html = []
    for comp, figs in zip(s["components"], ctx["component_figures"]):
        r = comp["id"]
        members = "".join(
            f"<li><span class='swatch' style='background:{figures.community_colour(k)}'></span>"
            f"community {k} ({len(c)}): {esc(', '.join(c))}</li>"
            for k, c in enumerate(comp["communities"]))
        intervals = ", ".join(f"{a:g}–{b:g} s" for a, b in comp["active_intervals"]) or "none"
        comps_html.append(
            f"<div class='comp' id='component-{r}'><h3>Component {r}</h3>"
            f"<p>weight {comp['weight']:.4g}; active in epochs: <b>{esc(', '.join(comp['epochs']) or 'none')}</b>;"
            f" active intervals: {esc(intervals)}</p>"
            f"<img alt='temporal loading of component {r}' src='{figs['time']}'>"
            f"<img alt='animal loading of component {r}' src='{figs['animal']}'>"
            f"<img alt='pair matrix of component {r}' src='{figs['matrix']}'>"
            f"<ul>{members or '<li>no neurons above the strength threshold</li>'}</ul></div>")
    atlas_rows = [[esc(row["epoch"]), f"{row['start_s']:g}–{row['stop_s']:g} s",
                   ", ".join(f"<a href='#component-{r}'>{r}</a>" for r in row["components"]) or "—"]
                  for row in s["atlas"]]
    facts = _table(["", ""], [[esc(k), esc(str(v))] for k, v in ctx["facts"].items()])
    warn = "".join(f"<li>{esc(w)}</li>" for w in ctx["warnings"]) or "<li>none</li>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>dynconn report</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>
<body><nav><a href="#summary">Run summary</a><a href="#data">Data</a><a href="#atlas">Atlas</a>
<a href="#components">Components</a></nav><main>
<h1>Dynamic functional connectome</h1>
<p>dynconn {esc(__version__)} — {len(s['components'])} components learned from {esc(str(ctx['facts']['animals']))} animals.</p>
<h2 id="summary">Run summary</h2>{facts}
<h3>Warnings raised on the way</h3><ul>{warn}</ul>
<details><summary>Resolved configuration (defaults included)</summary><pre>{esc(ctx['config_text'])}</pre></details>
<h2 id="data">Data overview</h2>
<p class="how">How to read this: one heatmap per animal, rows are neurons in the same order in every animal
(blank rows: neuron not recorded in that animal), colour is the normalised trace; white lines mark stimulus epochs.</p>
<img alt="traces overview" src="{ctx['traces_figure']}">
<h2 id="atlas">Atlas</h2>
<p class="how">How to read this: one row per stimulus epoch (and per stretch without a stimulus). A component is listed
when its mean temporal loading over the epoch is at least {s['active_threshold']:g} × its largest mean over any epoch; strongest first.</p>
{_table(['epoch', 'time', 'active components'], atlas_rows)}
<h2 id="components">Components</h2>
<p class="how">How to read this: each component is a motif — a pattern of neuron pairs (matrix) that interacts with a
time course (top; shaded bands are stimulus epochs, the dashed line the activity threshold) in some animals (bars).
The matrix shows the neurons of the component's graph grouped by community (coloured bars, white boundaries).</p>
{''.join(comps_html)}
</main></body></html>
"""


# ----------------------------------------------------------------------------- stage
def params(config: Config) -> dict:
    return dict(config["report"])


def stimuli_of(ingest_artifact) -> list[dict]:
    return [{"label": str(l), "start_s": float(s), "stop_s": float(e)}
            for l, s, e in zip(ingest_artifact["stimuli/label"], ingest_artifact["stimuli/start_s"],
                               ingest_artifact["stimuli/stop_s"])]


def run(config: Config, workdir: Path, console: Console, upstream: dict) -> dict:
    ing, aff, fac, com = (upstream[k] for k in UPSTREAM)
    threshold = config["report"]["active_threshold"]
    neurons = [str(n) for n in aff["neurons"]]
    animals = [str(a) for a in aff["animals"]]
    time_s = aff["time"]
    bin_seconds = float(aff.attrs["frames_per_bin"]) / float(aff.attrs["sampling_rate"])
    epochs = stimuli_of(ing)
    weights, f_time, f_animal, f_pairs = (fac[k] for k in ("weights", "factors/time", "factors/animals",
                                                          "factors/pairs"))
    membership = com["membership"]
    # concatenated layout: bins of every animal on their own clocks; the animal table is each
    # animal's mean temporal loading (the factor's animal mode is trivial, (1, R))
    time_animal = aff["time_animal"] if str(aff.attrs.get("layout", "aligned")) == "concatenated" else None
    if time_animal is not None:
        f_animal = per_animal_means(f_time, time_animal, len(animals))
    covariates = ([str(c) for c in aff["covariates/names"]], aff["covariates/values"]) \
        if "covariates/values" in aff else None
    summary = summarize(weights=weights, factors_time=f_time, time_s=time_s, bin_seconds=bin_seconds,
                        membership=membership, neurons=neurons, epochs=epochs, threshold=threshold,
                        time_animal=time_animal, animals=animals)
    files = export_tables(membership=membership, neurons=neurons, time_s=time_s, factors_time=f_time,
                          animals=animals, factors_animal=f_animal, time_animal=time_animal,
                          covariates=covariates)
    comp_figs = []
    with console.progress("report figures", weights.size + 1) as advance:
        traces_fig = figure_png(figures.traces_overview(ing["traces"], ing["time"], neurons, animals, epochs))
        advance()
        for r in range(weights.size):
            w = pair_matrix(f_pairs[:, r], aff["pairs"], len(neurons))
            comp_figs.append({
                "time": figure_png(figures.temporal_loading(time_s, f_time[:, r], epochs, threshold,
                                                            f"Component {r}: temporal loading",
                                                            time_animal=time_animal, animals=animals,
                                                            covariates=covariates)),
                "animal": figure_png(figures.animal_loading(animals, f_animal[:, r], f"Component {r}: animals")),
                "matrix": figure_png(figures.community_matrix(w, membership[r], neurons,
                                                              f"Component {r}: pairs by community")),
            })
            advance()
    warnings_all = []
    for art in (ing, aff, fac, com):
        warnings_all += json.loads(art.attrs.get("warnings", "[]"))
    facts = {
        "animals": len(animals),
        "neurons (union)": len(neurons),
        "neurons per animal": ", ".join(f"{a}: {int(n)}" for a, n in zip(animals, ing["present"].sum(axis=0))),
        "shared by all animals": int(ing["present"].all(axis=1).sum()),
        "duration": ", ".join(f"{a}: {int(n) / float(ing.attrs['sampling_rate']):g} s"
                              for a, n in zip(animals, ing["n_frames"])) if "n_frames" in ing
                    else f"{ing['time'][-1] + 1 / float(ing.attrs['sampling_rate']):g} s",
        "layout": str(ing.attrs.get("layout", "aligned")),
        "sampling rate": f"{float(ing.attrs['sampling_rate']):g} Hz",
        "time bins": f"{time_s.size} × {bin_seconds:g} s",
        "rank": weights.size,
        "stage times": ", ".join(f"{k}: {float(a.attrs.get('seconds', 0)):.1f} s"
                                 for k, a in zip(UPSTREAM, (ing, aff, fac, com))),
        "versions": f"dynconn {__version__}, Python {platform.python_version()}, numpy {np.__version__}",
    }
    page = render_html({"summary": summary, "component_figures": comp_figs, "traces_figure": traces_fig,
                        "facts": facts, "warnings": warnings_all,
                        "config_text": json.dumps(config.values, indent=2)})
    files["report.html"] = page.encode()
    return {"files": files, "summary": summary}


def write(workdir: Path, result: dict, *, provenance: dict, seconds: float, warnings: list[str]) -> None:
    """Write every file atomically; summary.json (which records the provenance) last, so a
    report is up to date only when all its files were written."""
    for rel, data in result["files"].items():
        atomic_write_bytes(workdir / rel, data)
    summary = {**result["summary"], "provenance": {**provenance, "seconds": seconds, "warnings": warnings}}
    atomic_write_bytes(workdir / SUMMARY, json.dumps(summary, indent=2).encode())


def recorded_provenance(workdir: Path) -> dict | None:
    try:
        summary = json.loads((workdir / SUMMARY).read_text())
        prov = summary["provenance"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not (workdir / OUTPUT).exists():
        return None
    return prov

"""Stage 5, report: the HTML atlas, the figures and the plain-file exports.

Outputs (DESIGN.md, docs/report.md):

``report.html``                    one self-contained file (figures embedded, no scripts)
``figures/<name>.png|.svg``        every figure of the page, for papers
``exports/communities.csv``        ``component,neuron,community,cohesion,p_value,cohesive``
``exports/factors_time.csv``       ``time_s,[animal,]component_0,…``
``exports/factors_animal.csv``     ``animal,component_0,…``
``exports/component_XX.graphml``   each component's graph (weights, communities)
``exports/summary.json``           rank, components, atlas, neuron view, provenance

The core is pure: :func:`gather` turns the upstream artifacts into a :class:`RunData`;
:func:`community_stats`, :func:`summarize`, :func:`neuron_view`, :func:`export_tables`,
:func:`graphml` and :func:`dataset_facts` are arrays in, plain structures out;
:func:`figure_jobs` lists the figures (functions of :mod:`dynconn.report.figures`) and
:func:`render_html` builds the page. :func:`run` and :func:`write` are the stage wrapper.
"""

from __future__ import annotations

import base64
import html
import json
import os
import platform
import re
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from xml.sax.saxutils import quoteattr
from xml.sax.saxutils import escape as xml_escape

import numpy as np

from .. import __version__
from ..methods import atlas, behaviour, flags, null
from ..methods import reference as refs
from ..report import palette
from ..io.artifacts import atomic_write_bytes
from .communities import event_share, pair_matrix
from ..config import Config
from ..console import Console

NAME = "report"
OUTPUT = "report.html"
UPSTREAM = ("ingest", "affinity", "factorize", "communities")
# the shares and replications read the tensor by blocks of pairs: over compute.memory_budget it
# stays on disk
STREAMED_INPUTS = {"affinity": ("affinity",)}
ENGINE = True  # run() takes the pipeline's engine: the surrogates are tasks on a distributed one
SUMMARY = Path("exports") / "summary.json"
STAGE_NAMES = UPSTREAM  # the stages the page describes: every stage before this one
# files this stage owns in figures/ and exports/ (stale ones are removed on rewrite)
OWNED = re.compile(r"^(figures/.+\.(png|svg)|exports/component_\d+\.graphml|exports/covariates_time\.csv)$")


# ----------------------------------------------------------------------------- inputs
@dataclass
class RunData:
    """Everything the report reads from the artifacts, layout made explicit."""

    layout: str  # "aligned" | "concatenated"
    neurons: list[str]
    animals: list[str]
    time_s: np.ndarray  # (T,) bin centres (each animal's own clock when concatenated)
    time_animal: np.ndarray | None  # (T,) animal of each bin (concatenated) or None
    bin_seconds: float
    epochs: list[dict]
    weights: np.ndarray  # (R,)
    f_time: np.ndarray  # (T, R)
    f_animal: np.ndarray  # (A, R) or (1, R)
    f_pairs: np.ndarray  # (P, R)
    pairs: np.ndarray  # (P, 2)
    membership: np.ndarray  # (R, N)
    traces: np.ndarray  # (A, N, F) normalised, NaN where absent / padded
    present: np.ndarray  # (N, A)
    n_frames: np.ndarray  # (A,)
    sampling_rate: float
    covariate_names: list[str] = field(default_factory=list)
    covariates: np.ndarray | None = None  # (C, T, A) aligned, (C, T, 1) concatenated
    stability: np.ndarray | None = None  # (R,)
    modularity: np.ndarray | None = None  # (R,)
    levels: dict = field(default_factory=dict)
    rank_selection: dict | None = None
    rank_rule: str | None = None
    rank_rule_params: dict = field(default_factory=dict)
    stage_seconds: dict = field(default_factory=dict)
    stage_warnings: dict = field(default_factory=dict)
    stage_versions: dict = field(default_factory=dict)
    stage_created: dict = field(default_factory=dict)
    fit: dict = field(default_factory=dict)
    merged: list = field(default_factory=list)  # [(reported component, [fitted components])] merged duplicates
    f_courses: np.ndarray | None = None  # (A, T, R) per-animal courses (factorize.time_courses: per_animal)
    max_event_share: float = 1.0  # communities.max_event_share of the communities artifact (1: none)

    @property
    def rank(self) -> int:
        return int(self.weights.size)

    @property
    def concatenated(self) -> bool:
        return self.layout == "concatenated"

    @property
    def decimals(self) -> int:
        """Decimals of a time on the page: a frame's resolution (:func:`palette.time_decimals`)."""
        return palette.time_decimals(1.0 / self.sampling_rate)

    @property
    def restart_time(self) -> np.ndarray | None:
        """(K, T, R) every restart's temporal loading matched to the kept one (factors.h5
        ``/fit/restarts/time``), or None (older artifacts, a single restart)."""
        v = self.fit.get("restarts/time")
        if v is None or np.ndim(v) != 3 or v.shape[0] < 2 or v.shape[1:] != self.f_time.shape:
            return None
        return np.asarray(v, dtype=float)


def _strings(values) -> list[str]:
    return [str(v) for v in np.asarray(values).ravel()]


def layout_of(*artifacts) -> str:
    """The layout recorded by the artifacts (a missing attribute means ``aligned``)."""
    for art in artifacts:
        value = art.attrs.get("layout")
        if value is not None:
            return str(value)
    return "aligned"


def gather(ing, aff, fac, com) -> RunData:
    """The report's inputs from the four upstream artifacts (``Artifact`` objects)."""
    layout = layout_of(aff, ing)
    rate = float(aff.attrs.get("sampling_rate", ing.attrs.get("sampling_rate")))
    bin_seconds = float(aff.attrs["frames_per_bin"]) / rate if "frames_per_bin" in aff.attrs else \
        float(json.loads(aff.attrs.get("params", "{}")).get("bin_seconds", 1.0))
    traces = np.asarray(ing["traces"])
    n_frames = np.asarray(ing["n_frames"], dtype=np.int64) if "n_frames" in ing else \
        np.full(traces.shape[0], traces.shape[2], dtype=np.int64)
    epochs = [{"label": str(lab), "start_s": float(s), "stop_s": float(e)}
              for lab, s, e in zip(ing["stimuli/label"], ing["stimuli/start_s"], ing["stimuli/stop_s"])] \
        if "stimuli/label" in ing else []
    rank_sel = {k.split("/", 1)[1]: np.asarray(v) for k, v in fac.data.items() if k.startswith("rank_selection/")}
    fit = {k.split("/", 1)[1]: np.asarray(v) for k, v in fac.data.items() if k.startswith("fit/")}
    stability = np.asarray(com["stability"], dtype=float) if "stability" in com else None
    modularity = np.asarray(com["modularity"], dtype=float) if "modularity" in com else None
    # communities.h5 /levels is (R, L, N), finest level first
    levels = {"membership": np.transpose(np.asarray(com["levels"]), (1, 0, 2))} if "levels" in com else {}
    max_event_share = float(json.loads(com.attrs.get("params", "{}")).get("max_event_share", 1.0))
    arts = dict(zip(STAGE_NAMES, (ing, aff, fac, com)))
    return RunData(
        layout=layout,
        neurons=_strings(aff["neurons"]),
        animals=_strings(aff["animals"]),
        time_s=np.asarray(aff["time"], dtype=float),
        time_animal=np.asarray(aff["time_animal"], dtype=np.int64) if layout == "concatenated" else None,
        bin_seconds=bin_seconds,
        epochs=epochs,
        weights=np.asarray(fac["weights"], dtype=float),
        f_time=np.asarray(fac["factors/time"], dtype=float),
        f_animal=np.asarray(fac["factors/animals"], dtype=float),
        f_pairs=np.asarray(fac["factors/pairs"]),
        f_courses=np.asarray(fac["factors/time_by_animal"], dtype=float) if "factors/time_by_animal" in fac else None,
        max_event_share=max_event_share,
        pairs=np.asarray(aff["pairs"]),
        membership=np.asarray(com["membership"]),
        traces=traces,
        present=np.asarray(ing["present"], dtype=bool),
        n_frames=n_frames,
        sampling_rate=rate,
        covariate_names=_strings(aff["covariates/names"]) if "covariates/names" in aff else [],
        covariates=np.asarray(aff["covariates/values"], dtype=float) if "covariates/values" in aff else None,
        stability=stability,
        modularity=modularity,
        levels=levels,
        rank_selection=rank_sel or None,
        rank_rule=str(fac.attrs["rank_rule"]) if "rank_rule" in fac.attrs else None,
        rank_rule_params=json.loads(fac.attrs.get("rank_rule_params", "{}")),
        stage_seconds={k: float(a.attrs.get("seconds", float("nan"))) for k, a in arts.items()},
        stage_warnings={k: json.loads(a.attrs.get("warnings", "[]")) for k, a in arts.items()},
        stage_versions={k: str(a.attrs.get("dynconn_version", "?")) for k, a in arts.items()},
        stage_created={k: str(a.attrs.get("created", "?")) for k, a in arts.items()},
        fit=fit,
        merged=merged_groups(fac),
    )


def merged_groups(fac) -> list[tuple[int, list[int]]]:
    """The duplicates the factorize stage merged: ``[(reported component, [fitted ones])]``
    (factors.h5 attribute ``merged_components`` and ``/merged_from``)."""
    groups = fac.attrs.get("merged_components", [])
    if isinstance(groups, (str, bytes)):
        groups = json.loads(groups or "[]")
    if not len(groups) or "merged_from" not in fac:
        return []
    merged_from = np.asarray(fac["merged_from"]).astype(int)
    return [(int(merged_from[g[0]]), [int(r) for r in g]) for g in groups if len(g) > 1]


# ----------------------------------------------------------------------------- communities
def community_stats(w: np.ndarray, membership_row: np.ndarray, cohesion_threshold: float) -> list[dict]:
    """Each community of one component: ``{"id", "members" (indices, strongest first),
    "size", "density", "cohesion", "cohesive", "colour"}``.

    *density*: mean pair loading between its members; *cohesion*: density / the mean pair
    loading over the component's whole graph (1 = no denser than the graph as a whole).
    A community is *cohesive* when it has ≥ 2 members and cohesion ≥ ``cohesion_threshold``:
    the groups that actually interact. Cohesive communities get palette colours in order of
    decreasing cohesion, the others the diffuse grey. Returned in that order (cohesive first),
    then diffuse by size."""
    inside = np.flatnonzero(membership_row >= 0)
    if not inside.size:
        return []
    strength = w.sum(axis=1)
    stats = []
    for k, (size, density, cohesion) in null.cohesion_of(w, membership_row).items():
        members = np.flatnonzero(membership_row == k)
        members = members[np.argsort(-strength[members], kind="stable")]
        stats.append({"id": int(k), "members": members, "size": size, "density": density,
                      "cohesion": cohesion, "cohesive": bool(size > 1 and cohesion >= cohesion_threshold)})
    stats.sort(key=lambda s: (not s["cohesive"], -(s["cohesion"] if s["cohesive"] else s["size"]), s["id"]))
    rank = 0
    for s in stats:
        if s["cohesive"]:
            s["colour"] = palette.palette_colour(rank)
            rank += 1
        else:
            s["colour"] = palette.DIFFUSE
    return stats


def matrix_order(stats: list[dict]) -> tuple[np.ndarray, list[float]]:
    """Neurons of a component's graph in community order (the order of ``stats``, each
    community strongest member first) and the boundaries between communities."""
    order = np.concatenate([s["members"] for s in stats]) if stats else np.zeros(0, dtype=int)
    bounds = list(np.cumsum([s["size"] for s in stats])[:-1] - 0.5) if stats else []
    return order.astype(int), [float(b) for b in bounds]


def matrix_groups(stats: list[dict]) -> list[tuple[int, int, str]]:
    """Blocks of the community-ordered matrix: one per cohesive community (no text: its
    members are named), then one for all diffuse communities and singletons together
    (text ``diffuse (n)``). ``[(first row, stop row, text)]``."""
    groups, pos = [], 0
    for s in stats:
        if s["cohesive"]:
            groups.append((pos, pos + s["size"], ""))
        pos += s["size"]
    first_diffuse = sum(s["size"] for s in stats if s["cohesive"])
    if pos > first_diffuse:
        groups.append((first_diffuse, pos, f"diffuse ({pos - first_diffuse})"))
    return groups


def neuron_order(all_stats: list[list[dict]], strengths: np.ndarray, n: int,
                 sequence: list[int] | None = None) -> tuple[np.ndarray, list[tuple[int, int] | None]]:
    """One neuron order for every overview (heatmaps, neuron view).

    Each neuron's *home* is the cohesive community where it is relatively strongest
    (strength / the component's strongest neuron). Neurons are grouped by home — components
    in ``sequence`` order (default: by id; the report uses the order of their peak epochs, so
    the groups form a staircase in time), communities in cohesion order — strongest first;
    neurons without a home come last, in index order. ``strengths`` is (R, N).
    Returns ``(order (N,), home per neuron: (component, community id) or None)``."""
    sequence = list(range(len(all_stats))) if sequence is None else list(sequence)
    position = {r: k for k, r in enumerate(sequence)}
    rel = strengths / np.maximum(strengths.max(axis=1, keepdims=True), 1e-300)
    best_key = np.full(n, np.inf)
    best_rel = np.zeros(n)
    home: list[tuple[int, int] | None] = [None] * n
    for r, stats in enumerate(all_stats):
        for c, s in enumerate(stats):
            if not s["cohesive"]:
                continue
            for i in s["members"]:
                if rel[r, i] > best_rel[i]:
                    best_rel[i], best_key[i] = rel[r, i], position[r] * 10_000 + c
                    home[i] = (r, s["id"])
    return np.lexsort((np.arange(n), -best_rel, best_key)), home


def home_groups(order: np.ndarray, home: list, stats: list[list[dict]]) -> list[tuple[int, int, str, str]]:
    """Contiguous blocks of ``order`` with one home: ``[(first, stop, "C<r>·<k>", colour)]``."""
    colour = {(r, st["id"]): st["colour"] for r, comp in enumerate(stats) for st in comp}
    groups = []
    for pos, i in enumerate(order):
        h = home[i]
        if h is None:
            break
        if groups and groups[-1][4] == h:
            groups[-1][1] = pos + 1
        else:
            groups.append([pos, pos + 1, f"C{h[0]}·{h[1]}", colour[h], h])
    return [tuple(g[:4]) for g in groups]


def peak_sequence(summary: dict) -> list[int]:
    """Components in the order of their peak epoch row (then by id)."""
    values = np.asarray([[np.nan if v is None else v for v in row] for row in summary["epoch_means"]["values"]],
                        dtype=float).reshape(len(summary["atlas"]), summary["rank"])
    peaks = [int(np.nanargmax(values[:, r])) if np.isfinite(values[:, r]).any() else len(values)
             for r in range(summary["rank"])]
    return sorted(range(summary["rank"]), key=lambda r: (peaks[r], r))


# ----------------------------------------------------------------------------- network drawing
def backbone_edges(w: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The strongest edges of a weighted graph (n, n): every node's ``k`` strongest edges
    (union, each edge once). Returns ``(edges (E, 2) i < j, weights (E,))``, strongest first."""
    n = w.shape[0]
    if n < 2 or k < 1:
        return np.zeros((0, 2), dtype=int), np.zeros(0)
    kk = min(k, n - 1)
    masked = np.where(np.eye(n, dtype=bool), -np.inf, w)
    nearest = np.argpartition(-masked, kk - 1, axis=1)[:, :kk]
    rows = np.repeat(np.arange(n), kk)
    cols = nearest.ravel()
    keep = w[rows, cols] > 0
    pairs = np.unique(np.sort(np.stack([rows[keep], cols[keep]], axis=1), axis=1), axis=0)
    weights = w[pairs[:, 0], pairs[:, 1]] if pairs.size else np.zeros(0)
    order = np.argsort(-weights, kind="stable")
    return pairs[order], weights[order]


STRONG_EDGE = 2.0  # an edge is drawn when ≥ this × the mean pair loading of its component's graph


def network_drawing(sub: np.ndarray, named: np.ndarray, k: int) -> dict:
    """What the network panel draws for one component, from its community-ordered matrix
    ``sub`` (n, n) and the flags of cohesive-community members ``named`` (n,).

    Edges: each neuron's ``k`` strongest edges (:func:`backbone_edges`) that are also
    *strong*: at least ``STRONG_EDGE`` × the mean pair loading of the graph. Nodes: the
    neurons with a strong edge plus every cohesive-community member; the rest (diffuse
    neurons with only weak edges) are counted in ``hidden``. Returns ``{"nodes" (indices
    into sub), "edges" (E, 2) indices into ``nodes``, "weights" (E,), "hidden",
    "pairs" (E, 2) indices into sub}``."""
    n = sub.shape[0]
    edges, weights = backbone_edges(sub, k)
    mean = sub.sum() / (n * (n - 1)) if n > 1 else 0.0
    strong = weights >= STRONG_EDGE * mean
    edges, weights = edges[strong], weights[strong]
    drawn = np.zeros(n, dtype=bool)
    drawn[edges.ravel()] = True
    drawn |= np.asarray(named, dtype=bool)
    nodes = np.flatnonzero(drawn)
    index = np.full(n, -1)
    index[nodes] = np.arange(nodes.size)
    local = index[edges] if edges.size else np.zeros((0, 2), dtype=int)
    return {"nodes": nodes, "edges": local, "weights": weights, "pairs": edges, "hidden": int(n - nodes.size)}


# ----------------------------------------------------------------------------- summaries
def where_active(component: dict, atlas_rows: list[dict], decimals: int = 1) -> str:
    """Where a component is active, in words: its stimulus epochs, else the stretches
    without a stimulus it is active in (per animal in the concatenated layout)."""
    if component["epochs"]:
        return ", ".join(component["epochs"])
    rows = [atlas_rows[k] for k in component["atlas_rows"]]
    if not rows:
        return "no epoch"
    animals = [r["animal"] for r in rows if "animal" in r]
    if animals:
        return "the spontaneous recordings of " + ", ".join(dict.fromkeys(animals))
    return ", ".join(f"{r['epoch']} {palette.span(r['start_s'], r['stop_s'], decimals)}" for r in rows)


def union_intervals(intervals: list[list[float]]) -> list[list[float]]:
    """Sorted union of ``[start, stop]`` intervals (touching or overlapping ones merged)."""
    out: list[list[float]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1] + 1e-9:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


def _round_times(intervals: list, digits: int = 9) -> list:
    """Interval bounds rounded to ``digits`` decimals (a nanosecond: far below a frame), so that
    arithmetic round-off (``2.2e-16`` for 0) does not reach summary.json."""
    return [[round(float(a), digits) + 0.0, round(float(b), digits) + 0.0] for a, b in intervals]


def _row_label(row: dict) -> str:
    return f"{row['epoch']} — {row['animal']}" if "animal" in row else row["epoch"]


def summarize(data: RunData, stats: list[list[dict]], threshold: float) -> dict:
    """The content of ``summary.json`` (without provenance): DESIGN.md's keys plus the
    communities' cohesion, the epoch-mean table and the rule texts."""
    frame = 1.0 / data.sampling_rate
    rows = atlas.epoch_rows(data.epochs, data.time_s, data.bin_seconds, data.time_animal, data.animals, frame)
    means = atlas.epoch_table(data.time_s, data.f_time, rows, data.time_animal)
    atlas_rows = atlas.build_atlas(data.time_s, data.f_time, data.epochs, data.bin_seconds, threshold,
                                   data.time_animal, data.animals, frame)
    animal_values = animal_means(data.f_time, data.time_animal, len(data.animals)) if data.concatenated \
        else data.f_animal
    components = []
    for r in range(data.rank):
        loading = data.f_time[:, r]
        active = atlas.active_from_means(means[:, r], threshold)
        intervals = atlas.component_intervals(loading, data.time_s, threshold, data.bin_seconds, data.time_animal,
                                              frame)
        comm_by_id = {s["id"]: s for s in stats[r]}
        ids = sorted(comm_by_id)
        comp = {
            "id": r,
            "weight": float(data.weights[r]),
            "animals": [data.animals[a] for a in np.flatnonzero(atlas.active_bins(animal_values[:, r], threshold))],
            "active_intervals": _round_times(union_intervals([iv for _, iv in intervals])),
            "epochs": [row["label"] for row, on in zip(rows, active) if on and row["label"] != atlas.NO_STIMULUS],
            "atlas_rows": [k for k, on in enumerate(active) if on],
            "communities": [[data.neurons[i] for i in sorted(comm_by_id[k]["members"])] for k in ids],
            "community_cohesion": [None if np.isnan(comm_by_id[k]["cohesion"]) else
                                   round(float(comm_by_id[k]["cohesion"]), 4) for k in ids],
            "cohesive_communities": [s["id"] for s in stats[r] if s["cohesive"]],
            "community_colours": [comm_by_id[k]["colour"] for k in ids],
        }
        if data.concatenated:
            comp["active_intervals_by_animal"] = {
                name: _round_times([iv for b, iv in intervals if b == a]) for a, name in enumerate(data.animals)}
        if data.stability is not None and r < data.stability.size and np.isfinite(data.stability[r]):
            comp["stability"] = float(data.stability[r])
        components.append(comp)
    for entry in atlas_rows:
        entry["start_s"], entry["stop_s"] = _round_times([[entry["start_s"], entry["stop_s"]]])[0]
        entry["motifs"] = [
            {"component": r, "community": s["id"], "cohesion": round(float(s["cohesion"]), 4),
             "neurons": [data.neurons[i] for i in s["members"]]}
            for r in entry["components"] for s in stats[r] if s["cohesive"]]
    return {
        "rank": data.rank,
        "layout": data.layout,
        "active_threshold": threshold,
        "active_rule": ("active in a bin where the temporal loading is >= active_threshold x its maximum; "
                        "in an epoch row when its mean loading over the row is >= active_threshold x its "
                        "largest mean over any epoch row; in an animal when its animal loading (concatenated "
                        "layout: mean temporal loading over the animal's bins) is >= active_threshold x its "
                        "largest"),
        "cohesion_rule": ("cohesion = mean pair loading inside the community / mean pair loading over the "
                          "component's graph; a community of >= 2 neurons is cohesive when cohesion >= "
                          "cohesion_threshold"),
        "components": components,
        "atlas": atlas_rows,
        "epoch_means": {"rows": [_row_label(a) for a in atlas_rows],
                        "values": [[None if not np.isfinite(v) else round(float(v), 6) for v in row]
                                   for row in means]},
    }


# ----------------------------------------------------------------------------- evidence
def animal_loadings(data: RunData) -> np.ndarray:
    """(A, R) each component's loading per animal: the animal factor (aligned), or the root
    energy of its temporal loading over the animal's bins (concatenated, or per-animal courses)."""
    if data.f_courses is not None:
        return np.sqrt((data.f_courses ** 2).sum(axis=1))
    if not data.concatenated:
        return data.f_animal
    out = np.zeros((len(data.animals), data.rank))
    for a in range(len(data.animals)):
        sel = data.time_animal == a
        out[a] = np.sqrt((data.f_time[sel] ** 2).sum(axis=0))
    return out


def behaviour_series(data: RunData, c: int, r: int | None = None) -> tuple[list, list]:
    """Per animal: component r's temporal loading (None: skipped) and covariate c, in the
    animal's bins; with per-animal time courses, the animal's own course."""
    loads, covs = [], []
    for a in range(len(data.animals)):
        idx = np.flatnonzero(data.time_animal == a) if data.concatenated else np.arange(data.time_s.size)
        covs.append(data.covariates[c, idx, 0] if data.concatenated else data.covariates[c, :, a])
        if r is None:
            loads.append(None)
        else:
            loads.append(data.f_time[idx, r] if data.f_courses is None else data.f_courses[a, :, r])
    return loads, covs


def evidence(data: RunData, stats: list[list[dict]], p: dict, null_pool: dict | None,
             shares: np.ndarray | None, replication: list[dict] | None = None) -> list[dict]:
    """How far to trust each component: its communities' replication and p-values (set in
    ``stats`` too: ``replication``, ``p_value``, ``n_null``, ``flags``; ``replication``: per
    component ``{community id: value}``, :func:`dynconn.methods.null.component_replications`), its own p-value, energy share, red flags
    (:mod:`dynconn.methods.flags`) and covariate relations (:mod:`dynconn.methods.behaviour`). One dict of
    summary.json keys per component."""
    alpha = p["alpha"]
    swept = data.rank_selection.get("ranks") if data.rank_selection else None
    share_p = (null.component_p_values(shares, null_pool["share"]) if null_pool and shares is not None
               else np.full(data.rank, np.nan))
    per_animal = animal_loadings(data)
    cohesive_sets = [[sorted(int(i) for i in st["members"]) for st in comp if st["cohesive"]] for comp in stats]
    dups = flags.duplicates(cohesive_sets)
    fitted = ({"factors/time_by_animal": data.f_courses} if data.f_courses is not None
              else {"factors/time": data.f_time, "factors/animals": data.f_animal})
    transient_share = event_share(fitted)
    out = []
    for r, comp_stats in enumerate(stats):
        reps = replication[r] if replication is not None and r < len(replication) else {}
        observed = np.asarray([reps.get(st["id"], np.nan) for st in comp_stats], dtype=float)
        if null_pool and null_pool["n"]:
            pv, n_null = null.community_p_values(observed, null_pool["replication"])
        else:
            pv, n_null = np.full(observed.size, np.nan), np.zeros(observed.size, dtype=int)
        for st, rk, pk, nk in zip(comp_stats, observed, pv, n_null):
            st["replication"], st["p_value"], st["n_null"] = float(rk), float(pk), int(nk)
            st["flags"] = flags.community_flags(st["members"], data.present, st["p_value"], alpha) \
                if st["cohesive"] else []
        cohesive_p = [st["p_value"] for st in comp_stats if st["cohesive"]]
        comp_p = null.component_p_value(cohesive_p) if cohesive_p else (
            1.0 if null_pool and null_pool["n"] else float("nan"))
        stability = float(data.stability[r]) if data.stability is not None and r < data.stability.size else np.nan
        modularity = float(data.modularity[r]) if data.modularity is not None and r < data.modularity.size else np.nan
        names = flags.component_flags(
            rank=data.rank, swept_ranks=swept, p_value=comp_p, alpha=alpha, stability=stability,
            modularity=modularity, animal_loading=per_animal[:, r],
            community_flags=[st["flags"] for st in comp_stats if st["cohesive"]], duplicate_of=dups[r],
            event_share=float(transient_share[r]), max_event_share=data.max_event_share)
        notes = {name: flags.EXPLAIN[name] for name in names}
        if "duplicate" in notes:
            notes["duplicate"] += ": " + ", ".join(f"C{s}" for s in dups[r])
        if "one_animal" in notes:
            notes["one_animal"] += f" ({data.animals[int(np.argmax(per_animal[:, r] ** 2))]})"
        if "missing_neurons" in notes:
            where = [f"C{r}·{st['id']} ~ missing in {data.animals[flags.missing_overlap(st['members'], data.present)[1]]}"
                     for st in comp_stats if "missing_neurons" in st["flags"]]
            notes["missing_neurons"] += ": " + "; ".join(where)
        if "unstable" in notes:
            notes["unstable"] += f" (stability {stability:.2f} < {flags.MIN_STABILITY:g})"
        if "transient" in notes:
            notes["transient"] += f" ({transient_share[r]:.0%} > {data.max_event_share:g})"
        if "negative_modularity" in notes:
            notes["negative_modularity"] += f" ({modularity:.3f})"
        entry = {"p_value": _rounded(comp_p), "share": _rounded(shares[r]) if shares is not None else None,
                 "share_p": _rounded(share_p[r]), "flags": names, "flag_notes": notes}
        if data.covariates is not None and data.covariate_names:
            entry["covariates"] = {}
            for c, cname in enumerate(data.covariate_names):
                loads, covs = behaviour_series(data, c, r)
                rel = behaviour.relate(loads, covs, max_lag=p["covariate_lag_bins"], n_shifts=p["covariate_shifts"],
                                       rng=np.random.default_rng(np.random.SeedSequence([p["seed"], 7, r, c])),
                                       bin_seconds=data.bin_seconds, animals=data.animals)
                if rel is not None:
                    entry["covariates"][cname] = rel
        out.append(entry)
    return out


def reference_enrichment(data: RunData, stats: list[list[dict]], graphs: list, p: dict) -> list[dict]:
    """Links of each reference graph inside each cohesive community
    (:func:`dynconn.methods.reference.community_enrichment`, random groups drawn from the
    run's neurons; set in ``stats`` as ``st["references"]``: ``{graph label: result}``)
    and pooled over every component's cohesive communities
    (:func:`~dynconn.methods.reference.within_between`). A link is a pair with any contact or
    causal link (binary: contact counts are heavy-tailed, a few pairs would decide the ratio).
    Returns summary.json ``references``: one entry per graph."""
    out = []
    for g, graph in enumerate(graphs):
        weight, tested = refs.reference_matrices(graph, data.neurons)
        linked = weight > 0
        matched = int(tested.any(axis=1).sum())
        entry = {"name": graph.name, "label": graph.short, "description": graph.description,
                 "neurons_matched": matched, "links": int(np.triu(linked & tested, 1).sum())}
        labels = np.full((data.rank, len(data.neurons)), -1)
        for r, comp in enumerate(stats):
            # random groups from every neuron of the run: a component's graph can be little more
            # than its cohesive communities (unassigned background is left out), so drawing from
            # the graph alone would compare a community with itself
            pool = np.arange(len(data.neurons))
            for st in comp:
                if not st["cohesive"]:
                    continue
                labels[r, st["members"]] = st["id"]
                res = refs.community_enrichment(
                    st["members"], pool, linked, tested, p["reference_permutations"],
                    seed=np.random.SeedSequence([p["seed"], 11, g, r, int(st["id"])]))
                st.setdefault("references", {})[graph.short] = None if res is None else {
                    k: (_rounded(v) if isinstance(v, float) else v) for k, v in res.items()}
        if matched >= 2 and (labels >= 0).any():
            pooled = refs.within_between(labels, linked.astype(float), tested,
                                         n_permutations=p["reference_permutations"], seed=p["seed"]).as_dict()
            entry["pooled"] = {k: (_rounded(v) if isinstance(v, float) else v) for k, v in pooled.items()}
        out.append(entry)
    return out


def _rounded(x, digits: int = 4):
    """``digits`` significant digits (p-values span many decades); None for NaN."""
    return None if x is None or not np.isfinite(x) else float(f"{float(x):.{digits}g}")


def communities_detail(stats: list[dict], neurons: list[str]) -> list[dict]:
    """summary.json ``communities_detail`` of one component, in the order of ``communities``."""
    out = []
    for st in sorted(stats, key=lambda s: s["id"]):
        out.append({"id": st["id"], "neurons": [neurons[i] for i in sorted(st["members"])], "size": st["size"],
                    "cohesion": _rounded(st["cohesion"]), "replication": _rounded(st.get("replication", np.nan)),
                    "p_value": _rounded(st.get("p_value", np.nan)),
                    "n_null": st.get("n_null", 0), "cohesive": bool(st["cohesive"]), "flags": st.get("flags", [])})
        if "references" in st:
            out[-1]["references"] = st["references"]
    return out


def state_atlas(data: RunData, stats: list[list[dict]], states_cfg: dict | None, threshold: float) -> list[dict]:
    """Atlas rows by behavioural state (``report.states``; :func:`dynconn.methods.behaviour.state_rows`):
    aligned layout, every (bin, animal) counts with the component's loading in that animal
    (temporal × animal loading); concatenated, every bin. Each row's ``motifs``: the cohesive
    communities of its active components."""
    if not states_cfg:
        return []
    from ..errors import ConfigError

    if states_cfg["covariate"] not in data.covariate_names:
        raise ConfigError(f"report.states.covariate: {states_cfg['covariate']!r} is not among the run's "
                          f"covariates ({', '.join(data.covariate_names) or 'none'}); name one of them")
    c = data.covariate_names.index(states_cfg["covariate"])
    if data.concatenated:
        values, loading = data.covariates[c, :, 0], data.f_time
    else:  # (T, A) -> rows (t, a)
        values = data.covariates[c].reshape(-1)
        loading = (data.f_time[:, None, :] * data.f_animal[None, :, :]).reshape(-1, data.rank)
    rows = behaviour.state_rows(behaviour.state_bins(values, states_cfg["thresholds"]), loading,
                                states_cfg["labels"], threshold, data.bin_seconds)
    for row in rows:
        row["motifs"] = [{"component": r, "community": st["id"], "neurons": [data.neurons[i] for i in st["members"]]}
                         for r in row["components"] for st in stats[r] if st["cohesive"]]
    return rows


def neuron_view(summary: dict, stats: list[list[dict]], neurons: list[str], order: np.ndarray) -> dict:
    """Which community each neuron joins in each epoch row, through the components active
    there. Returns ``{"slots": [(atlas row, component)], "groups": [(row label, first, stop)],
    "cells": (N, S) community id or −1 (absent) in ``order``, "colours": (N, S) hex,
    "neurons": ordered names, "by_neuron": {name: [[row label, component, community], ...]}}``
    (cohesive communities only in ``by_neuron``)."""
    slots, groups = [], []
    for k, entry in enumerate(summary["atlas"]):
        first = len(slots)
        slots += [(k, r) for r in entry["components"]]
        if len(slots) > first:
            groups.append((_row_label(entry), first, len(slots)))
    member_of = []  # per component: neuron -> stats entry
    for comp_stats in stats:
        lookup = {}
        for s in comp_stats:
            for i in s["members"]:
                lookup[int(i)] = s
        member_of.append(lookup)
    n, n_slots = len(order), len(slots)
    cells = np.full((n, n_slots), -1, dtype=np.int32)
    colours = np.full((n, n_slots), palette.ABSENT, dtype=object)
    by_neuron: dict[str, list] = {}
    for row_pos, i in enumerate(order):
        for j, (k, r) in enumerate(slots):
            s = member_of[r].get(int(i))
            if s is None:
                continue
            cells[row_pos, j] = s["id"]
            colours[row_pos, j] = s["colour"]
            if s["cohesive"]:
                by_neuron.setdefault(neurons[i], []).append([_row_label(summary["atlas"][k]), r, s["id"]])
    return {"slots": slots, "groups": groups, "cells": cells, "colours": colours,
            "neurons": [neurons[i] for i in order], "by_neuron": by_neuron}


def dataset_facts(data: RunData) -> dict:
    """Dataset facts for the run summary (label -> text)."""
    durations = data.n_frames / data.sampling_rate
    same = np.allclose(durations, durations[0]) if durations.size else True
    d = data.decimals
    sec = lambda x: palette.seconds(x, d) + " s"  # noqa: E731
    return {
        "animals": f"{len(data.animals)} ({', '.join(data.animals)})",
        "neurons (union over animals)": str(len(data.neurons)),
        "neurons per animal": ", ".join(f"{a}: {int(k)}" for a, k in zip(data.animals, data.present.sum(axis=0))),
        "neurons recorded in every animal": str(int(data.present.all(axis=1).sum())),
        "duration": (sec(durations[0]) if same else
                     ", ".join(f"{a}: {sec(x)}" for a, x in zip(data.animals, durations))),
        "sampling rate": f"{data.sampling_rate:g} Hz",
        "layout": data.layout + (" (each animal on its own clock, bins one after another)" if data.concatenated
                                 else " (animals share one protocol clock)"),
        "stimulus epochs": ", ".join(f"{e['label']} {palette.span(e['start_s'], e['stop_s'], d)}"
                                     for e in data.epochs) or "none",
        "time bins": f"{data.time_s.size} × {palette.seconds(data.bin_seconds, d + 1)} s",
        "behaviour covariates": ", ".join(data.covariate_names) or "none",
        "rank": f"{data.rank}" + (f" (chosen automatically: {data.rank_rule})" if data.rank_selection else " (fixed)"),
    }


def versions() -> dict:
    out = {"dynconn": __version__, "Python": platform.python_version()}
    for dist in ("numpy", "scipy", "h5py", "matplotlib", "python-igraph", "leidenalg"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


# ----------------------------------------------------------------------------- exports
def _csv(header: list[str], rows) -> bytes:
    lines = [",".join(header)]
    lines += [",".join(str(v) for v in row) for row in rows]
    return ("\n".join(lines) + "\n").encode()


def animal_means(f_time: np.ndarray, time_animal: np.ndarray, n_animals: int) -> np.ndarray:
    """(A, R) mean temporal loading of each animal's bins (concatenated layout)."""
    out = np.zeros((n_animals, f_time.shape[1]))
    for a in range(n_animals):
        sel = time_animal == a
        if sel.any():
            out[a] = f_time[sel].mean(axis=0)
    return out


def export_tables(
    *, membership: np.ndarray, neurons: list[str], time_s: np.ndarray, factors_time: np.ndarray,
    animals: list[str], factors_animal: np.ndarray, time_animal: np.ndarray | None = None,
    covariates: tuple[list[str], np.ndarray] | None = None,
    community_columns: dict | None = None, courses: np.ndarray | None = None,
) -> dict[str, bytes]:
    """The CSV exports as bytes, keyed by their path under the workdir. With ``time_animal``
    (concatenated layout) factors_time has an ``animal`` column and factors_animal holds each
    animal's mean temporal loading. ``covariates`` = (names (C), values (C, T, A), or
    (C, T, 1) with ``time_animal``) adds covariates_time.csv: ``time_s,animal,<names>``, one
    row per bin and animal, binned like the affinity. ``courses`` (A, T, R), the per-animal time
    courses of ``factorize.time_courses: per_animal``, adds factors_time_by_animal.csv:
    ``time_s,animal,component_0 …``, one row per bin and animal."""
    rank = factors_time.shape[1]
    comp_cols = [f"component_{r}" for r in range(rank)]
    columns = community_columns or {}

    def number(x, fmt):
        return "" if x is None or not np.isfinite(x) else format(float(x), fmt)

    def community_cells(r, k):  # cohesion, p_value, cohesive of the neuron's community ("" = not computed)
        if (r, k) not in columns:
            return ["", "", ""]
        coh, pv, cohesive = columns[(r, k)]
        return [number(coh, ".6g"), number(pv, ".6g"), str(bool(cohesive)).lower()]

    communities_rows = [(r, neurons[i], int(membership[r, i]), *community_cells(r, int(membership[r, i])))
                        for r in range(membership.shape[0]) for i in np.flatnonzero(membership[r] >= 0)]
    if time_animal is None:
        time_rows = ([f"{t:g}", *(f"{v:.6g}" for v in row)] for t, row in zip(time_s, factors_time))
        time_header = ["time_s", *comp_cols]
        per_animal = factors_animal
    else:
        time_rows = ([f"{t:g}", animals[a], *(f"{v:.6g}" for v in row)]
                     for t, a, row in zip(time_s, time_animal, factors_time))
        time_header = ["time_s", "animal", *comp_cols]
        per_animal = animal_means(factors_time, time_animal, len(animals))
    files = {
        "exports/communities.csv": _csv(["component", "neuron", "community", "cohesion", "p_value", "cohesive"],
                                        communities_rows),
        "exports/factors_time.csv": _csv(time_header, time_rows),
        "exports/factors_animal.csv": _csv(
            ["animal", *comp_cols], ([a, *(f"{v:.6g}" for v in row)] for a, row in zip(animals, per_animal))),
    }
    if courses is not None:
        files["exports/factors_time_by_animal.csv"] = _csv(
            ["time_s", "animal", *comp_cols], ([f"{t:g}", animals[a], *(f"{v:.6g}" for v in courses[a, k])]
                                               for a in range(len(animals)) for k, t in enumerate(time_s)))
    if covariates is not None and len(covariates[0]):
        names, values = covariates
        if time_animal is None:
            cov_rows = ([f"{t:g}", animals[a], *(f"{v:.6g}" for v in values[:, k, a])]
                        for a in range(len(animals)) for k, t in enumerate(time_s))
        else:
            cov_rows = ([f"{t:g}", animals[a], *(f"{v:.6g}" for v in values[:, k, 0])]
                        for k, (t, a) in enumerate(zip(time_s, time_animal)))
        files["exports/covariates_time.csv"] = _csv(["time_s", "animal", *names], cov_rows)
    return files


GRAPHML_MAX_EDGES = 200_000  # beyond this many positive pairs a GraphML file keeps each node's strongest


def graphml(component: int, w: np.ndarray, membership_row: np.ndarray, stats: list[dict],
            neurons: list[str], backbone: set[tuple[int, int]], max_edges: int | None = GRAPHML_MAX_EDGES) -> bytes:
    """One component's graph as GraphML (Cytoscape, Gephi): the neurons of its graph with
    ``label``, ``community``, ``cohesive``, ``cohesion``, ``strength``, ``colour``; every
    positive pair among them with ``weight`` and ``backbone`` (true: drawn in the report;
    false by default). A graph of more than ``max_edges`` positive pairs (thousands of
    neurons: a dense graph is GBs of XML no tool opens) keeps each neuron's ``k`` strongest
    edges, ``k = ceil(max_edges / neurons)`` (:func:`backbone_edges`; the union, so at most
    ``max_edges``), plus the backbone; the graph's ``edges`` attribute says which."""
    inside = np.flatnonzero(membership_row >= 0)
    by_id = {s["id"]: s for s in stats}
    strength = w.sum(axis=1)
    sub = w[np.ix_(inside, inside)]
    ii, jj = np.nonzero(np.triu(sub, k=1) > 0)
    kept = f"all {ii.size} positive pairs"
    if max_edges is not None and ii.size > max_edges:
        k = int(np.ceil(max_edges / max(inside.size, 1)))
        strongest, _ = backbone_edges(sub, k)
        position = np.full(w.shape[0], -1)
        position[inside] = np.arange(inside.size)
        drawn_pairs = np.array([sorted((position[a], position[b])) for a, b in backbone
                                if position[a] >= 0 and position[b] >= 0], dtype=int).reshape(-1, 2)
        both = np.unique(np.concatenate([strongest.reshape(-1, 2), drawn_pairs]), axis=0)
        kept = f"each neuron's {k} strongest edges and the drawn backbone ({len(both)} of {ii.size} positive pairs)"
        ii, jj = both[:, 0], both[:, 1]
    keys = [("label", "node", "string"), ("community", "node", "int"), ("cohesive", "node", "boolean"),
            ("cohesion", "node", "double"), ("strength", "node", "double"), ("colour", "node", "string"),
            ("weight", "edge", "double"), ("backbone", "edge", "boolean"), ("edges", "graph", "string")]
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           '<graphml xmlns="http://graphml.graphdrawing.org/xmlns" '
           'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
           'xsi:schemaLocation="http://graphml.graphdrawing.org/xmlns '
           'http://graphml.graphdrawing.org/xmlns/1.0/graphml.xsd">']
    out += [f'  <key id="{name}" for="{kind}" attr.name="{name}" attr.type="{typ}"/>' for name, kind, typ in keys
            if name != "backbone"]
    out.append('  <key id="backbone" for="edge" attr.name="backbone" attr.type="boolean"><default>false</default></key>')
    out.append(f'  <graph id="component_{component}" edgedefault="undirected">')
    out.append(f'    <data key="edges">{xml_escape(kept)}</data>')
    for i in inside:
        s = by_id[int(membership_row[i])]
        coh = s["cohesion"] if np.isfinite(s["cohesion"]) else 0.0
        out.append(f'    <node id={quoteattr(neurons[i])}><data key="label">{xml_escape(neurons[i])}</data>'
                   f'<data key="community">{s["id"]}</data><data key="cohesive">{str(s["cohesive"]).lower()}</data>'
                   f'<data key="cohesion">{coh:.6g}</data><data key="strength">{strength[i]:.6g}</data>'
                   f'<data key="colour">{s["colour"]}</data></node>')
    names = [quoteattr(neurons[i]) for i in inside]
    drawn = '<data key="backbone">true</data>'
    for a, b, value in zip(ii.tolist(), jj.tolist(), sub[ii, jj].tolist()):
        bb = drawn if (int(inside[a]), int(inside[b])) in backbone else ""
        out.append(f'<edge source={names[a]} target={names[b]}><data key="weight">{value:.5g}</data>{bb}</edge>')
    out += ["  </graph>", "</graphml>", ""]
    return "\n".join(out).encode()


# ----------------------------------------------------------------------------- figures
def _duration(data: RunData, a: int | None) -> float:
    if a is None:
        return float(max(data.n_frames.max() / data.sampling_rate, data.time_s[-1] + data.bin_seconds / 2)) \
            if data.time_s.size else 1.0
    return float(data.n_frames[a] / data.sampling_rate)


def component_tracks(data: RunData, r: int) -> list[dict]:
    """The temporal-loading tracks of component r: one (aligned) or one per animal
    (concatenated), each with its behaviour covariates."""
    cov = data.covariates
    shown = [c for c in range(len(data.covariate_names)) if cov is not None and np.isfinite(cov[c]).any()]
    names = {c: data.covariate_names[c] for c in shown}
    restarts = data.restart_time
    band = None if restarts is None else (restarts[:, :, r].min(axis=0), restarts[:, :, r].max(axis=0))
    if not data.concatenated:
        return [{"label": "", "time": data.time_s, "loading": data.f_time[:, r], "duration": _duration(data, None),
                 "cov_time": data.time_s, "spread": band,
                 "covariates": [(names[c], cov[c]) for c in shown]}]
    tracks = []
    for a, idx in atlas.animal_segments(data.time_animal, data.time_s.size):
        tracks.append({"label": data.animals[a], "time": data.time_s[idx], "loading": data.f_time[idx, r],
                       "duration": _duration(data, a), "cov_time": data.time_s[idx],
                       "spread": None if band is None else (band[0][idx], band[1][idx]),
                       "covariates": [(names[c], cov[c][idx, :1]) for c in shown]})
    return tracks


EVIDENCE_COLUMNS = 600  # display bins of a community's mean trace (about its panel's width in pixels)


def community_evidence(data: RunData, comp: dict, stats: list[dict], r: int) -> dict | None:
    """What the evidence figure of component r draws (:func:`dynconn.report.figures.community_traces`):
    for each cohesive community, the mean normalised trace of its members recorded in each
    animal (display-binned, on the animal's own clock), with the component's active stretches
    (summary.json ``active_intervals``; per animal when concatenated). None without a
    cohesive community."""
    cohesive = [st for st in stats if st["cohesive"]]
    if not cohesive:
        return None
    panels, values = [], []
    for st in cohesive:
        traces = []
        for a in range(len(data.animals)):
            rows = data.traces[a][st["members"], : int(data.n_frames[a])]
            recorded = np.isfinite(rows).any(axis=1)
            if not recorded.any():
                traces.append(None)
                continue
            with np.errstate(invalid="ignore"):
                mean = np.nanmean(rows[recorded], axis=0)[None, :]
            binned, factor = palette.downsample_columns(mean, EVIDENCE_COLUMNS)
            t = (np.arange(binned.shape[1]) * factor + (factor - 1) / 2) / data.sampling_rate
            traces.append((t, binned[0]))
            values.append(binned[0][np.isfinite(binned[0])])
        panels.append({"label": f"C{r}·{st['id']} ({st['size']} neurons)", "colour": st["colour"], "traces": traces})
    allv = np.concatenate(values) if values else np.zeros(0)
    lo, hi = (np.percentile(allv, [0.5, 99.5]) if allv.size else (0.0, 1.0))
    pad = 0.05 * max(hi - lo, 1e-9)
    if data.concatenated:
        active = [comp["active_intervals_by_animal"].get(name, []) for name in data.animals]
    else:
        active = [comp["active_intervals"]] * len(data.animals)
    return {"panels": panels, "active": active, "y_range": (float(lo - pad), float(hi + pad)),
            "durations": [_duration(data, a) for a in range(len(data.animals))]}


OVERVIEW_ROWS = 800  # about a data-overview heatmap's height in pixels at 300 dpi
MATRIX_ROWS = 600  # beyond this many neurons a component's matrix is drawn community by community


def matrix_blocks(sub: np.ndarray, groups: list[tuple[int, int, str]], labels: list[str],
                  colours: list[str]) -> dict:
    """The community-level view of a community-ordered matrix: the mean pair loading between
    (and, off the diagonal, within) each block of ``groups`` (:func:`matrix_groups`: each
    cohesive community, then the diffuse rest). Returns ``{"values" (C, C), "edges" (C+1,),
    "colours", "labels"}``."""
    edges = np.asarray([g[0] for g in groups] + [groups[-1][1]] if groups else [0], dtype=int)
    starts = edges[:-1]
    sums = np.add.reduceat(np.add.reduceat(sub, starts, axis=0), starts, axis=1) if starts.size else np.zeros((0, 0))
    sizes = np.diff(edges).astype(float)
    pairs = np.outer(sizes, sizes) - np.diag(sizes)  # the diagonal of sub is no pair
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.where(pairs > 0, sums / np.maximum(pairs, 1), np.nan)
    return {"values": values, "edges": edges, "colours": list(colours), "labels": list(labels)}


def figure_jobs(data: RunData, summary: dict, stats: list[list[dict]], matrices: list[np.ndarray],
                order: np.ndarray, view: dict, params: dict,
                groups: list[tuple[int, int, str, str]] | None = None) -> list[tuple[str, str, dict, str]]:
    """Every figure of the report as ``(file stem, figures function name, kwargs, caption)``,
    in page order. Pure: building the figures is left to :func:`render_figures`."""
    jobs = []
    # data overview
    max_cols = 900  # about the heatmap's width in pixels
    traces, durations = [], []
    for a in range(len(data.animals)):
        tr, _ = palette.downsample_columns(data.traces[a][order][:, : int(data.n_frames[a])], max_cols)
        if tr.shape[0] > OVERVIEW_ROWS:  # more neurons than pixel rows: consecutive rows averaged
            tr = palette.downsample_columns(tr.T, OVERVIEW_ROWS)[0].T
        traces.append(tr)
        durations.append(_duration(data, a))
    finite = data.traces[np.isfinite(data.traces)]
    lo, hi = (np.percentile(finite[:: max(1, finite.size // 200_000)], [1, 99]) if finite.size else (0.0, 1.0))
    jobs.append(("data_traces", "traces_overview",
                 {"traces": traces, "durations": durations, "neuron_labels": [data.neurons[i] for i in order],
                  "animals": data.animals, "epochs": data.epochs, "colour_range": (float(lo), float(hi)),
                  "groups": groups or []},
                 "Normalised traces of every animal. Rows: neurons in one order for all animals (grouped by "
                 "the cohesive community they belong to most strongly); blank rows: not recorded in that "
                 "animal; white lines: starts of stimulus epochs."))
    if not data.present.all():
        jobs.append(("data_missing", "missing_neurons",
                     {"present": data.present[order], "neurons": [data.neurons[i] for i in order],
                      "animals": data.animals},
                     "Neurons not recorded in every animal (dark: missing in that animal). Pairs involving a "
                     "missing neuron are masked in the factorization, not treated as zero."))
    sel = data.rank_selection
    if sel and "ranks" in sel and "errors" in sel:
        jobs.append(("rank_selection", "rank_selection",
                     {"ranks": np.asarray(sel["ranks"]).astype(int), "errors": np.asarray(sel["errors"], dtype=float),
                      "similarity": other_restarts(sel.get("similarity"), sel.get("best_index")),
                      # the stability measure the rule used
                      "mean_similarity": sel.get("agreement") if data.rank_rule == "reached-elbow"
                      else sel.get("mean_similarity"),
                      "gain": sel.get("gain"), "eligible": sel.get("eligible"), "chosen": data.rank,
                      "rule": data.rank_rule or "not recorded", "null_gain": sel.get("null_gain"),
                      "null_ratio": data.rank_rule_params.get("null_ratio")},
                     "Rank selection: fit error, similarity of the restarts to the best one, and variance "
                     "explained per added component, for every rank tried; dashed: the chosen rank."))
    rel = np.asarray([[np.nan if v is None else v for v in row] for row in summary["epoch_means"]["values"]],
                     dtype=float).reshape(len(summary["atlas"]), data.rank)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = rel / np.where(np.isfinite(rel), rel, 0).max(axis=0, initial=0.0)
    active = np.zeros(rel.shape, dtype=bool)
    for k, entry in enumerate(summary["atlas"]):
        active[k, entry["components"]] = True
    jobs.append(("atlas", "atlas_heatmap",
                 {"row_labels": [_atlas_row_text(e, data.decimals) for e in summary["atlas"]], "relative": rel,
                  "active": active,
                  "component_labels": [f"C{r}" for r in range(data.rank)]},
                 "The atlas at a glance: each component's mean temporal loading over each epoch row, relative "
                 "to its largest; dots mark where it counts as active."))
    # components
    threshold = params["active_threshold"]
    for r in range(data.rank):
        w = matrices[r]
        m_order, _ = matrix_order(stats[r])
        colour_of = {int(i): s["colour"] for s in stats[r] for i in s["members"]}
        cohesive_members = {int(i) for s in stats[r] if s["cohesive"] for i in s["members"]}
        named = [int(i) in cohesive_members for i in m_order]
        sub = w[np.ix_(m_order, m_order)]
        net = network_drawing(sub, np.asarray(named), params["network_neighbors"])
        strength = sub.sum(axis=1)
        sizes = 10 + 60 * (strength / strength.max() if strength.size and strength.max() > 0 else strength)
        nodes = net["nodes"]
        groups = matrix_groups(stats[r])
        if data.concatenated:
            bars = {"labels": data.animals, "values": animal_means(data.f_time[:, [r]], data.time_animal,
                                                                   len(data.animals))[:, 0],
                    "ylabel": "mean temporal loading"}
        else:
            bars = {"labels": data.animals, "values": data.f_animal[:, r], "ylabel": "animal loading"}
        top = float(data.f_time[:, r].max()) if data.f_time.size else 0.0
        group_labels = [f"C{r}·{st['id']}" for st in stats[r] if st["cohesive"]] + [""] * len(groups)
        matrix = {"labels": [data.neurons[i] for i in m_order], "colours": [colour_of[int(i)] for i in m_order],
                  "named": named, "groups": groups, "group_labels": group_labels[:len(groups)]}
        if len(m_order) > MATRIX_ROWS:  # community by community: per-neuron rows would be sub-pixel
            block_colours = [st["colour"] for st in stats[r] if st["cohesive"]] + [palette.DIFFUSE]
            matrix["blocks"] = matrix_blocks(sub, groups, matrix["group_labels"], block_colours[:len(groups)])
            matrix["named"] = np.zeros(len(m_order), dtype=bool)
        else:
            matrix["w"] = sub
        n_restarts = 0 if data.restart_time is None else data.restart_time.shape[0]
        merged_note = next((f" · merged from fitted components {'+'.join(map(str, g))}"
                            for rep_r, g in data.merged if rep_r == r), "")
        jobs.append((f"component_{r:02d}", "component_figure",
                     {"title": f"Component {r}",
                      "subtitle": "active in " + where_active(summary["components"][r], summary["atlas"], data.decimals)
                      + f" · weight {data.weights[r]:.3g}" + merged_note, "tracks": component_tracks(data, r),
                      "epochs": data.epochs,
                      "threshold_level": threshold * top, "bin_seconds": data.bin_seconds, "bars": bars,
                      "spread_label": f"min–max over {n_restarts} restarts" if n_restarts else "",
                      "matrix": matrix,
                      "network": {"n": int(nodes.size), "edges": net["edges"], "weights": net["weights"],
                                  "colours": [colour_of[int(m_order[i])] for i in nodes], "sizes": sizes[nodes],
                                  "labels": [data.neurons[m_order[i]] for i in nodes],
                                  "named": [named[i] for i in nodes], "hidden": net["hidden"]}},
                     f"Component {r}. Top: temporal loading (when), stimulus epochs shaded, dashed line the "
                     f"activity threshold ({threshold:g} × its maximum), filled where active"
                     + (f"; blue band: the loading's range (min–max) over the {n_restarts} restarts of the "
                        "factorization, each matched to this component" if n_restarts else "")
                     + ("; behaviour covariates beneath" if data.covariate_names else "")
                     + (". One row per animal, each on its own clock" if data.concatenated else "")
                     + ". Bottom: loading per animal (in whom); the neuron × neuron pair loadings (which "
                     "neurons interact) ordered by community, with coloured community bars and white "
                     "boundaries; the network of each neuron's "
                     f"{params['network_neighbors']} strongest edges that are at least {STRONG_EDGE:g} × the "
                     "component's mean pair loading, nodes coloured by community and sized by strength."
                     + (f" The matrix shows community means: the graph's {len(m_order)} neurons are more than "
                        "the panel has pixel rows." if "blocks" in matrix else "")))
        ev = community_evidence(data, summary["components"][r], stats[r], r)
        if ev is not None:
            jobs.append((f"evidence_{r:02d}", "community_traces",
                         {"title": f"Component {r}: its communities in the traces", "animals": data.animals,
                          "epochs": data.epochs, **ev},
                         f"Evidence for component {r}'s cohesive communities: for each (columns), the mean "
                         "normalised trace of its members in each animal (rows; only the members recorded "
                         "in that animal), on one scale; shaded: the stretches where the component is "
                         f"active (temporal loading ≥ {threshold:g} × its maximum). Co-activation of the "
                         "members shows as large swings of their mean, in the shaded stretches."))
    if view["slots"]:
        rgb = np.asarray([[_rgb(c) for c in row] for row in view["colours"]]).reshape(
            len(view["neurons"]), len(view["slots"]), 3)
        keep = np.asarray([name in view["by_neuron"] for name in view["neurons"]], dtype=bool)
        jobs.append(("neuron_view", "neuron_view",
                     {"colours": rgb[keep], "neuron_labels": [n for n, k in zip(view["neurons"], keep) if k],
                      "slot_labels": [f"C{r}" for _, r in view["slots"]], "groups": view["groups"],
                      "hidden": int((~keep).sum())},
                     "Neuron view: for each neuron (rows, same order as the data overview) that joins a cohesive "
                     "community somewhere, the community it joins in each component active in each epoch row "
                     "(columns: components, grouped by epoch row in time order). Colours are the communities' "
                     "colours in that component; grey: a diffuse community; white: not in that component's "
                     "graph."))
    return jobs


def other_restarts(similarity: np.ndarray | None, best_index: np.ndarray | None) -> np.ndarray | None:
    """The similarity of every restart but the best (which is 1 by definition): NaN there."""
    if similarity is None or best_index is None or np.ndim(similarity) != 2:
        return similarity
    out = np.asarray(similarity, dtype=float).copy()
    best = np.asarray(best_index).astype(int).ravel()
    if best.size == out.shape[0]:
        out[np.arange(out.shape[0]), np.clip(best, 0, out.shape[1] - 1)] = np.nan
    return out


_RGB_CACHE: dict[str, tuple[float, float, float]] = {}


def _rgb(hex_colour: str) -> tuple[float, float, float]:
    if hex_colour not in _RGB_CACHE:
        h = hex_colour.lstrip("#")
        _RGB_CACHE[hex_colour] = tuple(int(h[k : k + 2], 16) / 255 for k in (0, 2, 4))
    return _RGB_CACHE[hex_colour]


def _atlas_row_text(entry: dict, decimals: int = 1) -> str:
    span = palette.span(entry["start_s"], entry["stop_s"], decimals)
    return f"{entry['epoch']} ({entry['animal']}, {span})" if "animal" in entry else f"{entry['epoch']} ({span})"


def _render_job(job, dpi: float, key: str) -> tuple[bytes, bytes]:
    from ..report import figures  # matplotlib is loaded only when a figure is drawn

    stem, func, kwargs, _ = job
    fig = getattr(figures, func)(**kwargs)
    return figures.render(fig, dpi, key)


def _plain_signals() -> None:
    """In a figure worker: default signal handling. Workers are forked from a process whose
    SIGTERM handler raises (dynconn.runner.interrupt); the pool ends its workers with SIGTERM, which
    must end them quietly. Ctrl-C is the parent's to handle."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def render_figures(jobs: list, dpi: float, workers: int,
                   previous: dict[str, tuple[bytes, bytes]] | None = None) -> tuple[dict, int]:
    """Draw every figure (PNG and SVG), in ``workers`` processes when > 1 (fork, POSIX).

    A figure in ``previous`` (``{stem: (png, svg)}``, the files of the last report) whose
    recorded key matches its inputs now (:func:`palette.figure_key`) is reused instead of
    drawn again. Returns ``({stem: (png, svg)}, number drawn)``."""
    previous = previous or {}
    out, todo = {}, []
    for job in jobs:
        key = palette.figure_key(job[1], job[2], dpi)
        old = previous.get(job[0])
        if old and palette.stored_key(old[0]) == key and palette.stored_key(old[1]) == key:
            out[job[0]] = old
        else:
            todo.append((job, key))
    if workers > 1 and len(todo) > 2 and hasattr(os, "fork"):
        import multiprocessing as mp

        from ..report import figures  # noqa: F401 -- loaded once here, inherited by the forked workers

        with mp.get_context("fork").Pool(min(workers, len(todo)), initializer=_plain_signals) as pool:
            results = pool.starmap(_render_job, [(job, dpi, key) for job, key in todo], chunksize=1)
    else:
        results = [_render_job(job, dpi, key) for job, key in todo]
    out.update({job[0]: res for (job, _), res in zip(todo, results)})
    return out, len(todo)


def previous_figures(workdir: Path) -> dict[str, tuple[bytes, bytes]]:
    """The PNG and SVG files of the last report (``figures/``), by stem."""
    folder = workdir / "figures"
    out = {}
    if folder.is_dir():
        for png in folder.glob("*.png"):
            svg = png.with_suffix(".svg")
            if svg.is_file():
                try:
                    out[png.stem] = (png.read_bytes(), svg.read_bytes())
                except OSError:
                    continue
    return out


def default_workers() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:
        n = os.cpu_count() or 1
    return max(1, min(4, n))


# ----------------------------------------------------------------------------- HTML
CSS = """
:root{--ink:#1d2329;--muted:#5b6670;--line:#d9dee3;--accent:#0072B2;--soft:#f3f6f9}
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;color:var(--ink);
line-height:1.5;font-size:15px;background:#fff}
.layout{display:grid;grid-template-columns:230px minmax(0,1fr);max-width:1400px;margin:0 auto}
nav.toc{position:sticky;top:0;align-self:start;max-height:100vh;overflow-y:auto;padding:1.4em 1em 2em 1.4em;
font-size:.88em;border-right:1px solid var(--line)}
nav.toc b{display:block;margin-bottom:.4em;color:var(--muted);text-transform:uppercase;font-size:.8em;letter-spacing:.06em}
nav.toc ol{list-style:none;padding:0;margin:0} nav.toc li{margin:.18em 0} nav.toc ol ol{padding-left:1em;font-size:.95em}
nav.toc a{color:var(--ink);text-decoration:none} nav.toc a:hover{color:var(--accent);text-decoration:underline}
main{padding:1.2em 2.4em 5em;min-width:0}
header h1{font-size:1.7em;margin:.3em 0 .1em} header p{margin:.2em 0;color:var(--muted)}
.cards{display:flex;flex-wrap:wrap;gap:.7em;margin:1em 0}
.card{border:1px solid var(--line);border-radius:8px;padding:.55em .9em;min-width:8.5em;background:var(--soft)}
.card .v{font-size:1.35em;font-weight:600} .card .k{font-size:.8em;color:var(--muted)}
h2{font-size:1.35em;border-bottom:2px solid var(--accent);padding-bottom:.15em;margin-top:2.2em}
h3{font-size:1.1em;margin:1.6em 0 .4em}
.how{background:#eef5fb;border-left:4px solid var(--accent);padding:.55em 1em;font-size:.92em;margin:.8em 0}
.how b{color:var(--accent)}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
td,th{border:1px solid var(--line);padding:.3em .6em;text-align:left;vertical-align:top}
th{background:var(--soft);font-weight:600} td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1em 0 1.4em} figure img{max-width:100%;height:auto;display:block}
figcaption{font-size:.86em;color:var(--muted);margin-top:.3em;max-width:60em}
figcaption a{color:var(--muted)}
.comp{border:1px solid var(--line);border-radius:8px;padding:.2em 1.2em 1em;margin:1.4em 0}
.comp h3{margin-top:.8em}
.chip{display:inline-block;border-radius:4px;padding:0 .35em;margin:.08em .12em;font-size:.85em;
border:1px solid rgba(0,0,0,.25);white-space:nowrap}
.sw{display:inline-block;width:.85em;height:.85em;border-radius:2px;vertical-align:-.08em;margin-right:.35em;
border:1px solid rgba(0,0,0,.3)}
.muted{color:var(--muted)} .warn{color:#8a4b00}
.flag{color:#a33000;white-space:nowrap;font-size:.9em}
.flags{border:1px solid #e0b8a0;background:#fff6f0;border-radius:8px;padding:.5em 1em;margin:.8em 0}
.flags ul{margin:.3em 0;padding-left:1.2em}
.scroll{max-height:32em;overflow:auto;border:1px solid var(--line)} .scroll table{margin:0}
.scroll th{position:sticky;top:0}
table.glance th{white-space:nowrap;font-weight:600;background:#fff} table.glance td,table.glance th{border:0;
border-bottom:1px solid var(--line);padding:.2em .6em}
pre{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:.82em;border-radius:6px}
details summary{cursor:pointer;color:var(--accent)}
a{color:var(--accent)}
@media (max-width:900px){.layout{display:block} nav.toc{position:static;max-height:none;border:0;
border-bottom:1px solid var(--line)} main{padding:1em}}
.search{margin:0 0 1.2em} .search label{display:block;font-weight:600;margin-bottom:.2em}
.search input{width:100%;font:inherit;padding:.25em .4em;border:1px solid var(--line);border-radius:4px}
#neuron-results{list-style:none;padding:0;margin:.4em 0 0;font-size:.92em} #neuron-results li{margin:.2em 0}
.chip.hit{outline:3px solid #C00000;outline-offset:1px}
@media print{nav.toc{display:none} .layout{display:block} .scroll{max-height:none;overflow:visible}}
"""


def _table(header: list[str], rows: list[list[str]], num_cols: tuple[int, ...] = ()) -> str:
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td class='num'>{c}</td>" if k in num_cols else f"<td>{c}</td>"
                                    for k, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _text_on(colour: str) -> str:
    r, g, b = _rgb(colour)
    return "#000" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "#fff"


CHIP_NAMES = 40  # members named in a chip's tooltip (the rest counted): keeps a large run's page small


def _chip(text: str, colour: str, title: str = "", data_attrs: str = "") -> str:
    t = f" title='{html.escape(title)}'" if title else ""
    return (f"<span class='chip' style='background:{colour};color:{_text_on(colour)}'{t}{data_attrs}>"
            f"{html.escape(text)}</span>")


def _figure(uri: str, stem: str, caption: str, number: int, alt: str) -> str:
    return (f"<figure id='fig-{stem}'><img alt='{html.escape(alt)}' src='{uri}'>"
            f"<figcaption><b>Figure {number}.</b> {html.escape(caption)} "
            f"<a href='figures/{stem}.svg'>SVG</a> · <a href='figures/{stem}.png'>PNG</a></figcaption></figure>")


def _p_text(p) -> str:
    if p is None or not np.isfinite(p):
        return "—"
    return f"{p:.2g}" if p >= 0.001 else f"{p:.1e}"


def _flag_chips(names: list[str], notes: dict) -> str:
    return "".join(f"<span class='flag' title='{html.escape(notes.get(n, ''))}'>⚑ {html.escape(n)}</span> "
                   for n in names) or "<span class='muted'>none</span>"


def _flags_box(summary: dict) -> str:
    """The red flags of every component, at the top of the page."""
    items = [f"<li><a href='#component-{c['id']}'>C{c['id']}</a>: "
             + "; ".join(f"<span class='flag'>⚑ {html.escape(n)}</span> {html.escape(c['flag_notes'].get(n, ''))}"
                         for n in c["flags"]) + "</li>"
             for c in summary["components"] if c.get("flags")]
    sig = summary.get("significance", {})
    how = (f"p-values from {sig['surrogates']} surrogate datasets (co-activation destroyed), alpha = {sig['alpha']:g}"
           if sig.get("surrogates") else "no surrogates were run (report.surrogates: 0): no p-values")
    body = f"<ul>{''.join(items)}</ul>" if items else "<p>No red flags.</p>"
    return (f"<div class='flags' id='red-flags'><b>Red flags</b> <span class='muted'>({html.escape(how)}; "
            f"rules in docs/report.md)</span>{body}</div>")


def _trust_html(comp: dict) -> str:
    """A component's red flags and its relation to the behaviour covariates."""
    out = ""
    if comp.get("flags"):
        out += "<p>" + "<br>".join(f"<span class='flag'>⚑ {html.escape(n)}</span> "
                                   f"{html.escape(comp['flag_notes'].get(n, ''))}" for n in comp["flags"]) + "</p>"
    cov = comp.get("covariates")
    if cov:
        rows = []
        for name, rel in cov.items():
            per = "; ".join(f"{html.escape(a)}: r = {v['r']:+.2f} (lag {v['lag_s']:.3g} s, p = {_p_text(v['p'])})"
                            for a, v in rel["per_animal"].items())
            rows.append([f"<b>{html.escape(name)}</b>", f"{rel['r']:+.3f}", f"{rel['lag_s']:.3g}", _p_text(rel["p"]), per])
        out += ("<p class='muted' style='margin-bottom:0'>Behaviour: correlation of the temporal loading with each "
                "covariate at the best lag (positive: the component follows), p from circular shifts of the "
                "covariate.</p>" + _table(["covariate", "r", "lag (s)", "p", "per animal"], rows, (1, 2, 3)))
    return out


def _states_html(summary: dict, stats: list[list[dict]], comm_chip, neurons: list[str]) -> str:
    rows = summary.get("states") or []
    if not rows:
        return ""
    body = []
    for row in rows:
        cells = "".join(
            f"<div><a href='#component-{r}'><b>C{r}</b></a> <span class='muted'>×{row['enrichment'][r]:.2f}</span> "
            + ("".join(f"{comm_chip(r, st)} {html.escape(', '.join(neurons[i] for i in st['members']))} "
                       for st in stats[r] if st["cohesive"]) or "<span class='muted'>no cohesive community</span>")
            + "</div>" for r in row["components"]) or "<span class='muted'>none active</span>"
        body.append([f"<b>{html.escape(row['state'])}</b>", palette.seconds(row["seconds"], 1), cells])
    return ("<h3 id='states'>Atlas by behavioural state</h3><p class='how'><b>How to read this.</b> One row per "
            "behavioural state (<code>report.states</code>): the time bins whose covariate mean falls in the state's "
            "range, pooled over animals. A component is listed when its mean loading over the state's bins is at "
            "least its mean over all bins (×: the ratio, its preference for the state) and at least the activity "
            "threshold × its largest mean over the states; most enriched first.</p>"
            + _table(["state", "time (animal-s)", "active components and their cohesive communities"], body, (1,)))


def _reference_cell(res: dict | None) -> str:
    """One community × reference graph: links / tested pairs inside, ratio to its component's
    graph and the permutation p."""
    if res is None:
        return "<span class='muted'>—</span>"
    ratio = "" if res.get("ratio") is None else f" ({res['ratio']:.2g}×)"
    return f"{res['links']}/{res['pairs']}{ratio}, p {_p_text(res['p_value'])}"


def _references_html(summary: dict, stats: list[list[dict]], comm_chip) -> str:
    """The reference-connectome section: each graph's match, its pooled enrichment and one row
    per cohesive community."""
    esc = html.escape
    graphs = summary.get("references", [])
    notes = "".join(f"<p class='muted'>{esc(n)}</p>" for n in summary.get("reference_notes", []))
    if not graphs:
        return notes or "<p class='muted'>No reference graph was given (<code>report.reference_graphs</code>).</p>"
    head = ("<table><thead><tr><th>reference</th><th>neurons matched</th><th>links among them</th>"
            "<th>within cohesive communities: links per tested pair vs between (ratio)</th><th>p</th></tr></thead><tbody>")
    rows = []
    for g in graphs:
        pooled = g.get("pooled") or {}
        ratio = pooled.get("ratio")
        rows.append(f"<tr><td title='{esc(g['description'], quote=True)}'>{esc(g['label'])}</td>"
                    f"<td class='num'>{g['neurons_matched']}</td><td class='num'>{g['links']}</td>"
                    f"<td class='num'>{'—' if ratio is None else f'{ratio:.2f}×'}</td>"
                    f"<td class='num'>{_p_text(pooled.get('p_value'))}</td></tr>")
    table = head + "".join(rows) + "</tbody></table>"
    labels = [g["label"] for g in graphs]
    comm_rows = []
    for r, comp in enumerate(stats):
        for st in comp:
            if st["cohesive"] and "references" in st:
                comm_rows.append([comm_chip(r, st), str(st["size"])]
                                 + [_reference_cell(st["references"].get(lab)) for lab in labels])
    per = _table(["community", "size", *[esc(lab) for lab in labels]], comm_rows) if comm_rows else \
        "<p class='muted'>No cohesive community.</p>"
    return notes + table + "<p>Per cohesive community: reference links / tested pairs inside it, the ratio to the " \
        "density of links among all the run's neurons, and the p-value against random groups of its size " \
        "drawn from them.</p><div class='scroll'>" + per + "</div>"


def render_html(ctx: dict) -> str:
    """The report page. ``ctx``: ``summary``, ``data`` (RunData), ``stats``, ``view``,
    ``figures`` {stem: (data URI, caption)}, ``facts``, ``versions``, ``config_text``,
    ``params``."""
    esc = html.escape
    s, data, stats, view = ctx["summary"], ctx["data"], ctx["stats"], ctx["view"]
    figs = ctx["figures"]
    params = ctx["params"]
    numbers = {stem: k + 1 for k, stem in enumerate(figs)}

    def fig(stem: str, alt: str) -> str:
        if stem not in figs:
            return ""
        uri, caption = figs[stem]
        return _figure(uri, stem, caption, numbers[stem], alt)

    dec = data.decimals

    def comm_chip(r: int, st: dict) -> str:
        members = st["members"]
        names = ", ".join(data.neurons[i] for i in members[:CHIP_NAMES])
        more = f" … (+{len(members) - CHIP_NAMES})" if len(members) > CHIP_NAMES else ""
        return _chip(f"C{r}·{st['id']}", st["colour"], f"component {r}, community {st['id']}: {names}{more}",
                     data_attrs=f" data-comp='{r}' data-comm='{st['id']}'")

    n_cohesive = sum(1 for comp in stats for st in comp if st["cohesive"])
    total_warnings = sum(len(v) for v in data.stage_warnings.values())
    cards = [("animals", len(data.animals)), ("neurons", len(data.neurons)),
             ("duration", palette.seconds(max(_duration(data, a) for a in range(len(data.animals))), dec) + " s"),
             ("components", data.rank), ("cohesive communities", n_cohesive), ("warnings", total_warnings)]
    cards_html = "".join(f"<div class='card'><div class='v'>{esc(str(v))}</div><div class='k'>{esc(k)}</div></div>"
                         for k, v in cards)

    # ---- run summary
    facts = "<table>" + "".join(f"<tr><th scope='row'>{esc(k)}</th><td>{esc(v)}</td></tr>"
                                for k, v in ctx["facts"].items()) + "</table>"
    stage_rows = []
    for name in STAGE_NAMES:
        sec = data.stage_seconds.get(name, float("nan"))
        warns = data.stage_warnings.get(name, [])
        stage_rows.append([name, f"{sec:.2f}" if np.isfinite(sec) else "—", esc(data.stage_created.get(name, "")),
                           esc(data.stage_versions.get(name, "")),
                           "<br>".join(f"<span class='warn'>{esc(w)}</span>" for w in warns) or
                           "<span class='muted'>none</span>"])
    stage_table = _table(["stage", "seconds", "written (UTC)", "dynconn", "warnings"], stage_rows, (1,))
    fit_rows = []
    if "losses" in data.fit:
        losses = np.asarray(data.fit["losses"], dtype=float).ravel()
        best = int(np.asarray(data.fit.get("best_index", [np.argmin(losses)])).ravel()[0])
        if losses.size == 1:  # rank: auto refines the sweep's best fit (one fit, no restarts)
            fit_rows.append(f"final fit: relative error {losses[0]:.4f}")
        else:
            fit_rows.append(f"final fit: {losses.size} restarts, relative error of the kept restart "
                            f"{losses[best]:.4f} (all: {', '.join(f'{v:.4f}' for v in losses)})")
        if "n_iter" in data.fit:
            conv = np.asarray(data.fit.get("converged", np.ones(losses.size, bool)), dtype=bool).ravel()
            fit_rows.append(f"iterations: {', '.join(str(int(v)) for v in np.asarray(data.fit['n_iter']).ravel())}; "
                            f"converged: {int(conv.sum())} of {conv.size}")
    versions_text = ", ".join(f"{k} {v}" for k, v in ctx["versions"].items())

    # ---- rank selection
    if data.rank_selection:
        rank_html = (
            "<p class='how'><b>How to read this.</b> The factorization was fitted at every rank of the sweep, "
            "several times from random starts. <i>Fit error</i> falls as components are added; "
            "beyond the right rank it falls only slowly (components fit noise). <i>Stability</i>: how similar "
            "the restarts' solutions are to the best one (1 = every restart found the same components); "
            "unstable ranks are unreliable. <i>Worth of the last component</i>: variance explained per added "
            "component; with the rule <code>parallel-analysis</code> the line is what a component explains "
            "on the shifted null (every pair's time course shifted in time, so pairs no longer change "
            "together), times <code>factorize.null_ratio</code>: the rank chosen is where the components "
            "have explained the most beyond that line. "
            "Filled markers: ranks the rule accepted; dashed line: the rank used.</p>"
            f"<p>Chosen rank: <b>{data.rank}</b> by the rule <code>{esc(data.rank_rule or 'not recorded')}</code> "
            "(see docs/factorization.md).</p>" + fig("rank_selection", "rank selection diagnostics"))
    else:
        rank_html = (f"<p>The rank was fixed in the config (<code>factorize.rank: {data.rank}</code>); "
                     "no rank sweep was run. Set <code>factorize.rank: auto</code> to let the data choose.</p>")

    # ---- atlas
    atlas_rows = []
    for entry in s["atlas"]:
        cells = []
        for r in entry["components"]:
            cohesive = [st for st in stats[r] if st["cohesive"]]
            members = "".join(
                f"<div>{comm_chip(r, st)} {esc(', '.join(data.neurons[i] for i in st['members']))}</div>"
                for st in cohesive) or "<div class='muted'>no cohesive community</div>"
            who = ", ".join(s["components"][r]["animals"])
            cells.append(f"<div style='margin:.15em 0'><a href='#component-{r}'><b>C{r}</b></a> "
                         f"<span class='muted'>in {esc(who or 'no animal')}</span>{members}</div>")
        label = esc(entry["epoch"]) + (f" <span class='muted'>({esc(entry['animal'])})</span>"
                                       if "animal" in entry else "")
        atlas_rows.append([label, f"<span style='white-space:nowrap'>{palette.span(entry['start_s'], entry['stop_s'], dec)}</span>",
                           "".join(cells) or "<span class='muted'>none active</span>"])
    atlas_table = _table(["epoch", "time", "active components (in which animals) and their cohesive communities"],
                         atlas_rows)

    # ---- components
    overview_rows = []
    comps_html = []
    # overview table columns: component, weight, active in, animals, communities, neurons, modularity, stability
    for comp in s["components"]:
        r = comp["id"]
        cohesive = [st for st in stats[r] if st["cohesive"]]
        n_in = int((data.membership[r] >= 0).sum())
        stab = comp.get("stability")
        mod = data.modularity[r] if data.modularity is not None and r < data.modularity.size else float("nan")
        where = where_active(comp, s["atlas"], dec)
        overview_rows.append([f"<a href='#component-{r}'>C{r}</a>", f"{comp['weight']:.4g}", esc(where),
                              esc(", ".join(comp["animals"])),
                              "".join(comm_chip(r, st) + f"<span class='muted'>{st['size']}</span> "
                                      for st in cohesive) or "<span class='muted'>none</span>",
                              f"{n_in}", f"{mod:.3f}" if np.isfinite(mod) else "—",
                              f"{stab:.2f}" if stab is not None else "—", _p_text(comp.get("p_value")),
                              _flag_chips(comp.get("flags", []), comp.get("flag_notes", {}))])
        members_rows = []
        for st in stats[r]:
            coh = f"{st['cohesion']:.2f}" if np.isfinite(st["cohesion"]) else "—"
            rep = st.get("replication", np.nan)
            kind = "cohesive" if st["cohesive"] else ("single neuron" if st["size"] == 1 else "diffuse")
            members_rows.append([f"<span class='sw' style='background:{st['colour']}'></span>{st['id']}",
                                 str(st["size"]), coh, f"{rep:.2f}" if np.isfinite(rep) else "—",
                                 _p_text(st.get("p_value")), kind,
                                 _flag_chips(st.get("flags", []), flags.EXPLAIN),
                                 esc(", ".join(data.neurons[i] for i in st["members"]))])
        iv_text = stretches_text(comp["active_intervals"], comp.get("active_intervals_by_animal"), dec)
        extra = []
        if stab is not None:
            extra.append(f"partition stability (mean ARI between runs): <b>{stab:.2f}</b>")
        if np.isfinite(mod):
            extra.append(f"modularity {mod:.3f}")
        if comp.get("p_value") is not None:
            extra.append(f"p = {_p_text(comp['p_value'])} (surrogates)")
        lv = _levels_text(data.levels, r)
        if lv:
            extra.append(lv)
        comps_html.append(
            f"<section class='comp' id='component-{r}'><h3>Component {r}</h3>"
            f"<p>active in: <b>{esc(where)}</b> · in animals: <b>{esc(', '.join(comp['animals']) or 'none')}</b>"
            f" · weight {comp['weight']:.4g}<br>active bins: {esc(iv_text)}<br>{n_in} neurons in its graph, {len(cohesive)} cohesive "
            f"communit{'y' if len(cohesive) == 1 else 'ies'}" + (" · " + " · ".join(extra) if extra else "") + "</p>"
            + merged_component_html(data, r)
            + _trust_html(comp)
            + fig(f"component_{r:02d}", f"component {r}: temporal loading, animals, pair matrix, network")
            + (fig(f"evidence_{r:02d}", f"component {r}: mean traces of its communities' members per animal")
               or "<p class='muted'>No cohesive community: no trace evidence to show.</p>")
            + "<details" + (" open" if data.rank <= 8 else "") + "><summary>Communities of component "
            f"{r} ({len(stats[r])})</summary>"
            + _table(["community", "size", "cohesion", "replication", "p", "kind", "red flags",
                      "members (strongest first)"], members_rows, (1, 2, 3, 4))
            + f"<p class='muted'>Graph file: <a href='exports/component_{r:02d}.graphml'>"
              f"exports/component_{r:02d}.graphml</a></p></details></section>")
    stab_note = ("" if data.stability is not None else
                 " Partition stability was not computed by the communities stage for this run.")

    # ---- neuron view
    nv_rows = []
    for name in view["neurons"]:
        joins = view["by_neuron"].get(name)
        if not joins:
            continue
        by_row: dict[str, list] = {}
        for row_label, r, k in joins:
            by_row.setdefault(row_label, []).append((r, k))
        cells = []
        for entry in s["atlas"]:
            lab = _row_label(entry)
            chips = "".join(comm_chip(r, next(st for st in stats[r] if st["id"] == k)) for r, k in by_row.get(lab, []))
            cells.append(chips)
        nv_rows.append([f"<b>{esc(name)}</b>", *cells])
    n_silent = len(data.neurons) - len(nv_rows)
    if len(nv_rows) > NEURON_TABLE_ROWS:  # at scale: the search box and summary.json hold the same
        nv_table = (f"<p class='muted'>{len(nv_rows)} neurons join a cohesive community: too many for a table on "
                    "this page. Find a neuron with the search box (top left); every neuron's communities per "
                    "epoch row are in <code>exports/summary.json</code> (<code>neuron_view</code>).</p>")
    else:
        nv_table = "<div class='scroll'>" + _table(["neuron", *[esc(_row_label(e)) for e in s["atlas"]]],
                                                   nv_rows) + "</div>"

    glance = []
    for entry in s["atlas"]:
        motifs = [(r, st) for r in entry["components"] for st in stats[r] if st["cohesive"]]
        items = "".join(
            f"{comm_chip(r, st)} <span class='muted'>{st['size']}:</span> "
            f"{esc(', '.join(data.neurons[i] for i in st['members'][:6]))}{'…' if st['size'] > 6 else ''} "
            for r, st in motifs[:4]) + (f"<span class='muted'>+{len(motifs) - 4} more</span>" if len(motifs) > 4 else "")
        glance.append(f"<tr><th scope='row'>{esc(_row_label(entry))}</th>"
                      f"<td>{items or '<span class=muted>no active component</span>'}</td></tr>")
    glance_html = ("<h3 style='margin-top:.6em'>At a glance: the groups working together in each epoch</h3>"
                   f"<table class='glance'>{''.join(glance)}</table>"
                   "<p class='muted' style='font-size:.85em'>Chip: C&lt;component&gt;·&lt;community&gt;, then its "
                   "number of neurons and the strongest ones. Details in the <a href='#atlas'>atlas</a>.</p>")
    toc_comps = "".join(f"<li><a href='#component-{c['id']}'>Component {c['id']}</a> "
                        f"<span class='muted'>{esc(', '.join(c['epochs'][:2]))}</span></li>"
                        for c in s["components"])
    warn_list = "".join(f"<li><b>{esc(k)}</b>: {esc(w)}</li>" for k, ws in data.stage_warnings.items() for w in ws)

    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>dynconn report — {esc(ctx.get('title', ''))}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="dynconn {esc(__version__)}"><style>{CSS}</style></head>
<body><div class="layout">
<nav class="toc" aria-label="Contents">{search_box(s, stats, data.neurons, dec)}<b>Contents</b><ol>
<li><a href="#summary">1 Run summary</a></li>
<li><a href="#data">2 Data overview</a></li>
<li><a href="#rank">3 Rank selection</a></li>
<li><a href="#atlas">4 Atlas</a></li>
<li><a href="#components">5 Components</a><ol>{toc_comps}<li><a href="#references">Reference connectomes</a></li></ol></li>
<li><a href="#neurons">6 Neuron view</a></li>
<li><a href="#files">7 Files</a></li>
</ol></nav>
<main>
<header><h1>Dynamic functional connectome</h1>
<p>{esc(ctx.get('title', ''))} — report written {esc(ctx.get('created', ''))} by dynconn {esc(__version__)}</p>
<div class="cards">{cards_html}</div>
{_flags_box(s)}
{glance_html}
<p class="how"><b>How to read this report.</b> The method learns <i>components</i>: each is a group of neuron pairs that
change together (a motif of the functional connectome), with a time course (<i>when</i>) and a weight per animal
(<i>in whom</i>). Each component's neurons are split into <i>communities</i>; <i>cohesive</i> communities are the ones
denser than the component as a whole — the groups that actually work together. The <a href="#atlas">atlas</a> answers
“which groups are active during which part of the experiment”; each <a href="#components">component</a> shows the
evidence; the <a href="#neurons">neuron view</a> follows single neurons across motifs.</p>
</header>

<section id="summary"><h2>1 Run summary</h2>
<p class="how"><b>How to read this.</b> What went in and how it was processed: dataset facts, the time each stage
took and every warning raised on the way (worth reading before trusting the results), the software versions and
the full resolved configuration, defaults included (what to cite in a methods section).</p>
{facts}
<h3>Stages</h3>{stage_table}
{('<p>' + '<br>'.join(esc(t) for t in fit_rows) + '</p>') if fit_rows else ''}
{merges_html(data)}
<h3>Warnings</h3><ul>{warn_list or '<li class="muted">none</li>'}</ul>
<p class="muted">Versions: {esc(versions_text)}</p>
<details><summary>Resolved configuration (defaults included)</summary><pre>{esc(ctx['config_text'])}</pre></details>
</section>

<section id="data"><h2>2 Data overview</h2>
<p class="how"><b>How to read this.</b> The input after normalisation, one heatmap per animal, time
{'on each animal’s own clock' if data.concatenated else 'on the protocol clock'}. Rows are neurons in the same order in
every animal and in the neuron view, grouped by the community they belong to most strongly, so co-active groups show as
bands of simultaneous events. Blank rows: the neuron was not recorded in that animal. Check for bleaching, dead
neurons or motion artefacts here before reading the atlas.</p>
{fig('data_traces', 'trace heatmaps of every animal')}
{fig('data_missing', 'neurons missing per animal') or '<p>Every neuron was recorded in every animal.</p>'}
{_missing_table(data)}
</section>

<section id="rank"><h2>3 Rank selection</h2>
{rank_html}
</section>

<section id="atlas"><h2>4 Atlas</h2>
<p class="how"><b>How to read this.</b> One row per stimulus epoch and per stretch without a stimulus
{('(per animal: each animal is its own spontaneous stretch) ' if data.concatenated else '')}— the stages of the
experiment. A component is listed
when its mean temporal loading over the row is at least <b>{s['active_threshold']:g}</b> × its largest mean over any
row (<code>report.active_threshold</code>); strongest first. Under each component: its cohesive communities
(mean pair loading inside ≥ <b>{params['cohesion_threshold']:g}</b> × the component's average,
<code>report.cohesion_threshold</code>) with their members — the groups of neurons working together in that epoch.
Chips read <code>C&lt;component&gt;·&lt;community&gt;</code>; colours match every figure.</p>
{fig('atlas', 'atlas heatmap: epochs by components')}
{atlas_table}
{_states_html(s, stats, comm_chip, data.neurons)}
</section>

<section id="components"><h2>5 Components</h2>
<p class="how"><b>How to read this.</b> Each component is a motif: a pattern of neuron pairs (matrix, network) with a
time course (top) and a weight per animal. The time course is shaded by stimulus epoch; the dashed line is the activity
threshold and the filled stretches the bins where the component counts as active. The matrix shows the neurons of the
component's graph grouped by community (coloured bars; white lines separate communities): a bright block on the
diagonal is a group of neurons that interact. The network draws each neuron's {params['network_neighbors']} strongest
edges (<code>report.network_neighbors</code>). Grey: diffuse communities, no denser than the component as a whole.
<i>Stability</i> is the agreement between community-detection runs (1 = identical partitions).{esc(stab_note)}</p>
{_table(['component', 'weight', 'active in', 'animals', 'cohesive communities (size)', 'neurons', 'modularity',
         'stability', 'p', 'red flags'], overview_rows, (1, 5, 6, 7, 8))}
{''.join(comps_html)}
<h3 id="references">Reference connectomes</h3>
<p class="how"><b>How to read this.</b> A community of co-active neurons is more credible when known links —
anatomical synapses, gap junctions, causal links measured by stimulating one neuron and imaging the others — fall
inside it more often than elsewhere in its component. For each reference: how many of the run's neurons it knows
(names matched as in docs/report.md), then, pooled, the density of its links within cohesive communities against
between them, and per community its links among its members against random groups of the same size (permutation
p-values, <code>report.reference_permutations</code>). A link is any contact, whatever its count.</p>
{_references_html(s, stats, comm_chip)}
</section>

<section id="neurons"><h2>6 Neuron view</h2>
<p class="how"><b>How to read this.</b> The point of a dynamic connectome: a neuron can work with different partners at
different times. For each neuron (rows), the figure shows, in each epoch row (column groups, in time order) and for
each component active there (columns), the community it joins (its colour; grey: a diffuse community; white: not in
that component). The table lists the same for the cohesive communities, by epoch row; hover a chip for its members.</p>
{fig('neuron_view', 'neuron view: communities per neuron over time')}
{nv_table}
<p class="muted">{n_silent} neuron{'s' if n_silent != 1 else ''} join no cohesive community of an active component.</p>
</section>

<section id="files"><h2>7 Files</h2>
<p class="how"><b>How to read this.</b> Everything on this page is also on disk, next to this file.</p>
<ul>
<li><code>figures/</code>: every figure as PNG and SVG (editable text, for papers).</li>
<li><code>exports/summary.json</code>: the atlas and every component in machine-readable form.</li>
<li><code>exports/communities.csv</code>, <code>exports/factors_time.csv</code>, <code>exports/factors_animal.csv</code>:
the memberships and loadings as plain tables.</li>
<li><code>exports/component_XX.graphml</code>: each component's graph (weights, communities, colours) for Cytoscape
and Gephi.</li>
</ul>
</section>
</main></div></body></html>
"""


NEURON_TABLE_ROWS = 500  # the neuron-view table is left out of the page beyond this many neurons

SEARCH_SCRIPT = """(function () {
  var data = JSON.parse(document.getElementById('dynconn-index').textContent);
  var box = document.getElementById('neuron-search'), out = document.getElementById('neuron-results');
  var names = Object.keys(data.neurons), lower = {};
  names.forEach(function (n) { lower[n.toLowerCase()] = n; });
  function clear() {
    document.querySelectorAll('.chip.hit').forEach(function (e) { e.classList.remove('hit'); });
    while (out.firstChild) out.removeChild(out.firstChild);
  }
  function item(text) { var li = document.createElement('li'); li.textContent = text; out.appendChild(li); return li; }
  function show() {
    clear();
    var q = box.value.trim().toLowerCase();
    if (!q) return;
    var exact = lower[q];
    var hits = exact !== undefined ? [exact] : names.filter(function (n) { return n.toLowerCase().indexOf(q) === 0; });
    if (!hits.length) { item('no neuron named ' + box.value.trim()); return; }
    hits.slice(0, 12).forEach(function (n) {
      var li = item(''), b = document.createElement('b');
      b.textContent = n; li.appendChild(b);
      var joins = data.neurons[n];
      if (!joins.length) li.appendChild(document.createTextNode(': in no component\u2019s graph'));
      joins.forEach(function (e) {
        li.appendChild(document.createTextNode(' '));
        var a = document.createElement('a');
        a.href = '#component-' + e[0];
        a.className = 'found';
        a.textContent = 'C' + e[0] + '\u00b7' + e[1] + (e[2] ? '' : ' (diffuse)');
        a.title = data.components[e[0]];
        li.appendChild(a);
        if (hits.length === 1) {
          document.querySelectorAll(".chip[data-comp='" + e[0] + "'][data-comm='" + e[1] + "']")
            .forEach(function (c) { c.classList.add('hit'); });
        }
      });
    });
    if (hits.length > 12) item('\u2026 and ' + (hits.length - 12) + ' more: type more of the name');
  }
  box.addEventListener('input', show);
  show();
})();"""


def search_index(summary: dict, stats: list[list[dict]], neurons: list[str], decimals: int = 1) -> dict:
    """What the page's neuron search reads: ``{"neurons": {name: [[component, community,
    cohesive], …]}, "components": [where each is active, in words]}`` (every neuron, also those
    in no component's graph)."""
    index: dict[str, list] = {name: [] for name in neurons}
    for r, comp in enumerate(stats):
        for st in comp:
            for i in st["members"]:
                index[neurons[i]].append([r, int(st["id"]), bool(st["cohesive"])])
    where = [f"component {c['id']}: active in " + where_active(c, summary["atlas"], decimals) for c in summary["components"]]
    return {"neurons": index, "components": where}


def json_script(value, element_id: str) -> str:
    """``value`` as JSON in a ``<script type="application/json">``: data, never code. ``<``, ``>``
    and ``&`` are written as JSON escapes, so no name can close the element or start markup."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f'<script type="application/json" id="{element_id}">{text}</script>'


def search_box(summary: dict, stats: list[list[dict]], neurons: list[str], decimals: int = 1) -> str:
    """The neuron search of the page: an input, its results, the index (JSON data) and the
    inline script (no external resource) that lists the communities a neuron belongs to and
    outlines their chips everywhere on the page."""
    return ("<div class='search' role='search'><label for='neuron-search'>Find a neuron</label>"
            "<input id='neuron-search' type='search' placeholder='name, e.g. AVA' autocomplete='off' spellcheck='false'>"
            "<ul id='neuron-results' aria-live='polite'></ul></div>"
            + json_script(search_index(summary, stats, neurons, decimals), "dynconn-index")
            + f"<script>{SEARCH_SCRIPT}</script>")


def merges_html(data: RunData) -> str:
    """The run summary's note on merged duplicate components (the factorize stage)."""
    if not data.merged:
        return ""
    items = "".join(f"<li><a href='#component-{r}'>C{r}</a> = fitted components {' + '.join(map(str, g))}</li>"
                    for r, g in data.merged)
    return ("<p>Merged duplicates: components with similar pair patterns carried by complementary animals "
            "(one motif whose timing differs between animals) or active at the same times (one motif whose "
            "pairs the fit split) are one motif; the factorize stage merged them "
            f"(<code>factorize.merge_similarity</code>, docs/method.md):</p><ul>{items}</ul>")


def merged_component_html(data: RunData, r: int) -> str:
    """A component's note when it was merged from several fitted components."""
    for rep_r, g in data.merged:
        if rep_r == r:
            return (f"<p class='muted'>Merged from fitted components {' + '.join(map(str, g))}: similar pair "
                    "patterns in complementary animals or at the same times (one motif); its "
                    "temporal loading is their combined best rank-one fit.</p>")
    return ""


def stretches_text(intervals: list, by_animal: dict | None = None, decimals: int = 1) -> str:
    """A short description of a component's active intervals (the full lists are in
    summary.json)."""
    def one(ivs):
        if not ivs:
            return "none"
        total = sum(b - a for a, b in ivs)
        return (f"{len(ivs)} stretch{'es' if len(ivs) != 1 else ''}, {palette.seconds(total, decimals)} s in all, "
                f"from {palette.seconds(ivs[0][0], decimals)} to {palette.seconds(ivs[-1][1], decimals)} s")
    if by_animal is None:
        return one(intervals)
    return "; ".join(f"{a}: {one(ivs)}" for a, ivs in by_animal.items())


def _levels_text(levels: dict, r: int) -> str:
    """A short note on nested partition levels of component r, when the communities stage
    stored them (``levels["membership"]`` (L, R, N), from communities.h5 ``/levels``)."""
    m = levels.get("membership")
    if m is None or m.ndim != 3 or r >= m.shape[1]:
        return ""
    counts = [len(np.unique(m[level, r][m[level, r] >= 0])) for level in range(m.shape[0])]
    return "nested levels: " + " ⊃ ".join(str(c) for c in counts[::-1]) + " communities"


def _missing_table(data: RunData) -> str:
    rows = []
    for a, name in enumerate(data.animals):
        missing = [data.neurons[i] for i in np.flatnonzero(~data.present[:, a])]
        rows.append([html.escape(name), str(len(missing)), html.escape(", ".join(missing)) or "—"])
    return _table(["animal", "missing", "neurons not recorded"], rows, (1,))


# ----------------------------------------------------------------------------- stage
def params(config: Config) -> dict:
    return dict(config["report"])


def analyse(data: RunData, p: dict, null_pool: dict | None = None,
            shares: np.ndarray | None = None, references: tuple[list, list] | None = None,
            replication: list[dict] | None = None) -> dict:
    """What the report computes before drawing (pure): ``matrices`` (R neuron × neuron pair
    loadings), community ``stats`` per component, the ``summary`` (summary.json's content
    without provenance), the neuron ``order`` and ``view``, and the figure ``jobs``
    (:func:`figure_jobs`). Serves :func:`build` and :class:`dynconn.Run`'s figures."""
    n = len(data.neurons)
    matrices = [pair_matrix(data.f_pairs[:, r], data.pairs, n) for r in range(data.rank)]
    stats = [community_stats(matrices[r], data.membership[r], p["cohesion_threshold"]) for r in range(data.rank)]
    strengths = np.stack([m.sum(axis=1) for m in matrices]) if matrices else np.zeros((0, n))
    trust = evidence(data, stats, p, null_pool, shares, replication)
    graphs, ref_notes = references or ([], [])
    enrichment = reference_enrichment(data, stats, graphs, p)
    summary = summarize(data, stats, p["active_threshold"])
    summary["references"] = enrichment
    summary["reference_notes"] = list(ref_notes)
    for comp, extra in zip(summary["components"], trust):
        comp.update(extra)
        comp["communities_detail"] = communities_detail(stats[comp["id"]], data.neurons)
    summary["significance"] = significance_record(p, null_pool)
    summary["states"] = state_atlas(data, stats, p.get("states"), p["active_threshold"])
    order, home = neuron_order(stats, strengths, n, peak_sequence(summary))
    view = neuron_view(summary, stats, data.neurons, order)
    summary["neuron_view"] = view["by_neuron"]
    summary["neuron_order"] = view["neurons"]
    jobs = figure_jobs(data, summary, stats, matrices, order, view, p, home_groups(order, home, stats))
    return {"matrices": matrices, "stats": stats, "summary": summary, "order": order, "home": home,
            "view": view, "jobs": jobs}


def build(data: RunData, p: dict, *, config_text: str = "", title: str = "", workers: int = 1,
          previous: dict | None = None, null_pool: dict | None = None, shares: np.ndarray | None = None,
          references: tuple[list, list] | None = None, replication: list[dict] | None = None) -> dict:
    """Every output of the report stage, from the run's data: ``{"files": {path: bytes},
    "summary": dict, "timings": {step: seconds}}``. ``previous``: figures of the last
    report, reused where their inputs did not change (:func:`render_figures`);
    ``replication``: :func:`dynconn.methods.null.component_replications` (with ``null_pool``, the p-values')."""
    timings = {}
    t0 = time.perf_counter()
    an = analyse(data, p, null_pool, shares, references, replication)
    matrices, stats, summary, view, jobs = an["matrices"], an["stats"], an["summary"], an["view"], an["jobs"]
    files = export_tables(membership=data.membership, neurons=data.neurons, time_s=data.time_s,
                          factors_time=data.f_time, animals=data.animals, factors_animal=data.f_animal,
                          time_animal=data.time_animal, courses=data.f_courses,
                          covariates=(data.covariate_names, data.covariates) if data.covariates is not None else None,
                          community_columns={(r, st["id"]): (st["cohesion"], st.get("p_value", np.nan), st["cohesive"])
                                             for r in range(data.rank) for st in stats[r]})
    for r in range(data.rank):
        m_order, _ = matrix_order(stats[r])
        cohesive = {int(i) for st in stats[r] if st["cohesive"] for i in st["members"]}
        net = network_drawing(matrices[r][np.ix_(m_order, m_order)], np.isin(m_order, list(cohesive)),
                              p["network_neighbors"])
        backbone = {tuple(sorted((int(m_order[a]), int(m_order[b])))) for a, b in net["pairs"]}
        files[f"exports/component_{r:02d}.graphml"] = graphml(r, matrices[r], data.membership[r], stats[r],
                                                              data.neurons, backbone)
    timings["summaries"] = time.perf_counter() - t0
    if null_pool:
        timings["surrogates"] = null_pool.get("seconds", 0.0)
    t0 = time.perf_counter()
    rendered, drawn = render_figures(jobs, p["dpi"], workers, previous)
    timings["figures"] = time.perf_counter() - t0
    timings["figures_drawn"] = drawn
    timings["figures_reused"] = len(jobs) - drawn
    fig_ctx = {}
    for stem, _, _, caption in jobs:
        png, svg = rendered[stem]
        files[f"figures/{stem}.png"] = png
        files[f"figures/{stem}.svg"] = svg
        fig_ctx[stem] = ("data:image/png;base64," + base64.b64encode(png).decode(), caption)
    t0 = time.perf_counter()
    page = render_html({"summary": summary, "data": data, "stats": stats, "view": view, "figures": fig_ctx,
                        "facts": dataset_facts(data), "versions": versions(), "config_text": config_text,
                        "params": p, "title": title,
                        "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})
    files["report.html"] = page.encode()
    timings["html"] = time.perf_counter() - t0
    return {"files": files, "summary": summary, "timings": timings}


def run(config: Config, workdir: Path, console: Console, upstream: dict, engine=None) -> dict:
    import yaml

    from . import surrogates

    data = gather(*(upstream[k] for k in UPSTREAM))
    p = params(config)
    workers = p["workers"] or default_workers()
    title = str(config.source) if config.source else str(workdir)
    null_pool = shares = replication = None
    if p["surrogates"] > 0:
        t0 = time.perf_counter()
        # a distributed engine runs each surrogate as a task on its workers (their memory, not ours)
        mapper = engine.map if engine is not None and engine.distributed else None
        if mapper is None:
            workers = surrogates.local_workers(upstream["affinity"]["affinity"], workers,
                                               config["compute"].get("memory_budget"))
        results = surrogates.run(data, surrogates.options(config, data.rank), n=p["surrogates"], seed=p["seed"],
                                 fingerprint=upstream["ingest"].fingerprint, workdir=workdir, workers=workers,
                                 console=console, mapper=mapper)
        null_pool = surrogates.pooled(results)
        null_pool["seconds"] = time.perf_counter() - t0
        aff = upstream["affinity"]
        X, mask = aff["affinity"], np.asarray(aff["mask"])  # an array, or a handle read by blocks of pairs
        shares = null.component_shares(data.weights, X, mask, data.time_animal)
        replication = null.component_replications(X, mask, data.f_time, data.pairs, data.membership,
                                                  data.time_animal)
    references = load_references(config)
    return build(data, p, config_text=yaml.safe_dump(config.values, sort_keys=False, allow_unicode=True),
                 title=title, workers=workers, previous=previous_figures(workdir), null_pool=null_pool,
                 shares=shares, references=references, replication=replication)


def load_references(config: Config) -> tuple[list, list[str]]:
    """The graphs of ``report.reference_graphs`` and notes on those left out
    (:func:`dynconn.io.references.load_references`)."""
    from ..io import references as refio

    return refio.load_references(config["report"]["reference_graphs"], config.resolve)


def check_ahead(config: Config, shapes: dict, budget: int) -> None:
    """Checked by ``dynconn run`` as soon as the affinity tensor exists, before the stages between
    run: surrogates run in this machine's processes need the tensor in memory, so over the memory
    budget (``budget`` bytes, ``compute.memory_budget`` resolved) they are refused now rather than
    after factorize and communities (on 2,000 neurons, 20 minutes later). ``shapes[stage][dataset]
    = (shape, itemsize)`` of each earlier stage's artifact."""
    from .surrogates import over_budget_error

    aff = shapes.get("affinity", {}).get("affinity")
    if aff is None or config["report"]["surrogates"] <= 0 or config["compute"]["scheduler"] == "dask":
        return
    shape, itemsize = aff
    tensor = int(np.prod(shape, dtype=np.int64)) * int(itemsize)
    if tensor > budget:
        raise over_budget_error(tensor)


def preflight(config: Config) -> None:
    """Checked before any stage runs: every ``report.reference_graphs`` entry is known, a CSV
    edge list exists, and a worm reference named explicitly has its optional extra."""
    from ..errors import ConfigError
    from ..io import references as refio

    for entry in config["report"]["reference_graphs"]:
        if str(entry).strip() == "auto":
            continue
        kind, text = refio.parse_entry(entry)
        if kind == "csv" and not config.resolve(text).is_file():
            raise ConfigError(f"report.reference_graphs: {config.resolve(text)}: no such file (a CSV edge "
                              "list source,target,weight)")
        if kind == "worm" and not refio.worm_references_available():
            raise ConfigError(f"report.reference_graphs: {text} needs the C. elegans reference graphs: "
                              f"{refio.EXTRA_HINT}")


def significance_record(p: dict, null_pool: dict | None) -> dict:
    """summary.json ``significance``: how the p-values were obtained."""
    return {
        "surrogates": int(null_pool["n"]) if null_pool else 0,
        "alpha": p["alpha"],
        "seed": p["seed"],
        "null_components": int(null_pool["replication"].size) if null_pool else 0,
        "rule": ("surrogates: each neuron's trace circularly shifted by its own random lag in each animal, then "
                 "affinity, factorize (the sweep's iterations, one start) and communities (one run) at the run's "
                 "rank; a community's replication is the geometric mean over animals of the contrast of its members' "
                 "affinity with each other against their affinity with the other recorded neurons, both weighted by the "
                 "component's temporal loading; its p-value compares it with the largest replication of each surrogate "
                 "component that has a community: (1 + #null >= observed) / (1 + #null) within the null's range, "
                 "beyond its largest value the smaller of 1 / (1 + #null) and the Student-t predictive tail of the "
                 "log null values; "
                 "a component's p-value is its most significant cohesive community's (1 without one)"),
    }


def write(workdir: Path, result: dict, *, provenance: dict, seconds: float, warnings: list[str]) -> None:
    """Write every file atomically, remove figures and graphs a previous report left that
    this one does not have (e.g. after a lower rank), and write summary.json (which records
    the provenance) last, so a report is up to date only when all its files were written."""
    for rel, data in result["files"].items():
        atomic_write_bytes(workdir / rel, data)
    remove_stale(workdir, set(result["files"]))
    summary = {**result["summary"], "provenance": {**provenance, "seconds": seconds, "warnings": warnings,
                                                   "timings": result.get("timings", {})}}
    atomic_write_bytes(workdir / SUMMARY, json.dumps(summary, indent=2).encode())


def remove_stale(workdir: Path, files: set[str]) -> None:
    """Remove the figures and graphs this stage owns that are not among ``files`` (the
    relative paths of the report now in place)."""
    for folder in ("figures", "exports"):
        if (workdir / folder).is_dir():
            for p in (workdir / folder).iterdir():
                rel = f"{folder}/{p.name}"
                if p.is_file() and OWNED.match(rel) and rel not in files:
                    p.unlink()


def recorded_provenance(workdir: Path) -> dict | None:
    try:
        summary = json.loads((workdir / SUMMARY).read_text())
        prov = summary["provenance"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not (workdir / OUTPUT).exists():
        return None
    return prov

"""Figures of the report (matplotlib, object API only: no pyplot, no display).

Every figure function takes arrays and plain structures and returns a
:class:`matplotlib.figure.Figure`; :func:`render` turns one into PNG and SVG bytes.

Design rules, shared by every figure:

- **Colours are colour-blind safe.** Communities use the Okabe–Ito palette (without black):
  the *cohesive* communities of a component (denser than the component's graph, see
  docs/report.md) get its colours in order of cohesion, the rest are light grey. The report
  computes one colour per (component, community) and every figure and table uses it.
  Heatmaps use ``cividis`` (perceptually uniform, readable with any colour vision).
- **Fixed layouts in inches**, no ``tight_layout``/``bbox_inches="tight"``: every figure is
  drawn exactly once per format (speed), and fonts keep one size in every figure.
- Text is kept to what is read: neuron names only where they stay legible (≤ ``MAX_LABELS``).
"""

from __future__ import annotations

import io
import random
import sys

import matplotlib

if "matplotlib.pyplot" not in sys.modules:  # in a notebook, keep its backend (figures still render)
    matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib.collections import LineCollection, PolyCollection  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .palette import ABSENT, COMMUNITY_COLOURS, DIFFUSE, MIN_FONT, ROW_POINTS, readable_rows, rows_note  # noqa: E402

LINE = "#0072B2"
ACCENT = "#D55E00"
MUTED = "#7F7F7F"
ANIMAL_BARS = "#009E73"
EPOCH_SHADES = ("#000000", "#0072B2")
HEATMAP = "cividis"
MAX_LABELS = 60  # neuron names are drawn when at most this many neurons are shown
NAMED_HEIGHT = 16.0  # inches: the data overview names its rows when that keeps all its heatmaps within this
FONT = 9.0  # titles, axis labels
SMALL = MIN_FONT  # ticks, annotations, row names: the smallest text of any figure (8 pt at print size)

matplotlib.rcParams.update({
    "font.size": FONT, "axes.titlesize": FONT + 1, "axes.labelsize": FONT, "xtick.labelsize": SMALL,
    "ytick.labelsize": SMALL, "legend.fontsize": SMALL, "axes.spines.top": False,
    "axes.spines.right": False, "axes.titlelocation": "left", "svg.fonttype": "none",
    "svg.hashsalt": "dynconn", "path.simplify": True, "image.interpolation": "nearest",
    # a fixed title position: the automatic one measures every tick label (slow)
    "axes.titley": 1.0, "axes.titlepad": 4.0,
})


# ----------------------------------------------------------------------------- helpers
class Canvas:
    """A figure whose axes are placed in inches from the top-left corner (fixed layout)."""

    def __init__(self, width: float, height: float):
        self.width, self.height = width, height
        self.fig = Figure(figsize=(width, height))

    def axes(self, left: float, top: float, width: float, height: float, **kw):
        w, h = self.width, self.height
        return self.fig.add_axes((left / w, 1 - (top + height) / h, width / w, height / h), **kw)

    def axes_height(self, ax) -> float:
        """Height of an axes, inches."""
        return ax.get_position().height * self.height

    def text(self, left: float, top: float, s: str, **kw):
        kw.setdefault("va", "top")
        return self.fig.text(left / self.width, 1 - top / self.height, s, **kw)


def render(fig: Figure, dpi: float, key: str = "") -> tuple[bytes, bytes]:
    """``(png, svg)`` bytes of a figure (drawn once per format), ``key`` recorded in both."""
    png, svg = io.BytesIO(), io.BytesIO()
    png_meta = {"Software": None, **({"dynconn-figure": key} if key else {})}
    svg_meta = {"Date": None, "Creator": None, **({"Description": f"dynconn-figure {key}"} if key else {})}
    fig.savefig(png, format="png", dpi=dpi, metadata=png_meta)
    fig.savefig(svg, format="svg", metadata=svg_meta)
    return png.getvalue(), svg.getvalue()


CHAR_W = 0.07  # inches per character of 8-pt text, generous (DejaVu Sans averages 0.063)


def clipped(text: str, n_chars: int) -> str:
    """``text`` cut to ``n_chars`` characters (an ellipsis marks the cut): one line that stays
    inside its figure (the page has the whole text)."""
    return text if len(text) <= n_chars else text[: max(n_chars - 1, 0)].rstrip(" ,;") + "…"


def shade_epochs(ax, epochs: list[dict], label: bool = True) -> None:
    """Shade stimulus epochs (alternating light tones), labels on top of the axes."""
    for k, e in enumerate(epochs):
        ax.axvspan(e["start_s"], e["stop_s"], color=EPOCH_SHADES[k % 2], alpha=0.06, lw=0)
        if label:
            ax.text((e["start_s"] + e["stop_s"]) / 2, 1.01, e["label"], transform=ax.get_xaxis_transform(),
                    ha="center", va="bottom", fontsize=SMALL, color="#333333", clip_on=False)


def label_rows(ax, positions, labels: list[str], fontsize: float, side: str = "left",
               colours: list[str] | None = None) -> None:
    """Names beside rows of an image (data y, axes x): plain text artists, much cheaper to
    build and draw than tick objects."""
    trans = ax.get_yaxis_transform()
    x, ha = (-0.01, "right") if side == "left" else (1.01, "left")
    for k, (y, label) in enumerate(zip(positions, labels)):
        ax.text(x, y, label, transform=trans, ha=ha, va="center", fontsize=fontsize, clip_on=False,
                color=colours[k] if colours else "#222222")


# ----------------------------------------------------------------------------- data overview
def traces_overview(traces: list[np.ndarray], durations: list[float], neuron_labels: list[str],
                    animals: list[str], epochs: list[dict], colour_range: tuple[float, float],
                    groups: list[tuple[int, int, str, str]]) -> Figure:
    """One heatmap per animal: rows are neurons in one shared order (blank: not recorded),
    columns time on the animal's own clock; stimulus epochs marked by white lines and
    labelled on top. ``traces[a]`` is (rows, F_a) (already ordered and display-binned: with
    more neurons than a heatmap has pixel rows, consecutive rows are averaged, see
    :func:`dynconn.report.palette.downsample_columns`); ``groups`` ``[(first row, stop row,
    label, colour)]`` (in neuron rows) are bracketed on the left. Neuron names label the rows
    when each row is at least ``ROW_POINTS`` tall; otherwise a note says why they are left out."""
    n_animals, n = len(traces), len(neuron_labels)
    tall = max(1.0, n * ROW_POINTS / 72.0)  # every row tall enough for its name
    named = n > 0 and tall * n_animals <= NAMED_HEIGHT
    row_h = tall if named else min(2.6, max(1.0, 0.03 * n))
    width = 10.0
    name_w = (0.1 + 0.062 * max((len(x) for x in neuron_labels), default=0)) if named else 0.0
    left = 1.0 + name_w
    gap = 0.3
    note = "" if named or not n else rows_note(n, row_h, "the order is neuron_order in summary.json")
    c = Canvas(width, 0.45 + n_animals * (row_h + gap) + 0.35 + (0.35 if note else 0.0))
    span = max(durations) if durations else 1.0
    cmap = matplotlib.colormaps[HEATMAP].with_extremes(bad="#FFFFFF")
    im, ax = None, None
    axw = width - left - 0.85
    for a in range(n_animals):
        top = 0.45 + a * (row_h + gap)
        ax = c.axes(left, top, axw, row_h)
        im = ax.imshow(np.ma.masked_invalid(traces[a]), aspect="auto", cmap=cmap, vmin=colour_range[0],
                       vmax=colour_range[1], extent=(0, durations[a], n - 0.5, -0.5), interpolation="nearest")
        ax.set_xlim(0, span)
        starts = [e["start_s"] for e in epochs if 0 < e["start_s"] < durations[a]]
        if starts:
            ax.vlines(starts, -0.5, n - 0.5, color="white", lw=0.8)
        if a == 0:
            for e in epochs:
                ax.text((e["start_s"] + e["stop_s"]) / 2, 1.01, e["label"], transform=ax.get_xaxis_transform(),
                        ha="center", va="bottom", fontsize=SMALL)
        ax.text(0.0, 1.01 if a or not epochs else 1.12, animals[a], transform=ax.transAxes, ha="left",
                va="bottom", fontsize=FONT, weight="bold")
        ax.set_yticks([])
        if named:
            label_rows(ax, range(n), neuron_labels, SMALL)
        bracket = -(name_w + 0.1) / axw
        for g, (first, stop, label, _colour) in enumerate(groups):
            ax.plot([bracket, bracket], [first - 0.35, stop - 0.65], transform=ax.get_yaxis_transform(),
                    color=("#333333", "#9A9A9A")[g % 2], lw=2.5, clip_on=False, solid_capstyle="butt")
            if (stop - first) / max(n, 1) * row_h * 72.0 >= ROW_POINTS:
                ax.text(bracket - 0.06 / axw, (first + stop - 1) / 2, label, transform=ax.get_yaxis_transform(),
                        ha="right", va="center", fontsize=SMALL, clip_on=False)
        if a < n_animals - 1:
            ax.set_xticklabels([])
        ax.spines["left"].set_visible(False)
    if ax is not None:
        ax.set_xlabel("time (s)", labelpad=1)
    if im is not None:
        cax = c.axes(width - 0.7, 0.45, 0.12, min(2.0, row_h))
        c.fig.colorbar(im, cax=cax).set_label("normalised trace", fontsize=SMALL)
    if note:
        c.text(0.1, c.height - 0.36, "Neuron names: " + note, fontsize=SMALL, color=MUTED)
    return c.fig


def missing_neurons(present: np.ndarray, neurons: list[str], animals: list[str]) -> Figure:
    """Which neurons are missing in which animal: animals × the neurons not recorded in every
    animal (dark = missing). ``present`` is (N, A)."""
    partial = np.flatnonzero(~present.all(axis=1))
    n, n_animals = partial.size, present.shape[1]
    cell = min(0.16, 8.4 / max(n, 1))
    labelled = n and cell * 72.0 >= ROW_POINTS  # a name per column, rotated
    note = (f"dark = missing; {present.shape[0] - n} of {present.shape[0]} neurons are recorded in every animal "
            "(not shown)")
    width = max(4.0, 1.2 + n * cell + 0.4, 0.3 + CHAR_W * len(note))
    c = Canvas(width, 0.35 + n_animals * 0.22 + (0.75 if labelled else 0.35))
    ax = c.axes(1.1, 0.3, max(n * cell, 0.5), n_animals * 0.22)
    grid = np.where(present[partial].T, 0.0, 1.0) if n else np.zeros((n_animals, 1))
    ax.imshow(grid, aspect="auto", cmap="Greys", vmin=-0.15, vmax=1.15, interpolation="nearest")
    ax.set_yticks(range(n_animals), animals)
    ax.tick_params(length=0)
    if labelled:
        ax.set_xticks(range(n), [neurons[i] for i in partial], rotation=90, fontsize=SMALL)
    else:
        ax.set_xticks([])
    for side in ax.spines.values():
        side.set_visible(False)
    c.text(0.1, 0.06, note, fontsize=SMALL, color="#333333")
    return c.fig


# ----------------------------------------------------------------------------- rank selection
def rank_selection(ranks: np.ndarray, errors: np.ndarray, similarity: np.ndarray | None,
                   mean_similarity: np.ndarray | None, gain: np.ndarray | None,
                   eligible: np.ndarray | None, chosen: int, rule: str,
                   null_gain: np.ndarray | None = None, null_ratio: float | None = None) -> Figure:
    """Relative error, restart similarity and explained-variance gain against the rank, with
    the chosen rank marked; filled markers: ranks the rule found eligible. ``null_gain`` (rule
    parallel-analysis): the shifted null's gain per component, drawn × ``null_ratio`` on the gain
    panel."""
    panels = [p for p in ("error", "similarity", "gain")
              if p == "error" or (p == "similarity" and (similarity is not None or mean_similarity is not None))
              or (p == "gain" and gain is not None)]
    w = 2.75
    c = Canvas(0.2 + len(panels) * (w + 0.45), 2.55)
    elig = np.ones(ranks.size, dtype=bool) if eligible is None else np.asarray(eligible, dtype=bool)
    for p, name in enumerate(panels):
        ax = c.axes(0.6 + p * (w + 0.45), 0.35, w - 0.15, 1.7)
        if name == "error":
            err = np.atleast_2d(errors.T).T if errors.ndim == 1 else errors
            xs = np.repeat(ranks, err.shape[1])
            ax.scatter(xs, err.ravel(), s=9, color=MUTED, alpha=0.6, lw=0, label="each restart")
            best = np.nanmin(err, axis=1)
            ax.plot(ranks, best, color=LINE, lw=1.3)
            ax.scatter(ranks[elig], best[elig], s=22, color=LINE, zorder=3, label="best (eligible)")
            ax.scatter(ranks[~elig], best[~elig], s=22, facecolor="white", edgecolor=LINE, zorder=3,
                       label="best (not eligible)")
            ax.set_ylabel("relative error")
            ax.set_title("Fit error", fontsize=FONT + 0.5)
            ax.legend(frameon=False, loc="lower left", handletextpad=0.2)  # errors fall: the corner stays free
        elif name == "similarity":
            if similarity is not None and similarity.ndim == 2 and similarity.shape[1] > 1:
                xs = np.repeat(ranks, similarity.shape[1])
                ax.scatter(xs, similarity.ravel(), s=9, color=MUTED, alpha=0.6, lw=0)
            ms = mean_similarity if mean_similarity is not None else np.nanmean(similarity, axis=1)
            ax.plot(ranks, ms, color=LINE, lw=1.3)
            ax.scatter(ranks[elig], ms[elig], s=22, color=LINE, zorder=3)
            ax.scatter(ranks[~elig], ms[~elig], s=22, facecolor="white", edgecolor=LINE, zorder=3)
            ax.set_ylim(min(0.0, float(np.nanmin(ms)) - 0.05), 1.05)
            ax.set_ylabel("similarity to best restart")
            ax.set_title("Stability across restarts", fontsize=FONT + 0.5)
        else:
            ax.bar(ranks, gain, color=[LINE if e else "#BFD5E8" for e in elig], width=0.6)
            ax.axhline(0, color="#333333", lw=0.6)
            if null_gain is not None:
                ratio = 1.0 if null_ratio is None else float(null_ratio)
                ax.plot(ranks, ratio * np.asarray(null_gain, dtype=float), color=ACCENT, lw=1.2, marker="o",
                        ms=3, label=f"{ratio:g} × shifted null")
                ax.legend(frameon=False, loc="center right", handletextpad=0.3)
            ax.set_ylabel("explained gain per component")
            ax.set_title("Worth of the last component", fontsize=FONT + 0.5)
        ax.axvline(chosen, color=ACCENT, lw=1.1, ls="--", zorder=1)
        ax.text(chosen, 1.0, f" chosen: {chosen}", color=ACCENT, transform=ax.get_xaxis_transform(),
                ha="left", va="top", fontsize=SMALL)
        ax.set_xticks(ranks)
        ax.set_xlabel("rank")
    c.text(0.1, 2.45, f"rule: {rule}", fontsize=SMALL, color="#333333", va="bottom")
    return c.fig


# ----------------------------------------------------------------------------- atlas
def atlas_heatmap(row_labels: list[str], relative: np.ndarray, active: np.ndarray,
                  component_labels: list[str]) -> Figure:
    """Epoch rows × components: mean temporal loading over the epoch relative to the
    component's largest epoch mean; a dot marks the cells counted active."""
    n_rows, n_comp = relative.shape
    row_h = min(0.32, max(0.16, 6.0 / max(n_rows, 1)))
    left = 0.3 + 0.062 * max((len(s) for s in row_labels), default=4)
    cell = min(0.42, max(0.2, 7.5 / max(n_comp, 1)), (10.0 - left - 1.2) / max(n_comp, 1))
    legend = "● active in the epoch (threshold rule)"
    c = Canvas(max(left + n_comp * cell + 1.1, left + CHAR_W * len(legend) + 0.1), 0.75 + n_rows * row_h + 0.2)
    ax = c.axes(left, 0.55, n_comp * cell, n_rows * row_h)
    im = ax.imshow(np.nan_to_num(relative, nan=0.0), aspect="auto", cmap=HEATMAP, vmin=0, vmax=1)
    rr, cc = np.nonzero(active)
    ax.scatter(cc, rr, s=14, facecolor="white", edgecolor="#222222", lw=0.6, zorder=3)
    ax.set_yticks(range(n_rows), row_labels)
    ax.set_xticks(range(n_comp), component_labels, fontsize=SMALL)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    cax = c.axes(left + n_comp * cell + 0.15, 0.55, 0.1, min(1.6, n_rows * row_h))
    c.fig.colorbar(im, cax=cax).set_label("loading / peak epoch", fontsize=SMALL)
    c.text(left, 0.08, legend, fontsize=SMALL, color="#333333")
    return c.fig


# ----------------------------------------------------------------------------- neuron view
def neuron_view(colours: np.ndarray, neuron_labels: list[str], slot_labels: list[str],
                groups: list[tuple[str, int, int]], hidden: int = 0) -> Figure:
    """Neurons × (epoch row, active component) slots coloured by the community the neuron
    joins there. ``colours`` is (N, S, 3) RGB; ``groups`` ``[(epoch label, first slot,
    stop slot)]``; ``hidden`` neurons (in no cohesive community anywhere) are not drawn."""
    n, s = colours.shape[:2]
    row_h = min(0.14, max(0.012, 8.0 / max(n, 1)), 9.0 / max(n, 1))  # at most 9 in of rows
    named = readable_rows(n, n * row_h)
    left = 0.35 + (0.1 + 0.062 * max((len(x) for x in neuron_labels), default=0) if named else 0.0)
    slot_w = min(0.55, max(0.12, 8.0 / max(s, 1)), (9.5 - left) / max(s, 1))
    rotate = any(len(g[0]) * 0.062 > (g[2] - g[1]) * slot_w for g in groups)
    dense = s > 20  # slot labels rotated
    longest = max((len(g[0]) for g in groups), default=0)
    head = (0.45 + 0.062 * longest if rotate else 0.7) + (0.2 if dense else 0.0)
    c = Canvas(max(4.6, left + s * slot_w + 0.5), head + n * row_h + 1.0 + (0.35 if not named else 0.0))
    ax = c.axes(left, head, s * slot_w, n * row_h)
    ax.imshow(colours if s and n else np.ones((max(n, 1), max(s, 1), 3)), aspect="auto", interpolation="nearest")
    if named:
        ax.hlines(np.arange(n - 1) + 0.5, -0.5, s - 0.5, color="white", lw=0.3)
    if len(groups) > 1:
        ax.vlines([first - 0.5 for _, first, _ in groups[1:]], -0.5, n - 0.5, color="#222222", lw=1.2)
    ax.set_yticks([])
    if named:
        label_rows(ax, range(n), neuron_labels, SMALL)
    ax.set_xticks([])
    for j, lab in enumerate(slot_labels):
        ax.text(j, 1.005, lab, transform=ax.get_xaxis_transform(), ha="center", va="bottom",
                fontsize=SMALL, rotation=90 if dense else 0)
    for label, first, stop in groups:
        x = (first + stop - 1) / 2
        ax.text(x, 1.0 + (0.42 if dense else 0.25) / max(n * row_h, 0.1), label, transform=ax.get_xaxis_transform(),
                ha="center", va="bottom", fontsize=SMALL, rotation=90 if rotate else 0,
                rotation_mode="default")
    for side in ax.spines.values():
        side.set_visible(False)
    y = head + n * row_h + 0.15
    legend = ((COMMUNITY_COLOURS[0], "cohesive community (its colour)"), (DIFFUSE, "diffuse community"),
              (ABSENT, "not in the component"))
    for k, (colour, text) in enumerate(legend):
        y0 = y + k * 0.19
        c.fig.patches.append(Rectangle((left / c.width, 1 - (y0 + 0.13) / c.height), 0.13 / c.width, 0.13 / c.height,
                                       transform=c.fig.transFigure, facecolor=colour, edgecolor="#555555", lw=0.5))
        c.text(left + 0.19, y0 - 0.005, text, fontsize=SMALL)
    notes = ([f"{hidden} neurons in no cohesive community of an active component: not shown"] if hidden else []) \
        + ([] if named else ["Neuron names: " + rows_note(n, n * row_h, "the order is neuron_order in summary.json")])
    for k, note in enumerate(notes):
        c.text(0.1, y + 0.6 + 0.2 * k, note, fontsize=SMALL, color=MUTED)
    return c.fig


# ----------------------------------------------------------------------------- components
def _loading_axes(ax, track: dict, epochs: list[dict], threshold_level: float, span: float,
                  show_epoch_labels: bool, bin_seconds: float, ymax: float | None = None) -> None:
    """A temporal loading: epochs shaded, threshold dashed, active bins as a rug at the bottom,
    and (``track["spread"]``: (lo, hi)) the band of the restarts' loadings around it."""
    t, v = track["time"], track["loading"]
    shade_epochs(ax, epochs, label=show_epoch_labels)
    top = float(v.max()) if v.size else 0.0
    spread = track.get("spread")
    if spread is not None:
        lo, hi = spread
        ax.fill_between(t, lo, hi, color=LINE, alpha=0.22, lw=0, zorder=2.5)
        top = max(top, float(np.nanmax(hi)) if np.isfinite(hi).any() else 0.0)
    ax.plot(t, v, color=LINE, lw=1.2, zorder=3)
    ax.set_xlim(0, span)
    ax.set_ylim(0, max(top if ymax is None else ymax, threshold_level, 1e-12) * 1.08)
    if threshold_level > 0:
        ax.axhline(threshold_level, color=ACCENT, lw=0.8, ls="--", zorder=2)
        half = bin_seconds / 2
        quads = [[(x - half, 0), (x + half, 0), (x + half, 0.045), (x - half, 0.045)] for x in t[v >= threshold_level]]
        if quads:
            ax.add_collection(PolyCollection(quads, facecolors=ACCENT, alpha=0.75, lw=0,
                                             transform=ax.get_xaxis_transform(), zorder=4))


MANY_ANIMALS = 6  # beyond this many one-animal rows, rows are thinner and carry the animal's name only


def component_figure(*, title: str, subtitle: str = "", tracks: list[dict], epochs: list[dict], threshold_level: float,
                     bin_seconds: float, bars: dict, matrix: dict, network: dict, spread_label: str = "") -> Figure:
    """One component on one page: temporal loading(s) with epochs shaded, the activity
    threshold (dashed), the active bins (rug) and the spread over restarts (band); behaviour
    covariates beneath; the animal loadings; the neuron × neuron matrix ordered by community;
    the network of the strongest edges.

    ``tracks``: ``[{"label", "time", "loading", "duration", "cov_time", "covariates":
    [(name, (T', k))], "spread": (lo, hi) or None}]`` (one track for the aligned layout, one per
    animal for the concatenated one). ``bars``: ``{"labels", "values", "ylabel"}``. ``matrix``:
    see :func:`_draw_matrix`. ``network``: ``{"n" nodes, "edges" (E, 2), "weights" (E,),
    "colours", "sizes", "labels", "named"}``; node positions come from :func:`network_layout`.
    """
    width = 10.0
    multi = len(tracks) > 1
    many = len(tracks) > MANY_ANIMALS
    load_h = 0.36 if many else 0.72 if multi else 1.45
    cov_h = 0.3 if many else 0.42
    gap = 0.06 if many else 0.2
    block = sum(load_h + 0.08 + cov_h * len(tr["covariates"]) + gap for tr in tracks)
    n_bars = len(bars["values"])
    wide_bars = n_bars > 10  # the animals get a row of their own, as wide as the page
    bars_h = (1.3 + 0.065 * max((len(x) for x in bars["labels"]), default=0)) if wide_bars else 0.0
    bottom_h = 3.3
    c = Canvas(width, 0.7 + block + 0.5 + bars_h + bottom_h + 0.45)
    c.text(0.1, 0.08, title, fontsize=FONT + 2, weight="bold")
    if subtitle:
        c.text(0.1, 0.36, clipped(subtitle, int((width - 0.2) / CHAR_W)), fontsize=SMALL, color="#333333")
    handles = [Line2D([], [], color=ACCENT, lw=0.8, ls="--"), Rectangle((0, 0), 1, 1, color=ACCENT, alpha=0.75)]
    labels = ["activity threshold", "active bins"]
    if any(tr.get("spread") is not None for tr in tracks):
        handles.append(Rectangle((0, 0), 1, 1, color=LINE, alpha=0.22))
        labels.append(spread_label or "spread over restarts")
    c.fig.legend(handles, labels, loc="upper right", frameon=False, ncols=len(labels),
                 bbox_to_anchor=(1 - 0.1 / width, 1 - 0.04 / c.height), fontsize=SMALL, handlelength=1.4)
    span = max(tr["duration"] for tr in tracks) if tracks else 1.0
    shared = max([float(np.max(tr["loading"], initial=0.0)) for tr in tracks]
                 + [float(np.nanmax(tr["spread"][1], initial=0.0)) for tr in tracks if tr.get("spread") is not None],
                 default=0.0) if multi else None
    top = 0.7
    left, right = 1.05, 0.2
    axw = width - left - right
    ax = None
    for k, tr in enumerate(tracks):
        ax = c.axes(left, top, axw, load_h)
        _loading_axes(ax, tr, epochs, threshold_level, span, show_epoch_labels=(k == 0), bin_seconds=bin_seconds,
                      ymax=shared)
        if many:
            ax.set_ylabel(tr["label"], rotation=0, ha="right", va="center", fontsize=SMALL)
            ax.set_yticks([])
        else:
            ax.set_ylabel((f"{tr['label']}\n" if multi else "") + "temporal\nloading", fontsize=SMALL)
            ax.locator_params(axis="y", nbins=3 if multi else 4)
        if tr["covariates"] or k < len(tracks) - 1:
            ax.set_xticklabels([])
        top += load_h + 0.08
        for j, (name, values) in enumerate(tr["covariates"]):
            ax = c.axes(left, top, axw, cov_h - 0.08)
            shade_epochs(ax, epochs, label=False)
            several = values.shape[1] > 1
            ax.plot(tr["cov_time"], values, lw=0.7, color=MUTED if several else "#333333", alpha=0.6 if several else 1)
            if several:
                ax.plot(tr["cov_time"], np.nanmean(values, axis=1), lw=1.1, color="#222222")
            ax.set_xlim(0, span)
            ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=SMALL)
            ax.set_yticks([])
            if not (k == len(tracks) - 1 and j == len(tr["covariates"]) - 1):
                ax.set_xticklabels([])
            top += cov_h
        top += gap
    if ax is not None:
        ax.set_xlabel("time (s)" + (" on each animal's own clock" if multi else "")
                      + ("; loadings of every animal on one scale (largest: top of each row)" if many else ""),
                      labelpad=1)
    top += 0.5

    # in whom
    if wide_bars:
        ax = c.axes(0.9, top, width - 1.1, 1.0)
        top += bars_h
    else:
        bw = 0.25 + 0.32 * min(max(n_bars, 2), 8)
        ax = c.axes(0.6, top + 0.25, bw, bottom_h - 0.95)
    ax.bar(range(n_bars), bars["values"], color=ANIMAL_BARS, width=0.7)
    ax.set_xticks(range(n_bars), bars["labels"], rotation=90 if n_bars > 4 else 0, fontsize=SMALL)
    ax.set_xlim(-0.6, n_bars - 0.4)
    ax.set_ylabel(bars["ylabel"], fontsize=SMALL)
    ax.set_title("In whom", fontsize=FONT)
    ax.set_ylim(0, max(1e-12, float(np.max(bars["values"])) * 1.1) if n_bars else 1)
    ax.locator_params(axis="y", nbins=4)

    # which pairs: the matrix ordered by community
    side = bottom_h - 0.25
    mx_left = 1.6 if wide_bars else 0.6 + bw + 0.95
    _draw_matrix(c, c.axes(mx_left, top + 0.25, side, side), matrix, cbar=(mx_left + side + 0.08, top + 0.25, side))

    # the network of the strongest edges
    nx_left = mx_left + side + 0.75
    ax = c.axes(nx_left, top + 0.25, width - nx_left - 0.1, side)
    _draw_network(ax, network)
    ax.set_title("Strongest edges", fontsize=FONT)
    return c.fig


def _draw_matrix(c: Canvas, ax, m: dict, cbar: tuple[float, float, float]) -> None:
    """The component's pair matrix ordered by community. Neuron by neuron (``m["w"]``), or, for
    a graph of more neurons than the panel has pixel rows, community by community
    (``m["blocks"]``: ``{"values" (C, C) mean pair loading, "edges" (C+1,) block bounds in
    neurons, "colours", "labels"}``), blocks as wide as their communities."""
    blocks = m.get("blocks")
    colours = m["colours"]
    n = int(blocks["edges"][-1]) if blocks else m["w"].shape[0]
    ax.set_title("Pairs, grouped by community" + (" (community means)" if blocks else ""), fontsize=FONT, pad=8)
    for s_ in ax.spines.values():
        s_.set_visible(False)
    ax.set_xticks([])
    ax.set_yticks([])
    if not n:
        return
    lo_edge = -0.5
    if blocks:
        values, edges = np.asarray(blocks["values"], dtype=float), np.asarray(blocks["edges"], dtype=float) - 0.5
        vmax = float(np.nanmax(values)) if np.isfinite(values).any() and np.nanmax(values) > 0 else 1.0
        im = ax.pcolormesh(edges, edges, np.ma.masked_invalid(values), cmap=HEATMAP, vmin=0, vmax=vmax, zorder=1)
        rgb = np.array([to_rgb(col) for col in blocks["colours"]])
        widths = np.diff(edges)
        bounds_at = list(edges[1:-1])
    else:
        w = m["w"]
        vmax = float(np.percentile(w[w > 0], 99)) if (w > 0).any() else 1.0
        im = ax.imshow(w, cmap=HEATMAP, vmin=0, vmax=vmax, interpolation="nearest", zorder=1)
        rgb = np.array([to_rgb(col) for col in colours])
        bounds_at = [first - 0.5 for first, _, _ in m["groups"][1:]]
    bar = max(1.0, n * 0.035)
    if blocks:
        for k, (x0, wk) in enumerate(zip(edges[:-1], widths)):
            ax.add_patch(Rectangle((n - 0.5 + 0.2 * bar, x0), bar, wk, facecolor=rgb[k], lw=0))
            ax.add_patch(Rectangle((x0, -0.5 - 1.2 * bar), wk, bar, facecolor=rgb[k], lw=0))
    else:
        ax.imshow(rgb[:, None, :], extent=(n - 0.5 + 0.2 * bar, n - 0.5 + 1.2 * bar, n - 0.5, lo_edge), aspect="auto")
        ax.imshow(rgb[None, :, :], extent=(lo_edge, n - 0.5, -0.5 - 0.2 * bar, -0.5 - 1.2 * bar), aspect="auto")
    ax.set_xlim(-0.5, n - 0.5 + 1.2 * bar)
    ax.set_ylim(n - 0.5, -0.5 - 1.2 * bar)
    if bounds_at:
        ax.hlines(bounds_at, -0.5, n - 0.5, color="white", lw=0.7, zorder=2)
        ax.vlines(bounds_at, -0.5, n - 0.5, color="white", lw=0.7, zorder=2)
    height = c.axes_height(ax) * n / (n + 1.2 * bar)  # inches of the matrix itself
    named = np.flatnonzero(m["named"]) if not blocks else np.zeros(0, dtype=int)
    if named.size and readable_rows(n, height):
        label_rows(ax, named, [m["labels"][i] for i in named], SMALL)
        texts = [(first, stop, text) for first, stop, text in m["groups"] if text]
    else:
        # names unreadable: label the blocks instead (the chip of each cohesive community)
        texts = [(first, stop, text or label) for (first, stop, text), label
                 in zip(m["groups"], m.get("group_labels", [""] * len(m["groups"])))]
        if named.size or blocks:
            ax.text(0.0, -0.02, rows_note(n, height, "members: table below") or "names in the table below",
                    transform=ax.transAxes, fontsize=SMALL, color=MUTED, va="top", ha="left", clip_on=False)
    for first, stop, text in texts:
        if text and (stop - first) / n * height * 72.0 >= len(text) * SMALL * 0.62:
            ax.text(-0.01, (first + stop - 1) / 2, text, transform=ax.get_yaxis_transform(), ha="right",
                    va="center", fontsize=SMALL, color=MUTED, rotation=90, clip_on=False)
    left, top, side = cbar
    cax = c.axes(left + 0.2, top + side * 0.5, 0.08, side * 0.5)
    cb = c.fig.colorbar(im, cax=cax)
    cb.ax.tick_params(labelsize=SMALL)
    cb.locator = MaxNLocator(3)
    cb.update_ticks()
    cax.set_ylabel("pair loading", fontsize=SMALL)


def network_layout(n: int, edges: np.ndarray, weights: np.ndarray, seed: int = 0) -> np.ndarray:
    """Deterministic force-directed positions (n, 2) (igraph Fruchterman–Reingold, weighted,
    started from a fixed circle; nodes without edges on an outer ring)."""
    import igraph as ig

    if n == 0:
        return np.zeros((0, 2))
    angle = 2 * np.pi * np.arange(n) / max(n, 1)
    start = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    if not len(edges):
        return start
    g = ig.Graph(n=n, edges=edges.tolist())
    w = weights / weights.max()
    # igraph's layout draws random numbers: a seeded generator makes it reproducible (and
    # the figure reusable); igraph's default generator (the random module) is put back after
    ig.set_random_number_generator(random.Random(seed))
    try:
        xy = np.asarray(g.layout_fruchterman_reingold(weights=w.tolist(), niter=400, seed=start.tolist()).coords)
    finally:
        ig.set_random_number_generator(random)
    degree = np.bincount(edges.ravel(), minlength=n)
    lonely = degree == 0
    if lonely.any() and (~lonely).any():
        centre = xy[~lonely].mean(axis=0)
        radius = np.abs(xy[~lonely] - centre).max() * 1.25
        a = 2 * np.pi * np.arange(lonely.sum()) / lonely.sum()
        xy[lonely] = centre + radius * np.stack([np.cos(a), np.sin(a)], axis=1)
    return xy


def _draw_network(ax, net: dict) -> None:
    xy = network_layout(net["n"], np.asarray(net["edges"]), np.asarray(net["weights"], dtype=float))
    ax.set_axis_off()
    if not len(xy):
        ax.text(0.5, 0.5, "no strong edges", transform=ax.transAxes, ha="center", color=MUTED)
        return
    weights = np.asarray(net["weights"], dtype=float)
    if weights.size:
        rel = weights / weights.max()
        segs = xy[np.asarray(net["edges"])]
        ecol = np.zeros((weights.size, 4))
        ecol[:, :3] = 0.3
        ecol[:, 3] = 0.12 + 0.6 * rel
        ax.add_collection(LineCollection(segs, linewidths=0.3 + 2.0 * rel, colors=ecol, zorder=1))
    named = np.asarray(net["named"], dtype=bool)
    order = np.argsort(named, kind="stable")  # coloured nodes on top
    ax.scatter(xy[order, 0], xy[order, 1], s=np.asarray(net["sizes"])[order],
               c=[net["colours"][i] for i in order], edgecolors="#333333", linewidths=0.4, zorder=2)
    if named.sum() <= MAX_LABELS:
        for i in np.flatnonzero(named):
            ax.text(xy[i, 0], xy[i, 1], "  " + net["labels"][i], fontsize=SMALL, ha="left", va="center",
                    zorder=3, color="#111111")
    if net.get("hidden"):
        ax.text(0.0, 0.0, f"+{net['hidden']} diffuse neurons without\nstrong edges (not drawn)",
                transform=ax.transAxes, fontsize=SMALL, color=MUTED, va="top")
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    size = max(float((hi - lo).max()), 1e-9)
    mid = (lo + hi) / 2
    ax.set_xlim(mid[0] - 0.56 * size, mid[0] + 0.62 * size)
    ax.set_ylim(mid[1] - 0.56 * size, mid[1] + 0.56 * size)


# ----------------------------------------------------------------------------- evidence
COLUMNS = 3  # communities side by side in the evidence figure; more wrap into further blocks


def community_traces(*, title: str, panels: list[dict], animals: list[str], durations: list[float],
                     epochs: list[dict], active: list[list[list[float]]], y_range: tuple[float, float],
                     note: str = "") -> Figure:
    """The evidence behind a component's communities: for each community (columns; more than
    ``COLUMNS`` wrap into further blocks), one row per animal with the mean normalised trace of
    its members recorded there, on the animal's own clock, every row on one scale
    (``y_range``), with the component's active stretches shaded (``active[a]``: ``[[start_s,
    stop_s], …]`` of animal a) and stimulus epochs marked. ``panels``: ``[{"label", "colour",
    "traces": [(time (F',), mean (F',)) or None per animal]}]``."""
    n_animals = len(animals)
    many = n_animals > MANY_ANIMALS
    row_h = 0.3 if many else 0.55
    gap = 0.04 if many else 0.1
    ncol = max(1, min(COLUMNS, len(panels)))
    blocks = [panels[k:k + ncol] for k in range(0, len(panels), ncol)] or [[]]
    width = 10.0
    left = 0.3 + 0.062 * max((len(a) for a in animals), default=4)
    col_gap = 0.25
    col_w = (width - left - 0.2 - col_gap * (ncol - 1)) / ncol
    block_h = 0.5 + n_animals * (row_h + gap) + 0.45
    c = Canvas(width, 0.75 + len(blocks) * block_h + 0.25 + (0.22 if note else 0.0))
    c.text(0.1, 0.08, title, fontsize=FONT + 1, weight="bold")
    handles = [Rectangle((0, 0), 1, 1, color=ACCENT, alpha=0.18), Line2D([], [], color="#333333", lw=1.1)]
    c.fig.legend(handles, ["component active", "members' mean trace"], loc="upper right", frameon=False, ncols=2,
                 bbox_to_anchor=(1 - 0.1 / width, 1 - 0.04 / c.height), fontsize=SMALL, handlelength=1.4)
    span = max(durations) if durations else 1.0
    for b, block in enumerate(blocks):
        top0 = 0.75 + b * block_h
        for j, panel in enumerate(block):
            x0 = left + j * (col_w + col_gap)
            c.text(x0, top0 + 0.05, panel["label"], fontsize=FONT, weight="bold", color=_readable(panel["colour"]))
            for a in range(n_animals):
                ax = c.axes(x0, top0 + 0.3 + a * (row_h + gap), col_w, row_h)
                shade_epochs(ax, epochs, label=False)
                for start, stop in active[a]:
                    ax.axvspan(start, stop, color=ACCENT, alpha=0.18, lw=0, zorder=1)
                tr = panel["traces"][a]
                if tr is None:
                    ax.text(0.5, 0.5, "no member recorded", transform=ax.transAxes, ha="center", va="center",
                            fontsize=SMALL, color=MUTED)
                else:
                    ax.plot(tr[0], tr[1], color=_readable(panel["colour"]), lw=0.9, zorder=3)
                ax.set_xlim(0, span)
                ax.set_ylim(*y_range)
                ax.set_yticks([])
                ax.spines["left"].set_visible(False)
                if j == 0:
                    ax.set_ylabel(animals[a], rotation=0, ha="right", va="center", fontsize=SMALL)
                if a < n_animals - 1:
                    ax.set_xticks([])
                    ax.spines["bottom"].set_visible(False)
                else:
                    ax.locator_params(axis="x", nbins=4)
                    ax.set_xlabel("time (s)", labelpad=1, fontsize=SMALL)
    footer = (f"each row: the animal's mean over the community's recorded members; one scale for every row "
              f"({y_range[0]:.2g} to {y_range[1]:.2g})")
    bottom = 0.75 + len(blocks) * block_h + 0.02
    c.text(0.1, bottom, footer, fontsize=SMALL, color=MUTED)
    if note:
        c.text(0.1, bottom + 0.22, note, fontsize=SMALL, color=MUTED)
    return c.fig


def _readable(colour: str) -> str:
    """A palette colour, darkened where it is too light to read as a line or text on white."""
    r, g, b = to_rgb(colour)
    if 0.299 * r + 0.587 * g + 0.114 * b > 0.7:
        return "#9A8A00" if colour.upper() == "#F0E442" else "#7F7F7F"
    return colour

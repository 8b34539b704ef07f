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

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib.collections import LineCollection, PolyCollection  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .palette import ABSENT, COMMUNITY_COLOURS, DIFFUSE  # noqa: E402

LINE = "#0072B2"
ACCENT = "#D55E00"
MUTED = "#7F7F7F"
ANIMAL_BARS = "#009E73"
EPOCH_SHADES = ("#000000", "#0072B2")
HEATMAP = "cividis"
MAX_LABELS = 60  # neuron names are drawn when at most this many neurons are shown
FONT = 8.5

matplotlib.rcParams.update({
    "font.size": FONT, "axes.titlesize": FONT + 1, "axes.labelsize": FONT, "xtick.labelsize": FONT - 1,
    "ytick.labelsize": FONT - 1, "legend.fontsize": FONT - 1, "axes.spines.top": False,
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


def shade_epochs(ax, epochs: list[dict], label: bool = True) -> None:
    """Shade stimulus epochs (alternating light tones), labels on top of the axes."""
    for k, e in enumerate(epochs):
        ax.axvspan(e["start_s"], e["stop_s"], color=EPOCH_SHADES[k % 2], alpha=0.06, lw=0)
        if label:
            ax.text((e["start_s"] + e["stop_s"]) / 2, 1.01, e["label"], transform=ax.get_xaxis_transform(),
                    ha="center", va="bottom", fontsize=FONT - 1.5, color="#333333", clip_on=False)


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
    labelled on top. ``traces[a]`` is (N, F_a) (already ordered and display-binned);
    ``groups`` ``[(first row, stop row, label, colour)]`` are bracketed on the left."""
    n_animals, n = len(traces), len(neuron_labels)
    row_h = min(2.6, max(1.0, 0.03 * n))
    width = 10.0
    left = 1.0
    gap = 0.3
    c = Canvas(width, 0.45 + n_animals * (row_h + gap) + 0.35)
    span = max(durations) if durations else 1.0
    cmap = matplotlib.colormaps[HEATMAP].with_extremes(bad="#FFFFFF")
    im, ax = None, None
    for a in range(n_animals):
        top = 0.45 + a * (row_h + gap)
        ax = c.axes(left, top, width - left - 0.85, row_h)
        im = ax.imshow(np.ma.masked_invalid(traces[a]), aspect="auto", cmap=cmap, vmin=colour_range[0],
                       vmax=colour_range[1], extent=(0, durations[a], n - 0.5, -0.5), interpolation="nearest")
        ax.set_xlim(0, span)
        starts = [e["start_s"] for e in epochs if 0 < e["start_s"] < durations[a]]
        if starts:
            ax.vlines(starts, -0.5, n - 0.5, color="white", lw=0.8)
        if a == 0:
            for e in epochs:
                ax.text((e["start_s"] + e["stop_s"]) / 2, 1.01, e["label"], transform=ax.get_xaxis_transform(),
                        ha="center", va="bottom", fontsize=FONT - 1)
        ax.text(0.0, 1.01 if a else 1.12, animals[a], transform=ax.transAxes, ha="left", va="bottom",
                fontsize=FONT, weight="bold")
        ax.set_yticks([])
        for g, (first, stop, label, _colour) in enumerate(groups):
            ax.plot([-0.012, -0.012], [first - 0.35, stop - 0.65], transform=ax.get_yaxis_transform(),
                    color=("#333333", "#9A9A9A")[g % 2], lw=2.5, clip_on=False, solid_capstyle="butt")
            if (stop - first) / max(n, 1) * row_h > 0.09:
                ax.text(-0.02, (first + stop - 1) / 2, label, transform=ax.get_yaxis_transform(), ha="right",
                        va="center", fontsize=FONT - 2.5, clip_on=False)
        if a < n_animals - 1:
            ax.set_xticklabels([])
        ax.spines["left"].set_visible(False)
    if ax is not None:
        ax.set_xlabel("time (s)", labelpad=1)
    if im is not None:
        cax = c.axes(width - 0.7, 0.45, 0.12, min(2.0, row_h))
        c.fig.colorbar(im, cax=cax).set_label("normalised trace", fontsize=FONT - 1)
    return c.fig


def missing_neurons(present: np.ndarray, neurons: list[str], animals: list[str]) -> Figure:
    """Which neurons are missing in which animal: animals × the neurons not recorded in every
    animal (dark = missing). ``present`` is (N, A)."""
    partial = np.flatnonzero(~present.all(axis=1))
    n, n_animals = partial.size, present.shape[1]
    cell = 0.16 if n <= 80 else max(0.02, 8.6 / max(n, 1))
    width = max(4.0, 1.2 + n * cell + 0.4)
    c = Canvas(width, 0.35 + n_animals * 0.22 + (0.75 if n <= MAX_LABELS * 2 else 0.35))
    ax = c.axes(1.1, 0.3, max(n * cell, 0.5), n_animals * 0.22)
    grid = np.where(present[partial].T, 0.0, 1.0) if n else np.zeros((n_animals, 1))
    ax.imshow(grid, aspect="auto", cmap="Greys", vmin=-0.15, vmax=1.15, interpolation="nearest")
    ax.set_yticks(range(n_animals), animals)
    ax.tick_params(length=0)
    if n and n <= MAX_LABELS * 2:
        ax.set_xticks(range(n), [neurons[i] for i in partial], rotation=90, fontsize=FONT - 2.5)
    else:
        ax.set_xticks([])
    for side in ax.spines.values():
        side.set_visible(False)
    c.text(0.1, 0.06, f"dark = missing; {present.shape[0] - n} of {present.shape[0]} neurons are recorded "
                      "in every animal (not shown)", fontsize=FONT - 1, color="#333333")
    return c.fig


# ----------------------------------------------------------------------------- rank selection
def rank_selection(ranks: np.ndarray, errors: np.ndarray, similarity: np.ndarray | None,
                   mean_similarity: np.ndarray | None, gain: np.ndarray | None,
                   eligible: np.ndarray | None, chosen: int, rule: str) -> Figure:
    """Relative error, restart similarity and explained-variance gain against the rank, with
    the chosen rank marked; filled markers: ranks the rule found eligible."""
    panels = [p for p in ("error", "similarity", "gain")
              if p == "error" or (p == "similarity" and (similarity is not None or mean_similarity is not None))
              or (p == "gain" and gain is not None)]
    w = 3.1
    c = Canvas(0.3 + len(panels) * (w + 0.45), 2.55)
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
            ax.legend(frameon=False, loc="upper right", handletextpad=0.2)
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
            ax.set_ylabel("explained gain per component")
            ax.set_title("Worth of the last component", fontsize=FONT + 0.5)
        ax.axvline(chosen, color=ACCENT, lw=1.1, ls="--", zorder=1)
        ax.text(chosen, 1.0, f" chosen: {chosen}", color=ACCENT, transform=ax.get_xaxis_transform(),
                ha="left", va="top", fontsize=FONT - 1)
        ax.set_xticks(ranks)
        ax.set_xlabel("rank")
    c.text(0.1, 2.45, f"rule: {rule}", fontsize=FONT - 1, color="#333333", va="bottom")
    return c.fig


# ----------------------------------------------------------------------------- atlas
def atlas_heatmap(row_labels: list[str], relative: np.ndarray, active: np.ndarray,
                  component_labels: list[str]) -> Figure:
    """Epoch rows × components: mean temporal loading over the epoch relative to the
    component's largest epoch mean; a dot marks the cells counted active."""
    n_rows, n_comp = relative.shape
    cell = min(0.42, max(0.2, 7.5 / max(n_comp, 1)))
    row_h = min(0.32, max(0.16, 6.0 / max(n_rows, 1)))
    left = 0.3 + 0.062 * max((len(s) for s in row_labels), default=4)
    c = Canvas(left + n_comp * cell + 1.1, 0.75 + n_rows * row_h + 0.2)
    ax = c.axes(left, 0.55, n_comp * cell, n_rows * row_h)
    im = ax.imshow(np.nan_to_num(relative, nan=0.0), aspect="auto", cmap=HEATMAP, vmin=0, vmax=1)
    rr, cc = np.nonzero(active)
    ax.scatter(cc, rr, s=14, facecolor="white", edgecolor="#222222", lw=0.6, zorder=3)
    ax.set_yticks(range(n_rows), row_labels)
    ax.set_xticks(range(n_comp), component_labels, fontsize=FONT - 1.5 if n_comp > 12 else FONT - 1)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    cax = c.axes(left + n_comp * cell + 0.15, 0.55, 0.1, min(1.6, n_rows * row_h))
    c.fig.colorbar(im, cax=cax).set_label("loading / peak epoch", fontsize=FONT - 1.5)
    c.text(left, 0.08, "● active in the epoch (threshold rule)", fontsize=FONT - 1.5, color="#333333")
    return c.fig


# ----------------------------------------------------------------------------- neuron view
def neuron_view(colours: np.ndarray, neuron_labels: list[str], slot_labels: list[str],
                groups: list[tuple[str, int, int]], hidden: int = 0) -> Figure:
    """Neurons × (epoch row, active component) slots coloured by the community the neuron
    joins there. ``colours`` is (N, S, 3) RGB; ``groups`` ``[(epoch label, first slot,
    stop slot)]``; ``hidden`` neurons (in no cohesive community anywhere) are not drawn."""
    n, s = colours.shape[:2]
    slot_w = min(0.55, max(0.1, 8.0 / max(s, 1)))
    row_h = min(0.14, max(0.012, 8.0 / max(n, 1)))
    left = 0.8 if n <= MAX_LABELS * 2 else 0.35
    rotate = any(len(g[0]) * 0.058 > (g[2] - g[1]) * slot_w for g in groups)
    head = 1.25 if rotate else 0.7
    c = Canvas(max(4.2, left + s * slot_w + 0.5), head + n * row_h + 1.0)
    ax = c.axes(left, head, s * slot_w, n * row_h)
    ax.imshow(colours if s and n else np.ones((max(n, 1), max(s, 1), 3)), aspect="auto", interpolation="nearest")
    ax.hlines(np.arange(n - 1) + 0.5, -0.5, s - 0.5, color="white", lw=0.3 if n <= MAX_LABELS * 2 else 0)
    if len(groups) > 1:
        ax.vlines([first - 0.5 for _, first, _ in groups[1:]], -0.5, n - 0.5, color="#222222", lw=1.2)
    ax.set_yticks([])
    if n <= MAX_LABELS * 2:
        label_rows(ax, range(n), neuron_labels, max(4.0, min(FONT - 2, 72 * row_h * 0.85)))
    ax.set_xticks([])
    for j, lab in enumerate(slot_labels):
        ax.text(j, 1.005, lab, transform=ax.get_xaxis_transform(), ha="center", va="bottom",
                fontsize=FONT - 2.5 if s > 20 else FONT - 1.5, rotation=90 if s > 20 else 0)
    for label, first, stop in groups:
        x = (first + stop - 1) / 2
        ax.text(x, 1.0 + 0.25 / max(n * row_h, 0.1), label, transform=ax.get_xaxis_transform(),
                ha="left" if rotate else "center", va="bottom", fontsize=FONT - 1, rotation=40 if rotate else 0,
                rotation_mode="anchor")
    for side in ax.spines.values():
        side.set_visible(False)
    y = head + n * row_h + 0.15
    legend = ((COMMUNITY_COLOURS[0], "cohesive community (its colour)"), (DIFFUSE, "diffuse community"),
              (ABSENT, "not in the component"))
    for k, (colour, text) in enumerate(legend):
        y0 = y + k * 0.19
        c.fig.patches.append(Rectangle((left / c.width, 1 - (y0 + 0.13) / c.height), 0.13 / c.width, 0.13 / c.height,
                                       transform=c.fig.transFigure, facecolor=colour, edgecolor="#555555", lw=0.5))
        c.text(left + 0.19, y0 - 0.005, text, fontsize=FONT - 1.5)
    if hidden:
        c.text(left, y + 0.6, f"{hidden} neurons in no cohesive community of an active component: not shown",
               fontsize=FONT - 2, color=MUTED)
    return c.fig


# ----------------------------------------------------------------------------- components
def _loading_axes(ax, track: dict, epochs: list[dict], threshold_level: float, span: float,
                  show_epoch_labels: bool, bin_seconds: float) -> None:
    """A temporal loading: epochs shaded, threshold dashed, active bins as a rug at the bottom."""
    t, v = track["time"], track["loading"]
    shade_epochs(ax, epochs, label=show_epoch_labels)
    ax.plot(t, v, color=LINE, lw=1.2, zorder=3)
    top = float(v.max()) if v.size else 0.0
    ax.set_xlim(0, span)
    ax.set_ylim(0, max(top, threshold_level, 1e-12) * 1.08)
    if threshold_level > 0:
        ax.axhline(threshold_level, color=ACCENT, lw=0.8, ls="--", zorder=2)
        half = bin_seconds / 2
        quads = [[(x - half, 0), (x + half, 0), (x + half, 0.045), (x - half, 0.045)] for x in t[v >= threshold_level]]
        if quads:
            ax.add_collection(PolyCollection(quads, facecolors=ACCENT, alpha=0.75, lw=0,
                                             transform=ax.get_xaxis_transform(), zorder=4))


def component_figure(*, title: str, subtitle: str = "", tracks: list[dict], epochs: list[dict], threshold_level: float,
                     bin_seconds: float, bars: dict, matrix: dict, network: dict) -> Figure:
    """One component on one page: temporal loading(s) with epochs shaded, the activity
    threshold (dashed) and the active bins (rug); behaviour covariates beneath; the animal
    loadings; the neuron × neuron matrix ordered by community; the network of the strongest
    edges.

    ``tracks``: ``[{"label", "time", "loading", "duration", "cov_time", "covariates":
    [(name, (T', k))]}]`` (one track for the aligned layout, one per animal for the
    concatenated one). ``bars``: ``{"labels", "values", "ylabel"}``. ``matrix``: ``{"w" (n, n)
    ordered, "labels", "colours" (n hex), "named" (n bool), "groups": [(first, stop, text)]}``.
    ``network``: ``{"n" nodes, "edges" (E, 2), "weights" (E,), "colours", "sizes",
    "labels", "named"}``; node positions come from :func:`network_layout`.
    """
    width = 10.0
    multi = len(tracks) > 1
    load_h = 0.72 if multi else 1.45
    cov_h = 0.42
    block = sum(load_h + 0.08 + cov_h * len(tr["covariates"]) + 0.2 for tr in tracks)
    bottom_h = 3.3
    c = Canvas(width, 0.55 + block + 0.5 + bottom_h + 0.3)
    c.text(0.1, 0.08, title, fontsize=FONT + 2, weight="bold")
    if subtitle:
        c.text(0.1 + 0.105 * len(title) + 0.15, 0.1, subtitle, fontsize=FONT, color="#333333")
    handles = [Line2D([], [], color=ACCENT, lw=0.8, ls="--"), Rectangle((0, 0), 1, 1, color=ACCENT, alpha=0.75)]
    c.fig.legend(handles, ["activity threshold", "active bins"], loc="upper right", frameon=False, ncols=2,
                 bbox_to_anchor=(1 - 0.2 / width, 1 - 0.02 / c.height), fontsize=FONT - 1.5, handlelength=1.4)
    span = max(tr["duration"] for tr in tracks) if tracks else 1.0
    top = 0.55
    left, right = 1.05, 0.2
    axw = width - left - right
    ax = None
    for k, tr in enumerate(tracks):
        ax = c.axes(left, top, axw, load_h)
        _loading_axes(ax, tr, epochs, threshold_level, span, show_epoch_labels=(k == 0), bin_seconds=bin_seconds)
        ax.set_ylabel((f"{tr['label']}\n" if multi else "") + "temporal\nloading", fontsize=FONT - 1)
        ax.locator_params(axis="y", nbins=3 if multi else 4)
        if tr["covariates"] or k < len(tracks) - 1:
            ax.set_xticklabels([])
        top += load_h + 0.08
        for j, (name, values) in enumerate(tr["covariates"]):
            ax = c.axes(left, top, axw, cov_h - 0.08)
            shade_epochs(ax, epochs, label=False)
            many = values.shape[1] > 1
            ax.plot(tr["cov_time"], values, lw=0.7, color=MUTED if many else "#333333", alpha=0.6 if many else 1)
            if many:
                ax.plot(tr["cov_time"], np.nanmean(values, axis=1), lw=1.1, color="#222222")
            ax.set_xlim(0, span)
            ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=FONT - 1.5)
            ax.tick_params(axis="y", labelsize=FONT - 3)
            ax.locator_params(axis="y", nbins=2)
            if not (k == len(tracks) - 1 and j == len(tr["covariates"]) - 1):
                ax.set_xticklabels([])
            top += cov_h
        top += 0.2
    if ax is not None:
        ax.set_xlabel("time (s)" + (" on each animal's own clock" if multi else ""), labelpad=1)
    top += 0.5

    # in whom
    bw = 0.25 + 0.32 * min(max(len(bars["values"]), 2), 8)
    ax = c.axes(0.6, top + 0.25, bw, bottom_h - 0.95)
    n_bars = len(bars["values"])
    ax.bar(range(n_bars), bars["values"], color=ANIMAL_BARS, width=0.7)
    ax.set_xticks(range(n_bars), bars["labels"], rotation=90 if n_bars > 4 else 0,
                  fontsize=FONT - 1.5 if n_bars > 6 else FONT - 1)
    ax.set_ylabel(bars["ylabel"], fontsize=FONT - 1)
    ax.set_title("In whom", fontsize=FONT)
    ax.set_ylim(0, max(1e-12, float(np.max(bars["values"])) * 1.1) if n_bars else 1)
    ax.locator_params(axis="y", nbins=4)

    # which pairs: the matrix ordered by community
    side = bottom_h - 0.25
    mx_left = 0.6 + bw + 0.95
    _draw_matrix(c, c.axes(mx_left, top + 0.25, side, side), matrix, cbar=(mx_left + side + 0.08, top + 0.25, side))

    # the network of the strongest edges
    nx_left = mx_left + side + 0.75
    ax = c.axes(nx_left, top + 0.25, width - nx_left - 0.1, side)
    _draw_network(ax, network)
    ax.set_title("Strongest edges", fontsize=FONT)
    return c.fig


def _draw_matrix(c: Canvas, ax, m: dict, cbar: tuple[float, float, float]) -> None:
    w, colours = m["w"], m["colours"]
    n = w.shape[0]
    ax.set_title("Pairs, grouped by community", fontsize=FONT, pad=8)
    for s_ in ax.spines.values():
        s_.set_visible(False)
    ax.set_xticks([])
    ax.set_yticks([])
    if not n:
        return
    vmax = float(np.percentile(w[w > 0], 99)) if (w > 0).any() else 1.0
    im = ax.imshow(w, cmap=HEATMAP, vmin=0, vmax=vmax, interpolation="nearest", zorder=1)
    bar = max(1.0, n * 0.035)
    rgb = np.array([to_rgb(col) for col in colours])
    ax.imshow(rgb[:, None, :], extent=(n - 0.5 + 0.2 * bar, n - 0.5 + 1.2 * bar, n - 0.5, -0.5), aspect="auto")
    ax.imshow(rgb[None, :, :], extent=(-0.5, n - 0.5, -0.5 - 0.2 * bar, -0.5 - 1.2 * bar), aspect="auto")
    ax.set_xlim(-0.5, n - 0.5 + 1.2 * bar)
    ax.set_ylim(n - 0.5, -0.5 - 1.2 * bar)
    bounds = [first - 0.5 for first, _, _ in m["groups"][1:]]
    if bounds:
        ax.hlines(bounds, -0.5, n - 0.5, color="white", lw=0.7, zorder=2)
        ax.vlines(bounds, -0.5, n - 0.5, color="white", lw=0.7, zorder=2)
    named = np.flatnonzero(m["named"])
    if 0 < named.size <= MAX_LABELS:
        size = max(4.0, min(FONT - 2, 0.95 * 72 * (c.axes_height(ax) / max(n, 1))))
        label_rows(ax, named, [m["labels"][i] for i in named], size)
    for first, stop, text in m["groups"]:
        if text:
            ax.text(-0.01, (first + stop - 1) / 2, text, transform=ax.get_yaxis_transform(), ha="right",
                    va="center", fontsize=FONT - 2.5, color=MUTED, rotation=90, clip_on=False)
    left, top, side = cbar
    cax = c.axes(left + 0.2, top + side * 0.5, 0.08, side * 0.5)
    cb = c.fig.colorbar(im, cax=cax)
    cb.ax.tick_params(labelsize=FONT - 3)
    cb.locator = MaxNLocator(3)
    cb.update_ticks()
    cax.set_ylabel("pair loading", fontsize=FONT - 2.5)


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
            ax.text(xy[i, 0], xy[i, 1], "  " + net["labels"][i], fontsize=FONT - 3, ha="left", va="center",
                    zorder=3, color="#111111")
    if net.get("hidden"):
        ax.text(0.0, 0.0, f"+{net['hidden']} diffuse neurons without strong edges (not drawn)",
                transform=ax.transAxes, fontsize=FONT - 2.5, color=MUTED, va="top")
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    size = max(float((hi - lo).max()), 1e-9)
    mid = (lo + hi) / 2
    ax.set_xlim(mid[0] - 0.56 * size, mid[0] + 0.62 * size)
    ax.set_ylim(mid[1] - 0.56 * size, mid[1] + 0.56 * size)

"""Figures of the report (matplotlib, no display needed).

Every function takes arrays and returns a :class:`matplotlib.figure.Figure`. Colours are
colour-blind safe: communities use the Okabe–Ito palette (community k always gets
``COMMUNITY_COLOURS[k]``), heatmaps use ``cividis``.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

# Okabe & Ito (2008), without black (used for edges and text)
COMMUNITY_COLOURS = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00",
                     "#CC79A7", "#999999"]
EPOCH_SHADES = ["#000000", "#0072B2"]

plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "axes.spines.top": False,
                     "axes.spines.right": False, "svg.fonttype": "none"})


def community_colour(k: int) -> str:
    return COMMUNITY_COLOURS[k % len(COMMUNITY_COLOURS)]


def shade_epochs(ax, epochs: list[dict]) -> None:
    """Shade stimulus epochs (alternating light tones) and label them on top."""
    for k, e in enumerate(epochs):
        ax.axvspan(e["start_s"], e["stop_s"], color=EPOCH_SHADES[k % 2], alpha=0.07, lw=0)
        ax.text((e["start_s"] + e["stop_s"]) / 2, 1.0, e["label"], transform=ax.get_xaxis_transform(),
                ha="center", va="bottom", fontsize=7, clip_on=False)


def traces_overview(traces: np.ndarray, time_s: np.ndarray, neurons: list[str], animals: list[str],
                    epochs: list[dict]) -> Figure:
    """Heatmaps of every animal's normalised traces (A, N, F), neurons in one order,
    absent neurons blank, epochs marked."""
    n_animals = traces.shape[0]
    fig, axes = plt.subplots(n_animals, 1, figsize=(9, 1.0 + 1.6 * n_animals), sharex=True, squeeze=False)
    finite = traces[np.isfinite(traces)]
    lo, hi = (np.percentile(finite, [1, 99]) if finite.size else (0, 1))
    for a, ax in enumerate(axes[:, 0]):
        im = ax.imshow(traces[a], aspect="auto", cmap="cividis", vmin=lo, vmax=hi, interpolation="nearest",
                       extent=(time_s[0], time_s[-1], traces.shape[1] - 0.5, -0.5))
        ax.set_ylabel(f"{animals[a]}\nneuron")
        for e in epochs:
            ax.axvline(e["start_s"], color="white", lw=0.6, alpha=0.7)
        if a == 0 and epochs:
            for e in epochs:
                ax.text((e["start_s"] + e["stop_s"]) / 2, 1.02, e["label"], transform=ax.get_xaxis_transform(),
                        ha="center", va="bottom", fontsize=7)
    axes[-1, 0].set_xlabel("time (s)")
    fig.colorbar(im, ax=axes[:, 0].tolist(), fraction=0.02, pad=0.01, label="normalised trace")
    return fig


def _animal_lines(time_s, time_animal, animals):
    """(label, bin indices, colour) per line: one line, or one per animal (concatenated)."""
    if time_animal is None:
        return [(None, np.arange(time_s.size), "#0072B2")]
    return [(name, np.flatnonzero(time_animal == a), community_colour(a)) for a, name in enumerate(animals)]


def temporal_loading(time_s: np.ndarray, loading: np.ndarray, epochs: list[dict], threshold: float,
                     title: str, *, time_animal: np.ndarray | None = None, animals: list[str] | None = None,
                     covariates: tuple[list[str], np.ndarray] | None = None) -> Figure:
    """The loading (T,) over time. ``time_animal`` (T,) (concatenated layout): one line per
    animal on its own clock. ``covariates`` = (names, values (C, T, A), or (C, T, 1) with
    ``time_animal``): one panel per covariate underneath, one line per animal."""
    cov_names, cov_values = covariates if covariates is not None else ([], None)
    shown = [c for c in range(len(cov_names)) if np.isfinite(cov_values[c]).any()]
    fig, axes = plt.subplots(1 + len(shown), 1, figsize=(8, 2.2 + 0.9 * len(shown)), sharex=True,
                             squeeze=False, gridspec_kw={"height_ratios": [2.2] + [0.9] * len(shown)})
    ax = axes[0, 0]
    shade_epochs(ax, epochs)
    lines = _animal_lines(time_s, time_animal, animals)
    for label, idx, colour in lines:
        ax.plot(time_s[idx], loading[idx], color=colour, lw=1.4, label=label)
    if loading.max() > 0:
        ax.axhline(threshold * loading.max(), color="#D55E00", lw=0.8, ls="--", label="active threshold")
        ax.legend(loc="upper right", fontsize=7, frameon=False)
    ax.set_ylabel("temporal loading")
    ax.set_title(title, loc="left", pad=14)
    for k, c in enumerate(shown):
        cax = axes[k + 1, 0]
        if time_animal is None:
            for a in range(cov_values.shape[2]):
                cax.plot(time_s, cov_values[c, :, a], lw=0.9, color=community_colour(a))
        else:
            for _, idx, colour in lines:
                cax.plot(time_s[idx], cov_values[c, idx, 0], lw=0.9, color=colour)
        cax.set_ylabel(cov_names[c], fontsize=7)
    axes[-1, 0].set_xlabel("time (s)" if time_animal is None else "time on each animal's clock (s)")
    fig.tight_layout()
    return fig


def animal_loading(animals: list[str], loading: np.ndarray, title: str) -> Figure:
    fig, ax = plt.subplots(figsize=(max(2.5, 0.45 * len(animals) + 1), 2.2))
    ax.bar(range(len(animals)), loading, color="#009E73")
    ax.set_xticks(range(len(animals)), animals, rotation=45, ha="right")
    ax.set_ylabel("animal loading")
    ax.set_title(title, loc="left")
    fig.tight_layout()
    return fig


def community_order(membership: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Neurons of the component grouped by community (then by strength); excluded last out."""
    inside = np.flatnonzero(membership >= 0)
    strength = w.sum(axis=1)
    return inside[np.lexsort((-strength[inside], membership[inside]))]


def community_matrix(w: np.ndarray, membership: np.ndarray, neurons: list[str], title: str) -> Figure:
    """The component's neuron × neuron matrix restricted to its graph, ordered by community,
    with community boundaries and colour bars."""
    order = community_order(membership, w)
    sub = w[np.ix_(order, order)]
    size = min(7.0, 2.5 + 0.06 * order.size)
    fig, ax = plt.subplots(figsize=(size + 1.0, size))
    im = ax.imshow(sub, cmap="cividis", interpolation="nearest")
    labels = membership[order]
    bounds = np.flatnonzero(np.diff(labels)) + 0.5
    for b in bounds:
        ax.axhline(b, color="white", lw=0.8)
        ax.axvline(b, color="white", lw=0.8)
    for k in np.unique(labels):
        idx = np.flatnonzero(labels == k)
        ax.add_patch(plt.Rectangle((-2.5, idx[0] - 0.5), 1.5, idx.size, color=community_colour(int(k)),
                                   clip_on=False))
    if order.size <= 60:
        ax.set_yticks(range(order.size), [neurons[i] for i in order], fontsize=6)
        ax.set_xticks(range(order.size), [neurons[i] for i in order], fontsize=6, rotation=90)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_xlim(-2.5, order.size - 0.5)
    ax.set_title(title, loc="left")
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02, label="pair loading")
    return fig

"""The atlas: when each component is active and which components each epoch holds.

Activity rule (documented in docs/method.md): with threshold θ (``report.active_threshold``,
default 0.5), component r is

- *active in a time bin* when its temporal loading there is ≥ θ × its maximum loading;
- *active in an epoch* when its mean loading over the epoch's bins is ≥ θ × the largest
  mean loading it has over any epoch row (stimulus epochs and stretches without one).
  Comparing epoch means with epoch means keeps the rule robust to single-bin peaks.

Pure functions, arrays in and plain Python structures out.
"""

from __future__ import annotations

import numpy as np

NO_STIMULUS = "(no stimulus)"


def active_bins(loading: np.ndarray, threshold: float) -> np.ndarray:
    """Bool (T,): bins where the loading is ≥ threshold × its maximum (none if all zero)."""
    top = float(np.max(loading)) if loading.size else 0.0
    if not top > 0:
        return np.zeros(loading.shape, dtype=bool)
    return loading >= threshold * top


def active_intervals(time_s: np.ndarray, active: np.ndarray, bin_seconds: float) -> list[list[float]]:
    """Runs of consecutive active bins as ``[start_s, stop_s]`` (bin edges, s)."""
    out: list[list[float]] = []
    half = bin_seconds / 2.0
    for k in np.flatnonzero(active):
        start, stop = float(time_s[k] - half), float(time_s[k] + half)
        if out and abs(out[-1][1] - start) < 1e-6 * max(1.0, bin_seconds):
            out[-1][1] = stop
        else:
            out.append([start, stop])
    return out


def epoch_rows(epochs: list[dict], time_s: np.ndarray, bin_seconds: float) -> list[dict]:
    """The atlas rows: each stimulus epoch, plus each stretch of at least one bin not
    covered by any epoch (labelled ``(no stimulus)``), in time order."""
    rows = [dict(e) for e in epochs]
    clock = np.unique(time_s)  # bins of several animals share one clock (concatenated layout)
    if clock.size:
        start, stop = float(clock[0] - bin_seconds / 2), float(clock[-1] + bin_seconds / 2)
        covered = np.zeros(clock.size, dtype=bool)
        for e in epochs:
            covered |= (clock >= e["start_s"]) & (clock < e["stop_s"])
        for a, b in active_intervals(clock, ~covered, bin_seconds):
            rows.append({"label": NO_STIMULUS, "start_s": max(a, start), "stop_s": min(b, stop)})
    return sorted(rows, key=lambda r: (r["start_s"], r["stop_s"]))


def epoch_bins(time_s: np.ndarray, row: dict) -> np.ndarray:
    return (time_s >= row["start_s"]) & (time_s < row["stop_s"])


def epoch_means(loading: np.ndarray, time_s: np.ndarray, rows: list[dict]) -> np.ndarray:
    """Mean loading of one component (T,) over each epoch row (NaN for a row with no bin)."""
    out = np.full(len(rows), np.nan)
    for k, row in enumerate(rows):
        inside = epoch_bins(time_s, row)
        if inside.any():
            out[k] = loading[inside].mean()
    return out


def active_epochs(loading: np.ndarray, time_s: np.ndarray, rows: list[dict], threshold: float) -> np.ndarray:
    """Bool per epoch row: the component's mean loading there is ≥ threshold × its largest
    epoch mean (none when the loading is all zero)."""
    means = epoch_means(loading, time_s, rows)
    top = np.nanmax(means) if np.isfinite(means).any() else 0.0
    if not top > 0:
        return np.zeros(len(rows), dtype=bool)
    return np.nan_to_num(means, nan=-1.0) >= threshold * top


def build_atlas(
    time_s: np.ndarray, factors_time: np.ndarray, epochs: list[dict], bin_seconds: float,
    threshold: float,
) -> list[dict]:
    """One entry per epoch row: ``{"epoch", "start_s", "stop_s", "components": [r, ...]}``
    with the active components ordered by how close the epoch is to their peak epoch."""
    rows = epoch_rows(epochs, time_s, bin_seconds)
    n_comp = factors_time.shape[1]
    means = np.stack([epoch_means(factors_time[:, r], time_s, rows) for r in range(n_comp)]) \
        if n_comp else np.zeros((0, len(rows)))
    active = np.stack([active_epochs(factors_time[:, r], time_s, rows, threshold) for r in range(n_comp)]) \
        if n_comp else np.zeros((0, len(rows)), dtype=bool)
    atlas = []
    for k, row in enumerate(rows):
        comps = [r for r in range(n_comp) if active[r, k]]
        comps.sort(key=lambda r: -float(means[r, k] / np.nanmax(means[r])))
        atlas.append({"epoch": row["label"], "start_s": float(row["start_s"]),
                      "stop_s": float(row["stop_s"]), "components": comps})
    return atlas

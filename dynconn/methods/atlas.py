"""The atlas: when each component is active and which components each epoch holds.

Activity rule (docs/report.md, "The activity threshold"): with threshold θ
(``report.active_threshold``, default 0.5), component r is

- *active in a time bin* when its temporal loading there is ≥ θ × its maximum loading;
- *active in an epoch row* when its mean loading over the row's bins is ≥ θ × the largest
  mean loading it has over any epoch row. Comparing epoch means with epoch means keeps the
  rule robust to single-bin peaks.

Epoch rows are the stimulus epochs plus every stretch of at least one bin that no epoch
covers (``(no stimulus)``). In the ``concatenated`` layout every animal keeps its own clock:
``time_animal`` (T,) says which animal each bin belongs to; a stimulus epoch covers the bins
of every animal whose own time falls in it, and the uncovered stretches are per animal (rows
carry ``animal`` and ``animal_index``).

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


def active_intervals(time_s: np.ndarray, active: np.ndarray, bin_seconds: float,
                     frame_seconds: float = 0.0) -> list[list[float]]:
    """Runs of consecutive active bins as ``[start_s, stop_s]`` (bin edges, s).

    A bin's centre is the mean time of its frames; with ``frame_seconds`` (1 / sampling rate)
    its edges are the time of its first frame and the time just after its last one
    (centre ± bin/2 shifted by half a frame), so a run starting at the first frame starts at 0."""
    out: list[list[float]] = []
    half = bin_seconds / 2.0
    shift = frame_seconds / 2.0
    for k in np.flatnonzero(active):
        start, stop = float(time_s[k] - half + shift), float(time_s[k] + half + shift)
        if out and abs(out[-1][1] - start) < 1e-6 * max(1.0, bin_seconds):
            out[-1][1] = stop
        else:
            out.append([start, stop])
    return out


def animal_segments(time_animal: np.ndarray | None, n_bins: int) -> list[tuple[int | None, np.ndarray]]:
    """``[(animal index or None, bin indices)]``: one segment per animal in the concatenated
    layout (``time_animal`` given), a single segment ``(None, all bins)`` otherwise."""
    if time_animal is None:
        return [(None, np.arange(n_bins))]
    return [(int(a), np.flatnonzero(time_animal == a)) for a in np.unique(time_animal)]


def epoch_rows(epochs: list[dict], time_s: np.ndarray, bin_seconds: float,
               time_animal: np.ndarray | None = None, animals: list[str] | None = None,
               frame_seconds: float = 0.0) -> list[dict]:
    """The atlas rows: each stimulus epoch, plus each stretch of at least one bin not
    covered by any epoch (labelled ``(no stimulus)``; per animal in the concatenated layout),
    in time order (stimulus epochs, then each animal's stretches, when concatenated)."""
    rows = [{"label": e["label"], "start_s": float(e["start_s"]), "stop_s": float(e["stop_s"])}
            for e in epochs]
    spontaneous = []
    for a, idx in animal_segments(time_animal, time_s.size):
        if not idx.size:
            continue
        t = time_s[idx]
        shift = frame_seconds / 2
        start, stop = float(t[0] - bin_seconds / 2 + shift), float(t[-1] + bin_seconds / 2 + shift)
        covered = np.zeros(t.size, dtype=bool)
        for e in epochs:
            covered |= (t >= e["start_s"]) & (t < e["stop_s"])
        for lo, hi in active_intervals(t, ~covered, bin_seconds, frame_seconds):
            row = {"label": NO_STIMULUS, "start_s": max(lo, start), "stop_s": min(hi, stop)}
            if a is not None:
                row["animal_index"] = a
                row["animal"] = animals[a] if animals is not None else str(a)
            spontaneous.append(row)
    if time_animal is None:
        return sorted(rows + spontaneous, key=lambda r: (r["start_s"], r["stop_s"]))
    return sorted(rows, key=lambda r: (r["start_s"], r["stop_s"])) + spontaneous


def epoch_bins(time_s: np.ndarray, row: dict, time_animal: np.ndarray | None = None) -> np.ndarray:
    """Bool (T,): the bins of one epoch row."""
    inside = (time_s >= row["start_s"]) & (time_s < row["stop_s"])
    if time_animal is not None and "animal_index" in row:
        inside &= time_animal == row["animal_index"]
    return inside


def epoch_means(loading: np.ndarray, time_s: np.ndarray, rows: list[dict],
                time_animal: np.ndarray | None = None) -> np.ndarray:
    """Mean loading of one component (T,) over each epoch row (NaN for a row with no bin)."""
    out = np.full(len(rows), np.nan)
    for k, row in enumerate(rows):
        inside = epoch_bins(time_s, row, time_animal)
        if inside.any():
            out[k] = loading[inside].mean()
    return out


def active_from_means(means: np.ndarray, threshold: float) -> np.ndarray:
    """Bool per epoch row from the row means of one component (the epoch rule)."""
    top = np.nanmax(means) if np.isfinite(means).any() else 0.0
    if not top > 0:
        return np.zeros(means.shape, dtype=bool)
    return np.nan_to_num(means, nan=-1.0) >= threshold * top


def active_epochs(loading: np.ndarray, time_s: np.ndarray, rows: list[dict], threshold: float,
                  time_animal: np.ndarray | None = None) -> np.ndarray:
    """Bool per epoch row: the component's mean loading there is ≥ threshold × its largest
    epoch mean (none when the loading is all zero)."""
    return active_from_means(epoch_means(loading, time_s, rows, time_animal), threshold)


def epoch_table(time_s: np.ndarray, factors_time: np.ndarray, rows: list[dict],
                time_animal: np.ndarray | None = None) -> np.ndarray:
    """(rows, R) mean loading of every component over every epoch row."""
    n_comp = factors_time.shape[1]
    if not n_comp:
        return np.zeros((len(rows), 0))
    return np.stack([epoch_means(factors_time[:, r], time_s, rows, time_animal) for r in range(n_comp)],
                    axis=1)


def component_intervals(loading: np.ndarray, time_s: np.ndarray, threshold: float, bin_seconds: float,
                        time_animal: np.ndarray | None = None,
                        frame_seconds: float = 0.0) -> list[tuple[int | None, list[float]]]:
    """Active intervals of one component, ``[(animal index or None, [start_s, stop_s])]``;
    intervals never run across two animals' recordings."""
    active = active_bins(loading, threshold)
    out = []
    for a, idx in animal_segments(time_animal, time_s.size):
        out += [(a, iv) for iv in active_intervals(time_s[idx], active[idx], bin_seconds, frame_seconds)]
    return out


def build_atlas(
    time_s: np.ndarray, factors_time: np.ndarray, epochs: list[dict], bin_seconds: float,
    threshold: float, time_animal: np.ndarray | None = None, animals: list[str] | None = None,
    frame_seconds: float = 0.0,
) -> list[dict]:
    """One entry per epoch row: ``{"epoch", "start_s", "stop_s", "components": [r, ...]}``
    (plus ``"animal"`` for a per-animal stretch) with the active components ordered by how
    close the epoch is to their peak epoch (mean there / largest epoch mean)."""
    rows = epoch_rows(epochs, time_s, bin_seconds, time_animal, animals, frame_seconds)
    means = epoch_table(time_s, factors_time, rows, time_animal)
    n_comp = factors_time.shape[1]
    active = np.stack([active_from_means(means[:, r], threshold) for r in range(n_comp)], axis=1) \
        if n_comp else np.zeros((len(rows), 0), dtype=bool)
    with np.errstate(invalid="ignore", divide="ignore"):
        relative = means / np.where(np.isfinite(means), means, 0.0).max(axis=0, initial=0.0)
    atlas = []
    for k, row in enumerate(rows):
        comps = [r for r in range(n_comp) if active[k, r]]
        comps.sort(key=lambda r: -float(relative[k, r]))
        entry = {"epoch": row["label"], "start_s": float(row["start_s"]), "stop_s": float(row["stop_s"]),
                 "components": comps}
        if "animal" in row:
            entry["animal"] = row["animal"]
        atlas.append(entry)
    return atlas

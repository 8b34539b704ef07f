"""Stage 1, ingest: read each animal's traces, clean, normalise and align them.

Pure core (arrays in, arrays out):

- :func:`interpolate_gaps` fills short NaN gaps of each trace linearly.
- :func:`running_baseline` a running low percentile of each trace (photobleaching).
- :func:`normalize_traces` ΔF/F or robust z-score against that baseline.
- :func:`align_animals` puts every animal on the union of neuron names with a presence mask.

Artifact ``ingest.h5``:

``/traces``    float32 (A, N, F)  normalised traces; NaN where a neuron is absent
``/present``   bool (N, A)        neuron recorded in animal
``/neurons``   utf-8 (N)          union of names, sorted
``/animals``   utf-8 (A)
``/time``      float64 (F)        frame times, s (frame i at i / sampling_rate)
``/stimuli/label`` utf-8 (E), ``/stimuli/start_s``, ``/stimuli/stop_s`` float64 (E)
root attribute ``sampling_rate`` (Hz).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import readers
from .artifacts import file_fingerprint, write_h5
from .config import Config
from .console import Console, warn
from .errors import InputError

NAME = "ingest"
OUTPUT = "ingest.h5"
UPSTREAM: tuple[str, ...] = ()


# ----------------------------------------------------------------------------- pure core
def interpolate_gaps(traces: np.ndarray, max_gap: int) -> tuple[np.ndarray, int]:
    """Linearly interpolate runs of NaN no longer than ``max_gap`` frames.

    Parameters
    ----------
    traces : (N, F) array
    max_gap : longest run of consecutive NaN frames that is filled; longer runs stay NaN.
        Runs at either end are filled with the nearest finite value under the same limit.

    Returns the filled copy and the number of frames filled.
    """
    out = np.array(traces, dtype=np.float64, copy=True)
    filled = 0
    frames = np.arange(out.shape[1])
    for row in out:
        missing = np.isnan(row)
        if not missing.any() or missing.all():
            continue
        # label each NaN run and measure it
        edges = np.diff(np.concatenate(([0], missing.astype(np.int8), [0])))
        starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        fillable = np.zeros_like(missing)
        for a, b in zip(starts, stops):
            if b - a <= max_gap:
                fillable[a:b] = True
        if fillable.any():
            good = ~missing
            row[fillable] = np.interp(frames[fillable], frames[good], row[good])
            filled += int(fillable.sum())
    return out, filled


def running_baseline(traces: np.ndarray, window: int, percentile: float) -> np.ndarray:
    """Running ``percentile`` of each trace over a centred window of ``window`` frames.

    Computed exactly at block centres every ``window // 4`` frames and linearly
    interpolated between them: the baseline varies slowly (bleaching), and this costs
    O(N·F) instead of O(N·F·window). NaN frames are ignored.
    """
    n, f = traces.shape
    window = int(max(1, min(window, f)))
    step = max(1, window // 4)
    centres = np.arange(0, f, step)
    if centres[-1] != f - 1:
        centres = np.append(centres, f - 1)
    half = window // 2
    knots = np.empty((n, centres.size))
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows -> NaN, handled below
            for k, c in enumerate(centres):
                lo, hi = max(0, c - half), min(f, c + half + 1)
                knots[:, k] = np.nanpercentile(traces[:, lo:hi], percentile, axis=1)
    base = np.empty((n, f))
    frames = np.arange(f)
    for i in range(n):
        ok = np.isfinite(knots[i])
        base[i] = np.interp(frames, centres[ok], knots[i, ok]) if ok.any() else np.nan
    return base


def robust_sd(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """1.4826 × median absolute deviation (the SD for Gaussian data), NaN ignored."""
    med = np.nanmedian(x, axis=axis, keepdims=True)
    return 1.4826 * np.nanmedian(np.abs(x - med), axis=axis)


def normalize_traces(
    traces: np.ndarray,
    method: str,
    *,
    window: int,
    percentile: float,
    names: list[str] | None = None,
) -> np.ndarray:
    """Normalise each trace (rows of an (N, F) array) against a running baseline F0.

    ``dff``: (F − F0) / F0, needs F0 > 0. ``zscore``: (F − F0) / robust SD of (F − F0).
    ``none``: unchanged. Both remove slow drift such as photobleaching.
    """
    if method == "none":
        return np.asarray(traces, dtype=np.float64)
    base = running_baseline(traces, window, percentile)
    if method == "dff":
        bad = np.flatnonzero(np.nanmin(np.where(np.isfinite(base), base, np.inf), axis=1) <= 0)
        if bad.size:
            who = names[bad[0]] if names else f"row {bad[0]}"
            raise InputError(
                f"neuron {who}: baseline fluorescence ≤ 0, so ΔF/F is undefined; "
                "set ingest.normalize: zscore for traces that can be negative"
            )
        return (traces - base) / base
    if method == "zscore":
        detrended = traces - base
        sd = robust_sd(detrended, axis=1)
        sd = np.where(sd > 0, sd, 1.0)  # constant neurons stay flat (zero), not NaN
        return detrended / sd[:, None]
    raise ValueError(f"unknown normalisation {method!r}")


def align_animals(
    names: list[list[str]], traces: list[np.ndarray]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Put every animal on the sorted union of neuron names.

    Parameters
    ----------
    names : per animal, the names of its columns (unique within the animal)
    traces : per animal, (N_a, F) arrays with the same F

    Returns ``(neurons, present, aligned)``: neurons (N) sorted names, present bool (N, A),
    aligned float32 (A, N, F) with NaN rows where a neuron is absent.
    """
    neurons = sorted(set().union(*map(set, names)))
    index = {name: i for i, name in enumerate(neurons)}
    n_frames = traces[0].shape[1]
    aligned = np.full((len(traces), len(neurons), n_frames), np.nan, dtype=np.float32)
    present = np.zeros((len(neurons), len(traces)), dtype=bool)
    for a, (animal_names, x) in enumerate(zip(names, traces)):
        rows = [index[n] for n in animal_names]
        aligned[a, rows] = x
        present[rows, a] = True
    return neurons, present, aligned


# ----------------------------------------------------------------------------- stage
@dataclass
class AnimalTraces:
    """One animal after reading and naming: (N_a, F) traces and their names."""

    name: str
    names: list[str]
    traces: np.ndarray
    source: Path


def clean_names(animal: dict, raw: list[str | None], source: Path) -> tuple[list[str], np.ndarray]:
    """Strip names, name or drop unidentified neurons, reject duplicates.

    Returns the kept names and the column indices they came from.
    """
    kept, columns, seen = [], [], {}
    for col, name in enumerate(raw):
        name = (name or "").strip()
        if not name:
            if animal["drop_unlabeled"]:
                continue
            name = f"{animal['name']}#{col}"
        if name in seen:
            raise InputError(
                f"{source}: neuron name {name!r} used twice (columns {seen[name]} and {col})"
            )
        seen[name] = col
        kept.append(name)
        columns.append(col)
    return kept, np.asarray(columns, dtype=int)


def load_animal(config: Config, animal: dict) -> AnimalTraces:
    source = config.resolve(animal["path"])
    names_path = config.resolve(animal["neurons"]) if animal["neurons"] else None
    rec = readers.read_recording(
        source,
        fmt=animal["format"],
        dataset=animal["dataset"],
        time_axis=animal["time_axis"],
        names_path=names_path,
    )
    names, columns = clean_names(animal, rec.names, source)
    if not names:
        raise InputError(f"{source}: no neurons left (all unlabeled and drop_unlabeled is true)")
    traces = rec.traces[:, columns].T  # (N_a, F)
    if traces.shape[1] < 2:
        raise InputError(f"{source}: only {traces.shape[1]} frame(s); need a time series")
    bad = ~np.isfinite(traces) & ~np.isnan(traces)
    if bad.any():
        i = int(np.flatnonzero(bad.any(axis=1))[0])
        raise InputError(f"{source}: neuron {names[i]!r} has infinite values")
    return AnimalTraces(animal["name"], names, traces, source)


def crop_to_common_length(animals: list[AnimalTraces], max_fraction: float) -> int:
    """Crop every animal to the shortest; error if lengths differ by more than max_fraction."""
    lengths = [a.traces.shape[1] for a in animals]
    shortest, longest = min(lengths), max(lengths)
    if longest - shortest > max_fraction * longest:
        short = animals[int(np.argmin(lengths))]
        raise InputError(
            f"{short.source}: {shortest} frames, but another animal has {longest}; lengths differ "
            f"by more than ingest.max_crop_fraction={max_fraction:g} of the protocol"
        )
    if longest != shortest:
        warn(
            f"animals have {shortest}–{longest} frames; all cropped to the shortest ({shortest})"
        )
        for a in animals:
            a.traces = a.traces[:, :shortest]
    return shortest


def load_stimuli(config: Config, duration: float) -> list[dict]:
    spec = config["data"]["stimuli"]
    if spec is None:
        return []
    source = config.resolve(spec) if isinstance(spec, str) else None
    epochs = readers.read_stimuli(source) if source is not None else list(spec)
    where = source or "data.stimuli"
    for e in epochs:
        if e["start_s"] >= duration:
            raise InputError(
                f"{where}: epoch {e['label']!r} starts at {e['start_s']:g} s, after the "
                f"recording ends ({duration:g} s)"
            )
        if e["stop_s"] > duration + 1e-9:
            warn(f"{where}: epoch {e['label']!r} ends after the recording; clipped to {duration:g} s")
            e["stop_s"] = duration
    return epochs


def input_files(config: Config) -> list[Path]:
    """Every file the ingest stage reads (for fingerprints)."""
    files = []
    for animal in config["data"]["animals"]:
        files.append(config.resolve(animal["path"]))
        if animal["neurons"]:
            files.append(config.resolve(animal["neurons"]))
    if isinstance(config["data"]["stimuli"], str):
        files.append(config.resolve(config["data"]["stimuli"]))
    return files


def params(config: Config) -> dict:
    return {"data": config["data"], "ingest": config["ingest"]}


def inputs(config: Config, workdir: Path) -> dict[str, str]:
    out = {}
    for path in input_files(config):
        if not path.exists():
            raise InputError(f"{path}: data file not found")
        out[str(path)] = file_fingerprint(path)
    return out


def run(config: Config, workdir: Path, console: Console, upstream: dict) -> dict:
    """Read, clean, normalise and align every animal; write ``ingest.h5``."""
    p = config["ingest"]
    rate = config["data"]["sampling_rate"]
    animals = []
    with console.progress("reading animals", len(config["data"]["animals"])) as advance:
        for spec in config["data"]["animals"]:
            animals.append(load_animal(config, spec))
            advance()
    n_frames = crop_to_common_length(animals, p["max_crop_fraction"])
    max_gap = int(round(p["max_gap_seconds"] * rate))
    window = int(round(p["baseline_seconds"] * rate))
    for a in animals:
        traces, filled = interpolate_gaps(a.traces, max_gap)
        empty = np.flatnonzero(~np.isfinite(traces).any(axis=1))
        if empty.size:
            raise InputError(
                f"{a.source}: neuron {a.names[empty[0]]!r} has no finite values; "
                "remove it from the file"
            )
        if filled:
            warn(f"{a.name}: {filled} missing frames interpolated (gaps ≤ {p['max_gap_seconds']:g} s)")
        still = int(np.isnan(traces).sum())
        if still:
            warn(f"{a.name}: {still} frames in gaps longer than {p['max_gap_seconds']:g} s left missing")
        constant = [a.names[i] for i in np.flatnonzero(np.nanstd(traces, axis=1) == 0)]
        if constant:
            warn(f"{a.name}: constant trace for {', '.join(constant[:5])}; its affinities will be 0")
        try:
            a.traces = normalize_traces(
                traces, p["normalize"], window=window, percentile=p["baseline_percentile"], names=a.names
            )
        except InputError as exc:
            raise InputError(f"{a.source}: {exc}") from None
    neurons, present, aligned = align_animals([a.names for a in animals], [a.traces for a in animals])
    time = np.arange(n_frames) / rate
    stimuli = load_stimuli(config, n_frames / rate)
    return {
        "traces": aligned,
        "present": present,
        "neurons": np.asarray(neurons, dtype=object),
        "animals": np.asarray([a.name for a in animals], dtype=object),
        "time": time,
        "stimuli/label": np.asarray([e["label"] for e in stimuli], dtype=object),
        "stimuli/start_s": np.asarray([e["start_s"] for e in stimuli], dtype=np.float64),
        "stimuli/stop_s": np.asarray([e["stop_s"] for e in stimuli], dtype=np.float64),
    }, {"sampling_rate": rate}

"""Stage 1, ingest: read each animal's traces, clean, normalise and put them on one grid.

Per animal, in this order (every step documented in docs/method.md §1 and docs/config.md):

1. read the file (:mod:`dynconn.io.readers`), normalise neuron names (:func:`normalize_name`),
   drop excluded neurons (:func:`excluded`), reject names used twice;
2. at the animal's own rate: fill short NaN gaps (:func:`interpolate_gaps`), detrend /
   correct bleaching (:func:`detrend_traces`), normalise (:func:`normalize_traces`), smooth
   (:func:`smooth_traces`) — all in :func:`clean_traces`, in blocks of rows so temporaries
   stay small;
3. average left/right homologs when asked (:func:`bilateral_map`, :func:`merge_rows`);
4. put the traces on the output time grid: the animal's ``offset_s``, the window
   ``start_s``/``stop_s`` and resampling to ``data.resample`` (:func:`to_grid`);
5. stack the animals on the sorted union of names (:func:`stack_animals`): ``aligned``
   crops them to one length, ``concatenated`` keeps each animal's own length (NaN-padded).

Artifact ``ingest.h5``:

``/traces``    float32 (A, N, F)  normalised traces; NaN where a neuron is absent or after
                                  an animal's last frame (concatenated layout)
``/present``   bool (N, A)        neuron recorded in animal
``/neurons``   utf-8 (N)          union of names, sorted
``/animals``   utf-8 (A)
``/n_frames``  int64 (A)          frames of each animal (all equal when aligned)
``/time``      float64 (F)        frame times, s: ``start_s + arange(F) / sampling_rate`` (on
                                  every animal's own clock when concatenated)
``/rates``     float64 (A)        each animal's recorded rate, Hz (before resampling)
``/covariates/names`` utf-8 (C), ``/covariates/values`` float64 (A, C, F), NaN where an
                                  animal lacks a covariate (absent when none are given)
``/stimuli/label`` utf-8 (E), ``/stimuli/start_s``, ``/stimuli/stop_s`` float64 (E)
root attributes ``sampling_rate`` (Hz, of the grid), ``layout``, ``start_s``.
"""

from __future__ import annotations

import fnmatch
import re
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..io import readers
from ..io.artifacts import file_fingerprint
from ..config import Config
from ..console import Console, plural, warn
from ..errors import ConfigError, InputError

NAME = "ingest"
OUTPUT = "ingest.h5"
UPSTREAM: tuple[str, ...] = ()

#: Rows processed at once by :func:`clean_traces` (bounds its float64 temporaries).
ROW_BLOCK = 64
#: Rates closer than this (relative) count as the same rate.
RATE_TOLERANCE = 1e-3


# ----------------------------------------------------------------------------- pure core: traces
def interpolate_gaps(traces: np.ndarray, max_gap: int) -> tuple[np.ndarray, int]:
    """Linearly interpolate runs of NaN no longer than ``max_gap`` frames.

    Parameters
    ----------
    traces : (N, F) array
    max_gap : longest run of consecutive NaN frames that is filled; longer runs stay NaN.
        Runs at either end are filled with the nearest finite value under the same limit.

    Returns the filled copy (float64) and the number of frames filled.
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


def _who(names: list[str] | None, i: int) -> str:
    return names[i] if names else f"row {i}"


def detrend_traces(
    traces: np.ndarray,
    method: str,
    *,
    window: int,
    percentile: float,
    names: list[str] | None = None,
) -> np.ndarray:
    """Remove slow trends from each row of an (N, F) array (F frames, NaN ignored).

    ``linear``: subtract the least-squares line's slope part, ``x − b·(t − t̄)``, so the
    mean level is kept (ΔF/F stays possible). ``exponential`` (photobleaching of raw
    fluorescence): fit ``F0(t) ≈ a·exp(−k·t)`` to the running ``percentile`` baseline F0
    (window ``window`` frames) by least squares on log F0, and divide by the fitted curve
    normalised to 1 at the middle frame, ``x · exp(k·(t − t̄))``; needs F0 > 0.
    ``none``: unchanged. Returns float64.
    """
    x = np.asarray(traces, dtype=np.float64)
    if method == "none":
        return x
    n, f = x.shape
    t = np.arange(f, dtype=np.float64)
    if method == "linear":
        ok = np.isfinite(x)
        count = ok.sum(axis=1)
        tm = np.where(ok, t, 0.0).sum(axis=1) / np.maximum(count, 1)
        dt = np.where(ok, t[None, :] - tm[:, None], 0.0)
        xm = np.where(ok, x, 0.0).sum(axis=1) / np.maximum(count, 1)
        slope = (dt * np.where(ok, x - xm[:, None], 0.0)).sum(axis=1) / np.maximum((dt * dt).sum(axis=1), 1e-300)
        return x - slope[:, None] * (t[None, :] - tm[:, None])
    if method == "exponential":
        base = running_baseline(x, window, percentile)
        low = np.nanmin(np.where(np.isfinite(base), base, np.inf), axis=1)
        bad = np.flatnonzero(~(low > 0))
        if bad.size:
            raise InputError(
                f"neuron {_who(names, int(bad[0]))}: baseline fluorescence ≤ 0, so an exponential "
                "bleaching curve cannot be fitted; use ingest.detrend: linear"
            )
        logb = np.log(base)
        tc = t - t.mean()
        k = -(logb * tc).sum(axis=1) / (tc * tc).sum()  # decay rate per frame
        return x * np.exp(k[:, None] * tc[None, :])
    raise ValueError(f"unknown detrend method {method!r}")


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
            raise InputError(
                f"neuron {_who(names, int(bad[0]))}: baseline fluorescence ≤ 0, so ΔF/F is undefined; "
                "set ingest.normalize: zscore for traces that can be negative"
            )
        return (traces - base) / base
    if method == "zscore":
        detrended = traces - base
        sd = robust_sd(detrended, axis=1)
        sd = np.where(sd > 0, sd, 1.0)  # constant neurons stay flat (zero), not NaN
        return detrended / sd[:, None]
    raise ValueError(f"unknown normalisation {method!r}")


def smooth_traces(traces: np.ndarray, sigma_frames: float) -> np.ndarray:
    """Gaussian smoothing (SD ``sigma_frames``) of each row of (N, F), ignoring NaN.

    Normalised convolution: the smoothed values divided by the smoothed indicator of finite
    frames, so NaN frames neither spread nor pull the neighbours toward zero, and edges are
    not biased. Missing frames stay missing. ``sigma_frames`` ≤ 0 returns the input.
    """
    x = np.asarray(traces, dtype=np.float64)
    if sigma_frames <= 0:
        return x
    ok = np.isfinite(x)
    from scipy.ndimage import gaussian_filter1d  # heavy: imported where used (fast start-up)

    num = gaussian_filter1d(np.where(ok, x, 0.0), sigma_frames, axis=1, mode="constant")
    den = gaussian_filter1d(ok.astype(np.float64), sigma_frames, axis=1, mode="constant")
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den
    out[~ok] = np.nan
    return out


@dataclass
class CleanReport:
    """What :func:`clean_traces` did, for the stage's warnings."""

    filled: int = 0  # frames interpolated
    still_missing: int = 0  # frames in gaps longer than the limit
    constant: list[str] = field(default_factory=list)  # neurons with a constant trace


def clean_traces(
    traces: np.ndarray,
    *,
    rate: float,
    max_gap_seconds: float,
    detrend: str,
    normalize: str,
    baseline_seconds: float,
    baseline_percentile: float,
    smooth_seconds: float,
    names: list[str],
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, CleanReport]:
    """Gap filling, detrending, normalisation and smoothing of one animal's (N, F) traces.

    ``traces`` is (neurons, frames) at ``rate`` Hz; durations are in seconds. Rows are
    processed in blocks of :data:`ROW_BLOCK`, so besides the float32 output only a few
    (ROW_BLOCK, F) float64 temporaries exist. Raises InputError naming the neuron when a
    trace has no finite value or cannot be normalised. Returns float32 (N, F).
    """
    n, f = traces.shape
    if out is None:
        out = np.empty((n, f), dtype=np.float32)
    report = CleanReport()
    max_gap = int(round(max_gap_seconds * rate))
    window = int(round(baseline_seconds * rate))
    for lo in range(0, n, ROW_BLOCK):
        hi = min(n, lo + ROW_BLOCK)
        block_names = names[lo:hi]
        x, filled = interpolate_gaps(traces[lo:hi], max_gap)
        report.filled += filled
        empty = np.flatnonzero(~np.isfinite(x).any(axis=1))
        if empty.size:
            raise InputError(f"neuron {block_names[empty[0]]!r} has no finite values; remove it from the file")
        report.still_missing += int(np.isnan(x).sum())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            spread = np.nanstd(x, axis=1)
        report.constant += [block_names[i] for i in np.flatnonzero(spread == 0)]
        x = detrend_traces(x, detrend, window=window, percentile=baseline_percentile, names=block_names)
        x = normalize_traces(x, normalize, window=window, percentile=baseline_percentile, names=block_names)
        x = smooth_traces(x, smooth_seconds * rate)
        out[lo:hi] = x
    return out, report


# ----------------------------------------------------------------------------- pure core: names
def normalize_name(name: str, case: str = "upper") -> str:
    """Remove all whitespace; with ``case="upper"`` upper-case (`` aval `` → ``AVAL``)."""
    name = re.sub(r"\s+", "", name)
    return name.upper() if case == "upper" else name


def excluded(names: list[str], patterns: list[str], case: str = "upper") -> np.ndarray:
    """Bool per name: matches one of ``patterns`` (exact names or shell globs ``* ? [LR]``),
    both sides normalised by :func:`normalize_name`."""
    pats = [normalize_name(p, case) for p in patterns]
    return np.asarray([any(fnmatch.fnmatchcase(normalize_name(n, case), p) for p in pats)
                       for n in names], dtype=bool)


def bilateral_map(all_names: set[str] | list[str]) -> dict[str, str]:
    """Left/right homologs to merge: ``{name: merged name}``.

    Rule: a name of at least 3 characters ending in ``L`` or ``R`` is a homolog when the
    same stem with the other letter also occurs among ``all_names`` (every animal's names
    together); both map to the stem (AVAL, AVAR → AVA; SMDDL, SMDDR → SMDD; IL2L, IL2R →
    IL2). Singletons whose name happens to end in L or R (AVL, PVR, RIR) have no partner
    and stay; so do D/V pairs (RMED, RMEV). Unidentified neurons (``#`` in the name) never
    merge.
    """
    names = set(all_names)
    mapping = {}
    for n in names:
        if len(n) >= 3 and n[-1] in "LR" and "#" not in n:
            partner = n[:-1] + ("R" if n[-1] == "L" else "L")
            if partner in names:
                mapping[n] = n[:-1]
    return mapping


def merge_rows(names: list[str], traces: np.ndarray, mapping: dict[str, str]) -> tuple[list[str], np.ndarray]:
    """Rename rows by ``mapping`` and average (NaN-aware, per frame) rows that then share a
    name. ``traces`` (N, F); returns the new names and (N', F) float32, first-seen order."""
    merged = [mapping.get(n, n) for n in names]
    if len(set(merged)) == len(merged):
        return merged, traces
    order = list(dict.fromkeys(merged))
    out = np.empty((len(order), traces.shape[1]), dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # frames missing in every member stay NaN
        for k, name in enumerate(order):
            rows = [i for i, m in enumerate(merged) if m == name]
            out[k] = traces[rows[0]] if len(rows) == 1 else np.nanmean(traces[rows], axis=0)
    return order, out


# ----------------------------------------------------------------------------- pure core: time grid
def grid_length(
    n_frames: int, rate: float, target_rate: float, *, offset_s: float = 0.0, start_s: float = 0.0,
    stop_s: float | None = None,
) -> int:
    """Frames of the output grid ``start_s + k / target_rate`` that fall at or before the
    animal's last frame (protocol time ``offset_s + (n_frames − 1) / rate``) and before
    ``stop_s``."""
    last = offset_s + (n_frames - 1) / rate
    n = int(np.floor((last - start_s) * target_rate + 1e-6)) + 1
    if stop_s is not None:
        n = min(n, int(np.ceil((stop_s - start_s) * target_rate - 1e-6)))
    return max(n, 0)


def to_grid(
    traces: np.ndarray, rate: float, target_rate: float, n_out: int, *, offset_s: float = 0.0,
    start_s: float = 0.0,
) -> np.ndarray:
    """Resample (N, F) traces recorded at ``rate`` Hz, frame i at protocol time
    ``offset_s + i / rate``, onto ``n_out`` frames at ``start_s + k / target_rate``.

    Same rate and a whole-frame shift: frames are copied (exact). Otherwise each output
    frame is linearly interpolated between its two neighbours; when downsampling, the
    traces are first low-pass filtered (NaN-aware Gaussian, SD half an output frame; gain
    0.29 at the new Nyquist frequency) so that faster fluctuations do not alias. Output
    frames before the first or after the last recorded frame are NaN. Returns float32.
    """
    x = np.asarray(traces)
    n, f = x.shape
    position = (start_s - offset_s) * rate  # source frame of output frame 0
    step = rate / target_rate  # source frames per output frame
    out = np.full((n, n_out), np.nan, dtype=np.float32)
    if abs(step - 1.0) < 1e-9 and abs(position - round(position)) < 1e-6:
        shift = int(round(position))
        k0, k1 = max(0, -shift), min(n_out, f - shift)
        if k1 > k0:
            out[:, k0:k1] = x[:, k0 + shift : k1 + shift]
        return out
    if step > 1.0:
        x = smooth_traces(x, 0.5 * step)
    u = position + step * np.arange(n_out)
    inside = (u >= -1e-9) & (u <= f - 1 + 1e-9)
    u = np.clip(u, 0, f - 1)
    i0 = np.minimum(np.floor(u).astype(np.int64), max(f - 2, 0))
    w = (u - i0).astype(np.float64)
    i1 = np.minimum(i0 + 1, f - 1)
    for lo in range(0, n, ROW_BLOCK):
        block = np.asarray(x[lo : lo + ROW_BLOCK], dtype=np.float64)
        values = block[:, i0] * (1.0 - w) + block[:, i1] * w
        values[:, ~inside] = np.nan
        out[lo : lo + ROW_BLOCK] = values
    return out


def stack_animals(
    names: list[list[str]], lengths: list[int], produce: Callable[[int], np.ndarray],
    order: list[str] | None = None,
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Stack per-animal (N_a, F_a) arrays on one name axis, NaN where absent or past F_a.

    ``names[a]`` names the rows of animal a's array, ``lengths[a]`` is its F_a, and
    ``produce(a)`` returns the array itself — called once per animal, in order, so arrays
    can be made or loaded one at a time. ``order``: the name axis (default the sorted union
    of ``names``). The output is allocated uninitialised and filled one animal at a time, so
    peak memory is the output plus one animal. Returns ``(names, present bool (N, A),
    stacked float32 (A, N, max F_a))``.
    """
    axis = order if order is not None else sorted(set().union(*map(set, names)))
    index = {name: i for i, name in enumerate(axis)}
    n_animals = len(names)
    stacked = np.empty((n_animals, len(axis), max(lengths)), dtype=np.float32)
    present = np.zeros((len(axis), n_animals), dtype=bool)
    for a in range(n_animals):
        rows = np.asarray([index[n] for n in names[a]], dtype=np.int64)
        present[rows, a] = True
        slab = stacked[a]
        slab[~present[:, a]] = np.nan
        x = produce(a)
        if x.shape != (len(rows), lengths[a]):
            raise ValueError(f"animal {a}: array of shape {x.shape}, expected {(len(rows), lengths[a])}")
        slab[rows, : lengths[a]] = x
        slab[:, lengths[a] :] = np.nan
        del x
    return list(axis), present, stacked


def align_animals(
    names: list[list[str]], traces: list[np.ndarray]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Put in-memory animals on the sorted union of neuron names (:func:`stack_animals`).
    Returns ``(neurons, present (N, A), aligned float32 (A, N, max F))``."""
    return stack_animals(names, [t.shape[1] for t in traces], lambda a: traces[a])


# ----------------------------------------------------------------------------- stage
@dataclass
class AnimalTraces:
    """One animal after reading, naming and cleaning.

    ``traces`` (N_a, F) float32 at ``rate`` Hz on the animal's own frames (before the grid);
    ``covariates`` (C_a, F) float64 named by ``covariate_names``.
    """

    name: str
    names: list[str]
    traces: np.ndarray
    rate: float
    source: Path
    offset_s: float = 0.0
    covariate_names: list[str] = field(default_factory=list)
    covariates: np.ndarray | None = None
    n_frames: int = 0


def clean_names(animal: dict, rec: readers.Recording, source: Path, case: str,
                exclude: list[str]) -> tuple[list[str], np.ndarray]:
    """Normalise names, name or drop unidentified neurons, drop excluded ones, reject
    duplicates (naming both columns). Returns the kept names and their column positions."""
    kept, columns, seen = [], [], {}
    for col, raw in enumerate(rec.names):
        name = normalize_name(raw or "", case)
        if not name:
            if animal["drop_unlabeled"]:
                continue
            name = f"{animal['name']}#{int(rec.index[col])}"
        if name in seen:
            first = seen[name]
            raise InputError(
                f"{source}: neuron name {name!r} used twice (columns {int(rec.index[first])} "
                f"{rec.names[first]!r} and {int(rec.index[col])} {raw!r})"
            )
        seen[name] = col
        kept.append(name)
        columns.append(col)
    if exclude and kept:
        drop = excluded(kept, exclude, case)
        kept = [n for n, d in zip(kept, drop) if not d]
        columns = [c for c, d in zip(columns, drop) if not d]
    return kept, np.asarray(columns, dtype=int)


def _listing(names: list[str], limit: int = 4) -> str:
    text = ", ".join(names[:limit])
    return text + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _swapped_hint(n_frames: int, n_neurons: int, where: str | None) -> str:
    """A clause for errors about an animal's length: when it has fewer frames than
    neurons, frames and neurons were probably read the wrong way round."""
    if where is None or n_frames >= n_neurons:
        return ""
    return (f" ({n_frames} frames × {n_neurons} neurons: if the rows are neurons, set "
            f"{where}.time_axis to the other axis)")


def rate_key(config: Config) -> str:
    """The config key the grid's rate comes from (named by errors about bins)."""
    if config["data"]["resample"] is not None:
        return "data.resample"
    own = [i for i, a in enumerate(config["data"]["animals"]) if a["sampling_rate"] is not None]
    if own and len(own) == len(config["data"]["animals"]):
        return f"data.animals[{own[0]}].sampling_rate"
    return "data.sampling_rate"


FILE_RATED = ("nwb", "suite2p")  # formats whose files give their own sampling rate


#: A stimuli file up to this size is read before the first stage (larger ones by ingest).
STIMULI_READ_AHEAD = 1 << 20


def preflight(config: Config) -> None:
    """Checked before any stage runs: the bins (as the affinity stage checks them) and a small
    stimuli file (header, numbers, overlaps)."""
    from .affinity import preflight as affinity_preflight

    affinity_preflight(config)
    stimuli = config["data"]["stimuli"]
    path = config.resolve(stimuli) if isinstance(stimuli, str) else None
    if path is not None and path.is_file() and path.stat().st_size <= STIMULI_READ_AHEAD:
        readers.read_stimuli(path)


def configured_rates(config: Config) -> list[tuple[float, str]]:
    """Each animal's rate as the config alone fixes it, with its key: ``data.resample``
    when set; else an animal's ``sampling_rate``, else ``data.sampling_rate`` for formats
    whose files carry no rate. Animals whose file gives the rate (NWB, suite2p) are left
    out: their rate is known once read."""
    data = config["data"]
    if data["resample"] is not None:
        return [(float(data["resample"]), "data.resample")]
    out = []
    for i, a in enumerate(data["animals"]):
        if a["sampling_rate"] is not None:
            out.append((float(a["sampling_rate"]), f"data.animals[{i}].sampling_rate"))
            continue
        fmt = a["format"] or ("suite2p" if config.resolve(a["path"]).is_dir()
                              else readers.EXTENSIONS.get(Path(a["path"]).suffix.lower()))
        if fmt not in FILE_RATED and data["sampling_rate"] is not None:
            out.append((float(data["sampling_rate"]), "data.sampling_rate"))
    return out


def animal_rate(config: Config, spec: dict, rec: readers.Recording, source: Path, where: str) -> float:
    """The animal's rate: its own ``sampling_rate`` key, else the file's, else data.sampling_rate."""
    if spec["sampling_rate"] is not None:
        return float(spec["sampling_rate"])
    default = config["data"]["sampling_rate"]
    if rec.rate is not None:
        if default is not None and abs(rec.rate - default) > RATE_TOLERANCE * default:
            warn(f"{source}: the file gives {rec.rate:g} Hz, data.sampling_rate {default:g} Hz; "
                 f"using the file's rate (set {where}.sampling_rate to override)")
        return float(rec.rate)
    if default is None:
        raise ConfigError(
            f"data.sampling_rate: required, {source.name} does not give its sampling rate "
            f"(or set {where}.sampling_rate)"
        )
    return float(default)


def load_covariates(path: Path, n_frames: int, rate: float) -> tuple[list[str], np.ndarray]:
    """Covariate table of one animal as (names, (C, n_frames) float64) on its frames.

    One row per frame: row i is frame i (a ``time_s`` column is then only checked: the rows
    are the frames, measured with them). Otherwise a ``time_s`` column is needed, and each
    covariate is linearly interpolated from its rows' times onto the frame times ``i / rate``
    (NaN outside the rows' time range and where the column is empty).
    """
    header, values = readers.read_table(path, "\t" if path.suffix.lower() == ".tsv" else ",",
                                        "covariates file",
                                        no_header_fix="add a header row of covariate names (and time_s)")
    names = list(header)
    stamps = None
    if "time_s" in names:
        k = names.index("time_s")
        stamps = values[:, k]
        if not (np.isfinite(stamps).all() and np.all(np.diff(stamps) > 0)):
            raise InputError(f"{path}: time_s must be finite and increasing")
        names.pop(k)
        values = np.delete(values, k, axis=1)
    if values.shape[0] == n_frames:
        if stamps is not None and n_frames > 1:
            step = float(np.median(np.diff(stamps)))
            if abs(step * rate - 1.0) > 0.05:
                warn(f"{path}: one row per frame, but time_s steps {step:g} s while frames are "
                     f"{1 / rate:g} s apart; rows taken as frames")
        return names, values.T.copy()
    if stamps is None:
        raise InputError(
            f"{path}: {values.shape[0]} rows but the recording has {n_frames} frames; "
            "give one row per frame or a time_s column"
        )
    frames = np.arange(n_frames) / rate
    out = np.full((len(names), n_frames), np.nan)
    for c in range(len(names)):
        ok = np.isfinite(values[:, c])
        if ok.sum() >= 2:
            inside = (frames >= stamps[ok][0]) & (frames <= stamps[ok][-1])
            out[c, inside] = np.interp(frames[inside], stamps[ok], values[ok, c])
    return names, out


def load_animal(config: Config, index: int) -> AnimalTraces:
    """Read, name and clean one animal (steps 1–2 of the module docstring)."""
    spec = config["data"]["animals"][index]
    p = config["ingest"]
    where = f"data.animals[{index}]"
    source = config.resolve(spec["path"])
    names_path = config.resolve(spec["neurons"]) if spec["neurons"] else None
    rec = readers.read_recording(
        source,
        fmt=spec["format"],
        dataset=spec["dataset"],
        variable=spec["variable"],
        series=spec["series"],
        name_column=spec["name_column"],
        neuropil_coefficient=spec["neuropil_coefficient"],
        time_axis=spec["time_axis"],
        names_path=names_path,
        want_rate=spec["sampling_rate"] is None,
        header=spec["header"],
        where=where,
    )
    names, columns = clean_names(spec, rec, source, p["name_case"], p["exclude"])
    if not names:
        raise InputError(f"{source}: no neurons left (unlabeled dropped or all excluded)")
    empty = ~np.isfinite(rec.traces[:, columns]).any(axis=0)
    if empty.any():
        # recorded as missing in this animal, as a neuron absent from its file is
        lost = [n for n, e in zip(names, empty) if e]
        warn(f"{source}: {plural(len(lost), 'neuron')} with no finite value ({_listing(lost)}) "
             f"treated as not recorded in animal {spec['name']!r}")
        names = [n for n, e in zip(names, empty) if not e]
        columns = columns[~empty]
        if not names:
            raise InputError(f"{source}: no neuron has a finite value; check the file")
    if rec.traces.shape[0] < 2:
        raise InputError(f"{source}: only {rec.traces.shape[0]} frame(s); need a time series"
                         + _swapped_hint(rec.traces.shape[0], len(names), where))
    rate = animal_rate(config, spec, rec, source, where)
    everything = columns.size == rec.traces.shape[1] and (columns == np.arange(columns.size)).all()
    raw = (rec.traces if everything else rec.traces[:, columns]).T  # (N_a, F); no copy when all kept
    if np.isinf(raw).any():
        i = int(np.flatnonzero(np.isinf(raw).any(axis=1))[0])
        raise InputError(f"{source}: neuron {names[i]!r} has infinite values")
    try:
        traces, report = clean_traces(
            raw, rate=rate, max_gap_seconds=p["max_gap_seconds"], detrend=p["detrend"],
            normalize=p["normalize"], baseline_seconds=p["baseline_seconds"],
            baseline_percentile=p["baseline_percentile"], smooth_seconds=p["smooth_seconds"],
            names=names)
    except InputError as exc:
        raise InputError(f"{source}: {exc}") from None
    n_frames = traces.shape[1]
    del rec, raw
    animal = spec["name"]
    if report.filled:
        warn(f"{animal}: {report.filled} missing frames interpolated (gaps ≤ {p['max_gap_seconds']:g} s)")
    if report.still_missing:
        warn(f"{animal}: {report.still_missing} frames in gaps longer than {p['max_gap_seconds']:g} s left missing")
    if report.constant:
        warn(f"{animal}: constant trace for {', '.join(report.constant[:5])}; its affinities will be 0")
    result = AnimalTraces(animal, names, traces, rate, source, offset_s=spec["offset_s"])
    if spec["covariates"]:
        result.covariate_names, result.covariates = load_covariates(
            config.resolve(spec["covariates"]), n_frames, rate)
    return result


def check_rates(animals: list[AnimalTraces], resample: float | None) -> float:
    """The grid's rate: ``resample``, else the animals' common rate (error naming two files
    recorded at different rates)."""
    if resample is not None:
        return float(resample)
    first = animals[0]
    for a in animals[1:]:
        if abs(a.rate - first.rate) > RATE_TOLERANCE * first.rate:
            raise InputError(
                f"{a.source}: recorded at {a.rate:g} Hz but {first.source} at {first.rate:g} Hz; "
                "set data.resample: <Hz> to resample every animal onto one rate"
            )
    return first.rate


def crop_to_common_length(animals: list[AnimalTraces], lengths: list[int], max_fraction: float) -> int:
    """The aligned layout's length: the shortest grid; error if lengths differ by more than
    ``max_fraction`` of the longest (naming the shortest animal's file)."""
    shortest, longest = min(lengths), max(lengths)
    if longest - shortest > max_fraction * longest:
        k = int(np.argmin(lengths))
        short = animals[k]
        if short.n_frames < len(short.names):  # (6 frames of 160 neurons: read transposed)
            raise InputError(
                f"{short.source}: {short.n_frames} frames × {len(short.names)} neurons, while another "
                f"animal has {longest} frames: frames and neurons look swapped; set "
                f"data.animals[{k}].time_axis to the other axis"
            )
        raise InputError(
            f"{short.source}: {shortest} frames, but another animal has {longest}; lengths differ "
            f"by more than ingest.max_crop_fraction={max_fraction:g} of the protocol "
            "(use data.layout: concatenated for recordings without a shared protocol)"
        )
    if longest != shortest:
        warn(f"animals have {shortest}–{longest} frames; all cropped to the shortest ({shortest})")
    return shortest


def load_stimuli(config: Config, start: float, stop: float) -> list[dict]:
    """Stimulus epochs, checked against the kept recording ``[start, stop)`` (s): an epoch
    entirely outside it is an error; one that sticks out is clipped with a warning."""
    spec = config["data"]["stimuli"]
    if spec is None:
        return []
    source = config.resolve(spec) if isinstance(spec, str) else None
    epochs = readers.read_stimuli(source) if source is not None else [dict(e) for e in spec]
    where = source or "data.stimuli"
    for e in epochs:
        if e["start_s"] >= stop or e["stop_s"] <= start:
            raise InputError(
                f"{where}: epoch {e['label']!r} ({e['start_s']:g}–{e['stop_s']:g} s) lies outside "
                f"the recording ({start:g}–{stop:g} s)"
            )
        if e["stop_s"] > stop + 1e-9 or e["start_s"] < start - 1e-9:
            new_start, new_stop = max(e["start_s"], start), min(e["stop_s"], stop)
            warn(f"{where}: epoch {e['label']!r} ({e['start_s']:g}–{e['stop_s']:g} s) extends beyond "
                 f"the recording ({start:g}–{stop:g} s); clipped to {new_start:g}–{new_stop:g} s")
            e["start_s"], e["stop_s"] = new_start, new_stop
    return epochs


def input_files(config: Config) -> list[Path]:
    """Every file the ingest stage reads (for fingerprints). For a suite2p folder only the
    files read, not the (large) registered movie beside them."""
    files = []
    for animal in config["data"]["animals"]:
        path = config.resolve(animal["path"])
        if animal["format"] == "suite2p" or (animal["format"] is None and path.is_dir()):
            files += [path / name for name in readers.SUITE2P_FILES]
            if (path / "ops.npy").exists():
                files.append(path / "ops.npy")
        else:
            files.append(path)
        for key in ("neurons", "covariates"):
            if animal[key]:
                files.append(config.resolve(animal[key]))
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


def run(config: Config, workdir: Path, console: Console, upstream: dict) -> tuple[dict, dict]:
    """Read, clean, grid and stack every animal; the datasets and attributes of ``ingest.h5``.

    Two passes bound the memory: the first reads and cleans each animal and spills its
    float32 traces to a temporary folder (``$TMPDIR``), keeping only names, rates and
    covariates; the second, once the union of names, the common rate and the lengths are
    known, allocates the output and fills it one animal at a time from the spilled files
    (merging homologs and resampling on the way). Peak memory: the output plus a few
    animals' arrays, whatever the number of animals.
    """
    data, p = config["data"], config["ingest"]
    layout = data["layout"]
    animals: list[AnimalTraces] = []
    with tempfile.TemporaryDirectory(prefix="dynconn-ingest-") as spill:
        with console.progress("reading animals", len(data["animals"])) as advance:
            for i in range(len(data["animals"])):
                animal = load_animal(config, i)
                np.save(Path(spill) / f"{i}.npy", animal.traces)
                animal.n_frames = animal.traces.shape[1]
                animal.traces = None  # type: ignore[assignment]  # spilled; freed now
                animals.append(animal)
                if data["resample"] is None:
                    check_rates(animals, None)  # fail before reading the rest
                advance()
        rate = check_rates(animals, data["resample"])

        mapping: dict[str, str] = {}
        if p["merge_bilateral"]:
            mapping = bilateral_map(set().union(*(a.names for a in animals)))
            if mapping:
                console.info(f"  merged left/right homologs: {len(set(mapping.values()))} pairs")
        merged_names = [list(dict.fromkeys(mapping.get(n, n) for n in a.names)) for a in animals]

        start = p["start_s"] if p["start_s"] is not None else 0.0
        lengths = [grid_length(a.n_frames, a.rate, rate, offset_s=a.offset_s, start_s=start,
                               stop_s=p["stop_s"]) for a in animals]
        for a, n in zip(animals, lengths):
            if n < 2:
                raise InputError(f"{a.source}: no frames left in the window "
                                 f"{start:g}–{p['stop_s'] if p['stop_s'] is not None else 'end'} s "
                                 f"(offset_s {a.offset_s:g})")
        if layout == "aligned":
            lengths = [crop_to_common_length(animals, lengths, p["max_crop_fraction"])] * len(animals)
        # the affinity that follows must be able to bin these recordings: refused now, before
        # anything is written, rather than after ingest.h5 (docs/robustness.md)
        from .affinity import check_bins

        check_bins(config["affinity"], rate, lengths, layout, [a.name for a in animals], rate_key(config))

        def gridded(i: int) -> np.ndarray:
            a = animals[i]
            x = np.load(Path(spill) / f"{i}.npy", mmap_mode="r")
            names, x = merge_rows(a.names, x, mapping)
            return to_grid(x, a.rate, rate, lengths[i], offset_s=a.offset_s, start_s=start)

        neurons, present, stacked = stack_animals(merged_names, lengths, gridded)
        # a neuron without a finite value in the window is not recorded there, as one absent
        # from the file is
        empty = present & ~np.isfinite(stacked).any(axis=2).T
        for i in np.flatnonzero(empty.any(axis=0)):
            a = animals[i]
            lost = [neurons[k] for k in np.flatnonzero(empty[:, i])]
            warn(f"{a.source}: {plural(len(lost), 'neuron')} with no finite value in the window "
                 f"({_listing(lost)}) treated as not recorded in animal {a.name!r}")
            if len(lost) == int(present[:, i].sum()):
                raise InputError(f"{a.source}: no neuron has a finite value in the window; check "
                                 "ingest.start_s/stop_s and the file")
        present &= ~empty

    datasets = {
        "traces": stacked,
        "present": present,
        "neurons": np.asarray(neurons, dtype=object),
        "animals": np.asarray([a.name for a in animals], dtype=object),
        "n_frames": np.asarray(lengths, dtype=np.int64),
        "rates": np.asarray([a.rate for a in animals], dtype=np.float64),
        "time": start + np.arange(max(lengths)) / rate,
    }
    cov_order = list(data["covariates"]) if data["covariates"] is not None else \
        list(dict.fromkeys(c for a in animals for c in a.covariate_names))
    if cov_order:
        kept = []
        for a in animals:
            missing = [c for c in cov_order if c not in a.covariate_names]
            if missing:
                warn(f"{a.name}: no covariate {', '.join(missing)}; left missing (NaN)")
            kept.append([c for c in a.covariate_names if c in cov_order])

        def covariates(i: int) -> np.ndarray:
            a = animals[i]
            rows = [a.covariate_names.index(c) for c in kept[i]]
            return to_grid(a.covariates[rows], a.rate, rate, lengths[i], offset_s=a.offset_s, start_s=start)

        _, _, values = stack_animals(kept, lengths, covariates, order=cov_order)
        datasets["covariates/names"] = np.asarray(cov_order, dtype=object)
        datasets["covariates/values"] = values.astype(np.float64)
    stimuli = load_stimuli(config, start, start + max(lengths) / rate)
    datasets.update({
        "stimuli/label": np.asarray([e["label"] for e in stimuli], dtype=object),
        "stimuli/start_s": np.asarray([e["start_s"] for e in stimuli], dtype=np.float64),
        "stimuli/stop_s": np.asarray([e["stop_s"] for e in stimuli], dtype=np.float64),
    })
    return datasets, {"sampling_rate": rate, "layout": layout, "start_s": start}

"""Stage 2, affinity: time-resolved non-negative affinities between neuron pairs.

Methods (formulas in ``docs/method.md``):

``differential`` (default)
    Each neuron's smoothed temporal derivative ``d_i`` (Gaussian derivative filter, SD
    ``smooth_seconds``) is scaled by its own derivative noise level ``σ_i`` (robust SD of
    ``d_i``): ``z_i = d_i / σ_i``, then soft-thresholded at ``θ`` noise units,
    ``s_i = sign(z_i)·max(|z_i| − θ, 0)``. The instantaneous affinity is the geometric mean
    of the two changes when they have the same sign, and zero otherwise::

        a_ij(t) = sqrt(max(s_i(t)·s_j(t), 0))

    then averaged over the frames of each time bin. With ``lag_seconds`` L > 0 (default 0) each
    factor √s⁺_i, √s⁻_i is first spread to its maximum over ±L/2 (:func:`spread_change`), so
    changes up to L apart count as together.
``mtd``
    Multiplication of temporal derivatives (Shine et al. 2015), positive part: derivatives
    divided by their SD, ``a_ij(t) = max(z_i(t)·z_j(t), 0)``, averaged per bin.
``window-corr``
    Pearson correlation of the traces in a sliding window centred on each bin, positive part.

Then, with ``shared_level`` q > 0 (the default 0.5), each bin's affinities are taken above the
bin's level, the q-quantile over the pairs recorded in its animal (:func:`bin_levels`,
:func:`above_level`): co-activation most pairs share at once (a motion artefact, a brain-wide
event) is no evidence about any pair. The levels come first, in one pass over the bins (each
bin's products of all the animal's recorded neurons, :meth:`AffinityPlan.levels`).

Every method is a binned average of a product that splits into a positive and a negative
part, ``max(u_i u_j, 0) = u⁺_i u⁺_j + u⁻_i u⁻_j``, so each bin's affinity matrix is one Gram
matrix ``R_b R_bᵀ`` (BLAS). The tensor is computed by blocks of pairs (:func:`pair_blocks`: the
pairs of consecutive first neurons ``i0:i1``, about :data:`BLOCK_BYTES` each), each bin's rows
``i0:i1`` of the Gram against the neurons from ``i0`` on; the stage writes each block into
``affinity.h5`` as it is computed (:class:`dynconn.io.artifacts.StreamedDataset`), so the tensor
is never whole in memory (:func:`stack_affinity`, the library's, assembles the same blocks).

Artifact ``affinity.h5`` (DESIGN.md): ``/affinity`` float32 (P, T, A), ``/pairs`` int32
(P, 2), ``/mask`` bool (P, A), ``/neurons`` (N), ``/animals`` (A), ``/time`` float64 (T)
bin centres in s. Unobserved entries (mask False) hold 0. Root attribute ``layout``.

With ``data.layout: concatenated`` (each animal on its own clock, docs/layouts.md) the
tensor is ``/affinity`` float32 (P, T_total, 1): every animal's bins one after another;
``/time`` (T_total) holds each bin's centre on its animal's own clock and ``/time_animal``
int32 (T_total) the index into ``/animals`` of each bin. ``/mask`` stays (P, A): entry
(p, t) is observed iff ``mask[p, time_animal[t]]``.

Behaviour covariates (when ingest has them) are averaged into the same bins:
``/covariates/names`` (C), ``/covariates/values`` float64 (C, T, A) aligned or
(C, T_total, 1) concatenated; NaN where an animal lacks a covariate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import Config
from ..console import Console, plural, warn
from ..errors import ConfigError
from ..io.artifacts import StreamedDataset, checksum
from ..validation import InvalidArgument

NAME = "affinity"
OUTPUT = "affinity.h5"
UPSTREAM = ("ingest",)

METHODS = ("differential", "mtd", "window-corr")


# ----------------------------------------------------------------------------- pure core
def pair_index(n: int) -> np.ndarray:
    """(P, 2) int32 pairs i < j in row-major upper-triangle order, P = n(n−1)/2."""
    i, j = np.triu_indices(n, k=1)
    return np.stack([i, j], axis=1).astype(np.int32)


def smoothed_derivative(traces: np.ndarray, sigma_frames: float) -> np.ndarray:
    """Gaussian-derivative of each row of an (N, F) array, per frame. NaN frames count as 0
    change (no evidence) after filling them with the previous value."""
    x = np.asarray(traces, dtype=np.float64)
    if np.isnan(x).any():
        x = _hold_last(x)
    from scipy.ndimage import gaussian_filter1d  # heavy: imported where used (fast start-up)

    return gaussian_filter1d(x, sigma=max(sigma_frames, 1e-3), axis=1, order=1, mode="nearest")


def _hold_last(x: np.ndarray) -> np.ndarray:
    """Replace NaN by the last finite value of the row (the first finite one at the start)."""
    out = x.copy()
    for row in out:
        bad = np.isnan(row)
        if bad.all():
            row[:] = 0.0
        elif bad.any():
            idx = np.where(~bad, np.arange(row.size), 0)
            np.maximum.accumulate(idx, out=idx)
            first = np.flatnonzero(~bad)[0]
            idx[:first] = first
            row[:] = row[idx]
    return out


def derivative_noise(d: np.ndarray) -> np.ndarray:
    """Noise level of each derivative trace: 1.4826 × MAD (robust to sparse events)."""
    med = np.median(d, axis=1, keepdims=True)
    return 1.4826 * np.median(np.abs(d - med), axis=1)


def differential_signal(traces: np.ndarray, sigma_frames: float, threshold: float) -> np.ndarray:
    """``s_i(t)``: soft-thresholded, noise-scaled derivative of each row of (N, F) traces.

    Invariant to any per-neuron affine change ``a·x + b`` with a > 0 (raw F, ΔF/F and
    z-scored traces give the same s). Constant (or all-missing) neurons give s = 0.
    """
    d = smoothed_derivative(traces, sigma_frames)
    sigma = derivative_noise(d)
    flat = ~(sigma > 0)
    if flat.any():
        # a neuron with zero MAD but some change (very sparse) falls back to its plain SD
        sd = d.std(axis=1)
        sigma = np.where(flat, sd, sigma)
        flat = ~(sigma > 0)
    z = d / np.where(flat, 1.0, sigma)[:, None]
    z[flat] = 0.0
    return np.sign(z) * np.maximum(np.abs(z) - threshold, 0.0)


def lag_frames(lag_seconds: float, rate: float) -> int:
    """Half-width, in frames, of the window :func:`spread_change` takes its maximum over:
    ``lag_seconds · rate / 2``, rounded half up (``affinity.lag_seconds``)."""
    return int(np.floor(lag_seconds * rate / 2 + 0.5))


def spread_change(part: np.ndarray, frames: int) -> np.ndarray:
    """Each row of a non-negative (N, F) change signal replaced by its running maximum over
    ±``frames`` frames (0: unchanged).

    Why: neurons of one circuit may respond with latencies of their own (the realistic
    simulator plants up to 2 s), and a calcium transient's rise lasts a frame or two, so the
    instantaneous product of two members' changes misses most of their shared events. Spread
    this way, two changes up to ``2·frames`` frames apart overlap in at least one frame
    (docs/method.md; off by default: on the shared worms it lowered every measure).
    """
    if frames <= 0:
        return part
    from scipy.ndimage import maximum_filter1d  # heavy: imported where used (fast start-up)

    return maximum_filter1d(part, size=2 * frames + 1, axis=1, mode="constant", cval=0.0)


def differential_parts(traces: np.ndarray, sigma_frames: float, threshold: float,
                       spread_frames: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(√s⁺, √s⁻), each (N, F), of :func:`differential_signal`, each spread over
    ±``spread_frames`` (:func:`spread_change`): the two factors of the differential affinity,
    ``a_ij = √s⁺_i √s⁺_j + √s⁻_i √s⁻_j``."""
    s = differential_signal(traces, sigma_frames, threshold)
    return (spread_change(np.sqrt(np.maximum(s, 0)), spread_frames),
            spread_change(np.sqrt(np.maximum(-s, 0)), spread_frames))


def mtd_signal(traces: np.ndarray, sigma_frames: float) -> np.ndarray:
    """Derivatives divided by their SD (Shine et al. 2015's normalised derivative)."""
    d = smoothed_derivative(traces, sigma_frames)
    sd = d.std(axis=1)
    return np.where(sd[:, None] > 0, d / np.where(sd > 0, sd, 1.0)[:, None], 0.0)


def bin_edges(n_frames: int, frames_per_bin: int) -> np.ndarray:
    """Frame index where each complete bin starts (an incomplete last bin is dropped)."""
    n_bins = n_frames // frames_per_bin
    return np.arange(n_bins) * frames_per_bin


#: An animal's bins get a shared level (``affinity.shared_level``) only when it has at least this
#: many recorded pairs (10 neurons): among fewer, one motif is a large share of the pairs and
#: would set the level itself.
MIN_LEVEL_PAIRS = 45


def _has_level(n_pairs: int, quantile: float) -> bool:
    """Whether bins over ``n_pairs`` recorded pairs get a shared level at ``quantile``."""
    return quantile > 0 and n_pairs >= MIN_LEVEL_PAIRS


def bin_levels(values: np.ndarray, quantile: float) -> np.ndarray:
    """(T,) float32 shared level of each bin of (P, T) affinities: their ``quantile`` over the
    pairs (``affinity.shared_level``); 0 for every bin when ``quantile`` is 0 or there are fewer
    than :data:`MIN_LEVEL_PAIRS` pairs."""
    values = np.asarray(values)
    if not _has_level(values.shape[0], quantile):
        return np.zeros(values.shape[1], dtype=np.float32)
    return np.array([_level(values[:, b], quantile) for b in range(values.shape[1])], dtype=np.float32)


def _level(values: np.ndarray, quantile: float) -> np.float32:
    """The ``quantile`` of one bin's (P,) affinities, over the finite ones: a neuron's non-finite
    affinities stay in its own pairs, where the pipeline's guard names the neuron
    (dynconn.runner.guards), instead of spreading to every pair (0 when none is finite)."""
    values = values.astype(np.float64)  # one contiguous copy: the quantile's partition is fast on it
    finite = np.isfinite(values)
    if not finite.all():
        values = values[finite]
        if not values.size:
            return np.float32(0.0)
    return np.float32(np.quantile(values, quantile))


def above_level(values: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """``max(values − level, 0)`` in place on float32 (P, T[, A]) affinities; ``levels`` (T[, A])
    broadcast over the pairs."""
    np.subtract(values, levels[None], out=values)
    return np.maximum(values, 0.0, out=values)


def binned_gram(positive: np.ndarray, negative: np.ndarray | None, frames_per_bin: int,
                pairs: np.ndarray, scale: float = 1.0, advance=None) -> np.ndarray:
    """Per bin, the mean over its frames of ``u⁺_i u⁺_j + u⁻_i u⁻_j`` for every pair.

    ``positive``/``negative`` are (N, F) non-negative arrays. Returns float32 (P, T).
    """
    n, f = positive.shape
    starts = bin_edges(f, frames_per_bin)
    out = np.empty((pairs.shape[0], starts.size), dtype=np.float32)
    i, j = pairs[:, 0], pairs[:, 1]
    for b, s in enumerate(starts):
        block = positive[:, s : s + frames_per_bin]
        gram = block @ block.T
        if negative is not None:
            block = negative[:, s : s + frames_per_bin]
            gram += block @ block.T
        out[:, b] = gram[i, j] * (scale / frames_per_bin)
        if advance is not None:
            advance()
    return out


def window_correlation(traces: np.ndarray, frames_per_bin: int, window: int,
                       pairs: np.ndarray, advance=None) -> np.ndarray:
    """Positive part of the Pearson correlation in a window of ``window`` frames centred on
    each bin's centre. Returns float32 (P, T)."""
    x = np.nan_to_num(np.asarray(traces, dtype=np.float64))
    n, f = x.shape
    starts = bin_edges(f, frames_per_bin)
    out = np.empty((pairs.shape[0], starts.size), dtype=np.float32)
    i, j = pairs[:, 0], pairs[:, 1]
    half = window // 2
    for b, s in enumerate(starts):
        centre = s + frames_per_bin // 2
        lo, hi = max(0, centre - half), min(f, centre + half + 1)
        w = x[:, lo:hi] - x[:, lo:hi].mean(axis=1, keepdims=True)
        norm = np.sqrt((w * w).sum(axis=1))
        w = w / np.where(norm > 0, norm, np.inf)[:, None]
        corr = w @ w.T
        out[:, b] = np.maximum(corr[i, j], 0.0)
        if advance is not None:
            advance()
    return out


def compute_affinity(
    traces: np.ndarray,
    *,
    sampling_rate: float,
    method: str = "differential",
    bin_seconds: float = 5.0,
    smooth_seconds: float = 0.5,
    noise_threshold: float = 1.0,
    window_seconds: float = 30.0,
    shared_level: float = 0.5,
    lag_seconds: float = 0.0,
    pairs: np.ndarray | None = None,
    advance=None,
) -> np.ndarray:
    """Affinity of every pair of rows of one animal's (N, F) traces, float32 (P, T).

    ``P = N(N−1)/2`` pairs in :func:`pair_index` order unless ``pairs`` is given;
    ``T = F // round(bin_seconds · sampling_rate)`` bins. Units: ``differential`` in noise
    SDs; ``mtd`` in SD²; ``window-corr`` a correlation in [0, 1]. ``lag_seconds`` (``differential``):
    changes up to this far apart count as together (:func:`spread_change`). ``shared_level`` q > 0:
    each bin's affinities are taken above their q-quantile over the pairs (:func:`bin_levels`).
    """
    values = _affinity_values(traces, sampling_rate=sampling_rate, method=method, bin_seconds=bin_seconds,
                              smooth_seconds=smooth_seconds, noise_threshold=noise_threshold,
                              window_seconds=window_seconds, lag_seconds=lag_seconds, pairs=pairs,
                              advance=advance)
    if shared_level > 0:
        above_level(values, bin_levels(values, shared_level))
    return values


def _affinity_values(traces, *, sampling_rate, method, bin_seconds, smooth_seconds, noise_threshold,
                     window_seconds, lag_seconds, pairs, advance) -> np.ndarray:
    if method not in METHODS:
        raise ValueError(f"unknown affinity method {method!r}; expected one of {METHODS}")
    traces = np.asarray(traces, dtype=np.float64)
    n, f = traces.shape
    if pairs is None:
        pairs = pair_index(n)
    fpb = max(1, int(round(bin_seconds * sampling_rate)))
    if f < fpb:
        raise ValueError(
            f"recording of {f} frames is shorter than one bin of {bin_seconds:g} s; "
            "lower affinity.bin_seconds"
        )
    sigma = smooth_seconds * sampling_rate
    if method == "differential":
        positive, negative = differential_parts(traces, sigma, noise_threshold,
                                                lag_frames(lag_seconds, sampling_rate))
        return binned_gram(positive, negative, fpb, pairs, advance=advance)
    if method == "mtd":
        z = mtd_signal(traces, sigma)
        return binned_gram(np.maximum(z, 0), np.maximum(-z, 0), fpb, pairs, advance=advance)
    window = max(3, int(round(window_seconds * sampling_rate)))
    return window_correlation(traces, fpb, window, pairs, advance=advance)


def bin_centres(n_frames: int, sampling_rate: float, bin_seconds: float) -> np.ndarray:
    """Centre of each complete bin, s (frame i is at i / sampling_rate)."""
    fpb = max(1, int(round(bin_seconds * sampling_rate)))
    starts = bin_edges(n_frames, fpb)
    return (starts + (fpb - 1) / 2.0) / sampling_rate


def bin_means(values: np.ndarray, frames_per_bin: int) -> np.ndarray:
    """Mean of each complete bin of ``frames_per_bin`` frames along the last axis of
    (..., F), NaN frames ignored (NaN for a bin without any finite frame). (..., F // fpb)."""
    n_bins = values.shape[-1] // frames_per_bin
    blocks = values[..., : n_bins * frames_per_bin].reshape(*values.shape[:-1], n_bins, frames_per_bin)
    ok = np.isfinite(blocks)
    count = ok.sum(axis=-1)
    total = np.where(ok, blocks, 0.0).sum(axis=-1, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def observed_pairs(present: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """(P, A) bool: both neurons of the pair recorded in the animal (present is (N, A))."""
    return present[pairs[:, 0]] & present[pairs[:, 1]]


# ----------------------------------------------------------------------------- checks
#: Fewest frames a time bin may hold: the bin's affinity is a mean over its frames, and the
#: derivative behind it needs neighbouring frames; with 1-2 frames per bin a bin is one noisy
#: sample (at 1 frame the soft threshold zeroes nearly everything).
MIN_FRAMES_PER_BIN = 3


def frames_per_bin(bin_seconds: float, rate: float) -> int:
    """Frames in one time bin of ``bin_seconds`` at ``rate`` Hz (at least 1)."""
    return max(1, int(round(bin_seconds * rate)))


def preflight(config: Config) -> None:
    """Checked before any stage runs: every rate the config fixes gives bins of enough frames."""
    from .ingest import configured_rates  # (ingest imports this module)

    for rate, key in configured_rates(config):
        check_frames_per_bin(config["affinity"]["bin_seconds"], rate, key)


def check_frames_per_bin(bin_seconds: float, rate: float, rate_key: str) -> None:
    """ConfigError naming affinity.bin_seconds and ``rate_key`` (where the rate comes from)
    when a bin holds fewer than :data:`MIN_FRAMES_PER_BIN` frames."""
    fpb = frames_per_bin(bin_seconds, rate)
    if fpb < MIN_FRAMES_PER_BIN:
        frames = "frame" if fpb == 1 else "frames"
        raise ConfigError(
            f"affinity.bin_seconds: a {bin_seconds:g} s bin holds {fpb} {frames} at {rate:g} Hz "
            f"({rate_key}); a bin needs at least {MIN_FRAMES_PER_BIN} frames: set "
            f"affinity.bin_seconds to {MIN_FRAMES_PER_BIN / rate:.3g} s or more (or check {rate_key})"
        )


def check_bins(p: dict, rate: float, n_frames, layout: str, animals: list[str],
               rate_key: str = "the sampling rate") -> None:
    """The ``affinity`` section ``p`` must give usable bins for recordings of ``n_frames``
    (per animal) at ``rate`` Hz: ConfigError naming the key otherwise. Called by ingest too,
    so that a config whose affinity cannot run is refused before anything is written."""
    check_frames_per_bin(p["bin_seconds"], rate, rate_key)
    try:
        check_binning(n_frames, rate, int(np.asarray(n_frames).max()), layout, animals, p["bin_seconds"],
                      p["smooth_seconds"])
    except InvalidArgument as exc:  # the same check as the library's, named by its config key
        raise ConfigError(f"affinity.{exc}") from None


@dataclass
class AffinityTensor:
    """The affinity tensor of several animals and how to read it (the content of
    ``affinity.h5`` without the covariates).

    Attributes
    ----------
    affinity : float32 ndarray (P, T, A), or (P, T_total, 1) when concatenated
        Affinity of every pair in every time bin and animal; 0 where unobserved.
    mask : bool ndarray (P, A)
        True where both neurons of pair p were recorded in animal a.
    pairs : int32 ndarray (P, 2)
        Neuron indices ``i < j`` of each pair (:func:`pair_index` order over ``neurons``).
    neurons, animals : list of str
    time : float64 ndarray (T,) or (T_total,)
        Bin centres, s (each animal's own clock when concatenated).
    time_animal : int32 ndarray (T_total,) or None
        Concatenated layout: the animal (index into ``animals``) of each bin; None when aligned.
    layout : "aligned" | "concatenated"
    frames_per_bin : int
    """

    affinity: np.ndarray
    mask: np.ndarray
    pairs: np.ndarray
    neurons: list
    animals: list
    time: np.ndarray
    time_animal: np.ndarray | None
    layout: str
    frames_per_bin: int

    @property
    def time_groups(self) -> np.ndarray | None:
        """What the factorization takes as ``time_groups`` (= ``time_animal``)."""
        return self.time_animal

    def pair_matrix(self, pair_values) -> np.ndarray:
        """Per-pair values (P,) — e.g. a component's pair loadings — as a symmetric
        (N, N) matrix over ``neurons`` with zero diagonal (a weighted graph)."""
        from .communities import pair_matrix

        values = np.asarray(pair_values, dtype=np.float64)
        if values.shape != (self.pairs.shape[0],):
            raise ValueError(f"pair_values: expected {self.pairs.shape[0]} values (one per pair), "
                             f"got shape {values.shape}")
        return pair_matrix(values, self.pairs, len(self.neurons))


def check_binning(n_frames, rate: float, f_max: int, layout: str, animals, bin_seconds: float,
                  smooth_seconds: float) -> tuple[int, np.ndarray]:
    """Frames per bin and complete bins of each animal, or InvalidArgument naming
    ``bin_seconds`` / ``smooth_seconds`` when the recordings are too short for them."""
    n_frames = np.asarray(n_frames)
    fpb = frames_per_bin(bin_seconds, rate)
    if fpb < MIN_FRAMES_PER_BIN:
        raise InvalidArgument(f"bin_seconds: a {bin_seconds:g} s bin holds {fpb} frame(s) at {rate:g} Hz; a bin "
                              f"needs at least {MIN_FRAMES_PER_BIN} frames: use {MIN_FRAMES_PER_BIN / rate:.3g} s "
                              "or more")
    bins = n_frames // fpb  # complete bins of each animal
    if layout == "aligned" and bins.min() < 2:
        raise InvalidArgument(
            f"bin_seconds: {bin_seconds:g} s leaves {int(bins.min())} bin(s) in a "
            f"{int(n_frames.min()) / rate:g} s recording; choose a shorter bin"
        )
    if layout == "concatenated" and (bins.min() < 1 or bins.sum() < 2):
        short = int(np.argmin(bins))
        raise InvalidArgument(
            f"bin_seconds: {bin_seconds:g} s is longer than animal "
            f"{animals[short]!r}'s recording ({n_frames[short] / rate:g} s); choose a shorter bin"
        )
    if smooth_seconds > f_max / rate:
        raise InvalidArgument(
            f"smooth_seconds: {smooth_seconds:g} s is longer than the recording "
            f"({f_max / rate:g} s); use a value well below it (default 0.5)"
        )
    return fpb, bins


#: Size of one block of the affinity tensor (float32 bytes): the tensor is computed by blocks of
#: consecutive neurons' pairs of about this size (:func:`pair_blocks`), whatever the memory
#: budget, so the in-memory and the streamed tensors are the same numbers.
BLOCK_BYTES = 32 << 20


def pair_blocks(n_neurons: int, row_bytes: int, target: int = BLOCK_BYTES) -> list[tuple[int, int, int, int]]:
    """``(i0, i1, p0, p1)`` blocks of the tensor: the pairs ``p0:p1`` (:func:`pair_index` order) are
    those whose first neuron is in ``i0:i1``; consecutive neurons are grouped until a block's
    ``(p1 - p0) · row_bytes`` reaches ``target`` bytes (at least one neuron per block)."""
    blocks = []
    i0 = p0 = 0
    while i0 < n_neurons - 1:
        i1, p1 = i0, p0
        while i1 < n_neurons - 1 and (i1 == i0 or (p1 - p0 + n_neurons - 1 - i1) * row_bytes <= target):
            p1 += n_neurons - 1 - i1
            i1 += 1
        blocks.append((i0, i1, p0, p1))
        i0, p0 = i1, p1
    return blocks


@dataclass
class _AnimalSignals:
    """One animal's signals for the Gram products, on all N neurons (zero rows where absent):
    ``positive``/``negative`` (N, F_a) for the product methods (``negative`` None for
    window-corr, whose ``positive`` holds the traces), its bins' start frames and its columns."""

    positive: np.ndarray
    negative: np.ndarray | None
    starts: np.ndarray
    column: int  # first column of its bins in the tensor's time axis
    slot: int  # index on the tensor's last axis


def _animal_signals(traces: np.ndarray, rows: np.ndarray, n_neurons: int, *, rate: float, method: str,
                    smooth_seconds: float, noise_threshold: float,
                    lag_seconds: float) -> tuple[np.ndarray, np.ndarray | None]:
    """(positive, negative) (N, F) signals of one animal's (n_present, F) ``traces`` (rows ``rows``)."""
    sigma = smooth_seconds * rate
    if method == "differential":
        parts = differential_parts(traces, sigma, noise_threshold, lag_frames(lag_seconds, rate))
    elif method == "mtd":
        z = mtd_signal(traces, sigma)
        parts = (np.maximum(z, 0), np.maximum(-z, 0))
    else:
        parts = (np.nan_to_num(np.asarray(traces, dtype=np.float64)), None)
    out = []
    for part in parts:
        if part is None:
            out.append(None)
            continue
        full = np.zeros((n_neurons, part.shape[1]))
        full[rows] = part
        out.append(full)
    return out[0], out[1]


def _bin_products(sig: _AnimalSignals, s: int, fpb: int, window: int, first, second) -> np.ndarray:
    """float64 (len(first), len(second)) affinities, in the bin starting at frame ``s``, of the
    rows ``first`` with the rows ``second`` (slices or index arrays) of one animal's signals."""
    if sig.negative is not None:
        part = sig.positive[:, s : s + fpb]
        gram = part[first] @ part[second].T
        part = sig.negative[:, s : s + fpb]
        gram += part[first] @ part[second].T
        return gram * (1.0 / fpb)
    # window correlation around the bin's centre, positive part
    f = sig.positive.shape[1]
    half = window // 2
    centre = s + fpb // 2
    lo, hi = max(0, centre - half), min(f, centre + half + 1)

    def unit_rows(rows):
        w = sig.positive[rows, lo:hi]
        w = w - w.mean(axis=1, keepdims=True)
        norm = np.sqrt((w * w).sum(axis=1))
        return w / np.where(norm > 0, norm, np.inf)[:, None]

    return np.maximum(unit_rows(first) @ unit_rows(second).T, 0.0)


def _block_values(sig: _AnimalSignals, i0: int, i1: int, cols: np.ndarray, rows_local: np.ndarray,
                  fpb: int, window: int, out: np.ndarray, advance=None) -> None:
    """Write the affinity of the pairs whose first neuron is in ``i0:i1`` (with every later neuron)
    into ``out[:, sig.column + b, sig.slot]`` for each bin b. ``rows_local``/``cols`` index the
    (i1 - i0, N - i0) products at those pairs."""
    for b, s in enumerate(sig.starts):
        products = _bin_products(sig, s, fpb, window, slice(i0, i1), slice(i0, None))
        out[:, sig.column + b, sig.slot] = products[rows_local, cols]
        if advance is not None:
            advance()


def _animal_levels(sig: _AnimalSignals, rows: np.ndarray, fpb: int, window: int, quantile: float,
                   advance=None) -> np.ndarray:
    """(bins,) float32 shared level of each of one animal's bins (:func:`bin_levels`) over the
    pairs of its recorded neurons ``rows``, from each bin's products of those rows."""
    upper = np.triu_indices(rows.size, k=1)
    if not _has_level(upper[0].size, quantile):
        return np.zeros(sig.starts.size, dtype=np.float32)
    levels = np.empty(sig.starts.size, dtype=np.float32)
    for b, s in enumerate(sig.starts):
        # float32 first: the values the tensor's blocks hold
        levels[b] = _level(_bin_products(sig, s, fpb, window, rows, rows)[upper].astype(np.float32), quantile)
        if advance is not None:
            advance()
    return levels


def affinity_blocks(signals: list[_AnimalSignals], n_neurons: int, n_time: int, n_slots: int,
                    fpb: int, window: int, blocks, mask: np.ndarray, advance=None, levels=None):
    """Yield ``(p0, values)``: float32 (p1 - p0, T, A) blocks of the tensor, in pair order;
    0 where ``mask`` (P, A) is False; above ``levels`` (T, A) float32 when given
    (:func:`above_level`). ``advance`` is called once per block, animal and bin."""
    for i0, i1, p0, p1 in blocks:
        values = np.zeros((p1 - p0, n_time, n_slots), dtype=np.float32)
        first = np.repeat(np.arange(i0, i1), n_neurons - 1 - np.arange(i0, i1))
        second = np.concatenate([np.arange(i + 1, n_neurons) for i in range(i0, i1)])
        rows_local, cols = first - i0, second - i0
        for a, sig in enumerate(signals):
            _block_values(sig, i0, i1, cols, rows_local, fpb, window, values, advance)
        if levels is not None:
            above_level(values, levels)
        # pairs not recorded together hold 0 (absent rows are 0 already; window-corr of a
        # constant row too): enforce the artifact's contract whatever the method
        m = mask[p0:p1]
        if not m.all():
            if len(signals) == 1 and n_slots == 1 and m.shape[1] == 1:
                values[~m[:, 0]] = 0
            elif n_slots == m.shape[1]:
                values *= m[:, None, :]
            else:  # concatenated: animal a's columns
                for sig, keep in zip(signals, m.T):
                    values[~keep, sig.column : sig.column + sig.starts.size, 0] = 0
        yield p0, values


@dataclass
class AffinityPlan:
    """How the affinity tensor of stacked traces is computed block by block (see
    :func:`plan_affinity`): its ``shape``, ``pairs``, ``mask``, bin ``time`` (and ``time_animal``),
    ``frames_per_bin`` and :meth:`blocks`, the generator of its float32 blocks in pair order."""

    shape: tuple[int, int, int]
    n_neurons: int
    pairs: np.ndarray
    mask: np.ndarray
    time: np.ndarray
    time_animal: np.ndarray | None
    frames_per_bin: int
    block_list: list
    signals: list
    window: int
    #: ``affinity.shared_level`` (0: none) and each animal's recorded neurons, the pairs it is over
    shared_level: float = 0.0
    level_rows: list = field(default_factory=list)

    @property
    def steps(self) -> int:
        """Progress steps of :meth:`blocks`: one per block, animal and bin (and one per animal and
        bin for the shared levels)."""
        bins = sum(sig.starts.size for sig in self.signals)
        return (len(self.block_list) + (self.shared_level > 0)) * bins

    def levels(self, advance=None) -> np.ndarray | None:
        """float32 (T, A) shared level of every bin (:func:`bin_levels` over the pairs recorded in
        its animal), or None when ``shared_level`` is 0."""
        if not self.shared_level > 0:
            return None
        out = np.zeros(self.shape[1:], dtype=np.float32)
        for sig, rows in zip(self.signals, self.level_rows):
            level = _animal_levels(sig, rows, self.frames_per_bin, self.window, self.shared_level, advance)
            out[sig.column : sig.column + sig.starts.size, sig.slot] = level
        return out

    @property
    def chunk_rows(self) -> int:
        """Pairs of the largest block (the HDF5 chunk length of ``/affinity``)."""
        return max((p1 - p0 for _, _, p0, p1 in self.block_list), default=1)

    def blocks(self, advance=None):
        levels = self.levels(advance)  # a pass over every bin before the first block
        return affinity_blocks(self.signals, self.n_neurons, self.shape[1], self.shape[2], self.frames_per_bin,
                               self.window, self.block_list, self.mask, advance, levels)


def plan_affinity(
    traces: np.ndarray,
    present: np.ndarray,
    *,
    sampling_rate: float,
    n_frames=None,
    layout: str = "aligned",
    method: str = "differential",
    bin_seconds: float = 5.0,
    smooth_seconds: float = 0.5,
    noise_threshold: float = 1.0,
    window_seconds: float = 30.0,
    shared_level: float = 0.5,
    lag_seconds: float = 0.0,
    start_s: float = 0.0,
    animals=(),
    block_bytes: int = BLOCK_BYTES,
) -> AffinityPlan:
    """Prepare the block-by-block computation of the affinity tensor of stacked traces (the
    arguments of :func:`stack_affinity`): per-animal signals (N × F floats each) now, the
    blocks of ``block_bytes`` of the tensor when :meth:`AffinityPlan.blocks` is iterated."""
    if method not in METHODS:
        raise ValueError(f"unknown affinity method {method!r}; expected one of {METHODS}")
    traces = np.asarray(traces)
    n_animals, n_neurons, f_max = traces.shape
    rate = float(sampling_rate)
    n_frames = np.full(n_animals, f_max) if n_frames is None else np.asarray(n_frames)
    animals = [str(a) for a in animals] or [str(a) for a in range(n_animals)]
    present = np.asarray(present, dtype=bool)
    pairs = pair_index(n_neurons)
    mask = observed_pairs(present, pairs)
    fpb, bins = check_binning(n_frames, rate, f_max, layout, animals, bin_seconds, smooth_seconds)
    concatenated = layout == "concatenated"
    starts = np.concatenate(([0], np.cumsum(bins)[:-1])) if concatenated else np.zeros(n_animals, int)
    n_time = int(bins.sum()) if concatenated else int(bins[0])
    n_slots = 1 if concatenated else n_animals
    signals, level_rows = [], []
    for a in range(n_animals):
        rows = np.flatnonzero(present[:, a])
        level_rows.append(rows)
        n_a = int(n_frames[a])
        if f_max and n_a < fpb:
            raise ValueError(f"recording of {n_a} frames is shorter than one bin of {bin_seconds:g} s; "
                             "lower affinity.bin_seconds")
        pos, neg = _animal_signals(np.asarray(traces[a, rows, :n_a], dtype=np.float64), rows, n_neurons,
                                   rate=rate, method=method, smooth_seconds=smooth_seconds,
                                   noise_threshold=noise_threshold, lag_seconds=lag_seconds)
        n_bins = int(bins[a]) if concatenated else n_time
        signals.append(_AnimalSignals(pos, neg, bin_edges(n_a, fpb)[:n_bins], int(starts[a]),
                                      0 if concatenated else a))
    if concatenated:
        time = np.concatenate([start_s + bin_centres(int(n), rate, bin_seconds) for n in n_frames])
        time_animal = np.repeat(np.arange(n_animals, dtype=np.int32), bins)
    else:
        time = start_s + bin_centres(int(n_frames[0]), rate, bin_seconds)
        time_animal = None
    window = max(3, int(round(window_seconds * rate)))
    blocks = pair_blocks(n_neurons, n_time * n_slots * 4, block_bytes)
    return AffinityPlan((pairs.shape[0], n_time, n_slots), n_neurons, pairs, mask, time, time_animal, fpb, blocks,
                        signals, window, float(shared_level), level_rows)


def stack_affinity(
    traces: np.ndarray,
    present: np.ndarray,
    *,
    sampling_rate: float,
    neurons,
    animals,
    n_frames=None,
    layout: str = "aligned",
    method: str = "differential",
    bin_seconds: float = 5.0,
    smooth_seconds: float = 0.5,
    noise_threshold: float = 1.0,
    window_seconds: float = 30.0,
    shared_level: float = 0.5,
    lag_seconds: float = 0.0,
    start_s: float = 0.0,
    advance=None,
) -> AffinityTensor:
    """Affinities of every animal of stacked traces, in the given layout (pure).

    ``traces`` float (A, N, F) on one name axis (NaN where absent or past an animal's last
    frame), ``present`` bool (N, A), ``n_frames`` (A,) frames of each animal (default: all F),
    at ``sampling_rate`` Hz with frame 0 at ``start_s`` s. Serves the ``affinity`` stage and
    :func:`dynconn.affinity_tensor`. A bin too long for the recordings raises
    :class:`~dynconn.validation.InvalidArgument` naming ``bin_seconds`` or ``smooth_seconds``.
    """

    plan = plan_affinity(traces, present, sampling_rate=sampling_rate, n_frames=n_frames, layout=layout,
                         method=method, bin_seconds=bin_seconds, smooth_seconds=smooth_seconds,
                         noise_threshold=noise_threshold, window_seconds=window_seconds,
                         shared_level=shared_level, lag_seconds=lag_seconds, start_s=start_s,
                         animals=animals)
    affinity = np.empty(plan.shape, dtype=np.float32)
    for p0, values in plan.blocks(advance):
        affinity[p0 : p0 + values.shape[0]] = values
    mask, pairs, time, time_animal, fpb = plan.mask, plan.pairs, plan.time, plan.time_animal, plan.frames_per_bin
    animals = [str(a) for a in animals]
    return AffinityTensor(affinity, mask, pairs, [str(n) for n in neurons], animals, time, time_animal,
                          layout, fpb)


# ----------------------------------------------------------------------------- stage
def params(config: Config) -> dict:
    return dict(config["affinity"])


def run(config: Config, workdir: Path, console: Console, upstream: dict) -> tuple[dict, dict]:
    """Affinities of every animal, in the ingest artifact's layout; ``affinity.h5``'s content."""
    ing = upstream["ingest"]
    traces, present = ing["traces"], ing["present"]
    rate = float(ing.attrs["sampling_rate"])
    layout = str(ing.attrs.get("layout", "aligned"))
    t0 = float(ing.attrs.get("start_s", 0.0))
    p = config["affinity"]
    n_animals, n_neurons, f_max = traces.shape
    n_frames = np.asarray(ing["n_frames"]) if "n_frames" in ing else np.full(n_animals, f_max)
    animals = [str(a) for a in ing["animals"]]
    from .ingest import rate_key  # (ingest imports this module)

    check_bins(p, rate, n_frames, layout, animals, rate_key(config))
    fpb = frames_per_bin(p["bin_seconds"], rate)
    concatenated = layout == "concatenated"
    plan = plan_affinity(
        traces, present, sampling_rate=rate, n_frames=n_frames, layout=layout, method=p["method"],
        bin_seconds=p["bin_seconds"], smooth_seconds=p["smooth_seconds"], noise_threshold=p["noise_threshold"],
        window_seconds=p["window_seconds"], shared_level=p["shared_level"], lag_seconds=p["lag_seconds"],
        start_s=t0, animals=animals)
    mask = plan.mask
    # non-finite values are reported by the pipeline with the animal and neurons (dynconn.runner.guards)
    unobserved = ~mask.any(axis=1)
    if unobserved.any():
        count = int(unobserved.sum())
        warn(f"{plural(count, 'pair')} {'is' if count == 1 else 'are'} never recorded together in any animal")

    def blocks():
        # computed while the artifact is written, block by block: the tensor is never whole in memory
        with console.progress("affinity (pair blocks × bins × animals)", plan.steps) as advance:
            yield from plan.blocks(advance)

    tensor = StreamedDataset(plan.shape, np.float32, blocks(), plan.chunk_rows)
    # the solver's scan of the tensor, done here on each block as it is written (SCAN_ATTR)
    from ..methods.ntf import ObservedScan

    scan = ObservedScan(plan.shape, mask, plan.time_animal if concatenated else None)
    tensor.checks.append(scan.add)
    datasets = {
        "affinity": tensor,
        "pairs": plan.pairs,
        "mask": mask,
        "neurons": ing["neurons"],
        "animals": ing["animals"],
        "time": plan.time,
    }
    if concatenated:
        datasets["time_animal"] = plan.time_animal
    if "covariates/values" in ing:
        cov = ing["covariates/values"]  # (A, C, F)
        if concatenated:
            binned = np.concatenate([bin_means(cov[a, :, : n_frames[a]], fpb) for a in range(n_animals)],
                                    axis=1)[:, :, None]
        else:
            binned = np.stack([bin_means(cov[a, :, : n_frames[a]], fpb) for a in range(n_animals)], axis=2)
        datasets["covariates/names"] = ing["covariates/names"]
        datasets["covariates/values"] = binned.astype(np.float64)
    bound = {"mask": mask, **({"time_animal": plan.time_animal} if concatenated else {})}
    return datasets, {"sampling_rate": rate, "frames_per_bin": fpb, "layout": layout,
                      SCAN_ATTR: lambda: scan_record(scan, {"affinity": tensor.checksum,
                                                            **{k: checksum(v) for k, v in bound.items()}})}


#: Root attribute of affinity.h5: the solver's scan of the tensor (dynconn.methods.ntf.ObservedScan:
#: finite, non-negative, 0 at the unobserved entries, and the sum of squares of the observed ones),
#: done while the tensor is written, so that factorize need not read the tensor once more for it.
#: JSON ``{"format", "scan_rows", "sum_of_squares" (null when the scan found the tensor not clean),
#: "checksums": {dataset: sha256}}``: valid for the datasets with those checksums only (the
#: artifact's verified checksums then vouch for the value).
SCAN_ATTR = "observed_scan"
SCAN_FORMAT = "dynconn.observed-scan/1"


def scan_record(scan, checksums: dict) -> dict:
    """The :data:`SCAN_ATTR` value of a finished :class:`~dynconn.methods.ntf.ObservedScan`,
    bound to the checksums of the datasets it depends on (``affinity``, ``mask``, and
    ``time_animal`` in the concatenated layout)."""
    return {"format": SCAN_FORMAT, "scan_rows": int(scan.rows), "sum_of_squares": scan.value(),
            "checksums": dict(checksums)}

"""The affinity maths on hand-checkable traces."""

import numpy as np
import pytest

from dynconn.stages.affinity import (
    binned_gram, compute_affinity, differential_signal, mtd_signal, pair_index, bin_centres,
    observed_pairs,
)

RATE = 4.0


def spiky_trace(seed=0, n=800):
    """A GCaMP-like trace: sparse events with a decay, plus noise."""
    rng = np.random.default_rng(seed)
    events = (rng.random(n) < 0.03) * rng.uniform(0.5, 1.5, n)
    kernel = np.exp(-np.arange(20) / 4.0)
    return np.convolve(events, kernel)[:n] + rng.normal(0, 0.02, n)


def affinity_of(a, b, **kw):
    kw.setdefault("lag_seconds", 0.0)  # steps 1-5: the instantaneous product (the default, said here)
    out = compute_affinity(np.stack([a, b]), sampling_rate=RATE, bin_seconds=5.0, **kw)
    assert out.shape == (1, len(a) // 20)
    return out[0]


def test_pair_index_is_row_major_upper_triangle():
    assert pair_index(4).tolist() == [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]]
    assert pair_index(189).shape == (17766, 2)


def test_binned_gram_by_hand():
    pos = np.array([[1.0, 2.0, 0.0, 0.0], [3.0, 1.0, 0.0, 5.0]])
    neg = np.array([[0.0, 0.0, 2.0, 0.0], [0.0, 0.0, 4.0, 0.0]])
    out = binned_gram(pos, neg, 2, pair_index(2))
    # bin 0: (1*3 + 2*1)/2 = 2.5 ; bin 1: (0*0 + 0*5 + 2*4 + 0*0)/2 = 4
    np.testing.assert_allclose(out, [[2.5, 4.0]])  # small integers: exact in float32


def test_trace_with_itself_is_mean_absolute_change():
    x = spiky_trace()
    s = differential_signal(x[None], 0.5 * RATE, 1.0)[0]
    expected = np.abs(s)[: 40 * 20].reshape(40, 20).mean(axis=1)
    # float32 affinities, means of 20 products: ~sqrt(20) x 6e-8 relative, 1e-5 leaves a factor 40;
    # atol for bins near 0, where 1e-6 is below any event (> 1 here)
    np.testing.assert_allclose(affinity_of(x, x), expected, rtol=1e-5, atol=1e-6)
    assert affinity_of(x, x).max() > 1.0  # events are well above the noise


def test_trace_with_its_negation_is_zero():
    x = spiky_trace()
    assert np.all(affinity_of(x, -x) == 0)


def test_trace_with_constant_is_zero():
    x = spiky_trace()
    out = affinity_of(x, np.full_like(x, 3.0))
    assert np.all(out == 0) and np.isfinite(out).all()


@pytest.mark.parametrize("method", ["differential", "mtd"])
def test_scaled_and_offset_copy_equals_itself(method):
    x = spiky_trace(1)
    # normalisation removes scale and offset in float64; the float32 result then rounds at 6e-8
    np.testing.assert_allclose(affinity_of(x, 7.5 * x + 120.0, method=method),
                               affinity_of(x, x, method=method), rtol=1e-5, atol=1e-6)


def test_raw_dff_and_zscore_inputs_agree():
    x = spiky_trace(2)
    raw = 500 * (1 + x)
    dff = (raw - raw.mean()) / raw.mean()
    z = (raw - raw.mean()) / raw.std()
    a = compute_affinity(np.stack([raw, 2 * raw + 3]), sampling_rate=RATE)
    for other in (dff, z):
        b = compute_affinity(np.stack([other, 2 * other + 3]), sampling_rate=RATE)
        # raw ~500 vs dF/F ~1: the raw trace's rounding (float64, ~1e-13 of 500) is not the limit;
        # the float32 affinity of a rate of change is: a difference of neighbours amplifies the
        # 6e-8 rounding by |x| / |dx| ~ 1e2, so ~1e-5; 1e-4 leaves a factor 10
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_matches_elementwise_definition():
    rng = np.random.default_rng(3)
    traces = np.stack([spiky_trace(k) for k in range(5)]) + rng.normal(0, 0.01, (5, 800))
    s = differential_signal(traces, 0.5 * RATE, 1.0)
    out = compute_affinity(traces, sampling_rate=RATE, lag_seconds=0.0)
    for p, (i, j) in enumerate(pair_index(5)):
        inst = np.sqrt(np.maximum(s[i] * s[j], 0))
        # the elementwise float64 definition vs the float32 binned Gram: float32 rounding (6e-8)
        # of sums of 20 terms; atol for near-zero bins
        np.testing.assert_allclose(out[p], inst[:800].reshape(40, 20).mean(1), rtol=1e-5, atol=1e-6)
    # with a lag of 1 s (±2 frames at 4 Hz): each part is first its maximum over frames t-2..t+2
    def spread(part):
        padded = np.pad(part, ((0, 0), (2, 2)))
        return np.max([padded[:, k : k + part.shape[1]] for k in range(5)], axis=0)

    pos, neg = spread(np.sqrt(np.maximum(s, 0))), spread(np.sqrt(np.maximum(-s, 0)))
    out = compute_affinity(traces, sampling_rate=RATE, lag_seconds=1.0)
    for p, (i, j) in enumerate(pair_index(5)):
        inst = pos[i] * pos[j] + neg[i] * neg[j]
        np.testing.assert_allclose(out[p], inst.reshape(40, 20).mean(1), rtol=1e-5, atol=1e-6)
    z = mtd_signal(traces, 0.5 * RATE)
    out = compute_affinity(traces, sampling_rate=RATE, method="mtd")
    for p, (i, j) in enumerate(pair_index(5)):
        inst = np.maximum(z[i] * z[j], 0)
        np.testing.assert_allclose(out[p], inst.reshape(40, 20).mean(1), rtol=1e-5, atol=1e-6)


def test_stronger_co_change_gives_larger_affinity():
    x = spiky_trace(4)
    weak = x + 0.5 * spiky_trace(9)  # shares x's events, plus its own
    unrelated = spiky_trace(10)
    a_self, a_weak, a_none = (affinity_of(x, y).mean() for y in (x, weak, unrelated))
    assert a_self > a_weak > a_none >= 0


def test_non_negative_and_symmetric():
    traces = np.stack([spiky_trace(k) for k in range(4)])
    out = compute_affinity(traces, sampling_rate=RATE)
    rev = compute_affinity(traces[::-1], sampling_rate=RATE)
    assert (out >= 0).all()
    # pair (0,1) in the reversed order is pair (2,3)
    np.testing.assert_allclose(out[0], rev[5], rtol=1e-6)  # the same float32 products, other order: ulps


def test_window_correlation_itself_and_negation():
    x = spiky_trace(6)
    # a correlation of 1 computed in float32 windows of 20 frames: 1 - ~1e-6
    np.testing.assert_allclose(affinity_of(x, 2 * x + 1, method="window-corr"), 1.0, atol=1e-5)
    assert np.all(affinity_of(x, -x, method="window-corr") == 0)


def test_bin_centres_and_mask():
    np.testing.assert_allclose(bin_centres(45, 4.0, 5.0), [2.375, 7.375])  # exact binary fractions
    present = np.array([[True, True], [True, False], [True, True]])
    np.testing.assert_array_equal(observed_pairs(present, pair_index(3)),
                                  [[True, False], [True, True], [True, False]])


def test_too_short_recording_is_a_clear_error():
    with pytest.raises(ValueError, match="bin_seconds"):
        compute_affinity(np.zeros((2, 10)), sampling_rate=RATE, bin_seconds=5.0)


# ----------------------------------------------------------------------------- shared level
def test_bin_levels_by_hand():
    """The level is the bin's median over the pairs; a bin where fewer than half the pairs have
    any affinity keeps its values (median 0)."""
    from dynconn.stages.affinity import MIN_LEVEL_PAIRS, above_level, bin_levels

    values = np.zeros((MIN_LEVEL_PAIRS, 2), dtype=np.float32)  # 45 pairs, 2 bins
    values[:5, 0] = 2.0  # bin 0: a motif's 5 pairs, the other 40 at 0
    values[:30, 1] = 1.0  # bin 1: 30 of 45 pairs co-change by 1 (an artefact) ...
    values[0, 1] = 3.0  # ... and one pair by 3
    levels = bin_levels(values, 0.5)
    np.testing.assert_array_equal(levels, [0.0, 1.0])  # the 23rd of 45 sorted values
    out = above_level(values.copy(), levels)
    np.testing.assert_array_equal(out[:, 0], values[:, 0])  # unchanged
    np.testing.assert_array_equal(out[:, 1], np.r_[2.0, np.zeros(MIN_LEVEL_PAIRS - 1)])
    # 0 = none; fewer pairs than MIN_LEVEL_PAIRS: no level either
    np.testing.assert_array_equal(bin_levels(values, 0.0), [0.0, 0.0])
    np.testing.assert_array_equal(bin_levels(values[1:], 0.5), [0.0, 0.0])


def test_a_bin_where_most_neurons_change_together_loses_what_they_share():
    """12 neurons: a motion-like step in all of them at 50 s, a 3-neuron event at 150 s. Above
    the median the all-neuron bin keeps only what a pair has beyond most pairs (little, for
    steps of one size); in the motif's bin, where 3 of 66 pairs co-change, the level is the
    noise's and the motif's pairs keep nearly all of theirs."""
    from dynconn.stages.affinity import bin_levels

    n, f = 12, 800  # 200 s at 4 Hz, 40 bins of 5 s
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.02, (n, f))
    x[:, 200:] += 1.0  # every neuron steps at frame 200 (50 s, bin 10)
    x[:3, 600:] += 1.0  # neurons 0-2 step at frame 600 (150 s, bin 30)
    # the instantaneous product (lag 0), whose values these bounds were read from
    raw = compute_affinity(x, sampling_rate=RATE, shared_level=0.0, lag_seconds=0.0)
    out = compute_affinity(x, sampling_rate=RATE, shared_level=0.5, lag_seconds=0.0)
    level = bin_levels(raw, 0.5)
    np.testing.assert_array_equal(out, np.maximum(raw - level, 0))  # float32 both: exact
    motif = np.flatnonzero(pair_index(n).max(axis=1) < 3)  # pairs (0,1), (0,2), (1,2)
    assert (raw[:, 10] > 1).all()  # every pair co-changes in bin 10 ...
    # ... the half below the median keeps nothing, none more than an eighth (pairs 8.4-10.1, median 9.1)
    assert (out[:, 10] == 0).mean() >= 0.5 and out[:, 10].max() < 0.125 * raw[:, 10].min()
    assert level[30] < 0.02 * raw[motif, 30].min()  # the motif's bin: the noise's level
    assert (out[motif, 30] > 0.98 * raw[motif, 30]).all()
    # fewer than 10 neurons: left as they are
    small = x[:9]
    np.testing.assert_array_equal(compute_affinity(small, sampling_rate=RATE, shared_level=0.5),
                                  compute_affinity(small, sampling_rate=RATE, shared_level=0.0))


def test_lag_frames_and_spread_by_hand():
    from dynconn.stages.affinity import lag_frames, spread_change

    # half the lag, in frames, rounded half up: 1 s at 2 Hz -> 1; at 1.7 Hz 0.85 -> 1; 0.5 s at 2 Hz -> 1
    assert [lag_frames(1.0, 2.0), lag_frames(1.0, 1.7), lag_frames(0.5, 2.0), lag_frames(0.4, 2.0),
            lag_frames(0.0, 4.0)] == [1, 1, 1, 0, 0]
    part = np.array([[0.0, 0.0, 3.0, 0.0, 0.0, 0.0, 1.0], [2.0, 0.0, 0.0, 0.0, 0.0, 5.0, 0.0]])
    np.testing.assert_array_equal(spread_change(part, 1), [[0, 3, 3, 3, 0, 1, 1], [2, 2, 0, 0, 5, 5, 5]])
    assert spread_change(part, 0) is part


def test_a_lag_between_two_neurons_is_tolerated_up_to_lag_seconds():
    """Brief transients (decay 1 frame) in two neurons, the second 0.75 s (3 frames at 4 Hz)
    later. Instantaneously the pair keeps a third of what the unshifted pair (x with itself)
    has; with lag_seconds 1.5 (each change spread over ±3 frames) 70 %. An unrelated neuron
    with transients of its own stays below half of the lagged pair either way (measured 2.1x
    and 2.0x: the spread makes a motif's lagged members weigh like its synchronous ones, it
    does not sharpen the contrast with chance coincidences)."""
    def brief(seed, n=800):
        rng = np.random.default_rng(seed)
        events = (rng.random(n) < 0.03) * rng.uniform(0.5, 1.5, n)
        return np.convolve(events, np.exp(-np.arange(8) / 1.0))[:n] + rng.normal(0, 0.02, n)

    x, other = brief(5), brief(11)
    late = np.r_[np.zeros(3), x[:-3]] + np.random.default_rng(1).normal(0, 0.02, x.size)
    for lag, kept in ((0.0, (0.25, 0.45)), (1.5, (0.6, 0.8))):
        same, lagged, none = (affinity_of(x, y, lag_seconds=lag).mean() for y in (x, late, other))
        assert kept[0] < lagged / same < kept[1], (lag, lagged / same)
        assert none < 0.5 * lagged

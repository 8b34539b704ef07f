"""Preprocessing options: detrending, smoothing, resampling, offsets, window, names,
exclusion, bilateral merging, covariates. Pure functions first, then through the stage."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import cli
from dynconn.io.artifacts import read_h5
from dynconn.errors import InputError
from dynconn.stages.ingest import (bilateral_map, detrend_traces, excluded, grid_length, merge_rows, normalize_name,
                            running_baseline, smooth_traces, to_grid)
from formats_util import write_config


def write_csv(path, names, traces):
    """A CSV animal: header of names, one row per frame of ``traces`` (frames, neurons)."""
    rows = "\n".join(",".join(format(v, ".10g") for v in row) for row in traces)
    path.write_text(",".join(names) + "\n" + rows + "\n")


def run_ingest(folder, animals, **sections):
    config = write_config(folder, animals, **sections)
    result = cli("ingest", config, "-q")
    return result, (read_h5(folder / "run" / "ingest.h5") if result.exit_code == 0 else None)


# ----------------------------------------------------------------------------- detrending
def test_linear_detrend_removes_the_slope_and_keeps_the_level():
    t = np.arange(400.0)
    x = 10 + 0.05 * t + np.sin(t / 7)
    x[[5, 90]] = np.nan
    out = detrend_traces(x[None], "linear", window=100, percentile=10)[0]
    ok = np.isfinite(out)
    # not rounding: the planted trend is 0.05 per frame; what is left is the sine's own fitted
    # slope over a finite window (~1e-4), 50x below the trend
    assert abs(np.polyfit(t[ok], out[ok], 1)[0]) < 1e-3
    # the mean is restored in float64 on values ~10: sums of 200 terms round to ~1e-14 relative
    assert np.nanmean(out) == pytest.approx(np.nanmean(x), rel=1e-9)


def test_exponential_detrend_flattens_bleaching_and_needs_positive_baseline():
    rng = np.random.default_rng(0)
    t = np.arange(3000.0)
    events = np.convolve((rng.random(t.size) < 0.01) * 1.0, np.exp(-np.arange(30) / 6.0))[: t.size]
    bleach = np.exp(-t / 1500)
    out = detrend_traces((300 * bleach * (1 + events))[None], "exponential", window=240, percentile=10)[0]
    base = running_baseline(out[None], 240, 10)[0]
    assert np.ptp(base) / base.mean() < 0.05  # was exp(-2): an 86 % drop
    with pytest.raises(InputError, match="neuron RIML: baseline fluorescence ≤ 0.*detrend: linear"):
        detrend_traces(-np.ones((1, 100)), "exponential", window=20, percentile=10, names=["RIML"])


# ----------------------------------------------------------------------------- smoothing
def test_smoothing_reduces_noise_and_ignores_missing_frames():
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (1, 5000))
    assert 0.24 < np.std(smooth_traces(x, 4.0)) < 0.29  # white noise through a Gaussian of SD 4: 1/sqrt(2·sqrt(pi)·4) = 0.266
    flat = np.full((1, 50), 3.0)
    flat[0, 20:23] = np.nan
    out = smooth_traces(flat, 2.0)
    assert np.isnan(out[0, 20:23]).all()
    np.testing.assert_allclose(out[0, np.isfinite(out[0])], 3.0)  # no pull toward 0 at gaps or edges


# ----------------------------------------------------------------------------- time grid
def test_resampling_downsampling_is_accurate_and_does_not_alias():
    t10 = np.arange(1000) / 10.0
    slow = np.sin(2 * np.pi * 0.1 * t10)[None]
    n = grid_length(1000, 10.0, 4.0)
    out = to_grid(slow, 10.0, 4.0, n)
    t4 = np.arange(n) / 4.0
    error = np.abs(out[0] - np.sin(2 * np.pi * 0.1 * t4))
    assert n == 400 and error[2:-2].max() < 0.01 and error.max() < 0.05  # the low-pass dulls the edges a little
    fast = np.sin(2 * np.pi * 4.5 * t10)[None]  # above the new Nyquist (1 Hz): would alias at 0.5 Hz
    assert np.nanmax(np.abs(to_grid(fast, 10.0, 2.0, grid_length(1000, 10.0, 2.0)))) < 0.1


def test_upsampling_hits_the_original_frames_exactly():
    x = np.random.default_rng(2).normal(size=(3, 50))
    out = to_grid(x, 2.0, 4.0, grid_length(50, 2.0, 4.0))
    assert out.shape == (3, 99)
    # float32 output of a float64 interpolation: 6e-8 at the original frames; the midpoints are
    # computed from float32-rounded neighbours, relative to their (possibly small) mean: 1e-5
    np.testing.assert_allclose(out[:, ::2], x, rtol=1e-6)
    np.testing.assert_allclose(out[:, 1::2], (x[:, :-1] + x[:, 1:]) / 2, rtol=1e-5)


def test_offsets_and_window_shift_whole_frames_exactly():
    x = np.arange(40.0)[None]
    # recording started 2 s after protocol time 0 at 4 Hz: 8 missing frames first
    out = to_grid(x, 4.0, 4.0, grid_length(40, 4.0, 4.0, offset_s=2.0), offset_s=2.0)
    assert out.shape == (1, 48) and np.isnan(out[0, :8]).all() and (out[0, 8:] == x[0]).all()
    # window 1–5 s of a recording that started 1 s before the protocol
    n = grid_length(40, 4.0, 4.0, offset_s=-1.0, start_s=1.0, stop_s=5.0)
    out = to_grid(x, 4.0, 4.0, n, offset_s=-1.0, start_s=1.0)
    assert n == 16 and out[0, 0] == 8.0 and out[0, -1] == 23.0


def test_offsets_align_a_protocol_through_the_stage(tmp_path):
    rng = np.random.default_rng(3)
    base = 100 + rng.normal(0, 1, (240, 3)).cumsum(axis=0) ** 2 / 50
    write_csv(tmp_path / "a.csv", ["X", "Y", "Z"], base[12:])  # protocol starts 3 s before its frame 0
    write_csv(tmp_path / "b.csv", ["X", "Y", "Z"], base[:228])  # protocol starts at its frame 0
    result, art = run_ingest(tmp_path, [{"name": "a", "path": "a.csv", "offset_s": 3.0},
                                        {"name": "b", "path": "b.csv"}],
                             data={"sampling_rate": 4.0}, ingest={"normalize": "none", "max_crop_fraction": 0.1})
    assert result.exit_code == 0, result.output
    a, b = art["traces"][0], art["traces"][1]
    assert np.isnan(a[:, :12]).all()
    np.testing.assert_allclose(a[:, 12:], b[:, 12:], rtol=1e-6)  # the same protocol time lines up (float32: 6e-8)


def test_window_and_resample_through_the_stage(tmp_path):
    t = np.arange(400)
    x = 100 + 10 * np.sin(t / 9.0)[:, None] * np.ones(2)
    write_csv(tmp_path / "a.csv", ["AVAL", "RIML"], x)  # 4 Hz, 100 s
    write_csv(tmp_path / "b.csv", ["AVAL", "RIML"], x[::2])  # 2 Hz, 100 s
    animals = [{"name": "a", "path": "a.csv", "sampling_rate": 4.0}, {"name": "b", "path": "b.csv", "sampling_rate": 2.0}]
    result, art = run_ingest(tmp_path, animals, data={"resample": 4.0},
                             ingest={"normalize": "none", "start_s": 10.0, "stop_s": 60.0})
    assert result.exit_code == 0, result.output
    assert art["traces"].shape == (2, 2, 200) and art["time"][0] == 10.0
    assert art["n_frames"].tolist() == [200, 200] and art.attrs["sampling_rate"] == 4.0
    assert art["rates"].tolist() == [4.0, 2.0]
    # not rounding: a 2 Hz copy upsampled to 4 Hz misses the dropped frames' detail, up to ~0.1
    # of this trace's unit amplitude between samples
    np.testing.assert_allclose(art["traces"][1], art["traces"][0], atol=0.2)


# ----------------------------------------------------------------------------- names
def test_name_normalisation_and_exclusion_rules():
    assert normalize_name(" aval\t") == "AVAL" and normalize_name("Sm dDl") == "SMDDL"
    assert normalize_name(" aval ", "keep") == "aval"
    names = ["AVAL", "AVAR", "RIML", "SMDDL", "w1#3"]
    assert excluded(names, ["ava*", "SMDD[LR]"]).tolist() == [True, True, False, True, False]
    assert excluded(names, [" riml "]).tolist() == [False, False, True, False, False]


def test_names_through_the_stage_duplicates_and_exclude(tmp_path):
    x = np.random.default_rng(4).uniform(50, 60, (80, 3))
    write_csv(tmp_path / "a.csv", [" aval", "RIML ", "smddl"], x)
    result, art = run_ingest(tmp_path, [{"name": "a", "path": "a.csv"}], data={"sampling_rate": 4.0},
                             ingest={"exclude": ["SMDD?"]})
    assert result.exit_code == 0, result.output
    assert list(art["neurons"]) == ["AVAL", "RIML"]
    write_csv(tmp_path / "a.csv", ["AVAL", "RIML", "aval "], x)
    result, _ = run_ingest(tmp_path, [{"name": "a", "path": "a.csv"}], data={"sampling_rate": 4.0})
    assert result.exit_code == 1
    assert "a.csv: neuron name 'AVAL' used twice (columns 0 'AVAL' and 2 'aval')" in result.stderr


# ----------------------------------------------------------------------------- bilateral merging
def test_bilateral_rule():
    names = {"AVAL", "AVAR", "AVL", "PVR", "RMED", "RMEV", "RMEL", "RMER", "SMDDL", "SMDDR", "IL2L", "IL2R",
             "ASEL", "w1#4"}
    assert bilateral_map(names) == {"AVAL": "AVA", "AVAR": "AVA", "RMEL": "RME", "RMER": "RME",
                                    "SMDDL": "SMDD", "SMDDR": "SMDD", "IL2L": "IL2", "IL2R": "IL2"}


def test_merge_rows_averages_homologs_nan_aware():
    x = np.array([[1.0, 2.0, np.nan], [3.0, 4.0, 5.0], [7.0, 7.0, 7.0]], dtype=np.float32)
    names, out = merge_rows(["AVAL", "AVAR", "RIS"], x, {"AVAL": "AVA", "AVAR": "AVA"})
    assert names == ["AVA", "RIS"]
    np.testing.assert_allclose(out, [[2.0, 3.0, 5.0], [7.0, 7.0, 7.0]])


def test_merge_bilateral_through_the_stage(tmp_path):
    rng = np.random.default_rng(5)
    x = rng.uniform(50, 60, (80, 3))
    write_csv(tmp_path / "a.csv", ["AVAL", "AVAR", "RIML"], x)
    write_csv(tmp_path / "b.csv", ["AVAR", "RIMR", "AVL"], x)
    result, art = run_ingest(tmp_path, [{"name": "a", "path": "a.csv"}, {"name": "b", "path": "b.csv"}],
                             data={"sampling_rate": 4.0}, ingest={"normalize": "none", "merge_bilateral": True})
    assert result.exit_code == 0, result.output
    neurons = list(art["neurons"])
    assert neurons == ["AVA", "AVL", "RIM"]  # AVL has no partner; RIML/RIMR meet across animals
    assert art["present"].tolist() == [[True, True], [False, True], [True, True]]
    np.testing.assert_allclose(art["traces"][0, 0], (x[:, 0] + x[:, 1]) / 2, rtol=1e-6)  # float32 traces: 6e-8


# ----------------------------------------------------------------------------- covariates
def test_covariates_interpolated_binned_and_missing_as_nan(tmp_path):
    rng = np.random.default_rng(6)
    x = rng.uniform(50, 60, (200, 2))  # 4 Hz, 50 s
    write_csv(tmp_path / "a.csv", ["AVAL", "RIML"], x)
    write_csv(tmp_path / "b.csv", ["AVAL", "RIML"], x)
    stamps = np.arange(0, 50.0, 0.5)  # behaviour at 2 Hz with its own time_s
    (tmp_path / "a-beh.csv").write_text("time_s,velocity,reversal\n" + "".join(
        f"{s},{2 * s},{int(s >= 25)}\n" for s in stamps))
    (tmp_path / "b-beh.csv").write_text("velocity\n" + "".join(f"{-k}\n" for k in range(200)))  # one row per frame
    animals = [{"name": "a", "path": "a.csv", "covariates": "a-beh.csv"},
               {"name": "b", "path": "b.csv", "covariates": "b-beh.csv"}]
    config = write_config(tmp_path, animals, data={"sampling_rate": 4.0}, affinity={"bin_seconds": 5.0})
    result = cli("run", config, "-q", "--until", "affinity")
    assert result.exit_code == 0, result.output
    assert "b: no covariate reversal; left missing" in result.stderr
    ing = read_h5(tmp_path / "run" / "ingest.h5")
    assert list(ing["covariates/names"]) == ["velocity", "reversal"]
    values = ing["covariates/values"]  # (A, C, F)
    assert values.shape == (2, 2, 200) and values.dtype == np.float64
    frames = np.arange(199) / 4.0
    # interpolated onto the frames; the covariate's times are written with 6 digits in its CSV
    np.testing.assert_allclose(values[0, 0, :199], 2 * frames, rtol=1e-6)
    assert np.isnan(values[1, 1]).all()
    aff = read_h5(tmp_path / "run" / "affinity.h5")
    binned = aff["covariates/values"]  # (C, T, A)
    assert binned.shape == (2, 10, 2)
    # float64 bin means of integers: default rtol 1e-7 is far above their ~1e-16 rounding
    np.testing.assert_allclose(binned[0, :, 1], [-np.arange(20 * b, 20 * b + 20).mean() for b in range(10)])
    assert binned[1, :4, 0].max() == 0 and binned[1, 5:, 0].min() == 1  # bin 4 holds the 0→1 ramp

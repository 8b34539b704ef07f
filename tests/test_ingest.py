"""Ingest: gap filling, baseline, normalisation, alignment, readers."""

import numpy as np
import pytest

from dynconn.io import readers
from dynconn.errors import InputError
from dynconn.stages.ingest import align_animals, interpolate_gaps, normalize_traces, running_baseline


def test_interpolate_short_gaps_only():
    x = np.array([[1.0, np.nan, 3.0, np.nan, np.nan, np.nan, 7.0, np.nan]])
    out, filled = interpolate_gaps(x, max_gap=2)
    np.testing.assert_allclose(out[0, :3], [1, 2, 3])  # linear interpolation of integers: exact to 1 ulp
    assert np.isnan(out[0, 3:6]).all()  # a 3-frame gap is longer than the limit
    assert out[0, 7] == 7.0  # trailing 1-frame gap: nearest value
    assert filled == 2


def test_running_baseline_follows_bleaching_not_events():
    t = np.arange(4000) / 4.0
    bleach = 100 * np.exp(-t / 1000)  # strong bleaching: -6 % per 60 s window
    rng = np.random.default_rng(0)
    events = np.convolve((rng.random(t.size) < 0.01) * 50.0, np.exp(-np.arange(20) / 4.0))[: t.size]
    base = running_baseline((bleach + events)[None], window=240, percentile=10)[0]
    assert np.max(np.abs(base - bleach) / bleach) < 0.05


def test_dff_removes_bleaching():
    t = np.arange(2000) / 4.0
    f = 300 * np.exp(-t / 1000)
    dff = normalize_traces(f[None], "dff", window=240, percentile=10)
    assert np.max(np.abs(dff)) < 0.05


def test_dff_rejects_non_positive_baseline_and_names_the_neuron():
    with pytest.raises(InputError, match="AVAL.*zscore"):
        normalize_traces(np.zeros((1, 100)) - 1, "dff", window=40, percentile=10, names=["AVAL"])


def test_zscore_handles_negative_and_constant_traces():
    rng = np.random.default_rng(1)
    x = np.stack([rng.normal(-5, 2, 1000), np.full(1000, -3.0)])
    z = normalize_traces(x, "zscore", window=200, percentile=50)
    assert np.isfinite(z).all()
    assert 0.7 < np.std(z[0]) < 1.4 and np.all(z[1] == 0)


def test_align_animals_union_and_mask():
    neurons, present, aligned = align_animals(
        [["B", "A"], ["C", "A"]], [np.array([[1.0, 1.0], [2.0, 2.0]]), np.array([[3.0, 3.0], [4.0, 4.0]])])
    assert neurons == ["A", "B", "C"]
    assert present.tolist() == [[True, True], [True, False], [False, True]]
    assert aligned[0, 0, 0] == 2.0 and aligned[1, 0, 0] == 4.0 and aligned[1, 2, 0] == 3.0
    assert np.isnan(aligned[0, 2]).all() and aligned.dtype == np.float32


def test_csv_reader_blank_cells_are_missing(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("A,B\n1,2\n,NaN\n3,4\n")
    rec = readers.read_recording(p)
    assert rec.names == ["A", "B"]
    assert np.isnan(rec.traces[1]).all() and rec.traces[2].tolist() == [3, 4]


def test_names_file_rules(tmp_path):
    p = tmp_path / "n.csv"
    p.write_text("index,name\n0,AVAL\n1,\n2,RIML\n")
    assert readers.read_names_file(p, 3) == ["AVAL", None, "RIML"]
    with pytest.raises(InputError, match="lists 3 neurons but the data have 4"):
        readers.read_names_file(p, 4)


def test_hdf5_time_axis(tmp_path):
    import h5py

    data = np.arange(12.0).reshape(3, 4)  # neurons × time
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["g/traces"] = data
    (tmp_path / "n.csv").write_text("0,A\n1,B\n2,C\n")
    rec = readers.read_recording(tmp_path / "a.h5", dataset="g/traces", time_axis=1,
                                 names_path=tmp_path / "n.csv")
    np.testing.assert_array_equal(rec.traces, data.T)

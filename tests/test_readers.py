"""Every input format, written by its own library, ingests to the same traces."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import cli
from dynconn.io import readers
from dynconn.io.artifacts import read_h5
from dynconn.errors import InputError
from formats_util import (NAMES, reference_traces, write_config, write_mat5, write_mat73, write_names,
                          write_nwb, write_suite2p)

RAW = {"normalize": "none"}  # ingest keeps the traces as read, so they can be compared


def ingest(folder, animal: dict, **sections) -> tuple[list[str], np.ndarray, float]:
    """Run `dynconn ingest` on one animal; its neuron names, traces (frames, neurons), rate."""
    config = write_config(folder, [{"name": "w1", **animal}], ingest=RAW, **sections)
    result = cli("ingest", config, "-q")
    assert result.exit_code == 0, result.output
    art = read_h5(folder / "run" / "ingest.h5")
    return list(art["neurons"]), art["traces"][0].T, float(art.attrs["sampling_rate"])


def same_traces(neurons, traces, names, reference, rtol=1e-6):
    # ingest stores float32 traces: 6e-8 relative; files already in float32 (suite2p) add their own
    order = [neurons.index(n) for n in names]
    np.testing.assert_allclose(traces[:, order], reference, rtol=rtol)


@pytest.fixture
def x():
    return reference_traces()


def test_nwb_fluorescence_with_names_and_rate_from_the_series(tmp_path, x):
    write_nwb(tmp_path / "w1.nwb", x, NAMES, rate=5.0)
    neurons, traces, rate = ingest(tmp_path, {"path": "w1.nwb", "name_column": "neuron_name"})
    assert rate == 5.0  # no data.sampling_rate: the series gives it
    assert sorted(neurons) == sorted(NAMES)
    same_traces(neurons, traces, NAMES, x)


def test_nwb_series_picks_dff_among_several(tmp_path, x):
    dff = x / 100.0 - 1.0
    write_nwb(tmp_path / "w1.nwb", x, NAMES, dff=dff)
    with pytest.raises(InputError, match="several series.*pick one with `series:`"):
        readers.read_recording(tmp_path / "w1.nwb")
    neurons, traces, _ = ingest(tmp_path, {"path": "w1.nwb", "name_column": "neuron_name", "series": "DfOverF"})
    same_traces(neurons, traces, NAMES, dff)


def test_nwb_timestamps_and_unnamed_rois(tmp_path, x):
    write_nwb(tmp_path / "w1.nwb", x, NAMES, rate=None, timestamps=True)
    neurons, traces, rate = ingest(tmp_path, {"path": "w1.nwb"})
    assert rate == pytest.approx(4.0)  # a rate from frame times: their float64 mean spacing
    assert neurons == sorted(f"w1#{k}" for k in range(len(NAMES)))  # ROI ids, unidentified
    same_traces(neurons, traces, [f"w1#{k}" for k in range(len(NAMES))], x)
    with pytest.raises(InputError, match="no column 'label' \\(columns: .*neuron_name"):
        readers.read_recording(tmp_path / "w1.nwb", name_column="label")


def test_mat_v5_scipy(tmp_path, x):
    write_mat5(tmp_path / "w1.mat", x, variable="F_traces")
    write_names(tmp_path / "n.csv", NAMES)
    neurons, traces, rate = ingest(tmp_path, {"path": "w1.mat", "neurons": "n.csv"}, data={"sampling_rate": 4.0})
    same_traces(neurons, traces, NAMES, x)  # the only numeric matrix is found without `variable:`
    rec = readers.read_recording(tmp_path / "w1.mat", variable="F_traces", names_path=tmp_path / "n.csv")
    np.testing.assert_array_equal(rec.traces, x)


def test_mat_v73_h5py_is_read_in_matlab_orientation(tmp_path, x):
    write_mat73(tmp_path / "w1.mat", x, variable="traces")
    write_names(tmp_path / "n.csv", NAMES)
    neurons, traces, _ = ingest(tmp_path, {"path": "w1.mat", "variable": "traces", "neurons": "n.csv"},
                                data={"sampling_rate": 4.0})
    same_traces(neurons, traces, NAMES, x)
    # time_axis refers to MATLAB's view: neurons × time there means time_axis 1
    write_mat73(tmp_path / "t.mat", x.T.copy(), variable="traces")
    rec = readers.read_recording(tmp_path / "t.mat", variable="traces", time_axis=1, names_path=tmp_path / "n.csv")
    np.testing.assert_array_equal(rec.traces, x)


def test_suite2p_folder_neuropil_cells_and_rate(tmp_path, x):
    folder, cell_rois = write_suite2p(tmp_path / "suite2p" / "plane0", x, fs=2.5)
    roi_names = [None] * (len(cell_rois) + 2)
    for roi, name in zip(cell_rois, NAMES):
        roi_names[roi] = name
    write_names(tmp_path / "rois.csv", roi_names)  # indexes the ROIs of F.npy, cells or not
    neurons, traces, rate = ingest(tmp_path, {"path": "suite2p/plane0", "neurons": "rois.csv",
                                              "drop_unlabeled": True})
    assert rate == 2.5  # from ops.npy
    same_traces(neurons, traces, NAMES, x, rtol=1e-5)  # float32 files, F - 0.7 Fneu: cancellation ~1e2 x 6e-8
    # another coefficient gives other traces; without names, cells keep their ROI numbers
    rec = readers.read_recording(folder, neuropil_coefficient=0.0)
    assert not np.allclose(rec.traces, x, rtol=1e-3)  # other traces differ by the neuropil term, ~0.7
    assert rec.index.tolist() == cell_rois and rec.n_columns == len(cell_rois) + 2


def test_npz_and_tsv(tmp_path, x):
    np.savez(tmp_path / "w1.npz", traces=x, other=np.zeros(3))
    write_names(tmp_path / "n.csv", NAMES)
    neurons, traces, _ = ingest(tmp_path, {"path": "w1.npz", "dataset": "traces", "neurons": "n.csv"},
                                data={"sampling_rate": 4.0})
    same_traces(neurons, traces, NAMES, x)
    (tmp_path / "w2.tsv").write_text("\t".join(NAMES) + "\n" + "\n".join("\t".join(format(v, ".17g") for v in row) for row in x))
    neurons, traces, _ = ingest(tmp_path, {"path": "w2.tsv"}, data={"sampling_rate": 4.0})
    same_traces(neurons, traces, NAMES, x)


def test_format_override_and_unknown_extension(tmp_path, x):
    np.save(tmp_path / "w1.dat", x)  # numpy appends .npy
    (tmp_path / "w1.dat.npy").rename(tmp_path / "w1.dat")
    write_names(tmp_path / "n.csv", NAMES)
    with pytest.raises(InputError, match="unknown file type '.dat'; set `format:`"):
        readers.read_recording(tmp_path / "w1.dat", names_path=tmp_path / "n.csv")
    rec = readers.read_recording(tmp_path / "w1.dat", fmt="npy", names_path=tmp_path / "n.csv")
    np.testing.assert_array_equal(rec.traces, x)


def test_csv_reader_blank_cells_and_fast_path_agree(tmp_path):
    (tmp_path / "a.csv").write_text("A,B\n1,2\n,NaN\n3,4\n")
    (tmp_path / "b.csv").write_text("A,B\n1,2\nnan,nan\n3,4\n")
    a, b = readers.read_recording(tmp_path / "a.csv"), readers.read_recording(tmp_path / "b.csv")
    np.testing.assert_array_equal(a.traces, b.traces)
    assert np.isnan(a.traces[1]).all() and a.names == ["A", "B"]


def test_rate_required_when_the_file_gives_none_and_file_rate_wins(tmp_path, x):
    (tmp_path / "w1.csv").write_text(",".join(NAMES) + "\n" + "\n".join(",".join(map(str, r)) for r in x))
    config = write_config(tmp_path, [{"name": "w1", "path": "w1.csv"}])
    result = cli("ingest", config, "-q")
    assert result.exit_code == 1
    assert result.stderr.strip() == ("error: data.sampling_rate: required, w1.csv does not give its sampling rate "
                                     "(or set data.animals[0].sampling_rate)")
    write_nwb(tmp_path / "w2.nwb", x, NAMES, rate=5.0)
    config = write_config(tmp_path, [{"name": "w2", "path": "w2.nwb"}], data={"sampling_rate": 4.0})
    result = cli("ingest", config, "-q")
    assert result.exit_code == 0 and "gives 5 Hz, data.sampling_rate 4 Hz; using the file's rate" in result.stderr

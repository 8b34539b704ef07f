"""Builders of real-structured input files, each written with its format's own library.

Used by the reader, ingest-error and layout tests. Every builder takes traces as a
(frames, neurons) array, the layout a lab's file would have after its own pipeline.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import h5py
import numpy as np
import yaml

NAMES = ["AVAL", "AVAR", "RIML", "RIMR", "SMDDL", "AVL"]


def reference_traces(n_frames: int = 160, n_neurons: int = len(NAMES), seed: int = 0) -> np.ndarray:
    """Positive fluorescence-like traces (frames, neurons): baseline, events, noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_frames)
    events = np.zeros((n_frames, n_neurons))
    for j in range(n_neurons):
        for start in rng.choice(n_frames - 10, size=4, replace=False):
            events[start:, j] += rng.uniform(1, 3) * np.exp(-(t[start:] - start) / 6.0)
    return 100.0 + 40.0 * events + rng.normal(0, 1.0, size=(n_frames, n_neurons))


def write_names(path: Path, names: list[str | None]) -> Path:
    path.write_text("index,name\n" + "".join(f"{i},{n or ''}\n" for i, n in enumerate(names)))
    return path


def write_config(folder: Path, animals: list[dict], **sections) -> Path:
    """A config.yaml in ``folder`` with ``workdir: run``; ``sections`` are merged in
    (``data`` keys go beside ``animals``)."""
    data = {"animals": animals, **sections.pop("data", {})}
    config = {"workdir": "run", "data": data, **sections}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def write_nwb(path: Path, traces: np.ndarray, names: list[str], *, rate: float | None = 4.0,
              dff: np.ndarray | None = None, ophys: bool = True, timestamps: bool = False) -> Path:
    """An NWB file as suite2p/CaImAn exports write it: a device, an imaging plane, an ``ophys``
    processing module with ImageSegmentation → PlaneSegmentation (one image mask per ROI and a
    ``neuron_name`` column) and a Fluorescence RoiResponseSeries (frames × ROIs); optionally a
    DfOverF series too. ``ophys=False`` writes only acquisition metadata (no traces)."""
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.ophys import DfOverF, Fluorescence, ImageSegmentation, OpticalChannel

    nwb = NWBFile(session_description="dynconn test", identifier=path.stem,
                  session_start_time=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc))
    device = nwb.create_device(name="Microscope")
    channel = OpticalChannel(name="GCaMP", description="green", emission_lambda=525.0)
    plane = nwb.create_imaging_plane(name="ImagingPlane", optical_channel=channel, imaging_rate=rate or 4.0,
                                     description="head ganglia", device=device, excitation_lambda=488.0,
                                     indicator="GCaMP7f", location="head")
    if ophys:
        module = nwb.create_processing_module(name="ophys", description="segmented traces")
        segmentation = ImageSegmentation()
        module.add(segmentation)
        table = segmentation.create_plane_segmentation(name="PlaneSegmentation", description="ROIs",
                                                       imaging_plane=plane)
        table.add_column("neuron_name", "NeuroPAL identity")
        for k, name in enumerate(names):
            mask = np.zeros((8, 8))
            mask[k % 8, k // 8] = 1.0
            table.add_roi(image_mask=mask, neuron_name=name)
        region = table.create_roi_table_region(region=list(range(len(names))), description="all ROIs")
        timing = ({"timestamps": np.arange(traces.shape[0]) / 4.0} if timestamps
                  else {"rate": rate, "starting_time": 0.0})
        fluorescence = Fluorescence(name="Fluorescence")
        module.add(fluorescence)
        fluorescence.create_roi_response_series(name="RoiResponseSeries", data=traces, rois=region,
                                                unit="a.u.", **timing)
        if dff is not None:
            ratio = DfOverF(name="DfOverF")
            module.add(ratio)
            ratio.create_roi_response_series(name="RoiResponseSeries", data=dff, rois=region,
                                             unit="ratio", **timing)
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return path


def write_mat5(path: Path, traces: np.ndarray, variable: str = "traces") -> Path:
    """A MATLAB v5 .mat (scipy.io.savemat) with the traces, a struct and a char variable."""
    import scipy.io

    scipy.io.savemat(str(path), {variable: traces, "info": {"rate": 4.0, "lab": "test"},
                                 "note": "frames x neurons"}, format="5")
    return path


def write_mat73(path: Path, traces: np.ndarray, variable: str = "traces") -> Path:
    """A MATLAB v7.3 .mat written with h5py as MATLAB does: 512-byte user block with the MAT
    header, column-major arrays (h5py sees MATLAB's (F, N) matrix as (N, F)), MATLAB_class."""
    with h5py.File(path, "w", userblock_size=512) as f:
        ds = f.create_dataset(variable, data=np.ascontiguousarray(traces.T))
        ds.attrs["MATLAB_class"] = np.bytes_("double")
        rate = f.create_dataset("rate", data=np.array([[4.0]]))
        rate.attrs["MATLAB_class"] = np.bytes_("double")
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    with open(path, "r+b") as fh:
        fh.write(header.ljust(116, b" ") + b"\0" * 8 + b"\x00\x02" + b"IM")
    return path


def write_suite2p(folder: Path, traces: np.ndarray, *, fs: float = 4.0, coefficient: float = 0.7,
                  non_cells: tuple[int, ...] = (1, 4), seed: int = 1) -> tuple[Path, list[int]]:
    """A suite2p plane folder: F.npy/Fneu.npy (ROIs, frames) float32 with F = cell + c·Fneu,
    iscell.npy (ROIs, 2) with some non-cell ROIs interleaved, ops.npy (pickled dict with fs).
    Returns the folder and the ROI numbers of the cells, in order."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_cells = traces.shape[1]
    n_rois = n_cells + len(non_cells)
    cell_rois = [r for r in range(n_rois) if r not in non_cells]
    fneu = rng.uniform(20, 40, size=(n_rois, traces.shape[0]))
    F = rng.uniform(50, 80, size=(n_rois, traces.shape[0]))
    for j, roi in enumerate(cell_rois):
        F[roi] = traces[:, j] + coefficient * fneu[roi]
    iscell = np.zeros((n_rois, 2))
    iscell[cell_rois, 0] = 1.0
    iscell[:, 1] = rng.uniform(0, 1, n_rois)
    np.save(folder / "F.npy", F.astype(np.float32))
    np.save(folder / "Fneu.npy", fneu.astype(np.float32))
    np.save(folder / "iscell.npy", iscell)
    np.save(folder / "ops.npy", np.array({"fs": fs, "nframes": traces.shape[0]}, dtype=object))
    return folder, cell_rois


# ----------------------------------------------------------------------------- every format, as bytes
#: Each supported format: (file name, the animal's config entry besides name/path). A names file
#: ``names.csv`` (one row per column of the file) goes beside the formats that need one.
FORMAT_ENTRIES = {
    "csv": ("w.csv", {}),
    "tsv": ("w.tsv", {}),
    "npy": ("w.npy", {"neurons": "names.csv"}),
    "npz": ("w.npz", {"neurons": "names.csv"}),
    "hdf5": ("w.h5", {"dataset": "g/traces", "neurons": "names.csv"}),
    "mat5": ("w.mat", {"variable": "traces", "neurons": "names.csv"}),
    "mat73": ("w.mat", {"variable": "traces", "neurons": "names.csv"}),
    "nwb": ("w.nwb", {"name_column": "neuron_name"}),
    "suite2p": ("w_plane0", {"neurons": "names.csv"}),
}


def write_format(folder: Path, fmt: str, traces: np.ndarray, names: list[str]) -> tuple[Path, dict, int]:
    """Write ``traces`` (frames, neurons) named ``names`` into ``folder`` in format ``fmt``, as a
    lab's tool would, with the names file the format needs. Returns the file (or suite2p
    folder), the config entry's keys besides name/path, and the number of names-file rows."""
    filename, entry = FORMAT_ENTRIES[fmt]
    path = folder / filename
    n_names = traces.shape[1]
    if fmt in ("csv", "tsv"):
        sep = "," if fmt == "csv" else "\t"
        path.write_text(sep.join(names) + "\n" + "".join(sep.join(f"{v:.5g}" for v in row) + "\n"
                                                        for row in traces))
    elif fmt == "npy":
        np.save(path, traces)
    elif fmt == "npz":
        np.savez(path, traces=traces)
    elif fmt == "hdf5":
        with h5py.File(path, "w") as f:
            f.create_dataset("g/traces", data=traces)
    elif fmt == "mat5":
        write_mat5(path, traces)
    elif fmt == "mat73":
        write_mat73(path, traces)
    elif fmt == "nwb":
        write_nwb(path, traces, names)
    elif fmt == "suite2p":
        _, cells = write_suite2p(path, traces)
        n_names = traces.shape[1] + 2  # the names file indexes the ROIs of F.npy, cells or not
        by_roi = dict(zip(cells, names))
        write_names(folder / "names.csv", [by_roi.get(r) for r in range(n_names)])
        return path, dict(entry), n_names
    if "neurons" in entry:
        write_names(folder / "names.csv", names)
    return path, dict(entry), n_names

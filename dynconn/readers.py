"""Readers for per-animal trace files.

Each reader returns a :class:`Recording`: traces as a (frames, neurons) float64 array
plus the neurons' names (``None`` = unidentified). Errors are one line naming the file.

Formats (``format:`` in an animal's config entry, or chosen by extension):

==========  ==========================  ==================================================
format      extensions                  notes
==========  ==========================  ==================================================
csv / tsv   .csv, .tsv, .txt            header row = neuron names, one row per frame
npy         .npy                        2-D array; ``neurons`` names file required
npz         .npz                        ``dataset`` names the array (default: the only one)
hdf5        .h5, .hdf5                  ``dataset`` names the array; ``time_axis``
==========  ==========================  ==================================================
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from .errors import InputError

EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".txt": "csv",
    ".npy": "npy",
    ".npz": "npz",
    ".h5": "hdf5",
    ".hdf5": "hdf5",
}


@dataclass
class Recording:
    """One animal's raw traces: ``traces`` (frames, neurons) float64, ``names`` per column."""

    traces: np.ndarray
    names: list[str | None]


def detect_format(path: Path, declared: str | None) -> str:
    if declared:
        return declared
    fmt = EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(sorted(EXTENSIONS))
        raise InputError(f"{path}: unknown file type {path.suffix!r}; set `format:` (known: {known})")
    return fmt


def read_names_file(path: Path, n_columns: int | None = None) -> list[str | None]:
    """Read a names file ``index,name`` (0-based index; blank name = unidentified)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"{path}: neurons file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read neurons file ({exc})") from None
    rows = [r for r in csv.reader(io.StringIO(text)) if any(c.strip() for c in r)]
    if rows and rows[0] and not rows[0][0].strip().lstrip("-").isdigit():
        rows = rows[1:]  # header
    entries: dict[int, str | None] = {}
    for lineno, row in enumerate(rows, start=2):
        try:
            index = int(row[0])
        except (ValueError, IndexError):
            raise InputError(f"{path}: row {lineno}: expected `index,name`, got {','.join(row)!r}") from None
        name = row[1].strip() if len(row) > 1 else ""
        if index in entries:
            raise InputError(f"{path}: index {index} listed twice")
        entries[index] = name or None
    if not entries:
        raise InputError(f"{path}: neurons file is empty")
    count = max(entries) + 1
    if n_columns is not None and count != n_columns:
        raise InputError(
            f"{path}: names file lists {count} neurons but the data have {n_columns}; "
            "they must match one to one"
        )
    if sorted(entries) != list(range(count)):
        raise InputError(f"{path}: indices must run 0..{count - 1} without gaps")
    return [entries[i] for i in range(count)]


def _read_delimited(path: Path, delimiter: str) -> Recording:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from None
    rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    rows = [r for r in rows if r and any(c.strip() for c in r)]
    if not rows:
        raise InputError(f"{path}: file is empty")
    header = [h.strip() for h in rows[0]]
    if len(rows) < 2:
        raise InputError(f"{path}: no data rows under the header")
    values = np.empty((len(rows) - 1, len(header)), dtype=np.float64)
    for r, row in enumerate(rows[1:]):
        if len(row) != len(header):
            raise InputError(
                f"{path}: line {r + 2} has {len(row)} cells, the header has {len(header)}"
            )
        for c, cell in enumerate(row):
            cell = cell.strip()
            if cell == "" or cell.lower() in ("nan", "na", "null"):
                values[r, c] = np.nan
                continue
            try:
                values[r, c] = float(cell)
            except ValueError:
                raise InputError(
                    f"{path}: line {r + 2}, column {header[c]!r}: not a number: {cell!r}"
                ) from None
    return Recording(values, [h or None for h in header])


def _oriented(path: Path, array: np.ndarray, time_axis: int, where: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 2:
        raise InputError(f"{path}: {where} has shape {array.shape}; expected a 2-D time × neurons array")
    if array.dtype.kind not in "fiub":
        raise InputError(f"{path}: {where} holds {array.dtype} values, expected numbers")
    return np.asarray(array if time_axis == 0 else array.T, dtype=np.float64)


def read_array(path: Path, fmt: str, dataset: str | None, time_axis: int) -> np.ndarray:
    """A 2-D (frames, neurons) float64 array from an .npy/.npz/.h5 file."""
    if fmt == "npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: not a readable .npy array ({exc})") from None
        return _oriented(path, array, time_axis, "the array")
    if fmt == "npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                keys = list(z.keys())
                if dataset is None:
                    if len(keys) != 1:
                        raise InputError(f"{path}: holds arrays {keys}; name one with `dataset:`")
                    dataset = keys[0]
                if dataset not in keys:
                    raise InputError(f"{path}: no array {dataset!r} (it has {keys})")
                array = z[dataset]
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: not a readable .npz archive ({exc})") from None
        return _oriented(path, array, time_axis, f"array {dataset!r}")
    if fmt == "hdf5":
        if not dataset:
            raise InputError(f"{path}: HDF5 input needs `dataset:` (the path of the trace array)")
        try:
            with h5py.File(path, "r") as f:
                if dataset not in f:
                    raise InputError(f"{path}: no dataset {dataset!r} in this HDF5 file")
                obj = f[dataset]
                if not isinstance(obj, h5py.Dataset):
                    raise InputError(f"{path}: {dataset!r} is a group, not a dataset")
                array = obj[()]
        except OSError as exc:
            raise InputError(f"{path}: not a readable HDF5 file ({exc})") from None
        return _oriented(path, array, time_axis, f"dataset {dataset!r}")
    raise InputError(f"{path}: format {fmt!r} is not an array format")


def read_recording(
    path: Path,
    *,
    fmt: str | None = None,
    dataset: str | None = None,
    time_axis: int = 0,
    names_path: Path | None = None,
) -> Recording:
    """Read one animal's traces and neuron names (see the module docstring for formats)."""
    if not path.exists():
        raise InputError(f"{path}: data file not found")
    if path.is_file() and path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty")
    fmt = detect_format(path, fmt)
    if fmt in ("csv", "tsv"):
        rec = _read_delimited(path, "," if fmt == "csv" else "\t")
        if time_axis == 1:
            rec = Recording(rec.traces.T.copy(), rec.names)  # pragma: no cover - rare layout
        if names_path is not None:
            rec.names = read_names_file(names_path, rec.traces.shape[1])
        return rec
    traces = read_array(path, fmt, dataset, time_axis)
    if names_path is None:
        raise InputError(f"{path}: {fmt} input needs a `neurons:` names file (index,name)")
    return Recording(traces, read_names_file(names_path, traces.shape[1]))


def read_stimuli(path: Path) -> list[dict]:
    """Stimulus epochs from a CSV with header ``label,start_s,stop_s``."""
    if not path.exists():
        raise InputError(f"{path}: stimuli file not found")
    try:
        rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from None
    epochs = []
    for lineno, row in enumerate(rows, start=2):
        try:
            label = row["label"].strip()
            start, stop = float(row["start_s"]), float(row["stop_s"])
        except (KeyError, AttributeError):
            raise InputError(f"{path}: expected header label,start_s,stop_s") from None
        except (TypeError, ValueError):
            raise InputError(f"{path}: line {lineno}: start_s/stop_s must be numbers") from None
        if not np.isfinite([start, stop]).all() or stop <= start or start < 0:
            raise InputError(f"{path}: line {lineno}: need 0 ≤ start_s < stop_s, got {start:g}, {stop:g}")
        epochs.append({"label": label, "start_s": start, "stop_s": stop})
    return epochs

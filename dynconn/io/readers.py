"""Readers for per-animal trace files.

Each reader returns a :class:`Recording`: traces as a (frames, neurons) float64 array, the
neurons' names (``None`` = unidentified), the sampling rate when the file states one, and
the column (ROI) index each neuron came from. Errors are :class:`InputError` with one line
naming the file and the problem.

Formats (``format:`` in an animal's config entry, or chosen by extension):

==========  ==========================  ==================================================
format      extensions                  notes
==========  ==========================  ==================================================
csv / tsv   .csv, .tsv, .txt            header row = neuron names, one row per frame
                                        (``header: false`` + ``neurons``: no header row)
npy         .npy                        2-D array; ``neurons`` names file required
npz         .npz                        ``dataset`` names the array (default: the only one)
hdf5        .h5, .hdf5                  ``dataset`` names the array; ``time_axis``
mat         .mat                        v5 (scipy.io) or v7.3 (HDF5, h5py); ``variable``
nwb         .nwb                        RoiResponseSeries (pynwb); ``series``,
                                        ``name_column``; rate from the series
suite2p     a folder                    F.npy, Fneu.npy, iscell.npy (ops.npy for the rate);
                                        ``F − neuropil_coefficient·Fneu``, cells only
==========  ==========================  ==================================================
"""

from __future__ import annotations

import csv
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from ..config import first_overlap, overlap_text
from ..errors import InputError

EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".txt": "csv",
    ".npy": "npy",
    ".npz": "npz",
    ".h5": "hdf5",
    ".hdf5": "hdf5",
    ".mat": "mat",
    ".nwb": "nwb",
}

#: Formats whose files carry no neuron names: a ``neurons:`` names file is required.
NEEDS_NAMES_FILE = ("npy", "npz", "hdf5", "mat")


@dataclass
class Recording:
    """One animal's raw traces.

    ``traces`` (frames, neurons) float64 (float32 when the file stores float32); ``names`` per column (None = unidentified);
    ``rate`` the sampling rate in Hz when the file states one, else None; ``index`` the
    column / ROI index in the file of each neuron (unidentified neurons are called
    ``<animal>#<index>``); ``n_columns`` the number of columns (ROIs) in the file, which a
    names file must match.
    """

    traces: np.ndarray
    names: list[str | None]
    rate: float | None = None
    index: np.ndarray = field(default=None)  # type: ignore[assignment]
    n_columns: int = -1

    def __post_init__(self) -> None:
        if self.index is None:
            self.index = np.arange(self.traces.shape[1])
        if self.n_columns < 0:
            self.n_columns = self.traces.shape[1]


def detect_format(path: Path, declared: str | None) -> str:
    """The format of ``path``: ``declared`` if given, a folder is suite2p, else by extension."""
    if declared:
        return declared
    if path.is_dir():
        return "suite2p"
    fmt = EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(sorted(EXTENSIONS))
        raise InputError(f"{path}: unknown file type {path.suffix!r}; set `format:` (known: {known})")
    return fmt


def read_text(path: Path, what: str = "file") -> str:
    """A UTF-8 text file (a byte-order mark is dropped); one-line InputError naming ``what``."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read {what} ({exc})") from None


def read_names_file(path: Path, n_columns: int | None = None, n_rows: int | None = None,
                    transposed_fix: str = "set `time_axis` to the other axis") -> list[str | None]:
    """Read a names file ``index,name`` (0-based index; blank name = unidentified).

    ``n_columns``: the neurons the data have (the count must match); ``n_rows``: their
    frames, so that a count matching the frames instead says the array looks transposed,
    with ``transposed_fix`` (the ``time_axis`` setting that reads it the other way).
    """
    text = read_text(path, "neurons file")
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
    if n_columns is not None and count != n_columns and count == n_rows:
        raise InputError(
            f"{path}: names file lists {count} neurons, which is the data's number of frames "
            f"({n_rows} frames × {n_columns} neurons as read): frames and neurons look "
            f"swapped; {transposed_fix}"
        )
    if n_columns is not None and count != n_columns:
        raise InputError(
            f"{path}: names file lists {count} neurons but the data have {n_columns}; "
            "they must match one to one"
        )
    if sorted(entries) != list(range(count)):
        raise InputError(f"{path}: indices must run 0..{count - 1} without gaps")
    return [entries[i] for i in range(count)]


def looks_numeric(row: list[str]) -> bool:
    """Every non-blank cell of a row is a number (and one is not blank): a data row, not a
    header of names."""
    cells = [c.strip() for c in row if c.strip()]
    if not cells:
        return False
    try:
        for c in cells:
            float(c)
    except ValueError:
        return False
    return True


def read_table(path: Path, delimiter: str = ",", what: str = "file", *, header: bool | None = None,
               no_header_fix: str = "add a header row of names") -> tuple[list[str], np.ndarray]:
    """A delimited text table: its header (stripped) and its rows as float64 (rows, columns).

    ``header``: True, the first row is the header; False, there is none (every row is data,
    the names are blank); None, the first row is the header and one holding only numbers
    is refused with ``no_header_fix`` (a file without a header would otherwise lose its
    first frame and get numbers as names). Blank, ``nan``, ``NA`` and ``null`` cells are
    NaN; any other non-number is an error naming the line and the column.
    """
    text = read_text(path, what)
    rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    # an empty line is skipped; a line of delimiters only (`,,,`) is a row of missing values,
    # a frame, which must keep its place in time
    rows = [r for r in rows if len(r) > 1 or (r and r[0].strip())]
    if not rows:
        raise InputError(f"{path}: file is empty")
    if header is False:
        rows = [[""] * len(rows[0])] + rows
    elif header is None and looks_numeric(rows[0]):
        first = delimiter.join(c.strip() for c in rows[0])
        first = first if len(first) <= 40 else first[:37] + "..."
        raise InputError(f"{path}: the first row ({first!r}) holds only numbers, so the file has no "
                         f"header row; {no_header_fix}")
    header = [h.strip() for h in rows[0]]
    if len(rows) < 2:
        raise InputError(f"{path}: no data rows under the header")
    try:  # fast path: every cell a number numpy can parse
        values = np.array(rows[1:], dtype=np.float64)
        if values.shape == (len(rows) - 1, len(header)):
            return header, values
    except ValueError:
        pass
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
    return header, values


def _oriented(path: Path, array: np.ndarray, time_axis: int, where: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 2:
        raise InputError(f"{path}: {where} has shape {array.shape}; expected a 2-D time × neurons array")
    if array.dtype.kind not in "fiub":
        raise InputError(f"{path}: {where} holds {array.dtype} values, expected numbers")
    # float32 files stay float32 (half the memory of a large recording); the rest become float64
    dtype = np.float32 if array.dtype == np.float32 else np.float64
    return np.asarray(array if time_axis == 0 else array.T, dtype=dtype)


def read_array(path: Path, fmt: str, dataset: str | None, time_axis: int) -> np.ndarray:
    """A 2-D (frames, neurons) float64 array from an .npy/.npz/.h5 file."""
    if fmt == "npy":
        try:
            array = np.load(path, allow_pickle=False)
        except Exception as exc:  # ValueError, OSError, EOFError... on a damaged or foreign file
            raise InputError(f"{path}: not a readable .npy array ({_one_line(exc)})") from None
        if isinstance(array, np.lib.npyio.NpzFile):
            array.close()
            raise InputError(f"{path}: is an .npz archive, not an .npy array; set `format: npz`")
        return _oriented(path, array, time_axis, "the array")
    if fmt == "npz":
        try:
            z = np.load(path, allow_pickle=False)
        except Exception as exc:  # BadZipFile, ValueError, EOFError... on a damaged or foreign file
            raise InputError(f"{path}: not a readable .npz archive ({_one_line(exc)})") from None
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise InputError(f"{path}: is an .npy array, not an .npz archive; set `format: npy`")
        with z:
            keys = list(z.keys())
            if dataset is None:
                if len(keys) != 1:
                    raise InputError(f"{path}: holds arrays {keys}; name one with `dataset:`")
                dataset = keys[0]
            if dataset not in keys:
                raise InputError(f"{path}: no array {dataset!r} (it has {keys})")
            try:
                array = z[dataset]
            except Exception as exc:  # a truncated member: BadZipFile, zlib.error, EOFError...
                raise InputError(f"{path}: array {dataset!r} is not readable ({_one_line(exc)})") from None
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


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line (for errors from third-party readers)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


# ----------------------------------------------------------------------------- MATLAB
_MAT_NUMERIC = {"double", "single", "int8", "uint8", "int16", "uint16", "int32", "uint32",
                "int64", "uint64", "logical"}


def read_mat(path: Path, variable: str | None, time_axis: int) -> np.ndarray:
    """A 2-D (frames, neurons) float64 array from a MATLAB file.

    v7.3 files (HDF5 inside) are read with h5py, older ones (v5) with scipy.io. ``variable``
    names the array (default: the only numeric matrix with more than one row and column);
    ``a.b`` reaches a field of a struct. ``time_axis`` refers to the array
    as MATLAB shows it (h5py sees v7.3 arrays transposed; this is undone here).
    """
    if h5py.is_hdf5(path):
        array, where = _read_mat73(path, variable)
    else:
        array, where = _read_mat5(path, variable)
    return _oriented(path, array, time_axis, where)


def _read_mat5(path: Path, variable: str | None) -> tuple[np.ndarray, str]:
    import scipy.io

    try:
        listing = scipy.io.whosmat(str(path))
    except Exception as exc:  # scipy raises ValueError, MatReadError, TypeError... on junk
        raise InputError(f"{path}: not a readable .mat file ({_one_line(exc)})") from None
    names = [name for name, _, _ in listing]
    if variable is None:
        numeric = [n for n, shape, cls in listing if cls in _MAT_NUMERIC and len(shape) == 2 and min(shape) > 1]
        if len(numeric) != 1:
            raise InputError(f"{path}: holds variables {names}; name the traces with `variable:`")
        variable = numeric[0]
    top, *fields = variable.split(".")
    if top not in names:
        raise InputError(f"{path}: no variable {top!r} (it has {names})")
    try:
        value = scipy.io.loadmat(str(path), variable_names=[top], simplify_cells=True)[top]
    except Exception as exc:
        raise InputError(f"{path}: cannot read variable {top!r} ({_one_line(exc)})") from None
    for i, name in enumerate(fields):
        if not isinstance(value, dict) or name not in value:
            where = ".".join([top, *fields[:i]])
            raise InputError(f"{path}: {where!r} has no field {name!r}")
        value = value[name]
    if not isinstance(value, np.ndarray):
        raise InputError(f"{path}: variable {variable!r} is not a numeric matrix")
    return value, f"variable {variable!r}"


def _read_mat73(path: Path, variable: str | None) -> tuple[np.ndarray, str]:
    try:
        with h5py.File(path, "r") as f:
            names = [k for k in f.keys() if not k.startswith("#")]
            if variable is None:
                numeric = [k for k in names if isinstance(f[k], h5py.Dataset) and f[k].ndim == 2
                           and min(f[k].shape) > 1 and _matlab_class(f[k]) in _MAT_NUMERIC]
                if len(numeric) != 1:
                    raise InputError(f"{path}: holds variables {names}; name the traces with `variable:`")
                variable = numeric[0]
            key = variable.replace(".", "/")
            if variable.split(".")[0] not in names:
                raise InputError(f"{path}: no variable {variable.split('.')[0]!r} (it has {names})")
            if key not in f:
                raise InputError(f"{path}: no variable {variable!r} in this .mat file")
            obj = f[key]
            if not isinstance(obj, h5py.Dataset) or _matlab_class(obj) not in _MAT_NUMERIC:
                raise InputError(f"{path}: variable {variable!r} is not a numeric matrix")
            array = obj[()]
    except OSError as exc:
        raise InputError(f"{path}: not a readable .mat (v7.3/HDF5) file ({_one_line(exc)})") from None
    return np.asarray(array).T, f"variable {variable!r}"  # MATLAB is column-major


def _matlab_class(ds: h5py.Dataset) -> str:
    cls = ds.attrs.get("MATLAB_class", b"double")
    return cls.decode() if isinstance(cls, bytes) else str(cls)


# ----------------------------------------------------------------------------- NWB
def read_nwb(path: Path, series: str | None, name_column: str | None) -> Recording:
    """Traces of one ``RoiResponseSeries`` of an NWB file (pynwb).

    Series are looked for in every processing module (``ophys`` by convention) — inside
    ``Fluorescence`` / ``DfOverF`` containers or on their own — and in ``acquisition``.
    They are called ``Container/name`` (or ``name`` when on their own); ``series`` picks one
    by that label, by its bare name or by its container's name when unambiguous. Data are
    (time, ROIs) as the NWB standard fixes; the rate is the series' ``rate`` or, with
    ``timestamps``, 1 / their median spacing. Names come from column ``name_column`` of the
    ROI table the series points to; without it neurons are unidentified (ROI ids).
    """
    try:
        import pynwb
        from pynwb.ophys import RoiResponseSeries
    except ImportError:  # pragma: no cover - pynwb is a dependency
        raise InputError(f"{path}: reading NWB needs pynwb (pip install pynwb)") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # namespace/version chatter from hdmf
        try:
            nwb_io = pynwb.NWBHDF5IO(str(path), "r")
        except Exception as exc:
            raise InputError(f"{path}: not a readable NWB file ({_one_line(exc)})") from None
        try:
            try:
                nwb = nwb_io.read()
            except Exception as exc:
                raise InputError(f"{path}: not a readable NWB file ({_one_line(exc)})") from None
            found: dict[str, object] = {}
            sources = [m.data_interfaces for m in nwb.processing.values()] + [nwb.acquisition]
            for interfaces in sources:
                for label, obj in interfaces.items():
                    if isinstance(obj, RoiResponseSeries):
                        found[label] = obj
                    elif hasattr(obj, "roi_response_series"):
                        for name, s in obj.roi_response_series.items():
                            found[f"{label}/{name}"] = s
            if not found:
                raise InputError(
                    f"{path}: no optical-physiology traces (no RoiResponseSeries, Fluorescence or "
                    "DfOverF in a processing module)"
                )
            label = _pick_series(path, found, series)
            s = found[label]
            try:
                data = np.asarray(s.data[()], dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise InputError(f"{path}: series {label!r} does not hold numbers ({_one_line(exc)})") from None
            rois = np.asarray(s.rois.data[()], dtype=int).ravel()
            if data.ndim == 1:
                data = data[:, None]
            if data.ndim != 2:
                raise InputError(f"{path}: series {label!r} has shape {data.shape}; expected (time, ROIs)")
            if data.shape[1] != rois.size and data.shape[0] == rois.size:
                data = data.T  # written ROIs × time against the standard
            if data.shape[1] != rois.size:
                raise InputError(
                    f"{path}: series {label!r} has {data.shape[1]} columns but {rois.size} ROIs"
                )
            rate = _series_rate(path, label, s)
            table = s.rois.table
            ids = np.asarray(table.id.data[()], dtype=int)[rois]
            if name_column is None:
                names: list[str | None] = [None] * rois.size
            else:
                if name_column not in table.colnames:
                    raise InputError(
                        f"{path}: ROI table {table.name!r} has no column {name_column!r} "
                        f"(columns: {', '.join(table.colnames)})"
                    )
                column = table[name_column].data[()]
                names = [_text(column[i]) for i in rois]
        finally:
            nwb_io.close()
    return Recording(data, names, rate=rate, index=ids, n_columns=rois.size)


def _pick_series(path: Path, found: dict, wanted: str | None) -> str:
    labels = list(found)
    if wanted is None:
        if len(labels) == 1:
            return labels[0]
        raise InputError(f"{path}: holds several series ({', '.join(labels)}); pick one with `series:`")
    if wanted in found:
        return wanted
    matches = [k for k in labels if k.split("/")[-1] == wanted or k.split("/")[0] == wanted]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise InputError(f"{path}: `series: {wanted}` is ambiguous ({', '.join(matches)})")
    raise InputError(f"{path}: no series {wanted!r} (it has {', '.join(labels)})")


def _series_rate(path: Path, label: str, s) -> float | None:
    if getattr(s, "rate", None):
        return float(s.rate)
    if getattr(s, "timestamps", None) is not None:
        stamps = np.asarray(s.timestamps[()], dtype=np.float64)
        step = np.median(np.diff(stamps)) if stamps.size > 1 else 0.0
        if not step > 0:
            raise InputError(f"{path}: series {label!r} has timestamps that do not increase")
        return float(1.0 / step)
    return None


def _text(value) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = str(value).strip()
    return text or None


# ----------------------------------------------------------------------------- suite2p
SUITE2P_FILES = ("F.npy", "Fneu.npy", "iscell.npy")


def read_suite2p(folder: Path, coefficient: float, want_rate: bool = True) -> Recording:
    """A suite2p plane folder: neuropil-corrected ``F − coefficient·Fneu`` of the ROIs that
    ``iscell.npy`` classifies as cells (first column > 0.5).

    ``F.npy``/``Fneu.npy`` are (ROIs, frames). The rate is ``ops.npy``'s ``fs``, read only
    when ``want_rate`` (ops.npy is a pickled dict: numpy must unpickle it, so it is opened
    only when no rate is configured). ``index`` holds each cell's ROI number.
    """
    if not folder.is_dir():
        raise InputError(f"{folder}: suite2p input must be a plane folder holding {', '.join(SUITE2P_FILES)}")
    arrays = {}
    for name in SUITE2P_FILES:
        f = folder / name
        if not f.exists():
            raise InputError(f"{folder}: no {name}; a suite2p plane folder holds {', '.join(SUITE2P_FILES)}")
        try:
            arrays[name] = np.load(f, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise InputError(f"{f}: not a readable .npy array ({_one_line(exc)})") from None
    F, Fneu, iscell = arrays["F.npy"], arrays["Fneu.npy"], arrays["iscell.npy"]
    if F.ndim != 2 or F.dtype.kind not in "fiu":
        raise InputError(f"{folder / 'F.npy'}: expected a 2-D (ROIs, frames) numeric array, got {F.shape}")
    if Fneu.shape != F.shape:
        raise InputError(f"{folder / 'Fneu.npy'}: shape {Fneu.shape} differs from F.npy's {F.shape}")
    cells = iscell[:, 0] if iscell.ndim == 2 else iscell
    if cells.shape != (F.shape[0],):
        raise InputError(f"{folder / 'iscell.npy'}: {cells.size} entries for {F.shape[0]} ROIs in F.npy")
    keep = np.flatnonzero(np.asarray(cells, dtype=np.float64) > 0.5)
    if keep.size == 0:
        raise InputError(f"{folder / 'iscell.npy'}: no ROI is classified as a cell")
    traces = (F[keep].astype(np.float64) - coefficient * Fneu[keep].astype(np.float64)).T
    rate = None
    ops_path = folder / "ops.npy"
    if want_rate and ops_path.exists():
        try:
            ops = np.load(ops_path, allow_pickle=True).item()
            rate = float(ops["fs"])
        except Exception as exc:
            raise InputError(f"{ops_path}: cannot read the sampling rate `fs` ({_one_line(exc)})") from None
    return Recording(traces, [None] * keep.size, rate=rate, index=keep, n_columns=F.shape[0])


# ----------------------------------------------------------------------------- dispatch
def read_recording(
    path: Path,
    *,
    fmt: str | None = None,
    dataset: str | None = None,
    variable: str | None = None,
    series: str | None = None,
    name_column: str | None = None,
    neuropil_coefficient: float = 0.7,
    time_axis: int = 0,
    names_path: Path | None = None,
    want_rate: bool = True,
    header: bool | None = None,
    where: str = "the animal's entry",
) -> Recording:
    """Read one animal's traces and neuron names (see the module docstring for formats).

    A ``names_path`` file (``index,name``) replaces the names the file carries; its indices
    are the file's columns (for suite2p: the ROIs of F.npy, for NWB: the series' ROIs).
    ``header`` (csv/tsv): see :func:`read_table`; False needs ``names_path``. ``where`` is
    the config path of the animal's entry (``data.animals[1]``), named by the fixes.
    """
    if not path.exists():
        raise InputError(f"{path}: data file not found")
    if path.is_file() and path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty")
    fmt = detect_format(path, fmt)
    if fmt != "suite2p" and path.is_dir():
        raise InputError(f"{path}: is a folder; only suite2p input is a folder (set `format: suite2p`)")
    if fmt in ("csv", "tsv"):
        if time_axis == 1 and header is not False:
            raise InputError(f"{path}: {where}.time_axis: 1 (rows are neurons) leaves the header row "
                             f"nothing to name; for a neurons × frames table set {where}.header: false "
                             f"and name the rows with {where}.neurons")
        if header is False and names_path is None:
            raise InputError(f"{path}: {where}.header: false needs {where}.neurons, a names file "
                             "(index,name), to name the columns")
        fix = (f"add a header row of neuron names, or set {where}.header: false and name the "
               f"columns with {where}.neurons (index,name); {where}.header: true if the numbers "
               "are the names")
        names_row, values = read_table(path, "," if fmt == "csv" else "\t", "data file",
                                       header=header, no_header_fix=fix)
        if time_axis == 1:
            values = values.T.copy()
            names_row = [""] * values.shape[1]
        rec = Recording(values, [h or None for h in names_row])
    elif fmt == "nwb":
        rec = read_nwb(path, series, name_column)
    elif fmt == "suite2p":
        rec = read_suite2p(path, neuropil_coefficient, want_rate)
    elif fmt == "mat":
        traces = read_mat(path, variable, time_axis)
        rec = Recording(traces, [None] * traces.shape[1])
    else:
        traces = read_array(path, fmt, dataset, time_axis)
        rec = Recording(traces, [None] * traces.shape[1])
    if names_path is not None:
        swap = fmt not in ("nwb", "suite2p")  # (their orientation is fixed by the format)
        names = read_names_file(names_path, rec.n_columns, rec.traces.shape[0] if swap else None,
                                f"set {where}.time_axis: {1 - time_axis} (the axis that is time)")
        position = rec.index if fmt == "suite2p" else np.arange(rec.n_columns)
        rec.names = [names[i] for i in position]
    elif fmt in NEEDS_NAMES_FILE:
        raise InputError(f"{path}: {fmt} input needs a `neurons:` names file (index,name)")
    return rec


def read_stimuli(path: Path) -> list[dict]:
    """Stimulus epochs from a CSV with header ``label,start_s,stop_s``."""
    rows = list(csv.DictReader(io.StringIO(read_text(path, "stimuli file"))))
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
    overlap = first_overlap(epochs)
    if overlap is not None:
        i, j = overlap
        raise InputError(f"{path}: lines {i + 2} and {j + 2}: {overlap_text(epochs, i, j)}")
    return epochs

"""Artifacts: plain HDF5 files with provenance, checksums and atomic writes.

Every stage writes one artifact through :func:`write_h5`. It carries, as root attributes:

``dynconn_version``  the package version that wrote it
``stage``            the stage name
``params``           JSON of the stage's full parameters (defaults included)
``config``           JSON of the whole resolved config
``inputs``           JSON ``{input name: fingerprint}`` of what it was computed from
``created``          ISO-8601 creation time (UTC)
``checksums``        JSON ``{dataset path: sha256 of its bytes}``
``fingerprint``      sha256 over the checksums: identifies the content
``attrs_checksum``   sha256 over every other attribute (verified like the datasets)

The file is written under a temporary name in the same folder, flushed to disk, then
renamed into place, so an interrupted write never leaves a half-written artifact under
the real name.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as _dt
import errno
import functools
import hashlib
import json
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .. import __version__
from ..errors import ArtifactError  # noqa: F401  (re-exported: callers catch artifacts.ArtifactError)

TMP_MARK = ".tmp-"
STR_DTYPE = h5py.string_dtype("utf-8")


def _as_storable(value: np.ndarray | list) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind in "UO":
        return np.asarray([str(v) for v in array.ravel()], dtype=object).reshape(array.shape)
    # (np.ascontiguousarray would turn a 0-d scalar into shape (1,))
    return array if array.flags.c_contiguous else np.array(array, order="C")


def checksum(array: np.ndarray) -> str:
    """sha256 of an array's bytes (strings hashed as UTF-8, NUL-separated) plus shape and dtype."""
    h = hashlib.sha256()
    array = np.asarray(array)
    if array.dtype.kind in "UOS":
        items = [v.decode() if isinstance(v, bytes) else str(v) for v in array.ravel()]
        h.update(b"str" + repr(array.shape).encode())
        h.update("\0".join(items).encode("utf-8"))
    else:
        h.update(str(array.dtype.str).encode() + repr(array.shape).encode())
        h.update(np.ascontiguousarray(array).data)
    return h.hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """sha256 of one file's bytes (hex), read in ``chunk``-byte blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_fingerprint(path: Path, chunk: int = 1 << 22) -> str:
    """sha256 of a file's bytes (or of every file in a folder, sorted by name)."""
    h = hashlib.sha256()
    paths = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in paths:
        h.update(str(p.relative_to(path) if path.is_dir() else p.name).encode())
        with open(p, "rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
    return h.hexdigest()


def tmp_path(path: Path) -> Path:
    """``<name>.tmp-<pid>``: the name an artifact is written under before the rename."""
    return path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}")


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (ignored where directories cannot be fsynced)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_failure(path: Path, exc: BaseException, what: str = "artifact") -> ArtifactError:
    """One line for a failed write; a full disk says so and what to do."""
    text = str(exc)
    full = getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) or any(
        mark in text for mark in ("No space left", "Disk quota", "File too large", "errno = 28")
    )
    if full:
        reason = "file too large for this file system" if "too large" in text.lower() or \
            getattr(exc, "errno", None) == errno.EFBIG else "no space left on the device"
        return ArtifactError(
            f"{path}: disk full while writing the {what} ({reason}); "
            "nothing was written under this name; free some space or use another --workdir"
        )
    reason = getattr(exc, "strerror", None) or _short(exc)
    return ArtifactError(f"{path}: cannot write the {what} ({reason})")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a (text or binary) file atomically: temp name, fsync, rename."""
    path = Path(path)
    tmp = tmp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        raise _write_failure(path, exc, "file") from None
    finally:
        _unlink_quietly(tmp)


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError:  # pragma: no cover - e.g. read-only file system; reported by the caller
        pass


def temporary_owner(path: Path) -> int | None:
    """The pid in a ``*.tmp-<pid>`` name, or None when the name is not one of ours."""
    name = path.name
    if TMP_MARK not in name:
        return None
    suffix = name.rsplit(TMP_MARK, 1)[1]
    return int(suffix) if suffix.isdigit() else None


def clean_temporaries(folder: Path, only: str | None = None) -> list[Path]:
    """Remove temporary files (and folders) an interrupted (killed) writer left behind.

    A ``*.tmp-<pid>`` file or folder is removed only when that pid is no longer running on this
    host (or is this process): the temporary file of a live writer is never touched. The
    caller holds the work-directory lock, so no other dynconn process writes here.
    ``only``: clean just the temporaries of that file name in ``folder`` (not recursive).
    Returns what was removed.
    """
    from ..runner.lock import pid_alive

    removed = []
    if not Path(folder).is_dir():
        return removed
    found = Path(folder).glob(f"{only}{TMP_MARK}*") if only else Path(folder).rglob(f"*{TMP_MARK}*")
    for p in list(found):
        pid = temporary_owner(p)
        if pid is None or p.is_symlink() or not (p.is_file() or p.is_dir()):
            continue
        if pid != os.getpid() and pid_alive(pid):
            continue
        if p.is_dir():  # a result-cache entry being assembled (dynconn.runner.cache)
            shutil.rmtree(p, ignore_errors=True)
        else:
            _unlink_quietly(p)
        removed.append(p)
    return removed


class StreamedDataset:
    """A dataset written block by block along its first axis, never whole in memory.

    ``blocks`` yields ``(start, array)`` in order, the arrays covering rows ``0 .. shape[0]``
    without gaps; :func:`write_h5` stores it as a chunked HDF5 dataset (``chunk_rows`` rows per
    chunk) and computes its :func:`checksum` while writing (the sha256 of the same bytes in the same
    order as the whole array's). ``checks`` are called as ``check(start, block)`` on every block
    before it is written (e.g. the pipeline's NaN/Inf guard).
    """

    def __init__(self, shape: tuple, dtype, blocks, chunk_rows: int):
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self.blocks = blocks
        self.chunk_rows = max(1, min(int(chunk_rows), self.shape[0] or 1))
        self.checks: list = []
        self.checksum: str | None = None  # its checksum, once written

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def _write_streamed(f: h5py.File, name: str, streamed: StreamedDataset) -> str:
    """Write a :class:`StreamedDataset` into ``f``; returns its checksum (hashed while writing)."""
    chunks = (streamed.chunk_rows, *streamed.shape[1:]) if streamed.shape[0] else None
    ds = f.create_dataset(name, shape=streamed.shape, dtype=streamed.dtype, chunks=chunks)
    h = hashlib.sha256()
    h.update(str(streamed.dtype.str).encode() + repr(streamed.shape).encode())
    done = 0
    blocks = iter(streamed.blocks)
    while True:
        try:
            start, block = next(blocks)
        except StopIteration:
            break
        except BaseException as exc:  # the computation's own error, not a failed write
            exc._dynconn_computing = True
            raise
        block = np.ascontiguousarray(block, dtype=streamed.dtype)
        if start != done or block.shape[1:] != streamed.shape[1:]:
            raise ValueError(f"/{name}: block at row {start} (shape {block.shape}) does not continue "
                             f"the dataset at row {done} (shape {streamed.shape})")
        for check in streamed.checks:
            check(start, block)
        ds[start : start + block.shape[0]] = block
        h.update(block.data)
        done += block.shape[0]
    if done != streamed.shape[0]:
        raise ValueError(f"/{name}: blocks covered {done} of {streamed.shape[0]} rows")
    streamed.checksum = h.hexdigest()  # (for an attribute computed after the datasets: write_h5)
    return streamed.checksum


class RowBlocks:
    """A read-only handle on one big dataset of an artifact, read by blocks of rows (first axis).

    What :func:`read_h5` gives for a dataset named in ``lazy``: it has ``shape``, ``dtype``,
    ``ndim``, ``size``, ``nbytes``, and ``handle[start:stop]`` reads those rows (a numpy array);
    :meth:`read_rows` reads into a given buffer (no allocation). The file stays open (read-only)
    while the handle lives; :meth:`close` closes it.
    """

    def __init__(self, path: Path, name: str):
        self.path = Path(path)
        self.name = name
        self._file = h5py.File(self.path, "r")
        self._ds = self._file[name]
        self.shape = tuple(self._ds.shape)
        self.dtype = self._ds.dtype
        self.ndim = len(self.shape)
        self.size = int(np.prod(self.shape, dtype=np.int64))
        self.nbytes = self.size * self.dtype.itemsize
        self._lock = threading.Lock()  # h5py serialises calls anyway; keeps read_rows atomic

    def __getitem__(self, key):
        if not (isinstance(key, slice) and key.step in (None, 1)):
            raise TypeError(f"{self.path}: /{self.name} is read by row ranges (handle[start:stop])")
        start, stop, _ = key.indices(self.shape[0])
        out = np.empty((max(0, stop - start), *self.shape[1:]), dtype=self.dtype)
        return self.read_rows(start, stop, out)

    def read_rows(self, start: int, stop: int, out: np.ndarray) -> np.ndarray:
        """Rows ``start:stop`` into ``out`` (C-contiguous, shape (stop-start, ...), this dtype)."""
        if stop > start:
            with self._lock:
                self._ds.read_direct(out, np.s_[start:stop])
        return out

    def iter_blocks(self, rows: int | None = None):
        """``(start, block)`` over all rows, ``rows`` at a time (default: about 64 MB)."""
        if rows is None:
            row_bytes = max(1, self.nbytes // max(1, self.shape[0]))
            rows = max(1, _STREAM_BYTES // row_bytes)
        for start in range(0, self.shape[0], rows):
            yield start, self[start : start + rows]

    def checksum(self) -> str:
        """:func:`checksum` of the dataset, streamed (bounded memory)."""
        return _stream_checksum(self._ds)

    def close(self) -> None:
        self._file.close()

    def __array__(self, dtype=None, copy=None):
        raise TypeError(f"{self.path}: /{self.name} ({'×'.join(map(str, self.shape))}) is kept on disk "
                        "(over compute.memory_budget); it is read by blocks of rows")


def _dataset_nbytes(array) -> int:
    if isinstance(array, StreamedDataset):
        return array.nbytes
    if array.dtype == object:
        return sum(len(str(v).encode()) + 16 for v in array.ravel())
    return int(array.nbytes)


def _store_attr(f: h5py.File, key: str, value: Any) -> None:
    if callable(value):  # known only once the datasets are written (e.g. seconds, with streamed ones)
        value = value()
    if isinstance(value, (dict, list, tuple)):
        value = json.dumps(value)
    f.attrs[key] = value


def write_h5(
    path: Path,
    datasets: dict[str, Any],
    *,
    stage: str,
    params: dict,
    config: dict | None = None,
    inputs: dict[str, str] | None = None,
    attrs: dict[str, Any] | None = None,
    check_space: bool = True,
) -> str:
    """Write an artifact atomically; returns its fingerprint.

    ``datasets`` maps HDF5 paths (``"factors/time"``) to arrays; string arrays are stored
    as UTF-8, a :class:`StreamedDataset` block by block. ``attrs`` are extra root attributes
    (scalars/strings, or JSON-able objects stored as JSON strings; a callable is called after the
    datasets are written, for values known only then).

    Before writing, the free space of the target file system is checked against the
    artifact's size (ResourceError). A write that still fails (disk full, quota, I/O
    error) raises ArtifactError and removes the temporary file: nothing appears under
    the real name, and an existing artifact there is left as it was.
    """
    from ..runner.resources import check_disk

    path = Path(path)
    arrays = {name: value if isinstance(value, StreamedDataset) else _as_storable(value)
              for name, value in datasets.items()}
    tmp = tmp_path(path)
    checksums: dict[str, str] = {}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if check_space:
            check_disk(path.parent, sum(_dataset_nbytes(a) for a in arrays.values()), path.name)
        with h5py.File(tmp, "w") as f:
            for name, array in arrays.items():
                if isinstance(array, StreamedDataset):
                    checksums[name] = _write_streamed(f, name, array)
                    continue
                if array.dtype == object:
                    f.create_dataset(name, data=array, dtype=STR_DTYPE)
                else:
                    f.create_dataset(name, data=array)
                checksums[name] = checksum(array)
            fingerprint = hashlib.sha256(
                json.dumps(checksums, sort_keys=True).encode()
            ).hexdigest()
            f.attrs["dynconn_version"] = __version__
            f.attrs["stage"] = stage
            f.attrs["params"] = json.dumps(params, sort_keys=True)
            f.attrs["config"] = json.dumps(config or {}, sort_keys=True)
            f.attrs["inputs"] = json.dumps(inputs or {}, sort_keys=True)
            f.attrs["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            f.attrs["checksums"] = json.dumps(checksums, sort_keys=True)
            f.attrs["fingerprint"] = fingerprint
            for key, value in (attrs or {}).items():
                _store_attr(f, key, value)
            f.attrs[ATTRS_CHECKSUM] = attrs_digest(_attrs_of(f))
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except (OSError, RuntimeError) as exc:  # h5py reports some write failures as RuntimeError
        if getattr(exc, "_dynconn_computing", False):
            raise  # raised while computing a streamed dataset's blocks
        raise _write_failure(path, exc) from None
    finally:
        _unlink_quietly(tmp)
    return fingerprint


@dataclass
class Artifact:
    """An artifact read into memory: ``data[path]`` arrays, ``attrs`` root attributes."""

    path: Path
    data: dict[str, np.ndarray]
    attrs: dict[str, Any] = field(default_factory=dict)
    #: checksums still being computed (``read_h5(..., meanwhile=True)``): (dataset, expected, future)
    pending: list = field(default_factory=list, repr=False)
    #: appended to the error of a checksum found wrong by :meth:`wait_verified` (how to recompute it)
    hint: str = ""

    def wait_verified(self) -> None:
        """Wait for the checksums :func:`read_h5` left computing in a thread; raises
        ArtifactError (one line naming the file) for a dataset that does not match."""
        pending, self.pending = self.pending, []
        for name, digest, future in pending:
            try:
                actual = future.result()
            finally:
                self.data[name].flags.writeable = True
            if actual != digest:
                raise ArtifactError(f"{self.path}: dataset /{name} fails its checksum (corrupted); "
                                    f"recompute it{self.hint}")

    def __getitem__(self, name: str) -> np.ndarray:
        return self.data[name]

    def __contains__(self, name: str) -> bool:
        return name in self.data

    @property
    def fingerprint(self) -> str:
        return str(self.attrs["fingerprint"])

    def json_attr(self, name: str, default: Any = None) -> Any:
        return json.loads(self.attrs[name]) if name in self.attrs else default


def _read_dataset(ds: h5py.Dataset) -> np.ndarray:
    if h5py.check_string_dtype(ds.dtype) is not None:
        return np.asarray(ds.asstr()[()], dtype=object)
    return ds[()]


_H5_ERRORS = (OSError, KeyError, ValueError, RuntimeError, TypeError)
_STREAM_BYTES = 64 << 20  # verify big datasets in blocks of about this size


def _stream_checksum(ds: h5py.Dataset) -> str:
    """:func:`checksum` of a dataset, read in blocks along its first axis (bounded memory)."""
    if h5py.check_string_dtype(ds.dtype) is not None or ds.ndim == 0 or ds.size == 0:
        return checksum(_read_dataset(ds))
    h = hashlib.sha256()
    h.update(str(ds.dtype.str).encode() + repr(ds.shape).encode())
    row_bytes = max(1, ds.dtype.itemsize * int(np.prod(ds.shape[1:], dtype=np.int64)))
    step = max(1, _STREAM_BYTES // row_bytes)
    for start in range(0, ds.shape[0], step):
        h.update(np.ascontiguousarray(ds[start : start + step]).data)
    return h.hexdigest()


def _attrs_of(f: h5py.File) -> dict[str, Any]:
    return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}


ATTRS_CHECKSUM = "attrs_checksum"


def attrs_digest(attrs: dict[str, Any]) -> str:
    """sha256 over every root attribute (names, values, types) but ``attrs_checksum``
    itself: attributes carry data too (``sampling_rate``, ``params``), so a damaged one
    must be detected like a damaged dataset."""
    h = hashlib.sha256()
    for key in sorted(attrs, key=str):
        if key == ATTRS_CHECKSUM:
            continue
        value = attrs[key]
        h.update(str(key).encode("utf-8", "surrogateescape") + b"\0")
        if isinstance(value, str):
            h.update(b"s" + value.encode("utf-8", "surrogateescape"))
        else:
            array = np.asarray(value)
            h.update(array.dtype.str.encode() + repr(array.shape).encode())
            h.update(repr(array.tolist()).encode() if array.dtype.kind in "OUSV" else array.tobytes())
        h.update(b"\0")
    return h.hexdigest()


def _check_attrs(path: Path, attrs: dict) -> None:
    if attrs.get(ATTRS_CHECKSUM) != attrs_digest(attrs):
        raise ArtifactError(f"{path}: its attributes (provenance, parameters) are damaged; recompute it")


def _dataset_names(f: h5py.File) -> list[str]:
    names: list[str] = []
    f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return names


def _recorded_checksums(path: Path, attrs: dict) -> dict[str, str]:
    if "checksums" not in attrs:
        raise ArtifactError(f"{path}: not a dynconn artifact (no checksums attribute)")
    try:
        expected = json.loads(attrs["checksums"])
    except (TypeError, ValueError):
        raise ArtifactError(f"{path}: its checksums attribute is damaged; recompute it") from None
    if not isinstance(expected, dict):
        raise ArtifactError(f"{path}: its checksums attribute is damaged; recompute it")
    return expected


def _check_names(path: Path, expected: dict, present: list[str]) -> None:
    missing = sorted(set(expected) - set(present))
    extra = sorted(set(present) - set(expected))
    if missing:
        raise ArtifactError(f"{path}: dataset /{missing[0]} is missing (truncated or damaged); recompute it")
    if extra:
        raise ArtifactError(f"{path}: unexpected dataset /{extra[0]} (modified after it was written); recompute it")


def read_h5(path: Path, *, verify: bool = True, skip: tuple[str, ...] = (),
            lazy: tuple[str, ...] = (), meanwhile: bool = False) -> Artifact:
    """Read a whole artifact; with ``verify`` every dataset's checksum is checked.

    ``skip``: datasets left unread (e.g. the affinity tensor, when only its names and times
    are needed); the others are read and verified as usual. ``lazy``: datasets left on disk,
    given as :class:`RowBlocks` handles read by blocks of rows (a tensor over
    ``compute.memory_budget``); with ``verify`` each is checksummed by one streamed read.
    ``meanwhile``: the checksums of big numeric datasets (over ``_MEANWHILE_BYTES``) are
    computed in a thread (hashlib releases the GIL) while the caller starts on the data, which
    stay read-only until :meth:`Artifact.wait_verified`; the caller must call it before it
    trusts or writes anything computed from them (:func:`verified_on_exit`).

    Raises ArtifactError (one line naming the file) when it is missing, not HDF5,
    truncated, or a checksum does not match.
    """
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: artifact not found; run the stage that makes it first")
    data: dict[str, np.ndarray] = {}
    try:
        with h5py.File(path, "r") as f:
            attrs = _attrs_of(f)
            names = _dataset_names(f)
            for name in names:
                if name not in skip and name not in lazy:
                    data[name] = _read_dataset(f[name])
        for name in lazy:
            if name not in skip and name in names:
                data[name] = RowBlocks(path, name)
    except _H5_ERRORS as exc:
        raise ArtifactError(f"{path}: unreadable or truncated HDF5 file ({_short(exc)}); recompute it") from None
    pending = []
    if verify:
        expected = _recorded_checksums(path, attrs)
        _check_names(path, {k: v for k, v in expected.items() if k not in skip}, list(data))
        for name, digest in expected.items():
            if name in skip:
                continue
            value = data[name]
            if meanwhile and isinstance(value, np.ndarray) and value.dtype.kind not in "UOS" \
                    and value.nbytes > _MEANWHILE_BYTES:
                value.flags.writeable = False  # what is hashed must not change before it is
                pending.append((name, digest, _checksum_thread().submit(checksum, value)))
                continue
            try:
                actual = value.checksum() if isinstance(value, RowBlocks) else checksum(value)
            except _H5_ERRORS as exc:
                raise ArtifactError(f"{path}: unreadable or truncated HDF5 file ({_short(exc)}); "
                                    "recompute it") from None
            if actual != digest:
                raise ArtifactError(f"{path}: dataset /{name} fails its checksum (corrupted); recompute it")
        _check_fingerprint(path, attrs, expected)
        _check_attrs(path, attrs)
    return Artifact(path=path, data=data, attrs=attrs, pending=pending)


_MEANWHILE_BYTES = 32 << 20  # below this a checksum takes < 20 ms: not worth a thread


@functools.lru_cache(maxsize=1)
def _checksum_thread() -> concurrent.futures.ThreadPoolExecutor:
    """One worker thread for the checksums of ``read_h5(..., meanwhile=True)`` (made once)."""
    return concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="dynconn-checksum")


@contextlib.contextmanager
def verified_on_exit(artifacts):
    """Run a block on artifacts read with ``meanwhile=True``, then wait for their checksums.

    A damaged dataset raises its ArtifactError on leaving the block, also in place of the
    block's own exception (computing on damaged data can fail in any way; the damage is the
    error to report)."""
    try:
        yield
    finally:  # an ArtifactError raised here replaces the block's own exception
        for artifact in artifacts:
            artifact.wait_verified()


def _check_fingerprint(path: Path, attrs: dict, checksums: dict) -> None:
    digest = hashlib.sha256(json.dumps(checksums, sort_keys=True).encode()).hexdigest()
    if attrs.get("fingerprint") != digest:
        raise ArtifactError(f"{path}: its fingerprint does not match its checksums (damaged); recompute it")


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 160 else text[:157] + "..."


def verify_h5(path: Path) -> dict[str, Any]:
    """Check every dataset of an artifact against its recorded checksum without keeping
    the data in memory; returns its root attributes. Raises ArtifactError on any problem."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: artifact not found")
    try:
        with h5py.File(path, "r") as f:
            attrs = _attrs_of(f)
            expected = _recorded_checksums(path, attrs)
            _check_names(path, expected, _dataset_names(f))
            for name, digest in expected.items():
                if _stream_checksum(f[name]) != digest:
                    raise ArtifactError(f"{path}: dataset /{name} fails its checksum (corrupted); recompute it")
    except _H5_ERRORS as exc:
        raise ArtifactError(f"{path}: unreadable or truncated HDF5 file ({_short(exc)}); recompute it") from None
    _check_fingerprint(path, attrs, expected)
    _check_attrs(path, attrs)
    return attrs


def read_attrs(path: Path) -> dict[str, Any] | None:
    """Root attributes of an artifact, or None when it is absent or unreadable (cheap)."""
    try:
        with h5py.File(path, "r") as f:
            return _attrs_of(f)
    except _H5_ERRORS:
        return None


def dataset_shapes(path: Path) -> dict[str, tuple[tuple, int]]:
    """``{dataset: (shape, itemsize)}`` from the HDF5 metadata (no data read); {} if unreadable."""
    try:
        with h5py.File(path, "r") as f:
            return {n: (tuple(f[n].shape), int(f[n].dtype.itemsize)) for n in _dataset_names(f)}
    except _H5_ERRORS:
        return {}


# ----------------------------------------------------------------------------- inspect
@dataclass
class Inspection:
    """What :func:`inspect` found: printable ``lines`` and whether the file ``verifies``."""

    lines: list[str]
    verifies: bool
    problem: str | None = None


def inspect(path: Path) -> Inspection:
    """Contents (datasets, shapes, dtypes, checksum status), provenance and a verdict."""
    path = Path(path)
    lines = [f"{path}"]
    if not path.exists():
        return Inspection(lines + ["  verifies: NO — not found"], False, f"{path}: not found")
    if path.is_dir():
        return Inspection(lines + ["  verifies: NO — is a folder; give an .h5 artifact"], False,
                          f"{path}: is a folder")
    problems: list[str] = []
    try:
        with h5py.File(path, "r") as f:
            attrs = _attrs_of(f)
            names = _dataset_names(f)
            try:
                expected = _recorded_checksums(path, attrs)
            except ArtifactError as exc:
                expected = {}
                problems.append(str(exc))
            for key in ("stage", "dynconn_version", "created", "fingerprint"):
                if key in attrs:
                    lines.append(f"  {key + ':':<17}{attrs[key]}")
            for key in ("params", "inputs"):
                if key in attrs:
                    lines.append(f"  {key + ':':<17}{_compact_json(attrs[key])}")
            extra = sorted((k for k in attrs if k not in _CORE_ATTRS), key=str)
            for key in extra:
                lines.append(f"  {key + ':':<17}{_compact_json(attrs[key])}")
            lines.append("  datasets:")
            for name in names:
                ds = f[name]
                kind = "utf-8" if h5py.check_string_dtype(ds.dtype) is not None else str(ds.dtype)
                if name not in expected:
                    status = "no checksum" if expected else ""
                    if expected:
                        problems.append(f"{path}: unexpected dataset /{name}")
                else:
                    try:
                        ok = _stream_checksum(ds) == expected[name]
                    except _H5_ERRORS as exc:
                        ok = False
                        problems.append(f"{path}: dataset /{name} unreadable ({_short(exc)})")
                    status = "ok" if ok else "CHECKSUM MISMATCH"
                    if not ok:
                        problems.append(f"{path}: dataset /{name} fails its checksum (corrupted)")
                shape = "×".join(str(d) for d in ds.shape) or "scalar"
                lines.append(f"    /{name:<28} {shape:<18} {kind:<8} {status}")
            for name in sorted(set(expected) - set(names)):
                lines.append(f"    /{name:<28} MISSING")
                problems.append(f"{path}: dataset /{name} is missing")
        if expected and not problems:
            try:
                _check_fingerprint(path, attrs, expected)
                _check_attrs(path, attrs)
            except ArtifactError as exc:
                problems.append(str(exc))
    except _H5_ERRORS as exc:
        problems.append(f"{path}: unreadable or truncated HDF5 file ({_short(exc)})")
    if problems:
        lines.append(f"  verifies: NO — {problems[0]}")
        return Inspection(lines, False, problems[0])
    lines.append("  verifies: yes (every dataset matches its recorded sha256)")
    return Inspection(lines, True)


_CORE_ATTRS = {"stage", "dynconn_version", "created", "fingerprint", "params", "inputs", "checksums", "config",
               ATTRS_CHECKSUM}


def _compact_json(value: Any, limit: int = 400) -> str:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            pass
    text = json.dumps(value, sort_keys=True, default=str) if not isinstance(value, str) else value
    if isinstance(value, np.generic):
        text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------------------- checkpoints
class Checkpoint:
    """Where a stage keeps resumable partial work (``<workdir>/checkpoints/<stage>.h5``).

    The pipeline hands one to a stage that declares ``CHECKPOINTS = True`` (as the
    ``checkpoint`` keyword of its ``run``). The checkpoint is keyed by the stage's
    provenance (version, parameters, input fingerprints): :meth:`load` returns a state
    only when it was saved for exactly the same computation, and verifies its checksums
    (a damaged checkpoint is ignored with a warning and the stage starts over). States are
    nested dicts of arrays, numbers, strings and None (e.g. the solver states of
    :mod:`dynconn.methods.ntf`); they are written with :func:`write_h5`, so atomically.

    Typical use in a stage (see docs/robustness.md)::

        state = checkpoint.load()
        with checkpoint.saving_on_stop():
            result = solve(..., resume=state, checkpoint_every=1, on_checkpoint=checkpoint.offer)

    :meth:`offer` saves at most every ``interval`` seconds, and always when a stop signal
    is pending, then raises that stop. The pipeline removes the checkpoint once the
    stage's artifact is written.
    """

    def __init__(self, path: Path, key: dict, *, interval: float = 30.0, warn=None):
        self.path = Path(path)
        self.key = json.dumps(key, sort_keys=True, default=str)
        self.interval = interval
        self._last = time.monotonic()
        self._warn = warn
        self.saved = False

    def load(self) -> dict | None:
        if not self.path.exists():
            return None
        try:
            art = read_h5(self.path)
        except ArtifactError as exc:
            if self._warn:
                self._warn(f"ignoring a damaged checkpoint ({exc}); starting this stage over")
            self.clear()
            return None
        if art.attrs.get("key") != self.key:
            self.clear()  # made for another computation
            return None
        return _unflatten(art.data)

    def save(self, state: dict) -> None:
        write_h5(self.path, _flatten(state), stage="checkpoint", params={}, attrs={"key": self.key})
        self._last = time.monotonic()
        self.saved = True

    def due(self) -> bool:
        """True when :meth:`offer` would save now: ``interval`` s have passed since the last
        save (or since this checkpoint was made), or a stop is pending. Pass as the solver's
        ``checkpoint_due``: it then builds a state only when one will be saved."""
        from ..runner import interrupt

        return interrupt.stop_requested() or time.monotonic() - self._last >= self.interval

    def offer(self, state: dict) -> None:
        """Save ``state`` when it is :meth:`due`; then raise the pending stop, if any. Pass
        as the solver's ``on_checkpoint``."""
        from ..runner import interrupt

        if self.due():
            self.save(state)
        interrupt.check()

    def saving_on_stop(self):
        """Context in which stop signals are deferred to the next :meth:`offer`."""
        from ..runner import interrupt

        return interrupt.deferred()

    def clear(self) -> None:
        _unlink_quietly(self.path)
        try:
            self.path.parent.rmdir()  # only when empty
        except OSError:
            pass


_NONE_MARK = "__none__"


def _flatten(state: dict, prefix: str = "") -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for key, value in state.items():
        if "/" in str(key):
            raise ValueError(f"checkpoint keys cannot contain '/': {key!r}")
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "/"))
        elif value is None:
            out[f"{name}{_NONE_MARK}"] = np.zeros(0, dtype=np.int8)
        elif isinstance(value, str):
            out[name] = np.asarray(value, dtype=object)
        else:
            out[name] = np.asarray(value)
    return out


def _unflatten(data: dict[str, np.ndarray]) -> dict:
    out: dict = {}
    for name, value in data.items():
        parts = name.split("/")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        leaf = parts[-1]
        if leaf.endswith(_NONE_MARK):
            node[leaf[: -len(_NONE_MARK)]] = None
        elif isinstance(value, np.ndarray) and value.ndim == 0:
            node[leaf] = value.item() if value.dtype == object else value[()]
        else:
            node[leaf] = value
    return out

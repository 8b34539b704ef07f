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

The file is written under a temporary name in the same folder, flushed to disk, then
renamed into place, so an interrupted write never leaves a half-written artifact under
the real name.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from . import __version__
from .errors import DynconnError

TMP_MARK = ".tmp-"
STR_DTYPE = h5py.string_dtype("utf-8")


class ArtifactError(DynconnError):
    """An artifact is missing, unreadable, truncated or fails its checksums."""


def _as_storable(value: np.ndarray | list) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind in "UO":
        return np.asarray([str(v) for v in array.ravel()], dtype=object).reshape(array.shape)
    return np.ascontiguousarray(array)


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
    return path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a (text or binary) file atomically: temp name, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def clean_temporaries(folder: Path) -> list[Path]:
    """Remove temporary files an interrupted run left behind; returns what was removed."""
    removed = []
    if folder.is_dir():
        for p in folder.rglob(f"*{TMP_MARK}*"):
            if p.is_file():
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def write_h5(
    path: Path,
    datasets: dict[str, Any],
    *,
    stage: str,
    params: dict,
    config: dict | None = None,
    inputs: dict[str, str] | None = None,
    attrs: dict[str, Any] | None = None,
) -> str:
    """Write an artifact atomically; returns its fingerprint.

    ``datasets`` maps HDF5 paths (``"factors/time"``) to arrays; string arrays are stored
    as UTF-8. ``attrs`` are extra root attributes (scalars/strings, or JSON-able objects
    stored as JSON strings).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    checksums: dict[str, str] = {}
    try:
        with h5py.File(tmp, "w") as f:
            for name, value in datasets.items():
                array = _as_storable(value)
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
                if isinstance(value, (dict, list, tuple)):
                    value = json.dumps(value)
                f.attrs[key] = value
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot write artifact ({exc.strerror or exc})") from None
    finally:
        tmp.unlink(missing_ok=True)
    return fingerprint


@dataclass
class Artifact:
    """An artifact read into memory: ``data[path]`` arrays, ``attrs`` root attributes."""

    path: Path
    data: dict[str, np.ndarray]
    attrs: dict[str, Any] = field(default_factory=dict)

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


def read_h5(path: Path, *, verify: bool = True) -> Artifact:
    """Read a whole artifact; with ``verify`` every dataset's checksum is checked.

    Raises ArtifactError (one line naming the file) when it is missing, not HDF5,
    truncated, or a checksum does not match.
    """
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: artifact not found; run the stage that makes it first")
    data: dict[str, np.ndarray] = {}
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}

            def visit(name: str, obj: Any) -> None:
                if isinstance(obj, h5py.Dataset):
                    data[name] = _read_dataset(obj)

            f.visititems(visit)
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        raise ArtifactError(f"{path}: unreadable or truncated HDF5 file ({exc})") from None
    if verify:
        if "checksums" not in attrs:
            raise ArtifactError(f"{path}: not a dynconn artifact (no checksums attribute)")
        expected = json.loads(attrs["checksums"])
        if set(expected) != set(data):
            raise ArtifactError(f"{path}: datasets differ from the recorded ones; recompute it")
        for name, digest in expected.items():
            if checksum(data[name]) != digest:
                raise ArtifactError(f"{path}: dataset /{name} fails its checksum (corrupted)")
    return Artifact(path=path, data=data, attrs=attrs)


def read_attrs(path: Path) -> dict[str, Any] | None:
    """Root attributes of an artifact, or None when it is absent or unreadable (cheap)."""
    try:
        with h5py.File(path, "r") as f:
            return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    except (OSError, KeyError, ValueError, RuntimeError):
        return None

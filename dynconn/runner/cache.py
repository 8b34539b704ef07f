"""The result cache: earlier stage outputs, kept by the computation that made them.

Layout::

    <workdir>/cache/<stage>/<key>.h5                an HDF5 stage's artifact (ingest … communities)
    <workdir>/cache/report/<key>/manifest.json      a file stage's outputs: their provenance and
    <workdir>/cache/report/<key>/files/<path>       sha256, and the files under their own paths

``key`` is the sha256 of a stage's provenance -- dynconn version, full parameters and the
fingerprints of its inputs (:func:`provenance_key`) -- the record that also decides whether
a stage is up to date. An entry is therefore the output the stage computes for that key:
the cache is addressed by the computation, like DVC's run cache or Snakemake's
between-workflow cache.

The life of an entry:

kept
    A stage about to replace its output by the result of *another* computation (a new
    parameter value, changed inputs) first keeps the current output here: a hard link, so
    no copy and no extra space until the name is replaced. Where the file system has no
    hard links, an HDF5 artifact is moved here instead (it is being replaced anyway) and
    the report's files are copied (they are small).
restored
    A stage that is not up to date and whose key is here: the entry is verified (every
    dataset or file against its sha256, and its recorded provenance must be the expected
    one) and renamed back under the real name instead of recomputing. A damaged entry is
    removed with a warning and the stage recomputes. A restored entry leaves the cache, so
    once a stage has finished the live outputs share no file with the cache.
evicted
    At the end of every command that runs stages, the least recently kept entries are
    removed until the cache fits ``compute.cache_size`` (``dynconn gc`` does the same on
    demand). Not after each stage: a run switching back must not evict the entries its
    later stages are about to restore, so during a run the cache may exceed the bound by
    what that run replaced. An entry's
    modification time is set when it is kept (copies that preserve times, ``cp -a`` or
    ``rsync -a``, keep the order); entries are never used while cached, so oldest-kept
    first is least-recently-used order.

Entries are assembled under a temporary name (``*.tmp-<pid>``) and renamed into place, so
an interrupted run leaves no half entry; the next command holding the work-directory lock
removes the temporary (:func:`dynconn.artifacts.clean_temporaries`). The caller holds
that lock for every function here.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..io.artifacts import TMP_MARK, ArtifactError, _fsync_dir, sha256_file, tmp_path, verify_h5
from . import interrupt
from .stage import Stage

CACHE_DIR = "cache"
MANIFEST = "manifest.json"
FILES = "files"
PROVENANCE_KEYS = ("dynconn_version", "params", "inputs")
# errors of os.link that mean "this file system has no hard links here"
_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK, errno.ENOSYS}


def provenance_key(provenance: dict) -> str:
    """The cache key of a computation: sha256 over its version, parameters and input fingerprints."""
    core = {k: provenance.get(k) for k in PROVENANCE_KEYS}
    return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()


def entry_path(workdir: Path, stage: Stage, key: str) -> Path:
    folder = Path(workdir) / CACHE_DIR / stage.name
    return folder / key if stage.writes_files else folder / f"{key}.h5"


@dataclass
class Entry:
    stage: str
    key: str
    path: Path
    size: int  # bytes of its files
    stored: float  # when it was kept (its mtime, s since the epoch)


def _size(path: Path) -> int:
    if path.is_dir() and not path.is_symlink():
        return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return path.lstat().st_size


def entries(workdir: Path) -> list[Entry]:
    """Every entry in the cache (temporaries excluded), oldest first."""
    root = Path(workdir) / CACHE_DIR
    found = []
    if not root.is_dir():
        return found
    for folder in root.iterdir():
        if not folder.is_dir() or folder.is_symlink():
            continue
        for p in folder.iterdir():
            if TMP_MARK in p.name:
                continue
            try:
                found.append(Entry(folder.name, p.name.removesuffix(".h5"), p, _size(p), p.lstat().st_mtime))
            except OSError:  # vanished meanwhile
                continue
    return sorted(found, key=lambda e: (e.stored, e.stage, e.key))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
    _remove_empty_folders(path.parent)


def _remove_empty_folders(folder: Path) -> None:
    """Remove ``cache/<stage>`` and ``cache`` when empty: an unused cache leaves no trace."""
    for f in (folder, folder.parent) if folder.parent.name == CACHE_DIR else (folder,):
        try:
            f.rmdir()
        except OSError:
            return


def _link(src: Path, dst: Path, fallback: str) -> str:
    """Hard-link ``src`` to ``dst``; where links are unsupported, ``fallback`` ("move" or
    "copy"). Returns what was done."""
    try:
        os.link(src, dst)
        return "link"
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
    if fallback == "move":
        _move(src, dst)
    else:
        shutil.copyfile(src, dst)
        with open(dst, "rb+") as fh:
            os.fsync(fh.fileno())
    return fallback


def _move(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``; across file systems (``cache/`` a link to another disk),
    copy to a temporary name beside ``dst``, rename that, then remove ``src``."""
    try:
        os.replace(src, dst)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    tmp = tmp_path(dst)
    try:
        shutil.copyfile(src, tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    Path(src).unlink()


# ----------------------------------------------------------------------------- keep
def keep(stage: Stage, workdir: Path, current: dict | None, new_key: str) -> Entry | None:
    """Keep the stage's current output (``current``: its recorded provenance, None when
    absent) in the cache, unless it is the computation ``new_key`` itself. Returns the entry.

    Raises ArtifactError when the output cannot be kept (it would be lost)."""
    if current is None:
        return None
    key = provenance_key(current)
    if key == new_key:
        return None
    workdir = Path(workdir)
    target = entry_path(workdir, stage, key)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with interrupt.deferred():  # a stop waits for these few renames
            if stage.writes_files:
                if not _keep_files(stage, workdir, current, key, target):
                    return None
            else:
                tmp = tmp_path(target)
                try:
                    _link(workdir / stage.output, tmp, "move")
                    os.replace(tmp, target)
                finally:
                    tmp.unlink(missing_ok=True)
            os.utime(target)  # kept now: its age for eviction
            _fsync_dir(target.parent)
    except OSError as exc:
        raise ArtifactError(
            f"{target}: cannot keep the previous {stage.name} result in the cache "
            f"({exc.strerror or exc}); free some space, or set compute.cache_size: 0 to replace "
            "it without keeping it"
        ) from None
    return Entry(stage.name, key, target, _size(target), target.lstat().st_mtime)


def _keep_files(stage: Stage, workdir: Path, current: dict, key: str, target: Path) -> bool:
    """A file stage's outputs as one entry: ``files/`` plus a manifest with their digests.
    False when the output is incomplete or does not match its recorded digests (a restore
    killed half-way leaves such a mix): nothing is kept, an existing entry stays as it was.
    The files are few and small, so checking them here is cheap."""
    recorded = dict(current.get("files") or {})
    summary = stage.provenance_file
    paths = [*recorded, summary]
    try:
        if any(sha256_file(workdir / rel) != digest for rel, digest in recorded.items()):
            return False
        recorded[summary] = sha256_file(workdir / summary)  # records the others; not itself
    except OSError:
        return False
    tmp = tmp_path(target)
    try:
        for rel in paths:
            dst = tmp / FILES / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            _link(workdir / rel, dst, "copy")
        manifest = {"stage": stage.name, "key": key,
                    "provenance": {k: current.get(k) for k in PROVENANCE_KEYS}, "files": recorded}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return True



# ----------------------------------------------------------------------------- restore
def _problem(stage: Stage, path: Path, expected: dict) -> str | None:
    """None when the entry verifies and holds the computation ``expected``; else why not."""
    want = {k: expected.get(k) for k in PROVENANCE_KEYS}
    if not stage.writes_files:
        try:
            attrs = verify_h5(path)
            got = {"dynconn_version": attrs.get("dynconn_version"),
                   "params": json.loads(attrs.get("params", "null")),
                   "inputs": json.loads(attrs.get("inputs", "null"))}
        except ArtifactError as exc:
            return str(exc).removesuffix("; recompute it")
        except (TypeError, ValueError):
            return f"{path}: its provenance is unreadable"
        return None if got == want else f"{path}: not the result of the computation its name says"
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        files = manifest["files"]
        provenance = manifest["provenance"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{path / MANIFEST}: missing or unreadable"
    if provenance != want or not isinstance(files, dict) or stage.provenance_file not in files:
        return f"{path / MANIFEST}: not the result of the computation its name says"
    for rel, digest in files.items():
        p = path / FILES / rel
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            return f"{path / MANIFEST}: names a file outside the work directory ({rel})"
        try:
            if sha256_file(p) != digest:
                return f"{p}: does not match its recorded checksum (modified or damaged)"
        except OSError:
            return f"{p}: missing or unreadable"
    return None


def restore(stage: Stage, workdir: Path, expected: dict, current: dict | None,
            warn: Callable[[str], None], *, keep_current: bool = True) -> bool:
    """Put the cached output of the computation ``expected`` under the stage's real names,
    keeping the ``current`` output first (when ``keep_current``). False when the cache has
    no such entry, or only a damaged one (removed, with a warning): recompute then."""
    workdir = Path(workdir)
    key = provenance_key(expected)
    path = entry_path(workdir, stage, key)
    if not path.exists():
        return False
    problem = _problem(stage, path, expected)
    if problem is not None:
        warn(f"{problem}; removed this cached {stage.name} result and recomputing it")
        _remove(path)
        return False
    if keep_current:
        keep(stage, workdir, current, key)
    with interrupt.deferred():  # a stop waits until the output is whole
        if stage.writes_files:
            _install_files(stage, workdir, path)
        else:
            _move(path, workdir / stage.output)
            _fsync_dir(workdir)
        _remove(path)
    return True


def _install_files(stage: Stage, workdir: Path, entry: Path) -> None:
    """Each file linked (or copied) to a temporary name and renamed into place; the
    provenance file last, so the output is up to date only once every file is there."""
    files = json.loads((entry / MANIFEST).read_text())["files"]
    summary = stage.provenance_file

    def put(rel: str) -> None:
        dst = workdir / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = tmp_path(dst)
        try:
            _link(entry / FILES / rel, tmp, "copy")
            os.replace(tmp, dst)
        finally:
            tmp.unlink(missing_ok=True)

    for rel in files:
        if rel != summary:
            put(rel)
    stage.remove_stale(workdir, set(files))  # figures the current report has and this one not
    put(summary)
    for folder in {(workdir / rel).parent for rel in files}:
        _fsync_dir(folder)


def discard(stage: Stage, workdir: Path, key: str) -> None:
    """Remove the entry of ``key`` (a fresh result of the same computation supersedes it)."""
    path = entry_path(workdir, stage, key)
    if path.exists():
        _remove(path)


# ----------------------------------------------------------------------------- bound
def collect(workdir: Path, limit: int) -> tuple[list[Entry], list[Entry]]:
    """Remove the least recently kept entries until the cache holds at most ``limit``
    bytes. Returns (removed, remaining)."""
    remaining = entries(workdir)
    total = sum(e.size for e in remaining)
    removed = []
    while remaining and total > limit:
        entry = remaining.pop(0)
        _remove(entry.path)
        total -= entry.size
        removed.append(entry)
    root = Path(workdir) / CACHE_DIR
    if root.is_dir():
        for folder in root.iterdir():
            if folder.is_dir() and not folder.is_symlink():
                _remove_empty_folders(folder)  # left by entries deleted by hand, too
    return removed, remaining

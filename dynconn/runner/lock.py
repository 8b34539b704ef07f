"""The work-directory lock: one dynconn process writes into a work directory at a time.

Mechanism
---------
``<workdir>/.dynconn.lock`` is opened (created if absent) and locked with
``fcntl.flock(LOCK_EX | LOCK_NB)``. The kernel drops that lock when its holder exits in
*any* way, SIGKILL included, so a lock can never outlive its process on this host. The
holder writes ``{"pid", "host", "started", "command"}`` into the file, so that a refused
process can name it, and removes the file when it finishes.

- The lock is held (flock fails): :class:`~dynconn.errors.LockError` at once, naming the
  holder's pid, host, start time and command.
- The lock is free but the file still names a holder (it was killed, e.g. SIGKILL or a
  power cut): a *stale* lock. If the holder was on this host, it is taken over with a
  warning. If it was on another host, the lock is refused: flock on a network file system
  may not reach across hosts (see below), so a run there may still be alive. The message
  says to delete the file once you know it is not.
- After locking, the open file is checked to still be the one at the path (a holder may
  have removed it between our ``open`` and ``flock``); if not, locking starts over.

Network file systems (NFS)
--------------------------
Linux NFS clients implement flock with NFS byte-range locks (NFSv4, or v3 with lockd), so
the lock works between hosts on a correctly configured mount. With ``nolock`` or
``local_lock=flock|all`` mounts it only excludes processes on the same host; the file's
host field then still stops a second host from taking over a lock whose file remains, but
two hosts starting at the same instant could both proceed. Do not share one work directory
between hosts on such mounts. A file system without flock at all (rare FUSE mounts) gives
a clear error; use a local work directory there.
"""

from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import json
import os
import socket
import sys
from pathlib import Path

from ..console import Console
from ..errors import DynconnError, LockError

LOCK_NAME = ".dynconn.lock"


def pid_alive(pid: int) -> bool:
    """Whether a running process with this pid exists on this host (a zombie -- killed,
    not yet reaped by its parent -- is not running)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (not Linux): trust kill(0)
    state = stat.rsplit(")", 1)[-1].split()[0] if ")" in stat else ""
    return state not in ("Z", "X")


def describe_holder(info: dict) -> str:
    pid, host = info.get("pid", "?"), info.get("host", "?")
    started, command = info.get("started", "?"), info.get("command")
    text = f"pid {pid} on host {host}, started {started}"
    return f"{text} ({command})" if command else text


def _read_info(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        raw = os.read(fd, 65536)
        info = json.loads(raw.decode("utf-8")) if raw.strip() else {}
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


def takeover_text(info: dict, pid: int) -> str:
    """What happened to the holder named by a stale lock file, in words. The lock was free,
    so its holder is gone; what is left to say is whether its pid is too."""
    who = f"pid {info.get('pid', '?')} on {info.get('host', '?')}"
    since = f", started {info['started']}" if info.get("started") else ""
    command = f" ({info['command']})" if info.get("command") else ""
    if pid == os.getpid():
        what = "an earlier command in this same process, which did not release it"
    elif pid_alive(pid):
        what = ("a process that ended without releasing it; its pid now belongs to another "
                "process, which does not hold the lock")
    else:
        what = "which is no longer running (killed or crashed)"
    if pid == os.getpid() or pid_alive(pid):
        return f"took over the lock of {who}{since}{command}: {what}"
    return f"took over the lock of {who}{since}{command}, {what}"


class WorkdirLock:
    """Context manager holding the lock of one work directory.

    Creates the work directory if needed; when it created it and the directory is empty
    again on release (the command failed before writing anything), it is removed, so a
    failed first run leaves no trace.
    """

    def __init__(self, workdir: Path, console: Console | None = None, command: str | None = None):
        self.workdir = Path(workdir)
        self.path = self.workdir / LOCK_NAME
        self.console = console
        self.command = command or " ".join(["dynconn", *sys.argv[1:2]])
        self.fd: int | None = None
        self.created: list[Path] = []
        self.took_over: dict | None = None

    # ------------------------------------------------------------------ acquire
    def _make_workdir(self) -> None:
        missing = []
        p = self.workdir
        while not p.exists() and p != p.parent:
            missing.append(p)
            p = p.parent
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise DynconnError(f"{self.workdir}: exists and is not a folder; choose another --workdir") from None
        except OSError as exc:
            raise DynconnError(
                f"{self.workdir}: cannot create the work directory ({exc.strerror}); "
                "choose another --workdir"
            ) from None
        self.created = list(reversed(missing))
        if not self.workdir.is_dir():
            raise DynconnError(f"{self.workdir}: exists and is not a folder; choose another --workdir")

    def acquire(self) -> "WorkdirLock":
        self._make_workdir()
        try:
            self._acquire()
        except BaseException:
            self._remove_created()
            raise
        return self

    def _acquire(self) -> None:
        for _ in range(100):  # retried only when the file was replaced under us
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise DynconnError(
                    f"{self.workdir}: cannot write into the work directory ({exc.strerror}); "
                    "check its permissions and free space, or choose another --workdir"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                info = _read_info(fd)
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    holder = describe_holder(info) if info else "another process (starting up)"
                    raise LockError(
                        f"{self.workdir}: in use by {holder}; wait for it to finish or use "
                        "another --workdir"
                    ) from None
                raise DynconnError(
                    f"{self.path}: cannot lock the work directory ({exc.strerror}); "
                    "use a work directory on a local file system"
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the previous holder removed the file between our open and flock
                os.close(fd)
                continue
            self.fd = fd
            break
        else:  # pragma: no cover - would need a pathological race
            raise LockError(f"{self.path}: could not lock the work directory; try again")
        try:
            self._check_stale()
            self._write_info()
        except BaseException:
            self._close(remove=False)
            raise

    def _check_stale(self) -> None:
        info = _read_info(self.fd)
        if not info:
            return
        host = socket.gethostname()
        if info.get("host") not in (None, host):
            raise LockError(
                f"{self.workdir}: locked by {describe_holder(info)}, another host; if that run "
                f"is no longer running, delete {self.path} and retry"
            )
        try:
            pid = int(info.get("pid", 0) or 0)
        except (TypeError, ValueError):
            pid = 0
        self.took_over = info
        if self.console is not None:
            self.console.warn(f"{self.workdir}: {takeover_text(info, pid)}")

    def _write_info(self) -> None:
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": self.command,
        }
        data = json.dumps(info).encode()
        try:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, data, 0)
            os.fsync(self.fd)
        except OSError as exc:
            raise DynconnError(
                f"{self.path}: cannot write the lock file ({exc.strerror}); check the free space "
                "and permissions of the work directory"
            ) from None

    # ------------------------------------------------------------------ release
    def _close(self, remove: bool) -> None:
        if self.fd is None:
            return
        try:
            if remove:
                # remove while still holding the lock: a process that opened the old file
                # sees it was replaced (inode check) and starts over
                try:
                    self.path.unlink()
                except FileNotFoundError:
                    pass
                except OSError:
                    os.ftruncate(self.fd, 0)  # at least mark it free of a holder
        finally:
            os.close(self.fd)  # releases the flock
            self.fd = None

    def _remove_created(self) -> None:
        for folder in reversed(self.created):
            try:
                folder.rmdir()  # only when empty
            except OSError:
                break
        self.created = []

    def release(self) -> None:
        try:
            self._close(remove=True)
        finally:
            self._remove_created()

    def __enter__(self) -> "WorkdirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    @property
    def held(self) -> bool:
        return self.fd is not None

"""Stop signals: SIGINT, SIGTERM and SIGHUP end a command cleanly.

:func:`signals_handled` (used by the CLI around every command) turns each of those
signals into an :class:`~dynconn.errors.Interrupted` exception raised in the main thread.
It is a ``KeyboardInterrupt``, so it unwinds through every ``finally`` and ``with``: the
temporary file being written is removed, the work-directory lock is released, finished
artifacts stay. The CLI then prints one line and exits with 128 + the signal number
(130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP).

A stage that can save partial work has two ways to do it:

- catch ``KeyboardInterrupt`` (covers all three signals), save, and re-raise; or, better,
- run its loop inside :func:`deferred`: a signal then only *requests* a stop, and the
  stage calls :func:`check` at safe points (e.g. after each solver iteration), where it
  saves its state and :func:`check` raises. A second signal while a stop is pending raises
  at once (a user pressing Ctrl-C twice is not kept waiting).
  :meth:`dynconn.io.artifacts.Checkpoint.offer` does the save-then-check in one call.

Outside :func:`deferred` the stop is raised at once *and* remembered until raised by
:func:`check`, which the pipeline calls between stages and the CLI before it reports success:
a stop whose exception some library code swallowed (seen twice in 175 SIGTERMs at random
moments of demo runs) still ends the run there.

SIGKILL cannot be caught: it leaves at most a ``*.tmp-<pid>`` file and a lock file, which
the next run removes (see :mod:`dynconn.runner.lock` and ``docs/robustness.md``).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator

from ..errors import Interrupted

STOP_SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s)


class _State:
    deferring = 0  # depth of nested deferred() blocks
    pending: int | None = None  # signal number of a requested stop


_state = _State()


def _handler(signum, frame):  # noqa: ARG001 - signal handler signature
    if _state.deferring and _state.pending is None:
        _state.pending = signum  # a safe point will raise it
        return
    # Raised now, and remembered: the handler runs wherever the main thread happens to be, and
    # code there may swallow the exception (a bare ``except:`` around a library's optional
    # import, a finalizer). The next check() -- the pipeline calls it between stages, the CLI
    # before reporting success -- then raises the stop again instead of losing it.
    _state.pending = signum
    raise Interrupted(signum)


@contextlib.contextmanager
def signals_handled() -> Iterator[None]:
    """Within the block, stop signals raise :class:`Interrupted` (main thread only;
    elsewhere this does nothing). The previous handlers are restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for sig in STOP_SIGNALS:
        previous[sig] = signal.signal(sig, _handler)
    _state.pending = None
    unraisable = sys.unraisablehook

    def quiet_stop(info):
        # The stop was raised inside a finalizer or weakref callback, which Python cannot pass
        # on and would print as "Exception ignored in ...": it stays pending and the next
        # check() raises it again, so the user sees the one-line message only.
        if not isinstance(info.exc_value, Interrupted):
            unraisable(info)

    sys.unraisablehook = quiet_stop
    try:
        yield
    finally:
        sys.unraisablehook = unraisable
        for sig, old in previous.items():
            signal.signal(sig, old)
        _state.pending = None


def stop_requested() -> bool:
    """True when a stop signal arrived inside a :func:`deferred` block and was not yet raised."""
    return _state.pending is not None


def check() -> None:
    """Raise the pending stop (if any). Call at safe points: inside :func:`deferred`, and
    between units of work (a stop raised earlier but swallowed by other code is raised again)."""
    if _state.pending is not None:
        signum, _state.pending = _state.pending, None
        raise Interrupted(signum)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Within the block a stop signal only sets a flag (see :func:`check`); a stop still
    pending when the block ends is raised there."""
    _state.deferring += 1
    try:
        yield
    finally:
        _state.deferring -= 1
    if not _state.deferring:
        check()

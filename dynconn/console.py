"""Messages and progress for the command line (rich), silenced by ``--quiet``.

Pure cores never print: they report progress through a callback and raise warnings
with :func:`warnings.warn` (category :class:`DynconnWarning`). Stage wrappers run them
under :meth:`Console.capture_warnings`, which shows each warning once and records it so
it can be stored in the artifact and shown in the report.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Callable



def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """``"1 pair"``, ``"2 pairs"``: a count with its noun in the right number."""
    return f"{count} {noun if count == 1 else (plural_form or noun + 's')}"


class DynconnWarning(UserWarning):
    """Something the user should know about the data or the fit; the run continues."""


class Console:
    """Where the CLI and stage wrappers speak to the user (stderr)."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self._rich = None
        self.warnings: list[str] = []

    @property
    def rich(self):
        """The rich console on stderr, made when first used (rich is imported then: a quiet
        command that has nothing to say does not load it, ≈ 50 ms)."""
        if self._rich is None:
            from rich.console import Console as RichConsole

            self._rich = RichConsole(stderr=True, highlight=False, soft_wrap=True)
        return self._rich

    def info(self, message: str) -> None:
        if not self.quiet:
            self.rich.print(message)

    def warn(self, message: str) -> None:
        """Warnings show even with --quiet: they are about the result."""
        self.warnings.append(message)
        self.rich.print(f"[yellow]warning:[/yellow] {message}")

    @contextlib.contextmanager
    def progress(self, description: str, total: float | None) -> Iterator[Callable[..., None]]:
        """Context yielding ``advance(n=1, total=None)``; a live bar unless quiet."""
        if self.quiet or not self.rich.is_terminal:
            yield lambda n=1, total=None: None
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(
            TextColumn("  {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.rich,
            transient=True,
        ) as bar:
            task = bar.add_task(description, total=total)

            def advance(n: float = 1, total: float | None = None) -> None:
                if total is not None:
                    bar.update(task, total=total)
                bar.advance(task, n)

            yield advance

    @contextlib.contextmanager
    def capture_warnings(self) -> Iterator[list[str]]:
        """Collect DynconnWarnings raised inside; each is shown once and recorded."""
        collected: list[str] = []
        caught: list[warnings.WarningMessage] = []
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", DynconnWarning)
                yield collected
        finally:
            # outside the recording context: re-emitting here cannot feed `caught` again
            for w in caught:
                if issubclass(w.category, DynconnWarning):
                    text = str(w.message)
                    if text not in collected:
                        collected.append(text)
                        self.warn(text)
                else:
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def warn(message: str) -> None:
    """Raise a DynconnWarning from a pure core (shown and recorded by the stage wrapper)."""
    warnings.warn(message, DynconnWarning, stacklevel=2)


def write_error_log(exc: BaseException, argv: list[str] | None = None) -> Path | None:
    """Save an unexpected exception's traceback for a bug report; returns the file, or
    None when no log folder is writable. The folder is ``$DYNCONN_LOG_DIR``, else
    ``$XDG_CACHE_HOME/dynconn/logs`` (``~/.cache/dynconn/logs``), else the temp folder."""
    import datetime as _dt
    import os
    import platform
    import sys
    import tempfile
    import traceback
    from pathlib import Path

    from . import __version__

    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folders = [os.environ.get("DYNCONN_LOG_DIR"), os.path.join(cache, "dynconn", "logs"),
               os.path.join(tempfile.gettempdir(), "dynconn-logs")]
    text = (
        f"dynconn {__version__} internal error, {stamp}\n"
        f"command: {' '.join(argv if argv is not None else sys.argv)}\n"
        f"python {platform.python_version()} on {platform.platform()}\n\n"
        + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    )
    for folder in filter(None, folders):
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
            path = Path(folder) / f"internal-error-{stamp}-{os.getpid()}.log"
            path.write_text(text, encoding="utf-8")
            return path
        except OSError:
            continue
    return None

"""User-facing errors.

Anything the user can fix (a bad config key, a missing or malformed file) raises a
:class:`DynconnError` whose message is ONE line naming the key or file and what to do.
The CLI turns it into that line on stderr and exit status 1, without a traceback.
"""


class DynconnError(Exception):
    """A user error: bad config, bad input file, impossible request. Exit status 1."""


class ConfigError(DynconnError):
    """The config (or a ``--set`` override) is invalid; the message starts with the key path."""


class InputError(DynconnError):
    """An input data file is missing, unreadable or inconsistent; the message names the file."""


class ArtifactError(DynconnError):
    """An artifact is missing, unreadable, truncated or fails its checksums (or cannot be
    written); the message names the file."""


class LockError(DynconnError):
    """The work directory is in use by another dynconn process (the message names it)."""


class ResourceError(DynconnError):
    """Not enough memory or disk for the request; the message says what reduces the need."""


class NumericalError(DynconnError):
    """NaN or infinite values appeared; the message names the stage, animal and neurons."""


class Interrupted(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP arrived (see :mod:`dynconn.runner.interrupt`).

    A subclass of KeyboardInterrupt, so ``except KeyboardInterrupt`` in a stage covers
    every stop signal (e.g. to save a checkpoint) and ``except Exception`` never
    swallows it. ``exit_status`` is 128 + the signal number (130 for Ctrl-C, 143 for
    SIGTERM). The pipeline fills in ``stage`` and ``checkpoint`` for the message.
    """

    def __init__(self, signum: int):
        import signal

        super().__init__(signum)
        self.signum = int(signum)
        try:
            self.signame = signal.Signals(signum).name
        except ValueError:  # pragma: no cover - unknown number
            self.signame = f"signal {signum}"
        self.exit_status = 128 + self.signum
        self.stage: str | None = None
        self.checkpoint = None

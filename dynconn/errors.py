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

"""One validator for every value a user gives: config keys, ``--set`` overrides and the
keyword arguments of the Python API (:mod:`dynconn.api`).

Each check takes the value's *name* (a dotted config path such as ``factorize.tol``, or a
keyword such as ``tol``), the value and its limits, and returns the normalised value
(an ``int`` for an integer, a finite ``float`` for a number) or raises ``error`` with one
line that starts with the name and says what is expected::

    factorize.tol: expected a number ≥ 0, got "small"

``error`` is :class:`InvalidArgument` (a ``ValueError``) for the library and
:class:`~dynconn.errors.ConfigError` for the config, so the same rule gives the same
sentence in a notebook and on the command line.

Numbers are numbers wherever a number is expected: ``1e-6``, ``1E-6`` and ``.5`` in a
config file or a ``--set`` value are read as floats (:func:`yaml_load`; YAML 1.1, which
PyYAML implements, reads an exponent without a dot as a string).
"""

from __future__ import annotations

import math
import numbers
import re
from typing import Any

__all__ = ["InvalidArgument", "check_int", "check_number", "check_choice", "check_bool",
           "check_seed", "describe", "yaml_load"]


class InvalidArgument(ValueError):
    """A keyword argument of the library is invalid; the message starts with its name."""


def describe(value: Any) -> str:
    """How a value is shown in an error: strings quoted, ``null`` for None, containers by type."""
    if isinstance(value, str):
        return f'"{value}"'
    if value is None:
        return "null"
    return repr(value) if not isinstance(value, (dict, list, tuple)) else type(value).__name__


def _bounds(low, low_open: bool, high) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '≥'} {low:g}")
    if high is not None:
        parts.append(f"≤ {high:g}")
    return " and ".join(parts)


def _is_bool(value) -> bool:
    return isinstance(value, bool) or type(value).__name__ == "bool_"  # numpy's bool too


def check_number(name: str, value: Any, *, low: float | None = None, low_open: bool = False,
                 high: float | None = None, integer: bool = False,
                 error: type[Exception] = InvalidArgument) -> int | float:
    """A finite real number (an ``int`` when ``integer``) within ``[low, high]``
    (``(low, high]`` when ``low_open``).

    Integers given as whole floats (``1e6``, ``500.0``) are accepted as integers; bools,
    strings and NaN are not.

    Examples
    --------
    >>> check_number("tol", 1e-6, low=0)
    1e-06
    >>> check_number("max_iter", 1e3, low=1, integer=True)
    1000
    >>> check_number("tol", -1, low=0)
    Traceback (most recent call last):
    ...
    dynconn.validation.InvalidArgument: tol: expected a value ≥ 0, got -1.0
    """
    what = "an integer" if integer else "a number"
    if _is_bool(value) or not isinstance(value, numbers.Real):
        raise error(f"{name}: expected {what}, got {describe(value)}")
    if integer:
        if not isinstance(value, numbers.Integral):
            if not math.isfinite(value) or not float(value).is_integer():
                raise error(f"{name}: expected {what}, got {value!r}")
        value = int(value)
    else:
        try:
            value = float(value)
        except OverflowError:  # an integer beyond the float range
            raise error(f"{name}: expected a finite number, got an integer of about "
                        f"{int(int(value).bit_length() * 0.30103)} digits") from None
        if not math.isfinite(value):
            raise error(f"{name}: expected a finite number, got {value!r}")
    if low is not None and (value < low or (low_open and value == low)):
        raise error(f"{name}: expected a value {'>' if low_open else '≥'} {low:g}, got {value!r}")
    if high is not None and value > high:
        raise error(f"{name}: expected a value ≤ {high:g}, got {value!r}")
    return value


def check_int(name: str, value: Any, *, low: int | None = None, high: int | None = None,
              error: type[Exception] = InvalidArgument) -> int:
    """An integer within ``[low, high]`` (see :func:`check_number`).

    Examples
    --------
    >>> check_int("rank", 3, low=1)
    3
    >>> check_int("rank", 0, low=1)
    Traceback (most recent call last):
    ...
    dynconn.validation.InvalidArgument: rank: expected a value ≥ 1, got 0
    """
    return check_number(name, value, low=low, high=high, integer=True, error=error)


def check_choice(name: str, value: Any, choices, *, aliases=(),
                 error: type[Exception] = InvalidArgument) -> Any:
    """One of ``choices``; ``aliases`` are ``(old name, current name)`` pairs accepted too."""
    if isinstance(value, str):
        value = dict(aliases).get(value, value)
    if isinstance(value, (list, dict)) or value not in tuple(choices):
        raise error(f"{name}: expected one of {', '.join(map(str, choices))}; got {describe(value)}")
    return value


def check_bool(name: str, value: Any, *, error: type[Exception] = InvalidArgument) -> bool:
    """``True`` or ``False`` (not 0/1, not a string)."""
    if not _is_bool(value):
        raise error(f"{name}: expected true or false, got {describe(value)}")
    return bool(value)


#: Largest seed (numpy's SeedSequence takes any non-negative integer; 63 bits keeps it an int64
#: in every artifact).
MAX_SEED = 2**63 - 1


def check_seed(name: str, value: Any, *, allow_none: bool = True,
               error: type[Exception] = InvalidArgument) -> int | None:
    """A random seed: an integer in [0, 2**63 − 1], or None (fresh entropy) when allowed."""
    if value is None and allow_none:
        return None
    return check_int(name, value, low=0, high=MAX_SEED, error=error)


# ----------------------------------------------------------------------------- YAML numbers
# YAML 1.2's float syntax (core schema): an exponent needs no dot (1e-6, 1E-6), and a leading
# dot is fine (.5). PyYAML implements YAML 1.1, whose float pattern needs a dot before an
# exponent, so ``1e-6`` was read as the string "1e-6".
_FLOAT_12 = re.compile(r"""^[-+]?(?:
      [0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    | \.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
    | [0-9][0-9_]*[eE][-+]?[0-9]+
    )$""", re.X)


def _loader():
    import yaml

    class NumbersLoader(yaml.SafeLoader):
        """SafeLoader that reads YAML 1.2 floats (``1e-6``, ``1E-6``, ``.5``) as floats."""

    # a copy: the resolvers of yaml.SafeLoader itself stay as they are
    NumbersLoader.yaml_implicit_resolvers = {
        k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    for first in "+-.0123456789":
        NumbersLoader.yaml_implicit_resolvers.setdefault(first, []).insert(
            0, ("tag:yaml.org,2002:float", _FLOAT_12))
    return NumbersLoader


_LOADER = None


def yaml_load(text: str) -> Any:
    """``yaml.safe_load`` that reads ``1e-6``, ``1E-6`` and ``.5`` as numbers.

    Examples
    --------
    >>> yaml_load("tol: 1e-6\\nfraction: .5\\nbig: 1E+3\\nname: 1e-6x")
    {'tol': 1e-06, 'fraction': 0.5, 'big': 1000.0, 'name': '1e-6x'}
    """
    import yaml

    global _LOADER
    if _LOADER is None:
        _LOADER = _loader()
    return yaml.load(text, Loader=_LOADER)  # noqa: S506 - a SafeLoader subclass

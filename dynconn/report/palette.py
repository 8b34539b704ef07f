"""Colours and figure keys of the report: what needs no matplotlib.

The report computes colours, tables and figure keys here; :mod:`dynconn.report.figures` (which
imports matplotlib, slow to load) is imported only when a figure must actually be drawn, so
regenerating a report whose figures did not change starts fast.
"""

from __future__ import annotations

import functools
import hashlib
import re
from importlib import metadata
from pathlib import Path

import numpy as np

# Okabe & Ito (2008) without black, most distinct first
COMMUNITY_COLOURS = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442"]
EXTRA_COHESIVE = "#5F5F5F"  # cohesive communities beyond the palette
DIFFUSE = "#CFCFCF"  # diffuse communities and singletons
ABSENT = "#FFFFFF"  # not in the component's graph


#: Print size: every figure is drawn at the size it prints at (its ``figsize``, at most
#: ``MAX_PRINT_WIDTH`` inches wide: a landscape page), and no text is smaller than ``MIN_FONT``
#: points there. A row of a heatmap carries a name only when it is at least ``ROW_POINTS`` tall
#: (8 pt text and a little leading); otherwise names are left out and the figure says why.
MIN_FONT = 8.0
ROW_POINTS = 8.5
MAX_PRINT_WIDTH = 10.0


def readable_rows(n_rows: int, height_in: float) -> bool:
    """Whether ``n_rows`` rows spread over ``height_in`` inches are each tall enough for a name."""
    return n_rows > 0 and height_in * 72.0 / n_rows >= ROW_POINTS


def rows_note(n_rows: int, height_in: float, where: str = "") -> str:
    """Why row names are left out of a figure (empty when they are drawn)."""
    if readable_rows(n_rows, height_in) or n_rows == 0:
        return ""
    return (f"{n_rows} rows of {height_in * 72.0 / n_rows:.2g} pt: too small for names at {MIN_FONT:g} pt"
            + (f"\n({where})" if where else ""))


def time_decimals(resolution_s: float) -> int:
    """Decimals that show a time to its resolution (a frame): 0.25 s -> 1, 2 s -> 0, 0.02 s -> 2."""
    if not resolution_s or not np.isfinite(resolution_s) or resolution_s <= 0:
        return 2
    return int(max(0, min(6, np.ceil(-np.log10(resolution_s) - 1e-9))))


def seconds(x: float, decimals: int = 1) -> str:
    """A time in seconds, rounded to ``decimals`` (trailing zeros dropped; -0 and round-off at
    zero shown as 0): ``2.220446e-16`` -> ``0``, ``480.659`` -> ``480.7``."""
    text = f"{float(x):.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def span(start: float, stop: float, decimals: int = 1) -> str:
    """``start–stop s`` rounded (:func:`seconds`)."""
    return f"{seconds(start, decimals)}–{seconds(stop, decimals)} s"


def palette_colour(rank: int) -> str:
    """Colour of the ``rank``-th cohesive community (0 = most cohesive)."""
    return COMMUNITY_COLOURS[rank] if rank < len(COMMUNITY_COLOURS) else EXTRA_COHESIVE


@functools.cache
def _source_digest() -> bytes:
    """sha256 of ``figures.py``: a figure drawn by other code is not reused."""
    return hashlib.sha256(Path(__file__).with_name("figures.py").read_bytes()).hexdigest().encode()


_MATPLOTLIB_VERSION = metadata.version("matplotlib").encode()


KEY_PATTERN = re.compile(rb"dynconn-figure[\x00 ]([0-9a-f]{64})")


def figure_key(function: str, kwargs: dict, dpi: float) -> str:
    """A fingerprint of everything a figure's pixels depend on: the code that draws it
    (``figures.py``), the matplotlib version, the figure function, its arguments and the resolution. Stored in
    the PNG and SVG files, it lets the report reuse a figure whose inputs did not change."""
    h = hashlib.sha256()
    h.update(_source_digest() + _MATPLOTLIB_VERSION + function.encode() + repr(float(dpi)).encode())
    _feed(h, kwargs)
    return h.hexdigest()


def _feed(h, value) -> None:
    if isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        if array.dtype == object:
            _feed(h, array.tolist())
            return
        h.update(b"A" + array.dtype.str.encode() + repr(array.shape).encode())
        h.update(array.data)
    elif isinstance(value, dict):
        h.update(b"D%d" % len(value))
        for k in sorted(value, key=str):
            _feed(h, str(k))
            _feed(h, value[k])
    elif isinstance(value, (list, tuple)):
        h.update(b"L%d" % len(value))
        for v in value:
            _feed(h, v)
    else:
        h.update(b"S" + repr(value).encode() + b"\0")


def stored_key(data: bytes) -> str | None:
    """The figure key recorded in a PNG or SVG written by :func:`render` (None if absent)."""
    m = KEY_PATTERN.search(data[:1 << 16]) or KEY_PATTERN.search(data)
    return m.group(1).decode() if m else None


def downsample_columns(x: np.ndarray, max_columns: int) -> tuple[np.ndarray, int]:
    """Average consecutive columns of (N, F) so that at most ``max_columns`` remain
    (NaN-aware); returns the array and the factor."""
    f = x.shape[1]
    factor = max(1, int(np.ceil(f / max_columns)))
    if factor == 1:
        return x, 1
    pad = (-f) % factor
    if pad:
        x = np.concatenate([x, np.full((x.shape[0], pad), np.nan, dtype=x.dtype)], axis=1)
    blocks = x.reshape(x.shape[0], -1, factor)
    counts = np.isfinite(blocks).sum(axis=2)
    sums = np.nansum(blocks, axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan), factor

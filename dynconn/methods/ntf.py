"""Non-negative CP factorization of a pairs x time x animals tensor with structured missing data.

Pure core of the ``factorize`` stage: arrays in, arrays out; no files, no printing.

Model
-----
``X[p, t, a] ~ sum_r  weights[r] * pairs[p, r] * time[t, r] * animals[a, r]`` with every factor
non-negative, fitted by least squares on the *observed* entries only. ``mask[p, a]`` (True =
observed) says whether pair ``p`` was recorded in animal ``a``; it holds for all time bins. The
loss is ``||mask * (X - Xhat)||_F / ||mask * X||_F`` (relative error on observed entries).

Solver
------
Hierarchical ALS (HALS; Cichocki & Phan 2009, Gillis & Glineur 2012), one factor block at a
time, with *exact* weighted block updates for the missing data (see ``docs/factorization.md``):

* pairs mode: row ``p`` has its own Gram matrix ``G_p = (V'V) * (W' diag(mask[p]) W)``,
  all of them one (R^2 x A) @ (A x P) product, O(P A R^2);
* time mode: the mask does not depend on time, so all rows share one exact Gram
  ``G_V = sum_a (U' diag(mask[:, a]) U) * (w_a w_a')``, O(P A R^2);
* animals mode: row ``a`` has ``G_a = (U' diag(mask[:, a]) U) * (V'V)``.

*Time groups* (``time_groups=``, the concatenated layout: every animal's bins follow one another
on the time axis and A = 1): entry ``(p, t)`` is observed iff ``mask[p, time_groups[t]]``, with
``mask`` of shape (P, G). The same exact block updates then go through the per-group Grams of V,
``V_g'V_g`` (g = 1..G), with ``w`` the single animal row:

* pairs mode: ``G_p = sum_g mask[p, g] (V_g'V_g) * (w w')`` -- the same (R^2 x G) @ (G x P) product;
* time mode: row ``t`` has ``G_t = (U' diag(mask[:, g(t)]) U) * (w w')``;
* the animal row: ``G_w = sum_g (U' diag(mask[:, g]) U) * (V_g'V_g)``.

No (P, T, A) weight tensor is ever built. Unobserved entries of X are ignored exactly: if any is
non-zero (or NaN) the solver works on one copy with them zeroed; the pipeline stores zeros there,
so no copy is made. Per iteration two products over the one C-ordered (P, T*A) view X2 of X:
``F_pairs = X2 @ KR(V, W)`` and ``Z = U' @ X2`` with the updated U; the time and animal MTTKRPs
are then cheap contractions of Z (R x T x A). The pairs mode is row-separable, so on numpy both
products are done in one pass over X by blocks of :data:`PAIRS_BLOCK` pairs (each block's U rows
are updated between its two products, while its rows of X are still in cache), shared by as
many threads as numpy's BLAS may use, each block's part of Z summed in block order (so the
thread count does not change the result); on torch they are two GEMMs. The reconstruction error
follows from those products and the Gram matrices without another pass over X.

Beyond memory: X may be an out-of-core row source (an HDF5 dataset read by blocks, e.g.
:class:`dynconn.io.artifacts.RowBlocks`): the fused pass then reads each block once per iteration
and the factors are the in-memory ones bit for bit. With ``client=`` (a dask.distributed Client)
the pass runs on the workers, which keep each block's rows of X and of U (:class:`_DaskPass`); per
iteration only the small factors go out and the R x T x A parts of ``U' X2`` and the pair Grams
come back, summed in block order -- equal to the local fit to float32 rounding.

Public API: :func:`ncp_hals`, :func:`ncp_restarts`, :func:`select_rank`, :func:`factor_congruence`,
:func:`relative_error`, :func:`restart_seed`, the result dataclasses :class:`FitInfo`,
:class:`RestartsResult`, :class:`RankSelection`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import math
import numbers
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where a result is built: scipy.optimize and tensorly take ≈ 0.5 s to import
    from tensorly.cp_tensor import CPTensor

from ..validation import check_int, check_number

__all__ = [
    "FitInfo",
    "RestartsResult",
    "RankSelection",
    "ncp_hals",
    "ncp_restarts",
    "select_rank",
    "factor_congruence",
    "relative_error",
    "restart_seed",
    "loss_resolution",
    "prepare",
    "ObservedScan",
    "MODE_NAMES",
]

#: Names of the three modes, in axis order.
MODE_NAMES = ("pairs", "time", "animals")

FIT_STATE_FORMAT = "dynconn.ntf.fit/1"
RESTARTS_STATE_FORMAT = "dynconn.ntf.restarts/1"
SELECT_STATE_FORMAT = "dynconn.ntf.select/1"

#: Defaults of the rank sweep (:func:`select_rank`): each fit of the sweep stops at this many
#: iterations or this relative loss change -- enough to rank the errors and compare restarts.
SWEEP_MAX_ITER = 200
SWEEP_TOL = 1e-4
#: Defaults of the "stable-elbow" rank rule (see :func:`select_rank`).
SIMILARITY_THRESHOLD = 0.85
MIN_GAIN = 0.002
#: rule "parallel-analysis": a component counts when it gains at least this many times what a
#: component gains on the shifted null (docs/factorization.md, rank selection, rule "parallel-analysis")
NULL_RATIO = 1.5
#: shifted copies of the tensor the null gains are averaged over
NULL_SHUFFLES = 2

_METHODS = ("hals", "tensorly-hals")
_MISSING = ("exact", "em")
_INITS = ("random", "nndsvd")

#: Pairs (rows of X) per block of the fused pass over X on numpy (see :func:`_iteration`): each
#: block's rows of X (PAIRS_BLOCK x T*A floats, 20 MB at the paper's size) are read once from
#: memory for both products. Chosen by measurement (docs/factorization.md).
PAIRS_BLOCK = 1024
# numpy: both products over X in one pass by blocks (True), or two GEMMs over all of X (False,
# what the torch backend does); the results agree to rounding. A switch for tests and measurements.
_FUSED_PASS = True

# Rows of X per product in ``Z_blk = U[blk]' X2[blk]``: OpenBLAS packs the right operand of each
# call, and 64 rows (1.3 MB at the paper's size) stay in cache while 1024 do not (measured,
# docs/factorization.md).
_Z_ROWS = 64
# Threads sharing the fused pass (None: as many as numpy's BLAS may use, see _pass_threads). A
# switch for tests and measurements; the result does not depend on it.
_PASS_THREADS: int | None = None

# Elements of X processed at once when scanning it (validation, norms, Grams for the init): bounds
# the temporaries to a few MB whatever the tensor size.
_SCAN_ELEMENTS = 1 << 20


def _scan_rows(X) -> int:
    """Rows of X per scan block (X: a tensor or its shape)."""
    shape = getattr(X, "shape", X)
    return max(1, _SCAN_ELEMENTS // max(1, shape[1] * shape[2]))


# --------------------------------------------------------------------------------------------
# Result types
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _blas_controller():
    """threadpoolctl's view of the BLAS libraries loaded in this process (made once: it scans them)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController().select(user_api="blas")


def _pass_threads() -> int:
    """Threads for the fused pass over X: as many as numpy's BLAS is allowed to use.

    That count already follows the user's limits (``OPENBLAS_NUM_THREADS``, ``OMP_NUM_THREADS``,
    a batch scheduler's CPU set), so the pass uses the cores BLAS would have used, organised
    differently: each thread takes whole blocks with a single-threaded BLAS (see :func:`_iteration`).
    """
    if _PASS_THREADS is not None:
        return max(1, int(_PASS_THREADS))
    counts = [lib.num_threads for lib in _blas_controller().lib_controllers]
    return max(counts) if counts else 1


@contextlib.contextmanager
def _blas_single_threaded():
    """Within the block, numpy's BLAS runs each call on the calling thread only (restored after)."""
    if not _blas_controller().lib_controllers:
        yield
        return
    with _blas_controller().limit(limits=1):
        yield


@dataclass
class FitInfo:
    """Diagnostics of one fit.

    Attributes
    ----------
    n_iter : int
        Outer iterations done (one iteration updates all three factors once), resumed ones included.
    converged : bool
        True when the relative change of the loss fell below ``tol`` before ``max_iter``.
    loss_history : ndarray, shape (n_iter,), float64
        Relative error on observed entries after each iteration, ``||M*(X-Xhat)|| / ||M*X||``.
    seconds : float
        Wall-clock seconds spent fitting (init included; summed over resumed segments).
    init : str
        ``"random"``, ``"nndsvd"`` or ``"given"`` (explicit CPTensor).
    method, backend, device, dtype, missing : str
        What ran.
    rank : int
    phase_seconds : dict
        Seconds per phase (``gemm_pairs``, ``gemm_z``, ``grams``, ``hals_pairs``, ``hals_small``,
        ``init``) when ``profile=True`` was passed, else empty.
    """

    n_iter: int
    converged: bool
    loss_history: np.ndarray
    seconds: float
    init: str
    method: str = "hals"
    backend: str = "numpy"
    device: str = "cpu"
    dtype: str = "float32"
    missing: str = "exact"
    rank: int = 0
    phase_seconds: dict = field(default_factory=dict)
    unobserved_penalty: float = 0.0

    @property
    def loss(self) -> float:
        """Final relative error on observed entries (NaN if no iteration ran)."""
        return float(self.loss_history[-1]) if len(self.loss_history) else float("nan")


@dataclass
class RestartsResult:
    """Several fits of one rank from independent initialisations; the lowest loss is kept.

    Attributes
    ----------
    cp : CPTensor
        Best fit (lowest final loss), normalised and sorted as :func:`ncp_hals` returns it.
    info : FitInfo
        Diagnostics of the best fit.
    best_index : int
        Which restart it was.
    losses : ndarray (n_restarts,)
        Final relative error of each restart.
    n_iter : ndarray (n_restarts,) int
    converged : ndarray (n_restarts,) bool
    seconds : ndarray (n_restarts,)
    similarity : ndarray (n_restarts,)
        Factor congruence of each restart with the best one (:func:`factor_congruence`; 1 for the
        best itself): the stability diagnostic of Williams et al. (2018).
    weights : ndarray (n_restarts, rank)
        Component weights of every restart (sorted descending).
    fits : list of CPTensor
        Every restart's result.
    seed_entropy : int
        Root entropy of the restarts' seeds; restart k used :func:`restart_seed` (entropy, k).
    """

    cp: CPTensor
    info: FitInfo
    best_index: int
    losses: np.ndarray
    n_iter: np.ndarray
    converged: np.ndarray
    seconds: np.ndarray
    similarity: np.ndarray
    weights: np.ndarray
    fits: list
    seed_entropy: int
    seed_spawn_key: tuple = ()


@dataclass
class RankSelection:
    """Outcome of a rank sweep (:func:`select_rank`). Every diagnostic is an array indexed like ``ranks``.

    Attributes
    ----------
    rank : int
        The chosen rank.
    rule : str
        Rule that chose it; ``rule_params`` holds its thresholds.
    ranks : ndarray (n,) int
        Ranks fitted, increasing.
    errors : ndarray (n, n_restarts)
        Final relative error (observed entries) of every restart.
    best_error : ndarray (n,)
        Lowest error per rank.
    explained : ndarray (n,)
        ``1 - best_error**2``: fraction of the observed sum of squares explained.
    gain : ndarray (n,)
        Explained fraction gained per added component over the previous rank of the sweep
        (``explained`` itself for the first rank).
    similarity : ndarray (n, n_restarts)
        Congruence of every restart with its rank's best fit (1 for the best).
    mean_similarity : ndarray (n,)
        Mean similarity of the non-best restarts to the best (1 when only one restart).
    agreement : ndarray (n,)
        Mean similarity to the best of the other restarts that *reach* the best fit (explain
        within ``min_gain / 2`` of its fraction of the sum of squares); NaN when none does (the
        best was found once), 1 when only one restart.
    n_iter, seconds : ndarray (n, n_restarts)
    converged : ndarray (n, n_restarts) bool
    best_index : ndarray (n,) int
    eligible : ndarray (n,) bool
        Ranks that passed the rule's tests (see docs).
    best_fits : list of CPTensor
        Best fit per rank (for warm-starting the final fit of the chosen rank).
    rule_params : dict
    null_explained : ndarray (NULL_SHUFFLES, n) or None
        Rule ``"parallel-analysis"``: ``explained`` of one fit per rank of each shifted null copy
        of X (:func:`shifted_null`); None for the other rules.
    null_gain : ndarray (n,) or None
        The null's gain per added component, as ``gain``, smoothed by a straight line over the
        ranks (mean over the copies); None for the other rules.
    """

    rank: int
    rule: str
    ranks: np.ndarray
    errors: np.ndarray
    best_error: np.ndarray
    explained: np.ndarray
    gain: np.ndarray
    similarity: np.ndarray
    mean_similarity: np.ndarray
    agreement: np.ndarray
    n_iter: np.ndarray
    seconds: np.ndarray
    converged: np.ndarray
    best_index: np.ndarray
    eligible: np.ndarray
    best_fits: list
    rule_params: dict
    null_explained: np.ndarray | None = None
    null_gain: np.ndarray | None = None

    def as_arrays(self) -> dict:
        """Every diagnostic as ``name -> ndarray`` (HDF5-ready; the fits themselves are left out)."""
        out = {
            name: np.asarray(getattr(self, name))
            for name in (
                "ranks", "errors", "best_error", "explained", "gain", "similarity",
                "mean_similarity", "agreement", "n_iter", "seconds", "converged", "best_index", "eligible",
            )
        }
        out["rank"] = np.asarray(self.rank)
        if self.null_gain is not None:
            out["null_explained"] = np.asarray(self.null_explained)
            out["null_gain"] = np.asarray(self.null_gain)
        return out


# --------------------------------------------------------------------------------------------
# Array backends: a minimal shim so the same solver runs on numpy and on PyTorch (CPU/CUDA).
# torch is imported only when backend="pytorch" is asked for.
# --------------------------------------------------------------------------------------------


class _NumpyOps:
    name = "numpy"
    device = "cpu"

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)
        self.zero = np.zeros((), self.dtype)  # for clamp_min: a 0-d array is not converted per call

    def asarray(self, a, dtype=None):
        return np.ascontiguousarray(a, dtype=self.dtype if dtype is None else dtype)

    def to_numpy(self, a):
        return np.asarray(a)

    def zeros(self, shape, dtype=None):
        return np.zeros(shape, self.dtype if dtype is None else dtype)

    def empty(self, shape):
        return np.empty(shape, self.dtype)

    def matmul(self, a, b, out=None):
        return np.matmul(a, b, out=out)

    def mul(self, a, b, out=None):
        return np.multiply(a, b, out=out)

    def einsum(self, spec, *ops):
        return np.einsum(spec, *ops)

    def clamp0_(self, a):
        np.maximum(a, 0, out=a)
        return a

    # The HALS inner loops call these with out= buffers (no temporaries), as the bare numpy
    # functions: at 1024 columns a call costs ~1-2 us, so a wrapper's overhead would show.
    vecmat = np.matmul  # (g, Y, out=): g @ Y for a vector g (R,) and Y (R, n)
    sub = np.subtract  # (a, b, out=)
    clamp_min = np.maximum  # (a, zero, out=): max(a, 0)

    def copyto(self, dst, src):
        np.copyto(dst, src)

    rowdot = functools.partial(np.einsum, "sn,sn->n")  # (G, Y, out=): out[n] = sum_s G[s,n] Y[s,n]

    def sumsq(self, a) -> float:
        a = a.reshape(-1)
        return float(np.dot(a, a))

    def safe_inverse(self, den, out):
        """``out = 1 / den`` where den > 0, 1 where den == 0 (den >= 0)."""
        np.equal(den, 0, out=out)
        np.add(out, den, out=out)
        return np.divide(1.0, out, out=out)

    def round_(self, a):
        return np.rint(a, out=a)

    def scalar(self, a):
        return float(a)

    def sync(self):
        pass


class _TorchOps:
    name = "pytorch"

    def __init__(self, dtype, device=None):
        import torch  # deferred on purpose: the numpy path must never import torch

        self.torch = torch
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = str(torch.device(device))
        self.dtype = {"float32": torch.float32, "float64": torch.float64}[np.dtype(dtype).name]
        # the HALS inner loops' out= forms, as in _NumpyOps
        self.vecmat = lambda g, Y, out: torch.mv(Y.T, g, out=out)  # g @ Y, out (n,)
        self.sub = torch.sub
        self.clamp_min = torch.clamp  # (a, 0, out=): max(a, 0)
        self.zero = 0

    def asarray(self, a, dtype=None):
        t = self.torch
        dt = self.dtype if dtype is None else dtype
        if isinstance(a, t.Tensor):
            return a.to(device=self.device, dtype=dt).contiguous()
        return t.as_tensor(np.ascontiguousarray(a), device=self.device).to(dt).contiguous()

    def to_numpy(self, a):
        return a.detach().cpu().numpy()

    def zeros(self, shape, dtype=None):
        return self.torch.zeros(shape, dtype=self.dtype if dtype is None else dtype, device=self.device)

    def empty(self, shape):
        return self.torch.empty(shape, dtype=self.dtype, device=self.device)

    def matmul(self, a, b, out=None):
        return self.torch.matmul(a, b, out=out) if out is not None else self.torch.matmul(a, b)

    def mul(self, a, b, out=None):
        return self.torch.mul(a, b, out=out) if out is not None else self.torch.mul(a, b)

    def einsum(self, spec, *ops):
        return self.torch.einsum(spec, *ops)

    def clamp0_(self, a):
        return a.clamp_(min=0)

    def copyto(self, dst, src):
        dst.copy_(src)

    def rowdot(self, G, Y, out):
        return self.torch.sum(G * Y, 0, out=out)

    def sumsq(self, a) -> float:
        return float((a * a).sum().item())

    def safe_inverse(self, den, out):
        return self.torch.reciprocal(self.torch.where(den > 0, den, self.torch.ones_like(den)), out=out)

    def round_(self, a):
        return a.round_()

    def scalar(self, a):
        return float(a.item())

    def sync(self):
        if self.device.startswith("cuda"):
            self.torch.cuda.synchronize()


def _make_ops(backend: str, dtype, device=None):
    if backend == "numpy":
        if device not in (None, "cpu"):
            raise ValueError(f"backend='numpy' runs on the CPU only, got device={device!r}")
        return _NumpyOps(dtype)
    if backend in ("pytorch", "torch"):
        try:
            return _TorchOps(dtype, device)
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ValueError("backend='pytorch' needs PyTorch installed; use backend='numpy'") from exc
    raise ValueError(f"backend must be 'numpy' or 'pytorch', got {backend!r}")


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _check_rank(rank) -> int:
    return check_int("rank", rank, low=1)


def _check_dtype(dtype) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}") from exc
    if dt not in (np.float32, np.float64):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return dt


class _RowSource:
    """A (P, T, A) tensor kept out of memory, read by blocks of rows (pairs) in the working dtype.

    Wraps what the caller hands in: any object with ``shape``, ``dtype`` and
    ``read_rows(start, stop, out)`` (:class:`dynconn.io.artifacts.RowBlocks`, an HDF5 dataset read
    by blocks), or an ``h5py.Dataset`` itself (``read_direct``). ``src[start:stop]`` returns rows as
    a new array, :meth:`read` fills a buffer (no allocation where the dtypes agree).
    """

    def __init__(self, source, dtype):
        self.source = source
        self.shape = tuple(int(d) for d in source.shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)
        self._same = np.dtype(source.dtype) == self.dtype

    def _read_native(self, start: int, stop: int, out: np.ndarray) -> np.ndarray:
        if hasattr(self.source, "read_rows"):
            return self.source.read_rows(start, stop, out)
        self.source.read_direct(out, np.s_[start:stop])
        return out

    def read(self, start: int, stop: int, out: np.ndarray) -> np.ndarray:
        """Rows ``start:stop`` into ``out`` ((stop - start, T, A), working dtype, C-contiguous)."""
        if self._same:
            return self._read_native(start, stop, out)
        native = np.empty(out.shape, dtype=self.source.dtype)
        out[...] = self._read_native(start, stop, native)
        return out

    def __getitem__(self, key: slice) -> np.ndarray:
        start, stop, _ = key.indices(self.shape[0])
        return self.read(start, stop, np.empty((max(0, stop - start), *self.shape[1:]), dtype=self.dtype))


def _is_row_source(X) -> bool:
    """Is X a tensor read by blocks of rows (not an array-like to load whole)?"""
    return (not isinstance(X, np.ndarray) and hasattr(X, "shape") and hasattr(X, "dtype")
            and (hasattr(X, "read_rows") or hasattr(X, "read_direct")))


def _check_tensor(X, dtype) -> np.ndarray:
    if _is_row_source(X) or isinstance(X, _RowSource):
        X = X if isinstance(X, _RowSource) else _RowSource(X, dtype)
        if X.ndim != 3:
            raise ValueError(f"X must be a 3-way tensor (pairs, time, animals); got shape {X.shape}")
        if min(X.shape) < 1:
            raise ValueError(f"X must not be empty; got shape {X.shape}")
        if not np.issubdtype(X.source.dtype, np.floating):
            raise ValueError(f"X must hold real numbers, got dtype {X.source.dtype}")
        return X
    if hasattr(X, "detach") and hasattr(X, "cpu"):  # a torch tensor handed in directly
        X = X.detach().cpu().numpy()
    X = np.asarray(X)
    if X.ndim != 3:
        raise ValueError(f"X must be a 3-way tensor (pairs, time, animals); got shape {X.shape}")
    if min(X.shape) < 1:
        raise ValueError(f"X must not be empty; got shape {X.shape}")
    if not (np.issubdtype(X.dtype, np.floating) or np.issubdtype(X.dtype, np.integer)):
        raise ValueError(f"X must hold real numbers, got dtype {X.dtype}")
    # One copy at most: only when X is not already C-contiguous in the working dtype.
    return np.ascontiguousarray(X, dtype=dtype)


def _check_groups(time_groups, shape, mask) -> np.ndarray | None:
    """Validate ``time_groups`` (T,) integers in [0, G) against X (P, T, 1) and a mask (P, G)."""
    if time_groups is None:
        return None
    P, T, A = shape
    if A != 1:
        raise ValueError(f"time_groups needs X of shape (pairs, time, 1); got {tuple(shape)}")
    groups = np.asarray(time_groups)
    if groups.shape != (T,) or (groups.size and groups.dtype.kind not in "iu"):
        raise ValueError(f"time_groups must be {T} integers (the group of each time bin); got "
                         f"shape {groups.shape}, dtype {groups.dtype}")
    if mask is None:
        raise ValueError("time_groups needs a mask of shape (pairs, groups)")
    n_groups = np.shape(mask)[1] if np.ndim(mask) == 2 else 0
    if groups.min() < 0 or groups.max() >= n_groups:
        raise ValueError(f"time_groups must lie in [0, {n_groups}) (the mask's columns); "
                         f"got [{int(groups.min())}, {int(groups.max())}]")
    return np.ascontiguousarray(groups, dtype=np.int64)


def _check_mask(mask, shape, groups=None) -> np.ndarray | None:
    """The (P, A) mask -- (P, G) with time groups -- as a C-contiguous bool array, or None when
    every entry is observed (the cheaper unmasked path is then exact)."""
    if mask is None:
        return None
    mask = np.asarray(mask)
    P, _, A = shape
    if groups is not None:
        if mask.ndim != 2 or mask.shape[0] != P:
            raise ValueError(f"mask must have shape (pairs, groups) = ({P}, G) with time_groups; "
                             f"got {mask.shape}")
    elif mask.shape != (P, A):
        raise ValueError(
            f"mask must have shape (pairs, animals) = ({P}, {A}) to match X {tuple(shape)}; "
            f"got {mask.shape}"
        )
    if mask.dtype != bool:
        if not np.all((mask == 0) | (mask == 1)):
            raise ValueError("mask must be boolean (True = observed) or 0/1")
        mask = mask.astype(bool)
    used = mask if groups is None else mask[:, np.unique(groups)]  # groups without bins don't count
    if not used.any():
        raise ValueError("mask marks no entry as observed")
    if used.all():
        return None  # nothing missing: the cheaper unmasked path is exact
    return np.ascontiguousarray(mask)


def _observed(mask_rows: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """Boolean (rows, T, A) pattern of observed entries -- (rows, T, 1) with time groups --
    broadcastable against a block of X's rows."""
    if groups is None:
        return mask_rows[:, None, :]
    return mask_rows[:, groups][:, :, None]


def _scan_tensor(X: np.ndarray, mask: np.ndarray | None, groups: np.ndarray | None = None):
    """One chunked pass over X: validate, sum of squares of observed entries, unobserved junk.

    Returns ``(norm_sq, needs_zeroing)``; ``norm_sq`` is accumulated in float64. A block whose
    entries are all finite and non-negative (an affinity tensor's always are) is checked on
    whole contiguous reductions, with its unobserved fibres gathered only to see that they are
    0; the entry-by-entry masked path (:func:`_scan_block`) is for a block that holds NaN,
    infinities or negative values somewhere, to tell observed ones (an error) from unobserved
    ones (zeroed), and for one whose unobserved entries are not 0.
    """
    P = X.shape[0]
    norm_sq = 0.0
    needs_zeroing = False
    rows = _scan_rows(X)
    for start in range(0, P, rows):
        block = X[start:start + rows]
        m = None if mask is None else mask[start:start + rows]
        clean = _clean_block_sq(block, m, groups)
        if clean is not None:
            norm_sq += clean
            continue
        block_sq, block_zeroing = _scan_block(block, m, groups)
        norm_sq += block_sq
        needs_zeroing = needs_zeroing or block_zeroing
    return norm_sq, needs_zeroing


def _clean_block_sq(block: np.ndarray, m: np.ndarray | None, groups: np.ndarray | None) -> float | None:
    """One scan block's sum of squares (float64) when every entry is finite and non-negative and
    the unobserved ones are 0 (an affinity tensor's always are), checked on whole contiguous
    reductions; None when the block needs the entry-by-entry path (:func:`_scan_block`)."""
    lo, hi = block.min(), block.max()
    if not (lo >= 0 and np.isfinite(hi)):  # (False for NaN)
        return None
    if m is not None:
        if groups is not None:
            unobserved_nonzero = bool(block[:, :, 0][~_observed(m, groups)[:, :, 0]].any())
        else:
            unobserved_nonzero = bool(np.transpose(block, (0, 2, 1))[~m].any())
        if unobserved_nonzero:
            return None
    flat = block.reshape(-1)  # zeros at the unobserved entries add nothing
    return float(np.einsum("i,i->", flat, flat, dtype=np.float64))


class ObservedScan:
    """The solver's scan of X (validation and the sum of squares of the observed entries),
    fed with consecutive blocks of X's rows as they are made -- by the affinity stage while it
    writes the tensor, so that the factorization need not read it once more to scan it.

    ``add(start, block)`` takes rows ``start : start + len(block)`` (in order, any block sizes).
    :meth:`value` is then the sum of squares :func:`prepare` would compute for X in its dtype,
    bit for bit (the same scan blocks, summed in the same order), or None when some entry is
    NaN, infinite or negative, or an unobserved one is not 0: :func:`prepare` must scan such a
    tensor itself (it raises or zeroes them). Holds at most one scan block (about 1M entries).
    """

    def __init__(self, shape, mask=None, time_groups=None):
        self.shape = tuple(int(d) for d in shape)
        self.rows = _scan_rows(self.shape)
        self.mask = None if mask is None else np.asarray(mask, dtype=bool)
        self.groups = None if time_groups is None else np.asarray(time_groups, dtype=np.int64)
        self.done = 0  # rows received
        self.clean = True
        self._sum = 0.0
        self._parts: list[np.ndarray] = []  # rows of the scan block being filled
        self._filled = 0
        self._first = 0  # first row of that block
        self.dtype = None

    def add(self, start: int, block: np.ndarray) -> None:
        if start != self.done:
            raise ValueError(f"ObservedScan: rows must come in order (expected row {self.done}, got {start})")
        block = np.asarray(block)
        self.done += block.shape[0]
        if self.dtype is None:
            self.dtype = block.dtype
        elif block.dtype != self.dtype:
            self.clean = False
        if not self.clean:
            return
        i = 0
        while i < block.shape[0]:
            take = min(self.rows - self._filled, block.shape[0] - i)
            part = block[i:i + take]
            # (kept past this call: a copy, the caller may reuse its buffer for the next rows)
            self._parts.append(part if self._filled + take == self.rows else part.copy())
            self._filled += take
            i += take
            if self._filled == self.rows:
                self._flush()

    def _flush(self) -> None:
        """Scan the block of rows gathered (rows ``_first : _first + rows``, as in ``_scan_tensor``)."""
        block = self._parts[0] if len(self._parts) == 1 else np.concatenate(self._parts)
        block = np.ascontiguousarray(block)
        m = None if self.mask is None else self.mask[self._first:self._first + block.shape[0]]
        part = _clean_block_sq(block, m, self.groups)
        if part is None:
            self.clean = False
        else:
            self._sum += part
        self._first += block.shape[0]
        self._parts, self._filled = [], 0

    def value(self) -> float | None:
        """The observed sum of squares once every row has come (None if not clean, or not all came)."""
        if self.done != self.shape[0]:
            return None
        if self.clean and self._parts:
            self._flush()
        return float(self._sum) if self.clean else None


def _scan_block(block: np.ndarray, m: np.ndarray | None, groups: np.ndarray | None) -> tuple[float, bool]:
    """:func:`_scan_tensor` on one block of rows, entry by entry: raises on NaN, infinite or
    negative observed entries; returns (sum of squares of the observed entries, whether any
    unobserved entry is not 0)."""
    needs_zeroing = False
    if m is None:
        observed_block = block
    elif groups is not None:
        observed = _observed(m, groups)[:, :, 0]  # (rows, T)
        flat_block = block[:, :, 0]
        needs_zeroing = bool(np.any(flat_block[~observed] != 0))
        observed_block = flat_block[observed]
    else:
        # a pair-animal block is unobserved at every time: test each block's values
        blk_unobs = np.transpose(block, (0, 2, 1))[~m]  # (n_unobserved_blocks, T)
        needs_zeroing = bool(blk_unobs.size and np.any(blk_unobs != 0))
        observed_block = np.transpose(block, (0, 2, 1))[m]  # (n_observed_blocks, T)
    if not observed_block.size:
        return 0.0, needs_zeroing
    flat = observed_block.reshape(-1)
    lo = flat.min()  # NaN propagates through min, +inf shows in max
    if not np.isfinite(lo) or not np.isfinite(flat.max()):
        raise ValueError("X has NaN or infinite values at observed entries")
    if lo < 0:
        raise ValueError(
            f"X must be non-negative at observed entries; found {float(lo):.3g}"
        )
    if needs_zeroing:
        # summed over the block with its unobserved entries at 0, in the order of the fast path,
        # so that junk at unobserved entries leaves the sum (and so the fit) bitwise the same
        block = np.where(_observed(m, groups), block, 0)
    flat = block.reshape(-1)
    return float(np.einsum("i,i->", flat, flat, dtype=np.float64)), needs_zeroing


def _zero_unobserved(X: np.ndarray, mask: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    X = X.copy()
    rows = _scan_rows(X)
    for start in range(0, X.shape[0], rows):
        block = X[start:start + rows]  # a view: edited in place
        block *= _observed(mask[start:start + rows], groups)
        block[np.isnan(block)] = 0  # NaN * 0 stays NaN
    return X


class _Data:
    """X validated once (restarts and rank sweeps reuse it): C-contiguous in the working dtype,
    zero at unobserved entries, with the sum of squares of its observed entries (float64).

    ``groups`` holds the time groups (None when X has none, or when everything is observed: they
    change nothing then). ``device_x2`` caches X's (P, T*A) view uploaded to a torch device, so
    restarts upload it once.
    """

    def __init__(self, X, mask, dtype, time_groups=None, norm_sq=None):
        self.dtype = np.dtype(dtype)
        given_dtype = getattr(X, "dtype", None)
        X = _check_tensor(X, self.dtype)
        groups = _check_groups(time_groups, X.shape, mask)
        self.mask = _check_mask(mask, X.shape, groups)
        self.groups = groups if self.mask is not None else None
        if norm_sq is not None and given_dtype == self.dtype:
            # recorded by whoever made X (ObservedScan), who vouches that it is finite,
            # non-negative and 0 at the unobserved entries: the scan's value, without the scan
            self.norm_sq, needs_zeroing = float(norm_sq), False
        else:
            self.norm_sq, needs_zeroing = _scan_tensor(X, self.mask, self.groups)
        if self.norm_sq <= 0:
            raise ValueError("X is zero at every observed entry: nothing to factorize")
        self.out_of_core = isinstance(X, _RowSource)
        if self.out_of_core and needs_zeroing:
            # a tensor read from disk at every pass cannot be zeroed once in memory (the pipeline's
            # affinity.h5 holds 0 there by contract)
            raise ValueError("an out-of-core X must hold 0 at its unobserved entries")
        # Unobserved entries holding anything but 0 are zeroed in one copy (the pipeline stores 0
        # there, so it never pays for this copy).
        self.X = _zero_unobserved(X, self.mask, self.groups) if needs_zeroing else X
        self.shape = self.X.shape
        # which entries are observed, as a short digest: checked when a fit resumes
        digest = hashlib.sha256(b"mask" if self.mask is None else self.mask.tobytes())
        if self.groups is not None:
            digest.update(b"groups" + self.groups.tobytes())
        self.mask_digest = digest.hexdigest()[:16]
        self._device_x2 = {}

    def x2(self, ops):
        """X's (P, T*A) unfolding: a view on numpy (the :class:`_RowSource` itself when X is out of
        core: the pass reads its blocks), uploaded once to a torch device (block by block)."""
        P, T, A = self.shape
        if ops.name == "numpy":
            return self.X if self.out_of_core else self.X.reshape(P, T * A)
        key = (ops.name, ops.device)
        if key not in self._device_x2:
            if self.out_of_core:
                dev = ops.empty((P, T * A))
                rows = _scan_rows(self.X)
                for start in range(0, P, rows):
                    dev[start:start + rows] = ops.asarray(self.X[start:start + rows].reshape(-1, T * A))
                self._device_x2[key] = dev
            else:
                self._device_x2[key] = ops.asarray(self.X.reshape(P, T * A))
        return self._device_x2[key]


def prepare(X, mask=None, *, time_groups=None, dtype="float32", observed_sum_of_squares=None) -> _Data:
    """X validated once for several fits: pass the result as X to :func:`ncp_hals`,
    :func:`ncp_restarts` or :func:`select_rank` (with the same ``dtype``; its mask and time
    groups come with it).

    ``observed_sum_of_squares``: the value an :class:`ObservedScan` of X gave when X was made
    (the affinity stage records it in affinity.h5): the scan over X (validation, sum of squares
    of the observed entries) is then skipped, and the fits are bit for bit those with the scan.
    It is used only when X is already in ``dtype``; the caller vouches that it belongs to
    this X and this mask (the pipeline checks it against the artifact's checksums).
    """
    return _Data(X, mask, _check_dtype(dtype), time_groups, norm_sq=observed_sum_of_squares)


def _as_data(X, mask, dtype, time_groups=None) -> _Data:
    if isinstance(X, _Data):  # prepared by ncp_restarts / select_rank: mask and groups included
        if X.dtype != np.dtype(dtype):
            raise ValueError(f"prepared data is {X.dtype}, asked for {np.dtype(dtype)}")
        return X
    return _Data(X, mask, dtype, time_groups)


def _as_generator(random_state) -> np.random.Generator:
    if isinstance(random_state, np.random.Generator):
        return random_state
    if random_state is None or isinstance(random_state, (numbers.Integral, np.random.SeedSequence)):
        if isinstance(random_state, (bool, np.bool_)):
            raise ValueError("random_state must be None, an int, a SeedSequence or a Generator")
        if isinstance(random_state, numbers.Integral) and random_state < 0:
            raise ValueError(f"random_state must be a non-negative int, got {random_state}")
        return np.random.default_rng(random_state)
    raise ValueError(
        f"random_state must be None, an int, a SeedSequence or a numpy Generator; got {random_state!r}"
    )


# --------------------------------------------------------------------------------------------
# HALS block solvers (rows of ``Y`` are the components: Y has shape (R, n))
# --------------------------------------------------------------------------------------------


class _Work:
    """Scratch buffers of the HALS solvers for up to ``n`` columns, allocated once.

    The pairs mode preallocates one per fit (:class:`_Problem`) and hands out views for each block
    of rows, so the inner loops allocate nothing; the small modes make a throwaway one (tiny).
    """

    def __init__(self, ops, R: int, n: int):
        self.vec = ops.empty((n,))  # one component's update
        self.fs = ops.empty((R, n))  # F scaled by the inverse diagonal
        self.inv = ops.empty((R, n))  # per-row inverse diagonals (_hals_rows)
        self.before = ops.empty((R, n))  # the factor before a sweep (early stop)
        self.fe = ops.empty((R, n))  # EM: the corrected MTTKRP

    def cols(self, n: int) -> "_Work":
        """Views of the first ``n`` columns."""
        view = object.__new__(_Work)
        view.vec = self.vec[:n]
        for name in ("fs", "inv", "before", "fe"):
            setattr(view, name, getattr(self, name)[:, :n])
        return view


class _BlockScratch:
    """One thread's buffers for the pairs mode, for blocks of up to ``B`` rows: the block's MTTKRP
    rows ``f`` (B, Rp), its HALS scratch ``work``, its U rows zero-padded to ``Rp`` columns ``u``
    (B, Rp; the transpose is the left operand of ``U[rows]' X2[rows]``), one part ``z`` (Rp, TA)
    of that product, with a mask its per-row Grams ``grows`` (R*R, B), and for an out-of-core X
    the block's rows ``x`` (B, TA) read from disk. ``Rp = 0``: only
    ``work`` and ``grows`` (the two-GEMM path)."""

    def __init__(self, ops, R: int, Rp: int, B: int, masked: bool, TA: int = 0, reads: bool = False):
        self.work = _Work(ops, R, B)
        self.x = ops.empty((B, TA)) if reads else None  # the block of X read from disk (out of core)
        self.f = ops.empty((B, Rp)) if Rp else None
        self.u = ops.zeros((B, Rp)) if Rp else None
        self.grows = ops.empty((R * R, B)) if masked else None
        self.z = ops.empty((Rp, TA)) if Rp else None


def _sweeps(ops, Y, n_sweeps, stop_ratio, sweep_once, work: _Work):
    """Run ``sweep_once()`` up to ``n_sweeps`` times; stop early once a sweep moves Y by less than
    ``stop_ratio`` times the first sweep's movement (Gillis & Glineur 2012). Returns sweeps done.

    The movement is measured per sweep (one copy of Y, one difference), not per component. Y is
    one block of independent columns (the pairs mode solves its rows block by block, see
    :func:`_iteration`): the criterion applies to the block.
    """
    first = None
    before = work.before
    for sweep in range(n_sweeps):
        last = sweep == n_sweeps - 1
        if not last:
            ops.copyto(before, Y)
        sweep_once()
        if last:
            break
        ops.sub(before, Y, out=before)
        moved = ops.sumsq(before)
        if first is None:
            first = moved
        elif moved <= stop_ratio * first:
            return sweep + 1
    return n_sweeps


def _component_sweeps(ops, Y, rows, dot, n_sweeps, stop_ratio, work: _Work):
    """HALS sweeps over the components: for each ``(g, f, y)`` of ``rows`` (y a row of Y),
    ``y <- max(0, f - dot(g, Y))`` -- three calls writing into preallocated buffers. ``dot`` is
    ``ops.vecmat`` (one Gram row shared by all columns) or ``ops.rowdot`` (a row per column).
    Early stop as in :func:`_sweeps`; returns the sweeps done."""
    vec, sub, clamp_min, zero = work.vec, ops.sub, ops.clamp_min, ops.zero

    def sweep_once():
        for g, f, y in rows:
            dot(g, Y, out=vec)
            sub(f, vec, out=vec)
            clamp_min(vec, zero, out=y)

    return _sweeps(ops, Y, n_sweeps, stop_ratio, sweep_once, work)


class _SharedGram:
    """A Gram matrix ``G`` (R, R) shared by all columns, prepared for :func:`_hals_shared`:
    ``scaled = G / diag(G)`` row-wise with a zero diagonal, on the backend; ``inv`` (R, 1) the
    inverse diagonal on the backend; ``live`` the components with ``G[r, r] > 0``."""

    def __init__(self, ops, G: np.ndarray):
        diag = np.diag(G)
        self.live = [r for r in range(G.shape[0]) if diag[r] > 0]
        inv = np.where(diag > 0, 1.0 / np.where(diag > 0, diag, 1.0), 0.0)
        scaled = G * inv[:, None]
        np.fill_diagonal(scaled, 0.0)
        self.G = G
        self.scaled = ops.asarray(scaled)
        self.inv = ops.asarray(inv[:, None])


def _hals_shared(ops, Y, F, gram, n_sweeps, stop_ratio, work: _Work | None = None):
    """HALS for ``min_{Y>=0} sum_j y_j' G y_j - 2 y_j' f_j`` over the columns j of Y (R, n).

    ``F`` (R, n) holds the MTTKRP (any strides; not modified), ``gram`` the Gram shared by all
    columns (a host (R, R) array or a :class:`_SharedGram`). Component r's exact update
    ``Y[r] <- max(0, Y[r] + (F[r] - G[r] @ Y) / G[r, r])`` is computed as
    ``max(0, F[r] / G[r, r] - Gs[r] @ Y)`` with ``Gs = G / diag(G)`` and a zero diagonal:
    three vector operations writing into preallocated buffers.
    """
    if not isinstance(gram, _SharedGram):
        gram = _SharedGram(ops, gram)
    R, n = Y.shape
    work = _Work(ops, R, n) if work is None else work
    Fs = ops.mul(F, gram.inv, out=work.fs)
    # a component dead in the other modes (G[r, r] == 0) has nothing to solve
    rows = [(gram.scaled[r], Fs[r], Y[r]) for r in gram.live]
    return _component_sweeps(ops, Y, rows, ops.vecmat, n_sweeps, stop_ratio, work)


def _hals_rows(ops, Y, F, Grows, n_sweeps, stop_ratio, work: _Work | None = None, overwrite=False):
    """HALS where column j of Y has its own Gram ``Grows[:, :, j]`` (Grows: (R, R, n)).

    Exact block update for masked data: column j's subproblem only sees its observed entries.
    As in :func:`_hals_shared`, each column's Gram is scaled by its inverse diagonal first
    (in place when ``overwrite``, else on a copy). Where ``G_j[r, r] == 0`` (the component has
    no observed support for this column) the numerator is 0 too and the entry keeps its
    (irrelevant) value.
    """
    R, n = Y.shape
    work = _Work(ops, R, n) if work is None else work
    G2 = Grows.reshape(R * R, n)
    if not overwrite:
        G2 = _copy(ops, G2)
    diag = G2[:: R + 1]  # (R, n) view of G_j[r, r]
    inv = ops.safe_inverse(diag, out=work.inv)
    Gs = ops.mul(G2.reshape(R, R, n), inv[:, None, :], out=G2.reshape(R, R, n))
    # the diagonal is now 1 where G_j[r, r] > 0 (up to rounding) and 0 elsewhere: make it exactly
    # 0 and -1, so that max(0, F[r]/G[r,r] - Gs[r] . Y) is the HALS update (and keeps Y[r] where
    # G[r, r] == 0, since F[r] and the rest of G's row are 0 there)
    ops.round_(diag)
    diag -= 1
    Fs = ops.mul(F, inv, out=work.fs)
    rows = [(Gs[r], Fs[r], Y[r]) for r in range(R)]
    return _component_sweeps(ops, Y, rows, ops.rowdot, n_sweeps, stop_ratio, work)


def _copy(ops, a):
    return a.clone() if ops.name == "pytorch" else a.copy()


# --------------------------------------------------------------------------------------------
# The fit
# --------------------------------------------------------------------------------------------


class _Problem:
    """X on the backend, its mask, norms and reusable buffers for one tensor and rank.

    Placement: X, the pairs factor U (R x P) and every P-sized array live on the backend (numpy or
    a torch device) in the working dtype; the small factors V (R x T), W (R x A), the Z contraction
    and all R x R matrices live on the host in float64. The small modes cost microseconds, so on a
    GPU this saves thousands of kernel launches per iteration and on the CPU it buys precision.

    ``block`` is the number of pairs (rows of X) processed together in the pairs mode: on numpy
    :data:`PAIRS_BLOCK` rows, with both products over X fused into one pass (``fused``) shared by
    ``threads`` threads (:func:`_pass_threads`, at most one per block); on torch all P rows at once, with the two
    products as two big GEMMs. Every per-block buffer is sized for ``block`` and allocated here,
    once per thread.
    """

    def __init__(self, ops, data: _Data, rank: int, gemm_pad: int, block: int | None = None,
                 fused: bool | None = None):
        self.ops = ops
        P, T, A = data.shape
        self.shape = (P, T, A)
        self.rank = R = rank
        self.norm_sq = data.norm_sq
        self.mask_digest = data.mask_digest
        self.on_host = ops.name == "numpy"
        self.X2 = data.x2(ops)
        self.mask = mask = data.mask
        self.groups = data.groups  # (T,) group of each time bin, or None
        if mask is not None:
            self.M = ops.asarray(mask.astype(np.float32))  # (P, A), or (P, G) with time groups
            self.Mt = ops.asarray(mask.T.astype(np.float32))  # (A, P) / (G, P)
        if block is None:
            block = PAIRS_BLOCK if self.on_host else P
        self.block = B = max(1, min(int(block), P))
        self.remote = None  # a _DaskPass when the pass runs on dask workers (ncp_hals' client)
        self.out_of_core = data.out_of_core and self.on_host  # X2 read from disk block by block
        self.fused = self.on_host and (self.out_of_core or (_FUSED_PASS if fused is None else bool(fused)))
        # GEMM operands padded with zero rows to a multiple of ``gemm_pad``: OpenBLAS runs a
        # 16-column thin product faster than a 15-column one (measured, see docs).
        self.Rp = Rp = int(math.ceil(R / gemm_pad) * gemm_pad)
        self.kr_host = np.zeros((Rp, T * A), dtype=data.dtype)
        self.kr_buf = self.kr_host if self.on_host else ops.zeros((Rp, T * A))
        self.z_buf = ops.empty((Rp, T * A))
        if self.fused:
            # Z = U' X2 block by block: block i writes U[rows]' X2[rows] into z_parts[i], summed in
            # block order afterwards, so Z does not depend on which thread did which block.
            self.threads = min(_pass_threads(), len(self.blocks()))
            self.z_parts = ops.empty((len(self.blocks()), Rp, T * A))
            self.scratch = [_BlockScratch(ops, R, Rp, B, mask is not None, T * A, self.out_of_core)
                            for _ in range(self.threads)]
        else:
            self.threads = 1
            self.f_buf = ops.empty((P, Rp))  # X2 @ KR, all rows
            self.u_buf = ops.zeros((Rp, P))
            self.scratch = [_BlockScratch(ops, R, 0, B, mask is not None)]
        if mask is not None:
            self.triu = np.triu_indices(R)
            self.uu_buf = ops.empty((len(self.triu[0]), P))

    def blocks(self):
        """``(start, stop)`` of each block of pairs, in order."""
        P, B = self.shape[0], self.block
        return [(s, min(P, s + B)) for s in range(0, P, B)]

    def upload(self, a: np.ndarray):
        """Host float64 -> backend working dtype."""
        return self.ops.asarray(a)

    def download(self, a) -> np.ndarray:
        """Backend array -> host float64 (a copy)."""
        return np.array(self.ops.to_numpy(a), dtype=np.float64)


_HOST = _NumpyOps(np.float64)


@dataclass
class _RemoteBlock:
    """One block of pairs as a dask worker holds it: X's rows ``x`` (n, T*A), the pair factor's
    rows ``u`` (R, n) and, with a mask, the block's mask rows transposed ``mt`` (A, n) float."""

    x: np.ndarray
    u: np.ndarray
    mt: np.ndarray | None


def _remote_block(block: _RemoteBlock, scale, kr, WW, G_shared, G_full, missing, n_sweeps, stop_ratio, dtype,
                  penalty=None):
    """A worker's part of one iteration (runs where ``block`` lives): rescale U's rows by the last
    balancing ``scale`` (R,), update them (:func:`_update_pair_rows`), and return the block with
    its partial products ``U[blk]' X2[blk]`` (R, T*A), ``U[blk]' U[blk]`` (R, R), the masked
    ``U[r] U[s]`` sums (R(R+1)/2, A) (host float64) and the squared row norms (R,). ``penalty``:
    ``(lam, lam * diag(Gfull))`` of the unobserved penalty (host float64), or None."""
    ops = _NumpyOps(np.dtype(dtype))
    u, x = block.u, block.x
    R, n = u.shape
    if scale is not None:
        u *= scale.astype(u.dtype)[:, None]
    F = (x @ kr.T)[:, :R].T  # (R, n)
    shared = _SharedGram(ops, G_shared) if G_shared is not None else None
    grows = ops.empty((R * R, n)) if block.mt is not None else None
    if penalty is not None:
        penalty = (penalty[0], ops.asarray(np.asarray(penalty[1])[:, None]))
    _update_pair_rows(ops, u, F, block.mt, WW, shared, G_full, missing, n_sweeps, stop_ratio, _Work(ops, R, n), grows,
                      penalty=penalty)
    z = np.asarray(u @ x, dtype=np.float64)
    utu = np.asarray(u @ u.T, dtype=np.float64)
    tri = None
    if block.mt is not None:
        r_idx, s_idx = np.triu_indices(R)
        tri = np.asarray((u[r_idx] * u[s_idx]) @ block.mt.T, dtype=np.float64)
    return block, (z, utu, tri, np.einsum("rn,rn->r", u, u, dtype=np.float64))


def _block_of(result):
    return result[0]


def _partials_of(result):
    return result[1]


class _DaskPass:
    """The pairs-mode pass of every iteration on dask workers that hold the blocks of pairs.

    Each block's X rows and U rows are scattered once and stay on a worker; per iteration only the
    small arrays go out (the Khatri-Rao product KR (Rp, T*A), the Gram operands (R*R, A), the
    balancing scale (R,)) and the block's R x T*A part of ``Z = U' X2`` and its R x R / R(R+1)/2 x A
    Grams come back, summed on the client in block order. ``u_factor()`` gathers U (the end of the
    fit, a checkpoint). The client is any ``dask.distributed.Client`` (the caller makes it).
    """

    def __init__(self, client, prob, Ut: np.ndarray):
        self.client = client
        self.prob = prob
        self.scale = None  # balancing scale not yet applied on the workers
        self.blocks = []
        masked = prob.mask is not None
        P, T, A = prob.shape
        for start, stop in prob.blocks():
            rows = prob.X2[start:stop]
            x = np.ascontiguousarray(np.asarray(rows).reshape(stop - start, T * A))
            mt = np.ascontiguousarray(prob.mask[start:stop].T.astype(x.dtype)) if masked else None
            block = _RemoteBlock(x, np.ascontiguousarray(Ut[:, start:stop]).copy(), mt)
            self.blocks.append(client.scatter(block))

    def run_pass(self, kr, WW, shared, missing, n_sweeps, stop_ratio, penalty=None):
        """One pass: returns ``Z`` (R, T, A), ``U'U`` (R, R) and the masked Grams (R, R, A or G) or None."""
        prob = self.prob
        P, T, A = prob.shape
        R = prob.rank
        dtype = prob.kr_host.dtype.name
        WW_np = None if WW is None else np.asarray(WW)
        G_shared = shared.G if shared is not None else None
        G_full = shared.G if (shared is not None and prob.mask is not None) else None
        results = [self.client.submit(_remote_block, b, self.scale, kr, WW_np, G_shared, G_full, missing,
                                      n_sweeps, stop_ratio, dtype, penalty, pure=False) for b in self.blocks]
        self.scale = None
        self.blocks = [self.client.submit(_block_of, r, pure=False) for r in results]
        parts = self.client.gather([self.client.submit(_partials_of, r, pure=False) for r in results])
        sums = []
        for k in range(4):  # summed in block order: the result does not depend on the workers
            total = None
            for part in parts:
                if part[k] is not None:
                    total = part[k].copy() if total is None else total + part[k]
            sums.append(total)
        z, utu, tri, norms = sums
        self.u_norms_sq = norms
        UMU = None
        if prob.mask is not None:
            UMU = np.empty((R, R, tri.shape[1]))
            UMU[prob.triu[0], prob.triu[1]] = tri
            UMU[prob.triu[1], prob.triu[0]] = tri
        return z[:R].reshape(R, T, A), utu, UMU

    def rescale(self, scale: np.ndarray) -> None:
        """Balancing: U's rows times ``scale`` (R,), applied on the workers with the next pass."""
        self.scale = scale if self.scale is None else self.scale * scale

    def u_factor(self) -> np.ndarray:
        """U (R, P) in the working dtype, gathered from the workers (the pending scale applied)."""
        blocks = self.client.gather(self.blocks)
        Ut = np.concatenate([b.u for b in blocks], axis=1)
        if self.scale is not None:
            Ut = Ut * self.scale.astype(Ut.dtype)[:, None]
        return Ut


def _pairs_grams(prob: _Problem, Ut, need_utu=True):
    """``U' U`` (R, R) and, with a mask, ``U' diag(mask[:, a]) U`` for every animal (R, R, A) --
    for every group (R, R, G) with time groups; host float64.

    The masked Grams use one GEMM of the products ``U[r] * U[s]`` for r <= s only (symmetry halves
    the (R(R+1)/2, P) operand) with the (P, A) mask.
    """
    ops = prob.ops
    R = prob.rank
    UtU = prob.download(ops.matmul(Ut, Ut.T)) if (need_utu or prob.mask is None) else None
    if prob.mask is None:
        return UtU, None
    A = prob.mask.shape[1]
    offset = 0
    for r in range(R):
        ops.mul(Ut[r:r + 1], Ut[r:], out=prob.uu_buf[offset:offset + R - r])
        offset += R - r
    tri = prob.download(ops.matmul(prob.uu_buf, prob.M))  # (R(R+1)/2, A)
    UMU = np.empty((R, R, A))
    UMU[prob.triu[0], prob.triu[1]] = tri
    UMU[prob.triu[1], prob.triu[0]] = tri
    return UtU, UMU


def _group_grams(Vt: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """``V_g' V_g`` for every time group g: (R, R, G), host float64, O(T R^2)."""
    R = Vt.shape[0]
    VV = Vt[:, None, :] * Vt[None, :, :]  # (R, R, T)
    out = np.zeros((R, R, n_groups))
    for g in np.unique(groups):
        out[:, :, g] = VV[:, :, groups == g].sum(axis=2)
    return out


def _model_norm_sq(prob: _Problem, Ut, Vt, Wt) -> float:
    """``||mask * Xhat||^2`` from Gram matrices, O(P A R^2) with a mask, O((P+T+A) R^2) without."""
    UtU, UMU = _pairs_grams(prob, Ut)
    VtV = Vt @ Vt.T
    if UMU is None:
        return float((UtU * VtV * (Wt @ Wt.T)).sum())
    if prob.groups is not None:
        VG = _group_grams(Vt, prob.groups, UMU.shape[2])
        w = Wt[:, 0]
        return float(np.einsum("rsg,rsg,r,s->", UMU, VG, w, w))
    return float(np.einsum("rsa,ra,sa,rs->", UMU, Wt, Wt, VtV))


def _balance_(prob: _Problem, Ut, Vt, Wt):
    """Rescale component r of every mode to the same norm (the cube root of their product).

    HALS is invariant to this rescaling; doing it every iteration keeps the three factors at
    comparable magnitudes so float32 neither over- nor underflows.
    """
    ops = prob.ops
    u_norm = np.sqrt(prob.remote.u_norms_sq) if prob.remote is not None else \
        np.sqrt(prob.download(ops.einsum("rn,rn->r", Ut, Ut)))
    norms = [u_norm, np.sqrt(np.einsum("rn,rn->r", Vt, Vt)), np.sqrt(np.einsum("rn,rn->r", Wt, Wt))]
    target = np.cbrt(norms[0] * norms[1] * norms[2])
    scales = [np.where(n > 0, target / np.where(n > 0, n, 1.0), 0.0)[:, None] for n in norms]
    if prob.remote is not None:  # U lives on the workers: scaled there, with the next pass
        prob.remote.rescale(scales[0][:, 0])
    else:
        Ut *= prob.upload(scales[0])
    Vt *= scales[1]
    Wt *= scales[2]


class _Timer:
    def __init__(self, ops, enabled):
        self.ops = ops
        self.enabled = enabled
        self.seconds: dict[str, float] = {}
        self._t = None

    def start(self):
        if self.enabled:
            self.ops.sync()
            self._t = time.perf_counter()

    def stop(self, name):
        if self.enabled:
            self.ops.sync()
            now = time.perf_counter()
            self.seconds[name] = self.seconds.get(name, 0.0) + now - self._t
            self._t = now


def _shared_pass(n_blocks: int, n_threads: int, one_block, scratch: list, timer: _Timer) -> None:
    """Run ``one_block(i, scratch[k], timer_k)`` for every block ``i`` on ``n_threads`` threads.

    The calling thread is one of them; each thread takes the next block not yet taken, so a block
    whose inner sweeps stop early frees its thread for another. With more than one thread the
    caller runs this with a single-threaded BLAS (:func:`ncp_hals` does, for its whole loop): two
    threads each running a whole block (both products and the block's HALS, which is Python and
    holds one core) keep two cores busy where one thread with a two-threaded BLAS idles a core
    during the HALS and synchronises both at every product (measured: docs/factorization.md).

    The helper threads start once the calling thread's first block has done its first product
    (``one_block``'s fourth argument is called then), so the threads run out of phase: one
    thread's HALS, which holds the GIL, meets another's product, which releases it, instead of
    the other HALS. A helper thread's exception, or a stop signal in the calling thread, stops the
    others after their current block and is raised here.
    """
    if n_threads <= 1:
        for i in range(n_blocks):
            one_block(i, scratch[0], timer)
        return
    next_block = itertools.count()  # next() on it is atomic under the GIL
    stop = threading.Event()
    errors: list[BaseException] = []
    timers = [_Timer(timer.ops, timer.enabled) for _ in range(n_threads)]
    helpers: list[threading.Thread] = []

    def take_blocks(k: int) -> None:
        timers[k].start()
        try:
            while not stop.is_set():
                i = next(next_block)
                if i >= n_blocks:
                    return
                one_block(i, scratch[k], timers[k])
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
            errors.append(exc)
            stop.set()

    def start_helpers() -> None:
        for k in range(1, n_threads):
            thread = threading.Thread(target=take_blocks, args=(k,), name=f"dynconn-ntf-{k}", daemon=True)
            thread.start()
            helpers.append(thread)

    try:
        timers[0].start()
        then = start_helpers
        while not stop.is_set():
            i = next(next_block)
            if i >= n_blocks:
                break
            one_block(i, scratch[0], timers[0], then)
            then = None
    finally:
        stop.set()  # on an exception here, the helpers stop after their current block
        for thread in helpers:
            thread.join()
    if errors:
        raise errors[0]
    # phase times are summed over the threads (thread-seconds); "pass" is the wall time
    for t in timers:
        for name, seconds in t.seconds.items():
            timer.seconds[name] = timer.seconds.get(name, 0.0) + seconds
    timer.stop("pass")


def _iteration(prob: _Problem, Ut, Vt, Wt, missing: str, sweeps, stop_ratio, timer: _Timer,
               penalty: float = 0.0) -> float:
    """One outer HALS iteration, in place on ``Ut (R,P)`` (backend) and ``Vt (R,T)``, ``Wt (R,A)`` (host).

    Returns the relative error on observed entries after the update. With time groups (A = 1) the
    Grams of the masked updates go through the per-group Grams of V (see the module docstring);
    the MTTKRPs and the loss are the same.

    The pairs mode is row-separable: given V and W, row p of U solves its own NNLS problem, with
    its own MTTKRP row ``(X2 @ KR)[p]`` and its own Gram (shared, or per row with a mask). So U is
    updated block by block of ``prob.block`` rows, each block's inner sweeps stopping on their
    own (:func:`_sweeps`). With ``prob.fused`` (numpy) each block of X's rows is read from memory
    once for both products: ``F_blk = X2[blk] @ KR``, update ``U[blk]``, then
    ``Z += U[blk]' X2[blk]`` while ``X2[blk]`` is still in cache. Otherwise (torch) both products
    are single GEMMs over all rows, the block being all P rows.

    ``penalty`` (the unobserved penalty lambda, with a mask only): each pair row's Gram gets
    ``lam * max(0, Gfull[r, r] - 2 G_p[r, r])`` added to its diagonal (:func:`_excess_unobserved`).
    """
    ops = prob.ops
    P, T, A = prob.shape
    R = prob.rank
    masked = prob.mask is not None
    groups = prob.groups
    X2 = prob.X2

    timer.start()
    np.multiply(Vt[:, :, None], Wt[:, None, :], out=prob.kr_host[:R].reshape(R, T, A), casting="same_kind")
    if not prob.on_host:
        prob.kr_buf.copy_(ops.torch.from_numpy(prob.kr_host))
    timer.stop("kr")
    VtV = Vt @ Vt.T
    WtW = Wt @ Wt.T
    WW = None
    if masked:
        # G_p[r, s] = VtV[r, s] * sum_a m[p, a] W[r, a] W[s, a], for a block of rows p in one GEMM;
        # the VtV factor is folded into the small (R*R, A) operand so the (R*R, rows) result is
        # written once. Time groups: G_p[r, s] = w_r w_s sum_g m[p, g] (V_g'V_g)[r, s], the same
        # GEMM over groups.
        if groups is None:
            WW = (Wt[:, None, :] * Wt[None, :, :] * VtV[:, :, None]).reshape(R * R, A)
        else:
            WW = (_group_grams(Vt, groups, prob.mask.shape[1]) * WtW[:, :, None]).reshape(R * R, -1)
        WW = prob.upload(WW)
    shared = _SharedGram(ops, VtV * WtW) if (not masked or missing == "em") else None
    Gfull_dev = ops.asarray(shared.G) if masked and missing == "em" else None
    pen_host = pen = None
    if masked and penalty > 0:
        # lam * diag(Gfull), Gfull = (V'V) * (W'W); with time groups sum_g (V_g'V_g) * (w w') is
        # the same matrix (the groups partition the time bins)
        pen_host = (float(penalty), float(penalty) * np.diag(VtV) * np.diag(WtW))
        pen = (pen_host[0], prob.upload(pen_host[1][:, None]))
    timer.stop("grams")
    if prob.remote is not None:  # the pass on the workers that hold the blocks (_DaskPass)
        Z, UtU, UMU = prob.remote.run_pass(prob.kr_host, WW if masked else None, shared, missing, sweeps[0],
                                           stop_ratio, pen_host)
        timer.stop("pass")
        return _small_modes(prob, Z, UtU, UMU, Vt, Wt, WtW, missing, sweeps, stop_ratio, timer)

    def pairs_block(start, stop, F, scratch: _BlockScratch, timer: _Timer):
        """Update U's rows start:stop (columns of Ut) from ``F`` (R, n), their MTTKRP rows."""
        n = stop - start
        work = scratch.work if n == prob.block else scratch.work.cols(n)
        _update_pair_rows(ops, Ut[:, start:stop], F, prob.Mt[:, start:stop] if masked else None, WW, shared,
                          Gfull_dev, missing, sweeps[0], stop_ratio, work,
                          scratch.grows[:, :n] if masked else None, timer, penalty=pen)

    if prob.fused:
        # ---- one pass over X by blocks: F = X2[blk] @ KR, update U[blk], Z_blk = U[blk]' X2[blk]
        def one_block(i, scratch: _BlockScratch, timer: _Timer, after_first_product=None):
            start, stop = blocks[i]
            n = stop - start
            if prob.out_of_core:  # read once per pass, into this thread's buffer
                rows = scratch.x[:n]
                X2.read(start, stop, rows.reshape(n, T, A))
            else:
                rows = X2[start:stop]
            f_blk = ops.matmul(rows, prob.kr_buf.T, out=scratch.f[:n])
            if after_first_product is not None:
                after_first_product()
            timer.stop("gemm_pairs")
            pairs_block(start, stop, f_blk[:, :R].T, scratch, timer)
            timer.stop("hals_pairs")
            u_blk = scratch.u[:n]
            u_blk[:, :R] = Ut[:, start:stop].T
            # U[blk]' X2[blk] with U[blk]' the transpose of a row-major (n, Rp) buffer: the fastest
            # orientation of this product per block (measured, see docs)
            z_blk = prob.z_parts[i]
            sub = _Z_ROWS
            ops.matmul(u_blk[:sub].T, rows[:sub], out=z_blk)
            for s in range(sub, n, sub):
                z_blk += ops.matmul(u_blk[s:s + sub].T, rows[s:s + sub], out=scratch.z)
            timer.stop("gemm_z")

        blocks = prob.blocks()
        _shared_pass(len(blocks), prob.threads, one_block, prob.scratch, timer)
        z = prob.z_buf
        ops.copyto(z, prob.z_parts[0])
        for i in range(1, len(blocks)):  # in block order: the same Z whatever the threads did
            z += prob.z_parts[i]
        timer.stop("sum_z")
        Z = prob.download(z[:R]).reshape(R, T, A)
    else:
        # ---- two GEMMs over X: F = X2 @ KR (X2 the row-major operand), then Z = U' X2 --------
        ops.matmul(X2, prob.kr_buf.T, out=prob.f_buf)
        timer.stop("gemm_pairs")
        for start, stop in prob.blocks():
            pairs_block(start, stop, prob.f_buf[start:stop, :R].T, prob.scratch[0], timer)
        timer.stop("hals_pairs")
        prob.u_buf[:R] = Ut
        ops.matmul(prob.u_buf, X2, out=prob.z_buf)
        Z = prob.download(prob.z_buf[:R]).reshape(R, T, A)
        timer.stop("gemm_z")

    UtU, UMU = _pairs_grams(prob, Ut, need_utu=missing == "em")
    return _small_modes(prob, Z, UtU, UMU, Vt, Wt, WtW, missing, sweeps, stop_ratio, timer)


def _update_pair_rows(ops, Y, F, Mt_rows, WW, shared, Gfull_dev, missing, n_sweeps, stop_ratio, work: _Work,
                      grows, timer: _Timer | None = None, penalty=None) -> None:
    """Update the pair-factor rows ``Y`` (R, n) in place from their MTTKRP rows ``F`` (R, n): one shared
    Gram ``shared`` without a mask; with one (``Mt_rows`` (A, n) float), each row's Gram
    ``WW @ Mt_rows`` (R*R, n) into ``grows`` -- exact, or EM with the full Gram ``Gfull_dev``.

    ``penalty`` (with a mask): ``(lam, g)``, g = lam * diag(Gfull) as an (R, 1) backend array. Row
    p's Gram diagonal becomes ``G_p[r, r] + lam * max(0, Gfull[r, r] - 2 G_p[r, r])``
    (:func:`_excess_unobserved`), the right-hand side unchanged: the component's energy where p
    was not observed, beyond the energy where it was, counts as zeros of weight lam, on the
    diagonal only (docs/factorization.md, "Unobserved penalty"). EM solves the same penalised row
    problems: its surrogate's Gram ``Gfull`` gets the same per-row diagonal term, so the rows are
    solved with their own Grams. None (or lam = 0): the unpenalised update, bit for bit."""
    R, n = Y.shape
    if Mt_rows is None:
        _hals_shared(ops, Y, F, shared, n_sweeps, stop_ratio, work)
        return
    Grows = ops.matmul(WW, Mt_rows, out=grows)  # (R*R, n)
    if timer is not None:
        timer.stop("grams")
    if penalty is not None and not penalty[0] > 0:
        penalty = None
    if missing == "exact":
        if penalty is not None:
            diag = Grows[:: R + 1]  # (R, n) view of G_p[r, r]
            diag += _excess_unobserved(ops, diag, penalty, out=work.inv)
        _hals_rows(ops, Y, F, Grows.reshape(R, R, n), n_sweeps, stop_ratio, work, overwrite=True)
        return
    # EM: impute the unobserved entries with the current model, then a full-data update:
    # f~_p = f_p + (G - G_p) u_p
    Fe = ops.matmul(Gfull_dev, Y, out=work.fe)
    Fe += F
    for r in range(R):
        ops.rowdot(Grows[r * R:(r + 1) * R], Y, out=work.vec)
        Fe[r] -= work.vec
    if penalty is None:
        _hals_shared(ops, Y, Fe, shared, n_sweeps, stop_ratio, work)
        return
    # penalised EM: Gram Gfull + the same per-row diagonal term (work.inv holds the term until
    # _hals_rows overwrites it with the inverse diagonal)
    term = _excess_unobserved(ops, Grows[:: R + 1], penalty, out=work.inv)
    ops.copyto(Grows, Gfull_dev.reshape(R * R, 1))  # broadcast over the rows
    Grows[:: R + 1] += term
    _hals_rows(ops, Y, Fe, Grows.reshape(R, R, n), n_sweeps, stop_ratio, work, overwrite=True)


def _excess_unobserved(ops, gram_diag, penalty, out):
    """The unobserved penalty's diagonal term of each pair row, ``lam * max(0, Gfull[r, r] -
    2 G_p[r, r])`` (R, n) into ``out``: the component's energy where pair p was *not* recorded
    (``Gfull - G_p``) beyond the energy where it was (``G_p``). A pair recorded where the component
    carries at least half of its energy is not penalised at all; one recorded only where it is
    weak (the loading the data leave free, :mod:`dynconn.methods.evidence`) is shrunk as if its
    unrecorded entries were zeros of weight lam. ``gram_diag``: the rows' ``G_p[r, r]`` (R, n);
    ``penalty``: ``(lam, g)``, g = lam * diag(Gfull) as an (R, 1) backend array."""
    lam, g = penalty
    ops.copyto(out, gram_diag)
    out *= -2.0 * lam
    out += g
    ops.clamp0_(out)
    return out


def _small_modes(prob, Z, UtU, UMU, Vt, Wt, WtW, missing, sweeps, stop_ratio, timer: _Timer) -> float:
    """The time and animals modes from ``Z = U' X2`` (R, T, A) and the pair Grams, then the loss."""
    masked = prob.mask is not None
    groups = prob.groups
    # ---- time and animals modes: small contractions of Z --------------------------------------
    FV = np.einsum("rta,ra->rt", Z, Wt)
    if masked and groups is not None:
        # row t sees the pairs observed in its group: G_t = (U' diag(m[:, g(t)]) U) * (w w')
        GVrows = (UMU * WtW[:, :, None])[:, :, groups]  # (R, R, T)
        timer.stop("grams")
        if missing == "exact":
            _hals_rows(_HOST, Vt, FV, GVrows, sweeps[1], stop_ratio, overwrite=True)
        else:
            Gfull = UtU * WtW
            FVe = FV + Gfull @ Vt - np.einsum("rst,st->rt", GVrows, Vt)
            _hals_shared(_HOST, Vt, FVe, Gfull, sweeps[1], stop_ratio)
    else:
        if masked:
            GV = np.einsum("rsa,ra,sa->rs", UMU, Wt, Wt)  # exact: the mask does not depend on time
        else:
            GV = UtU * WtW
        timer.stop("grams")
        if masked and missing == "em":
            Gfull = UtU * WtW
            _hals_shared(_HOST, Vt, FV + (Gfull - GV) @ Vt, Gfull, sweeps[1], stop_ratio)
        else:
            _hals_shared(_HOST, Vt, FV, GV, sweeps[1], stop_ratio)
    VtV = Vt @ Vt.T
    FW = np.einsum("rta,rt->ra", Z, Vt)
    if masked:
        if groups is None:
            GW = UMU * VtV[:, :, None]  # (R, R, A): the exact Gram of each animal's row
        else:  # the single row: sum_g (U' diag(m[:, g]) U) * (V_g'V_g)
            GW = (UMU * _group_grams(Vt, groups, UMU.shape[2])).sum(axis=2, keepdims=True)
        if missing == "exact":
            _hals_rows(_HOST, Wt, FW, GW, sweeps[2], stop_ratio)
        else:
            Gfull = UtU * VtV
            FWe = FW + Gfull @ Wt - np.einsum("rsa,sa->ra", GW, Wt)
            _hals_shared(_HOST, Wt, FWe, Gfull, sweeps[2], stop_ratio)
    else:
        GW = UtU * VtV
        _hals_shared(_HOST, Wt, FW, GW, sweeps[2], stop_ratio)
    timer.stop("hals_small")

    # ---- loss without another pass: ||MX||^2 - 2<MX, Xhat> + ||M Xhat||^2 --------------------
    # FW was computed from the final U and V, so <MX, Xhat> = sum(W * FW).
    inner = float((Wt * FW).sum())
    if masked:
        model_sq = float(np.einsum("ra,sa,rsa->", Wt, Wt, GW))
    else:
        model_sq = float((GW * (Wt @ Wt.T)).sum())
    err_sq = prob.norm_sq - 2.0 * inner + model_sq
    timer.stop("loss")
    return math.sqrt(max(err_sq, 0.0) / prob.norm_sq)


def _rsvd_left(prob: _Problem, k: int, rng: np.random.Generator, n_power: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Leading ``k`` left singular vectors/values of the pairs unfolding X2 (P x T*A), randomized.

    Halko, Martinsson & Tropp (2011): range finder with ``n_power`` power iterations; every product
    is one thin GEMM over X, the small factorizations run on the host.
    """
    ops = prob.ops
    P, T, A = prob.shape
    n_cols = min(k + 8, P, T * A)
    omega = ops.asarray(rng.standard_normal((n_cols, T * A)).astype(np.float32))
    if prob.out_of_core:  # the same products, by blocks of rows read from disk
        def x_times(M):  # X2 @ M' -> (P, n) host float64
            return np.concatenate([(rows @ M.T).astype(np.float64) for rows in _x2_blocks(prob)])

        def times_x(Qm):  # Q' X2 -> (n, T*A)
            out = 0
            for (start, stop), rows in zip(prob.blocks(), _x2_blocks(prob)):
                out = out + Qm[start:stop].T.astype(np.float32) @ rows
            return out
    else:
        def x_times(M):
            return ops.to_numpy(ops.matmul(M, prob.X2.T)).T.astype(np.float64)

        def times_x(Qm):
            return ops.matmul(ops.asarray(Qm.T), prob.X2)
    Y = x_times(omega)  # (P, n_cols)
    Q, _ = np.linalg.qr(Y)
    for _ in range(n_power):
        B = times_x(Q)  # (n_cols, T*A)
        Q, _ = np.linalg.qr(x_times(B))
    B = ops.to_numpy(times_x(Q)).astype(np.float64)
    Ub, s, _ = np.linalg.svd(B, full_matrices=False)
    return (Q @ Ub)[:, :k], s[:k]


def _x2_blocks(prob: _Problem):
    """The rows of an out-of-core X2, block by block ((n, T*A) arrays in the working dtype)."""
    P, T, A = prob.shape
    for start, stop in prob.blocks():
        yield prob.X2[start:stop].reshape(stop - start, T * A)


def _mode_gram_eig(X: np.ndarray, mode: int, k: int):
    """Leading eigenvectors of the Gram of mode ``mode`` (1 = time, 2 = animals), chunked over pairs."""
    P, T, A = X.shape
    n = X.shape[mode]
    G = np.zeros((n, n))
    rows = _scan_rows(X)
    for start in range(0, P, rows):
        block = X[start:start + rows]
        if mode == 1:
            flat = np.ascontiguousarray(np.transpose(block, (1, 0, 2))).reshape(T, -1)
            G += (flat @ flat.T).astype(np.float64)
        else:
            flat = block.reshape(-1, A)
            G += (flat.T @ flat).astype(np.float64)
    vals, vecs = np.linalg.eigh(G)
    order = np.argsort(vals)[::-1][:k]
    return vecs[:, order]


def _nonneg_part(vectors: np.ndarray) -> np.ndarray:
    """NNDSVD's sign choice: keep, per singular vector, the positive or negative part with the larger norm."""
    pos = np.maximum(vectors, 0)
    neg = np.maximum(-vectors, 0)
    take_neg = np.linalg.norm(neg, axis=0) > np.linalg.norm(pos, axis=0)
    return np.where(take_neg[None, :], neg, pos)


def _initial_factors(prob: _Problem, X: np.ndarray, init, rng: np.random.Generator):
    """Initial (U, V, W) as host float64 arrays of shapes (P,R), (T,R), (A,R), and the init's name."""
    P, T, A = prob.shape
    R = prob.rank
    if isinstance(init, str):
        if init == "random":
            factors = [rng.random((n, R)) for n in (P, T, A)]
            weights = np.ones(R)
        elif init == "nndsvd":
            left, s = _rsvd_left(prob, R, rng)
            factors = [left]
            for mode in (1, 2):
                factors.append(_mode_gram_eig(X, mode, R))
            weights = np.zeros(R)
            weights[: len(s)] = s
            for i, (n, Fm) in enumerate(zip((P, T, A), factors)):
                Fm = _nonneg_part(Fm)
                if Fm.shape[1] < R:  # the mode is shorter than the rank: pad with random columns
                    Fm = np.hstack([Fm, rng.random((n, R - Fm.shape[1]))])
                factors[i] = Fm
            weights = np.where(weights > 0, weights, weights[weights > 0].min() if (weights > 0).any() else 1.0)
        else:
            raise ValueError(f"init must be 'random', 'nndsvd' or a CPTensor, got {init!r}")
        name = init
    else:
        try:
            weights, factors = init
        except (TypeError, ValueError) as exc:
            raise ValueError("init must be 'random', 'nndsvd' or a CPTensor (weights, factors)") from exc
        factors = [np.asarray(f, dtype=np.float64) for f in factors]
        if len(factors) != 3 or any(f.shape != (n, R) for f, n in zip(factors, (P, T, A))):
            raise ValueError(
                f"init CPTensor must have factors of shapes {(P, R)}, {(T, R)}, {(A, R)}; got "
                f"{[f.shape for f in factors]}"
            )
        if any((f < 0).any() or not np.isfinite(f).all() for f in factors):
            raise ValueError("init CPTensor factors must be finite and non-negative")
        weights = np.ones(R) if weights is None else np.asarray(weights, dtype=np.float64)
        if weights.shape != (R,) or (weights < 0).any():
            raise ValueError(f"init CPTensor weights must be {R} non-negative numbers")
        name = "given"
    factors = [f.copy() for f in factors]
    factors[0] = factors[0] * weights[None, :]
    if prob.mask is not None:
        # Pairs never observed and animals with nothing observed stay at exactly zero -- with
        # time groups, the bins of groups with nothing observed.
        factors[0][~prob.mask.any(axis=1)] = 0
        if prob.groups is None:
            factors[2][~prob.mask.any(axis=0)] = 0
        else:
            factors[1][~prob.mask.any(axis=0)[prob.groups]] = 0
    return factors, name


def _fit_state(prob, Ut, Vt, Wt, iteration, history, seconds, init_name, method, missing, dtype,
               unobserved_penalty=0.0):
    ops = prob.ops
    return {
        "format": FIT_STATE_FORMAT,
        "iteration": int(iteration),
        "pairs": ops.to_numpy(Ut).T.copy(),  # working dtype
        "time": Vt.T.copy(),  # float64
        "animals": Wt.T.copy(),  # float64
        "loss_history": np.asarray(history, dtype=np.float64).copy(),
        "seconds": float(seconds),
        "init": init_name,
        "rank": int(prob.rank),
        "shape": np.asarray(prob.shape, dtype=np.int64),
        "norm_sq": float(prob.norm_sq),
        "mask_digest": prob.mask_digest,
        "method": method,
        "missing": missing,
        "dtype": np.dtype(dtype).name,
        "unobserved_penalty": float(unobserved_penalty),
    }


def _check_penalty_state(state, unobserved_penalty) -> None:
    """A checkpoint continues only with the unobserved penalty it was made with (a state from
    before the option existed was made with none, i.e. 0)."""
    made = float(state.get("unobserved_penalty", 0.0))
    if made != float(unobserved_penalty):
        raise ValueError(f"checkpoint was made with unobserved_penalty {made:g}, asked {float(unobserved_penalty):g}")


def _check_fit_state(state, prob, missing, dtype, unobserved_penalty=0.0):
    if not isinstance(state, Mapping) or state.get("format") != FIT_STATE_FORMAT:
        raise ValueError(f"resume must be a checkpoint state of format {FIT_STATE_FORMAT!r}")
    if tuple(np.asarray(state["shape"]).tolist()) != prob.shape:
        raise ValueError(
            f"checkpoint is for a tensor of shape {tuple(np.asarray(state['shape']).tolist())}, X has {prob.shape}"
        )
    if int(state["rank"]) != prob.rank:
        raise ValueError(f"checkpoint is for rank {int(state['rank'])}, asked rank {prob.rank}")
    if str(state["missing"]) != missing or str(state["dtype"]) != np.dtype(dtype).name:
        raise ValueError("checkpoint was made with other solver settings (missing/dtype)")
    if not math.isclose(float(state["norm_sq"]), prob.norm_sq, rel_tol=1e-9):
        raise ValueError("checkpoint was made for different data (the norm of X differs)")
    if "mask_digest" in state and str(state["mask_digest"]) != prob.mask_digest:
        raise ValueError("checkpoint was made for another mask or other time groups")
    _check_penalty_state(state, unobserved_penalty)


def _cp_tensor(weights: np.ndarray, factors: list[np.ndarray]) -> CPTensor:
    """The tensorly ``CPTensor`` (weights, factors), imported here rather than with the module:
    tensorly imports scipy (≈ 0.5 s), which a process can import in a thread meanwhile
    (:func:`dynconn.runner.resources.prefetch_imports`)."""
    from tensorly.cp_tensor import CPTensor

    return CPTensor((weights, factors))


def _normalise_sort(factors: list[np.ndarray], dtype) -> CPTensor:
    """Unit-L2 columns, scale in ``weights``, components by weight descending (stable)."""
    norms = [np.linalg.norm(f, axis=0) for f in factors]
    weights = norms[0] * norms[1] * norms[2]
    order = np.argsort(-weights, kind="stable")
    out = []
    for f, n in zip(factors, norms):
        unit = np.where(n > 0, f / np.where(n > 0, n, 1.0), 0.0)
        out.append(np.ascontiguousarray(unit[:, order], dtype=dtype))
    return _cp_tensor(np.asarray(weights[order], dtype=np.float64), out)


def _default_sweeps(backend: str):
    # Inner HALS sweeps per mode (pairs, time, animals), as tensorly's HALS does. A pairs-mode sweep
    # costs ~2 % of the iteration's GEMMs; more sweeps on the small modes were measured not to help.
    return (5, 5, 5)


def ncp_hals(
    X,
    rank,
    *,
    mask=None,
    time_groups=None,
    init="random",
    max_iter=500,
    tol=1e-6,
    random_state=None,
    backend="numpy",
    dtype="float32",
    resume=None,
    checkpoint_every=None,
    on_checkpoint: Callable[[dict], Any] | None = None,
    checkpoint_due: Callable[[], bool] | None = None,
    on_iteration: Callable[[int, float], Any] | None = None,
    method="hals",
    missing="exact",
    device=None,
    inner_sweeps: Sequence[int] | None = None,
    inner_stop=0.01,
    gemm_pad=None,
    scale_init=None,
    profile=False,
    client=None,
    unobserved_penalty=0.0,
) -> tuple[CPTensor, FitInfo]:
    """Non-negative CP decomposition of ``X`` by HALS, fitting observed entries only.

    Parameters
    ----------
    X : array (P, T, A), non-negative
        Pair affinities (pairs x time bins x animals). Unobserved entries may hold anything
        (they are ignored exactly; if any is non-zero a zeroed copy of X is made once).
    rank : int >= 1
        Number of components R.
    mask : bool array (P, A), optional
        True where pair p was recorded in animal a (at all times). None = everything observed.
        With ``time_groups``: (P, G), True where pair p was observed in group g.
    time_groups : int array (T,), optional
        For X of shape (P, T, 1) whose time axis holds several groups' bins one after another
        (the concatenated layout: a group is an animal): the group of each bin, in [0, G).
        Entry (p, t) is then observed iff ``mask[p, time_groups[t]]``. Needs a mask.
    init : "random" | "nndsvd" | CPTensor
        "random": uniform [0, 1) factors from ``random_state``. "nndsvd": NNDSVD-style, from the
        leading singular vectors of the three unfoldings (randomized SVD for the pairs mode),
        each replaced by its larger-norm positive or negative part. A CPTensor (weights, [U, V, W])
        is used as given. "random" and "nndsvd" are scaled so the model's norm equals ``||M*X||``.
    max_iter : int
        Maximum outer iterations (counting iterations done before a ``resume``).
    tol : float
        Stop when ``|e[k-1] - e[k]| / e[k-1] < tol`` (e = relative error on observed entries).
        The error is computed from working-precision products, so it is known only to
        :func:`loss_resolution` (float32: ~1e-6 absolute at e = 0.5, ~5e-5 at e = 0.01); a tol
        below ``loss_resolution(e) / e`` in practice runs to ``max_iter`` (use dtype="float64"
        for tighter tols).
    random_state : None | int | SeedSequence | numpy Generator
        Seeds the random init (and the randomized SVD of "nndsvd").
    backend : "numpy" | "pytorch"
        "pytorch" runs the same algorithm on torch tensors, on ``device`` (default: CUDA when
        available, else CPU). backend="numpy" never imports torch.
    dtype : "float32" | "float64"
        Working precision of X and the factors; reductions for the loss are done in float64.
    resume : dict, optional
        A state passed to ``on_checkpoint`` earlier; the fit continues from it and reaches the
        same result as an uninterrupted run (bitwise on the same machine and backend).
    checkpoint_every : int, optional
        Call ``on_checkpoint(state)`` after every ``checkpoint_every``-th iteration.
    on_checkpoint : callable(dict), optional
        Receives a state dict (see docs/factorization.md, "Checkpoints") of numpy arrays,
        numbers and strings; store it to resume later.
    checkpoint_due : callable() -> bool, optional
        Instead of counting iterations: asked after every iteration, and a state is built and
        passed to ``on_checkpoint`` only when it returns True (e.g. "30 s have passed, or a stop
        was requested"). Building a state copies the factors, so this keeps checkpoints free
        between saves.
    on_iteration : callable(int, float), optional
        Called after each iteration with (iteration number from 1, relative error).
    method : "hals" | "tensorly-hals"
        "tensorly-hals" runs ``tensorly.decomposition.non_negative_parafac_hals`` as a reference
        (numpy backend, no mask, no checkpoints; ``tol`` is then tensorly's absolute criterion).
    missing : "exact" | "em"
        How unobserved entries are handled: exact weighted block updates (default) or EM
        imputation with the current model (kept for comparison; converges more slowly).
    inner_sweeps : (int, int, int), optional
        Maximum HALS sweeps per mode and outer iteration (pairs, time, animals); default (5, 5, 5).
    inner_stop : float
        A mode's inner sweeps stop once a sweep moves it less than this fraction of its first sweep
        (squared norms). The pairs mode applies it to each block of rows on its own (numpy:
        :data:`PAIRS_BLOCK` rows; torch: all rows); 0 = always ``inner_sweeps``.
    gemm_pad : int, optional
        Pad the GEMM operands' component axis to a multiple of this (default 8 on numpy, 1 on torch).
    scale_init : bool, optional
        Scale the init so the model's norm equals ``||M*X||``. Default: yes for "random" and
        "nndsvd" (their scale is arbitrary), no for a given CPTensor, which is then used exactly
        as given (up to the per-component balancing, to which HALS is invariant) -- so from the
        same CPTensor this solver follows tensorly's HALS iterates.
    profile : bool
        Record seconds per phase in ``FitInfo.phase_seconds`` (adds device syncs on CUDA).
    client : dask.distributed.Client, optional
        Run the pass over the blocks of pairs on its workers: each block's rows of X and of the pair
        factor are sent once and stay there; per iteration only the small factors go out and the
        blocks' R x T x A parts of ``U' X`` (and R x R Grams) come back, summed in block order.
        numpy backend, ``method="hals"``. The factors equal the local run's to float32 rounding
        (the pair Grams and norms are summed block by block instead of in one product).
    unobserved_penalty : float >= 0
        lambda of the unobserved penalty (with a mask; docs/factorization.md): in the pairs mode,
        row p's Gram diagonal gets ``lambda * max(0, Gfull[r, r] - 2 G_p[r, r])`` added, ``Gfull``
        the Gram of a fully observed row -- the component's energy where p was not recorded,
        beyond its energy where p was, counts as zeros of weight lambda, so a pair recorded only
        where a component is weak is shrunk toward 0 and one recorded where it mostly lives is
        untouched. 0 (the default here; the pipeline's config key ``factorize.unobserved_penalty``
        defaults to 0.1) is the unpenalised solver, bit for bit. The time and
        animal modes are not penalised, so the fit is a fixed point of the iteration rather than
        the minimum of one loss: the observed error may rise while it converges, and the fit
        depends slightly on the pairs mode's inner-sweep schedule (``inner_sweeps``,
        ``inner_stop``, the blocks of pairs; ~1e-3 at 0.03). ``missing="em"`` applies the same
        term to its pair rows (and converges to a slightly different fixed point).

    Returns
    -------
    cp : CPTensor
        ``(weights (R,), [pairs (P, R), time (T, R), animals (A, R)])`` as numpy arrays in ``dtype``.
        Each factor column has unit L2 norm; ``weights[r]`` is the product of the three norms, so
        ``Xhat = sum_r weights[r] * outer(pairs[:, r], time[:, r], animals[:, r])``. Components are
        sorted by weight, descending. A dead component has all-zero columns and weight 0.
    info : FitInfo
    """
    t_start = time.perf_counter()
    rank = _check_rank(rank)
    dt = _check_dtype(dtype)
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if missing not in _MISSING:
        raise ValueError(f"missing must be one of {_MISSING}, got {missing!r}")
    max_iter = check_int("max_iter", max_iter, low=0)
    tol = check_number("tol", tol, low=0)
    if checkpoint_every is not None:
        checkpoint_every = check_int("checkpoint_every", checkpoint_every, low=1)
    if checkpoint_due is not None and not callable(checkpoint_due):
        raise ValueError(f"checkpoint_due must be callable, got {checkpoint_due!r}")
    sweeps = tuple(_default_sweeps(backend) if inner_sweeps is None else inner_sweeps)
    if len(sweeps) != 3 or any(not isinstance(s, numbers.Integral) or s < 1 for s in sweeps):
        raise ValueError(f"inner_sweeps must be three positive integers, got {inner_sweeps!r}")
    if not (isinstance(inner_stop, numbers.Real) and 0 <= inner_stop < 1):
        raise ValueError(f"inner_stop must be a number in [0, 1), got {inner_stop!r}")
    if gemm_pad is not None:
        gemm_pad = check_int("gemm_pad", gemm_pad, low=1)
    unobserved_penalty = check_number("unobserved_penalty", unobserved_penalty, low=0)

    data = _as_data(X, mask, dt, time_groups)
    X, mask_arr, norm_sq = data.X, data.mask, data.norm_sq

    if method == "tensorly-hals":
        return _tensorly_reference(data, rank, init, max_iter, tol, random_state,
                                   backend, dt, resume, checkpoint_every or checkpoint_due, t_start)

    ops = _make_ops(backend, dt, device)
    if gemm_pad is None:
        gemm_pad = 8 if ops.name == "numpy" else 1
    prob = _Problem(ops, data, rank, int(gemm_pad))
    timer = _Timer(ops, profile)

    if resume is not None:
        _check_fit_state(resume, prob, missing, dt, unobserved_penalty)
        factors = [np.asarray(resume[name]) for name in MODE_NAMES]
        history = [float(v) for v in np.asarray(resume["loss_history"])]
        start_iter = int(resume["iteration"])
        init_name = str(resume["init"])
        seconds_before = float(resume["seconds"])
        Ut = ops.asarray(np.asarray(factors[0]).T)
        Vt, Wt = (np.ascontiguousarray(np.asarray(f, dtype=np.float64).T) for f in factors[1:])
    else:
        rng = _as_generator(random_state)
        timer.start()
        factors, init_name = _initial_factors(prob, X, init, rng)
        Ut = ops.asarray(factors[0].T)
        Vt, Wt = (np.ascontiguousarray(f.T, dtype=np.float64) for f in factors[1:])
        # One global scale so the init's norm matches the data's (closed form, no pass over X).
        if scale_init is None:
            scale_init = isinstance(init, str)
        model_sq = _model_norm_sq(prob, Ut, Vt, Wt) if scale_init else 0.0
        if model_sq > 0:
            scale = (norm_sq / model_sq) ** (1.0 / 6.0)  # each of three modes gets the cube root
            Ut *= scale
            Vt *= scale
            Wt *= scale
        _balance_(prob, Ut, Vt, Wt)
        timer.stop("init")
        history = []
        start_iter = 0
        seconds_before = 0.0

    if client is not None:
        if ops.name != "numpy":
            raise ValueError("client= runs the pass on dask workers with backend='numpy' only")
        prob.remote = _DaskPass(client, prob, ops.to_numpy(Ut))

    def current_u():
        return prob.remote.u_factor() if prob.remote is not None else Ut

    converged = False
    iteration = start_iter
    # A resumed fit that had already converged (or finished) does no further iteration.
    if len(history) >= 2 and tol > 0 and abs(history[-2] - history[-1]) < tol * history[-2]:
        converged = True
    # With threads sharing the pass, BLAS stays single-threaded for the whole loop, not only the
    # pass: a multi-threaded call in between (e.g. the masked Grams) wakes OpenBLAS's own workers,
    # which then spin on the cores the pass needs (measured, docs/factorization.md).
    with _blas_single_threaded() if prob.threads > 1 else contextlib.nullcontext():
        while not converged and iteration < max_iter:
            loss = _iteration(prob, Ut, Vt, Wt, missing, sweeps, inner_stop, timer, unobserved_penalty)
            _balance_(prob, Ut, Vt, Wt)
            iteration += 1
            history.append(loss)
            if not math.isfinite(loss):
                raise FloatingPointError(f"the fit diverged at iteration {iteration} (loss {loss})")
            if on_iteration is not None:
                on_iteration(iteration, loss)
            if len(history) >= 2 and abs(history[-2] - history[-1]) < tol * history[-2]:
                converged = True
                break
            if on_checkpoint is not None and iteration < max_iter and _due(checkpoint_every, checkpoint_due, iteration):
                on_checkpoint(_fit_state(prob, current_u(), Vt, Wt, iteration, history,
                                         seconds_before + time.perf_counter() - t_start,
                                         init_name, "hals", missing, dt, unobserved_penalty))

    final = [ops.to_numpy(current_u()).T.astype(np.float64), Vt.T, Wt.T]
    cp = _normalise_sort(final, dt)
    info = FitInfo(
        n_iter=iteration,
        converged=converged,
        loss_history=np.asarray(history, dtype=np.float64),
        seconds=seconds_before + time.perf_counter() - t_start,
        init=init_name,
        method="hals",
        backend=ops.name,
        device=ops.device,
        dtype=dt.name,
        missing=missing if mask_arr is not None else "none",
        rank=rank,
        phase_seconds=dict(timer.seconds),
        unobserved_penalty=float(unobserved_penalty) if mask_arr is not None else 0.0,
    )
    return cp, info


def _due(checkpoint_every, checkpoint_due, iteration=None) -> bool:
    """Is a checkpoint due: ``checkpoint_due()`` when given, else every ``checkpoint_every``-th
    iteration (at a boundary between fits, ``iteration=None``: whenever checkpointing is on)."""
    if checkpoint_due is not None:
        return bool(checkpoint_due())
    if not checkpoint_every:
        return False
    return iteration is None or iteration % checkpoint_every == 0


def _tensorly_reference(data, rank, init, max_iter, tol, random_state, backend, dt,
                        resume, checkpoint_every, t_start):
    """tensorly's ``non_negative_parafac_hals`` behind the same interface (reference only)."""
    from tensorly.decomposition import non_negative_parafac_hals

    X = data.X
    if data.out_of_core:
        raise ValueError("method='tensorly-hals' needs X in memory; use method='hals' for an out-of-core X")
    if data.mask is not None:
        raise ValueError("method='tensorly-hals' does not support a mask; use method='hals'")
    if backend != "numpy":
        raise ValueError("method='tensorly-hals' runs on backend='numpy' only")
    if resume is not None or checkpoint_every is not None:
        raise ValueError("method='tensorly-hals' does not support checkpoints")
    ops = _NumpyOps(dt)
    prob = _Problem(ops, data, rank, 1)
    rng = _as_generator(random_state)
    factors, init_name = _initial_factors(prob, X, init, rng)
    init_cp = _cp_tensor(np.ones(rank, dtype=dt), [np.asarray(f, dtype=dt) for f in factors])
    # tensorly records errors only when tol is truthy; a vanishing tol records them and still
    # runs max_iter iterations.
    cp, errors = non_negative_parafac_hals(
        X, rank, n_iter_max=max_iter, init=init_cp, tol=tol if tol > 0 else 1e-300, return_errors=True
    )
    weights, factors = cp
    factors = [np.asarray(f, dtype=np.float64) * (np.asarray(weights, dtype=np.float64)[None, :] if i == 0 else 1)
               for i, f in enumerate(factors)]
    history = np.asarray([float(e) for e in errors], dtype=np.float64)
    info = FitInfo(
        n_iter=len(history) if len(history) else max_iter,
        converged=len(history) < max_iter,
        loss_history=history,
        seconds=time.perf_counter() - t_start,
        init=init_name,
        method="tensorly-hals",
        backend="numpy",
        device="cpu",
        dtype=dt.name,
        missing="none",
        rank=rank,
    )
    return _normalise_sort(factors, dt), info


# --------------------------------------------------------------------------------------------
# Similarity of fits, exact error
# --------------------------------------------------------------------------------------------


def factor_congruence(cp_a, cp_b) -> tuple[float, np.ndarray, np.ndarray]:
    """Factor-match score of two CP decompositions of the same tensor shape.

    For components i of ``cp_a`` and j of ``cp_b`` the congruence is the product over the three
    modes of the cosine between their factor columns (Tucker's congruence coefficient); the
    components are matched one-to-one to maximise the total (Hungarian algorithm), as in
    ``tensorly.metrics.factors.congruence_coefficient`` and the similarity score of Williams et al.
    (2018) without its weight term. A zero column has congruence 0 with everything.

    Returns ``(score, per_component, permutation)``: the mean congruence over matched pairs (1 =
    identical up to scaling and order), the congruence of each matched pair in ``cp_a``'s order,
    and for each component of ``cp_a`` the index of its match in ``cp_b`` (-1 if unmatched,
    when ``cp_b`` has fewer components).
    """
    fa = [np.asarray(f, dtype=np.float64) for f in cp_a[1]]
    fb = [np.asarray(f, dtype=np.float64) for f in cp_b[1]]
    if len(fa) != len(fb) or any(a.shape[0] != b.shape[0] for a, b in zip(fa, fb)):
        raise ValueError("factor_congruence needs two CP tensors of the same shape")
    ra, rb = fa[0].shape[1], fb[0].shape[1]
    sim = np.ones((ra, rb))
    for a, b in zip(fa, fb):
        na = np.linalg.norm(a, axis=0)
        nb = np.linalg.norm(b, axis=0)
        an = a / np.where(na > 0, na, 1.0)
        bn = b / np.where(nb > 0, nb, 1.0)
        sim *= np.abs(an.T @ bn)
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(-sim)
    permutation = np.full(ra, -1, dtype=np.int64)
    permutation[rows] = cols
    per_component = np.zeros(ra)
    per_component[rows] = sim[rows, cols]
    return float(sim[rows, cols].mean()), per_component, permutation


def observed_congruence(cp_a, cp_b, mask=None, time_groups=None) -> float:
    """:func:`factor_congruence` of two fits on what the data determine: each fit's pair factor
    weighed by its evidence (:func:`dynconn.methods.evidence.pair_evidence`: the fraction of the
    component's energy in the entries where the pair was observed) before the cosines.

    A component carried by one animal has its pair loadings at the pairs *not* recorded in that
    animal fitted only from the animals where it is nearly absent: those loadings are the ratio of
    two small numbers, free to differ between restarts that fit the observed entries equally well
    (on the realistic simulator they held all of such a component's pair norm, docs/factorization.md).
    Compared raw, they make restarts that agree on every observed entry look different. Without a
    mask this is :func:`factor_congruence` itself.
    """
    if mask is None:
        return factor_congruence(cp_a, cp_b)[0]
    from .evidence import pair_evidence

    mask = np.asarray(mask, dtype=bool)

    def weighed(cp):
        U, V, W = (np.asarray(f, dtype=np.float64) for f in cp[1])
        return _cp_tensor(np.asarray(cp[0], dtype=np.float64), [U * pair_evidence(mask, V, W, time_groups), V, W])

    return factor_congruence(weighed(cp_a), weighed(cp_b))[0]


def match_components(reference, cp) -> tuple[CPTensor, np.ndarray]:
    """``cp``'s components put in ``reference``'s order (matched by :func:`factor_congruence`)
    and the congruence of each matched pair (reference's order). A component of ``reference``
    without a match (``cp`` has fewer) gets zero columns and congruence 0."""
    _, per_component, permutation = factor_congruence(reference, cp)
    weights = np.asarray(cp[0], dtype=np.float64)
    factors = [np.asarray(f) for f in cp[1]]
    found = permutation >= 0
    take = np.where(found, permutation, 0)
    out_w = np.where(found, weights[take], 0.0)
    out_f = [np.where(found[None, :], f[:, take], 0) for f in factors]
    return _cp_tensor(out_w, out_f), per_component


def relative_error(X, cp, mask=None, time_groups=None) -> float:
    """Exact ``||M*(X - Xhat)||_F / ||M*X||_F`` in float64, chunked over pairs (one pass over X).

    ``mask`` (P, A), or (P, G) with ``time_groups`` (T,), as in :func:`ncp_hals`; values of X at
    unobserved entries are ignored."""
    X = np.asarray(X)
    groups = _check_groups(time_groups, X.shape, mask)
    weights, (U, V, W) = cp
    U = np.asarray(U, dtype=np.float64) * (1.0 if weights is None else np.asarray(weights, dtype=np.float64))
    V = np.asarray(V, dtype=np.float64)
    W = np.asarray(W, dtype=np.float64)
    KR = (V[:, None, :] * W[None, :, :]).reshape(-1, V.shape[1])
    num = den = 0.0
    rows = _scan_rows(X)
    for start in range(0, X.shape[0], rows):
        block = X[start:start + rows].astype(np.float64)
        resid = block - (U[start:start + rows] @ KR.T).reshape(block.shape)
        if mask is not None:
            m = _observed(np.asarray(mask[start:start + rows], dtype=bool), groups)
            resid = np.where(m, resid, 0.0)
            block = np.where(m, block, 0.0)
        num += float(np.vdot(resid, resid))
        den += float(np.vdot(block, block))
    return math.sqrt(num / den)


#: Rounding of the loss formula's squared error, in units of the working dtype's epsilon times
#: ``||M*X||^2``: ``||MX||^2 - 2<MX, Xhat> + ||M Xhat||^2`` is a difference of three terms each
#: ~``||MX||^2``, each rounded once or twice (the inner product comes from the working-precision
#: MTTKRP Z). 8 bounds what was measured: float32 losses near convergence wander by 1-2 eps
#: (e = 0.0102: +-5e-6 over 300 iterations, tests/test_factorize.py), float64 by ~1 eps.
LOSS_ROUNDING = 8.0


def loss_resolution(loss, dtype="float32"):
    """How far a relative error reported by :func:`ncp_hals` can be off by rounding alone.

    The solver computes ``e = ||M*(X - Xhat)|| / ||M*X||`` without another pass over X, from
    ``e^2 = 1 - 2<MX, Xhat>/||MX||^2 + ||M Xhat||^2/||MX||^2``: the three terms cancel to ``e^2``,
    so an absolute rounding ``d = LOSS_ROUNDING * eps(dtype)`` on ``e^2`` becomes ``d / (2 e)`` on
    ``e`` (at most ``sqrt(d)``, when ``e`` itself is below the rounding). Two losses closer than
    this cannot be ordered, and a ``tol`` below ``resolution / e`` is never met.

    Parameters
    ----------
    loss : float or array
        Relative error(s) as reported (``FitInfo.loss_history``).
    dtype : "float32" | "float64"
        The fit's working precision.

    Returns
    -------
    float or ndarray, like ``loss``: the absolute resolution of each value.

    Examples
    --------
    >>> from dynconn.methods.ntf import loss_resolution
    >>> float(loss_resolution(0.01, "float32")) < 1e-4 < float(loss_resolution(1e-5, "float32"))
    True
    """
    d = LOSS_ROUNDING * float(np.finfo(_check_dtype(dtype)).eps)
    e = np.asarray(loss, dtype=np.float64)
    out = np.minimum(d / (2.0 * np.maximum(e, np.finfo(np.float64).tiny)), math.sqrt(d))
    return float(out) if out.ndim == 0 else out


# --------------------------------------------------------------------------------------------
# Restarts
# --------------------------------------------------------------------------------------------


def _root_seed(random_state) -> tuple[int, tuple]:
    """(entropy, spawn_key) identifying a root seed, from None / int / SeedSequence / Generator."""
    if isinstance(random_state, np.random.SeedSequence):
        return int(random_state.entropy), tuple(int(k) for k in random_state.spawn_key)
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2**63 - 1)), ()
    if random_state is None:
        # 63 bits, so that it fits an int64 in a checkpoint or an HDF5 attribute.
        return int(np.random.SeedSequence().generate_state(1, np.uint64)[0] >> np.uint64(1)), ()
    if isinstance(random_state, (bool, np.bool_)) or not isinstance(random_state, numbers.Integral) \
            or random_state < 0:
        raise ValueError(f"random_state must be None, a non-negative int, a SeedSequence or a Generator; got {random_state!r}")
    return int(random_state), ()


def restart_seed(entropy: int, k: int, spawn_key: tuple = ()) -> np.random.SeedSequence:
    """Seed of restart ``k`` under root ``entropy``: reproducible on its own, independent of the others."""
    return np.random.SeedSequence(int(entropy), spawn_key=tuple(spawn_key) + (int(k),))


def _restarts_state(entropy, spawn_key, n_restarts, rank, done: list, current, unobserved_penalty=0.0):
    state = {
        "format": RESTARTS_STATE_FORMAT,
        "unobserved_penalty": float(unobserved_penalty),
        "seed_entropy": int(entropy),
        "seed_spawn_key": np.asarray(spawn_key, dtype=np.int64),
        "n_restarts": int(n_restarts),
        "rank": int(rank),
        "restart": len(done),
        "losses": np.asarray([d["info"].loss for d in done], dtype=np.float64),
        "n_iter": np.asarray([d["info"].n_iter for d in done], dtype=np.int64),
        "converged": np.asarray([d["info"].converged for d in done], dtype=bool),
        "seconds": np.asarray([d["info"].seconds for d in done], dtype=np.float64),
        # one comma-separated string, not a numpy unicode array: h5py stores str as is
        "init": ",".join(d["info"].init for d in done),
    }
    for i, name in enumerate(MODE_NAMES):
        state["fits_" + name] = (np.stack([d["cp"][1][i] for d in done]) if done else np.zeros((0, 0, rank)))
    state["fits_weights"] = np.stack([d["cp"][0] for d in done]) if done else np.zeros((0, rank))
    state["fits_loss_history"] = _pack_histories([d["info"].loss_history for d in done])
    if current is not None:
        state["current"] = current
    return state


def _pack_histories(histories):
    """Ragged loss histories as one (n, max_len) float64 array padded with NaN."""
    n = max((len(h) for h in histories), default=0)
    out = np.full((len(histories), n), np.nan)
    for i, h in enumerate(histories):
        out[i, : len(h)] = h
    return out


def _unpack_restarts(state, rank, dtype):
    done = []
    hist = np.asarray(state["fits_loss_history"])
    inits = str(state["init"]).split(",")
    for k in range(int(state["restart"])):
        cp = _cp_tensor(np.asarray(state["fits_weights"][k], dtype=np.float64),
                        [np.asarray(state["fits_" + name][k], dtype=dtype) for name in MODE_NAMES])
        h = hist[k][~np.isnan(hist[k])] if hist.size else np.zeros(0)
        info = FitInfo(n_iter=int(state["n_iter"][k]), converged=bool(state["converged"][k]),
                       loss_history=h, seconds=float(state["seconds"][k]), init=inits[k],
                       dtype=np.dtype(dtype).name, rank=rank)
        done.append({"cp": cp, "info": info})
    return done


def ncp_restarts(
    X,
    rank,
    *,
    mask=None,
    time_groups=None,
    n_restarts=5,
    random_state=None,
    resume=None,
    checkpoint_every=None,
    on_checkpoint=None,
    checkpoint_due=None,
    on_restart: Callable[[int, int, FitInfo], Any] | None = None,
    init="random",
    mapper: Callable | None = None,
    **fit_kw,
) -> RestartsResult:
    """Fit ``rank`` from ``n_restarts`` independent initialisations; keep the lowest loss.

    Restart k is seeded with :func:`restart_seed` (entropy, k), where the root entropy comes from
    ``random_state`` (an int is used as is; a Generator gives one draw; None draws fresh entropy,
    recorded in the result and the checkpoints). So restart k can be reproduced on its own with
    ``ncp_hals(X, rank, random_state=restart_seed(entropy, k), ...)``.
    With ``init="nndsvd"`` restart 0 uses NNDSVD and the others random inits (NNDSVD is
    deterministic, identical restarts would tell nothing).

    Checkpoints: with ``checkpoint_every`` and ``on_checkpoint``, the state (format
    ``dynconn.ntf.restarts/1``) records the finished restarts' results, the seed, and the running
    restart's own fit state under ``"current"``; it is emitted at the running fit's checkpoints and
    after each restart. ``resume=state`` continues exactly where it was. ``checkpoint_due`` (see
    :func:`ncp_hals`) replaces ``checkpoint_every``, also between restarts.

    ``mask`` and ``time_groups`` as in :func:`ncp_hals`; ``fit_kw`` are passed to it (max_iter,
    tol, backend, dtype, ...).
    Similarity: :func:`factor_congruence` of each restart with the best.

    ``mapper``: run the restarts as independent tasks, ``mapper(fn, items, shared=...,
    on_result=..., tick=...)`` returning ``[fn(item, **shared) ...]`` in order (e.g.
    :meth:`dynconn.runner.engine.Engine.map`: Dask workers). Each restart draws from the same
    seed as in the loop, so the fits are the same; ``on_restart`` is called as each arrives, and
    checkpoints (taken between restarts only: a restart running elsewhere reports no partial
    state) record the finished restarts ``0..k-1``. ``on_iteration`` is not called. X must be
    in memory.
    """
    rank = _check_rank(rank)
    n_restarts = check_int("n_restarts", n_restarts, low=1)
    dtype = _check_dtype(fit_kw.get("dtype", "float32"))
    penalty = check_number("unobserved_penalty", fit_kw.get("unobserved_penalty", 0.0), low=0)
    data = _as_data(X, mask, dtype, time_groups)  # validate (and upload) X once for all restarts
    if mapper is not None and data.out_of_core:
        raise ValueError("mapper= sends X to every task: it needs X in memory (out of core, use client=)")

    if resume is not None:
        if not isinstance(resume, Mapping) or resume.get("format") != RESTARTS_STATE_FORMAT:
            raise ValueError(f"resume must be a checkpoint state of format {RESTARTS_STATE_FORMAT!r}")
        if int(resume["rank"]) != rank or int(resume["n_restarts"]) != n_restarts:
            raise ValueError("checkpoint was made for another rank or number of restarts")
        _check_penalty_state(resume, penalty)
        entropy = int(resume["seed_entropy"])
        spawn_key = tuple(int(k) for k in np.asarray(resume["seed_spawn_key"]).tolist())
        done = _unpack_restarts(resume, rank, dtype)
        current = resume.get("current")
    else:
        entropy, spawn_key = _root_seed(random_state)
        done, current = [], None

    def emit(inner_state):
        on_checkpoint(_restarts_state(entropy, spawn_key, n_restarts, rank, done, inner_state, penalty))

    if mapper is not None:
        tasks = [(rank, k, _restart_init(init, k), restart_seed(entropy, k, spawn_key),
                  current if k == len(done) else None) for k in range(len(done), n_restarts)]
        checkpointing = on_checkpoint is not None and bool(checkpoint_every or checkpoint_due)
        waiting: dict[int, dict] = {}

        def on_result(i, result):
            k = tasks[i][1]
            waiting[k] = {"cp": result[0], "info": result[1]}
            if on_restart is not None:
                on_restart(k, n_restarts, result[1])
            grew = False
            while len(done) in waiting:  # the finished restarts 0..k-1 are what a checkpoint records
                done.append(waiting.pop(len(done)))
                grew = True
            if checkpointing and grew and len(done) < n_restarts and _due(checkpoint_every, checkpoint_due):
                emit(None)

        def tick():
            if checkpointing and checkpoint_due is not None and len(done) < n_restarts and checkpoint_due():
                emit(None)

        mapper(_restart_task, tasks, shared={"data": data, "fit_kw": _task_kw(fit_kw)},
               on_result=on_result, tick=tick)
        return _restarts_result(done, entropy, spawn_key)

    for k in range(len(done), n_restarts):
        cp, info = ncp_hals(
            data, rank, init=_restart_init(init, k), random_state=restart_seed(entropy, k, spawn_key),
            resume=current, checkpoint_every=checkpoint_every, checkpoint_due=checkpoint_due,
            on_checkpoint=emit if (on_checkpoint is not None and (checkpoint_every or checkpoint_due)) else None,
            **fit_kw,
        )
        current = None
        done.append({"cp": cp, "info": info})
        if on_restart is not None:
            on_restart(k, n_restarts, info)
        if on_checkpoint is not None and k + 1 < n_restarts and _due(checkpoint_every, checkpoint_due):
            emit(None)
    return _restarts_result(done, entropy, spawn_key)


def _restart_init(init, k: int):
    """Restart k's init: NNDSVD is deterministic, so only restart 0 uses it; the others start random."""
    return init if (not isinstance(init, str) or init != "nndsvd" or k == 0) else "random"


def _task_kw(fit_kw: dict) -> dict:
    """The fit's keywords as a task elsewhere takes them: without the caller's callbacks."""
    if fit_kw.get("client") is not None:
        raise ValueError("mapper= runs whole fits as tasks; client= (the pass on dask workers) is for one fit")
    return {k: v for k, v in fit_kw.items() if k not in ("on_iteration",)}


def _restart_task(task, data, fit_kw):
    """One restart as an independent task (``mapper``): ``task = (rank, k, init, seed, resume)``."""
    rank, _, init, seed, resume = task
    return ncp_hals(data, rank, init=init, random_state=seed, resume=resume, **fit_kw)


def _restarts_result(done: list, entropy: int, spawn_key: tuple) -> RestartsResult:
    """The best of the finished restarts ``done`` (``{"cp", "info"}`` each, in restart order)."""
    losses = np.asarray([d["info"].loss for d in done])
    # NaN losses (max_iter=0) never win over a real one.
    best = int(np.nanargmin(losses)) if np.isfinite(losses).any() else 0
    similarity = np.asarray([
        1.0 if k == best else factor_congruence(done[best]["cp"], d["cp"])[0] for k, d in enumerate(done)
    ])
    return RestartsResult(
        cp=done[best]["cp"],
        info=done[best]["info"],
        best_index=best,
        losses=losses,
        n_iter=np.asarray([d["info"].n_iter for d in done], dtype=np.int64),
        converged=np.asarray([d["info"].converged for d in done], dtype=bool),
        seconds=np.asarray([d["info"].seconds for d in done]),
        similarity=similarity,
        weights=np.stack([np.asarray(d["cp"][0]) for d in done]),
        fits=[d["cp"] for d in done],
        seed_entropy=entropy,
        seed_spawn_key=spawn_key,
    )


# --------------------------------------------------------------------------------------------
# Rank selection
# --------------------------------------------------------------------------------------------

_RULES = ("parallel-analysis", "stable-elbow", "stable-run", "reached-elbow", "largest-confirmed", "min-error")
_SIMILARITIES = ("factors", "observed")


def _agreement(errors, similarity, best_index, tie) -> np.ndarray:
    """Per rank: mean similarity to the best fit of the other restarts that explain within
    ``tie`` of its fraction of the sum of squares (``1 - error**2``); NaN when none does."""
    errors, similarity = np.atleast_2d(errors), np.atleast_2d(similarity)
    if errors.shape[1] == 1:
        return np.ones(errors.shape[0])
    out = np.full(errors.shape[0], np.nan)
    for i, (err, sim) in enumerate(zip(errors, similarity)):
        near = err**2 - np.nanmin(err) ** 2 <= tie
        near[best_index[i]] = False
        if near.any():
            out[i] = float(np.mean(sim[near]))
    return out


def _shift_rows(block: np.ndarray, shifts: np.ndarray, segments: list[np.ndarray]) -> np.ndarray:
    """Rows of a (p, T, A) block, each (row, segment) circularly shifted by its own lag.

    ``segments``: the column indices of each segment -- the bins of one animal along axis 1
    (``time_groups``; then A == 1), or, without groups, one segment per animal along axis 2
    (``segments`` is then ``[None] * A``). ``shifts`` (p, n_segments) int.
    """
    out = np.empty_like(block)
    for g, cols in enumerate(segments):
        if cols is None:  # aligned, shared time: animal g's (p, T) slab
            rows = block[:, :, g]
            n = rows.shape[1]
            idx = (np.arange(n)[None, :] - shifts[:, g, None]) % n
            out[:, :, g] = np.take_along_axis(rows, idx, axis=1)
        else:
            rows = block[:, cols, 0]
            idx = (np.arange(cols.size)[None, :] - shifts[:, g, None]) % cols.size
            out[:, cols, 0] = np.take_along_axis(rows, idx, axis=1)
    return out


class _ShiftedRows:
    """The shifted null of an out-of-core tensor, shifted block by block as the solver reads it
    (the solver's row-source protocol: ``shape``, ``dtype``, ``read_rows``)."""

    def __init__(self, source: "_RowSource", shifts: np.ndarray, segments: list):
        self.source, self.shifts, self.segments = source, shifts, segments
        self.shape, self.dtype = source.shape, source.dtype

    def read_rows(self, start: int, stop: int, out: np.ndarray) -> np.ndarray:
        out[...] = _shift_rows(self.source[start:stop], self.shifts[start:stop], self.segments)
        return out


def shifted_null(X, time_groups=None, random_state=None):
    """X with every pair's time course circularly shifted by its own random lag, in each animal.

    The null of rule ``"parallel-analysis"`` (Horn 1965's parallel analysis, for a tensor): each
    pair keeps its values, its mean and its autocorrelation in every animal, but the pairs no
    longer change *together*, so what a component explains on it is what chance alignments of
    the same data explain. X (P, T, A) -- each (p, a) course shifted along T -- or, with
    ``time_groups`` (T,), (P, T, 1), each pair's bins of each group shifted among themselves.
    Entries of an unobserved (pair, animal) stay where they are (zeros stay zeros). A
    :func:`prepare` d X or an out-of-core one gives the same kind back, shifted lazily.

    Examples
    --------
    >>> X = np.arange(12.0).reshape(2, 3, 2)
    >>> Y = shifted_null(X, random_state=0)
    >>> bool(np.all(np.sort(Y, axis=1) == np.sort(X, axis=1)))
    True
    """
    data = X if isinstance(X, _Data) else None
    source = data.X if data is not None else X
    # (a prepared X drops its groups when everything is observed: the caller's are used then)
    groups = data.groups if data is not None and data.groups is not None else time_groups
    groups = None if groups is None else np.asarray(groups)
    P, T, A = (int(d) for d in source.shape)
    segments = ([np.flatnonzero(groups == g) for g in np.unique(groups)] if groups is not None
                else [None] * A)
    lengths = np.asarray([T if c is None else c.size for c in segments])
    rng = _as_generator(random_state)
    shifts = (rng.random((P, len(segments))) * lengths[None, :]).astype(np.int64)
    if isinstance(source, _RowSource) or _is_row_source(source):
        shifted = _ShiftedRows(source if isinstance(source, _RowSource) else _RowSource(source, source.dtype),
                               shifts, segments)
    else:
        shifted = _shift_rows(np.asarray(source), shifts, segments)
    if data is None:
        return shifted
    return _Data(shifted, data.mask, data.dtype, data.groups, norm_sq=data.norm_sq)


def _null_explained(data: "_Data", time_groups, ranks, entropy: int, max_iter: int, tol: float,
                    fit_kw: dict) -> np.ndarray:
    """(NULL_SHUFFLES, n) ``explained`` of one fit per rank of each shifted null copy of X."""
    out = np.empty((NULL_SHUFFLES, len(ranks)))
    kw = {key: v for key, v in fit_kw.items() if key not in ("client",)}
    for s in range(NULL_SHUFFLES):
        null = shifted_null(data, time_groups, random_state=np.random.SeedSequence(entropy, spawn_key=(0x6E756C6C, s)))
        for i, r in enumerate(ranks):
            _, info = ncp_hals(null, int(r), max_iter=max_iter, tol=tol,
                               random_state=np.random.SeedSequence(entropy, spawn_key=(0x6E756C6C, s, int(r))), **kw)
            out[s, i] = 1.0 - float(info.loss) ** 2
    return out


def _gain_per_component(ranks, explained) -> np.ndarray:
    """Explained fraction gained per added component over the previous rank (the first rank's
    own explained fraction per component)."""
    ranks, explained = np.asarray(ranks), np.asarray(explained, dtype=float)
    gain = np.empty(explained.shape)
    gain[..., 0] = explained[..., 0] / ranks[0]
    gain[..., 1:] = np.diff(explained, axis=-1) / np.diff(ranks)
    return gain


def null_gain_trend(ranks, null_explained) -> np.ndarray:
    """(n,) the null's gain per component: mean over the null copies, from the second rank of the
    sweep on smoothed by the least-squares straight line over those ranks (a chance component
    gains a little less at each rank; one fit per rank is noisy). The first rank keeps its own
    mean: its gain counts from rank 0 and holds the pairs' mean levels, which the null keeps.
    Fewer than three ranks: the means."""
    ranks = np.asarray(ranks, dtype=float)
    mean = _gain_per_component(ranks, np.atleast_2d(null_explained)).mean(axis=0)
    if len(ranks) < 3:
        return mean
    slope, intercept = np.polyfit(ranks[1:], mean[1:], 1)
    return np.concatenate([mean[:1], slope * ranks[1:] + intercept])


def _choose_rank(ranks, best_error, mean_similarity, agreement, rule, similarity_threshold, min_gain,
                 null_gain=None, null_ratio=NULL_RATIO):
    """Apply the rank rule; returns (chosen rank, eligible mask, gain per component)."""
    ranks = np.asarray(ranks)
    explained = 1.0 - np.asarray(best_error) ** 2
    gain = _gain_per_component(ranks, explained)
    if rule == "parallel-analysis":
        # the rank that maximises what the components explain beyond null_ratio x chance: every
        # component up to it gains, in sum, more than null_ratio times a null component
        # (docs/factorization.md, rank selection, rule "parallel-analysis"); the largest such rank on ties
        excess = np.asarray(null_ratio * np.asarray(null_gain), dtype=float)
        eligible = gain >= excess
        score = np.cumsum((gain - excess) * np.diff(np.concatenate([[0], ranks])))
        score = np.where(np.isfinite(score), score, -np.inf)  # a failed (NaN) fit is never chosen
        if not np.any(score > 0):
            return int(ranks[0]), eligible, gain
        best = np.flatnonzero(score >= score.max())[-1]
        return int(ranks[best]), eligible, gain
    if rule == "min-error":
        eligible = np.ones(len(ranks), dtype=bool)
        return int(ranks[int(np.argmin(best_error))]), eligible, gain
    if rule in ("stable-elbow", "stable-run"):
        # the largest rank that is (a) stable across restarts and (b) still worth its components,
        # and such that every smaller rank of the sweep was worth its components too (the error
        # curve's elbow: beyond it components only fit noise).
        stable = np.asarray(mean_similarity) >= similarity_threshold
        worth = gain >= min_gain
        eligible = stable & worth
        # Stop at the first rank whose components are no longer worth it: ranks beyond an elbow
        # that happen to gain again are noise fits.
        cutoff = len(ranks)
        for i in range(len(ranks)):
            if not worth[i]:
                cutoff = i
                break
        candidates = np.flatnonzero(eligible[:cutoff])
        if rule == "stable-run" and len(candidates):
            # only the first run of consecutive eligible ranks: a stable rank past an unstable one
            # is not taken (docs/benchmarks.md, "The excess penalty with stable-run, the default")
            breaks = np.flatnonzero(np.diff(candidates) > 1)
            if breaks.size:
                candidates = candidates[:breaks[0] + 1]
        if len(candidates):
            return int(ranks[candidates[-1]]), eligible, gain
        # Nothing passes: the most stable of the ranks before the elbow (or the smallest).
        pool = np.arange(max(cutoff, 1))
        return int(ranks[pool[np.argmax(np.asarray(mean_similarity)[pool])]]), eligible, gain
    if rule == "largest-confirmed":
        # The largest confirmed rank before the gain elbow: ambiguous and unconfirmed ranks are
        # skipped, neither chosen nor ending the sweep (docs/factorization.md: on the realistic
        # simulator the motifs get their own components only once every animal's behaviour network
        # has one, past ranks whose equally good restarts split it differently).
        confirmed = np.asarray(agreement, dtype=float) >= similarity_threshold  # NaN compares False
        worth = gain >= min_gain
        eligible = confirmed & worth
        bad = np.flatnonzero(~worth)
        cutoff = int(bad[0]) if bad.size else len(ranks)
        candidates = np.flatnonzero(eligible[:cutoff])
        if len(candidates):
            return int(ranks[candidates[-1]]), eligible, gain
        return int(ranks[max(cutoff - 1, 0)]), eligible, gain
    # reached-elbow. A rank is *confirmed* when the other restarts that reach its best fit agree
    # with it, *ambiguous* when restarts reach the same error with different factors (the fit
    # splits noise or is not unique), and unconfirmed when no other restart reaches the best (a
    # local-minimum problem of the restarts, not of the rank: skipped). The elbow: the first
    # rank that is ambiguous or not worth its components; ranks beyond it are never chosen, even
    # if they happen to agree or gain again (noise fits can). Measured on the simulator's
    # realistic presets and planted tensors, docs/factorization.md.
    agreement = np.asarray(agreement, dtype=float)
    confirmed = agreement >= similarity_threshold  # NaN (unconfirmed) compares False
    ambiguous = agreement < similarity_threshold
    worth = gain >= min_gain
    eligible = confirmed & worth
    # Ranks below the first confirmed one may be ambiguous for want of components (several
    # structures of similar weight compete for too few components): only ambiguity after a
    # confirmed rank ends the sweep.
    first = int(np.argmax(confirmed)) if confirmed.any() else len(ranks)
    ambiguous[:first] = False
    bad = np.flatnonzero(ambiguous | ~worth)
    cutoff = int(bad[0]) if bad.size else len(ranks)
    candidates = np.flatnonzero(eligible[:cutoff])
    if len(candidates):
        return int(ranks[candidates[-1]]), eligible, gain
    # Nothing confirmed before the elbow: the largest rank before it (or the smallest rank).
    return int(ranks[max(cutoff - 1, 0)]), eligible, gain


def select_rank(
    X,
    ranks,
    *,
    mask=None,
    time_groups=None,
    n_restarts=3,
    random_state=None,
    rule="stable-elbow",
    similarity="factors",
    similarity_threshold=SIMILARITY_THRESHOLD,
    min_gain=MIN_GAIN,
    null_ratio=NULL_RATIO,
    max_iter=SWEEP_MAX_ITER,
    tol=SWEEP_TOL,
    resume=None,
    checkpoint_every=None,
    on_checkpoint=None,
    checkpoint_due=None,
    on_rank: Callable[[int, RestartsResult], Any] | None = None,
    mapper: Callable | None = None,
    **fit_kw,
) -> RankSelection:
    """Fit every rank in ``ranks`` with ``n_restarts`` restarts and choose one.

    Diagnostics per rank (Williams et al., Neuron 2018): the relative error on observed entries of
    every restart, and the similarity (factor congruence) of every restart to the rank's best fit.

    Rule ``"stable-elbow"`` (default): with ``explained = 1 - best_error**2`` and
    ``gain[i] = (explained[i] - explained[i-1]) / (ranks[i] - ranks[i-1])`` (variance explained per
    added component), pick the largest rank such that

    * its restarts agree: mean similarity to the best >= ``similarity_threshold`` (0.85), and
    * it and every smaller rank of the sweep gained >= ``min_gain`` (0.002, i.e. 0.2 % of the observed
      sum of squares per added component).

    If no rank passes, the most stable rank before the elbow is chosen.

    Rule ``"stable-run"``: as ``"stable-elbow"``, but only the first run of consecutive eligible
    ranks counts (the last rank of that run is chosen): a stable rank past an unstable one is not
    taken. Unstable ranks *before* the first eligible one do not end the sweep.

    Rule ``"parallel-analysis"`` (the pipeline's default): :data:`NULL_SHUFFLES` null copies of X
    (:func:`shifted_null`: every pair's course circularly shifted by its own lag in each animal)
    are fitted once per rank with the sweep's settings; their gain per component, averaged and
    smoothed (:func:`null_gain_trend`), is ``null_gain``. The rank chosen maximises
    ``Σ_{k ≤ r} (gain[k] − null_ratio · null_gain[k]) · Δrank`` (the smallest rank when no sum is
    positive); restart similarity and ``min_gain`` play no part. Dense tensors with little noise
    are its weak case (the null keeps the pairs' mean levels): use ``"stable-elbow"`` there.

    Rule ``"reached-elbow"`` (issue 11; ``agreement`` is computed for every rule): the restarts
    that *reach* a rank's best fit are those explaining within ``min_gain / 2`` of it; pick the
    largest rank such that

    * it is confirmed: those restarts agree with the best, mean similarity >= ``similarity_threshold``;
    * no rank from the first confirmed one up to it is ambiguous (restarts reach the best error
      with a mean similarity below the threshold: noise fits or a non-unique factorization), and
    * it and every smaller rank gained >= ``min_gain``.

    A rank whose best fit no other restart reaches is skipped. If no rank passes, the largest rank
    before the first ambiguous or unworthy one is chosen.

    Rule ``"largest-confirmed"``: the largest confirmed rank before the gain elbow (ambiguous and
    unconfirmed ranks are skipped, never end the sweep).

    Rule ``"min-error"`` picks the lowest error (for comparison; it always favours the largest rank).

    ``similarity``: what restarts are compared on. ``"factors"`` (default): :func:`factor_congruence`
    of the fitted factors. ``"observed"``: :func:`observed_congruence`, the pair loadings weighed by
    their evidence first, so loadings the data leave free (pairs not recorded where a component
    lives) do not count. ``similarity`` in the result holds the one used.

    Affordability: the sweep runs each fit with ``max_iter`` (200) and a loose ``tol`` (1e-4),
    enough to rank the errors and compare restarts; refine the chosen rank's ``best_fits`` entry
    with ``ncp_hals(..., init=best_fit)`` instead of refitting from scratch.
    Seeds: rank r's restarts derive from ``SeedSequence(entropy, spawn_key=(r,))``, so adding a
    rank to the sweep does not change the others' fits.

    Checkpoints: state format ``dynconn.ntf.select/1`` with the finished ranks' diagnostics and the
    running rank's restarts state under ``"current"``; ``resume=state`` continues. Emitted at the
    running fits' checkpoints (``checkpoint_every`` or ``checkpoint_due``), after each rank, and
    always once when the sweep is finished (``rank_index == len(ranks)``): resuming from that
    state returns the finished selection at once, so a caller that fits further can keep it.

    ``mapper`` (see :func:`ncp_restarts`): every fit of the sweep (each rank's restarts) is one
    independent task, all sent at once; the same seeds, so the same selection. ``on_rank`` is
    called in rank order as each rank's restarts are all in; checkpoints record the finished
    ranks and the next rank's finished restarts ``0..k-1``.
    """
    if rule not in _RULES:
        raise ValueError(f"rule must be one of {_RULES}, got {rule!r}")
    if similarity not in _SIMILARITIES:
        raise ValueError(f"similarity must be one of {_SIMILARITIES}, got {similarity!r}")
    try:
        ranks_list = [_check_rank(r) for r in ranks]
    except TypeError as exc:
        raise ValueError("ranks must be a sequence of positive integers") from exc
    if not ranks_list:
        raise ValueError("ranks must not be empty")
    ranks_arr = np.unique(ranks_list)
    n_restarts = check_int("n_restarts", n_restarts, low=1)
    null_ratio = check_number("null_ratio", null_ratio, low=0)
    dtype = _check_dtype(fit_kw.get("dtype", "float32"))
    penalty = check_number("unobserved_penalty", fit_kw.get("unobserved_penalty", 0.0), low=0)
    data = _as_data(X, mask, dtype, time_groups)  # validate (and upload) X once for the whole sweep
    n, k = len(ranks_arr), int(n_restarts)

    if resume is not None:
        if not isinstance(resume, Mapping) or resume.get("format") != SELECT_STATE_FORMAT:
            raise ValueError(f"resume must be a checkpoint state of format {SELECT_STATE_FORMAT!r}")
        if not np.array_equal(np.asarray(resume["ranks"]), ranks_arr) or int(resume["n_restarts"]) != k:
            raise ValueError("checkpoint was made for another set of ranks or number of restarts")
        _check_penalty_state(resume, penalty)
        entropy = int(resume["seed_entropy"])
        n_done = int(resume["rank_index"])
        arrays = {name: np.array(resume[name]) for name in ("errors", "similarity", "n_iter", "seconds", "converged", "best_index")}
        best_fits = [
            _cp_tensor(np.asarray(resume[f"best_{i}_weights"], dtype=np.float64),
                       [np.asarray(resume[f"best_{i}_{m}"], dtype=dtype) for m in MODE_NAMES])
            for i in range(n_done)
        ]
        current = resume.get("current")
    else:
        entropy, _ = _root_seed(random_state)
        n_done = 0
        arrays = {
            "errors": np.full((n, k), np.nan), "similarity": np.full((n, k), np.nan),
            "n_iter": np.zeros((n, k), np.int64), "seconds": np.zeros((n, k)),
            "converged": np.zeros((n, k), bool), "best_index": np.zeros(n, np.int64),
        }
        best_fits = []
        current = None

    def state(i, inner):
        s = {"format": SELECT_STATE_FORMAT, "ranks": ranks_arr.copy(), "n_restarts": k,
             "seed_entropy": int(entropy), "rank_index": int(i), "unobserved_penalty": float(penalty)}
        s.update({name: a.copy() for name, a in arrays.items()})
        for j, cp in enumerate(best_fits):
            s[f"best_{j}_weights"] = np.asarray(cp[0])
            for m, f in zip(MODE_NAMES, cp[1]):
                s[f"best_{j}_{m}"] = np.asarray(f)
        if inner is not None:
            s["current"] = inner
        return s

    def restart_similarity(res) -> np.ndarray:
        """Each restart's similarity to the rank's best: ``res.similarity`` (the factors), or
        with ``similarity="observed"`` the congruence on what the data determine."""
        if similarity == "factors" or data.mask is None:
            return np.asarray(res.similarity)
        best = res.fits[res.best_index]
        return np.asarray([1.0 if j == res.best_index else observed_congruence(best, cp, data.mask, data.groups)
                           for j, cp in enumerate(res.fits)])

    if mapper is not None:
        if data.out_of_core:
            raise ValueError("mapper= sends X to every task: it needs X in memory (out of core, use client=)")
        init = fit_kw.get("init", "random")
        task_kw = {**_task_kw({key: v for key, v in fit_kw.items() if key != "init"}), "max_iter": max_iter,
                   "tol": tol}
        checkpointing = on_checkpoint is not None and bool(checkpoint_every or checkpoint_due)
        tasks, finished = [], {}  # finished[i]: rank i's restarts in, by restart index
        for i in range(n_done, n):
            r = int(ranks_arr[i])
            prefix = _unpack_restarts(current, r, dtype) if (i == n_done and current is not None) else []
            partial = current.get("current") if (i == n_done and current is not None) else None
            finished[i] = dict(enumerate(prefix))
            tasks += [(r, j, _restart_init(init, j), restart_seed(entropy, j, (r,)),
                       partial if j == len(prefix) else None) for j in range(len(prefix), k)]
        index_of = {int(r): i for i, r in enumerate(ranks_arr)}
        progress = {"next": n_done}

        def prefix_of(i):
            out = []
            while len(out) in finished[i]:
                out.append(finished[i][len(out)])
            return out

        def sweep_state():
            i = progress["next"]
            inner = None
            if i < n:
                r = int(ranks_arr[i])
                inner = _restarts_state(entropy, (r,), k, r, prefix_of(i), None, penalty)
            return state(i, inner)

        def mark():  # what a checkpoint would record: finished ranks, the next rank's finished restarts
            i = progress["next"]
            return i, (len(prefix_of(i)) if i < n else 0)

        def on_result(t, result):
            r, j = tasks[t][0], tasks[t][1]
            before = mark()
            finished[index_of[r]][j] = {"cp": result[0], "info": result[1]}
            while progress["next"] < n and len(finished[progress["next"]]) == k:
                i = progress["next"]
                res = _restarts_result([finished[i][j] for j in range(k)], entropy, (int(ranks_arr[i]),))
                for name in ("errors", "similarity", "n_iter", "seconds", "converged"):
                    arrays[name][i] = getattr(res, "losses" if name == "errors" else name)
                arrays["similarity"][i] = restart_similarity(res)
                arrays["best_index"][i] = res.best_index
                best_fits.append(res.cp)
                progress["next"] = i + 1
                if on_rank is not None:
                    on_rank(int(ranks_arr[i]), res)
            if checkpointing and mark() != before and (progress["next"] == n or _due(checkpoint_every, checkpoint_due)):
                on_checkpoint(sweep_state())

        def tick():
            if checkpointing and checkpoint_due is not None and progress["next"] < n and checkpoint_due():
                on_checkpoint(sweep_state())

        mapper(_restart_task, tasks, shared={"data": data, "fit_kw": task_kw}, on_result=on_result, tick=tick)
        n_done = n  # every rank is in: the loop below has nothing left

    for i in range(n_done, n):
        r = int(ranks_arr[i])
        res = ncp_restarts(
            data, r, n_restarts=k, random_state=np.random.SeedSequence(entropy, spawn_key=(r,)),
            resume=current, checkpoint_every=checkpoint_every, checkpoint_due=checkpoint_due,
            on_checkpoint=(lambda inner, i=i: on_checkpoint(state(i, inner))) if on_checkpoint else None,
            max_iter=max_iter, tol=tol, **fit_kw,
        )
        current = None
        arrays["errors"][i] = res.losses
        arrays["similarity"][i] = restart_similarity(res)
        arrays["n_iter"][i] = res.n_iter
        arrays["seconds"][i] = res.seconds
        arrays["converged"][i] = res.converged
        arrays["best_index"][i] = res.best_index
        best_fits.append(res.cp)
        if on_rank is not None:
            on_rank(r, res)
        if on_checkpoint is not None and (checkpoint_every or checkpoint_due) and (
                i + 1 == n or _due(checkpoint_every, checkpoint_due)):
            on_checkpoint(state(i + 1, None))

    errors = arrays["errors"]
    best_error = np.nanmin(errors, axis=1)
    sim = arrays["similarity"]
    if k > 1:
        others = np.ones_like(sim, dtype=bool)
        others[np.arange(n), arrays["best_index"]] = False
        mean_similarity = np.asarray([sim[i][others[i]].mean() for i in range(n)])
    else:
        mean_similarity = np.ones(n)
    # reaching the best = explaining within half the smallest worthwhile component of it
    agreement = _agreement(errors, sim, arrays["best_index"], min_gain / 2)
    null_explained = null_gain = None
    if rule == "parallel-analysis":
        # one fit per rank of each shifted copy, with the sweep's settings (not checkpointed: a
        # resumed sweep refits them, the same seeds giving the same fits)
        null_explained = _null_explained(data, time_groups, ranks_arr, entropy, max_iter, tol, fit_kw)
        null_gain = null_gain_trend(ranks_arr, null_explained)
    chosen, eligible, gain = _choose_rank(ranks_arr, best_error, mean_similarity, agreement, rule,
                                          similarity_threshold, min_gain, null_gain, null_ratio)
    return RankSelection(
        rank=chosen,
        rule=rule,
        ranks=ranks_arr.astype(np.int64),
        errors=errors,
        best_error=best_error,
        explained=1.0 - best_error**2,
        gain=gain,
        similarity=sim,
        mean_similarity=mean_similarity,
        agreement=agreement,
        n_iter=arrays["n_iter"],
        seconds=arrays["seconds"],
        converged=arrays["converged"],
        best_index=arrays["best_index"],
        eligible=eligible,
        best_fits=best_fits,
        null_explained=null_explained,
        null_gain=null_gain,
        rule_params={"similarity": similarity, "similarity_threshold": float(similarity_threshold),
                     "min_gain": float(min_gain), "null_ratio": float(null_ratio),
                     "max_iter": int(max_iter), "tol": float(tol), "n_restarts": k},
    )

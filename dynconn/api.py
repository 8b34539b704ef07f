"""The Python API: the method's steps on arrays, and whole runs, for notebooks and scripts.

Every function here is a thin layer over the code the pipeline runs (the same functions, the
same defaults): :mod:`dynconn.stages.affinity` for the affinities, :mod:`dynconn.methods.ntf` for the
factorization, :mod:`dynconn.methods.wsbm` for the communities, :mod:`dynconn.runner.pipeline` and
:mod:`dynconn.stages.report` for runs. Keyword arguments are checked against the config keys they
correspond to (:func:`dynconn.config.check_argument`): the same limits, and the same
sentence, as in a config file. A bad argument raises
:class:`~dynconn.validation.InvalidArgument` (a ``ValueError``) naming it.

Names: the library uses scikit-learn's names where the config uses shorter ones, with the
same defaults (docs/api.md, "Names and defaults"):

==========================  =====================  =======
config key                  keyword                default
==========================  =====================  =======
``factorize.seed``          ``random_state``       0
``factorize.restarts``      ``n_restarts``         5
``communities.seed``        ``random_state``       0
``communities.n_runs``      ``n_runs``             3
==========================  =====================  =======
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .config import SCHEMA, check_argument
from .validation import InvalidArgument

__all__ = ["differential_affinity", "affinity_tensor", "NonNegativeCP", "select_rank", "partition",
           "run", "load_run", "Run"]


def _default(section: str, key: str):
    return SCHEMA[section][key].default


def _required_number(section: str, key: str, value, name: str | None = None) -> float:
    if value is None:
        raise InvalidArgument(f"{name or key}: a value is required")
    return check_argument(section, key, value, name)


def _as_traces(name: str, traces) -> np.ndarray:
    x = np.asarray(traces, dtype=np.float64) if not hasattr(traces, "to_numpy") else \
        traces.to_numpy(dtype=np.float64)
    if x.ndim != 2:
        raise InvalidArgument(f"{name}: expected a 2-D array (neurons, frames), got shape {x.shape}")
    if x.shape[0] < 2:
        raise InvalidArgument(f"{name}: expected at least 2 neurons (rows), got {x.shape[0]}")
    return x


# ----------------------------------------------------------------------------- affinity
def differential_affinity(traces, sampling_rate: float, *,
                          bin_seconds: float = _default("affinity", "bin_seconds"),
                          smooth_seconds: float = _default("affinity", "smooth_seconds"),
                          noise_threshold: float = _default("affinity", "noise_threshold"),
                          shared_level: float = _default("affinity", "shared_level"),
                          lag_seconds: float = _default("affinity", "lag_seconds"),
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Differential affinity of every pair of neurons of one recording, per time bin.

    Each neuron's smoothed rate of change is scaled by its own noise level and
    soft-thresholded (and spread over ±``lag_seconds``/2); a pair's affinity in a frame is the
    geometric mean of the two changes when they have the same sign, else 0, averaged over each
    bin, then taken above the bin's shared level (formulas in docs/method.md).

    Parameters
    ----------
    traces : array_like, shape (N, F)
        One row per neuron, one column per frame (normalised traces, e.g. ΔF/F; the affinity
        does not change under a per-neuron ``a·x + b`` with ``a > 0``). NaN frames count as no
        change.
    sampling_rate : float
        Frames per second, Hz.
    bin_seconds : float, default 5.0
        Width of the time bins, s (``affinity.bin_seconds``).
    smooth_seconds : float, default 0.5
        SD of the Gaussian derivative filter, s (``affinity.smooth_seconds``).
    noise_threshold : float, default 1.0
        Changes below this many noise SDs count as no change (``affinity.noise_threshold``).
    shared_level : float, default 0.5
        Each bin's affinities are taken above this quantile of the bin's affinities over all
        pairs, ``max(a − level, 0)``: co-activation most pairs share at once (a motion artefact)
        is not evidence about any pair (``affinity.shared_level``; 0 = none). Needs at least 10
        neurons; with fewer the affinities are left as they are.
    lag_seconds : float, default 0.0
        Changes of two neurons up to this far apart count as together: each neuron's change is
        replaced by its maximum over ±``lag_seconds``/2 (rounded to frames) before the product
        (``affinity.lag_seconds``; 0 = the instantaneous product).

    Returns
    -------
    affinity : ndarray, shape (P, T), float32
        ``P = N(N−1)/2`` pairs, ``T = F // round(bin_seconds · sampling_rate)`` complete bins;
        in noise SDs, ≥ 0.
    pairs : ndarray, shape (P, 2), int32
        Row indices ``i < j`` of each pair, in row-major upper-triangle order.

    Examples
    --------
    Neurons 0 and 1 share their calcium transients (1 has twice the size and an offset);
    neuron 2 has its own (100 s at 4 Hz):

    >>> import numpy as np, dynconn
    >>> rng = np.random.default_rng(0)
    >>> kernel = np.exp(-np.arange(20) / 4)                       # a transient's decay
    >>> shared = np.convolve(rng.random(400) < 0.03, kernel)[:400]
    >>> own = np.convolve(rng.random(400) < 0.03, kernel)[:400]
    >>> traces = np.vstack([shared, 2 * shared + 1, own]) + 0.01 * rng.normal(size=(3, 400))
    >>> A, pairs = dynconn.differential_affinity(traces, 4.0, bin_seconds=10)
    >>> A.shape, pairs.tolist()
    ((3, 10), [[0, 1], [0, 2], [1, 2]])
    >>> bool(A[0].mean() > 5 * A[1:].mean(axis=1).max())   # pair (0, 1) changes together
    True
    """
    from .stages.affinity import check_binning, compute_affinity, pair_index

    x = _as_traces("traces", traces)
    rate = _required_number("data", "sampling_rate", sampling_rate, "sampling_rate")
    bin_seconds = check_argument("affinity", "bin_seconds", bin_seconds)
    smooth_seconds = check_argument("affinity", "smooth_seconds", smooth_seconds)
    noise_threshold = check_argument("affinity", "noise_threshold", noise_threshold)
    shared_level = check_argument("affinity", "shared_level", shared_level)
    lag_seconds = check_argument("affinity", "lag_seconds", lag_seconds)
    n, f = x.shape
    check_binning([f], rate, f, "aligned", ["traces"], bin_seconds, smooth_seconds)
    values = compute_affinity(x, sampling_rate=rate, method="differential", bin_seconds=bin_seconds,
                              smooth_seconds=smooth_seconds, noise_threshold=noise_threshold,
                              shared_level=shared_level, lag_seconds=lag_seconds)
    return values, pair_index(n)


def _animal_traces(animal: str, item) -> tuple[list[str], np.ndarray]:
    """(neuron names, (N, F) traces) of one animal: a DataFrame (columns = neuron names, rows
    = frames, as a trace CSV) or a pair ``(names, traces (N, F))``."""
    where = f"animals[{animal!r}]"
    if hasattr(item, "columns") and hasattr(item, "to_numpy"):
        names = [str(c) for c in item.columns]
        x = item.to_numpy(dtype=np.float64).T
    elif isinstance(item, (tuple, list)) and len(item) == 2:
        names = [str(c) for c in item[0]]
        x = np.asarray(item[1], dtype=np.float64)
    else:
        raise InvalidArgument(f"{where}: expected a DataFrame (columns = neuron names, rows = frames) "
                              f"or a pair (names, traces of shape (neurons, frames)); got {type(item).__name__}")
    if x.ndim != 2 or x.shape[0] != len(names):
        raise InvalidArgument(f"{where}: {len(names)} names for traces of shape {x.shape}; expected "
                              f"({len(names)}, frames)")
    seen = set()
    for name in names:
        if name in seen:
            raise InvalidArgument(f"{where}: neuron {name!r} appears twice")
        seen.add(name)
    return names, x


def affinity_tensor(animals: Mapping[str, Any], sampling_rate: float, *,
                    layout: str = _default("data", "layout"),
                    method: str = _default("affinity", "method"),
                    bin_seconds: float = _default("affinity", "bin_seconds"),
                    smooth_seconds: float = _default("affinity", "smooth_seconds"),
                    noise_threshold: float = _default("affinity", "noise_threshold"),
                    window_seconds: float = _default("affinity", "window_seconds"),
                    shared_level: float = _default("affinity", "shared_level"),
                    lag_seconds: float = _default("affinity", "lag_seconds"),
                    start_s: float = 0.0):
    """The pairs × time bins × animals affinity tensor of several animals, with its mask.

    Animals are aligned on neuron names (the sorted union of every animal's names); a pair
    is observed in an animal when both its neurons were recorded there. This is the
    ``affinity`` stage's own assembly (:func:`dynconn.stages.affinity.stack_affinity`), without files.

    Parameters
    ----------
    animals : mapping of str to DataFrame or (names, traces)
        Animal name → its traces: a pandas DataFrame whose columns are neuron names and rows
        frames (a trace CSV as read by ``pandas.read_csv``), or a pair ``(names, traces)`` with
        ``traces`` of shape (N_a, F_a). Traces are used as given (normalise them first if they
        need it; the pipeline's ``ingest`` stage does).
    sampling_rate : float
        Frames per second of every animal, Hz.
    layout : {"aligned", "concatenated"}, default "aligned"
        ``aligned``: every animal follows one protocol clock and has the same number of frames;
        tensor (P, T, A). ``concatenated``: each animal keeps its own clock and length;
        tensor (P, T_total, 1) with every animal's bins one after another (docs/layouts.md).
    method : {"differential", "mtd", "window-corr"}, default "differential"
    bin_seconds, smooth_seconds, noise_threshold, window_seconds, shared_level, lag_seconds : float
        As the config keys ``affinity.*`` (s, s, noise SDs, s, a quantile, s); same defaults.
    start_s : float, default 0
        Time of frame 0, s (shifts ``time``).

    Returns
    -------
    AffinityTensor
        ``affinity`` float32 (P, T, A) or (P, T_total, 1); ``mask`` bool (P, A); ``pairs``
        int32 (P, 2); ``neurons`` (N) and ``animals`` (A) names; ``time`` (T) bin centres, s;
        ``time_animal`` int32 (T_total) the animal of each bin when concatenated, else None
        (also as ``time_groups``, what :class:`NonNegativeCP` takes); ``layout``.

    Examples
    --------
    >>> import numpy as np, pandas as pd, dynconn
    >>> rng = np.random.default_rng(1)
    >>> worm1 = pd.DataFrame(rng.normal(size=(200, 3)), columns=["AVAL", "AVAR", "RIML"])
    >>> worm2 = (["AVAL", "RIML"], rng.normal(size=(2, 200)))   # AVAR not recorded
    >>> tensor = dynconn.affinity_tensor({"worm1": worm1, "worm2": worm2}, 4.0, bin_seconds=10)
    >>> tensor.affinity.shape, tensor.neurons
    ((3, 5, 2), ['AVAL', 'AVAR', 'RIML'])
    >>> tensor.pairs.tolist(), tensor.mask.tolist()
    ([[0, 1], [0, 2], [1, 2]], [[True, False], [True, True], [True, False]])
    >>> tensor.time.tolist()   # bin centres, s
    [4.875, 14.875, 24.875, 34.875, 44.875]
    """
    from .stages.affinity import stack_affinity
    from .stages.ingest import align_animals

    if not isinstance(animals, Mapping) or not animals:
        raise InvalidArgument("animals: expected a non-empty mapping of animal name to traces")
    rate = _required_number("data", "sampling_rate", sampling_rate, "sampling_rate")
    layout = check_argument("data", "layout", layout)
    method = check_argument("affinity", "method", method)
    p = {k: check_argument("affinity", k, v) for k, v in (
        ("bin_seconds", bin_seconds), ("smooth_seconds", smooth_seconds),
        ("noise_threshold", noise_threshold), ("window_seconds", window_seconds),
        ("shared_level", shared_level), ("lag_seconds", lag_seconds))}
    start_s = check_argument("ingest", "start_s", start_s)
    names, traces = [], []
    for animal, item in animals.items():
        n, x = _animal_traces(str(animal), item)
        names.append(n)
        traces.append(x)
    lengths = [x.shape[1] for x in traces]
    if layout == "aligned" and len(set(lengths)) > 1:
        raise InvalidArgument(f"animals: the aligned layout needs recordings of one length, got "
                              f"{', '.join(f'{a}: {n} frames' for a, n in zip(animals, lengths))}; "
                              "crop them or use layout='concatenated'")
    neurons, present, stacked = align_animals(names, traces)
    return stack_affinity(stacked, present, sampling_rate=rate, neurons=neurons,
                          animals=[str(a) for a in animals], n_frames=lengths, layout=layout,
                          method=method, start_s=start_s or 0.0, **p)


# ----------------------------------------------------------------------------- factorization
def _tensor_parts(X, mask, time_groups):
    """X, mask and time groups of an array or an AffinityTensor (whose own mask and groups are
    used unless given)."""
    if hasattr(X, "affinity") and hasattr(X, "mask"):
        mask = X.mask if mask is None else mask
        time_groups = X.time_animal if time_groups is None else time_groups
        X = X.affinity
    return X, mask, time_groups


class NonNegativeCP:
    """Non-negative CP decomposition of a pairs × time × animals tensor (scikit-learn style).

    ``X[p, t, a] ≈ Σ_r weights[r] · pairs[p, r] · time[t, r] · animals[a, r]``, every factor
    non-negative, fitted by masked HALS on the observed entries only (docs/factorization.md);
    ``n_restarts`` fits from independent random starts, the lowest loss kept. The same solver,
    seeds and defaults as the ``factorize`` stage with a fixed rank
    (:func:`dynconn.methods.ntf.ncp_restarts`): with the same arguments, the same factors.

    Parameters
    ----------
    rank : int
        Number of components R ≥ 1 (choose it with :func:`select_rank`).
    random_state : int or None, default 0
        Seed of the restarts (config ``factorize.seed``); None = fresh entropy.
    n_restarts : int, default 5
        Restarts (config ``factorize.restarts``).
    max_iter : int, default 500
        Maximum iterations per fit.
    tol : float, default 1e-6
        Stop when the relative loss change falls below this.
    init : {"random", "nndsvd"}, default "random"
    backend : {"numpy", "pytorch"}, default "numpy"
    method : {"hals", "tensorly-hals"}, default "hals"
    unobserved_penalty : float, default 0.1
        Config ``factorize.unobserved_penalty``: weight, as zeros, of the entries where a pair was
        not recorded, counting the component's energy there beyond its energy where the pair was
        recorded, on the diagonal of the pair's Gram (docs/factorization.md); 0 = ignored.
    time_courses : {"per_animal", "shared"}, default "per_animal"
        Config ``factorize.time_courses``. ``per_animal``: each component has its own time course
        in each animal (X fitted as (P, A·T) with the mask per animal); ``factors_`` are then
        each component's best rank-one time × animal summary on the recorded entries (each
        animal weighed by the share of the component's pairs recorded there;
        ``dynconn.methods.merging.fold_animals``) and ``time_by_animal_`` the fitted courses.
        ``shared``: the CP model above. No effect with ``time_groups`` (already per animal).

    Attributes
    ----------
    cp_ : tensorly.cp_tensor.CPTensor
        ``(weights_, factors_)``.
    time_by_animal_ : ndarray, shape (A, T, R), or None
        ``per_animal``: component r's course in animal a, ``weights_[r] · time_by_animal_[:, :, r]``
        its fitted time × animal slab; None otherwise.
    weights_ : ndarray, shape (R,)
        Component weights, descending.
    factors_ : list of ndarray
        ``[pairs (P, R), time (T, R), animals (A, R)]``, each column of unit L2 norm.
    loss_history_ : ndarray, shape (n_iter_,)
        Relative error on observed entries ``‖M∘(X − X̂)‖ / ‖M∘X‖`` after each iteration of the
        kept fit.
    n_iter_ : int
        Iterations of the kept fit.
    loss_ : float
        Its final relative error.
    result_ : dynconn.methods.ntf.RestartsResult
        Every restart's diagnostics (losses, similarity to the best, ...).

    Examples
    --------
    A planted rank-2 tensor (6 pairs, 8 bins, 3 animals) is recovered to rounding:

    >>> import numpy as np, dynconn
    >>> rng = np.random.default_rng(0)
    >>> U, V, W = rng.random((6, 2)), rng.random((8, 2)), rng.random((3, 2))
    >>> X = np.einsum("pr,tr,ar->pta", U, V, W)
    >>> model = dynconn.NonNegativeCP(2, random_state=0, n_restarts=2, max_iter=2000, tol=1e-9).fit(X)
    >>> model.weights_.shape, [f.shape for f in model.factors_]
    ((2,), [(6, 2), (8, 2), (3, 2)])
    >>> bool(model.loss_ < 1e-3)   # relative error; float32 products resolve ~1e-5
    True
    >>> model.n_iter_ == len(model.loss_history_)
    True
    """

    def __init__(self, rank: int, *, random_state=_default("factorize", "seed"),
                 n_restarts: int = _default("factorize", "restarts"),
                 max_iter: int = _default("factorize", "max_iter"), tol: float = _default("factorize", "tol"),
                 init: str = _default("factorize", "init"), backend: str = _default("factorize", "backend"),
                 method: str = _default("factorize", "method"),
                 unobserved_penalty: float = _default("factorize", "unobserved_penalty"),
                 time_courses: str = _default("factorize", "time_courses")):
        self.rank = rank
        self.random_state = random_state
        self.n_restarts = n_restarts
        self.max_iter = max_iter
        self.tol = tol
        self.init = init
        self.backend = backend
        self.method = method
        self.unobserved_penalty = unobserved_penalty
        self.time_courses = time_courses
        self._checked()  # fail at construction, not after loading the data

    def _checked(self) -> dict:
        from .validation import check_int, check_seed

        return {
            "rank": check_int("rank", self.rank, low=1),
            "random_state": check_seed("random_state", self.random_state),
            "n_restarts": check_argument("factorize", "restarts", self.n_restarts, "n_restarts"),
            "max_iter": check_argument("factorize", "max_iter", self.max_iter),
            "tol": check_argument("factorize", "tol", self.tol),
            "init": check_argument("factorize", "init", self.init),
            "backend": check_argument("factorize", "backend", self.backend),
            "method": check_argument("factorize", "method", self.method),
            "unobserved_penalty": check_argument("factorize", "unobserved_penalty", self.unobserved_penalty),
            "time_courses": check_argument("factorize", "time_courses", self.time_courses),
        }

    def get_params(self, deep: bool = True) -> dict:
        """The constructor's arguments (scikit-learn's estimator protocol)."""
        return {k: getattr(self, k) for k in ("rank", "random_state", "n_restarts", "max_iter", "tol",
                                              "init", "backend", "method", "unobserved_penalty", "time_courses")}

    def set_params(self, **params) -> NonNegativeCP:
        for k, v in params.items():
            if k not in self.get_params():
                raise InvalidArgument(f"{k}: not a parameter of NonNegativeCP")
            setattr(self, k, v)
        self._checked()
        return self

    def __repr__(self) -> str:
        return "NonNegativeCP(" + ", ".join(f"{k}={v!r}" for k, v in self.get_params().items()) + ")"

    def fit(self, X, mask=None, *, time_groups=None, client=None) -> NonNegativeCP:
        """Fit the model; returns ``self``.

        Parameters
        ----------
        X : array_like, shape (P, T, A), non-negative; or an AffinityTensor
            (from :func:`affinity_tensor`, whose mask and time groups are then used).
        mask : bool array, shape (P, A), optional
            True where pair p was recorded in animal a (at every time); None = all observed.
        time_groups : int array, shape (T,), optional
            Concatenated layout (X of shape (P, T, 1)): the animal of each bin; entry (p, t)
            counts iff ``mask[p, time_groups[t]]``.
        client : dask.distributed.Client, optional
            Run each iteration's pass over the blocks of pairs on its workers (numpy backend;
            the factors equal the local fit's to float32 rounding; see ``ntf.ncp_hals``).
        """
        from tensorly.cp_tensor import CPTensor

        from .methods import ntf
        from .methods.merging import fits_per_animal, fold_sorted, observed_mass, prepare_unfolded

        p = self._checked()
        X, mask, time_groups = _tensor_parts(X, mask, time_groups)
        per_animal = fits_per_animal(p["time_courses"], time_groups)
        if per_animal:
            X, time_groups = prepare_unfolded(X, mask)
            n_animals = int(np.max(time_groups)) + 1
        result = ntf.ncp_restarts(X, p["rank"], mask=mask, time_groups=time_groups,
                                  n_restarts=p["n_restarts"], random_state=p["random_state"], init=p["init"],
                                  max_iter=p["max_iter"], tol=p["tol"], backend=p["backend"],
                                  method=p["method"], unobserved_penalty=p["unobserved_penalty"],
                                  **({"client": client} if client is not None else {}))
        self.result_ = result
        self.cp_, self.time_by_animal_ = result.cp, None
        if per_animal:
            order, weights, time_f, animal_f, self.time_by_animal_ = fold_sorted(
                result.cp.weights, result.cp.factors[1], n_animals, observed_mass(result.cp.factors[0], mask))
            self.cp_ = CPTensor((weights, [result.cp.factors[0][:, order], time_f, animal_f]))
        self.weights_, self.factors_ = self.cp_.weights, list(self.cp_.factors)
        self.loss_history_ = np.asarray(result.info.loss_history)
        self.n_iter_ = int(result.info.n_iter)
        self.loss_ = float(result.info.loss)
        return self

    def fit_transform(self, X, mask=None, *, time_groups=None):
        """``fit(...)`` and return ``cp_``."""
        return self.fit(X, mask, time_groups=time_groups).cp_


def select_rank(X, ranks, mask=None, *, time_groups=None,
                n_restarts: int = _default("factorize", "restarts"),
                random_state=_default("factorize", "seed"),
                max_iter: int = _default("factorize", "sweep_max_iter"),
                tol: float = _default("factorize", "sweep_tol"),
                similarity_threshold: float = _default("factorize", "similarity_threshold"),
                min_gain: float = _default("factorize", "min_gain"),
                null_ratio: float = _default("factorize", "null_ratio"),
                rule: str = _default("factorize", "rank_rule"),
                init: str = _default("factorize", "init"), backend: str = _default("factorize", "backend"),
                unobserved_penalty: float = _default("factorize", "unobserved_penalty"),
                time_courses: str = _default("factorize", "time_courses")):
    """Choose the number of components from a rank sweep (the stage's ``rank: auto``).

    Fits every rank in ``ranks`` ``n_restarts`` times and, by default (the "parallel-analysis"
    rule, docs/factorization.md), picks the rank whose components explain the most beyond
    ``null_ratio`` times what components explain on a null copy of X in which every pair's time
    course is circularly shifted by its own lag in each animal (one fit per rank of each of two
    copies). The same function as the stage (:func:`dynconn.methods.ntf.select_rank`) with the
    stage's defaults.

    Parameters
    ----------
    X : array_like (P, T, A) or AffinityTensor
    ranks : sequence of int
        Ranks to try, e.g. ``range(2, 11)``.
    mask, time_groups : as :meth:`NonNegativeCP.fit`
    n_restarts : int, default 5
        Restarts per rank (config ``factorize.restarts``).
    random_state : int or None, default 0
        Config ``factorize.seed``.
    max_iter, tol : default 200, 1e-4
        Of each fit of the sweep (config ``factorize.sweep_max_iter``, ``sweep_tol``).
    similarity_threshold, min_gain : float, default 0.85, 0.002
        Of the rules "stable-run", "stable-elbow", "reached-elbow", "largest-confirmed".
    null_ratio : float, default 1.5
        Of the rule "parallel-analysis" (config ``factorize.null_ratio``).
    rule : {"parallel-analysis", "stable-run", "stable-elbow", "reached-elbow", "largest-confirmed"}
        Config ``factorize.rank_rule``, default "parallel-analysis".
    init, backend, unobserved_penalty, time_courses : as :class:`NonNegativeCP` (``per_animal``:
        the sweep's fits are of the unfolded tensor (P, A·T, 1), each animal's bins in turn)

    Returns
    -------
    dynconn.methods.ntf.RankSelection
        ``rank`` (the choice), ``ranks``, ``errors`` (n, n_restarts), ``explained``, ``gain``,
        ``mean_similarity``, ``eligible``, ``best_fits`` (one CPTensor per rank) and more.

    Examples
    --------
    >>> import numpy as np, dynconn
    >>> rng = np.random.default_rng(0)
    >>> U = np.zeros((40, 2)); U[:15, 0] = 1; U[20:35, 1] = 1   # two groups of pairs,
    >>> V = np.zeros((60, 2)); V[5:15, 0] = 1; V[30:40, 1] = 1  # each active in its own bins
    >>> X = np.einsum("pr,tr,ar->pta", U, V, np.ones((3, 2))) + rng.exponential(0.1, (40, 60, 3))
    >>> sel = dynconn.select_rank(X, [1, 2, 3, 4], n_restarts=2, max_iter=300)
    >>> int(sel.rank), sel.ranks.tolist()
    (2, [1, 2, 3, 4])
    """
    from .methods import ntf

    from .methods.merging import fits_per_animal, prepare_unfolded
    from .validation import check_seed

    X, mask, time_groups = _tensor_parts(X, mask, time_groups)
    if fits_per_animal(check_argument("factorize", "time_courses", time_courses), time_groups):
        X, time_groups = prepare_unfolded(X, mask)
    return ntf.select_rank(
        X, list(ranks), mask=mask, time_groups=time_groups,
        n_restarts=check_argument("factorize", "restarts", n_restarts, "n_restarts"),
        random_state=check_seed("random_state", random_state),
        max_iter=check_argument("factorize", "sweep_max_iter", max_iter, "max_iter"),
        tol=check_argument("factorize", "sweep_tol", tol, "tol"),
        similarity_threshold=check_argument("factorize", "similarity_threshold", similarity_threshold),
        min_gain=check_argument("factorize", "min_gain", min_gain),
        null_ratio=check_argument("factorize", "null_ratio", null_ratio),
        rule=check_argument("factorize", "rank_rule", rule, "rule"),
        init=check_argument("factorize", "init", init), backend=check_argument("factorize", "backend", backend),
        unobserved_penalty=check_argument("factorize", "unobserved_penalty", unobserved_penalty))


# ----------------------------------------------------------------------------- communities
def partition(W, *, method: str = _default("communities", "method"),
              random_state=_default("communities", "seed"),
              n_runs: int = _default("communities", "n_runs"),
              resolution: float = _default("communities", "resolution"),
              level: int = _default("communities", "level")):
    """Communities of one weighted undirected graph.

    The community model of the pipeline (docs/communities.md): by default the weighted
    degree-corrected stochastic block model of minimum description length, with nested
    levels; Leiden variants selectable. A dense matrix is treated as the pipeline treats a
    component's pair pattern (and as ``dynconn partition graph.npy`` does).

    Parameters
    ----------
    W : array_like (n, n) or igraph.Graph
        A dense symmetric non-negative weight matrix (the diagonal is ignored; 0 = no edge),
        or an undirected ``igraph.Graph`` with a ``weight`` edge attribute.
    method : {"wsbm", "leiden-modularity", "leiden-rb", "leiden-cpm"}, default "wsbm"
    random_state : int or None, default 0
        Seed (config ``communities.seed``); the same seed gives the same partition.
    n_runs : int, default 3
        Independent runs; the best is kept, their agreement is ``stability``.
    resolution : float, default 1.0
        Of ``leiden-rb`` and ``leiden-cpm``.
    level : int, default 0
        Nested level returned as ``membership`` (0 = finest).

    Returns
    -------
    dynconn.methods.wsbm.PartitionResult
        ``membership`` int (n,) communities 0..K−1 by decreasing size, −1 for a node without
        edges; ``levels`` list of nested memberships, finest first; ``n_communities``,
        ``score``, ``stability``.

    Examples
    --------
    Two groups of 5 nodes, strong inside, weak between:

    >>> import numpy as np, dynconn
    >>> group = np.repeat([0, 1], 5)
    >>> W = np.where(group[:, None] == group[None, :], 1.0, 0.05)
    >>> result = dynconn.partition(W)
    >>> result.membership.tolist()
    [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
    >>> len(result.levels) >= 1
    True
    """
    from .methods import wsbm
    from .stages.communities import DENSE_GRAPH_OPTIONS
    from .validation import check_seed

    method = check_argument("communities", "method", method)
    random_state = check_seed("random_state", random_state)
    n_runs = check_argument("communities", "n_runs", n_runs)
    resolution = check_argument("communities", "resolution", resolution)
    level = check_argument("communities", "level", level)
    options = {}
    if hasattr(W, "vcount") and hasattr(W, "es"):  # an igraph Graph
        graph = W
        weights = "weight" if "weight" in graph.es.attributes() else None
    else:
        w = np.array(W, dtype=np.float64)
        if w.ndim != 2 or w.shape[0] != w.shape[1] or w.shape[0] == 0:
            raise InvalidArgument(f"W: expected a square (n, n) matrix, got shape {w.shape}")
        np.fill_diagonal(w, 0.0)
        graph, weights = wsbm.graph_from_dense(w), "weight"
        options = DENSE_GRAPH_OPTIONS.get(method, {})
    return wsbm.partition(graph, weights=weights, method=method, random_state=random_state, n_runs=n_runs,
                          resolution=resolution, level=level if method == "wsbm" else 0, **options)


# ----------------------------------------------------------------------------- runs
def _config_of(config, overrides):
    from . import config as cfg

    if isinstance(config, (str, Path)):
        return cfg.load(config, dict(overrides or {}))
    if isinstance(config, Mapping):
        raw = cfg.apply_overrides(dict(config), dict(overrides or {}))
        return cfg.validate(raw, base=Path.cwd())
    raise InvalidArgument(f"config: expected a path to a YAML file or a mapping, got {type(config).__name__}")


def run(config, *, workdir=None, overrides: Mapping[str, Any] | None = None, force: bool = False,
        start: str | None = None, stop: str | None = None, quiet: bool = True) -> Run | None:
    """Run the pipeline (``dynconn run``) and return the finished run.

    Parameters
    ----------
    config : str, Path or mapping
        A YAML config file (paths in it relative to its folder), or the same content as a
        dict (paths relative to the current folder).
    workdir : str or Path, optional
        Work directory (default: the config's ``workdir``).
    overrides : mapping of str to value, optional
        Dotted config keys and their values, as ``--set``: ``{"factorize.rank": 6}``. Values
        are used as they are (not read as YAML).
    force : bool
        Recompute stages that are up to date.
    start, stop : str, optional
        First and last stage to run (``--from``, ``--until``).
    quiet : bool, default True
        Only warnings and errors on stderr.

    Returns
    -------
    Run or None
        :func:`load_run` of the work directory; None when ``stop`` ends the run before the
        report. Stages already up to date are skipped, as by the command. Errors raise
        :class:`dynconn.errors.DynconnError` (one line naming the key or file).

    Examples
    --------
    A small simulated dataset (3 animals), factorized at rank 3:

    >>> import dynconn
    >>> from dynconn.simulate import write_dataset
    >>> config = write_dataset("demo-small", "small", 0)      # data + config.yaml
    >>> result = dynconn.run(config, overrides={"factorize.rank": 3})
    >>> result.cp.rank <= 3, result.animals  # fitted components that are one motif are reported as one
    (True, ['worm1', 'worm2', 'worm3'])
    """
    from .console import Console
    from .runner.pipeline import run_pipeline

    cfg = _config_of(config, overrides)
    console = Console(quiet)
    wd = cfg.workdir(workdir)
    run_pipeline(cfg, wd, console, force=force, start=start, stop=stop)
    return load_run(wd) if stop in (None, "report") else None


def load_run(workdir) -> Run:
    """A finished run, read from its work directory.

    Parameters
    ----------
    workdir : str or Path
        A work directory in which ``dynconn run`` finished (every artifact and the exports).

    Returns
    -------
    Run

    Examples
    --------
    >>> import dynconn
    >>> from dynconn.simulate import write_dataset
    >>> config = write_dataset("demo-small", "small", 0)
    >>> _ = dynconn.run(config, overrides={"factorize.rank": 3})   # skipped when up to date
    >>> run = dynconn.load_run("demo-small/run")
    >>> run.pair_matrix(0).shape == (len(run.neurons), len(run.neurons))
    True
    >>> list(run.communities.columns)[:3]
    ['component', 'neuron', 'community']
    """
    return Run(workdir)


class Run:
    """A finished run: its results as arrays and tables, and the report's figures.

    Attributes
    ----------
    workdir : Path
    config : dict
        The resolved config the run used (every key, defaults included).
    neurons : list of str, length N
    animals : list of str, length A
    layout : str
        ``aligned`` or ``concatenated``.
    time : ndarray, shape (T,)
        Bin centres, s (each animal's own clock when concatenated).
    time_animal : ndarray (T,) or None
        Concatenated layout: the animal (index into ``animals``) of each bin.
    pairs : ndarray, shape (P, 2)
        Neuron indices of each pair.
    cp : tensorly.cp_tensor.CPTensor
        ``(weights (R,), [pairs (P, R), time (T, R), animals (A, R)])`` from factors.h5.
    time_by_animal : ndarray (A, T, R) or None
        With ``factorize.time_courses: per_animal``: each component's own time course in each
        animal (``weights[r] · time_by_animal[:, :, r]`` is the fitted time × animal slab; ``cp``
        holds its rank-one summary); None otherwise.
    membership : ndarray, shape (R, N), int
        Community of each neuron in each component, −1 where not in that component's graph.
    communities : pandas.DataFrame
        ``exports/communities.csv``: one row per (component, neuron in its graph), with its
        columns (``component``, ``neuron``, ``community``, ...).
    summary : dict
        ``exports/summary.json`` (components, active intervals, epochs, the atlas, ...).

    Figures (matplotlib ``Figure`` objects, as in the report; :meth:`figure` by file stem):
    :meth:`plot_component`, :meth:`plot_atlas`, :meth:`plot_traces`, :meth:`plot_neuron_view`,
    :meth:`plot_rank_selection`, :meth:`plot_missing_neurons`.

    Examples
    --------
    >>> import dynconn
    >>> from dynconn.simulate import write_dataset
    >>> run = dynconn.run(write_dataset("demo-small", "small", 0), overrides={"factorize.rank": 3})
    >>> run.rank == len(run.summary["components"]) <= 3  # (components of one motif are merged)
    True
    >>> fig = run.plot_component(0)
    >>> type(fig).__name__
    'Figure'
    >>> "component_00" in run.figure_names
    True
    """

    def __init__(self, workdir):
        from tensorly.cp_tensor import CPTensor

        from .io.artifacts import read_h5
        from .errors import ArtifactError

        self.workdir = Path(workdir).expanduser().absolute()
        summary_path = self.workdir / "exports" / "summary.json"
        if not summary_path.is_file():
            raise ArtifactError(f"{summary_path}: not found; is {self.workdir} a finished run? "
                                "(run `dynconn run CONFIG` or dynconn.run(config) first)")
        # the affinity tensor itself (the largest array of a run) is not needed here
        self._artifacts = {name: read_h5(self.workdir / f"{name}.h5", skip=("affinity",) if name == "affinity" else ())
                           for name in ("affinity", "factors", "communities")}
        aff, fac, com = (self._artifacts[k] for k in ("affinity", "factors", "communities"))
        self.summary = json.loads(summary_path.read_text(encoding="utf-8"))
        self.config = json.loads(com.attrs.get("config", "{}"))
        report_params = (self.summary.get("provenance") or {}).get("params")
        if report_params:  # the report may have been rerun with other report.* keys
            self.config["report"] = report_params
        self.neurons = [str(n) for n in np.asarray(aff["neurons"]).ravel()]
        self.animals = [str(a) for a in np.asarray(aff["animals"]).ravel()]
        self.layout = str(aff.attrs.get("layout", "aligned"))
        self.time = np.asarray(aff["time"], dtype=np.float64)
        self.time_animal = np.asarray(aff["time_animal"]) if "time_animal" in aff else None
        self.pairs = np.asarray(aff["pairs"])
        self.cp = CPTensor((np.asarray(fac["weights"]), [np.asarray(fac["factors/pairs"]),
                                                          np.asarray(fac["factors/time"]),
                                                          np.asarray(fac["factors/animals"])]))
        self.time_by_animal = (np.asarray(fac["factors/time_by_animal"]) if "factors/time_by_animal" in fac
                               else None)
        self.membership = np.asarray(com["membership"])
        self.communities = _read_communities(self.workdir / "exports" / "communities.csv")
        self._analysis = None

    @property
    def rank(self) -> int:
        """Number of components R."""
        return int(np.asarray(self.cp.weights).size)

    def __repr__(self) -> str:
        return (f"Run({str(self.workdir)!r}: {len(self.neurons)} neurons, {len(self.animals)} animals, "
                f"{self.time.size} bins, rank {self.rank})")

    def pair_matrix(self, r: int) -> np.ndarray:
        """Component ``r``'s pair loadings as a symmetric (N, N) matrix (zero diagonal), rows and
        columns in ``neurons`` order: the weighted graph its communities partition."""
        from .stages.communities import pair_matrix
        from .validation import check_int

        r = check_int("r", r, low=0, high=self.rank - 1)
        return pair_matrix(np.asarray(self.cp.factors[0][:, r], dtype=np.float64), self.pairs, len(self.neurons))

    # -- figures: the report's own figure functions on the report's own inputs
    def _jobs(self) -> dict:
        if self._analysis is None:
            from .stages import report
            from .io.artifacts import read_h5

            ing = read_h5(self.workdir / "ingest.h5")
            data = report.gather(ing, *(self._artifacts[k] for k in ("affinity", "factors", "communities")))
            params = {**{k: key.default for k, key in SCHEMA["report"].items()}, **self.config.get("report", {})}
            self._analysis = {stem: (func, kwargs) for stem, func, kwargs, _ in report.analyse(data, params)["jobs"]}
        return self._analysis

    @property
    def figure_names(self) -> list[str]:
        """File stems of the report's figures for this run (``figures/<stem>.png``)."""
        return list(self._jobs())

    def figure(self, name: str):
        """The report's figure ``name`` (a stem of :attr:`figure_names`) as a matplotlib Figure."""
        from .report import figures

        jobs = self._jobs()
        if name not in jobs:
            raise InvalidArgument(f"figure: this run has no figure {name!r}; it has {', '.join(jobs)}")
        func, kwargs = jobs[name]
        return getattr(figures, func)(**kwargs)

    def plot_component(self, r: int):
        """Component ``r``: temporal loading (when), loading per animal (in whom), its pair
        matrix ordered by community and its network (which neurons) — a matplotlib Figure."""
        from .validation import check_int

        return self.figure(f"component_{check_int('r', r, low=0, high=self.rank - 1):02d}")

    def plot_atlas(self):
        """Each component's mean temporal loading per epoch row of the atlas."""
        return self.figure("atlas")

    def plot_traces(self):
        """The normalised traces of every animal (the report's data overview)."""
        return self.figure("data_traces")

    def plot_neuron_view(self):
        """The community each neuron joins in each active component, per epoch row."""
        return self.figure("neuron_view")

    def plot_rank_selection(self):
        """Fit error, restart similarity and gain per rank (runs with ``rank: auto``)."""
        return self.figure("rank_selection")

    def plot_missing_neurons(self):
        """Which neurons were not recorded in which animal (when some were not)."""
        return self.figure("data_missing")


def _read_communities(path: Path):
    import pandas as pd

    from .errors import ArtifactError

    if not path.is_file():
        raise ArtifactError(f"{path}: not found; rerun the report stage (dynconn report CONFIG)")
    empty = ["cohesion", "p_value", "cohesive"]  # blank where not computed (DESIGN.md)
    # neuron names are text, whatever they look like ("NA", "1", ...)
    return pd.read_csv(path, dtype={"neuron": str}, keep_default_na=False,
                       na_values={c: [""] for c in empty})


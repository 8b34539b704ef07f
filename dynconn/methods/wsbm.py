"""Community detection on weighted graphs: a weighted degree-corrected SBM, and Leiden.

Pure core of the communities stage: graphs in, partitions out (no files, no printing).

``partition(graph, method="wsbm")`` (the default) infers the partition of minimum description
length (DL) under a weighted, degree-corrected stochastic block model:

* topology: Peixoto's microcanonical degree-corrected SBM with its nonparametric priors
  (partition, block edge counts, "distributed" degree prior) -- Peixoto, PRE 95, 012317 (2017);
* weights: given the edges, weights are i.i.d. within classes of edges -- one class per block
  pair ("pairs", Peixoto, PRE 97, 012306, 2018) or one per block plus one shared by all
  between-block edges ("assortative", the weighted planted-partition analogue) -- from an
  exponential or log-normal distribution whose parameters are integrated over a conjugate
  prior. Family and structure are chosen by DL ("auto"). Before that, node effects (a
  log-additive fit with strength interactions, the weight analogue of degree correction) are
  divided out of the weights, so blocks are not made of "heavy" and "light" nodes.
* complete graphs (a dense matrix with all pairs): the edge set carries no information, the
  topology terms are dropped and the model is weights-only.

Model selection is part of the DL: the number of blocks is whatever minimises it, and a single
block (no structure) wins when the evidence is absent. Fitting: Leiden partitions at several
resolutions (weighted and unweighted) seed the search; the best by DL are refined by greedy
single-node moves and block merges until no move or merge lowers the DL. This is repeated
``n_runs`` times with different seeds; the partition of lowest DL is returned, and the mean
pairwise ARI between the runs' partitions is reported as ``stability``. Nested levels above it
come from the nested-SBM prior on the block graph (Peixoto, PRX 4, 011047, 2014).
See docs/communities.md.

Leiden (Traag, Waltman & van Eck 2019) stays selectable: ``"leiden-modularity"``,
``"leiden-rb"`` (RBConfiguration with ``resolution``), ``"leiden-cpm"`` (``resolution``).

Vertices without any edge of positive weight (isolated, zero strength) are not partitioned:
their membership is ``-1`` and they are not counted in ``n_communities``. Self-loops are
ignored; parallel edges are merged by summing their weights; edges of weight 0 are absent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations

import igraph
import leidenalg
import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import spsolve
from scipy.special import gammaln, spence

from .. import validation
from .clustering_metrics import adjusted_rand_index

# =============================================================================================
# Part 1: the description-length engine
# =============================================================================================
# Inference engine for the weighted degree-corrected SBM (internal API: SBMState and the
# weight models; partition() below is the public entry point).
#
# Description length (nats) of an undirected graph with positive edge weights, partitioned
# into B non-empty blocks (Peixoto 2017, 2018; see docs/communities.md):
#
#     Sigma = L_partition + L_edges + L_degrees + S_topology + L_weights
#
# * ``L_partition = ln N + ln C(N-1, B-1) + ln N! - sum_r ln n_r!``
# * ``L_edges     = ln multiset(B(B+1)/2, E)``        (uniform prior on the block edge counts)
# * ``L_degrees   = sum_r ln q(e_r, n_r) + ln n_r! - sum_k ln n_k^r!`` ("distributed" prior)
# * ``S_topology  = sum_r ln e_r! - sum_{r<s} ln e_rs! - sum_r ln e_rr!! - sum_i ln k_i!``
#   (microcanonical degree-corrected SBM, Peixoto 2017, eq. 9; e_rr counts both ends)
# * ``L_weights   = - sum_classes ln P(w_class | prior)``: per block pair ("pairs") or per block
#   plus one between-block class ("assortative"), the weights integrated over a conjugate prior
#   (exponential or log-normal family).
# With ``topology=False`` (complete graphs) only L_partition and L_weights remain.
#
# Implementation notes: every term is a sum over blocks or block pairs, so a node move from
# r to s only touches rows r and s. Sequential moves go "take node out" (mid state) then "put
# it in" block s, costed for every candidate s at once; ``move_costs_all`` costs every node's
# every move at once from the current state; ``merge_costs`` every pair merge at once.

_LN2 = float(np.log(2.0))

# ---------------------------------------------------------------------------------------------
# integer partitions q(m, n): number of partitions of m into at most n parts (log)
# ---------------------------------------------------------------------------------------------
_Q_TABLE = np.zeros((1, 1))
_Q_MAX_M = 12000
_Q_MAX_N = 300


def _grow_q_table(M: int, K: int) -> None:
    global _Q_TABLE
    M = min(M, _Q_MAX_M)
    K = min(K, _Q_MAX_N)
    if _Q_TABLE.shape[0] > M and _Q_TABLE.shape[1] > K:
        return
    M = min(max(int(M * 1.5), _Q_TABLE.shape[0] - 1), _Q_MAX_M)  # headroom: fewer regrowths
    K = min(max(int(K * 1.5), _Q_TABLE.shape[1] - 1), _Q_MAX_N)
    q = np.full((M + 1, K + 1), -np.inf)
    q[0, :] = 0.0
    for k in range(1, K + 1):
        q[:, k] = q[:, k - 1]
        for start in range(k, M + 1, k):  # q(m, k) = q(m, k-1) + q(m-k, k)
            stop = min(start + k, M + 1)
            q[start:stop, k] = np.logaddexp(q[start:stop, k - 1], q[start - k:stop - k, k])
    _Q_TABLE = q


def _log_q_approx(m: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Szekeres' asymptotic form of ln q(m, n) (as used by Peixoto 2017)."""
    m = np.asarray(m, float)
    n = np.asarray(n, float)
    out = np.zeros(np.broadcast(m, n).shape)
    m, n = np.broadcast_arrays(m, n)
    small = n < m ** 0.25
    if small.any():
        mm, nn = m[small], n[small]
        out[small] = (gammaln(mm) - gammaln(nn) - gammaln(mm - nn + 1)) - gammaln(nn + 1)
    big = ~small
    if big.any():
        mm, nn = m[big], n[big]
        u = nn / np.sqrt(mm)
        v = u.copy()
        for _ in range(500):
            nv = u * np.sqrt(spence(np.exp(-v)))
            done = np.max(np.abs(nv - v)) < 1e-10
            v = nv
            if done:
                break
        lf = (np.log(v) - np.log1p(-np.exp(-v) * (1 + u * u / 2)) / 2 - 1.5 * _LN2
              - np.log(u) - np.log(np.pi))
        g = 2 * v / u - u * np.log1p(-np.exp(-v))
        out[big] = lf - np.log(mm) + np.sqrt(mm) * g
    return out


def log_q(m, n) -> np.ndarray:
    """ln q(m, n); exact (cached table) where small, asymptotic otherwise. q(0, n) = 1."""
    m = np.asarray(m, dtype=np.int64)
    n = np.asarray(n, dtype=np.int64)
    if m.ndim <= 1 and n.shape == m.shape and m.size and m.max() < _Q_TABLE.shape[0] \
            and n.max() < _Q_TABLE.shape[1]:  # fast path (the table has q(0, .) = 0)
        return _Q_TABLE[m, np.minimum(n, m)]
    n = np.asarray(n, dtype=np.int64)
    n = np.minimum(n, m)
    m, n = np.broadcast_arrays(m, n)
    out = np.zeros(m.shape)
    pos = (m > 0) & (n > 0)
    inside = pos & (m < _Q_TABLE.shape[0]) & (n < _Q_TABLE.shape[1])
    out[inside] = _Q_TABLE[m[inside], n[inside]]
    outside = pos & ~inside
    if outside.any():
        out[outside] = _log_q_approx(m[outside], n[outside])
    return out


# ln k! for k = 0, 1, ...: a cached table, grown on demand (``_grow_lf_table``). Each entry is
# gammaln(k + 1.0) itself, so a lookup returns bitwise the value gammaln would (the counts the
# engine feeds to ``_lf`` are integers stored as floats).
_LF_TABLE = gammaln(np.arange(1024, dtype=float) + 1.0)
_LF_MIN_SIZE = 48  # below this many elements gammaln is as quick as the checks of a lookup


def _grow_lf_table(M: int) -> None:
    global _LF_TABLE
    if M > len(_LF_TABLE):
        _LF_TABLE = gammaln(np.arange(max(int(M), 2 * len(_LF_TABLE)), dtype=float) + 1.0)


def _lf(x):
    """ln x! (= gammaln(x + 1)); integer x within the table is a lookup, anything else gammaln."""
    x = np.asarray(x, float)
    if x.size >= _LF_MIN_SIZE:
        i = x.astype(np.intp)
        if i.min() >= 0 and i.max() < len(_LF_TABLE) and (i == x).all():
            return _LF_TABLE[i]
    return gammaln(x + 1.0)


def _lbinom(n, k):
    return gammaln(n + 1.0) - gammaln(k + 1.0) - gammaln(n - k + 1.0)


def _lmulti(n, k):
    """ln of the multiset coefficient ((n, k)) = C(n + k - 1, k); 0 when k = 0."""
    n = np.asarray(n, float)
    k = np.asarray(k, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = _lbinom(n + k - 1.0, k)
    return np.where(k > 0, out, 0.0)


# ---------------------------------------------------------------------------------------------
# weight models: log marginal likelihood of the weights of one block pair from sufficient
# statistics S[..., :] = (m, sum w, sum ln w, sum (ln w)^2). Vectorised over leading axes.
# ---------------------------------------------------------------------------------------------
def _count_index(m, n_table: int):
    """Integer indices of the counts ``m`` (floats) when all are integers in [0, n_table),
    else None (then the caller evaluates its formula directly)."""
    if m.size < _LF_MIN_SIZE:
        return None
    i = m.astype(np.intp)
    if i.min() >= 0 and i.max() < n_table and (i == m).all():
        return i
    return None


class WeightModel:
    name = "none"
    cols = ()  # columns of S (m, sum w, sum ln w, sum (ln w)^2) the family reads

    def logmarg(self, S: np.ndarray) -> np.ndarray:
        return self.lm(S[..., 0], S[..., 1], S[..., 2], S[..., 3])

    def lm(self, m, X, Y, Y2) -> np.ndarray:  # pragma: no cover - interface
        """``logmarg`` from the statistics as separate arrays (unused ones may be None)."""
        return np.zeros(np.shape(m))

    def const(self) -> float:
        """Partition-independent part of -ln P(w) (Jacobian terms), for comparing families."""
        return 0.0


class ExponentialWeights(WeightModel):
    """w ~ Exponential(rate lam) per block pair, lam ~ Gamma(shape a0, rate b0)."""

    name = "exponential"
    cols = (0, 1)

    def __init__(self, w: np.ndarray, a0: float = 1.0):
        self.a0 = float(a0)
        self.b0 = float(a0 * np.mean(w))  # prior mean of the rate = 1 / (mean weight)
        self._c = self.a0 * np.log(self.b0) - gammaln(self.a0)
        # the count-only part for m = 0..E (the same float expression as in lm: exact lookups)
        mt = np.arange(len(np.atleast_1d(w)) + 1, dtype=float)
        self._tab = self._c + gammaln(self.a0 + mt)

    def lm(self, m, X, Y=None, Y2=None):
        i = _count_index(m, len(self._tab))
        G = self._tab[i] if i is not None else self._c + gammaln(self.a0 + m)
        lp = G - (self.a0 + m) * np.log(self.b0 + X)
        return np.where(m > 0, lp, 0.0)


class LogNormalWeights(WeightModel):
    """ln w ~ Normal(mu, sigma^2) per block pair, (mu, sigma^2) ~ Normal-Inverse-Gamma.

    Hyperparameters from the whole graph's log-weights: mu0 = mean, kappa0 = 1, a0 = 1,
    b0 = a0 * variance (a weak, unit-free prior).
    """

    name = "lognormal"
    cols = (0, 2, 3)

    def __init__(self, w: np.ndarray, kappa0: float = 1.0, a0: float = 1.0):
        y = np.log(w)
        self.mu0 = float(y.mean())
        self.k0 = float(kappa0)
        self.a0 = float(a0)
        var = float(y.var())
        self.b0 = float(a0 * (var if var > 1e-12 else 1.0))
        self._jac = float(y.sum())  # -ln P(w) = -ln P(ln w) + sum ln w
        self._c = self.a0 * np.log(self.b0) - gammaln(self.a0)
        # count-only parts for m = 0..E, the same float expressions as in lm (exact lookups)
        mt = np.arange(np.size(y) + 1, dtype=float)
        self._tab1 = self._head(mt)
        self._tabg = gammaln(self.a0 + mt / 2.0)

    def _head(self, m):
        return -0.5 * m * np.log(2 * np.pi) + 0.5 * np.log(self.k0 / (self.k0 + m)) + self._c

    def lm(self, m, X, Y, Y2):
        mm = np.maximum(m, 1.0)
        ybar = Y / mm
        kn = self.k0 + m
        an = self.a0 + m / 2.0
        ss = np.maximum(Y2 - m * ybar * ybar, 0.0)
        bn = self.b0 + 0.5 * ss + self.k0 * m * (ybar - self.mu0) ** 2 / (2.0 * kn)
        i = _count_index(m, len(self._tabg))
        if i is not None:
            lp = self._tab1[i] - an * np.log(bn) + self._tabg[i]
        else:
            lp = self._head(m) - an * np.log(bn) + gammaln(an)
        return np.where(m > 0, lp, 0.0)

    def const(self):
        return self._jac


def make_weight_model(kind: str, w):
    if w is None or kind == "none":
        return WeightModel()
    if kind == "exponential":
        return ExponentialWeights(w)
    if kind == "lognormal":
        return LogNormalWeights(w)
    raise ValueError(f"unknown weight model {kind!r}")


# ---------------------------------------------------------------------------------------------
# state
# ---------------------------------------------------------------------------------------------
class SBMState:
    """Block state of a simple undirected graph (no self-loops, no isolated nodes).

    ``edges``: (E, 2) int, each edge once; ``w``: (E,) positive weights or None (unweighted).
    ``b``: initial block of each node (any ints). ``topology=False`` drops the terms that
    describe which pairs are connected (used for complete graphs, where the edge set carries
    no information): the description length is then partition prior + weights.
    """

    def __init__(self, N, edges, w, b, wmodel: WeightModel, degree_prior: str = "distributed",
                 topology: bool = True, weight_structure: str = "pairs"):
        if degree_prior not in ("distributed", "uniform"):
            raise ValueError(f"unknown degree prior {degree_prior!r}")
        if weight_structure not in ("pairs", "assortative"):
            raise ValueError(f"unknown weight structure {weight_structure!r}")
        # "pairs": one weight distribution per block pair (r <= s); "assortative": one per
        # block for its internal edges and one shared by all edges between blocks
        self.wstruct = weight_structure
        self.N = int(N)
        self.edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
        self.E = int(len(self.edges))
        self.wm = wmodel
        self.degree_prior = degree_prior
        self.topology = bool(topology)
        self.k = np.bincount(self.edges.ravel(), minlength=self.N).astype(np.int64)
        if self.topology:
            _grow_q_table(2 * self.E + 1, self.N + 1)
        self.kvals, self.kidx = np.unique(self.k, return_inverse=True)
        # per-edge sufficient statistics (m=1, w, ln w, ln^2 w)
        self.has_w = w is not None
        if w is None:
            self.ew = np.zeros((self.E, 4))
            self.ew[:, 0] = 1.0
        else:
            w = np.asarray(w, float)
            lw = np.log(w)
            self.ew = np.column_stack([np.ones(self.E), w, lw, lw * lw])
        self.Wtot = self.ew.sum(0)
        # CSR adjacency (both directions)
        src = np.concatenate([self.edges[:, 0], self.edges[:, 1]])
        dst = np.concatenate([self.edges[:, 1], self.edges[:, 0]])
        st = np.concatenate([self.ew, self.ew])
        order = np.argsort(src, kind="stable")
        self.nbr = dst[order]
        self.nst = st[order]
        self.ptr = np.concatenate([[0], np.cumsum(np.bincount(src, minlength=self.N))])
        _grow_lf_table(2 * self.E + self.N + 2)  # every count the DL takes ln ! of
        self.lk = float(_lf(self.k).sum())
        # the same adjacency with each row's neighbours in increasing order (the order a
        # scipy CSR matrix keeps): the vectorised move costs sum a node's edge statistics
        # per block in this order
        order = np.lexsort((dst, src))
        self.snbr = dst[order]
        self.sst = np.ascontiguousarray(st[order].T)  # (4, 2E)
        self.sdeg = np.diff(self.ptr)
        self._bterm_cache = {}
        self.set_partition(b)

    def set_weight_model(self, wmodel: WeightModel, weight_structure: str) -> None:
        """Describe the same weights by another family or structure (the block statistics
        do not depend on either)."""
        if weight_structure not in ("pairs", "assortative"):
            raise ValueError(f"unknown weight structure {weight_structure!r}")
        self.wm = wmodel
        self.wstruct = weight_structure

    # -- bookkeeping ---------------------------------------------------------------------------
    def set_partition(self, b):
        _, b = np.unique(np.asarray(b), return_inverse=True)
        self.b = b.astype(np.int64).ravel()
        self.cap = int(self.b.max()) + 2  # always keep at least one empty slot
        self._rebuild()

    def _rebuild(self):
        # block statistics from scratch; bincount adds in index order, as np.add.at would
        # (each edge to (r, s), then each between-block edge to (s, r)): the same sums
        K = self.cap
        b = self.b
        br, bs = b[self.edges[:, 0]], b[self.edges[:, 1]]
        off = br != bs
        key = np.concatenate([br * K + bs, (bs * K + br)[off]])
        self.e = np.bincount(np.concatenate([br * K + bs, bs * K + br]),
                             minlength=K * K).astype(float).reshape(K, K)
        self.W = np.empty((K, K, 4))
        self.W[:, :, 0] = np.bincount(key, minlength=K * K).reshape(K, K)
        for j in range(1, 4):
            if self.has_w:
                self.W[:, :, j] = np.bincount(key, weights=np.concatenate(
                    [self.ew[:, j], self.ew[off, j]]), minlength=K * K).reshape(K, K)
            else:
                self.W[:, :, j] = 0.0
        self.nr = np.bincount(b, minlength=K).astype(float)
        self.er = np.bincount(b, weights=self.k, minlength=K).astype(float)
        nk = len(self.kvals)
        self.H = np.bincount(b * nk + self.kidx, minlength=K * nk).astype(float).reshape(K, nk)

    def compact(self):
        """Relabel blocks 0..B-1 (keeping one empty slot)."""
        self.set_partition(self.b)

    @property
    def B(self) -> int:
        return int((self.nr > 0).sum())

    # -- description length ----------------------------------------------------------------------
    def _b_terms(self, B):
        """Terms that depend on the number of blocks only (partition + edge-count priors)."""
        if np.ndim(B) == 0:
            key = int(B)
            if key == B:
                val = self._bterm_cache.get(key)
                if val is None:
                    val = self._bterm_cache[key] = self._b_terms_calc(float(key))
                return val
        return self._b_terms_calc(B)

    def _b_terms_calc(self, B):
        B = np.asarray(B, float)
        out = _lbinom(self.N - 1.0, B - 1.0)
        if self.topology:
            out = out + _lmulti(B * (B + 1) / 2.0, float(self.E))
        return out

    def dl_terms(self) -> dict:
        """Description length (nats) split into its parts; see the module docstring."""
        out = self._structure_terms()
        out["L_weights"] = self.weight_dl()
        return out

    def _occupied(self):
        """(B, index of the occupied blocks, index of their block pairs)."""
        occ = self.nr > 0
        B = int(occ.sum())
        if occ[:B].all():  # compacted (blocks 0..B-1): slices instead of fancy indexing
            return B, slice(0, B), (slice(0, B), slice(0, B))
        return B, occ, np.ix_(occ, occ)

    def structure_dl(self) -> float:
        """The DL without its weight term (what does not depend on the weight model)."""
        return float(sum(self._structure_terms().values()))

    def weight_dl(self) -> float:
        """L_weights: -ln P(weights | partition) under the current weight model."""
        B, occ, sub = self._occupied()
        Wo = self.W[sub]
        if self.wstruct == "pairs":
            iu0 = _triu(B, 0)
            lw = -self.wm.logmarg(Wo[iu0]).sum()
        else:
            Wd = Wo[np.arange(B), np.arange(B)]
            lw = -self.wm.logmarg(Wd).sum() - self.wm.logmarg(self.Wtot - Wd.sum(0))
        return float(lw + self.wm.const())

    def _structure_terms(self) -> dict:
        N = self.N
        B, occ, sub = self._occupied()
        nr = self.nr[occ]
        out = {}
        out["L_partition"] = float(np.log(N) + _lbinom(N - 1.0, B - 1.0) + _lf(N) - _lf(nr).sum())
        if self.topology:
            e = self.e[sub]
            er = self.er[occ]
            iu = _triu(B, 1)
            diag = np.diag(e)
            out["S_topology"] = float(_lf(er).sum() - (diag / 2 * _LN2 + _lf(diag / 2)).sum()
                                      - self.lk - _lf(e[iu]).sum())
            out["L_edges"] = float(_lmulti(B * (B + 1) / 2.0, float(self.E)))
            if self.degree_prior == "distributed":
                out["L_degrees"] = float(log_q(er, nr).sum() + _lf(nr).sum()
                                         - _lf(self.H[occ]).sum())
            else:
                out["L_degrees"] = float(_lmulti(nr, er).sum())
        return out

    def dl(self) -> float:
        return float(sum(self.dl_terms().values()))

    # -- node moves ------------------------------------------------------------------------------
    def _node_stats(self, i):
        a, z = self.ptr[i], self.ptr[i + 1]
        nb = self.b[self.nbr[a:z]]
        K = self.cap
        d = np.empty((K, 4))
        d[:, 0] = np.bincount(nb, minlength=K)
        if self.has_w:
            st = self.nst[a:z]
            for j in (1, 2, 3):
                d[:, j] = np.bincount(nb, weights=st[:, j], minlength=K)
        else:
            d[:, 1:] = 0.0
        return d

    def _block_term(self, er, nr):
        """Per-block terms that depend on (e_r, n_r): ln e_r! + degree prior (without ln n_r!)."""
        if self.degree_prior == "distributed":
            return _lf(er) + log_q(er, nr)
        return _lf(er) + _lmulti(nr, er)

    def _remove(self, i, d):
        r = self.b[i]
        c = d[:, 0]
        self.e[r, :] -= c
        self.e[:, r] -= c  # the diagonal loses 2 c[r] (e_rr counts both ends)
        self.W[r, :, :] -= d
        self.W[:, r, :] -= d
        self.W[r, r, :] += d[r]  # weights store each edge once: net -d[r] on the diagonal
        self.er -= c
        self.er[r] -= self.k[i]
        self.nr[r] -= 1
        self.H[r, self.kidx[i]] -= 1
        self.b[i] = -1

    def _insert(self, i, s, d):
        c = d[:, 0]
        self.e[s, :] += c
        self.e[:, s] += c
        self.W[s, :, :] += d
        self.W[:, s, :] += d
        self.W[s, s, :] -= d[s]
        self.er += c
        self.er[s] += self.k[i]
        self.nr[s] += 1
        self.H[s, self.kidx[i]] += 1
        self.b[i] = s

    def _insert_costs(self, i, d, cand):
        """DL of putting the removed node i into each block of ``cand``, up to a common offset.

        (Terms of the same kind are evaluated in one call on stacked arrays: the values are
        elementwise the same, the calls fewer -- this runs once per node visit.)
        """
        c = d[:, 0]
        nr = self.nr
        K = len(nr)
        C = len(cand)
        ar = np.arange(C)
        nrc = nr[cand]
        Bmid = int(np.count_nonzero(nr))
        lnr1 = np.log(nrc + 1)
        # partition prior: -ln n_s!  ->  -ln(n_s + 1); number of blocks
        cost = -lnr1 + np.where(nrc == 0, self._b_terms(Bmid + 1) - self._b_terms(Bmid), 0.0)
        if self.topology:
            ki = float(self.k[i])
            ess = self.e[cand, cand]
            cs = c[cand]
            dn = (ess + 2 * cs) / 2
            do = ess / 2
            L = _lf(np.concatenate([dn, do]))
            cost -= (dn - do) * _LN2 + L[:C] - L[C:]
            e = self.e[cand]  # (C, K): -sum_{u != s} [lf(e_su + c_u) - lf(e_su)]
            LF = _lf(np.stack([e + c[None, :], e]))
            F = LF[0] - LF[1]
            F[ar, cand] = 0.0
            cost -= F.sum(1)
            # block terms: e_u grows by c_u for every u, by k_i more for u = s; n_s + 1
            er = self.er
            T = self._block_term(np.concatenate([er, er + c, er[cand] + cs + ki]),
                                 np.concatenate([nr, nr, nrc + 1]))
            base_old = T[:K]
            A = T[K:2 * K] - base_old
            s_new = T[2 * K:]
            cost += A.sum() - A[cand] + s_new - base_old[cand]
            if self.degree_prior == "distributed":
                # + ln n_s! - sum_k ln n_k^s!  ->  + ln(n_s+1) - ln(n^s_{k_i}+1)
                cost += lnr1 - np.log(self.H[cand, self.kidx[i]] + 1)
        if self.wstruct == "pairs":
            Wc = self.W[cand]  # (C, K, 4)
            LM = self.wm.logmarg(np.stack([Wc + d[None, :, :], Wc]))
            cost -= (LM[0] - LM[1]).sum(1)
        else:
            kk = np.arange(self.cap)
            dsum = self.W[kk, kk].sum(0)  # mid state: node i's edges are out
            Wss = self.W[cand, cand]
            cost -= self.wm.logmarg(Wss + d[cand]) - self.wm.logmarg(Wss)
            cost -= self.wm.logmarg(self.Wtot[None, :] - dsum[None, :] - d[cand])
        return cost

    def _grow(self):
        K = self.cap + 1
        e = np.zeros((K, K))
        e[:-1, :-1] = self.e
        W = np.zeros((K, K, 4))
        W[:-1, :-1] = self.W
        self.e, self.W = e, W
        self.nr = np.append(self.nr, 0.0)
        self.er = np.append(self.er, 0.0)
        self.H = np.vstack([self.H, np.zeros((1, self.H.shape[1]))])
        self.cap = K

    def sweep(self, rng, beta=np.inf, allow_new=True, nodes=None):
        """One pass of single-node moves in random order.

        beta=inf: greedy (move to the candidate block of lowest DL, staying if none is lower);
        finite beta: heat-bath (new block drawn with probability ~ exp(-beta * dDL)).
        Candidates: every occupied block, plus one empty block if ``allow_new``.
        ``nodes``: visit only these (in random order). Returns (number of moves, total dDL).
        """
        moves = 0
        total = 0.0
        order = rng.permutation(self.N) if nodes is None else rng.permutation(np.asarray(nodes))
        for i in order:
            r = self.b[i]
            d = self._node_stats(i)
            self._remove(i, d)
            occ = np.flatnonzero(self.nr > 0)
            r_empty = self.nr[r] == 0
            if allow_new or r_empty:
                empty = np.flatnonzero(self.nr == 0)
                if r_empty:
                    first = r
                else:
                    if empty.size == 0:
                        self._grow()
                        d = np.vstack([d, np.zeros((1, 4))])
                        empty = np.flatnonzero(self.nr == 0)
                    first = empty[0]
                cand = np.append(occ, first)
            else:
                cand = occ
            costs = self._insert_costs(i, d, cand)
            jr = int(np.flatnonzero(cand == r)[0])
            if np.isinf(beta):
                j = int(np.argmin(costs))
                if costs[j] >= costs[jr] - 1e-9:
                    j = jr
            else:
                p = np.exp(-beta * (costs - costs.min()))
                j = int(rng.choice(len(cand), p=p / p.sum()))
            s = int(cand[j])
            self._insert(i, s, d)
            if s != r:
                moves += 1
                total += float(costs[j] - costs[jr])
        return moves, total

    def move_costs_all(self, nodes=None):
        """DL change of moving each node to each block slot, all at once (vectorised).

        Exact for a single move from the current state. Call on a compacted state (blocks
        0..B-1 and at least one empty slot). Returns an (n, cap) array for ``nodes`` (default:
        all); 0 where a node stays; only the first empty slot is a candidate (+inf for the
        other empty slots). The work is O(cap) per node and O(cap) per (node, block with an
        edge of the node) pair: the sums over the blocks u that a moved node's edges reach
        skip the blocks it has no edge into (their terms are exactly 0). Nodes are costed in
        chunks whose temporaries stay within ``CHUNK_BYTES`` (a node's row needs
        O(cap × min(degree, cap)) bytes; each node's row is computed alike in any chunk).
        """
        nodes = np.arange(self.N) if nodes is None else np.asarray(nodes, dtype=np.int64)
        K = self.cap
        # bytes per row: dense, ~6 (cap, cap, 4) temporaries (without weights, (cap, cap));
        # else ~16 (6) (cap,) temporaries per (node, adjacent block) pair, at most
        # min(degree, cap) pairs, and ~48 (16) per node
        if K <= _DENSE_CAP:
            per_node = 6 * K * K * (4 if self.has_w else 1) * 8
        elif self.has_w:
            per_node = 8 * K * (16 * np.minimum(self.sdeg[nodes], K) + 48)
        else:
            per_node = 8 * K * (6 * np.minimum(self.sdeg[nodes], K) + 16)
        out = np.empty((len(nodes), K))
        tables = None if K <= _DENSE_CAP else self._screen_tables()
        for rows in _chunks(len(nodes), per_node):
            out[rows] = self._move_costs_block(nodes[rows], tables)
        return out

    def _screen_tables(self):
        """What every chunk of one :meth:`move_costs_all` call reads of the block state, once
        per call: lf(e) and lm(W) (cap, cap), and lm(W) and the columns of W the weight
        family reads transposed (row u = column u), so gathering the pairs' (s, u) values
        reads rows. (e, integer counts, is exactly symmetric, so is lf(e); the weight sums W
        may differ from their transpose in the last bit, so W[s, u] is read as such.)"""
        t = {}
        if self.topology:
            t["lf_e"] = _lf(self.e)
        if self.has_w and self.wstruct == "pairs":
            t["lmW"] = self.wm.logmarg(self.W)
            t["lmWT"] = np.ascontiguousarray(t["lmW"].T)
            t["WTc"] = [np.ascontiguousarray(self.W[:, :, j].T)
                        if (j == 0 or j in self.wm.cols) else None for j in range(4)]
        return t

    def _move_costs_block(self, nodes, tables=None):
        """:meth:`move_costs_all` for one chunk of ``nodes`` (``tables``: its
        :meth:`_screen_tables`, computed here if None)."""
        K = self.cap
        N = len(nodes)
        ar = np.arange(N)
        # each node's edge statistics per block: sums in neighbour order (see __init__)
        lens = self.sdeg[nodes]
        first = np.repeat(self.ptr[nodes] - np.cumsum(lens) + lens, lens)
        pos = first + np.arange(int(lens.sum()))
        key = np.repeat(ar * K, lens) + self.b[self.snbr[pos]]
        D4 = np.zeros((N, K, 4))
        D4[:, :, 0] = np.bincount(key, minlength=N * K).reshape(N, K)
        if self.has_w:
            for j in (1, 2, 3):
                D4[:, :, j] = np.bincount(key, weights=self.sst[j, pos],
                                          minlength=N * K).reshape(N, K)
        c = D4[:, :, 0]
        # The terms Z[i, s, u] = lf(e_su + c_iu) - lf(e_su) and lm(W_su + D_iu) - lm(W_su)
        # (node i moved to block s, summed over the blocks u) are exactly 0 where node i has
        # no edge into u (so are the (node, u) terms of leaving r_i and the (node, s) ones of
        # joining s's internal edges). With few block slots they are evaluated on dense
        # (nodes, s, u) arrays (fewest numpy calls), else only on the (node, u) pairs with
        # edges, node-major (u ascending within a node), and scattered (exact zeros
        # elsewhere): O(pairs x cap) instead of O(nodes x cap²). The choice depends on cap
        # only: a node's row is the same in any chunk or subset.
        dense = K <= _DENSE_CAP
        if not dense:
            if tables is None:
                tables = self._screen_tables()
            flat = np.flatnonzero(c.ravel() > 0)
            pn, pu = np.divmod(flat, K)
            starts = np.flatnonzero(np.diff(pn, prepend=-1))
            has = pn[starts]
            cp = c[pn, pu]

        def scatter(v):  # values at the pairs -> (N, K), 0 elsewhere
            S = np.zeros((N, K))
            S[pn, pu] = v
            return S

        def z_sums(Z, z_ss=None, z_sr=None):
            """ZS[i, s] = sum over u not in {s, r_i} of Z[i, s, u]: from the dense Z (N, s, u),
            or from the pairs' (pair, s) terms less Z[i, s, s] and Z[i, s, r_i] (N, s)."""
            if dense:
                return Z.sum(2) - Z[:, kk, kk] - Z[ar[:, None], kk[None, :], rr[:, None]]
            S = np.zeros((N, K))
            if len(flat):
                S[has] = np.add.reduceat(Z, starts, axis=0)
            return S - z_ss - z_sr

        nr, er = self.nr, self.er
        B = int((nr > 0).sum())
        rr = self.b[nodes]
        cr = c[ar, rr]
        cost = np.zeros((N, K))
        # number of blocks and (when not cancelled by the degree prior) the partition prior
        r_empties = nr[rr] == 1
        s_new = nr == 0
        Bp = r_empties[:, None].astype(int) * -1 + s_new[None, :].astype(int) + 1  # B-1..B+1
        cost += np.array([self._b_terms(B + x) - self._b_terms(B) for x in (-1, 0, 1)])[Bp]
        if not (self.topology and self.degree_prior == "distributed"):
            cost += np.log(nr[rr])[:, None] - np.log(nr + 1)[None, :]
        # Terms of the same kind are evaluated in one call on their stacked arguments (the
        # values are elementwise the same as term by term; numpy's per-call cost dominates
        # at these sizes, so fewer, larger calls are quicker).
        kk = np.arange(K)
        if self.topology:
            e = self.e
            ki = self.k[nodes].astype(float)
            erow = e[rr]  # (N, K): e[r_i, u]
            err_ = erow[ar, rr]  # e[r_i, r_i]
            ess = np.diag(e)[None, :]
            # ln e! terms; g(x) = x/2 ln 2 + ln (x/2)! for the diagonal (e_rr counts both ends)
            parts = [erow - c, erow, erow - c + cr[:, None], (err_ - 2 * cr) / 2,
                     err_ / 2, (ess + 2 * c) / 2, ess / 2]
            if dense:  # lf(e) and Z's arguments (N, s, u) in the same call
                parts += [e, e[None, :, :] + c[:, None, :]]
            else:  # at (s, s) and (s, r_i) (N, s), and at the pairs (pair, s) if few
                parts += [ess + c, e[rr] + cr[:, None]]  # e[s, r_i] = e[r_i, s]
                ep = e[pu] + cp[:, None]  # e[s, u] + c[i, u] (e is symmetric)
                if ep.size <= _STACK_MAX:
                    parts.append(ep)
            lfs = _stacked(_lf, parts)
            lf_rm, lf_row, lf_rs, h_rn, h_r, h_sn, h_s = lfs[:7]
            X = lf_rm - lf_row  # (N, K), u = r_i excluded below
            XR = X.sum(1) - X[ar, rr]
            if dense:
                lf_e = lfs[7]
                ZS = z_sums(lfs[8] - lf_e[None, :, :])
            else:
                lf_e = tables["lf_e"]
                lf_p = lfs[9] if len(lfs) > 9 else _lf(ep)
                ZS = z_sums(lf_p - lf_e[pu], lfs[7] - lf_e[kk, kk][None, :], lfs[8] - lf_e[rr])
            rs = lf_rs - lf_row
            dr = ((err_ - 2 * cr) / 2 * _LN2 + h_rn) - (err_ / 2 * _LN2 + h_r)
            ds = ((ess + 2 * c) / 2 * _LN2 + h_sn) - (ess / 2 * _LN2 + h_s)
            cost -= (XR[:, None] - X) + ZS + rs + dr[:, None] + ds
            er_r, nr_r = er[rr], nr[rr]
            er_s = er[None, :] + ki[:, None]
            nr_s = np.broadcast_to(nr[None, :] + 1, er_s.shape)
            bt_rm, bt_r0, bt_sa, bt_s0 = _stacked(self._block_term, [er_r - ki, er_r, er_s, er],
                                                   [nr_r - 1, nr_r, nr_s, nr])
            cost += (bt_rm - bt_r0)[:, None] + (bt_sa - bt_s0[None, :])
            if self.degree_prior == "distributed":
                kd = self.kidx[nodes]
                cost += np.log(self.H[rr, kd])[:, None] - np.log(self.H[:, kd].T + 1)
        if self.has_w and self.wstruct == "assortative":
            Wd = self.W[kk, kk]  # (K, 4)
            off = self.Wtot - Wd.sum(0)
            Drr = D4[ar, rr]  # (N, 4)
            lm_rm, lm_r, lm_sa, lm_s, lm_oa, lm_o = _stacked(self.wm.logmarg, [
                Wd[rr] - Drr, Wd[rr], Wd[None, :, :] + D4, Wd,
                off[None, None, :] + Drr[:, None, :] - D4, off[None, :]], vector=True)
            cost -= (lm_rm - lm_r)[:, None] + (lm_sa - lm_s[None, :]) + (lm_oa - lm_o)
        elif self.has_w:
            W = self.W
            Drr = D4[ar, rr]  # (N, 4)
            Wrr = W[rr, rr]
            Wss = W[kk, kk]  # (K, 4)
            if dense:
                Wr = W[rr]  # (N, K, 4)
                lmW, lm_rm, lm_add, lm_rs, lm_rrm, lm_sa = _stacked(self.wm.logmarg, [
                    W, Wr - D4, W[None, :, :, :] + D4[:, None, :, :], Wr - D4 + Drr[:, None, :],
                    Wrr - Drr, Wss[None, :, :] + D4], vector=True)
                X = lm_rm - lmW[rr]
                ds = lm_sa - lmW[kk, kk][None, :]
                ZS = z_sums(lm_add - lmW[None, :, :])
            else:
                lmW, lmWT = tables["lmW"], tables["lmWT"]
                WT = W.transpose(1, 0, 2)  # a view: WT[u, s] = W[s, u]
                Dp = D4[pn, pu]  # (pairs, 4)
                lm_dd = lmW[kk, kk]
                # leaving r_i (u with edges) and joining s's internal edges (s with edges)
                # at the pairs; (N, s) terms through (s, r_i); Z's terms at (pair, s) if few
                parts = [W[rr[pn], pu] - Dp, Wss[pu] + Dp, W[rr] - D4 + Drr[:, None, :],
                         Wrr - Drr, WT[rr] + Drr[:, None, :]]
                if K * len(pu) <= _STACK_MAX:
                    parts.append(WT[pu] + Dp[:, None, :])
                lms = _stacked(self.wm.logmarg, parts, vector=True)
                lm_rmp, lm_sap, lm_rs, lm_rrm, lm_sr = lms[:5]
                if len(lms) > 5:
                    lm_p = lms[5]
                else:  # many: only the statistics the family reads, one (pair, s) array each
                    WTc = tables["WTc"]
                    lm_p = self.wm.lm(*[None if WTc[j] is None else WTc[j][pu] + Dp[:, j, None]
                                        for j in range(4)])
                X = scatter(lm_rmp - lmW[rr[pn], pu])
                ds = scatter(lm_sap - lm_dd[pu])  # = Z[i, s, s]
                ZS = z_sums(lm_p - lmWT[pu], ds, lm_sr - lmWT[rr])
            XR = X.sum(1) - X[ar, rr]
            rs = lm_rs - lmW[rr]
            dr = lm_rrm - lmW[rr, rr]
            cost -= (XR[:, None] - X) + ZS + rs + dr[:, None] + ds
        cost[ar, rr] = 0.0
        empty = np.flatnonzero(nr == 0)
        if empty.size > 1:
            cost[:, empty[1:]] = np.inf
        # moving the only node of a block into an empty block changes nothing
        if r_empties.any():
            cost[np.ix_(r_empties, s_new)] = np.where(cost[np.ix_(r_empties, s_new)] == np.inf,
                                                      np.inf, 0.0)
        return cost

    def screened_sweeps(self, rng, max_rounds=100, tol=1e-6, batch=True):
        """Node moves until no single move lowers the DL.

        Each round scores every node's every move at once (``move_costs_all``) and then moves
        the nodes that had an improving move: with ``batch``, all at once when that lowers the
        DL (``_batch_move``), else (or without ``batch``) by exact sequential visits in random
        order (``sweep``). The next round scores only the moved nodes and their neighbours; a
        round with no mover among every node ends. Returns the number of rounds.
        """
        active = None  # None = every node
        dl_now = None  # DL of the current state, when known (saves recomputing it)
        rebuilt = False  # the state was just rebuilt compacted (by _batch_move)
        for it in range(max_rounds):
            if not rebuilt:
                self.compact()
            cost = self.move_costs_all(active)
            rows = np.flatnonzero(cost.min(1) < -tol)
            movers = rows if active is None else active[rows]
            if movers.size == 0:
                if active is None:
                    return it
                active = None  # confirm on every node before stopping
                continue
            moved = None
            if batch:
                moved, dl_now = self._batch_move(movers, cost[rows], tol, dl_now)
            rebuilt = moved is not None
            if moved is None:
                before = self.b.copy()
                self.sweep(rng, nodes=movers)
                moved = np.flatnonzero(self.b != before)
                dl_now = None
            if moved.size == 0:
                active = None
                continue
            # next round: the moved nodes and their neighbours (others rarely change)
            nb = np.concatenate([self.nbr[self.ptr[i]:self.ptr[i + 1]] for i in moved])
            active = np.unique(np.concatenate([moved, nb]))
        return max_rounds

    def _batch_move(self, movers, cost, tol, dl0=None):
        """Move many nodes at once, each to its best block in ``cost`` (rows of
        ``move_costs_all`` for ``movers``), if that lowers the DL.

        Returns (the nodes moved, the new DL or None if not computed), or (None, the current
        DL) with the state unchanged when no batch lowered the DL. ``dl0``: the current DL if
        known. The screening cost of one move from the current state is exact; moves made
        together interact (through the edges between movers and the blocks' shared totals),
        so the batch is kept only if the recomputed DL is lower by more than ``tol``: first
        every mover, then only movers not adjacent to a more improving one taken before. At
        most one node opens a new block (each was costed as opening its own).
        """
        target = np.argmin(cost, axis=1)
        gain = cost[np.arange(len(movers)), target]
        order = np.argsort(gain, kind="stable")
        new_slot = self.nr[target] == 0
        keep = ~new_slot
        keep[order[new_slot[order]][:1]] = True
        before = self.b.copy()
        everyone = np.flatnonzero(keep)
        for take in (everyone, None):
            if take is None:
                take = self._independent(movers, order, keep)
                if len(take) == len(everyone):
                    break
            nodes = movers[take]
            b = before.copy()
            b[nodes] = target[take]
            if len(take) == 1:  # a single move: its screening cost is exact
                self.set_partition(b)
                return nodes, None
            if dl0 is None:
                dl0 = self.dl()
            self.set_partition(b)
            dl1 = self.dl()
            if dl1 < dl0 - tol:
                return nodes, dl1
            self.set_partition(before)
        return None, dl0

    def _independent(self, movers, order, keep):
        """Positions (in ``movers``) of the most improving movers, in ``order``, skipping any
        node adjacent to one already taken."""
        blocked = np.zeros(self.N, dtype=bool)
        take = []
        for j in order:
            i = movers[j]
            if keep[j] and not blocked[i]:
                take.append(j)
                blocked[self.nbr[self.ptr[i]:self.ptr[i + 1]]] = True
        return np.asarray(take, dtype=np.int64)

    # -- merges ----------------------------------------------------------------------------------
    def merge_costs(self):
        """DL change of merging each pair of occupied blocks (vectorised).

        Returns (occupied block ids, matrix D with D[x, y] = dDL of merging occ[x] and occ[y],
        +inf on the diagonal).
        """
        occ = np.flatnonzero(self.nr > 0)
        B = len(occ)
        if B < 2:
            return occ, np.full((B, B), np.inf)
        nr = self.nr[occ]
        # number of blocks and partition prior (the ln n_r! parts cancel with the degree
        # prior's for the distributed prior; handled explicitly below)
        D = np.full((B, B), float(self._b_terms(B - 1) - self._b_terms(B)))
        D += -_lf(nr[:, None] + nr[None, :]) + _lf(nr)[:, None] + _lf(nr)[None, :]
        iu = np.eye(B, dtype=bool)
        if self.topology:
            e = self.e[np.ix_(occ, occ)]
            er = self.er[occ]
            diag = np.diag(e)
            off = e.copy()
            off[iu] = 0.0
            lfo = _lf(off)
            # rows r and s become one row: sum_u lf(e_ru + e_su) - lf(e_ru) - lf(e_su), u != r, s
            D -= _pair_row_sums(off, lambda a, b: _lf(a + b) - _lf(a) - _lf(b))
            D += lfo  # the -lf(e_rs) term disappears
            g = lambda x: x / 2 * _LN2 + _lf(x / 2)  # noqa: E731
            D -= g(diag[:, None] + diag[None, :] + 2 * off) - g(diag)[:, None] - g(diag)[None, :]
            bt = self._block_term(er, nr)
            erm = er[:, None] + er[None, :]
            nrm = nr[:, None] + nr[None, :]
            if self.degree_prior == "distributed":
                bm = _lf(erm) + log_q(erm.ravel(), nrm.ravel()).reshape(B, B)
                H = self.H[occ]
                lfH = _lf(H).sum(1)
                D += bm - bt[:, None] - bt[None, :]
                D -= _pair_sums(H, lambda a, b: _lf(a + b)) - lfH[:, None] - lfH[None, :]
                D += _lf(nrm) - _lf(nr)[:, None] - _lf(nr)[None, :]
            else:
                bm = _lf(erm) + _lmulti(nrm, erm)
                D += bm - bt[:, None] - bt[None, :]
        W = self.W[np.ix_(occ, occ)]  # (B, B, 4)
        Woff = W.copy()
        Woff[iu] = 0.0
        if self.wstruct == "assortative":
            idx = np.arange(B)
            Wd = W[idx, idx]
            off = self.Wtot - Wd.sum(0)
            lmd = self.wm.logmarg(Wd)
            merged = Wd[:, None, :] + Wd[None, :, :] + Woff
            D -= self.wm.logmarg(merged) - lmd[:, None] - lmd[None, :]
            D -= self.wm.logmarg(off[None, None, :] - Woff) - self.wm.logmarg(off)
            D[iu] = np.inf
            return occ, D
        lm = self.wm.logmarg(Woff)  # (B, B)
        logmarg = self.wm.logmarg
        D -= _pair_row_sums(Woff, lambda a, b: logmarg(a + b) - logmarg(a) - logmarg(b))
        idx = np.arange(B)
        Wd = W[idx, idx]  # (B, 4)
        lmd = self.wm.logmarg(Wd)
        merged_diag = Wd[:, None, :] + Wd[None, :, :] + Woff
        D -= self.wm.logmarg(merged_diag) - lmd[:, None] - lmd[None, :] - lm
        D[iu] = np.inf
        return occ, D

    def merge(self, r, s):
        """Merge block s into block r and relabel."""
        self.b[self.b == s] = r
        self.compact()


def _stacked(f, parts, parts2=None, vector=False):
    """``[f(p) for p in parts]`` (or ``f(p, q)`` pairing ``parts`` with ``parts2``) in one
    call of ``f`` on the concatenated arguments, for an elementwise ``f``; with ``vector``,
    the last axis of each part is a vector of statistics that ``f`` reduces to one value.
    Parts are numpy arrays."""
    tail = 1 if vector else 0
    shapes = [p.shape[:p.ndim - tail] for p in parts]
    flat = lambda ps: np.concatenate(  # noqa: E731
        [p.reshape((-1,) + p.shape[p.ndim - tail:]) for p in ps])
    out = f(flat(parts)) if parts2 is None else f(flat(parts), flat(parts2))
    res, a = [], 0
    for sh in shapes:
        n = math.prod(sh)
        res.append(out[a:a + n].reshape(sh))
        a += n
    return res


_TRIU = {}


def _triu(B: int, k: int):
    """``np.triu_indices(B, k)``, cached (the DL is evaluated often at the same few B)."""
    key = (B, k)
    if key not in _TRIU:
        _TRIU[key] = np.triu_indices(B, k)
    return _TRIU[key]


# Largest temporary (bytes) of the vectorised move and merge costs: rows are costed in chunks
# so memory stays O(cap²) per chunk instead of O(N cap²) or O(B³) (2,000 singleton blocks
# would otherwise ask for 60 GiB).
CHUNK_BYTES = 64 << 20
# The move costs' sums over blocks u (SBMState._move_costs_block): with at most _DENSE_CAP
# block slots they are evaluated densely, else only where the node has edges; with at most
# _STACK_MAX (block, pair) values, in the same numpy call as the other terms (the per-call
# cost dominates small arrays), else apart (no copy into one stacked argument). Elementwise
# the values are the same either way; only the summation order differs.
_DENSE_CAP = 16
_STACK_MAX = 1 << 14


def _chunks(n_rows: int, bytes_per_row):
    """Slices of ``range(n_rows)`` whose rows need at most ``CHUNK_BYTES`` together (≥ 1 row).

    ``bytes_per_row``: one number for every row, or an array of each row's bytes (then each
    slice takes as many consecutive rows as fit)."""
    if np.ndim(bytes_per_row) and np.sum(bytes_per_row) <= CHUNK_BYTES:
        return [slice(0, n_rows)] if n_rows else []
    if np.ndim(bytes_per_row) == 0:
        step = max(1, CHUNK_BYTES // max(1, int(bytes_per_row)))
        return [slice(a, min(a + step, n_rows)) for a in range(0, n_rows, step)]
    cum = np.cumsum(np.maximum(np.asarray(bytes_per_row, dtype=np.int64), 1))
    out, a = [], 0
    while a < n_rows:
        base = cum[a - 1] if a else 0
        z = max(a + 1, int(np.searchsorted(cum, base + CHUNK_BYTES, side="right")))
        out.append(slice(a, z))
        a = z
    return out


def _pair_sums(X: np.ndarray, f) -> np.ndarray:
    """(B, B) ``S[r, s] = Σ_u f(X[r, u], X[s, u])`` (summed over axis 1; trailing axes of ``f``'s
    result, e.g. logmarg's statistics, are reduced by ``f``), by chunks of rows r."""
    B = X.shape[0]
    out = np.empty((B, B))
    for rows in _chunks(B, 4 * X[0].size * B * 8):
        out[rows] = f(X[rows, None], X[None, :]).sum(2)
    return out


def _pair_row_sums(off: np.ndarray, f) -> np.ndarray:
    """:func:`_pair_sums` of the merge of rows r and s over the other blocks, u ∉ {r, s}:
    ``Σ_u f(off[r, u], off[s, u])`` minus the u = r and u = s terms."""
    B = off.shape[0]
    out = np.empty((B, B))
    idx = np.arange(B)
    for rows in _chunks(B, 4 * off[0].size * B * 8):
        T = f(off[rows, None], off[None, :])  # (rows, B, B)
        r = idx[rows]
        T[np.arange(len(r))[:, None], idx[None, :], r[:, None]] = 0.0  # u = r
        T[np.arange(len(r))[:, None], idx[None, :], idx[None, :]] = 0.0  # u = s
        out[rows] = T.sum(2)
    return out


# =============================================================================================
# Part 2: partition() and helpers
# =============================================================================================
__all__ = ["PartitionResult", "partition", "graph_from_dense", "METHODS"]

METHODS = ("wsbm", "leiden-modularity", "leiden-rb", "leiden-cpm")
WEIGHT_MODELS = ("exponential", "lognormal")  # "auto" picks one of these by DL
WEIGHT_STRUCTURES = ("pairs", "assortative")  # likewise
SPARSIFY = ("none", "knn", "top")
# Largest edge density (edges / node pairs) at which refinement moves nodes in batches (see
# _wsbm and docs/communities.md, "Fitting"); denser graphs use sequential node visits.
BATCH_MAX_DENSITY = 0.5


@dataclass
class PartitionResult:
    """Result of :func:`partition`.

    membership: int32 (n vertices); communities 0..K-1 numbered by decreasing size (ties by
        lowest vertex index); -1 for vertices with no edge of positive weight.
    n_communities: K.
    score: for ``wsbm``, the description length in nats of graph + flat partition (level 0)
        under the model (lower is better; comparable only between partitions of the same graph
        and model; ``details["dl_one_block"]`` is the DL of "no structure");
        for Leiden methods, the quality function leidenalg maximised (higher is better).
    stability: mean pairwise adjusted Rand index between the partitions of the ``n_runs``
        runs (1 = every run agreed); NaN when n_runs == 1.
    levels: nested partitions, finest first, coarsest last; ``levels[0]`` is the flat
        partition; ``[membership]`` when there is no hierarchy.
    method: the method used.
    params: every parameter used, defaults included (for provenance).
    details: extra diagnostics (DL terms, per-run scores and memberships, ...).
    """

    membership: np.ndarray
    n_communities: int
    score: float
    stability: float
    levels: list
    method: str
    params: dict
    details: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# input handling
# ---------------------------------------------------------------------------------------------
def _edge_weights(graph: igraph.Graph, weights) -> np.ndarray | None:
    if weights is None:
        return None
    if isinstance(weights, str):
        if weights not in graph.es.attributes():
            raise ValueError(
                f"graph has no edge attribute {weights!r} (attributes: "
                f"{graph.es.attributes()}); pass weights=None for an unweighted graph")
        w = graph.es[weights]
    else:
        w = weights
    try:
        w = np.asarray(w, dtype=float).ravel()
    except (TypeError, ValueError):
        raise ValueError("edge weights must be numbers") from None
    if w.shape[0] != graph.ecount():
        raise ValueError(f"got {w.shape[0]} weights for {graph.ecount()} edges")
    if np.isnan(w).any():
        raise ValueError("edge weights contain NaN")
    if np.isinf(w).any():
        raise ValueError("edge weights contain infinite values")
    if (w < 0).any():
        raise ValueError("edge weights must be non-negative (found a negative weight)")
    return w


def _simple_edges(graph: igraph.Graph, weights):
    """(N, edges (E,2) with i<j unique, weights (E,) > 0 or None) of a validated graph."""
    if not isinstance(graph, igraph.Graph):
        raise ValueError(f"graph must be an igraph.Graph, not {type(graph).__name__}")
    if graph.is_directed():
        raise ValueError("graph must be undirected (got a directed graph)")
    N = graph.vcount()
    w = _edge_weights(graph, weights)
    el = np.asarray(graph.get_edgelist(), dtype=np.int64).reshape(-1, 2)
    keep = el[:, 0] != el[:, 1]  # self-loops are ignored
    if w is not None:
        keep &= w > 0  # zero weight = no edge
    el = np.sort(el[keep], axis=1)
    ww = None if w is None else w[keep]
    if len(el):
        key = el[:, 0] * N + el[:, 1]
        uniq, inv = np.unique(key, return_inverse=True)
        if len(uniq) < len(key):  # parallel edges: merged, weights summed
            el = np.column_stack([uniq // N, uniq % N])
            if ww is not None:
                ww = np.bincount(inv, weights=ww, minlength=len(uniq))
    return N, el, ww


def _check_int(name, v, lo=1):
    return validation.check_int(name, v, low=lo)


def _check_pos(name, v):
    return validation.check_number(name, v, low=0, low_open=True)


def _relabel_by_size(b: np.ndarray) -> np.ndarray:
    """Communities renumbered 0..K-1 by decreasing size (ties: lowest first vertex); -1 kept."""
    b = np.asarray(b, dtype=np.int64)
    out = np.full(b.shape, -1, dtype=np.int32)
    m = b >= 0
    if not m.any():
        return out
    labs, first, counts = np.unique(b[m], return_index=True, return_counts=True)
    idx_first = np.flatnonzero(m)[first]
    order = np.lexsort((idx_first, -counts))
    newlab = np.empty(len(labs), dtype=np.int32)
    newlab[order] = np.arange(len(labs), dtype=np.int32)
    out[m] = newlab[np.searchsorted(labs, b[m])]
    return out


def _stability(runs: list) -> float:
    if len(runs) < 2:
        return float("nan")
    return float(np.mean([adjusted_rand_index(a, b) for a, b in combinations(runs, 2)]))


# ---------------------------------------------------------------------------------------------
# Leiden
# ---------------------------------------------------------------------------------------------
def _leiden(g: igraph.Graph, wname, kind: str, resolution: float, seed: int, n_iterations=2):
    if kind == "modularity":
        p = leidenalg.find_partition(g, leidenalg.ModularityVertexPartition, weights=wname,
                                     seed=seed, n_iterations=n_iterations)
    elif kind == "rb":
        p = leidenalg.find_partition(g, leidenalg.RBConfigurationVertexPartition, weights=wname,
                                     resolution_parameter=resolution, seed=seed,
                                     n_iterations=n_iterations)
    else:
        p = leidenalg.find_partition(g, leidenalg.CPMVertexPartition, weights=wname,
                                     resolution_parameter=resolution, seed=seed,
                                     n_iterations=n_iterations)
    return np.asarray(p.membership, dtype=np.int64), float(p.quality())


def _seed_partition(g: igraph.Graph, wname, resolution: float, seed: int) -> np.ndarray:
    """Fast Leiden (igraph's C implementation, modularity objective with ``resolution``,
    i.e. RBConfiguration) used only to seed the SBM search; seeded via a private RNG."""
    import random

    igraph.set_random_number_generator(random.Random(seed))
    try:
        cl = g.community_leiden(objective_function="modularity", weights=wname,
                                resolution=resolution, n_iterations=2)
    finally:
        igraph.set_random_number_generator(random)
    return np.asarray(cl.membership, dtype=np.int64)


def _sub_graph(n, edges, w):
    g = igraph.Graph(n=n, edges=edges.tolist())
    if w is not None:
        g.es["weight"] = w.tolist()
    return g


# ---------------------------------------------------------------------------------------------
# weighted SBM
# ---------------------------------------------------------------------------------------------
def node_corrected_weights(edges: np.ndarray, w: np.ndarray, n: int,
                           interactions: bool = True, return_log_shift: bool = False):
    """Weights with the node-level part of their variation divided out.

    Least-squares fit, over the edges, of
    ``ln w_ij ~ c + a_i + a_j [+ g(x_i, x_j)]`` where a_i is a free effect per node (each
    node's typical weight) and, with ``interactions``, g is a symmetric polynomial
    interaction of the standardised log strengths x (terms x_i x_j, x_i x_j (x_i + x_j),
    x_i^2 x_j^2) -- so weights that depend on the product or the combination of the two
    ends' strengths are explained too. The fit is done once, independently of any partition
    (the weight analogue of degree correction); the returned weights exp(residual) are then
    modelled per block pair. Positive weights out; with ``return_log_shift`` also the fitted
    ln-shift of each edge (``ln w − ln w'``) and the number of fitted parameters, which
    :func:`_wsbm` needs to compare corrected and raw weights by description length.
    """
    y = np.log(w)
    E = len(edges)
    i, j = edges[:, 0], edges[:, 1]
    s = np.bincount(i, weights=w, minlength=n) + np.bincount(j, weights=w, minlength=n)
    cols = [np.ones(E)]
    if interactions:
        x = np.log(np.maximum(s, 1e-300))
        sd = x[s > 0].std()
        x = (x - x[s > 0].mean()) / (sd if sd > 1e-12 else 1.0)
        xi, xj = x[i], x[j]
        cols += [xi * xj, xi * xj * (xi + xj), (xi * xj) ** 2]
    F = np.column_stack(cols)  # (E, p)
    # normal equations of [incidence | F] with a tiny ridge: the intercept is collinear with
    # the node effects (and bipartite components add another direction); the ridge picks one
    # solution, the residuals -- all that is used -- are the same for every solution
    Inc = sp.csr_matrix((np.ones(2 * E), (np.r_[np.arange(E), np.arange(E)], np.r_[i, j])),
                        shape=(E, n))
    X = sp.hstack([Inc, sp.csr_matrix(F)]).tocsr()
    G = (X.T @ X).tocsc()
    G = G + sp.diags(1e-9 * (1.0 + np.abs(G.diagonal())))
    # sparse direct solve: single-threaded and quick for these small systems (a dense LAPACK
    # solve was erratic on a loaded multi-user machine)
    beta = spsolve(G.tocsc(), X.T @ y)
    shift = X @ beta
    if return_log_shift:
        return np.exp(y - shift), shift, n + F.shape[1]
    return np.exp(y - shift)


def _greedy_merges(st: SBMState) -> None:
    while st.B > 1:
        occ, D = st.merge_costs()
        x, y = np.unravel_index(int(np.argmin(D)), D.shape)
        if not D[x, y] < -1e-9:
            break
        st.merge(int(occ[x]), int(occ[y]))


def _refine(st: SBMState, rng, max_sweeps: int, tol: float, batch: bool = True) -> None:
    """Greedy node moves until no single move lowers the DL, then merges; repeat until stable.
    ``batch``: move the improving nodes of a round together (see ``screened_sweeps``)."""
    for _ in range(50):
        st.screened_sweeps(rng, max_rounds=max_sweeps, tol=tol, batch=batch)
        st.compact()
        before = st.B
        _greedy_merges(st)
        if st.B == before:
            break


def _nested_levels(st: SBMState) -> list:
    """Nested levels above the flat partition, from the nested-SBM prior on the block graph.

    The block graph (B nodes, e_rs edges) is itself described by a non-degree-corrected
    multigraph SBM: a grouping c of the B blocks into C groups costs
    sum_{g<h} ln (( n_g n_h, m_gh )) + sum_g ln (( n_g(n_g+1)/2, m_gg )) + partition prior,
    plus ln (( C(C+1)/2, E )) for the level above it, against ln (( B(B+1)/2, E )) for no
    level. Groupings are built by greedy merges; a level is kept while it lowers the DL.
    Returns a list of block->group maps, finest first.
    """
    occ = np.flatnonzero(st.nr > 0)
    e = st.e[np.ix_(occ, occ)].copy()
    m = e.copy()
    m[np.diag_indices_from(m)] /= 2.0  # edges, self-loops once
    E = float(st.E)
    maps = []
    while m.shape[0] > 2:
        B = m.shape[0]

        def cost(c):
            C = int(c.max()) + 1
            n = np.bincount(c, minlength=C).astype(float)
            onehot = np.zeros((B, C))
            onehot[np.arange(B), c] = 1.0
            mu = np.triu(m)
            mg = onehot.T @ mu @ onehot
            mg = np.triu(mg) + np.triu(mg.T, 1)
            iu = np.triu_indices(C, 1)
            L = _lmulti(n[iu[0]] * n[iu[1]], mg[iu]).sum()
            L += _lmulti(n * (n + 1) / 2.0, np.diag(mg)).sum()
            L += np.log(B) + _lbinom(B - 1.0, C - 1.0) + _lf(B) - _lf(n).sum()
            L += _lmulti(C * (C + 1) / 2.0, E)
            return float(L)

        c = np.arange(B)
        best = cost(c)
        flat = float(_lmulti(B * (B + 1) / 2.0, E))
        while c.max() > 0:
            C = int(c.max()) + 1
            trial = []
            for x, y in combinations(range(C), 2):
                cc = c.copy()
                cc[cc == y] = x
                _, cc = np.unique(cc, return_inverse=True)
                trial.append((cost(cc), cc))
            val, cc = min(trial, key=lambda t: t[0])
            if val < best - 1e-9:
                best, c = val, cc
            else:
                break
        C = int(c.max()) + 1
        if C >= B or C < 2 or best >= flat - 1e-9:
            break
        maps.append(c)
        onehot = np.zeros((B, C))
        onehot[np.arange(B), c] = 1.0
        mu = np.triu(m)
        mg = onehot.T @ mu @ onehot
        m = np.triu(mg) + np.triu(mg.T, 1)
        m = m + np.triu(m, 1).T
    return maps


def _wsbm(graph, weights, *, random_state, n_runs, weight_model, weight_structure,
          node_correction, weight_interactions,
          degree_prior, resolutions, n_refine, max_sweeps, tol, hierarchy, level, topology):
    N, edges, w = _simple_edges(graph, weights)
    present = np.zeros(N, dtype=bool)
    present[edges.ravel()] = True
    params = dict(method="wsbm", weights=weights if isinstance(weights, (str, type(None)))
                  else "<array>", n_runs=n_runs, random_state=random_state,
                  weight_model=weight_model if w is not None else "none",
                  weight_structure=weight_structure if w is not None else "none",
                  node_correction=node_correction,
                  weight_interactions=bool(weight_interactions),
                  degree_prior=degree_prior, resolutions=list(resolutions), n_refine=n_refine,
                  max_sweeps=max_sweeps, tol=tol, hierarchy=hierarchy, level=level,
                  topology=topology)
    idx = np.flatnonzero(present)
    n = len(idx)
    if n == 0:
        mem = np.full(N, -1, dtype=np.int32)
        return PartitionResult(mem, 0, 0.0, float("nan") if n_runs < 2 else 1.0, [mem], "wsbm",
                               params, {"note": "no edges of positive weight"})
    remap = np.full(N, -1, dtype=np.int64)
    remap[idx] = np.arange(n)
    sedges = remap[edges]
    complete = len(sedges) == n * (n - 1) // 2
    use_topology = (not complete) if topology == "auto" else bool(topology)
    params["topology_used"] = use_topology
    # Candidate weights: raw, and/or with node propensities divided out. "auto" chooses by
    # description length: the corrected weights pay the Jacobian of the change of variables
    # (sum of the fitted ln-shifts, so both are densities of the same raw weights) and the
    # fitted parameters (BIC, k/2 ln E). Correction wins where weights vary by node (LFR's
    # s_i = k_i^beta); it loses on a CP component's pattern, where a group's high weights ARE
    # a node-propensity pattern (measured in docs/communities.md).
    weight_sets = {}
    if w is not None:
        if node_correction in (False, "auto"):
            weight_sets["raw"] = (w, 0.0)
        if node_correction in (True, "auto"):
            wc, shift, k = node_corrected_weights(sedges, w, n, interactions=weight_interactions,
                                                  return_log_shift=True)
            weight_sets["corrected"] = (wc, float(shift.sum()) + 0.5 * k * np.log(len(w)))
    ww = None
    g = _sub_graph(n, sedges, w)
    rng = np.random.default_rng(random_state)
    seeds = [int(x) for x in rng.integers(0, 2**31 - 1, size=n_runs)]

    def candidates(seed):
        cands = [np.zeros(n, dtype=np.int64)]
        for wname in ([None, "weight"] if w is not None else [None]):
            for res in resolutions:
                cands.append(_seed_partition(g, wname, res, seed))
        return cands

    first = candidates(seeds[0])
    family_dl = {}
    offset = 0.0
    if not weight_sets:
        family, structure, chosen = "none", "pairs", None
    else:
        # weights (raw/corrected), family and structure: given, or chosen by description
        # length at the best seed partition (Bayesian model selection between alternatives)
        fams = WEIGHT_MODELS if weight_model == "auto" else (weight_model,)
        structs = WEIGHT_STRUCTURES if weight_structure == "auto" else (weight_structure,)
        for ws, (wvals, extra) in weight_sets.items():
            # the block statistics depend on the weights only: one state per set of weights,
            # each seed partition scored under every family and structure
            models = {fam: make_weight_model(fam, wvals) for fam in fams}
            s_f = SBMState(n, sedges, wvals, np.zeros(n, dtype=np.int64), models[fams[0]],
                           degree_prior=degree_prior, topology=use_topology,
                           weight_structure=structs[0])
            vals = {(fam, struct): [] for fam in fams for struct in structs}
            for b in first:
                s_f.set_partition(b)
                rest = s_f.structure_dl()  # the same for every family and structure
                for fam, struct in vals:
                    s_f.set_weight_model(models[fam], struct)
                    vals[fam, struct].append(rest + s_f.weight_dl())
            for (fam, struct), v in vals.items():
                family_dl[f"{ws}/{fam}/{struct}"] = float(min(v)) + extra
        chosen, family, structure = min(family_dl, key=family_dl.get).split("/")
        ww, offset = weight_sets[chosen]
    params["node_correction_used"] = chosen == "corrected"
    params["weight_model_used"] = family
    params["weight_structure_used"] = structure
    wm = make_weight_model(family, ww)
    st = SBMState(n, sedges, ww, np.zeros(n, dtype=np.int64), wm, degree_prior=degree_prior,
                  topology=use_topology, weight_structure=structure)
    one_dl = st.dl() + offset
    runs, dls = [], []
    # Batch node moves on sparse graphs only. On the weighted-LFR set (edge density 0.06-0.23)
    # they reach as low a DL as sequential visits, 2.5x quicker. On the pipeline's component
    # graphs (density ~1: nearly every pair positive, every mover adjacent to every other, so
    # simultaneous moves interact strongly) they reached higher DLs than the sequential
    # random-order visits and the recovery of the planted groups dropped, so dense graphs keep
    # the sequential visits, whose random order also makes the runs differ. (No graph between
    # the two densities was measured; BATCH_MAX_DENSITY is set midway.)
    density = len(sedges) / (n * (n - 1) / 2) if n > 1 else 1.0
    batch = use_topology and density <= BATCH_MAX_DENSITY
    # With batch moves a refinement rarely uses the random stream, so a seed partition
    # already refined in an earlier run (the one-block partition always, Leiden's often)
    # is not refined again: its refined partition and DL are reused.
    refined = {}
    for run in range(n_runs):
        cands = first if run == 0 else candidates(seeds[run])
        scored = []
        seen = set()
        for b in cands:
            _, b = np.unique(b, return_inverse=True)
            key = tuple(b)
            if key in seen:
                continue
            seen.add(key)
            st.set_partition(b)
            scored.append((st.dl(), key, b))
        scored.sort(key=lambda t: t[0])
        best_dl, best_b = np.inf, None
        for _, key, b in scored[:n_refine]:
            if key not in refined or not batch:
                st.set_partition(b)
                _refine(st, rng, max_sweeps, tol, batch=batch)
                refined[key] = (st.dl() + offset, st.b.copy())
            d, b_ref = refined[key]
            if d < best_dl:
                best_dl, best_b = d, b_ref
        runs.append(best_b)
        dls.append(best_dl)
    j = int(np.argmin(dls))
    st.set_partition(runs[j])
    terms = st.dl_terms()
    flat = np.full(N, -1, dtype=np.int64)
    flat[idx] = st.b
    levels = [_relabel_by_size(flat)]
    # the nested levels describe the block graph's edge counts; on a complete graph (no
    # topology in the model) those are just n_r n_s, so there is no hierarchy to infer
    if hierarchy and use_topology and st.B > 2:
        cur = st.b.copy()
        for cmap in _nested_levels(st):
            cur = cmap[cur]
            lv = np.full(N, -1, dtype=np.int64)
            lv[idx] = cur
            levels.append(_relabel_by_size(lv))
    if not 0 <= level < len(levels):
        raise ValueError(f"level={level} but the hierarchy has {len(levels)} level(s) "
                         f"(0..{len(levels) - 1})")
    mem = levels[level]
    run_mems = []
    for b in runs:
        full = np.full(N, -1, dtype=np.int64)
        full[idx] = b
        run_mems.append(_relabel_by_size(full))
    details = dict(dl_terms=terms, weight_family_dl=family_dl, run_seeds=seeds,
                   run_scores=[float(x) for x in dls],
                   run_memberships=run_mems, dl_one_block=float(one_dl),
                   n_levels=len(levels))
    return PartitionResult(mem, int(mem.max()) + 1 if (mem >= 0).any() else 0,
                           float(dls[j]), _stability([r[idx] for r in run_mems]), levels,
                           "wsbm", params, details)


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------
def partition(graph: igraph.Graph, *, weights="weight", method: str = "wsbm", random_state=None,
              n_runs: int = 3, resolution: float = 1.0, weight_model: str = "auto",
              weight_structure: str = "auto",
              node_correction="auto", weight_interactions: bool = True,
              degree_prior: str = "distributed",
              resolutions=(0.5, 1.0, 2.0), n_refine: int = 3, max_sweeps: int = 100,
              tol: float = 1e-6, hierarchy: bool = True, level: int = 0,
              topology="auto") -> PartitionResult:
    """Partition an undirected weighted graph into communities.

    Parameters
    ----------
    graph: undirected ``igraph.Graph``.
    weights: name of a non-negative edge attribute, a sequence of one weight per edge, or
        None (unweighted). Zero-weight edges count as absent.
    method: ``"wsbm"`` (default), ``"leiden-modularity"``, ``"leiden-rb"``, ``"leiden-cpm"``.
    random_state: int seed (or None for fresh entropy); the same seed gives the same result.
    n_runs: independent runs (different seeds); the best is returned and their agreement is
        the ``stability``.
    resolution: resolution of ``leiden-rb`` and ``leiden-cpm`` (ignored by the others).
    weight_model: ``wsbm`` only: ``"exponential"``, ``"lognormal"`` or ``"auto"`` (smaller DL).
    weight_structure: ``wsbm`` only: ``"pairs"`` (a weight distribution per block pair),
        ``"assortative"`` (per block, plus one for all between-block edges) or ``"auto"``.
    node_correction: ``wsbm`` only: divide node weight propensities out of the weights first
        (True/False), or ``"auto"`` (default): whichever gives the smaller description length
        (the corrected weights pay the Jacobian of the change of variables and BIC for the
        fitted propensities).
    weight_interactions: ``wsbm`` only: include strength-interaction terms in that correction.
    degree_prior: ``wsbm`` only: ``"distributed"`` (Peixoto 2017) or ``"uniform"``.
    resolutions: ``wsbm`` only: resolutions of the Leiden (RBConfiguration) seed partitions,
        each run weighted and unweighted.
    n_refine: ``wsbm`` only: seed partitions refined in each run (the best by DL).
    max_sweeps, tol: ``wsbm`` only: cap on node-move rounds per refinement step, and the DL
        gain (nats) below which a move does not count.
    hierarchy: ``wsbm`` only: infer nested levels above the flat partition.
    level: which level becomes ``membership`` (0 = the flat, finest partition).
    topology: ``wsbm`` only: model which pairs are connected (True), not (False), or
        ``"auto"``: not for a complete graph (where the edge set carries no information).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    n_runs = _check_int("n_runs", n_runs)
    random_state = validation.check_seed("random_state", random_state)
    if method == "wsbm":
        if weight_model not in WEIGHT_MODELS + ("auto",):
            raise ValueError(f"unknown weight_model {weight_model!r}; choose one of "
                             f"auto, {', '.join(WEIGHT_MODELS)}")
        if weight_structure not in WEIGHT_STRUCTURES + ("auto",):
            raise ValueError(f"unknown weight_structure {weight_structure!r}; choose one of "
                             f"auto, {', '.join(WEIGHT_STRUCTURES)}")
        if degree_prior not in ("distributed", "uniform"):
            raise ValueError(f"unknown degree_prior {degree_prior!r}; choose 'distributed' "
                             "or 'uniform'")
        if node_correction not in ("auto", True, False):
            raise ValueError(f"node_correction must be 'auto', True or False (got {node_correction!r})")
        if topology not in ("auto", True, False):
            raise ValueError(f"topology must be 'auto', True or False (got {topology!r})")
        resolutions = tuple(_check_pos("resolutions entry", r) for r in resolutions)
        if not resolutions:
            raise ValueError("resolutions must not be empty")
        _check_int("level", level, lo=0)
        return _wsbm(graph, weights, random_state=random_state, n_runs=n_runs,
                     weight_model=weight_model, weight_structure=weight_structure,
                     node_correction=node_correction,
                     weight_interactions=weight_interactions, degree_prior=degree_prior,
                     resolutions=resolutions,
                     n_refine=_check_int("n_refine", n_refine),
                     max_sweeps=_check_int("max_sweeps", max_sweeps), tol=float(tol),
                     hierarchy=bool(hierarchy), level=level, topology=topology)
    kind = method.split("-", 1)[1]
    resolution = _check_pos("resolution", resolution)
    if level != 0:
        raise ValueError(f"{method} has a single level (level must be 0)")
    N, edges, w = _simple_edges(graph, weights)
    present = np.zeros(N, dtype=bool)
    present[edges.ravel()] = True
    idx = np.flatnonzero(present)
    remap = np.full(N, -1, dtype=np.int64)
    remap[idx] = np.arange(len(idx))
    g = _sub_graph(len(idx), remap[edges], w)
    rng = np.random.default_rng(random_state)
    params = dict(method=method, weights=weights if isinstance(weights, (str, type(None)))
                  else "<array>", n_runs=n_runs, random_state=random_state,
                  resolution=resolution if kind != "modularity" else None, n_iterations=2)
    runs, quals = [], []
    for _ in range(n_runs):
        seed = int(rng.integers(0, 2**31 - 1))
        if len(idx):
            b, q = _leiden(g, "weight" if w is not None else None, kind, resolution, seed)
        else:
            b, q = np.zeros(0, dtype=np.int64), 0.0
        full = np.full(N, -1, dtype=np.int64)
        full[idx] = b
        runs.append(_relabel_by_size(full))
        quals.append(q)
    j = int(np.argmax(quals))
    mem = runs[j]
    return PartitionResult(mem, int(mem.max()) + 1 if (mem >= 0).any() else 0, float(quals[j]),
                           _stability([r[idx] for r in runs]), [mem], method, params,
                           dict(run_scores=quals, run_memberships=runs))


def graph_from_dense(W, *, names=None, sparsify: str = "none", k: int | None = None,
                     fraction: float | None = None) -> igraph.Graph:
    """Undirected weighted igraph graph from a dense symmetric non-negative matrix.

    The diagonal is ignored; zero entries are not edges. ``sparsify``:
    ``"none"`` keeps every positive pair; ``"knn"`` keeps a pair when either end has it among
    its ``k`` heaviest pairs (default k = round(sqrt(n))); ``"top"`` keeps the heaviest
    ``fraction`` of the positive pairs (default 0.1). Edge attribute ``weight``; vertex
    attribute ``name`` when ``names`` is given.
    """
    A = np.asarray(W, dtype=float)
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"matrix must be square (got shape {A.shape})")
    if np.isnan(A).any():
        raise ValueError("matrix contains NaN")
    if np.isinf(A).any():
        raise ValueError("matrix contains infinite values")
    if (A < 0).any():
        raise ValueError("matrix must be non-negative (found a negative entry)")
    scale = max(float(np.abs(A).max()), 1e-300)
    if not np.allclose(A, A.T, rtol=1e-6, atol=1e-9 * scale):
        raise ValueError("matrix must be symmetric")
    if sparsify not in SPARSIFY:
        raise ValueError(f"unknown sparsify {sparsify!r}; choose one of {', '.join(SPARSIFY)}")
    n = A.shape[0]
    if names is not None:
        names = [str(x) for x in names]
        if len(names) != n:
            raise ValueError(f"got {len(names)} names for a {n} x {n} matrix")
    A = (A + A.T) / 2.0
    np.fill_diagonal(A, 0.0)
    iu = np.triu_indices(n, 1)
    keep = A[iu] > 0
    if sparsify == "knn":
        k = int(round(np.sqrt(n))) if k is None else _check_int("k", k)
        k = min(k, max(n - 1, 1))
        M = A.copy()
        np.fill_diagonal(M, -np.inf)
        nn = np.argsort(-M, axis=1, kind="stable")[:, :k]
        mark = np.zeros((n, n), dtype=bool)
        mark[np.repeat(np.arange(n), k), nn.ravel()] = True
        mark |= mark.T
        keep &= mark[iu]
    elif sparsify == "top":
        fraction = 0.1 if fraction is None else float(fraction)
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1] (got {fraction!r})")
        vals = A[iu][keep]
        if vals.size:
            m = max(1, int(round(fraction * vals.size)))
            thr = np.sort(vals)[::-1][m - 1]
            keep &= A[iu] >= thr
    src, dst = iu[0][keep], iu[1][keep]
    g = igraph.Graph(n=n, edges=list(zip(src.tolist(), dst.tolist())))
    g.es["weight"] = A[src, dst].tolist()
    if names is not None:
        g.vs["name"] = names
    return g

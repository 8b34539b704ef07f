"""Inference engine for the weighted degree-corrected SBM (internal; see ``wsbm.py``).

Description length (nats) of an undirected graph with positive edge weights, partitioned
into B non-empty blocks (Peixoto 2017, 2018; see docs/communities.md):

    Sigma = L_partition + L_edges + L_degrees + S_topology + L_weights

* ``L_partition = ln N + ln C(N-1, B-1) + ln N! - sum_r ln n_r!``
* ``L_edges     = ln multiset(B(B+1)/2, E)``        (uniform prior on the block edge counts)
* ``L_degrees   = sum_r ln q(e_r, n_r) + ln n_r! - sum_k ln n_k^r!``   ("distributed" degree prior)
* ``S_topology  = sum_r ln e_r! - sum_{r<s} ln e_rs! - sum_r ln e_rr!! - sum_i ln k_i!``
  (microcanonical degree-corrected SBM, Peixoto 2017, eq. 9; e_rr counts both ends)
* ``L_weights   = - sum_{r<=s} ln P(w_rs | prior)``  per block pair, the weights of its edges
  integrated over a conjugate prior (exponential or log-normal family).

Implementation notes: every term is a sum over blocks or block pairs, so a node move from
r to s only touches rows r and s. A move is done as "take node out" (mid state) then "put it
in" block s; the cost of putting it in is computed for every candidate s at once with numpy.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.special import gammaln, spence

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


def _lf(x):
    return gammaln(np.asarray(x, float) + 1.0)


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
class WeightModel:
    name = "none"

    def logmarg(self, S: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        return np.zeros(S.shape[:-1])

    def const(self) -> float:
        """Partition-independent part of -ln P(w) (Jacobian terms), for comparing families."""
        return 0.0


class ExponentialWeights(WeightModel):
    """w ~ Exponential(rate lam) per block pair, lam ~ Gamma(shape a0, rate b0)."""

    name = "exponential"

    def __init__(self, w: np.ndarray, a0: float = 1.0):
        self.a0 = float(a0)
        self.b0 = float(a0 * np.mean(w))  # prior mean of the rate = 1 / (mean weight)
        self._c = self.a0 * np.log(self.b0) - gammaln(self.a0)

    def logmarg(self, S):
        m = S[..., 0]
        X = S[..., 1]
        lp = self._c + gammaln(self.a0 + m) - (self.a0 + m) * np.log(self.b0 + X)
        return np.where(m > 0, lp, 0.0)


class LogNormalWeights(WeightModel):
    """ln w ~ Normal(mu, sigma^2) per block pair, (mu, sigma^2) ~ Normal-Inverse-Gamma.

    Hyperparameters from the whole graph's log-weights: mu0 = mean, kappa0 = 1, a0 = 1,
    b0 = a0 * variance (a weak, unit-free prior).
    """

    name = "lognormal"

    def __init__(self, w: np.ndarray, kappa0: float = 1.0, a0: float = 1.0):
        y = np.log(w)
        self.mu0 = float(y.mean())
        self.k0 = float(kappa0)
        self.a0 = float(a0)
        var = float(y.var())
        self.b0 = float(a0 * (var if var > 1e-12 else 1.0))
        self._jac = float(y.sum())  # -ln P(w) = -ln P(ln w) + sum ln w
        self._c = self.a0 * np.log(self.b0) - gammaln(self.a0)

    def logmarg(self, S):
        m = S[..., 0]
        Y = S[..., 2]
        Y2 = S[..., 3]
        mm = np.maximum(m, 1.0)
        ybar = Y / mm
        kn = self.k0 + m
        an = self.a0 + m / 2.0
        ss = np.maximum(Y2 - m * ybar * ybar, 0.0)
        bn = self.b0 + 0.5 * ss + self.k0 * m * (ybar - self.mu0) ** 2 / (2.0 * kn)
        lp = (-0.5 * m * np.log(2 * np.pi) + 0.5 * np.log(self.k0 / kn) + self._c
              - an * np.log(bn) + gammaln(an))
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
        self.lk = float(_lf(self.k).sum())
        self.adj = [sp.csr_matrix((np.concatenate([self.ew[:, j], self.ew[:, j]]), (src, dst)),
                                  shape=(self.N, self.N)) for j in range(4 if self.has_w else 1)]
        self.set_partition(b)

    # -- bookkeeping ---------------------------------------------------------------------------
    def set_partition(self, b):
        _, b = np.unique(np.asarray(b), return_inverse=True)
        self.b = b.astype(np.int64).ravel()
        self.cap = int(self.b.max()) + 2  # always keep at least one empty slot
        self._rebuild()

    def _rebuild(self):
        K = self.cap
        b = self.b
        br, bs = b[self.edges[:, 0]], b[self.edges[:, 1]]
        self.e = np.zeros((K, K))
        np.add.at(self.e, (br, bs), 1.0)
        np.add.at(self.e, (bs, br), 1.0)
        self.W = np.zeros((K, K, 4))
        np.add.at(self.W, (br, bs), self.ew)
        off = br != bs
        np.add.at(self.W, (bs[off], br[off]), self.ew[off])
        self.nr = np.bincount(b, minlength=K).astype(float)
        self.er = np.bincount(b, weights=self.k, minlength=K).astype(float)
        self.H = np.zeros((K, len(self.kvals)))
        np.add.at(self.H, (b, self.kidx), 1.0)

    def compact(self):
        """Relabel blocks 0..B-1 (keeping one empty slot)."""
        self.set_partition(self.b)

    @property
    def B(self) -> int:
        return int((self.nr > 0).sum())

    # -- description length ----------------------------------------------------------------------
    def _b_terms(self, B):
        """Terms that depend on the number of blocks only (partition + edge-count priors)."""
        B = np.asarray(B, float)
        out = _lbinom(self.N - 1.0, B - 1.0)
        if self.topology:
            out = out + _lmulti(B * (B + 1) / 2.0, float(self.E))
        return out

    def dl_terms(self) -> dict:
        """Description length (nats) split into its parts; see the module docstring."""
        N = self.N
        occ = self.nr > 0
        B = int(occ.sum())
        nr = self.nr[occ]
        out = {}
        out["L_partition"] = float(np.log(N) + _lbinom(N - 1.0, B - 1.0) + _lf(N) - _lf(nr).sum())
        if self.topology:
            e = self.e[np.ix_(occ, occ)]
            er = self.er[occ]
            iu = np.triu_indices(B, 1)
            diag = np.diag(e)
            out["S_topology"] = float(_lf(er).sum() - (diag / 2 * _LN2 + _lf(diag / 2)).sum()
                                      - self.lk - _lf(e[iu]).sum())
            out["L_edges"] = float(_lmulti(B * (B + 1) / 2.0, float(self.E)))
            if self.degree_prior == "distributed":
                out["L_degrees"] = float(log_q(er, nr).sum() + _lf(nr).sum()
                                         - _lf(self.H[occ]).sum())
            else:
                out["L_degrees"] = float(_lmulti(nr, er).sum())
        Wo = self.W[np.ix_(occ, occ)]
        if self.wstruct == "pairs":
            iu0 = np.triu_indices(B)
            lw = -self.wm.logmarg(Wo[iu0]).sum()
        else:
            Wd = Wo[np.arange(B), np.arange(B)]
            lw = -self.wm.logmarg(Wd).sum() - self.wm.logmarg(self.Wtot - Wd.sum(0))
        out["L_weights"] = float(lw + self.wm.const())
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
        """DL of putting the removed node i into each block of ``cand``, up to a common offset."""
        c = d[:, 0]
        nr = self.nr
        C = len(cand)
        ar = np.arange(C)
        Bmid = int((nr > 0).sum())
        newblk = nr[cand] == 0
        # partition prior: -ln n_s!  ->  -ln(n_s + 1); number of blocks
        cost = -np.log(nr[cand] + 1) + np.where(
            newblk, self._b_terms(Bmid + 1) - self._b_terms(Bmid), 0.0)
        if self.topology:
            ki = float(self.k[i])
            ess = self.e[cand, cand]
            cs = c[cand]
            dn = (ess + 2 * cs) / 2
            do = ess / 2
            cost -= (dn - do) * _LN2 + _lf(dn) - _lf(do)
            e = self.e[cand]  # (C, K): -sum_{u != s} [lf(e_su + c_u) - lf(e_su)]
            F = _lf(e + c[None, :]) - _lf(e)
            F[ar, cand] = 0.0
            cost -= F.sum(1)
            # block terms: e_u grows by c_u for every u, by k_i more for u = s; n_s + 1
            er = self.er
            base_old = self._block_term(er, nr)
            A = self._block_term(er + c, nr) - base_old
            s_new = self._block_term(er[cand] + c[cand] + ki, nr[cand] + 1)
            cost += A.sum() - A[cand] + s_new - base_old[cand]
            if self.degree_prior == "distributed":
                # + ln n_s! - sum_k ln n_k^s!  ->  + ln(n_s+1) - ln(n^s_{k_i}+1)
                cost += np.log(nr[cand] + 1) - np.log(self.H[cand, self.kidx[i]] + 1)
        if self.wstruct == "pairs":
            Wc = self.W[cand]  # (C, K, 4)
            cost -= (self.wm.logmarg(Wc + d[None, :, :]) - self.wm.logmarg(Wc)).sum(1)
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
        other empty slots).
        """
        K = self.cap
        nodes = np.arange(self.N) if nodes is None else np.asarray(nodes, dtype=np.int64)
        N = len(nodes)
        ar = np.arange(N)
        onehot = sp.csr_matrix((np.ones(self.N), (np.arange(self.N), self.b)),
                               shape=(self.N, K))
        D4 = np.zeros((N, K, 4))
        for j, A in enumerate(self.adj):
            D4[:, :, j] = (A[nodes] @ onehot).toarray()
        c = D4[:, :, 0]
        nr, er = self.nr, self.er
        B = int((nr > 0).sum())
        rr = self.b[nodes]
        cr = c[ar, rr]
        cost = np.zeros((N, K))
        # number of blocks and (when not cancelled by the degree prior) the partition prior
        r_empties = nr[rr] == 1
        s_new = nr == 0
        Bp = B - r_empties[:, None].astype(int) + s_new[None, :].astype(int)
        cost += self._b_terms(Bp) - self._b_terms(B)
        if not (self.topology and self.degree_prior == "distributed"):
            cost += np.log(nr[rr])[:, None] - np.log(nr + 1)[None, :]
        if self.topology:
            e = self.e
            ki = self.k[nodes].astype(float)
            X = _lf(e[rr] - c) - _lf(e[rr])  # (N, K), u = r_i excluded below
            XR = X.sum(1) - X[ar, rr]
            Z = _lf(e[None, :, :] + c[:, None, :]) - _lf(e)[None, :, :]  # (N, s, u)
            kk = np.arange(K)
            ZS = Z.sum(2) - Z[:, kk, kk] - Z[ar[:, None], kk[None, :], rr[:, None]]
            ers = e[rr]  # (N, K) e[r_i, s]
            rs = _lf(ers - c + cr[:, None]) - _lf(ers)
            g = lambda x: x / 2 * _LN2 + _lf(x / 2)  # noqa: E731
            err_ = e[rr, rr]
            dr = g(err_ - 2 * cr) - g(err_)
            ess = np.diag(e)[None, :]
            ds = g(ess + 2 * c) - g(ess)
            cost -= (XR[:, None] - X) + ZS + rs + dr[:, None] + ds
            bt_r = self._block_term(er[rr] - ki, nr[rr] - 1) - self._block_term(er[rr], nr[rr])
            bt_s = (self._block_term(er[None, :] + ki[:, None], nr[None, :] + 1)
                    - self._block_term(er, nr)[None, :])
            cost += bt_r[:, None] + bt_s
            if self.degree_prior == "distributed":
                kk = self.kidx[nodes]
                cost += np.log(self.H[rr, kk])[:, None] - np.log(self.H[:, kk].T + 1)
        if self.has_w and self.wstruct == "assortative":
            lm = self.wm.logmarg
            kk = np.arange(K)
            Wd = self.W[kk, kk]  # (K, 4)
            off = self.Wtot - Wd.sum(0)
            Drr = D4[ar, rr]  # (N, 4)
            dr = lm(Wd[rr] - Drr) - lm(Wd[rr])
            ds = lm(Wd[None, :, :] + D4) - lm(Wd)[None, :]
            do = lm(off[None, None, :] + Drr[:, None, :] - D4) - lm(off)
            cost -= dr[:, None] + ds + do
        elif self.has_w:
            W = self.W
            lm = self.wm.logmarg
            lmW = lm(W)  # (K, K)
            Wr = W[rr]  # (N, K, 4)
            X = lm(Wr - D4) - lmW[rr]
            XR = X.sum(1) - X[ar, rr]
            Z = lm(W[None, :, :, :] + D4[:, None, :, :]) - lmW[None, :, :]  # (N, s, u)
            kk = np.arange(K)
            ZS = Z.sum(2) - Z[:, kk, kk] - Z[ar[:, None], kk[None, :], rr[:, None]]
            Drr = D4[ar, rr]  # (N, 4)
            rs = lm(Wr - D4 + Drr[:, None, :]) - lmW[rr]
            Wrr = W[rr, rr]
            dr = lm(Wrr - Drr) - lm(Wrr)
            Wss = W[kk, kk]  # (K, 4)
            ds = lm(Wss[None, :, :] + D4) - lm(Wss)[None, :]
            cost -= (XR[:, None] - X) + ZS + rs + dr[:, None] + ds
        cost[ar, rr] = 0.0
        empty = np.flatnonzero(nr == 0)
        if empty.size > 1:
            cost[:, empty[1:]] = np.inf
        # moving the only node of a block into an empty block changes nothing
        cost[np.ix_(r_empties, s_new)] = np.where(cost[np.ix_(r_empties, s_new)] == np.inf,
                                                  np.inf, 0.0)
        return cost

    def screened_sweeps(self, rng, max_rounds=100, tol=1e-6):
        """Node moves until no single move lowers the DL.

        Each round scores every node's every move at once (``move_costs_all``) and then visits,
        with exact sequential updates, only the nodes that had an improving move.
        Returns the number of rounds.
        """
        active = None  # None = every node
        for it in range(max_rounds):
            self.compact()
            cost = self.move_costs_all(active)
            movers = np.flatnonzero(cost.min(1) < -tol)
            if active is not None:
                movers = active[movers]
            if movers.size == 0:
                if active is None:
                    return it
                active = None  # confirm on every node before stopping
                continue
            before = self.b.copy()
            self.sweep(rng, nodes=movers)
            moved = np.flatnonzero(self.b != before)
            if moved.size == 0:
                active = None
                continue
            # next round: the moved nodes and their neighbours (others rarely change)
            nb = np.concatenate([self.nbr[self.ptr[i]:self.ptr[i + 1]] for i in moved])
            active = np.unique(np.concatenate([moved, nb]))
        return max_rounds

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
            T = _lf(off[:, None, :] + off[None, :, :]) - lfo[:, None, :] - lfo[None, :, :]
            idx = np.arange(B)
            T[idx[:, None], idx[None, :], idx[:, None]] = 0.0  # u = r
            T[idx[:, None], idx[None, :], idx[None, :]] = 0.0  # u = s
            D -= T.sum(2)
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
                D -= _lf(H[:, None, :] + H[None, :, :]).sum(2) - lfH[:, None] - lfH[None, :]
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
        T = (self.wm.logmarg(Woff[:, None, :, :] + Woff[None, :, :, :])
             - lm[:, None, :] - lm[None, :, :])
        idx = np.arange(B)
        T[idx[:, None], idx[None, :], idx[:, None]] = 0.0
        T[idx[:, None], idx[None, :], idx[None, :]] = 0.0
        D -= T.sum(2)
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

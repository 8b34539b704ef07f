"""Partition-comparison scores: adjusted mutual information, adjusted Rand index, NMI.

Pure functions of two label vectors (any hashable labels, same length). No scikit-learn
dependency; the definitions and edge cases follow scikit-learn's so numbers are comparable:

* ``adjusted_rand_index`` -- Hubert & Arabie (1985) ARI.
* ``normalized_mutual_info`` -- MI / arithmetic mean of the two entropies.
* ``adjusted_mutual_info`` -- (MI - E[MI]) / (mean(H(U), H(V)) - E[MI]) with the exact
  expected mutual information under the permutation (hypergeometric) model of
  Vinh, Epps & Bailey (JMLR 2010), 'arithmetic' normalisation (scikit-learn's default).

Natural logarithms throughout (the normalised scores do not depend on the base).
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln

__all__ = [
    "contingency_table",
    "entropy",
    "mutual_info",
    "expected_mutual_info",
    "adjusted_mutual_info",
    "adjusted_rand_index",
    "normalized_mutual_info",
]


def _labels(a, b):
    a = np.asarray(a)
    b = np.asarray(b)
    if a.ndim != 1 or b.ndim != 1:
        raise ValueError("label vectors must be one-dimensional")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"label vectors differ in length ({a.shape[0]} vs {b.shape[0]})")
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    return ia.ravel(), ib.ravel()


def contingency_table(a, b) -> np.ndarray:
    """Dense contingency table: ``n[i, j]`` = items with label i in ``a`` and j in ``b``."""
    ia, ib = _labels(a, b)
    n = np.zeros((ia.max(initial=-1) + 1, ib.max(initial=-1) + 1), dtype=np.int64)
    np.add.at(n, (ia, ib), 1)
    return n


def entropy(labels) -> float:
    """Shannon entropy (nats) of a labelling."""
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    if counts.size <= 1:
        return 0.0
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def _mi_from_table(n: np.ndarray) -> float:
    N = n.sum()
    if N == 0:
        return 0.0
    a = n.sum(1)
    b = n.sum(0)
    nz = n > 0
    nij = n[nz].astype(float)
    outer = np.outer(a, b)[nz].astype(float)
    mi = (nij / N * (np.log(nij) + np.log(N) - np.log(outer))).sum()
    return float(max(mi, 0.0))


def mutual_info(a, b) -> float:
    """Mutual information (nats) between two labellings."""
    return _mi_from_table(contingency_table(a, b))


def expected_mutual_info(n: np.ndarray) -> float:
    """Expected MI of two random labellings with the row/column sums of table ``n``.

    Exact sum over the hypergeometric distribution of each cell (Vinh et al. 2010, eq. 24a).
    """
    N = int(n.sum())
    a = n.sum(1).astype(np.int64)
    b = n.sum(0).astype(np.int64)
    if N <= 1:
        return 0.0
    emi = 0.0
    gN = gammaln(N + 1)
    lnN = np.log(N)
    for ai in a:
        # all columns at once; nij ranges over [max(1, ai+bj-N), min(ai, bj)]
        lo = np.maximum(1, ai + b - N)
        hi = np.minimum(ai, b)
        for bj, l, h in zip(b, lo, hi):
            if h < l:
                continue
            nij = np.arange(l, h + 1, dtype=float)
            term1 = nij / N * (lnN + np.log(nij) - np.log(float(ai) * float(bj)))
            logp = (
                gammaln(ai + 1) + gammaln(bj + 1) + gammaln(N - ai + 1) + gammaln(N - bj + 1)
                - gN - gammaln(nij + 1) - gammaln(ai - nij + 1) - gammaln(bj - nij + 1)
                - gammaln(N - ai - bj + nij + 1)
            )
            emi += float((term1 * np.exp(logp)).sum())
    return emi


def adjusted_mutual_info(a, b) -> float:
    """Adjusted mutual information, arithmetic normalisation (as scikit-learn's default).

    1 for identical partitions (up to renaming), about 0 for independent ones (can be < 0).
    Two labellings that are both a single cluster score 1.
    """
    n = contingency_table(a, b)
    if (n.shape[0] == n.shape[1] == 1) or n.size == 0:
        return 1.0
    if n.shape[0] == n.shape[1] and np.all((n > 0).sum(0) == 1) and np.all((n > 0).sum(1) == 1):
        return 1.0  # identical up to renaming (covers all-singletons vs all-singletons)
    mi = _mi_from_table(n)
    emi = expected_mutual_info(n)
    ha, hb = entropy(np.repeat(np.arange(n.shape[0]), n.sum(1))), entropy(
        np.repeat(np.arange(n.shape[1]), n.sum(0))
    )
    denom = 0.5 * (ha + hb) - emi
    eps = np.finfo(float).eps
    denom = min(denom, -eps) if denom < 0 else max(denom, eps)
    return float((mi - emi) / denom)


def normalized_mutual_info(a, b) -> float:
    """NMI = MI / mean(H(a), H(b)) ('arithmetic'); 1 when both are a single cluster."""
    n = contingency_table(a, b)
    if (n.shape[0] == n.shape[1] == 1) or n.size == 0:
        return 1.0
    mi = _mi_from_table(n)
    ha = entropy(np.repeat(np.arange(n.shape[0]), n.sum(1)))
    hb = entropy(np.repeat(np.arange(n.shape[1]), n.sum(0)))
    denom = max(0.5 * (ha + hb), np.finfo(float).eps)
    return float(mi / denom)


def adjusted_rand_index(a, b) -> float:
    """Adjusted Rand index (Hubert & Arabie 1985); 1 for identical partitions, ~0 at random."""
    n = contingency_table(a, b)
    N = int(n.sum())
    if N == 0:
        return 1.0
    comb = lambda x: x * (x - 1) / 2.0  # noqa: E731
    sum_ij = comb(n.astype(float)).sum()
    sum_a = comb(n.sum(1).astype(float)).sum()
    sum_b = comb(n.sum(0).astype(float)).sum()
    total = comb(float(N))
    expected = sum_a * sum_b / total if total > 0 else 0.0
    max_index = 0.5 * (sum_a + sum_b)
    if max_index == expected:  # both trivial in the same way (all one cluster / all singletons)
        return 1.0
    return float((sum_ij - expected) / (max_index - expected))

"""Behaviour: how each component's time course relates to the animals' behaviour covariates,
and which components are active in each behavioural state.

:func:`relate` correlates a component's temporal loading with a covariate (velocity,
reversal, …) in each animal, at lags of up to ``max_lag`` bins either way, and tests the
best correlation against circular shifts of the covariate (each animal's shifted by its own
random lag, at least ``MIN_SHIFT`` of its length away from the original): a shift keeps both
series' own autocorrelation — slow behaviour and slow loadings correlate by chance far more
often than independent samples would — and destroys only their alignment.

:func:`state_bins` and :func:`state_rows` build atlas rows by behavioural state for
recordings without stimuli (``report.states``).

Lag convention: a positive lag means the component *follows* the covariate (its loading at
bin t + lag goes with the covariate at bin t).

Pure: arrays in, plain structures out.
"""

from __future__ import annotations

import numpy as np

MIN_SHIFT = 0.1


def _corr_rows(x: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Pearson r of ``x`` (T,) with each row of ``Y`` (S, T), over the bins where both are
    finite; NaN with fewer than 3 such bins or a constant series. (S,)."""
    ok = np.isfinite(Y) & np.isfinite(x)[None, :]
    n = ok.sum(axis=1)
    xs = np.where(ok, x[None, :], 0.0)
    ys = np.where(ok, Y, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx, my = xs.sum(axis=1) / n, ys.sum(axis=1) / n
        dx = np.where(ok, xs - mx[:, None], 0.0)
        dy = np.where(ok, ys - my[:, None], 0.0)
        den = np.sqrt((dx * dx).sum(axis=1) * (dy * dy).sum(axis=1))
        r = (dx * dy).sum(axis=1) / den
    return np.where((n >= 3) & (den > 0), r, np.nan)


def lagged_correlations(loading: np.ndarray, covariate: np.ndarray, max_lag: int) -> np.ndarray:
    """Pearson r of ``loading[t + lag]`` with ``covariate[t]`` for lag = −max_lag … max_lag
    (overlapping bins only; NaN where fewer than 3 bins or a constant series). ``covariate``
    may be (T,) or (S, T) (one row per shifted copy): (2·max_lag+1,) or (S, 2·max_lag+1)."""
    x = np.asarray(loading, dtype=float)
    Y = np.atleast_2d(np.asarray(covariate, dtype=float))
    n = x.size
    out = np.full((Y.shape[0], 2 * max_lag + 1), np.nan)
    for k, lag in enumerate(range(-max_lag, max_lag + 1)):
        if abs(lag) >= n:
            continue
        if lag >= 0:
            out[:, k] = _corr_rows(x[lag:], Y[:, : n - lag])
        else:
            out[:, k] = _corr_rows(x[: n + lag], Y[:, -lag:])
    return out[0] if np.ndim(covariate) == 1 else out


def _pooled(per_animal: list[np.ndarray], counts: np.ndarray) -> np.ndarray:
    """Mean of the animals' lagged correlations (each (..., lags)), weighted by their numbers
    of valid bins."""
    r = np.asarray(per_animal)  # (animals, ..., lags)
    w = np.where(np.isfinite(r), counts.reshape((-1,) + (1,) * (r.ndim - 1)), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(w.sum(axis=0) > 0, (np.nan_to_num(r) * w).sum(axis=0) / w.sum(axis=0), np.nan)


def _max_abs(r: np.ndarray) -> np.ndarray:
    """Largest |r| over the lags (last axis); 0 where none is defined."""
    a = np.abs(np.nan_to_num(r, nan=0.0))
    return a.max(axis=-1)


def relate(loadings: list[np.ndarray], covariates: list[np.ndarray], *, max_lag: int, n_shifts: int,
           rng: np.random.Generator, bin_seconds: float, animals: list[str]) -> dict | None:
    """A component's relation to one covariate, over the animals' segments.

    ``loadings[a]``, ``covariates[a]``: the temporal loading and the (binned) covariate in
    animal a's bins (NaN where not measured). Returns ``{"r", "p", "lag_s", "per_animal":
    {animal: {"r", "p", "lag_s", "bins"}}, "n_shifts"}``: the pooled r (the animals'
    correlations averaged at each lag, weighted by their valid bins) at the lag where it is
    largest in absolute value; ``p`` the two-sided circular-shift p-value of that maximum
    (the same maximisation over lags is applied to every shift, so the choice of lag is paid
    for). None when no animal has ≥ 3 bins with the covariate and a varying loading."""
    used = [a for a in range(len(loadings)) if np.isfinite(covariates[a]).sum() >= 3
            and np.nanstd(covariates[a]) > 0 and np.nanstd(loadings[a]) > 0]
    if not used:
        return None
    counts = np.asarray([np.isfinite(covariates[a]).sum() for a in used], dtype=float)
    obs = [lagged_correlations(loadings[a], covariates[a], max_lag) for a in used]
    pooled = _pooled(obs, counts)
    if not np.isfinite(pooled).any():
        return None
    best = int(np.nanargmax(np.abs(pooled)))
    null_per = []
    for a in used:  # each animal's covariate shifted by its own lags: (n_shifts, lags)
        y = np.asarray(covariates[a], dtype=float)
        n = y.size
        lags = rng.integers(max(1, int(MIN_SHIFT * n)), max(2, int((1 - MIN_SHIFT) * n)) + 1, size=n_shifts)
        shifted = y[(np.arange(n)[None, :] - lags[:, None]) % n]
        null_per.append(lagged_correlations(loadings[a], shifted, max_lag))
    null_pooled = _max_abs(_pooled(null_per, counts))

    def p_of(stat, null):
        return round(float((1 + np.count_nonzero(null >= stat - 1e-12)) / (1 + n_shifts)), 6)
    # (1e-12: a shift that reproduces the observed alignment ties with it; r is a ratio of
    # float sums, exact only to ~1e-15)

    per_animal = {}
    for k, a in enumerate(used):
        b = int(np.nanargmax(np.abs(obs[k]))) if np.isfinite(obs[k]).any() else max_lag
        per_animal[animals[a]] = {"r": round(float(obs[k][b]), 4), "lag_s": round((b - max_lag) * bin_seconds, 6),
                                  "p": p_of(_max_abs(obs[k]), _max_abs(null_per[k])), "bins": int(counts[k])}
    return {"r": round(float(pooled[best]), 4), "p": p_of(abs(pooled[best]), null_pooled),
            "lag_s": round((best - max_lag) * bin_seconds, 6), "per_animal": per_animal, "n_shifts": n_shifts}


def state_bins(values: np.ndarray, thresholds: list[float]) -> np.ndarray:
    """State index of each bin: k where ``thresholds[k-1] ≤ value < thresholds[k]``
    (0 below the first threshold, len(thresholds) at or above the last); −1 where NaN."""
    v = np.asarray(values, dtype=float)
    out = np.searchsorted(np.asarray(thresholds, dtype=float), v, side="right").astype(np.int64)
    out[~np.isfinite(v)] = -1
    return out


def state_rows(states: np.ndarray, f_time: np.ndarray, labels: list[str], threshold: float,
               bin_seconds: float) -> list[dict]:
    """Atlas rows by behavioural state: ``[{"state", "bins", "seconds", "means" (R,),
    "enrichment" (R,), "components" (active, most enriched first)}]``.

    A component is active in a state when its mean temporal loading over the state's bins is
    (a) at least its mean over all bins with a state (``enrichment`` = the ratio ≥ 1: the
    states it prefers) and (b) ≥ ``threshold`` × its largest mean over the states (the epoch
    rows' rule, docs/report.md). With two states (a) matters most: (b) alone would list
    nearly every component in both."""
    n_states = len(labels)
    means = np.full((n_states, f_time.shape[1]), np.nan)
    for k in range(n_states):
        sel = states == k
        if sel.any():
            means[k] = f_time[sel].mean(axis=0)
    valid = states >= 0
    overall = f_time[valid].mean(axis=0) if valid.any() else np.full(f_time.shape[1], np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        top = np.nanmax(np.where(np.isfinite(means), means, -np.inf), axis=0)
        enrichment = means / overall[None, :]
    rows = []
    for k, label in enumerate(labels):
        n = int((states == k).sum())
        on = [r for r in range(f_time.shape[1])
              if n and np.isfinite(means[k, r]) and top[r] > 0 and means[k, r] >= overall[r]
              and means[k, r] >= threshold * top[r]]
        on.sort(key=lambda r: (-enrichment[k, r], r))
        rows.append({"state": label, "bins": n, "seconds": round(n * bin_seconds, 6),
                     "means": [None if not np.isfinite(v) else round(float(v), 6) for v in means[k]],
                     "enrichment": [None if not np.isfinite(v) else round(float(v), 4) for v in enrichment[k]],
                     "components": [int(r) for r in on]})
    return rows

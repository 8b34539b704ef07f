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


def _corr(x: np.ndarray, y: np.ndarray) -> float:
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        return float("nan")
    x, y = x[ok] - x[ok].mean(), y[ok] - y[ok].mean()
    den = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / den) if den > 0 else float("nan")


def lagged_correlations(loading: np.ndarray, covariate: np.ndarray, max_lag: int) -> np.ndarray:
    """Pearson r of ``loading[t + lag]`` with ``covariate[t]`` for lag = −max_lag … max_lag
    (overlapping bins only; NaN where fewer than 3 bins or a constant series). (2·max_lag+1,)."""
    x, y = np.asarray(loading, dtype=float), np.asarray(covariate, dtype=float)
    n = x.size
    out = np.full(2 * max_lag + 1, np.nan)
    for k, lag in enumerate(range(-max_lag, max_lag + 1)):
        if abs(lag) >= n:
            continue
        if lag >= 0:
            out[k] = _corr(x[lag:], y[: n - lag])
        else:
            out[k] = _corr(x[: n + lag], y[-lag:])
    return out


def _pooled(per_animal: list[np.ndarray], counts: np.ndarray) -> np.ndarray:
    """Mean of the animals' lagged correlations, weighted by their numbers of valid bins."""
    r = np.asarray(per_animal)
    w = np.where(np.isfinite(r), counts[:, None], 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(w.sum(axis=0) > 0, np.nansum(np.nan_to_num(r) * w, axis=0) / w.sum(axis=0), np.nan)


def _best(r: np.ndarray) -> int:
    return int(np.nanargmax(np.abs(r))) if np.isfinite(r).any() else -1


def relate(loadings: list[np.ndarray], covariates: list[np.ndarray], *, max_lag: int, n_shifts: int,
           rng: np.random.Generator, bin_seconds: float, animals: list[str]) -> dict | None:
    """A component's relation to one covariate, over the animals' segments.

    ``loadings[a]``, ``covariates[a]``: the temporal loading and the (binned) covariate in
    animal a's bins (NaN where not measured). Returns ``{"r", "p", "lag_s", "per_animal":
    {animal: {"r", "p", "lag_s", "bins"}}, "n_shifts"}``: the pooled r (the animals'
    correlations averaged at each lag, weighted by their valid bins) at the lag where it is
    largest in absolute value; ``p`` the two-sided circular-shift p-value of that maximum
    (the same maximisation over lags is applied to every shift). None when no animal has ≥ 3
    bins with the covariate and a varying loading."""
    used = [a for a in range(len(loadings)) if np.isfinite(covariates[a]).sum() >= 3
            and np.nanstd(covariates[a]) > 0 and np.nanstd(loadings[a]) > 0]
    if not used:
        return None
    counts = np.asarray([np.isfinite(covariates[a]).sum() for a in used], dtype=float)
    obs = [lagged_correlations(loadings[a], covariates[a], max_lag) for a in used]
    pooled = _pooled(obs, counts)
    best = _best(pooled)
    if best < 0:
        return None
    obs_stat = abs(pooled[best])
    per_stat = np.asarray([np.nanmax(np.abs(r)) if np.isfinite(r).any() else np.nan for r in obs])
    null_pooled = np.zeros(n_shifts)
    null_per = np.zeros((n_shifts, len(used)))
    for s in range(n_shifts):
        shifted = []
        for a in used:
            n = covariates[a].size
            lag = int(rng.integers(max(1, int(MIN_SHIFT * n)), max(2, int((1 - MIN_SHIFT) * n)) + 1))
            shifted.append(lagged_correlations(loadings[a], np.roll(covariates[a], lag), max_lag))
        pr = _pooled(shifted, counts)
        null_pooled[s] = np.nanmax(np.abs(pr)) if np.isfinite(pr).any() else 0.0
        null_per[s] = [np.nanmax(np.abs(r)) if np.isfinite(r).any() else 0.0 for r in shifted]
    per_animal = {}
    for k, a in enumerate(used):
        b = _best(obs[k])
        per_animal[animals[a]] = {
            "r": round(float(obs[k][b]), 4), "lag_s": round((b - max_lag) * bin_seconds, 6),
            "p": round(float((1 + np.count_nonzero(null_per[:, k] >= per_stat[k])) / (1 + n_shifts)), 6),
            "bins": int(counts[k])}
    return {"r": round(float(pooled[best]), 4),
            "p": round(float((1 + np.count_nonzero(null_pooled >= obs_stat)) / (1 + n_shifts)), 6),
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
    "components" (active, strongest first)}]``. A component is active in a state when its
    mean temporal loading over the state's bins is ≥ ``threshold`` × its largest mean over
    the states (the epoch rows' rule, docs/report.md)."""
    n_states = len(labels)
    means = np.full((n_states, f_time.shape[1]), np.nan)
    for k in range(n_states):
        sel = states == k
        if sel.any():
            means[k] = f_time[sel].mean(axis=0)
    with np.errstate(invalid="ignore"):
        top = np.nanmax(np.where(np.isfinite(means), means, -np.inf), axis=0)
    rows = []
    for k, label in enumerate(labels):
        n = int((states == k).sum())
        active = [r for r in np.argsort(-np.nan_to_num(means[k], nan=-np.inf), kind="stable")
                  if n and np.isfinite(means[k, r]) and top[r] > 0 and means[k, r] >= threshold * top[r]]
        rows.append({"state": label, "bins": n, "seconds": round(n * bin_seconds, 6),
                     "means": [None if not np.isfinite(v) else round(float(v), 6) for v in means[k]],
                     "components": [int(r) for r in active]})
    return rows

"""How much evidence the fit has for each pair's loading in each component.

A CP component's pair loading ``U[p, r]`` is fitted only from the entries where pair p was
recorded. Where the component's energy (its temporal × animal loading) lies mostly in the
animals (or, concatenated, the animals' stretches of time) in which pair p is *missing*, the
fit sees the pair in the few entries where the component is weak: its loading is then the ratio
of two small numbers (HALS: ``U[p, r] ∝ Σ_observed X·V / Σ_observed V²``), unconstrained and
easily inflated by noise. Pairs of neurons missing in some animal then stand out together in the
components carried by the other animals — communities made of *which neurons are missing where*
(measured on the two shared worms, docs/communities.md "Missing neurons").

The *evidence* for pair p in component r is the fraction of the component's energy that falls
in entries where p is observed:

- aligned (P, T, A), mask (P, A): ``Σ_a mask[p, a] W[a, r]² / Σ_a W[a, r]²``
- concatenated (P, T_total, 1), bins grouped by animal g: ``Σ_g mask[p, g] ‖V_g[:, r]‖² / ‖V[:, r]‖²``

1 for a pair seen wherever the component lives, 0 for one seen only where it is absent.
"""

from __future__ import annotations

import numpy as np


def component_energy_by_animal(
    time_factors: np.ndarray, animal_factors: np.ndarray, time_groups: np.ndarray | None = None,
    n_animals: int | None = None,
) -> np.ndarray:
    """(A, R) fraction of each component's energy in each animal (columns sum to 1, or 0).

    Aligned: ``W[a, r]² / Σ_a W[a, r]²`` (the temporal loading is shared by every animal).
    Concatenated (``time_groups`` = the animal of each time bin): ``‖V_a[:, r]‖² / ‖V[:, r]‖²``.
    """
    if time_groups is None:
        energy = np.asarray(animal_factors, dtype=np.float64) ** 2
    else:
        v2 = np.asarray(time_factors, dtype=np.float64) ** 2
        groups = np.asarray(time_groups, dtype=np.int64)
        n = int(n_animals if n_animals is not None else groups.max() + 1)
        energy = np.zeros((n, v2.shape[1]))
        np.add.at(energy, groups, v2)
    total = energy.sum(axis=0, keepdims=True)
    return np.divide(energy, total, out=np.zeros_like(energy), where=total > 0)


def pair_evidence(
    mask: np.ndarray, time_factors: np.ndarray, animal_factors: np.ndarray,
    time_groups: np.ndarray | None = None,
) -> np.ndarray:
    """(P, R) fraction of each component's energy in the entries where each pair is observed.

    ``mask`` (P, A) True = observed; ``time_factors`` (T, R); ``animal_factors`` (A, R) (or
    (1, R) when concatenated); ``time_groups`` (T,) the animal of each bin when concatenated,
    else None. Values in [0, 1].
    """
    mask = np.asarray(mask, dtype=bool)
    share = component_energy_by_animal(time_factors, animal_factors, time_groups, n_animals=mask.shape[1])
    # 1 minus the share where the pair is *missing*: exactly 1 for a pair seen in every animal
    # (an empty sum is exactly 0), where summing the observed shares gives 1 ± a few ulps,
    # depending on the BLAS kernel — and "shrink" would then turn a zero loading into ±1e-17,
    # an edge in one machine's graph and none in another's (issue 14)
    missing = np.clip((~mask).astype(np.float64) @ share, 0.0, 1.0)
    carried = share.sum(axis=0, keepdims=True) > 0  # an all-zero component has no evidence anywhere
    return np.where(carried, 1.0 - missing, 0.0)


def weigh_by_evidence(pair_factors: np.ndarray, evidence: np.ndarray, how: str) -> np.ndarray:
    """Pair loadings (P, R) as edge weights that count only what the data support.

    ``how``: ``"evidence"`` — ``U · e`` (a loading seen where the component carries a fraction e
    of its energy counts e of itself); ``"sqrt"`` — ``U · √e`` (the least-squares loading's noise
SD grows as 1/√e: this puts every pair at the same noise level); ``"shrink"`` — ``e · U + (1 − e) · mean_p U`` (toward the
    component's mean loading: no evidence, no contrast); ``"none"`` — ``U`` unchanged.
    """
    u = np.asarray(pair_factors, dtype=np.float64)
    if how == "none":
        return u
    if how == "evidence":
        return u * evidence
    if how == "sqrt":
        return u * np.sqrt(evidence)
    if how == "shrink":
        return evidence * u + (1.0 - evidence) * u.mean(axis=0, keepdims=True)
    raise ValueError(f"unknown evidence weighting {how!r}")


def unobserved_mass(
    mask: np.ndarray, pair_factors: np.ndarray, time_factors: np.ndarray, animal_factors: np.ndarray,
    time_groups: np.ndarray | None = None,
) -> np.ndarray:
    """(R,) fraction of each component's squared mass that lies on *unobserved* entries.

    Component r's model entry at (p, t, a) is ``U[p, r] V[t, r] W[a, r]``; its squared mass on
    the entries where pair p was not recorded is ``Σ_p U[p, r]² (1 − e[p, r])`` over
    ``Σ_p U[p, r]²`` (e = :func:`pair_evidence`, the same for both layouts). The masked loss
    never sees that mass: a component with a value near 1 explains (almost) no data, its
    loadings being the ratio of two near-zero sums (the module docstring). Measured on the
    ``standard`` simulator preset at a fixed rank 7: 2–5 of the 7 components are above 0.5
    (docs/benchmarks.md, "Spontaneous motifs and unobserved components"). 0 for an all-zero
    component.
    """
    u2 = np.asarray(pair_factors, dtype=np.float64) ** 2
    e = pair_evidence(mask, time_factors, animal_factors, time_groups)
    total = u2.sum(axis=0)
    lost = (u2 * (1.0 - e)).sum(axis=0)
    return np.divide(lost, total, out=np.zeros_like(total), where=total > 0)

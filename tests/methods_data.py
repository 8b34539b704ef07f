"""Hand-made recordings for the method tests (no simulator): CSVs + a config in a folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

RATE = 4.0  # Hz


def names(n: int) -> list[str]:
    return [f"N{i:02d}" for i in range(n)]


def write_animals(folder: Path, traces: list[np.ndarray], present: list[np.ndarray], config: dict) -> Path:
    """One CSV per animal (its present neurons' columns only) and ``config.yaml``; returns the config."""
    folder.mkdir(parents=True, exist_ok=True)
    all_names = names(traces[0].shape[1])
    animals = []
    for a, (x, keep) in enumerate(zip(traces, present)):
        cols = np.flatnonzero(keep)
        lines = [",".join(all_names[i] for i in cols)]
        lines += [",".join(f"{v:.5f}" for v in row) for row in x[:, cols]]
        (folder / f"w{a}.csv").write_text("\n".join(lines) + "\n")
        animals.append({"name": f"w{a}", "path": f"w{a}.csv"})
    full = {"workdir": "run", "data": {"sampling_rate": RATE, "animals": animals}}
    for key, value in config.items():
        full.setdefault(key, {}).update(value) if isinstance(value, dict) else full.__setitem__(key, value)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(full))
    return path


def smooth_noise(rng, frames: int, n: int, tau_frames: float = 4.0) -> np.ndarray:
    """Independent AR(1) noise per neuron (no co-activation at all), around a baseline of 100."""
    phi = np.exp(-1.0 / tau_frames)
    e = rng.normal(0, 1, (frames, n))
    x = np.zeros_like(e)
    for t in range(1, frames):
        x[t] = phi * x[t - 1] + e[t]
    return 100 + 5 * x


def missing_sets(n_neurons: int, n_animals: int, per_animal: int) -> list[np.ndarray]:
    """Disjoint sets of ``per_animal`` neurons, one missing from each animal."""
    return [np.arange(a * per_animal, (a + 1) * per_animal) for a in range(n_animals)]


def structureless(folder: Path, seed: int = 0, n_neurons: int = 30, n_animals: int = 4,
                  per_animal: int = 5, seconds: float = 300.0, config: dict | None = None):
    """Independent noise traces; the only pattern is which neurons are missing in which animal."""
    rng = np.random.default_rng(seed)
    frames = int(seconds * RATE)
    traces = [smooth_noise(rng, frames, n_neurons) for _ in range(n_animals)]
    sets = missing_sets(n_neurons, n_animals, per_animal)
    present = []
    for a in range(n_animals):
        keep = np.ones(n_neurons, dtype=bool)
        keep[sets[a]] = False
        present.append(keep)
    return write_animals(folder, traces, present, config or {}), sets


def responses(rng, frames: int, onsets_s, members, shift_s: float, amplitude: float = 40.0) -> np.ndarray:
    """A stereotyped calcium transient in ``members`` after each onset (+ this animal's shift)."""
    t = np.arange(frames) / RATE
    x = np.zeros((frames, len(members)))
    for onset in onsets_s:
        lag = np.clip(t - (onset + shift_s), 0.0, None)
        kernel = np.exp(-lag / 2.0) - np.exp(-lag / 0.3)  # 0 at lag 0: no response before it
        x += amplitude * kernel[:, None] * rng.uniform(0.8, 1.2, len(members))
    return x


def jittered_motif(folder: Path, shifts_s, seed: int = 0, n_neurons: int = 24, motif=range(8),
                   period_s: float = 40.0, seconds: float = 400.0, config: dict | None = None):
    """One motif (``motif`` neurons) responding to every stimulus pulse, each animal ``shifts_s[a]``
    seconds late, on independent noise; every neuron recorded in every animal."""
    rng = np.random.default_rng(seed)
    frames = int(seconds * RATE)
    onsets = np.arange(10.0, seconds - period_s / 2, period_s)
    members = list(motif)
    traces = []
    for shift in shifts_s:
        x = smooth_noise(rng, frames, n_neurons)
        x[:, members] += responses(rng, frames, onsets, members, shift)
        traces.append(x)
    stimuli = [{"label": f"pulse{k}", "start_s": float(o), "stop_s": float(o + 5)} for k, o in enumerate(onsets)]
    cfg = {"data": {"stimuli": stimuli}}
    for key, value in (config or {}).items():
        cfg.setdefault(key, {}).update(value)
    present = [np.ones(n_neurons, dtype=bool) for _ in shifts_s]
    return write_animals(folder, traces, present, cfg)


def two_motifs(folder: Path, seed: int = 0, n_neurons: int = 24, first=range(0, 8), second=range(5, 13),
               period_s: float = 80.0, seconds: float = 480.0, n_animals: int = 3, config: dict | None = None):
    """Two motifs sharing neurons (``first`` ∩ ``second``), responding to alternating stimuli
    (``a`` pulses, then ``b`` pulses half a period later), on independent noise."""
    rng = np.random.default_rng(seed)
    frames = int(seconds * RATE)
    onsets_a = np.arange(10.0, seconds - period_s / 2, period_s)
    onsets_b = onsets_a + period_s / 2
    traces = []
    for _ in range(n_animals):
        x = smooth_noise(rng, frames, n_neurons)
        x[:, list(first)] += responses(rng, frames, onsets_a, list(first), 0.0)
        x[:, list(second)] += responses(rng, frames, onsets_b, list(second), 0.0)
        traces.append(x)
    stimuli = [{"label": f"a{k}", "start_s": float(o), "stop_s": float(o + 5)} for k, o in enumerate(onsets_a)]
    stimuli += [{"label": f"b{k}", "start_s": float(o), "stop_s": float(o + 5)} for k, o in enumerate(onsets_b)]
    cfg = {"data": {"stimuli": sorted(stimuli, key=lambda s: s["start_s"])}}
    for key, value in (config or {}).items():
        cfg.setdefault(key, {}).update(value)
    present = [np.ones(n_neurons, dtype=bool) for _ in range(n_animals)]
    return write_animals(folder, traces, present, cfg)

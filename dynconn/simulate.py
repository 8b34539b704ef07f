"""Simulated whole-brain calcium imaging with planted dynamic communities.

The generative model (documented in ``docs/simulator.md``):

- Each *group* of neurons has a shared event train (Poisson, ``group_rate`` Hz) during its
  active epochs, in its animals; each member joins each group event with probability
  ``participation`` and a small jitter. Groups may overlap (a neuron in two groups, active
  at different times).
- Every neuron also fires private events (``private_rate`` Hz) at all times.
- Events (log-normal amplitudes) are convolved with a GCaMP-like kernel
  ``exp(−t/τ_decay) − exp(−t/τ_rise)``; fluorescence is
  ``F = b·(1 + g·c(t))·bleach(t) + noise`` with per-neuron baseline b, gain g, an
  exponential photobleaching ``bleach(t) = exp(−t/τ_bleach)`` and Gaussian noise.
- Each animal misses a random fraction of neurons (columns absent from its file).

``simulate_dataset`` is the pure core; ``write_dataset`` writes per-animal files (CSV, and
one animal as HDF5 + names file), ``stimuli.csv``, ``truth.json`` and a ready
``config.yaml``. :func:`score_recovery` scores a pipeline result against the truth.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import h5py
import numpy as np
import yaml

from .io.artifacts import atomic_write_bytes


@dataclass
class Group:
    """A planted community: its neurons (indices), epochs (labels) and animals (indices)."""

    name: str
    neurons: list[int]
    epochs: list[str]
    animals: list[int]


@dataclass
class Preset:
    n_neurons: int
    n_animals: int
    sampling_rate: float  # Hz
    epochs: list[tuple[str, float, float]]  # (label, start_s, stop_s)
    groups: list[Group]
    missing_fraction: float = 0.08
    group_rate: float = 0.25  # Hz, shared events of an active group
    participation: float = 0.85
    private_rate: float = 0.02  # Hz
    noise: float = 0.05  # SD of additive noise, fraction of baseline
    tau_rise: float = 0.2  # s
    tau_decay: float = 1.0  # s
    config: dict = field(default_factory=dict)  # config keys written into config.yaml

    @property
    def duration(self) -> float:
        return max(stop for _, _, stop in self.epochs)


def _standard() -> Preset:
    epochs = [("baseline", 0, 120), ("odor", 120, 240), ("washout", 240, 360),
              ("light", 360, 480), ("recovery", 480, 600)]
    groups = [
        Group("odor", list(range(0, 10)), ["odor"], [0, 1, 2, 3]),
        Group("light", list(range(10, 18)), ["light"], [0, 1, 2]),
        # overlaps the odor group by two neurons, active at other times
        Group("washout", [8, 9] + list(range(18, 24)), ["washout", "recovery"], [1, 2, 3]),
        Group("baseline", list(range(24, 32)), ["baseline"], [0, 1, 2, 3]),
    ]
    return Preset(n_neurons=48, n_animals=4, sampling_rate=4.0, epochs=epochs, groups=groups,
                  config={"factorize": {"rank": "auto", "ranks": [2, 8], "restarts": 3}})


def _small() -> Preset:
    epochs = [("rest", 0, 100), ("stim", 100, 200), ("post", 200, 300)]
    groups = [
        Group("stim", list(range(0, 6)), ["stim"], [0, 1, 2]),
        Group("post", list(range(6, 12)), ["post"], [0, 1, 2]),
    ]
    return Preset(n_neurons=20, n_animals=3, sampling_rate=4.0, epochs=epochs, groups=groups,
                  missing_fraction=0.05, config={"factorize": {"rank": 3, "restarts": 2}})


def _large(seed: int = 12345) -> Preset:
    """300 neurons, 19 groups + background (rank 20): the report's scale benchmark."""
    rng = np.random.default_rng(seed)
    labels = [f"epoch{k:02d}" for k in range(10)]
    epochs = [(lab, 60.0 * k, 60.0 * (k + 1)) for k, lab in enumerate(labels)]
    order = rng.permutation(300)
    groups = []
    for g in range(19):
        members = sorted(int(x) for x in order[g * 12 : g * 12 + 12])
        active = sorted(rng.choice(10, size=2, replace=False).tolist())
        animals = sorted(rng.choice(6, size=4, replace=False).tolist())
        groups.append(Group(f"group{g:02d}", members, [labels[k] for k in active], animals))
    return Preset(n_neurons=300, n_animals=6, sampling_rate=2.0, epochs=epochs, groups=groups,
                  config={"factorize": {"rank": 20, "restarts": 2},
                          "affinity": {"bin_seconds": 5.0}})


PRESETS = {"standard": _standard, "small": _small, "large": _large}


def neuron_names(n: int) -> list[str]:
    width = max(3, len(str(n - 1)))
    return [f"N{i:0{width}d}" for i in range(n)]


def gcamp_kernel(rate: float, tau_rise: float, tau_decay: float) -> np.ndarray:
    t = np.arange(int(np.ceil(8 * tau_decay * rate)) + 1) / rate
    k = np.exp(-t / tau_decay) - np.exp(-t / tau_rise)
    return k / k.max()


def simulate_dataset(preset: Preset, random_state: int = 0) -> dict:
    """Simulate every animal. Pure: returns arrays and the ground truth.

    Returns a dict with ``traces`` (list of (F, N) float64 raw fluorescence per animal,
    NaN-free), ``present`` bool (N, A), ``names`` (N), ``time`` (F) s.
    """
    rng = np.random.default_rng(random_state)
    rate = preset.sampling_rate
    n_frames = int(round(preset.duration * rate))
    time = np.arange(n_frames) / rate
    n = preset.n_neurons
    epoch_of = {lab: (start, stop) for lab, start, stop in preset.epochs}
    kernel = gcamp_kernel(rate, preset.tau_rise, preset.tau_decay)
    traces, present = [], np.ones((n, preset.n_animals), dtype=bool)
    for a in range(preset.n_animals):
        events = np.zeros((n, n_frames))
        # private events everywhere
        private = rng.random((n, n_frames)) < preset.private_rate / rate
        events[private] += rng.lognormal(0.0, 0.3, size=private.sum())
        for group in preset.groups:
            if a not in group.animals:
                continue
            for label in group.epochs:
                start, stop = epoch_of[label]
                lo, hi = int(start * rate), int(stop * rate)
                shared = np.flatnonzero(rng.random(hi - lo) < preset.group_rate / rate) + lo
                for member in group.neurons:
                    joins = shared[rng.random(shared.size) < preset.participation]
                    jitter = rng.integers(0, 2, size=joins.size)
                    frames = np.clip(joins + jitter, 0, n_frames - 1)
                    np.add.at(events[member], frames, rng.lognormal(0.0, 0.3, size=frames.size))
        calcium = np.stack([np.convolve(e, kernel)[:n_frames] for e in events])
        baseline = rng.uniform(200, 1000, size=(n, 1))
        gain = rng.uniform(0.5, 2.0, size=(n, 1))
        bleach = np.exp(-time[None, :] / rng.uniform(1000, 3000, size=(n, 1)))
        fluo = baseline * (1 + gain * calcium) * bleach
        fluo += rng.normal(0.0, preset.noise, size=fluo.shape) * baseline
        traces.append(fluo.T)
        n_missing = int(round(preset.missing_fraction * n))
        present[rng.choice(n, size=n_missing, replace=False), a] = False
    return {"traces": traces, "present": present, "names": neuron_names(n), "time": time}


def truth_record(preset: Preset, names: list[str]) -> dict:
    return {
        "groups": [
            {**asdict(g), "neuron_names": [names[i] for i in g.neurons]} for g in preset.groups
        ],
        "epochs": [{"label": lab, "start_s": s, "stop_s": e} for lab, s, e in preset.epochs],
        "n_motifs": len(preset.groups),
        "sampling_rate": preset.sampling_rate,
    }


def write_dataset(outdir: Path, preset_name: str = "standard", random_state: int = 0) -> Path:
    """Simulate and write a ready-to-run dataset; returns the path of its config.yaml."""
    if preset_name not in PRESETS:
        raise ValueError(f"unknown preset {preset_name!r}; choose from {', '.join(PRESETS)}")
    preset = PRESETS[preset_name]()
    sim = simulate_dataset(preset, random_state)
    outdir.mkdir(parents=True, exist_ok=True)
    names = sim["names"]
    animals = []
    for a, fluo in enumerate(sim["traces"]):
        keep = np.flatnonzero(sim["present"][:, a])
        name = f"worm{a + 1}"
        if a == len(sim["traces"]) - 1 and len(sim["traces"]) > 1:
            # the last animal as a lab-style HDF5 file + names file, with one unidentified neuron
            extra = fluo[:, [keep[0]]] * 1.01
            data = np.concatenate([fluo[:, keep], extra], axis=1)
            with h5py.File(outdir / f"{name}.h5", "w") as f:
                f.create_dataset("gcamp/trace_array", data=data.astype(np.float32))
            rows = "".join(f"{k},{names[i]}\n" for k, i in enumerate(keep))
            rows += f"{len(keep)},\n"
            atomic_write_bytes(outdir / f"{name}-neurons.csv", ("index,name\n" + rows).encode())
            animals.append({"name": name, "path": f"{name}.h5", "dataset": "gcamp/trace_array",
                            "time_axis": 0, "neurons": f"{name}-neurons.csv",
                            "drop_unlabeled": True})
        else:
            header = ",".join(names[i] for i in keep)
            body = "\n".join(",".join(f"{v:.3f}" for v in row) for row in fluo[:, keep])
            atomic_write_bytes(outdir / f"{name}.csv", (header + "\n" + body + "\n").encode())
            animals.append({"name": name, "path": f"{name}.csv"})
    stim = "label,start_s,stop_s\n" + "".join(f"{l},{s:g},{e:g}\n" for l, s, e in preset.epochs)
    atomic_write_bytes(outdir / "stimuli.csv", stim.encode())
    truth = truth_record(preset, names)
    atomic_write_bytes(outdir / "truth.json", json.dumps(truth, indent=2).encode())
    config = {
        "workdir": "run",
        "data": {"sampling_rate": preset.sampling_rate, "animals": animals, "stimuli": "stimuli.csv"},
        **preset.config,
    }
    header = (f"# Simulated by `dynconn simulate --preset {preset_name} --seed {random_state}`.\n"
              "# Ground truth in truth.json. Every key not listed takes its default "
              "(docs/config.md).\n")
    path = outdir / "config.yaml"
    atomic_write_bytes(path, (header + yaml.safe_dump(config, sort_keys=False)).encode())
    return path


# ----------------------------------------------------------------------------- scoring
def epoch_indicator(time_s: np.ndarray, truth: dict, labels: list[str]) -> np.ndarray:
    """1.0 at the bins whose centre lies in one of ``labels``' epochs, else 0.0."""
    out = np.zeros(time_s.size)
    for e in truth["epochs"]:
        if e["label"] in labels:
            out[(time_s >= e["start_s"]) & (time_s < e["stop_s"])] = 1.0
    return out


def score_recovery(
    truth: dict, time_s: np.ndarray, factors_time: np.ndarray, membership: np.ndarray,
    neurons: list[str],
) -> tuple[float, list[dict]]:
    """Recovery of planted groups (the pipeline issue's score).

    For each group: the component whose temporal loading (T, R) best correlates with the
    group's active-epoch indicator, and in it the community with the highest Jaccard
    overlap with the group. Returns the mean Jaccard and per-group details.
    """
    details = []
    for g in truth["groups"]:
        indicator = epoch_indicator(time_s, truth, g["epochs"])
        corr = [np.corrcoef(indicator, factors_time[:, r])[0, 1] if factors_time[:, r].std() > 0
                else -1.0 for r in range(factors_time.shape[1])]
        best = int(np.nanargmax(corr))
        group = set(g["neuron_names"])
        jaccard, best_members = 0.0, []
        for c in np.unique(membership[best][membership[best] >= 0]):
            members = {neurons[i] for i in np.flatnonzero(membership[best] == c)}
            j = len(group & members) / len(group | members)
            if j > jaccard:
                jaccard, best_members = j, sorted(members)
        details.append({"group": g["name"], "component": best, "correlation": float(corr[best]),
                        "jaccard": jaccard, "community": best_members})
    return float(np.mean([d["jaccard"] for d in details])), details

"""Simulated whole-brain calcium imaging with planted dynamic communities.

Two generators (both documented in ``docs/simulator.md``):

* **realistic** (presets ``easy``, ``standard``, ``hard``, ``tiny``): the hard parts of real
  recordings — a dominant behaviour-driven network (forward/reversal states, tens of seconds,
  each animal its own sequence, not locked to the stimuli), slow shared fluctuations, stimulus
  responses with per-animal onset jitter and per-neuron latencies, motifs living in a subset of
  animals, motifs sharing neurons, spontaneous motifs outside the stimulus epochs, per-neuron
  indicator kinetics, saturation, shot and read noise, motion artefacts, 5–30 % of neurons
  missing per animal (different ones) and neuron order shuffled per file.
  :func:`simulate_realistic` is its pure core.
* **basic** (presets ``basic``, ``small``, ``large``): disjoint-timed Poisson groups with the
  same timing in every animal, private events, one GCaMP kernel, photobleaching and Gaussian
  noise (:func:`simulate_dataset`). Easy by design: the fast fixtures of the tests.

``write_dataset`` writes per-animal files, ``stimuli.csv``, ``truth.json`` and a ready
``config.yaml``. :func:`score_recovery` and :func:`score_run` score a result against the truth
(the recovery benchmark's and the tests' one scoring code).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

# h5py and the artifact writer are imported where used: the CLI imports this module for the
# preset names at start-up.


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


def _basic() -> Preset:
    """The basic generator's 48 neurons / 4 animals / 4 groups (``standard`` before the
    realistic generator): the tests' shared pipeline run."""
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
            {**asdict(g), "neuron_names": [names[i] for i in g.neurons],
             "intervals": [[float(s), float(e)] for lab, s, e in preset.epochs if lab in g.epochs]}
            for g in preset.groups
        ],
        "epochs": [{"label": lab, "start_s": s, "stop_s": e} for lab, s, e in preset.epochs],
        "n_motifs": len(preset.groups),
        "sampling_rate": preset.sampling_rate,
    }


# ----------------------------------------------------------------------------- realistic generator
@dataclass
class MotifSpec:
    """A planted motif of the realistic generator.

    ``epochs``: stimulus labels it responds to (every epoch with that label), or ``intervals``:
    protocol times ``(start_s, stop_s)`` of a spontaneous motif (outside the stimulus epochs).
    ``n_animals``: how many animals it lives in (drawn per seed). ``share``: ``(motif, k)`` —
    k of its members are drawn from that earlier motif's members.
    """

    name: str
    size: int
    n_animals: int
    epochs: list[str] = field(default_factory=list)
    intervals: list[tuple[float, float]] = field(default_factory=list)
    share: list[tuple[str, int]] = field(default_factory=list)


@dataclass
class RealisticPreset:
    n_neurons: int
    n_animals: int
    sampling_rate: float  # Hz
    duration: float  # s
    stimuli: list[tuple[str, float, float]]  # (label, start_s, stop_s)
    motifs: list[MotifSpec]
    background_size: int = 12  # behaviour network: half reversal-active, half forward-active
    background_amplitude: float = 2.0  # calcium units of a state change (a motif event is ~1)
    forward_mean_s: float = 35.0
    reversal_mean_s: float = 10.0
    slow_sd: float = 0.15  # shared slow fluctuation, calcium units
    slow_tau_s: float = 60.0
    onset_jitter_s: float = 2.0  # SD of a motif's onset per animal and interval
    latency_max_s: float = 1.5  # per-neuron response latency, uniform in [0, max]
    group_rate: float = 0.25  # Hz, shared events of an active motif
    participation: float = 0.85
    private_rate: float = 0.03  # Hz
    tau_rise_s: tuple[float, float] = (0.1, 0.4)  # per-neuron, uniform
    tau_decay_s: tuple[float, float] = (0.6, 2.5)  # per-neuron, log-uniform
    saturation: tuple[float, float] | None = (3.0, 8.0)  # half-saturation level per neuron, uniform
    counts_per_photon: float = 1.0  # shot noise: variance = counts_per_photon × F
    read_noise: float = 8.0  # counts, SD
    motion_artefacts: int = 3  # per animal
    missing_fraction: tuple[float, float] = (0.05, 0.30)  # per animal, uniform
    config: dict = field(default_factory=dict)


def _stimulus_protocol(duration: float, stim_s: float, gap_s: float, first_s: float,
                       labels: list[str]) -> list[tuple[str, float, float]]:
    """Stimulus epochs ``labels`` of ``stim_s`` each, ``gap_s`` apart, from ``first_s`` on."""
    out, t = [], first_s
    for label in labels:
        out.append((label, t, t + stim_s))
        t += stim_s + gap_s
    assert t - gap_s <= duration
    return out


def _realistic_standard() -> RealisticPreset:
    # 600 s: odor, light, odor, tap (60 s each, 60 s apart); two spontaneous motifs in the gaps
    stimuli = _stimulus_protocol(600, 60, 60, 60, ["odor", "light", "odor", "tap"])
    motifs = [
        MotifSpec("odor", 8, 5, epochs=["odor"]),
        MotifSpec("light", 7, 4, epochs=["light"], share=[("odor", 2)]),
        MotifSpec("tap", 7, 5, epochs=["tap"]),
        MotifSpec("spont-a", 6, 4, intervals=[(125.0, 175.0)]),
        MotifSpec("spont-b", 6, 5, intervals=[(490.0, 590.0)], share=[("tap", 2)]),
    ]
    return RealisticPreset(n_neurons=60, n_animals=6, sampling_rate=2.0, duration=600.0,
                           stimuli=stimuli, motifs=motifs)


def _realistic_hard() -> RealisticPreset:
    # 420 s, 30 s epochs; motifs in 2-3 of 4 animals, noisier, more artefacts and missing neurons
    stimuli = _stimulus_protocol(420, 30, 60, 60, ["odor", "light", "odor", "tap"])
    motifs = [
        MotifSpec("odor", 8, 3, epochs=["odor"]),
        MotifSpec("light", 7, 2, epochs=["light"], share=[("odor", 2)]),
        MotifSpec("tap", 7, 3, epochs=["tap"]),
        MotifSpec("spont-a", 6, 2, intervals=[(105.0, 135.0)]),
        MotifSpec("spont-b", 6, 3, intervals=[(375.0, 410.0)], share=[("tap", 2)]),
    ]
    return RealisticPreset(n_neurons=60, n_animals=4, sampling_rate=2.0, duration=420.0,
                           stimuli=stimuli, motifs=motifs, onset_jitter_s=3.0, latency_max_s=2.0,
                           counts_per_photon=2.0, read_noise=12.0, motion_artefacts=6,
                           missing_fraction=(0.10, 0.30))


def _realistic_easy() -> RealisticPreset:
    # clean: disjoint motifs in every animal, no jitter or latency, one kinetics, little noise,
    # no saturation or artefacts, few missing neurons, a weaker behaviour network
    stimuli = _stimulus_protocol(600, 60, 60, 60, ["odor", "light", "odor", "tap"])
    motifs = [
        MotifSpec("odor", 8, 4, epochs=["odor"]),
        MotifSpec("light", 7, 4, epochs=["light"]),
        MotifSpec("tap", 7, 4, epochs=["tap"]),
        MotifSpec("spont-a", 6, 4, intervals=[(125.0, 175.0)]),
    ]
    return RealisticPreset(n_neurons=48, n_animals=4, sampling_rate=2.0, duration=600.0,
                           stimuli=stimuli, motifs=motifs, background_amplitude=1.0, slow_sd=0.05,
                           onset_jitter_s=0.0, latency_max_s=0.0, tau_rise_s=(0.2, 0.2),
                           tau_decay_s=(1.0, 1.0), saturation=None, counts_per_photon=0.25,
                           read_noise=2.0, motion_artefacts=0, missing_fraction=(0.05, 0.05))


def _realistic_full_size() -> RealisticPreset:
    """The standard model at the size of a real whole-brain recording: 150 neurons (the Flavell
    lab's worms in ../shared/data/flavell have ~135, 0.6 s frames, 8 min) at 1.7 Hz for 16 min
    (twice theirs, to hold 10 motifs: 6 stimulus-locked, 4 spontaneous, two pairs sharing
    neurons, each in 3-4 of 5 animals), a behaviour network of 20. For measuring how the method
    scales with what a recording holds; not in the default benchmark (about 25 s per pipeline run)."""
    labels = ["odor", "light", "tap", "salt", "odor", "heat", "light", "cold"]
    stimuli = _stimulus_protocol(960, 40, 70, 50, labels)
    motifs = [
        MotifSpec("odor", 8, 4, epochs=["odor"]),
        MotifSpec("light", 7, 4, epochs=["light"], share=[("odor", 2)]),
        MotifSpec("tap", 7, 4, epochs=["tap"]),
        MotifSpec("salt", 8, 3, epochs=["salt"]),
        MotifSpec("heat", 6, 4, epochs=["heat"]),
        MotifSpec("cold", 7, 3, epochs=["cold"], share=[("heat", 2)]),
        MotifSpec("spont-a", 6, 3, intervals=[(95.0, 155.0)]),
        MotifSpec("spont-b", 6, 4, intervals=[(315.0, 375.0)], share=[("tap", 2)]),
        MotifSpec("spont-c", 7, 3, intervals=[(535.0, 595.0)]),
        MotifSpec("spont-d", 6, 4, intervals=[(865.0, 935.0)]),
    ]
    return RealisticPreset(n_neurons=150, n_animals=5, sampling_rate=1.7, duration=960.0,
                           stimuli=stimuli, motifs=motifs, background_size=20)


def _realistic_tiny() -> RealisticPreset:
    """The realistic generator at test size: 2 motifs (one stimulus-locked, one spontaneous,
    sharing a neuron) + the behaviour network, 3 animals, 300 s."""
    stimuli = [("odor", 60.0, 120.0), ("odor", 180.0, 240.0)]
    motifs = [
        MotifSpec("odor", 7, 3, epochs=["odor"]),
        MotifSpec("spont", 6, 2, intervals=[(125.0, 175.0)], share=[("odor", 1)]),
    ]
    return RealisticPreset(n_neurons=32, n_animals=3, sampling_rate=2.0, duration=300.0,
                           stimuli=stimuli, motifs=motifs, background_size=8, motion_artefacts=2,
                           missing_fraction=(0.05, 0.15),
                           config={"factorize": {"ranks": [2, 5], "restarts": 3}})


def _alternating_states(duration: float, forward_mean: float, reversal_mean: float,
                        rng: np.random.Generator) -> list[tuple[float, float]]:
    """Reversal intervals of a forward/reversal sequence: gamma(4) durations, random phase."""
    shape = 4.0
    t = -rng.uniform(0, forward_mean)  # the recording starts at a random phase
    reversals = []
    while t < duration:
        t += rng.gamma(shape, forward_mean / shape)
        stop = t + rng.gamma(shape, reversal_mean / shape)
        if t < duration:
            reversals.append((max(t, 0.0), min(stop, duration)))
        t = stop
    return reversals


def _indicator_of(time: np.ndarray, intervals) -> np.ndarray:
    out = np.zeros(time.size)
    for start, stop in intervals:
        out[(time >= start) & (time < stop)] = 1.0
    return out


def _exp_filter(x: np.ndarray, tau_frames: np.ndarray) -> np.ndarray:
    """First-order low-pass of each row of x (N, F) with its own time constant, in frames."""
    a = np.exp(-1.0 / np.maximum(np.asarray(tau_frames, dtype=float), 1e-9))
    out = np.empty_like(x)
    out[:, 0] = (1 - a) * x[:, 0]
    for f in range(1, x.shape[1]):  # a loop over frames, vectorised over neurons (scipy.signal imports slowly)
        out[:, f] = a * out[:, f - 1] + (1 - a) * x[:, f]
    return out


def _ou(n_frames: int, rate: float, tau_s: float, sd: float, rng: np.random.Generator) -> np.ndarray:
    """An Ornstein-Uhlenbeck process (stationary SD ``sd``, time constant ``tau_s``)."""
    a = np.exp(-1.0 / (tau_s * rate))
    x = np.empty(n_frames)
    x[0] = rng.normal(0, sd)
    innovations = rng.normal(0, sd * np.sqrt(1 - a * a), size=n_frames)
    for f in range(1, n_frames):
        x[f] = a * x[f - 1] + innovations[f]
    return x


def _draw_members(preset: RealisticPreset, rng: np.random.Generator):
    """Motif members (with the requested sharing) and the behaviour network, disjoint otherwise."""
    pool = list(rng.permutation(preset.n_neurons))
    members: dict[str, list[int]] = {}
    for m in preset.motifs:
        chosen: list[int] = []
        for other, k in m.share:
            chosen += [int(x) for x in rng.choice(members[other], size=k, replace=False)]
        while len(chosen) < m.size:
            chosen.append(int(pool.pop()))
        members[m.name] = sorted(chosen)
    background = sorted(int(pool.pop()) for _ in range(preset.background_size))
    return members, background


def simulate_realistic(preset: RealisticPreset, random_state: int = 0) -> dict:
    """Simulate every animal with the realistic generator. Pure: arrays and ground truth in.

    Returns ``traces`` (list of (F, N) float64 raw fluorescence, counts), ``present`` bool
    (N, A), ``names`` (N), ``time`` (F) s, and ``truth`` (the ground truth, JSON-ready, with
    neuron names; see ``docs/simulator.md``).
    """
    rng = np.random.default_rng(random_state)
    rate, n, n_animals = preset.sampling_rate, preset.n_neurons, preset.n_animals
    n_frames = int(round(preset.duration * rate))
    time = np.arange(n_frames) / rate
    names = neuron_names(n)
    members, background = _draw_members(preset, rng)
    half = len(background) // 2
    reversal_members, forward_members = background[:half], background[half:]
    motif_animals = {m.name: sorted(int(a) for a in rng.choice(n_animals, size=m.n_animals, replace=False))
                     for m in preset.motifs}
    motif_intervals = {m.name: ([(s, e) for lab, s, e in preset.stimuli if lab in m.epochs]
                                + [tuple(iv) for iv in m.intervals]) for m in preset.motifs}
    # properties of a neuron, the same in every animal: response latency per motif, kinetics
    latency = {m.name: rng.uniform(0, preset.latency_max_s, size=m.size) for m in preset.motifs}
    tau_rise = rng.uniform(*preset.tau_rise_s, size=n)
    tau_decay = np.exp(rng.uniform(*np.log(preset.tau_decay_s), size=n))
    k_len = int(np.ceil(8 * tau_decay.max() * rate)) + 1
    t_k = np.arange(k_len) / rate
    kernels = np.exp(-t_k[None, :] / tau_decay[:, None]) - np.exp(-t_k[None, :] / tau_rise[:, None])
    kernels /= kernels.max(axis=1, keepdims=True)
    half_sat = rng.uniform(*preset.saturation, size=(n, 1)) if preset.saturation else None

    traces, present = [], np.ones((n, n_animals), dtype=bool)
    truth_animals = []
    for a in range(n_animals):
        events = np.zeros((n, n_frames))
        private = rng.random((n, n_frames)) < preset.private_rate / rate
        events[private] += rng.lognormal(0.0, 0.3, size=private.sum())
        jitter: dict[str, list[float]] = {}
        for m in preset.motifs:
            if a not in motif_animals[m.name]:
                continue
            jitter[m.name] = []
            for start, stop in motif_intervals[m.name]:
                shift = float(rng.normal(0, preset.onset_jitter_s)) if preset.onset_jitter_s else 0.0
                jitter[m.name].append(shift)
                lo, hi = start + shift, stop + shift
                shared = lo + np.flatnonzero(rng.random(int((hi - lo) * rate)) < preset.group_rate / rate) / rate
                if m.epochs:  # a stimulus response starts with an onset transient in every member
                    shared = np.concatenate([[lo], shared])
                for member, lag in zip(members[m.name], latency[m.name]):
                    joins = shared[rng.random(shared.size) < preset.participation]
                    frames = np.round((joins + lag + rng.uniform(0, 0.25, joins.size)) * rate).astype(int)
                    frames = frames[(frames >= 0) & (frames < n_frames)]
                    np.add.at(events[member], frames, rng.lognormal(0.0, 0.3, size=frames.size))
        calcium = np.stack([np.convolve(events[i], kernels[i])[:n_frames] for i in range(n)])
        # behaviour network: reversal neurons follow the reversal state, forward neurons its
        # complement, each through its own slow kinetics, with state-gated co-fluctuations
        reversals = _alternating_states(preset.duration, preset.forward_mean_s, preset.reversal_mean_s, rng)
        state = _indicator_of(time, reversals)
        drive = np.stack([state if i < half else 1.0 - state for i in range(len(background))])
        level = _exp_filter(drive, tau_decay[background] * rate * rng.uniform(1.0, 2.0, len(background)))
        wobble = _ou(n_frames, rate, 3.0, 0.2, rng)
        amplitude = preset.background_amplitude * rng.uniform(0.7, 1.3, size=(len(background), 1))
        calcium[background] += amplitude * level * (1.0 + wobble[None, :] * drive)
        # slow shared fluctuation (arousal, temperature, global state): every neuron, own loading
        calcium += rng.uniform(0.5, 1.5, size=(n, 1)) * _ou(n_frames, rate, preset.slow_tau_s, preset.slow_sd, rng)
        calcium = np.maximum(calcium, 0.0)
        if half_sat is not None:  # the indicator saturates: c / (1 + c / K)
            calcium = calcium / (1.0 + calcium / half_sat)
        baseline = rng.uniform(200, 1000, size=(n, 1))
        gain = rng.uniform(0.5, 2.0, size=(n, 1))
        bleach = np.exp(-time[None, :] / rng.uniform(1000, 3000, size=(n, 1)))
        fluo = baseline * (1 + gain * calcium) * bleach
        artefacts = []
        for _ in range(preset.motion_artefacts):
            centre, width = rng.uniform(5, preset.duration - 5), rng.uniform(0.5, 2.0)
            hit = rng.random(n) < rng.uniform(0.4, 0.8)
            depth = rng.uniform(0.15, 0.4) * rng.choice([-1.0, 1.0]) * rng.uniform(0.7, 1.3, size=hit.sum())
            bump = np.exp(-0.5 * ((time - centre) / (width / 2)) ** 2)
            fluo[hit] *= 1.0 - depth[:, None] * bump[None, :]
            artefacts.append([round(centre - width, 2), round(centre + width, 2)])
        # shot noise (variance ∝ photon count) and read noise (constant)
        fluo = fluo + rng.normal(0.0, 1.0, size=fluo.shape) * np.sqrt(preset.counts_per_photon * np.maximum(fluo, 0))
        fluo += rng.normal(0.0, preset.read_noise, size=fluo.shape)
        traces.append(fluo.T)
        fraction = rng.uniform(*preset.missing_fraction)
        present[rng.choice(n, size=int(round(fraction * n)), replace=False), a] = False
        truth_animals.append({
            "name": f"worm{a + 1}",
            "missing": sorted(names[i] for i in np.flatnonzero(~present[:, a])),
            "reversal_intervals": [[round(s, 2), round(e, 2)] for s, e in reversals],
            "onset_jitter_s": {k: [round(v, 3) for v in vs] for k, vs in jitter.items()},
            "motion_artefacts_s": artefacts,
        })

    animal_names = [t["name"] for t in truth_animals]
    groups = []
    for m in preset.motifs:
        shares = sorted({o.name for o in preset.motifs if o is not m and set(members[o.name]) & set(members[m.name])})
        groups.append({
            "name": m.name, "kind": "stimulus" if m.epochs else "spontaneous",
            "neurons": members[m.name], "neuron_names": [names[i] for i in members[m.name]],
            "epochs": list(m.epochs),
            "intervals": [[float(s), float(e)] for s, e in motif_intervals[m.name]],
            "animals": motif_animals[m.name], "animal_names": [animal_names[i] for i in motif_animals[m.name]],
            "latency_s": {names[i]: round(float(v), 3) for i, v in zip(members[m.name], latency[m.name])},
            "shares_neurons_with": shares,
        })
    truth = {
        "generator": "realistic",
        "sampling_rate": rate, "duration_s": preset.duration,
        "epochs": [{"label": lab, "start_s": s, "stop_s": e} for lab, s, e in preset.stimuli],
        "groups": groups,
        "n_motifs": len(groups),
        "background": {
            "name": "behaviour", "kind": "background",
            "neuron_names": [names[i] for i in background],
            "reversal_neuron_names": [names[i] for i in reversal_members],
            "forward_neuron_names": [names[i] for i in forward_members],
            "animals": list(range(n_animals)), "animal_names": animal_names,
        },
        "animals": truth_animals,
        "neuron_names": names,
    }
    return {"traces": traces, "present": present, "names": names, "time": time, "truth": truth}


PRESETS = {"easy": _realistic_easy, "standard": _realistic_standard, "hard": _realistic_hard,
           "full-size": _realistic_full_size, "tiny": _realistic_tiny,
           "basic": _basic, "small": _small, "large": _large}


def _csv_bytes(header: list[str], values: np.ndarray) -> bytes:
    body = "\n".join(",".join(f"{v:.3f}" for v in row) for row in values)
    return (",".join(header) + "\n" + body + "\n").encode()


def _write_realistic(outdir: Path, preset: RealisticPreset, random_state: int) -> tuple[list[dict], dict]:
    """Every animal as a lab's CSV would be: header = the neurons it recorded, in its own order."""
    from .io.artifacts import atomic_write_bytes

    sim = simulate_realistic(preset, random_state)
    order_rng = np.random.default_rng([random_state, 0x5EED])  # column orders: not the traces' stream
    animals = []
    for a, fluo in enumerate(sim["traces"]):
        keep = order_rng.permutation(np.flatnonzero(sim["present"][:, a]))
        name = f"worm{a + 1}"
        atomic_write_bytes(outdir / f"{name}.csv", _csv_bytes([sim["names"][i] for i in keep], fluo[:, keep]))
        animals.append({"name": name, "path": f"{name}.csv"})
    return animals, sim["truth"]


def _write_basic(outdir: Path, preset: Preset, random_state: int) -> tuple[list[dict], dict]:
    import h5py

    from .io.artifacts import atomic_write_bytes

    sim = simulate_dataset(preset, random_state)
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
            atomic_write_bytes(outdir / f"{name}.csv", _csv_bytes([names[i] for i in keep], fluo[:, keep]))
            animals.append({"name": name, "path": f"{name}.csv"})
    truth = truth_record(preset, names)
    truth["animals"] = [{"name": f"worm{a + 1}", "missing": sorted(names[i] for i in np.flatnonzero(~sim["present"][:, a]))}
                        for a in range(preset.n_animals)]
    return animals, truth


def write_dataset(outdir: Path, preset_name: str = "standard", random_state: int = 0) -> Path:
    """Simulate and write a ready-to-run dataset; returns the path of its config.yaml."""
    outdir = Path(outdir)
    if preset_name not in PRESETS:
        raise ValueError(f"unknown preset {preset_name!r}; choose from {', '.join(PRESETS)}")
    from .io.artifacts import atomic_write_bytes

    preset = PRESETS[preset_name]()
    outdir.mkdir(parents=True, exist_ok=True)
    if isinstance(preset, RealisticPreset):
        animals, truth = _write_realistic(outdir, preset, random_state)
        epochs = preset.stimuli
    else:
        animals, truth = _write_basic(outdir, preset, random_state)
        epochs = preset.epochs
    truth.update({"preset": preset_name, "seed": int(random_state)})
    stim = "label,start_s,stop_s\n" + "".join(f"{l},{s:g},{e:g}\n" for l, s, e in epochs)
    atomic_write_bytes(outdir / "stimuli.csv", stim.encode())
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
    import yaml  # (here: the command line imports this module for the preset names)

    atomic_write_bytes(path, (header + yaml.safe_dump(config, sort_keys=False)).encode())
    return path


# ----------------------------------------------------------------------------- scoring
#: A community of at least this many neurons counts as a finding (smaller ones are not scored
#: as false communities).
MIN_FINDING = 3


def group_intervals(group: dict, truth: dict) -> list[tuple[float, float]]:
    """A planted group's active intervals, protocol seconds (from its epoch labels when the
    truth predates ``intervals``)."""
    if "intervals" in group:
        return [(float(s), float(e)) for s, e in group["intervals"]]
    return [(e["start_s"], e["stop_s"]) for e in truth["epochs"] if e["label"] in group["epochs"]]


def epoch_indicator(time_s: np.ndarray, truth: dict, labels: list[str]) -> np.ndarray:
    """1.0 at the bins whose centre lies in one of ``labels``' epochs, else 0.0."""
    return _indicator_of(np.asarray(time_s), group_intervals({"epochs": labels}, truth))


def score_recovery(
    truth: dict, time_s: np.ndarray, factors_time: np.ndarray, membership: np.ndarray,
    neurons: list[str],
) -> tuple[float, list[dict]]:
    """Recovery of planted groups (the pipeline issue's score).

    For each group: the component whose temporal loading (T, R) best correlates with the
    group's active-interval indicator, and in it the community with the highest Jaccard
    overlap with the group. Returns the mean Jaccard and per-group details (with the matched
    community's precision |C ∩ G| / |C| and recall |C ∩ G| / |G|; 0 when none overlaps).
    A single component with a constant loading (a static method) matches every group.
    """
    time_s = np.asarray(time_s)
    factors_time = np.asarray(factors_time, dtype=float).reshape(time_s.size, -1)
    details = []
    for g in truth["groups"]:
        indicator = _indicator_of(time_s, group_intervals(g, truth))
        corr = [np.corrcoef(indicator, factors_time[:, r])[0, 1] if factors_time[:, r].std() > 0
                else -1.0 for r in range(factors_time.shape[1])]
        best = int(np.nanargmax(corr))
        group = set(g["neuron_names"])
        jaccard, best_members = 0.0, set()
        for c in np.unique(membership[best][membership[best] >= 0]):
            members = {neurons[i] for i in np.flatnonzero(membership[best] == c)}
            j = len(group & members) / len(group | members)
            if j > jaccard:
                jaccard, best_members = j, members
        hit = len(group & best_members)
        details.append({"group": g["name"], "component": best, "correlation": float(corr[best]),
                        "jaccard": jaccard, "community": sorted(best_members),
                        "precision": hit / len(best_members) if best_members else 0.0,
                        "recall": hit / len(group)})
    return float(np.mean([d["jaccard"] for d in details])), details


def false_communities(truth: dict, membership: np.ndarray, neurons: list[str]) -> list[list[str]]:
    """Communities (any component) of at least ``MIN_FINDING`` neurons that lie in no planted
    group: no group (nor the background network) holds at least half of their members."""
    planted = [set(g["neuron_names"]) for g in truth["groups"]]
    if truth.get("background"):
        planted.append(set(truth["background"]["neuron_names"]))
    out = []
    for row in np.atleast_2d(membership):
        for c in np.unique(row[row >= 0]):
            members = {neurons[i] for i in np.flatnonzero(row == c)}
            if len(members) >= MIN_FINDING and not any(2 * len(members & s) >= len(members) for s in planted):
                out.append(sorted(members))
    return out


def score_run(truth: dict, time_s: np.ndarray, factors_time: np.ndarray, membership: np.ndarray,
              neurons: list[str]) -> dict:
    """Every score of one result against the truth: ``recovery`` (mean Jaccard, as
    :func:`score_recovery`), mean ``precision`` and ``recall`` of the matched communities,
    ``false_communities`` (count), ``rank`` (components) and ``planted_rank`` (motifs, + 1
    for a background network), and the per-group ``details``."""
    recovery, details = score_recovery(truth, time_s, factors_time, membership, neurons)
    return {
        "recovery": recovery,
        "precision": float(np.mean([d["precision"] for d in details])),
        "recall": float(np.mean([d["recall"] for d in details])),
        "false_communities": len(false_communities(truth, membership, neurons)),
        "rank": int(np.atleast_2d(membership).shape[0]),
        "planted_rank": int(truth["n_motifs"]) + (1 if truth.get("background") else 0),
        "details": details,
    }

"""The null model's two checks (issue 12, docs/benchmarks.md "Significance of communities"):

1. On a simulator preset every planted group's community gets p < 0.05 -- where the chosen
   rank gives the group a component of its own (below).
2. On the same data with every neuron's trace circularly shifted by its own random lag in
   each animal (no co-activation left), at most 5 % of the reported communities get p < 0.05.

For each seed: simulate, shift a copy of the files, run the whole pipeline on both (default
config: ``report.surrogates`` as in the config schema), and read ``summary.json``.

A group *has a component of its own* when the component whose temporal loading correlates best
with the group's intervals (``dynconn.simulate.score_recovery``) is not also the best match of
another group: with fewer components than groups, two groups share one, and the community standing
in for one of them need not be cohesive.

    python benchmarks/significance.py [--preset standard] [--seeds 0 1 2] [--shifts 1] [--set KEY=VALUE] [--out DIR] [--json FILE]

``--shifts K``: K shifted copies per seed (independent lags), for more chance communities: on
the realistic presets the communities stage leaves about one community per shifted run.
"""

from __future__ import annotations

import argparse
import resource
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np

# this checkout's dynconn, not whichever is installed (the runs use it too: `python -m dynconn`
# from the working directory)
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dynconn.methods import null  # noqa: E402
from dynconn.simulate import score_recovery, write_dataset  # noqa: E402

ALPHAS = (0.01, 0.05, 0.1, 0.2, 0.5)


def leave_one_out(workdir: Path) -> np.ndarray:
    """Calibration from a run's cached surrogates (no new computation): each surrogate taken as
    the data, its components' best communities (replication > 0: a component without one reports
    nothing) against the other surrogates as the null. Under no co-activation these p-values
    are uniform: the fraction below alpha should be at most alpha."""
    cached = sorted((workdir / "checkpoints" / "surrogates").glob("*/*.npz"))
    maxima = [np.load(f)["replication"] for f in cached]
    return np.asarray([null.tail_p(v, np.concatenate(maxima[:k] + maxima[k + 1:]))
                       for k in range(len(maxima)) for v in maxima[k] if v > 0])


def shift_columns(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each column (neuron) of a (frames, neurons) array circularly shifted by its own lag in
    [10 %, 90 %] of the recording."""
    f = values.shape[0]
    out = values.copy()
    for j in range(values.shape[1]):
        out[:, j] = np.roll(values[:, j], int(rng.integers(int(0.1 * f), int(0.9 * f) + 1)))
    return out


def shifted_copy(data: Path, out: Path, seed: int) -> Path:
    """A copy of a simulated dataset folder with every neuron's trace shifted; its config."""
    shutil.copytree(data, out)
    rng = np.random.default_rng(seed)
    for csv in sorted(out.glob("worm*.csv")):
        if csv.name.endswith("-neurons.csv"):
            continue
        header = csv.read_text().split("\n", 1)[0]
        values = np.loadtxt(csv, delimiter=",", skiprows=1, ndmin=2)
        body = "\n".join(",".join(f"{v:.3f}" for v in row) for row in shift_columns(values, rng))
        csv.write_text(header + "\n" + body + "\n")
    for h5 in sorted(out.glob("worm*.h5")):
        with h5py.File(h5, "r+") as f:
            f["gcamp/trace_array"][...] = shift_columns(np.asarray(f["gcamp/trace_array"]), rng)
    return out / "config.yaml"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(config: Path, workdir: Path, sets: list[str] = ()) -> tuple[dict, float, float]:
    """The whole pipeline on one dataset (``sets``: ``KEY=VALUE`` overrides): its summary, wall
    seconds and CPU seconds (user + system of the run and every process it started)."""
    t0, c0 = time.perf_counter(), _children_cpu()
    subprocess.run([sys.executable, "-m", "dynconn", "run", str(config), "--workdir", str(workdir), "-q",
                    *[arg for kv in sets for arg in ("--set", kv)]], check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])})
    summary = json.loads((workdir / "exports" / "summary.json").read_text())
    return summary, time.perf_counter() - t0, _children_cpu() - c0


def own_components(truth: dict, workdir: Path) -> dict[str, bool]:
    """For each planted group: whether the rank gave it a component of its own (module doc)."""
    with h5py.File(workdir / "factors.h5", "r") as f:
        f_time = np.asarray(f["factors/time"])
    with h5py.File(workdir / "communities.h5", "r") as f:
        membership = np.asarray(f["membership"])
    with h5py.File(workdir / "affinity.h5", "r") as f:
        time_s = np.asarray(f["time"])
        neurons = [n.decode() if isinstance(n, bytes) else str(n) for n in f["neurons"][()]]
    if f_time.shape[0] != time_s.size:  # concatenated layout: not the simulator's configs
        raise SystemExit("significance.py scores aligned runs only")
    _, details = score_recovery(truth, time_s, f_time, membership, neurons)
    best = [d["component"] for d in details]
    return {d["group"]: best.count(d["component"]) == 1 for d in details}


def planted_p_values(summary: dict, truth: dict) -> list[tuple[str, float, float, bool]]:
    """Each planted group's best-matching community in any component (Jaccard), its p-value and
    whether it is cohesive (a diffuse community gets no p-value: None)."""
    out = []
    for group in truth["groups"]:
        names = set(group["neuron_names"])
        best = (0.0, None, False)
        for comp in summary["components"]:
            for d in comp["communities_detail"]:
                j = len(names & set(d["neurons"])) / len(names | set(d["neurons"]))
                if j > best[0]:
                    best = (j, d["p_value"], bool(d["cohesive"]))
        out.append((group["name"], round(best[0], 3), best[1], best[2]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--preset", default="standard", help="simulator preset (docs/simulator.md)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/dynconn-significance"))
    ap.add_argument("--json", type=Path, help="also write every number to this file")
    ap.add_argument("--shifts", type=int, default=1, help="shifted copies per seed")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override for both runs, e.g. report.surrogates=40 (repeatable)")
    args = ap.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    false_pos = total = 0
    own_p, shared_p, records, calibration = [], [], [], []
    for seed in args.seeds:
        config = write_dataset(args.out / f"s{seed}" / "data", args.preset, seed)
        truth = json.loads((config.parent / "truth.json").read_text())
        workdir = args.out / f"s{seed}" / "run"
        summary, seconds, cpu = run(config, workdir, args.sets)
        sig = summary["significance"]
        own = own_components(truth, workdir)
        planted = [(g, j, p, c, own[g]) for g, j, p, c in planted_p_values(summary, truth)]
        for g, j, p, c, mine in planted:
            (own_p if mine else shared_p).append(p)
        print(f"seed {seed} ({args.preset}): rank {summary['rank']} for {len(truth['groups'])} groups, "
              f"run {seconds:.1f} s wall / {cpu:.1f} s CPU, {sig['surrogates']} surrogates "
              f"{summary['provenance']['timings'].get('surrogates', 0.0):.1f} s wall; "
              f"planted (group, Jaccard, p, cohesive, own component): {planted}", flush=True)
        record = {"seed": seed, "rank": summary["rank"], "groups": len(truth["groups"]),
                  "wall_s": seconds, "cpu_s": cpu,
                  "surrogates_wall_s": summary["provenance"]["timings"].get("surrogates", 0.0),
                  "planted": [{"group": g, "jaccard": j, "p": p, "cohesive": c, "own_component": m}
                              for g, j, p, c, m in planted], "shifted": []}
        for k in range(args.shifts):
            name = "shifted" if k == 0 else f"shifted{k}"
            shifted = shifted_copy(config.parent, args.out / f"s{seed}" / name, 1000 + seed + 100 * k)
            s_summary, s_seconds, s_cpu = run(shifted, args.out / f"s{seed}" / f"{name}-run", args.sets)
            ps = [d["p_value"] for c in s_summary["components"] for d in c["communities_detail"]
                  if d["p_value"] is not None]
            cohesive = [d["p_value"] for c in s_summary["components"] for d in c["communities_detail"]
                        if d["p_value"] is not None and d["cohesive"]]
            low = sum(p < 0.05 for p in ps)
            false_pos += low
            total += len(ps)
            print(f"  {name}: rank {s_summary['rank']}, run {s_seconds:.1f} s wall / {s_cpu:.1f} s CPU, "
                  f"{len(ps)} communities with a p-value, {low} with p < 0.05 "
                  f"(cohesive: {sum(p < 0.05 for p in cohesive)} of {len(cohesive)}); "
                  f"p-values {sorted(round(p, 3) for p in ps)}", flush=True)
            loo = leave_one_out(args.out / f"s{seed}" / f"{name}-run")
            calibration.append(loo)
            record["shifted"].append({"rank": s_summary["rank"], "wall_s": s_seconds, "cpu_s": s_cpu,
                                      "p_values": ps, "cohesive_p_values": cohesive,
                                      "leave_one_out_p": loo.tolist()})
        records.append(record)
    print(f"planted groups with a component of their own: {sum(p is not None and p < 0.05 for p in own_p)} "
          f"of {len(own_p)} with p < 0.05; the other groups: {shared_p}")
    print(f"shifted data, all seeds: {false_pos} of {total} communities with p < 0.05 "
          f"({100 * false_pos / max(total, 1):.1f} %)")
    loo = np.concatenate(calibration) if calibration else np.zeros(0)
    print(f"leave-one-out over the shifted runs' surrogates: {loo.size} null communities; below alpha: "
          + ", ".join(f"{a:g}: {np.count_nonzero(loo < a)} ({100 * np.mean(loo < a) if loo.size else 0:.1f} %)"
                      for a in ALPHAS))
    if args.json:
        args.json.write_text(json.dumps({"preset": args.preset, "sets": args.sets, "seeds": records}, indent=2))


if __name__ == "__main__":
    main()

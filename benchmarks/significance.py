"""The null model's two checks (issue 12, docs/benchmarks.md "Significance of communities"):

1. On the simulator's standard preset every planted group's community gets p < 0.05.
2. On the same data with every neuron's trace circularly shifted by its own random lag in
   each animal (no co-activation left), at most 5 % of the reported communities get p < 0.05.

For each seed: simulate, shift a copy of the files, run the whole pipeline on both (default
config: ``report.surrogates`` as in the config schema), and read ``summary.json``.

    python benchmarks/significance.py [--seeds 0 1 2] [--out /tmp/dynconn-significance]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np

from dynconn.simulate import write_dataset


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


def run(config: Path, workdir: Path) -> tuple[dict, float]:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dynconn", "run", str(config), "--workdir", str(workdir), "-q"],
                   check=True, capture_output=True)
    return json.loads((workdir / "exports" / "summary.json").read_text()), time.perf_counter() - t0


def planted_p_values(summary: dict, truth: dict) -> list[tuple[str, float, float]]:
    """Each planted group's best-matching cohesive community (Jaccard) and its p-value."""
    out = []
    for group in truth["groups"]:
        names = set(group["neuron_names"])
        best = (0.0, None)
        for comp in summary["components"]:
            for d in comp["communities_detail"]:
                if d["cohesive"]:
                    j = len(names & set(d["neurons"])) / len(names | set(d["neurons"]))
                    if j > best[0]:
                        best = (j, d["p_value"])
        out.append((group["name"], round(best[0], 3), best[1]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=Path("/tmp/dynconn-significance"))
    args = ap.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    false_pos = total = 0
    for seed in args.seeds:
        config = write_dataset(args.out / f"s{seed}" / "data", "standard", seed)
        truth = json.loads((config.parent / "truth.json").read_text())
        summary, seconds = run(config, args.out / f"s{seed}" / "run")
        sig = summary["significance"]
        print(f"seed {seed}: rank {summary['rank']}, run {seconds:.1f} s, surrogates {sig['surrogates']} "
              f"in {summary['provenance']['timings'].get('surrogates', 0.0):.1f} s; planted (group, Jaccard, p): {planted_p_values(summary, truth)}")
        shifted = shifted_copy(config.parent, args.out / f"s{seed}" / "shifted", 1000 + seed)
        summary, seconds = run(shifted, args.out / f"s{seed}" / "shifted-run")
        ps = [d["p_value"] for c in summary["components"] for d in c["communities_detail"]
              if d["p_value"] is not None]
        cohesive = [d["p_value"] for c in summary["components"] for d in c["communities_detail"]
                    if d["p_value"] is not None and d["cohesive"]]
        low = sum(p < 0.05 for p in ps)
        false_pos += low
        total += len(ps)
        print(f"  shifted: rank {summary['rank']}, {len(ps)} communities with a p-value, {low} with p < 0.05 "
              f"(cohesive: {sum(p < 0.05 for p in cohesive)} of {len(cohesive)}); "
              f"p-values {sorted(round(p, 3) for p in ps)}")
    print(f"shifted data, all seeds: {false_pos} of {total} communities with p < 0.05 "
          f"({100 * false_pos / max(total, 1):.1f} %)")


if __name__ == "__main__":
    main()

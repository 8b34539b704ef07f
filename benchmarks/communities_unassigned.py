"""Evidence weighting, unassigned and joining neurons, measured on the simulator's presets.

For each preset and seed: simulate, run the pipeline up to `factorize` once (default config), then
partition the same factors under each `communities.evidence` × `communities.min_contrast` ×
`communities.join_fraction` and
score, for every planted group (its best-matching component, as in the tests):
recovery (Jaccard of the best community), precision (fraction of that community in the group)
and component precision (fraction of the component's assigned neurons in the group), plus false
communities (>= 3 neurons, Jaccard < 0.5 with every planted group).

    python benchmarks/communities_unassigned.py [--presets standard] [--seeds 0 1 2 3]
        [--evidence none evidence sqrt shrink] [--contrasts 0 1.5 2 3] [--joins 0]
        [--out /tmp/dynconn-unassigned]

The measurement behind `communities.evidence`, `communities.min_contrast` and
`communities.join_fraction` (docs/communities.md, "Missing neurons", "Unassigned neurons",
"Shared neurons").
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from dynconn.stages import communities
from dynconn.io.artifacts import read_h5
from dynconn.simulate import score_recovery, write_dataset

EVIDENCE = ("none", "evidence", "sqrt", "shrink")
CONTRASTS = (0.0, 1.5, 2.0, 3.0)
JOINS = (0.0,)


def scores(truth, aff, fac, membership) -> dict:
    neurons = list(aff["neurons"])
    recovery, details = score_recovery(truth, aff["time"], fac["factors/time"], membership, neurons)
    groups = {g["name"]: set(g["neuron_names"]) for g in truth["groups"]}
    precision, comp_precision = [], []
    for d in details:
        group, community = groups[d["group"]], set(d["community"])
        precision.append(len(group & community) / len(community) if community else 0.0)
        assigned = {neurons[i] for i in np.flatnonzero(membership[d["component"]] >= 0)}
        comp_precision.append(len(group & assigned) / len(assigned) if assigned else 0.0)
    false = 0
    for r in range(membership.shape[0]):
        for c in np.unique(membership[r][membership[r] >= 0]):
            members = {neurons[i] for i in np.flatnonzero(membership[r] == c)}
            if len(members) >= 3 and max(len(members & g) / len(members | g) for g in groups.values()) < 0.5:
                false += 1
    return {"recovery": recovery, "precision": float(np.mean(precision)),
            "component_precision": float(np.mean(comp_precision)), "false": false}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["standard"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--evidence", nargs="+", default=list(EVIDENCE), choices=EVIDENCE)
    parser.add_argument("--contrasts", type=float, nargs="+", default=list(CONTRASTS))
    parser.add_argument("--joins", type=float, nargs="+", default=list(JOINS))
    parser.add_argument("--out", type=Path, default=Path("/tmp/dynconn-unassigned"))
    args = parser.parse_args()
    variants = [(p, e, c, j) for p in args.presets for e in args.evidence for c in args.contrasts
                for j in args.joins]
    table = {v: [] for v in variants}
    seconds = {v: 0.0 for v in variants}
    for preset in args.presets:
        for seed in args.seeds:
            folder = args.out / f"{preset}-seed{seed}"
            config = write_dataset(folder, preset, seed)
            subprocess.run([sys.executable, "-m", "dynconn", "run", str(config), "-q", "--until", "factorize"],
                           check=True)
            truth = json.loads((folder / "truth.json").read_text())
            aff, fac = read_h5(folder / "run" / "affinity.h5"), read_h5(folder / "run" / "factors.h5")
            for v in (v for v in variants if v[0] == preset):
                started = time.process_time()
                weights = communities.edge_weights(aff, fac, v[1])
                parts = communities.partition_components(weights, aff["pairs"], len(aff["neurons"]),
                                                         min_contrast=v[2], join_fraction=v[3])
                seconds[v] += time.process_time() - started
                table[v].append(scores(truth, aff, fac, parts.membership))
    print(f"seeds {args.seeds}; means over seeds")
    print("| preset | evidence | min_contrast | join_fraction | recovery | per seed | precision | "
          "component precision | false communities | CPU s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for v in variants:
        rows = table[v]
        mean = {k: np.mean([r[k] for r in rows]) for k in rows[0]}
        per_seed = " ".join(f"{r['recovery']:.2f}" for r in rows)
        print(f"| {v[0]} | {v[1]} | {v[2]:g} | {v[3]:g} | {mean['recovery']:.3f} | {per_seed} | "
              f"{mean['precision']:.3f} | {mean['component_precision']:.3f} | {mean['false']:.2f} | "
              f"{seconds[v]:.1f} |")


if __name__ == "__main__":
    main()

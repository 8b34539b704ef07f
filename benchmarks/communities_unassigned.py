"""Evidence weighting and unassigned neurons, measured on the simulator's standard preset.

For each seed: simulate, run the pipeline up to `factorize` once (default config), then
partition the same factors under each `communities.evidence` × `communities.min_contrast` and
score, for every planted group (its best-matching component, as in the tests):
recovery (Jaccard of the best community), precision (fraction of that community in the group)
and component precision (fraction of the component's assigned neurons in the group), plus false
communities (>= 3 neurons, Jaccard < 0.5 with every planted group).

    python benchmarks/communities_unassigned.py [--seeds 0 1 2 3] [--out /tmp/dynconn-unassigned]

The measurement behind `communities.evidence` and `communities.min_contrast`
(docs/communities.md, "Missing neurons" and "Unassigned neurons").
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
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--out", type=Path, default=Path("/tmp/dynconn-unassigned"))
    args = parser.parse_args()
    variants = [(e, c) for e in EVIDENCE for c in CONTRASTS]
    table = {v: [] for v in variants}
    seconds = {v: 0.0 for v in variants}
    for seed in args.seeds:
        folder = args.out / f"seed{seed}"
        config = write_dataset(folder, "standard", seed)
        subprocess.run([sys.executable, "-m", "dynconn", "run", str(config), "-q", "--until", "factorize"],
                       check=True)
        truth = json.loads((folder / "truth.json").read_text())
        aff, fac = read_h5(folder / "run" / "affinity.h5"), read_h5(folder / "run" / "factors.h5")
        for how, contrast in variants:
            started = time.process_time()
            weights = communities.edge_weights(aff, fac, how)
            parts = communities.partition_components(weights, aff["pairs"], len(aff["neurons"]),
                                                     min_contrast=contrast)
            seconds[(how, contrast)] += time.process_time() - started
            table[(how, contrast)].append(scores(truth, aff, fac, parts.membership))
    print(f"seeds {args.seeds}; means over seeds")
    print("| evidence | min_contrast | recovery | precision | component precision | false communities | CPU s |")
    print("|---|---|---|---|---|---|---|")
    for v in variants:
        rows = table[v]
        mean = {k: np.mean([r[k] for r in rows]) for k in rows[0]}
        print(f"| {v[0]} | {v[1]:g} | {mean['recovery']:.3f} | {mean['precision']:.3f} | "
              f"{mean['component_precision']:.3f} | {mean['false']:.2f} | {seconds[v]:.1f} |")


if __name__ == "__main__":
    main()

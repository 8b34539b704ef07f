"""Recovery of planted groups by each community method, on the simulator's standard preset.

For each seed: simulate, run the pipeline up to `factorize` once, then partition the same
factors with every method (and wsbm variants) and score recovery (mean Jaccard of each
planted group with its best community in its best-matching component, as in the tests).

    python benchmarks/communities_recovery.py [--seeds 0 1 2 3] [--out /tmp/dynconn-recovery]

This is the measurement behind how a component's dense pair pattern enters the wsbm
(docs/communities.md, "Graphs from CP components").
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

VARIANTS = {
    "wsbm (pipeline default: raw weights, zero pairs absent)": ("wsbm", {"node_correction": False}),
    "wsbm, zero pairs ignored (weights only)": ("wsbm", {"topology": False, "node_correction": False}),
    "wsbm, node correction chosen by DL": ("wsbm", {"node_correction": "auto"}),
    "wsbm, node correction forced on": ("wsbm", {"node_correction": True}),
    "leiden-modularity": ("leiden-modularity", {}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--out", type=Path, default=Path("/tmp/dynconn-recovery"))
    args = parser.parse_args()
    scores: dict[str, list[float]] = {name: [] for name in VARIANTS}
    seconds: dict[str, float] = {name: 0.0 for name in VARIANTS}
    original = dict(communities.DENSE_GRAPH_OPTIONS)
    for seed in args.seeds:
        folder = args.out / f"seed{seed}"
        config = write_dataset(folder, "standard", seed)
        subprocess.run([sys.executable, "-m", "dynconn", "run", str(config), "-q", "--until", "factorize"],
                       check=True)
        truth = json.loads((folder / "truth.json").read_text())
        aff, fac = read_h5(folder / "run" / "affinity.h5"), read_h5(folder / "run" / "factors.h5")
        for name, (method, options) in VARIANTS.items():
            # the variants differ only in keywords of wsbm.partition
            communities.DENSE_GRAPH_OPTIONS = {method: options}
            started = time.process_time()
            parts = communities.partition_components(fac["factors/pairs"], aff["pairs"], len(aff["neurons"]),
                                                     method=method)
            seconds[name] += time.process_time() - started
            score, _ = score_recovery(truth, aff["time"], fac["factors/time"], parts.membership,
                                      list(aff["neurons"]))
            scores[name].append(score)
    communities.DENSE_GRAPH_OPTIONS = original
    print(f"| method | {' | '.join(f'seed {s}' for s in args.seeds)} | mean | CPU s |")
    print("|---|" + "---|" * (len(args.seeds) + 2))
    for name in VARIANTS:
        row = " | ".join(f"{v:.3f}" for v in scores[name])
        print(f"| {name} | {row} | **{np.mean(scores[name]):.3f}** | {seconds[name]:.1f} |")


if __name__ == "__main__":
    main()

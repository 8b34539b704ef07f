"""Communities made of missing neurons: how often each edge weighting produces them.

Structureless data (independent noise per neuron, 4 animals, 5 different neurons missing in
each; the generator of tests/methods_data.py) through the pipeline up to `factorize` (rank 3),
then every `communities.evidence` × `communities.min_contrast`: the number of communities that
coincide with a missing set (>= 3 neurons, Jaccard >= 0.5 with some animal's missing set) and
the number of neurons assigned at all (structureless: ideally none).

    python benchmarks/missing_neurons.py [--seeds 0 1 2 3 4 5] [--out /tmp/dynconn-missing]

The measurement behind `communities.evidence` (docs/communities.md, "Missing neurons").
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from methods_data import structureless  # noqa: E402  (the tests' hand-made recordings)

from dynconn.stages import communities  # noqa: E402
from dynconn.io.artifacts import read_h5  # noqa: E402

EVIDENCE = ("none", "evidence", "sqrt", "shrink")
CONTRASTS = (0.0, 1.5, 2.0)


def coinciding(membership: np.ndarray, sets) -> int:
    count = 0
    for row in membership:
        for c in np.unique(row[row >= 0]):
            members = set(np.flatnonzero(row == c).tolist())
            if len(members) >= 3 and max(len(members & set(s)) / len(members | set(s)) for s in sets) >= 0.5:
                count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    parser.add_argument("--out", type=Path, default=Path("/tmp/dynconn-missing"))
    args = parser.parse_args()
    rows = {}
    for layout in ("aligned", "concatenated"):
        for seed in args.seeds:
            folder = args.out / f"{layout}-{seed}"
            config, sets = structureless(folder, seed=seed, config={
                "data": {"layout": layout}, "factorize": {"rank": 3, "restarts": 2}})
            subprocess.run([sys.executable, "-m", "dynconn", "run", str(config), "-q", "--until", "factorize"],
                           check=True)
            aff, fac = read_h5(folder / "run" / "affinity.h5"), read_h5(folder / "run" / "factors.h5")
            for how in EVIDENCE:
                weights = communities.edge_weights(aff, fac, how)
                for contrast in CONTRASTS:
                    m = communities.partition_components(weights, aff["pairs"], len(aff["neurons"]),
                                                         min_contrast=contrast).membership
                    rows.setdefault((layout, how, contrast), []).append((coinciding(m, sets), int((m >= 0).sum())))
    print(f"seeds {args.seeds}: communities coinciding with a missing set (total over seeds), "
          "neurons assigned (mean per run, of 3 components × 30)")
    print("| layout | evidence | min_contrast | coinciding | runs with any | assigned |")
    print("|---|---|---|---|---|---|")
    for (layout, how, contrast), vals in rows.items():
        hits = [v[0] for v in vals]
        print(f"| {layout} | {how} | {contrast:g} | {sum(hits)} | {sum(h > 0 for h in hits)}/{len(hits)} | "
              f"{np.mean([v[1] for v in vals]):.1f} |")


if __name__ == "__main__":
    main()

"""Where each planted motif is lost: affinity, factorization, or communities (issue 11, spont-a).

For each preset and seed: ``dynconn simulate``, the pipeline up to ``communities`` (the
simulator's config plus ``--set`` overrides), then per planted group

* **affinity**: its block's share of the tensor's squared sum (within-group pairs recorded in
  the group's animals, bins inside its intervals: the energy a least-squares fit can gain by
  modelling it), and the mean within-group affinity inside its intervals against outside
  (the group's animals only);
* **factorization**: the component whose temporal loading best correlates with the group's
  interval indicator (the recovery score's match) and that correlation;
* **communities**: the Jaccard of the best community of that component (the recovery score);

and per run the chosen rank and how many components carry more than half of their squared
mass on unobserved entries (:func:`dynconn.methods.evidence.unobserved_mass`: components that
explain no data).

    python benchmarks/planted_motifs.py --presets standard --seeds 0 1 2 3 4
    python benchmarks/planted_motifs.py --seeds 4 --set factorize.rank=7
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from dynconn import config as config_mod
from dynconn.console import Console
from dynconn.io.artifacts import read_h5
from dynconn.methods.evidence import unobserved_mass
from dynconn.runner.pipeline import run_pipeline
from dynconn.simulate import _indicator_of, group_intervals, score_run, write_dataset


def group_affinity(truth: dict, aff) -> dict:
    """Per group: block energy share, mean affinity inside / outside its intervals."""
    X, mask, pairs, time = aff["affinity"], aff["mask"], aff["pairs"], aff["time"]
    neurons, animals = list(aff["neurons"]), list(aff["animals"])
    index = {n: i for i, n in enumerate(neurons)}
    total = float((X.astype(np.float64) ** 2).sum())
    out = {}
    for g in truth["groups"]:
        members = np.zeros(len(neurons), dtype=bool)
        # a planted neuron recorded in no animal is not in the artifact (ingest drops it)
        members[[index[n] for n in g["neuron_names"] if n in index]] = True
        within = members[pairs[:, 0]] & members[pairs[:, 1]]
        inside = _indicator_of(time, group_intervals(g, truth)) > 0
        energy, x_in, x_out, slots = 0.0, [], [], 0
        for name in g["animal_names"]:
            a = animals.index(name)
            rows = within & mask[:, a]
            if not rows.any():
                continue
            block = X[rows, :, a].astype(np.float64)
            energy += float((block[:, inside] ** 2).sum())
            x_in.append(block[:, inside].mean())
            x_out.append(block[:, ~inside].mean())
            slots += int(rows.sum())
        out[g["name"]] = {"energy_share": energy / total, "pairs_x_animals": slots,
                          "bins": int(inside.sum()),
                          "mean_in": float(np.mean(x_in)) if x_in else float("nan"),
                          "mean_out": float(np.mean(x_out)) if x_out else float("nan")}
    return out


def one(preset: str, seed: int, root: Path, overrides: list[str]) -> dict:
    data = root / f"{preset}-{seed}"
    write_dataset(data, preset, seed)
    cfg = config_mod.load(data / "config.yaml", overrides)
    run_pipeline(cfg, data / "run", Console(quiet=True), stop="communities")
    aff, fac, com = (read_h5(data / "run" / f) for f in ("affinity.h5", "factors.h5", "communities.h5"))
    truth = json.loads((data / "truth.json").read_text())
    score = score_run(truth, aff["time"], fac["factors/time"], com["membership"], list(aff["neurons"]))
    if str(aff.attrs.get("layout", "aligned")) != "aligned":  # the group scores assume aligned time
        raise SystemExit("planted_motifs.py: the aligned layout only (the simulator's default)")
    lost = unobserved_mass(aff["mask"], fac["factors/pairs"], fac["factors/time"], fac["factors/animals"])
    per_group = group_affinity(truth, aff)
    for d in score["details"]:
        per_group[d["group"]].update(component=d["component"], correlation=d["correlation"], jaccard=d["jaccard"])
    return {"preset": preset, "seed": seed, "rank": score["rank"], "recovery": score["recovery"],
            "precision": score["precision"], "unobserved_mass": lost.tolist(),
            "unobserved_components": int((lost > 0.5).sum()), "groups": per_group}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["standard"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", type=Path, help="write every run's numbers here")
    parser.add_argument("--keep", type=Path, help="keep the datasets and runs in this folder")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="planted-"))
    results = []
    try:
        for preset in args.presets:
            for seed in args.seeds:
                r = one(preset, seed, root, args.overrides)
                results.append(r)
                print(f"\n{preset} seed {seed}: rank {r['rank']}, components >50% unobserved "
                      f"{r['unobserved_components']}, recovery {r['recovery']:.2f}, precision {r['precision']:.2f}")
                print("| group | energy % | pairs x animals | bins | mean in | mean out | component | corr | Jaccard |")
                print("|---|---|---|---|---|---|---|---|---|")
                for name, g in r["groups"].items():
                    print(f"| {name} | {100 * g['energy_share']:.1f} | {g['pairs_x_animals']} | {g['bins']} | "
                          f"{g['mean_in']:.2f} | {g['mean_out']:.2f} | {g['component']} | "
                          f"{g['correlation']:+.2f} | {g['jaccard']:.2f} |")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Real recordings: is dynconn's answer truer than a static correlation's? (issue 11, part 7)

Runs dynconn's default pipeline (``dynconn run`` on the config, by default
``configs/flavell.yaml``: concatenated layout) on the two freely moving worms of
``../shared/data/flavell`` **without** ``ingest.merge_bilateral`` (left/right homologs stay
separate neurons, so whether they end up together is a test), in a temporary work directory,
and computes a static baseline from the same preprocessed traces (``ingest.h5``): Pearson
correlation over all time, pooled over the animals on the neurons recorded in every animal
(each neuron z-scored per animal, products summed over all frames of all animals = the
frame-weighted mean of the per-animal correlations), positive correlations as edge weights,
Leiden modularity (``dynconn.wsbm.partition(method="leiden-modularity")``, best of 10 seeds).

Metrics, for both (dynconn: pooled over its components, each component's communities being
one partition of the neurons in its graph; unassigned neurons, −1, take no part), and for
dynconn's partitions seen on the static baseline's neurons only (column "dynconn, shared
neurons": is a difference the method's or the neuron set's?); then dynconn's components one
by one:

(a) **homologs**: of the left/right pairs (AVAL/AVAR …) both assigned in a partition, the
    fraction in the same community; chance = its mean when each partition's labels are
    shuffled (sizes kept); margin = fraction − chance; permutation p-value.
(b) **reversal module**: the community that holds most of AVA, AVE, AIB, RIM (L and R; for
    dynconn the best over components): how many of those present it holds, its size, and how
    many of the forward neurons AVB, RIB it also holds (should be 0).
(c) **synapses**: the fraction of neuron pairs with at least one anatomical contact within
    communities over that fraction between them
    (White 1986; Witvliet 2021 adult datasets 7 + 8; chemical + gap junctions, and each kind
    alone), with a permutation p-value (``dynconn.methods.reference.within_between``).
(d) **signal propagation**: the same for the causal links of the Neural Signal Propagation
    Atlas (Randi et al. 2023, q < 0.05, either direction), counting only pairs the atlas
    measured.

``--fit-seeds S …`` runs dynconn once more per seed (``factorize.seed=S``, the seed of the
rank sweep's and the final fit's restarts; everything else the same) and adds a table of the
headline numbers per seed with their mean and SD. On these two worms they move more from one
seed to the next than between most configurations compared on one seed (docs/benchmarks.md,
"Real worms: one seed is not a measurement"), so compare configurations over seeds.

(c) and (d) need the optional extra ``pip install 'dynconn[worm]'`` (wormneuroatlas); without
it they are left out with a note. Skipped cleanly (exit 0) when the data folder is absent.

    python benchmarks/realdata.py --data ../shared/data/flavell [--config configs/flavell.yaml]
        [--set key=value ...] [--permutations 2000] [--fit-seeds 1 2 3 4] [--json out.json] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import igraph  # noqa: E402

from dynconn.io import references as refio  # noqa: E402
from dynconn.io.artifacts import read_h5  # noqa: E402
from dynconn.methods import reference as ref  # noqa: E402
from dynconn.methods.wsbm import partition  # noqa: E402
from dynconn.stages.ingest import bilateral_map  # noqa: E402

REVERSAL = ("AVAL", "AVAR", "AVEL", "AVER", "AIBL", "AIBR", "RIML", "RIMR")
FORWARD = ("AVBL", "AVBR", "RIBL", "RIBR")
CONNECTOMES = ("white1986", "witvliet2020")
ANIMAL_PATH_KEYS = ("path", "neurons", "covariates")


# ----------------------------------------------------------------------------------------------
# dynconn's run
# ----------------------------------------------------------------------------------------------
def prepare_config(config: Path, data: Path | None, workdir: Path, out: Path) -> Path:
    """A copy of ``config`` whose relative paths are made absolute (it is written elsewhere),
    with each animal's files taken from ``data`` (same file names) when given."""
    raw = yaml.safe_load(config.read_text())
    base = config.resolve().parent
    for animal in raw.get("data", {}).get("animals", []):
        for key in ANIMAL_PATH_KEYS:
            if animal.get(key):
                p = Path(animal[key])
                animal[key] = str(data / p.name if data is not None else
                                  (p if p.is_absolute() else base / p))
    stimuli = raw.get("data", {}).get("stimuli")
    if isinstance(stimuli, str):
        raw["data"]["stimuli"] = str(Path(stimuli) if Path(stimuli).is_absolute() else base / stimuli)
    raw["workdir"] = str(workdir)
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    return out


def run_dynconn(config: Path, overrides: list[str]) -> float:
    cmd = [sys.executable, "-m", "dynconn", "run", str(config), "--quiet",
           "--set", "ingest.merge_bilateral=false"]
    for o in overrides:
        cmd += ["--set", o]
    t0 = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"dynconn run failed (exit {done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------------------------
# static baseline
# ----------------------------------------------------------------------------------------------
def pooled_correlation(traces: np.ndarray, n_frames: np.ndarray, shared: np.ndarray) -> np.ndarray:
    """Pearson correlation over all frames of all animals on the ``shared`` neurons: each
    neuron z-scored per animal, products summed over every frame, divided by the frames.
    ``traces`` (A, N, F) with NaN after an animal's last frame; returns (S, S)."""
    total = np.zeros((shared.sum(), shared.sum()))
    frames = 0
    for a, f in enumerate(n_frames):
        x = traces[a, shared, :f].astype(float)
        x = x - x.mean(axis=1, keepdims=True)
        x /= x.std(axis=1, keepdims=True)
        total += x @ x.T
        frames += f
    corr = total / frames
    np.fill_diagonal(corr, 0.0)
    return corr


def static_partition(corr: np.ndarray, seed: int) -> np.ndarray:
    """Leiden modularity on the graph of positive correlations (best of 10 seeds)."""
    iu, ju = np.triu_indices(len(corr), k=1)
    keep = corr[iu, ju] > 0
    g = igraph.Graph(n=len(corr), edges=list(zip(iu[keep].tolist(), ju[keep].tolist())))
    g.es["weight"] = corr[iu, ju][keep].tolist()
    return np.asarray(partition(g, method="leiden-modularity", n_runs=10, random_state=seed).membership)


# ----------------------------------------------------------------------------------------------
# metrics
# ----------------------------------------------------------------------------------------------
def reversal_module(labels: np.ndarray, names: list[str]) -> dict:
    """The community holding most reversal neurons (over all rows of ``labels``; ties: fewer
    forward neurons, then the smaller community)."""
    index = {n: i for i, n in enumerate(names)}
    best = None
    for r, row in enumerate(labels):
        present = [n for n in REVERSAL if n in index and row[index[n]] >= 0]
        forward_present = [n for n in FORWARD if n in index and row[index[n]] >= 0]
        for c in {int(row[index[n]]) for n in present}:
            inside = [n for n in present if row[index[n]] == c]
            forward_in = [n for n in forward_present if row[index[n]] == c]
            size = int((row == c).sum())
            key = (len(inside), -len(forward_in), -size)
            if best is None or key > best[0]:
                best = (key, dict(component=r, reversal_present=present, reversal_together=inside,
                                  forward_present=forward_present, forward_inside=forward_in,
                                  community_size=size))
    return best[1] if best else dict(component=None, reversal_present=[], reversal_together=[],
                                     forward_present=[], forward_inside=[], community_size=0)


def evaluate(labels: np.ndarray, names: list[str], references: list, n_perm: int, seed: int,
             per_component: bool = True) -> dict:
    labels = np.atleast_2d(labels)
    out = {"partitions": int(labels.shape[0]),
           "neurons_assigned": int((labels >= 0).any(axis=0).sum()),
           "communities": [int(len(set(row[row >= 0].tolist()))) for row in labels]}
    homologs = ref.homolog_pairs(names, bilateral_map(names))
    out["homologs"] = ref.within_between(labels, homologs, n_permutations=n_perm,
                                         seed=seed).as_dict()
    out["reversal"] = reversal_module(labels, names)
    for graph in references:
        weight, tested = ref.reference_matrices(graph, names)
        # binary: a pair is linked or not (contact counts are heavy-tailed; a few pairs with
        # dozens of synapses would otherwise decide the ratio)
        out[graph.name] = ref.within_between(labels, (weight > 0).astype(float), tested,
                                             n_permutations=n_perm, seed=seed).as_dict()
        out[graph.name]["description"] = graph.description
    if per_component and labels.shape[0] > 1:  # each component alone: which one carries the result
        out["per_component"] = []
        for r, row in enumerate(labels):
            one = {"component": r, "neurons_assigned": int((row >= 0).sum()), "homologs": ref.within_between(
                row, homologs, n_permutations=n_perm, seed=seed).as_dict()}
            for graph in references:
                if graph.name in ("white1986:all", ref.SIGNAL_PROPAGATION):
                    weight, tested = ref.reference_matrices(graph, names)
                    one[graph.name] = ref.within_between(row, (weight > 0).astype(float), tested,
                                                         n_permutations=n_perm, seed=seed).as_dict()
            out["per_component"].append(one)
    return out


def component_table(results: dict) -> str:
    """dynconn's components one by one (homolog fraction vs chance, White 1986 and signal
    propagation ratios)."""
    lines = ["| component | neurons × communities | homologs (chance) | White 1986 chem+gap | signal propagation |",
             "|---|---|---|---|---|"]
    d = results["dynconn"]
    for one, k in zip(d.get("per_component", []), d["communities"]):
        h = one["homologs"]
        cells = [f"{_f(h['fraction'])} ({_f(h['chance_fraction'])})"]
        for key in ("white1986:all", ref.SIGNAL_PROPAGATION):
            cells.append(f"{_f(one[key]['ratio'])}× (p {_p(one[key]['p_value'])})" if key in one else "—")
        lines.append(f"| {one['component']} | {one['neurons_assigned']} × {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# table
# ----------------------------------------------------------------------------------------------
def _f(x, fmt="{:.2f}"):
    return "—" if x is None else fmt.format(x)


def _p(x):
    return "—" if x is None else (f"{x:.4f}" if x >= 1e-3 else f"{x:.1e}")


METHODS = (("dynconn", "dynconn"), ("dynconn_shared", "dynconn, shared neurons"), ("static", "static"))


def table(results: dict, references: list) -> str:
    """One row per metric, one column per method (:data:`METHODS`)."""
    ms = [results[key] for key, _ in METHODS]

    def row(name, cell):
        return (name, *[cell(m) for m in ms])

    def margin(m):
        h = m["homologs"]
        return None if h["fraction"] is None else h["fraction"] - h["chance_fraction"]

    def rev(m):
        r = m["reversal"]
        return f"{len(r['reversal_together'])}/{len(r['reversal_present'])} (size {r['community_size']})"

    rows = [row("neurons in the partitions", lambda m: str(m["neurons_assigned"])),
            row("partitions (components) × communities",
                lambda m: f"{m['partitions']} × {'/'.join(map(str, m['communities']))}"),
            row("homologs together", lambda m: _f(m["homologs"]["fraction"])),
            row("  chance (permuted labels)", lambda m: _f(m["homologs"]["chance_fraction"])),
            row("  margin over chance", lambda m: _f(margin(m), "{:+.2f}")),
            row("  homolog pairs counted (over partitions)",
                lambda m: str(int(m["homologs"]["within_weight"] + m["homologs"]["between_weight"]))),
            row("  p (permutation)", lambda m: _p(m["homologs"]["p_value"])),
            row("reversal AVA/AVE/AIB/RIM in one community", rev),
            row("  AVB/RIB in that community (want 0)",
                lambda m: f"{len(m['reversal']['forward_inside'])}/{len(m['reversal']['forward_present'])} inside")]
    for graph in references:
        rows.append(row(f"{graph.short}: within/between", lambda m: _f(m[graph.name]["ratio"]) + "×"))
        rows.append(row("  p (permutation)", lambda m: _p(m[graph.name]["p_value"])))
    header = ("metric", *[label for _, label in METHODS])
    w = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    lines = ["| " + " | ".join(f"{c:<{w[i]}}" for i, c in enumerate(header)) + " |",
             "|" + "|".join("-" * (x + 2) for x in w) + "|"]
    lines += ["| " + " | ".join(f"{c:<{w[i]}}" for i, c in enumerate(r)) + " |" for r in rows]
    return "\n".join(lines)


def headline(m: dict) -> dict:
    """The numbers the seed table compares, from one :func:`evaluate` result."""
    h, r = m["homologs"], m["reversal"]
    out = {"neurons_assigned": m["neurons_assigned"], "communities": m["communities"],
           "homologs": h["fraction"],
           "homolog_margin": None if h["fraction"] is None else h["fraction"] - h["chance_fraction"],
           "reversal": f"{len(r['reversal_together'])}/{len(r['reversal_present'])} (size {r['community_size']})"}
    for key in ("white1986:all", ref.SIGNAL_PROPAGATION):
        if key in m:
            out[key] = m[key]["ratio"]
    return out


SEED_COLUMNS = (("homolog_margin", "homolog margin", "{:+.2f}"), ("white1986:all", "White 1986 chem+gap", "{:.2f}×"),
                (ref.SIGNAL_PROPAGATION, "signal propagation", "{:.2f}×"))


def seed_table(rows: list[dict], static: dict) -> str:
    """One row per fit seed (rank, partitions, homolog margin, enrichments, reversal module),
    then mean ± SD over the seeds and the static baseline's value (it has no fit seed)."""
    cols = [c for c in SEED_COLUMNS if any(r.get(c[0]) is not None for r in rows)]
    lines = ["| fit seed | rank | neurons × communities | " + " | ".join(c[1] for c in cols) + " | reversal AVA/AVE/AIB/RIM |",
             "|---|---|---|" + "---|" * len(cols) + "---|"]
    for r in rows:
        cells = [_f(r.get(key), fmt) for key, _, fmt in cols]
        lines.append(f"| {r['seed']} | {r['rank']} | {r['neurons_assigned']} × {'/'.join(map(str, r['communities']))} | "
                     + " | ".join(cells) + f" | {r['reversal']} |")
    summary = []
    for key, _, fmt in cols:
        vals = np.array([r[key] for r in rows if r.get(key) is not None and np.isfinite(r[key])], dtype=float)
        summary.append("—" if not len(vals) else fmt.format(vals.mean()) + f" ± {vals.std(ddof=1) if len(vals) > 1 else 0:.2f}")
    lines.append("| mean ± SD | | | " + " | ".join(summary) + " | |")
    lines.append("| static baseline | | | " + " | ".join(_f(static.get(key), fmt) for key, _, fmt in cols) + " | |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "flavell",
                    help="folder with the recordings (the config's file names are looked up here)")
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "flavell.yaml")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="passed to dynconn run (after ingest.merge_bilateral=false)")
    ap.add_argument("--permutations", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0, help="seed of the permutations and of the static baseline's Leiden")
    ap.add_argument("--fit-seeds", type=int, nargs="+", default=[], metavar="S",
                    help="also run dynconn with factorize.seed=S for each S and tabulate the headline numbers per seed")
    ap.add_argument("--json", type=Path, help="also write every number to this JSON file")
    ap.add_argument("--keep", type=Path, help="work directory to keep (default: a temporary one)")
    args = ap.parse_args(argv)

    if not args.data.is_dir():
        print(f"skipped: no data at {args.data}")
        return 0
    if not args.config.is_file():
        sys.exit(f"{args.config}: no such config file")
    references = []
    if refio.worm_references_available():
        references = [refio.reference_graph(n, kind) for n in CONNECTOMES
                      for kind in ("all", "chemical", "electrical")]
        references.append(refio.reference_graph(ref.SIGNAL_PROPAGATION))
    else:
        print(f"note: reference connectomes left out: {refio.EXTRA_HINT}")

    with tempfile.TemporaryDirectory(prefix="dynconn-realdata-") as tmp:
        workdir = args.keep.resolve() if args.keep else Path(tmp) / "run"
        config = prepare_config(args.config, args.data.resolve(), workdir, Path(tmp) / "config.yaml")
        seconds = run_dynconn(config, args.overrides)
        ing = read_h5(workdir / "ingest.h5")
        names = [str(n) for n in read_h5(workdir / "affinity.h5")["neurons"]]
        if names != [str(n) for n in ing["neurons"]]:
            sys.exit("affinity.h5 and ingest.h5 list different neurons")
        membership = read_h5(workdir / "communities.h5")["membership"]
        rank_attrs = read_h5(workdir / "factors.h5", verify=False).attrs

        shared = ing["present"].all(axis=1)
        corr = pooled_correlation(ing["traces"], ing["n_frames"], shared)
        static = np.full(len(names), -1)
        static[shared] = static_partition(corr, args.seed)

        t0 = time.perf_counter()
        results = {
            "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
            "config": str(args.config), "data": str(args.data), "overrides": args.overrides,
            "layout": str(ing.attrs.get("layout")), "rank": int(membership.shape[0]),
            "final_fit": str(rank_attrs.get("final_fit", "")),
            "neurons": len(names), "shared_neurons": int(shared.sum()),
            "dynconn_seconds": round(seconds, 1), "permutations": args.permutations,
            "dynconn": evaluate(membership, names, references, args.permutations, args.seed),
            # the same partitions seen only on the neurons every animal recorded (the static
            # baseline's neurons): is a difference the method's, or the neuron set's?
            "dynconn_shared": evaluate(np.where(shared, membership, -1), names, references,
                                       args.permutations, args.seed, per_component=False),
            "static": evaluate(static, names, references, args.permutations, args.seed),
        }
        results["metrics_seconds"] = round(time.perf_counter() - t0, 1)
        if args.fit_seeds:
            # the config's own run first (its factorize.seed, default 0), then one run per seed
            first = yaml.safe_load(config.read_text()).get("factorize", {}).get("seed", 0)
            for o in args.overrides:
                if o.split("=", 1)[0].strip() == "factorize.seed":
                    first = o.split("=", 1)[1].strip()
            seeds = [dict(seed=str(first), rank=results["rank"], **headline(results["dynconn"]))]
            for seed in args.fit_seeds:
                work_s = Path(tmp) / f"run-seed-{seed}"
                config_s = prepare_config(args.config, args.data.resolve(), work_s, Path(tmp) / f"config-{seed}.yaml")
                run_dynconn(config_s, args.overrides + [f"factorize.seed={seed}"])
                labels = read_h5(work_s / "communities.h5")["membership"]
                seeds.append(dict(seed=str(seed), rank=int(labels.shape[0]),
                                  **headline(evaluate(labels, names, references, args.permutations, args.seed,
                                                      per_component=False))))
            results["fit_seeds"] = seeds

    print(f"dynconn run: layout {results['layout']}, rank {results['rank']}, "
          f"{results['neurons']} neurons ({results['shared_neurons']} in every animal), "
          f"{results['dynconn_seconds']} s; metrics {results['metrics_seconds']} s, "
          f"{args.permutations} permutations")
    print(table(results, references))
    if results["dynconn"].get("per_component"):
        print()
        print(component_table(results))
    if results.get("fit_seeds"):
        print()
        print(seed_table(results["fit_seeds"], headline(results["static"])))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
        print(f"→ {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

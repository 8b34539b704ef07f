"""Recovery of planted dynamic communities: the whole pipeline, default config, against baselines.

For each preset and seed: ``dynconn simulate`` (the realistic generator, docs/simulator.md),
then

* **dynconn**: the pipeline up to ``communities`` with the config the simulator wrote (every
  key its default: differential affinity, ``rank: auto``, wsbm communities);
* **window-corr + NTF**: the same with ``affinity.method: window-corr`` (sliding-window
  Pearson correlation, positive part), the same factorization and communities;
* **static Pearson + Leiden**: one Pearson correlation matrix per animal over all time (of the
  ingested traces), averaged over the animals that recorded both neurons, positive part,
  partitioned by Leiden (``communities.method: leiden``); one "component" active at all times.

Each result is scored by :func:`dynconn.simulate.score_run` (recovery = mean over planted
groups of the best Jaccard overlap between a community of the component whose temporal
loading best matches the group's intervals and the group; precision and recall of that
community; false communities = communities of >= 3 neurons in no planted group or the
background network; chosen rank against planted motifs + 1).

    python benchmarks/recovery.py                       # easy, standard, hard x seeds 0-4
    python benchmarks/recovery.py --presets tiny --seeds 0 1 2 --json out.json
    python benchmarks/recovery.py --presets standard --set factorize.rank=6

The table goes to stdout (markdown) and, with ``--json``, every run's scores to a file.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from dynconn import config as config_mod
from dynconn.io.artifacts import read_h5
from dynconn.stages import communities
from dynconn.console import Console
from dynconn.runner.pipeline import run_pipeline
from dynconn.simulate import score_run, write_dataset

METHODS = ("dynconn", "window-corr + NTF", "static Pearson + Leiden")


def static_pearson(traces: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Mean over animals of each pair's Pearson correlation over all time, positive part.

    traces (A, N, F) with NaN where absent or padded; present (N, A). Pairs recorded together
    in no animal get 0.
    """
    n_animals, n = traces.shape[0], traces.shape[1]
    total, count = np.zeros((n, n)), np.zeros((n, n))
    for a in range(n_animals):
        rows = np.flatnonzero(present[:, a])
        x = traces[a][rows]
        x = x[:, np.all(np.isfinite(x), axis=0)]  # frames every recorded neuron has
        c = np.nan_to_num(np.corrcoef(x))  # a constant trace correlates with nothing
        total[np.ix_(rows, rows)] += c
        count[np.ix_(rows, rows)] += 1
    mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    np.fill_diagonal(mean, 0.0)
    return np.maximum(mean, 0.0)


def run_stages(config_path: Path, workdir: Path, overrides: list[str]) -> float:
    """The pipeline up to communities, in-process; returns its wall-clock seconds."""
    cfg = config_mod.load(config_path, overrides)
    started = time.perf_counter()
    run_pipeline(cfg, workdir, Console(quiet=True), stop="communities")
    return time.perf_counter() - started


def score_workdir(truth: dict, workdir: Path) -> dict:
    aff, fac, com = (read_h5(workdir / f) for f in ("affinity.h5", "factors.h5", "communities.h5"))
    return score_run(truth, aff["time"], fac["factors/time"], com["membership"], list(aff["neurons"]))


def one_dataset(preset: str, seed: int, out: Path, overrides: list[str]) -> list[dict]:
    folder = out / f"{preset}-seed{seed}"
    shutil.rmtree(folder, ignore_errors=True)
    config_path = write_dataset(folder, preset, seed)
    truth = json.loads((folder / "truth.json").read_text())
    rows = []

    seconds = run_stages(config_path, folder / "run", overrides)
    rows.append({"method": METHODS[0], "seconds": seconds, **score_workdir(truth, folder / "run")})

    # window-corr: the same ingest (copied, so it is up to date), its own affinity and after
    (folder / "run-wc").mkdir()
    shutil.copy2(folder / "run" / "ingest.h5", folder / "run-wc" / "ingest.h5")
    seconds = run_stages(config_path, folder / "run-wc", [*overrides, "affinity.method=window-corr"])
    rows.append({"method": METHODS[1], "seconds": seconds, **score_workdir(truth, folder / "run-wc")})

    started = time.perf_counter()
    ing, aff = read_h5(folder / "run" / "ingest.h5"), read_h5(folder / "run" / "affinity.h5")
    w = static_pearson(np.asarray(ing["traces"], dtype=np.float64), np.asarray(ing["present"]))
    pairs = np.asarray(aff["pairs"])
    parts = communities.partition_components(w[pairs[:, 0], pairs[:, 1]][:, None], pairs, w.shape[0],
                                             method="leiden-modularity")
    flat = np.ones((len(aff["time"]), 1))
    rows.append({"method": METHODS[2], "seconds": time.perf_counter() - started,
                 **score_run(truth, aff["time"], flat, parts.membership, list(aff["neurons"]))})
    for row in rows:
        row.update({"preset": preset, "seed": seed})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| preset | method | recovery (mean ± SD) | per seed | rank chosen / planted | rank within ±1 "
             "| precision | recall | false communities | s per run |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for preset in dict.fromkeys(r["preset"] for r in rows):
        for method in METHODS:
            sel = [r for r in rows if r["preset"] == preset and r["method"] == method]
            if not sel:
                continue
            rec = np.array([r["recovery"] for r in sel])
            ranks = " ".join(str(r["rank"]) for r in sel)
            static = method == METHODS[2]
            within = np.mean([abs(r["rank"] - r["planted_rank"]) <= 1 for r in sel])
            lines.append(
                f"| {preset} | {method} | **{rec.mean():.2f}** ± {rec.std():.2f} | "
                f"{' '.join(f'{v:.2f}' for v in rec)} | "
                f"{'—' if static else ranks} / {sel[0]['planted_rank']} | "
                f"{'—' if static else f'{within:.0%}'} | "
                f"{np.mean([r['precision'] for r in sel]):.2f} | {np.mean([r['recall'] for r in sel]):.2f} | "
                f"{np.mean([r['false_communities'] for r in sel]):.1f} | "
                f"{np.mean([r['seconds'] for r in sel]):.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["easy", "standard", "hard"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="a config override for dynconn's and window-corr's runs (KEY=VALUE)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/dynconn-recovery-bench"))
    parser.add_argument("--json", type=Path, default=None, help="write every run's scores here")
    args = parser.parse_args()
    rows = []
    started = time.perf_counter()
    for preset in args.presets:
        for seed in args.seeds:
            new = one_dataset(preset, seed, args.out, args.overrides)
            rows += new
            print(f"# {preset} seed {seed}: " + ", ".join(
                f"{r['method']} {r['recovery']:.2f} (rank {r['rank']})" for r in new), flush=True)
    print(f"\n{table(rows)}\n\n{time.perf_counter() - started:.0f} s in all")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

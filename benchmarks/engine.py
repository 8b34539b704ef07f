"""Benchmark of the engine: one simulated dataset run locally and on a 2-worker Dask LocalCluster.

Through the command line as a user would: ``dynconn simulate --preset PRESET``, then ``dynconn
run`` twice into two work directories, once with the defaults (``compute.scheduler: local``)
and once with ``--set compute.scheduler=dask --set compute.workers=2`` (a LocalCluster of two
single-threaded worker processes, started inside the factorize stage and closed at the end).

Reported: seconds per stage (as ``dynconn run`` prints them: computation and artifact write;
the cluster's start-up falls into the first stage that uses it, factorize), the whole command's
wall-clock seconds, and whether the two runs agree: the same rank and community memberships,
the largest difference of the factors (unit-norm columns) and the weights' largest relative
difference.

Usage::

    python benchmarks/engine.py [--preset standard] [--seed 0] [--workers 2] [--out DIR]

Run it under ``flock /work/notes/bigjob.lock`` on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STAGE_LINE = re.compile(r"✓ (\w+): wrote .* \(([\d.]+) s\)")


def run(config: Path, workdir: Path, extra: list[str]) -> tuple[dict, float]:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "dynconn", "run", str(config), "--workdir", str(workdir), *extra],
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    wall = time.perf_counter() - started
    if proc.returncode:
        sys.exit(f"dynconn run failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    stages = {m.group(1): float(m.group(2)) for m in STAGE_LINE.finditer(proc.stdout + proc.stderr)}
    return stages, wall


def compare(a: Path, b: Path) -> dict:
    from dynconn.io.artifacts import read_h5

    fa, fb = read_h5(a / "factors.h5"), read_h5(b / "factors.h5")
    ca, cb = read_h5(a / "communities.h5"), read_h5(b / "communities.h5")
    out = {"same rank": int(fa.attrs["rank"]) == int(fb.attrs["rank"])}
    if out["same rank"]:
        out["max |Δ factor|"] = max(float(np.max(np.abs(np.asarray(fa[k], dtype=np.float64) - np.asarray(fb[k]))))
                                   for k in ("factors/pairs", "factors/time", "factors/animals"))
        wa, wb = np.asarray(fa["weights"]), np.asarray(fb["weights"])
        out["max relative Δ weight"] = float(np.max(np.abs(wa - wb) / np.abs(wa)))
        out["same communities"] = bool(np.array_equal(np.asarray(ca["membership"]), np.asarray(cb["membership"])))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="standard")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="dynconn-engine-"))
    data = out / "data"
    subprocess.run([sys.executable, "-m", "dynconn", "simulate", str(data), "--preset", args.preset,
                    "--seed", str(args.seed)], check=True, capture_output=True)
    config = data / "config.yaml"
    results = {
        "local": run(config, out / "local", []),
        f"dask, {args.workers} workers": run(config, out / "dask", ["--set", "compute.scheduler=dask", "--set",
                                                                   f"compute.workers={args.workers}"]),
    }
    stages = list(next(iter(results.values()))[0])
    print(f"preset {args.preset} (seed {args.seed}); {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"numpy {np.__version__}")
    print("| stage | " + " | ".join(results) + " |")
    print("|---|" + "---:|" * len(results))
    for stage in stages:
        print(f"| {stage} | " + " | ".join(f"{r[0].get(stage, float('nan')):.1f} s" for r in results.values()) + " |")
    print("| **whole command (wall)** | " + " | ".join(f"**{r[1]:.1f} s**" for r in results.values()) + " |")
    for key, value in compare(out / "local", out / "dask").items():
        print(f"{key}: {value:.3g}" if isinstance(value, float) else f"{key}: {value}")
    print(f"work directories under {out}")


if __name__ == "__main__":
    main()

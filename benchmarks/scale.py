"""The pipeline at scale: wall time and peak memory per stage, N neurons × 4 animals × 240 bins.

    python benchmarks/scale.py --neurons 2000 --budget 2GB [--stages ingest affinity factorize]
    python benchmarks/scale.py --neurons 200 500 1000 2000 --budget 2GB
    python benchmarks/scale.py --neurons 200 500 1000 --set compute.scheduler=dask compute.workers=2

For each N, writes a dataset with the realistic generator (``dynconn simulate``'s ``standard``
preset, scaled: N neurons, 4 animals, 1,200 s at 2 Hz = 240 bins of 5 s; the planted motifs and
behaviour network as in the preset, the other neurons background), then runs each stage as its
own ``python -m dynconn STAGE`` process under ``/usr/bin/time -v`` with
``compute.memory_budget`` = ``--budget`` and ``factorize.rank`` = ``--rank`` (1 restart,
``--max-iter`` iterations), and prints one row per stage: wall seconds and peak RSS, with the
tensor's size (P × T × A float32) beside the budget. Run big cases under
``flock /work/notes/bigjob.lock``. Results are recorded in docs/benchmarks.md ("Out-of-core tensor").
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from dynconn import simulate
from dynconn.config import parse_size
from dynconn.runner.resources import format_bytes

DURATION_S = 1200.0  # 240 bins of the default 5 s
N_ANIMALS = 4


def write_dataset(folder: Path, n_neurons: int, seed: int = 0) -> Path:
    """A scaled copy of the realistic ``standard`` preset; returns its config.yaml."""
    base = simulate.PRESETS["standard"]()
    stimuli = simulate._stimulus_protocol(DURATION_S, 60, 240, 60, ["odor", "light", "odor", "tap"])
    motifs = [dataclasses.replace(m, n_animals=min(m.n_animals, N_ANIMALS)) for m in base.motifs]
    preset = dataclasses.replace(base, n_neurons=n_neurons, n_animals=N_ANIMALS, duration=DURATION_S,
                                 stimuli=stimuli, motifs=motifs)
    animals, _ = simulate._write_realistic(folder, preset, seed)
    (folder / "stimuli.csv").write_text("label,start_s,stop_s\n" + "".join(f"{l},{s:g},{e:g}\n" for l, s, e in stimuli))
    config = {"workdir": "run", "data": {"sampling_rate": preset.sampling_rate, "animals": animals,
                                         "stimuli": "stimuli.csv"}}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_stage(stage: str, config: Path, sets: list[str]) -> tuple[float, int, str]:
    """(wall s, peak RSS bytes, last output line) of ``python -m dynconn STAGE config --set ...``."""
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "dynconn", stage, str(config), "--quiet"]
    for s in sets:
        cmd += ["--set", s]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=config.parent)
    err = proc.stderr
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", err).group(1)) * 1024
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", err).group(1)
    parts = [float(p) for p in wall.split(":")]
    seconds = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
    if proc.returncode != 0:
        lines = [l for l in err.splitlines() if l.strip() and not l.startswith("\t")]
        raise SystemExit(f"{stage} failed (exit {proc.returncode}): {lines[-1] if lines else ''}")
    return seconds, rss, ""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--neurons", type=int, nargs="+", default=[200, 500, 1000, 2000])
    ap.add_argument("--budget", default="2GB")
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--max-iter", type=int, default=50)
    ap.add_argument("--stages", nargs="+", default=["ingest", "affinity", "factorize", "communities"])
    ap.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                    help="more config overrides, e.g. compute.scheduler=dask compute.workers=2")
    ap.add_argument("--keep", type=Path, help="write the datasets here (default: a temporary folder)")
    args = ap.parse_args(argv)
    budget = parse_size(args.budget, "--budget")
    sets = [f"compute.memory_budget={args.budget}", f"factorize.rank={args.rank}", "factorize.restarts=1",
            f"factorize.max_iter={args.max_iter}", "compute.cache_size=0", *args.set]
    print(f"budget {format_bytes(budget)}; rank {args.rank}, {args.max_iter} iterations; {N_ANIMALS} animals, "
          f"{DURATION_S:g} s at 2 Hz (240 bins); overrides {' '.join(args.set) or 'none'}")
    print(f"{'N':>6} {'tensor':>10} {'stage':>10} {'wall s':>8} {'peak RSS':>10} {'RSS/budget':>10}")
    for n in args.neurons:
        folder = Path(tempfile.mkdtemp(prefix=f"dynconn-scale-{n}-")) if args.keep is None else args.keep / f"n{n}"
        folder.mkdir(parents=True, exist_ok=True)
        try:
            config = write_dataset(folder, n)
            tensor = n * (n - 1) // 2 * 240 * N_ANIMALS * 4
            for stage in args.stages:
                seconds, rss, _ = run_stage(stage, config, sets)
                print(f"{n:>6} {format_bytes(tensor):>10} {stage:>10} {seconds:>8.1f} {format_bytes(rss):>10} "
                      f"{rss / budget:>10.2f}", flush=True)
        finally:
            if args.keep is None:
                shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Peak memory of the ingest stage on a large dataset, measured with /usr/bin/time -v.

    python benchmarks/ingest_memory.py [--animals 20] [--neurons 200] [--frames 20000]

Writes the animals into a temporary folder as .npy float32 arrays (time × neurons) with
names files (every neuron in every animal: the aligned array is as large as it can be),
then runs ``python -m dynconn ingest`` on them in a child process under
``/usr/bin/time -v`` and reports its maximum resident set size against the size of the
aligned float32 array (A · N · F · 4 bytes). The target is a peak below twice that size;
the exit status is 1 when it is missed. Results are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml


def write_animals(folder: Path, n_animals: int, n_neurons: int, n_frames: int, rate: float) -> Path:
    """Positive fluorescence-like traces (baseline, slow drift, events, noise); returns config.yaml."""
    names = [f"N{i:04d}" for i in range(n_neurons)]
    animals = []
    for a in range(n_animals):
        rng = np.random.default_rng(a)
        t = np.arange(n_frames, dtype=np.float32) / rate
        x = np.empty((n_frames, n_neurons), dtype=np.float32)
        for j in range(n_neurons):  # one column at a time keeps the generator's memory small
            events = (rng.random(n_frames) < 0.01).astype(np.float32)
            calcium = np.convolve(events, np.exp(-np.arange(12, dtype=np.float32) / 4.0))[:n_frames]
            x[:, j] = 200 * np.exp(-t / 5000) * (1 + calcium) + rng.normal(0, 2, n_frames)
        np.save(folder / f"a{a:02d}.npy", x)
        (folder / f"a{a:02d}-neurons.csv").write_text("index,name\n" + "".join(f"{i},{n}\n" for i, n in enumerate(names)))
        animals.append({"name": f"a{a:02d}", "path": f"a{a:02d}.npy", "neurons": f"a{a:02d}-neurons.csv"})
    config = {"workdir": "run", "data": {"sampling_rate": rate, "animals": animals}}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def measure(config: Path) -> dict:
    """Run the ingest stage under /usr/bin/time -v; peak RSS (bytes) and wall time (s)."""
    timer = shutil.which("time") or "/usr/bin/time"
    if not Path(timer).exists():
        sys.exit("/usr/bin/time not found: apt-get install -y time")
    cmd = [timer, "-v", sys.executable, "-m", "dynconn", "ingest", str(config), "--quiet", "--force"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"ingest failed:\n{proc.stderr}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", proc.stderr).group(1)
    seconds = sum(float(p) * 60 ** i for i, p in enumerate(reversed(wall.split(":"))))
    return {"peak_rss": rss_kb * 1024, "seconds": seconds, "command": " ".join(cmd)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--animals", type=int, default=20)
    ap.add_argument("--neurons", type=int, default=200)
    ap.add_argument("--frames", type=int, default=20000)
    ap.add_argument("--rate", type=float, default=4.0)
    args = ap.parse_args()
    aligned = args.animals * args.neurons * args.frames * 4
    with tempfile.TemporaryDirectory(prefix="dynconn-bench-") as tmp:
        config = write_animals(Path(tmp), args.animals, args.neurons, args.frames, args.rate)
        result = measure(config)
        output = (Path(tmp) / "run" / "ingest.h5").stat().st_size
    ratio = result["peak_rss"] / aligned
    print(f"{args.animals} animals × {args.neurons} neurons × {args.frames} frames")
    print(f"aligned float32 array: {aligned / 1e6:.0f} MB; ingest.h5: {output / 1e6:.0f} MB")
    print(f"peak RSS: {result['peak_rss'] / 1e6:.0f} MB = {ratio:.2f} × the aligned array (target < 2)")
    print(f"wall time: {result['seconds']:.1f} s")
    print(f"command: {result['command']}")
    return 0 if ratio < 2 else 1


if __name__ == "__main__":
    sys.exit(main())

"""Fixed cost of the whole ``dynconn factorize --in A.h5 --out F.h5`` process, beside its iterations.

    python benchmarks/fixed_costs.py [--pairs 17766 --bins 240 --animals 21 --rank 15 --missing 0.15]

Writes an affinity artifact of the paper's size (planted rank-15 tensor with noise, 15 % of the
neurons missing in each animal: their pairs hold 0 as in a real affinity.h5), then times the
standalone command as a child process with ``--max-iter 1`` and ``--max-iter 11`` (``--tol 0``,
one restart): per iteration = (t11 − t1) / 10, fixed cost = t1 − one iteration (interpreter start,
imports, reading and verifying the input, the solver's set-up, writing the output). The file
carries the solver's scan as the affinity stage records it (``--no-record``: a file made
otherwise, which the solver scans). The package is
byte-compiled first, as ``pip install`` does (where ``PYTHONDONTWRITEBYTECODE`` is set, as on some
CI machines, every run would otherwise compile dynconn's sources again: ≈ 0.2 s). A cProfile of
the 1-iteration run in-process breaks the fixed cost down (main thread only: the solver's slow
imports run in a thread meanwhile). Results: docs/benchmarks.md ("Fixed costs of factorize --in
--out").
"""

from __future__ import annotations

import argparse
import compileall
import cProfile
import io
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ntf import neuron_mask, planted_tensor  # noqa: E402

from dynconn.io.artifacts import write_h5  # noqa: E402
from dynconn.stages.affinity import pair_index  # noqa: E402


def write_affinity(path: Path, pairs: int, bins: int, animals: int, rank: int, missing: float,
                   record: bool = True) -> None:
    """The paper-size affinity artifact; with ``record`` it carries the solver's scan as the
    affinity stage records it (root attribute ``observed_scan``), without it is a file made
    otherwise (the solver scans the tensor)."""
    X = planted_tensor((pairs, bins, animals), rank, seed=0)
    mask = neuron_mask(pairs, animals, missing, seed=1)
    X *= mask[:, None, :]
    n = int(round((1 + np.sqrt(1 + 8 * pairs)) / 2))
    attrs = {"layout": "aligned"}
    if record:
        from dynconn.io.artifacts import checksum
        from dynconn.methods.ntf import ObservedScan
        from dynconn.stages.affinity import SCAN_ATTR, scan_record

        scan = ObservedScan(X.shape, mask)
        scan.add(0, X)
        attrs[SCAN_ATTR] = scan_record(scan, {"affinity": checksum(X), "mask": checksum(mask)})
    write_h5(path, {"affinity": X, "pairs": pair_index(n), "mask": mask,
                    "neurons": [f"N{i}" for i in range(n)], "animals": [f"a{a}" for a in range(animals)],
                    "time": np.arange(bins) * 5.0 + 2.5}, stage="affinity", params={}, attrs=attrs)


def command(a_path: Path, out: Path, rank: int, iters: int) -> list[str]:
    return [sys.executable, "-m", "dynconn", "factorize", "--in", str(a_path), "--out", str(out), "--rank",
            str(rank), "--restarts", "1", "--max-iter", str(iters), "--tol", "0", "-q"]


def wall(cmd: list[str], repeats: int, label: str) -> float:
    """Best wall-clock seconds of ``repeats`` runs (the CPU seconds of that run are printed too)."""
    best, best_cpu = np.inf, np.nan
    for _ in range(repeats):
        before = os.times()
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        seconds = time.perf_counter() - t
        after = os.times()
        if seconds < best:
            best = seconds
            best_cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    print(f"  {label}: {best:.2f} s wall, {best_cpu:.2f} s CPU (best of {repeats})")
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=17766)
    ap.add_argument("--bins", type=int, default=240)
    ap.add_argument("--animals", type=int, default=21)
    ap.add_argument("--rank", type=int, default=15)
    ap.add_argument("--missing", type=float, default=0.15)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--profile-lines", type=int, default=25)
    ap.add_argument("--no-record", action="store_true",
                    help="an affinity file without the affinity stage's recorded scan (the solver scans it)")
    args = ap.parse_args(argv)
    import dynconn

    compileall.compile_dir(os.path.dirname(dynconn.__file__), quiet=1)
    with tempfile.TemporaryDirectory() as tmp:
        a_path, out = Path(tmp) / "A.h5", Path(tmp) / "F.h5"
        write_affinity(a_path, args.pairs, args.bins, args.animals, args.rank, args.missing, record=not args.no_record)
        size = a_path.stat().st_size
        t1 = wall(command(a_path, out, args.rank, 1), args.repeats, "1 iteration")
        t11 = wall(command(a_path, out, args.rank, 11), args.repeats, "11 iterations")
        per_iter = (t11 - t1) / 10
        start = wall([sys.executable, "-c", "import dynconn.cli"], args.repeats, "import dynconn.cli")
        print(f"tensor {args.pairs} × {args.bins} × {args.animals} ({size / 2**20:.0f} MiB file), rank {args.rank}, "
              f"{args.missing:.0%} of neurons missing; best of {args.repeats}")
        print(f"1 iteration: {t1:.2f} s; 11 iterations: {t11:.2f} s; per iteration {per_iter * 1e3:.0f} ms")
        print(f"fixed cost (t1 − one iteration): {t1 - per_iter:.2f} s, of which interpreter + `import dynconn.cli` "
              f"{start:.2f} s")
        from dynconn.cli import main as cli_main

        prof = cProfile.Profile()
        prof.enable()
        try:
            cli_main(command(a_path, out, args.rank, 1)[3:], standalone_mode=False)
        finally:
            prof.disable()
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("cumulative").print_stats(args.profile_lines)
        print(text.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())

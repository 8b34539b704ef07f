"""What the factorize stage's checkpoints cost (docs/factorization.md, "Checkpoints").

1. Saving and loading a paper-size checkpoint state (P = 17 766 pairs): the finished rank sweep
   over ranks 2-10 plus a rank-10 fit with 4 finished restarts, written as the stage writes it.
2. Building solver states at every iteration (what ``checkpoint_due`` avoids), and one
   ``Checkpoint.due()`` call.
3. The factorize stage on the simulator's standard preset (rank 4, 3 restarts x 150 iterations,
   tol 0) with ``checkpoint_seconds`` = 1e7 (never), 30, 1 and 0 (a save after every
   iteration), runs interleaved.

    python benchmarks/factorize_checkpoints.py [--reps 4]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import timeit
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import cli  # noqa: E402

from dynconn.methods import ntf  # noqa: E402
from dynconn.io.artifacts import Checkpoint, _flatten, read_h5  # noqa: E402
from dynconn.simulate import write_dataset  # noqa: E402


def paper_size_state(P=17766):
    rng = np.random.default_rng(0)
    X = rng.random((P, 12, 4)).astype(np.float32)  # T, A small: the state is dominated by P x R
    mask = rng.random((P, 4)) > 0.2
    sweep, final = [], []
    ntf.select_rank(X, range(2, 11), mask=mask, n_restarts=3, random_state=0, max_iter=2,
                    checkpoint_due=lambda: False, on_checkpoint=sweep.append)
    ntf.ncp_restarts(X, 10, mask=mask, n_restarts=5, random_state=0, max_iter=3, checkpoint_every=2,
                     on_checkpoint=final.append)
    return {"format": "dynconn.factorize/1", "sweep": sweep[-1], "final": final[-1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=4)
    args = ap.parse_args()

    state = paper_size_state()
    mib = sum(np.asarray(v).nbytes for v in _flatten(state).values()) / 2**20
    with tempfile.TemporaryDirectory() as tmp:
        ck = Checkpoint(Path(tmp) / "checkpoints" / "factorize.h5", {"key": 1})
        save = min(timeit.repeat(lambda: ck.save(state), number=1, repeat=5))
        load = min(timeit.repeat(ck.load, number=1, repeat=5))
        due = timeit.timeit(ck.due, number=100_000) / 100_000
    print(f"paper-size state {mib:.1f} MiB: save {save * 1e3:.0f} ms, load {load * 1e3:.0f} ms (best of 5); "
          f"Checkpoint.due() {due * 1e6:.2f} us")

    rng = np.random.default_rng(1)
    P = 17766
    ops = ntf._NumpyOps(np.float32)
    data = ntf._Data(rng.random((P, 12, 4)).astype(np.float32), rng.random((P, 4)) > 0.2, np.float32)
    prob = ntf._Problem(ops, data, 10, 8)
    Ut, Vt, Wt = ops.asarray(rng.random((10, P))), rng.random((10, 12)), rng.random((10, 4))
    fit = timeit.timeit(lambda: ntf._fit_state(prob, Ut, Vt, Wt, 300, list(rng.random(300)), 1.0, "random",
                                               "hals", "exact", np.float32), number=50) / 50
    cp = ntf.CPTensor((np.ones(10), [rng.random((P, 10)).astype(np.float32), rng.random((12, 10)), rng.random((4, 10))]))
    info = ntf.FitInfo(n_iter=300, converged=False, loss_history=rng.random(300), seconds=1.0, init="random")
    restarts = timeit.timeit(lambda: ntf._restarts_state(1, (), 5, 10, [{"cp": cp, "info": info}] * 4, {}),
                             number=50) / 50
    print(f"building a state (P = {P}, R = 10): fit state {fit * 1e3:.2f} ms, restarts state with 4 finished "
          f"restarts {restarts * 1e3:.2f} ms")

    with tempfile.TemporaryDirectory() as tmp:
        config = write_dataset(Path(tmp) / "data", "standard", 0)
        base = [x for s in ("factorize.rank=4", "factorize.restarts=3", "factorize.max_iter=150", "factorize.tol=0")
                for x in ("--set", s)]
        assert cli("run", config, "-q", "--until", "affinity").exit_code == 0
        times: dict[str, list[float]] = {}
        for _ in range(args.reps):
            for seconds in ("10000000", "30", "1", "0"):
                result = cli("run", config, "-q", "--until", "factorize", "--force", *base,
                             "--set", f"factorize.checkpoint_seconds={seconds}")
                assert result.exit_code == 0, result.output
                fac = read_h5(config.parent / "run" / "factors.h5")
                times.setdefault(seconds, []).append(float(fac.attrs["seconds"]))
    for seconds, values in times.items():
        label = "never" if seconds == "10000000" else f"{seconds} s"
        print(f"standard preset, 3 x 150 iterations, checkpoint_seconds {label}: median {np.median(values):.2f} s "
              f"({', '.join(f'{v:.2f}' for v in values)})")


if __name__ == "__main__":
    main()

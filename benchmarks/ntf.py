#!/usr/bin/env python
"""Benchmark dynconn.methods.ntf.ncp_hals against tensorly's non_negative_parafac_hals.

Builds a planted non-negative tensor (pairs x time x animals), runs both solvers from the SAME
initialisation in one process, and prints seconds per iteration, the exact relative error after
50 and ``--iters`` iterations, the achieved GFLOP/s of our MTTKRPs, the machine's float32 GEMM
rate, and peak memory.

    python benchmarks/ntf.py --shape 17766 240 21 --rank 15 --iters 200
    python benchmarks/ntf.py --shape 17766 240 21 --rank 15 --backend pytorch --skip-tensorly

Flop count: one iteration does two products over X, X2 @ KR(V, W) and U' @ X2, each 2*P*T*A*R
flops (R = the rank, not the padded width); masked fits add two (R^2 x A x P) products.
Memory: on numpy, the process's peak resident set (VmHWM, reset just before X is built, so it
covers building X, validation and our fit; ru_maxrss where /proc is missing) minus the resident
set before X, divided by X's size; and ``tracemalloc``, our solver's own peak allocation above X
in a separate short run. On CUDA, ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tensorly.cp_tensor import CPTensor  # noqa: E402

from dynconn.methods import ntf  # noqa: E402


def planted_tensor(shape, rank, seed, noise=0.1):
    """Sparse-ish non-negative planted factors plus uniform noise, float32, built in one buffer."""
    P, T, A = shape
    rng = np.random.default_rng(seed)
    U = (rng.random((P, rank), dtype=np.float32) ** 4)  # heavy-tailed pair patterns
    V = rng.random((T, rank), dtype=np.float32) ** 2
    W = rng.random((A, rank), dtype=np.float32)
    KR = (V[:, None, :] * W[None, :, :]).reshape(T * A, rank)
    X = np.empty((P, T * A), np.float32)
    step = 256  # small blocks: the temporaries stay a few MB, so peak RSS measures the solvers
    for s in range(0, P, step):
        block = U[s:s + step] @ KR.T
        block += noise * rng.random(block.shape, dtype=np.float32)
        X[s:s + step] = block
    return X.reshape(P, T, A)


def neuron_mask(n_pairs, n_animals, missing, seed):
    """Mask of pairs observed per animal when a fraction ``missing`` of neurons is absent."""
    n = int(round((1 + np.sqrt(1 + 8 * n_pairs)) / 2))
    if n * (n - 1) // 2 != n_pairs:
        raise SystemExit(f"--missing needs P = N(N-1)/2 pairs; {n_pairs} is not")
    rng = np.random.default_rng(seed)
    present = rng.random((n, n_animals)) >= missing
    i, j = np.triu_indices(n, 1)
    return present[i] & present[j]


def gemm_rate(backend, device, size=4096, repeats=5):
    """Measured float32 GEMM rate (GFLOP/s) of a size^3 square product: best of ``repeats``."""
    if backend == "pytorch":
        import torch

        a = torch.rand(size, size, device=device)
        b = torch.rand(size, size, device=device)
        for _ in range(2):
            a @ b
        best = float("inf")
        for _ in range(repeats):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t = time.perf_counter()
            a @ b
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t)
    else:
        rng = np.random.default_rng(0)
        a = rng.random((size, size), dtype=np.float32)
        b = rng.random((size, size), dtype=np.float32)
        a @ b
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t)
    return 2 * size**3 / best / 1e9


def _status_mb(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def reset_peak_rss():
    """Reset the kernel's peak-RSS counter (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def current_rss_mb():
    rss = _status_mb("VmRSS")
    return rss if rss is not None else maxrss_mb()


def maxrss_mb():
    """Peak resident set since the last reset_peak_rss (VmHWM), else since the process started."""
    hwm = _status_mb("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_ours(X, rank, init, iters, backend, device, mask=None, missing="exact"):
    """Fit ``iters`` iterations; returns per-iteration times and the CP tensors after 50 and iters."""
    stamps = []
    states = []
    kw = dict(mask=mask, init=init, max_iter=iters, tol=0, backend=backend, device=device, profile=True,
              missing=missing)
    # The checkpoint at 50 gives the factors after 50 iterations from the very same run.
    t0 = time.perf_counter()
    cp, info = ntf.ncp_hals(
        X, rank, on_iteration=lambda i, loss: stamps.append(time.perf_counter()),
        checkpoint_every=50, on_checkpoint=lambda s: states.append(s) if s["iteration"] == 50 else None,
        **kw,
    )
    total = time.perf_counter() - t0
    # Steady-state iteration times: the first interval would include validation and init.
    per_iter = np.diff(stamps)
    cp50 = None
    if states:
        s = states[0]
        cp50 = CPTensor((None, [s["pairs"], s["time"], s["animals"]]))
    return cp, cp50, info, per_iter, total


def run_tensorly(X, rank, init, iters, chunk=10):
    """tensorly's HALS in calls of ``chunk`` iterations, each starting from the previous result.

    The iterates are the same as one long call (its state is just the factors; weights stay 1),
    and the per-chunk times give a median/min that a shared machine's load spikes cannot hide.
    Each call also recomputes ||X|| once (one pass over X, ~3 % of a 10-iteration chunk).
    """
    from tensorly.decomposition import non_negative_parafac_hals

    cp, cp50 = init, None
    per_iter = []
    done = 0
    while done < iters:
        n = min(chunk, iters - done, 50 - done if done < 50 else chunk)
        t = time.perf_counter()
        cp = non_negative_parafac_hals(X, rank, n_iter_max=n, init=cp, tol=0)
        per_iter.append((time.perf_counter() - t) / n)
        done += n
        if done == 50:
            cp50 = cp
    return cp, cp50, np.asarray(per_iter)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", type=int, nargs=3, default=[17766, 240, 21], metavar=("P", "T", "A"))
    ap.add_argument("--rank", type=int, default=15)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--backend", choices=["numpy", "pytorch"], default="numpy")
    ap.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    ap.add_argument("--skip-tensorly", action="store_true", help="do not run tensorly's HALS")
    ap.add_argument("--missing", type=float, default=0.0,
                    help="also fit with this fraction of neurons missing per animal (P must be N(N-1)/2)")
    ap.add_argument("--em", action="store_true",
                    help="with --missing, also fit with EM imputation (missing='em') for comparison")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-memory-run", action="store_true", help="skip the tracemalloc run")
    args = ap.parse_args(argv)

    P, T, A = args.shape
    R = args.rank
    device = "cpu"
    if args.backend == "pytorch":
        import torch

        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        name = torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu"
        print(f"backend pytorch {torch.__version__} on {device} ({name})")
    else:
        print(f"backend numpy {np.__version__}; threads: OPENBLAS_NUM_THREADS="
              f"{os.environ.get('OPENBLAS_NUM_THREADS', 'default')}, cpus={os.cpu_count()}")
    # The GEMM rate first, its 200 MB of operands freed before X exists (they would set the RSS peak).
    rate = gemm_rate(args.backend, device)
    print(f"machine float32 GEMM rate (4096^3 sgemm, best of 5): {rate:.0f} GFLOP/s")
    peak_was_reset = reset_peak_rss()
    rss_start = current_rss_mb()
    X = planted_tensor((P, T, A), R, args.seed)
    x_mb = X.nbytes / 2**20
    print(f"tensor {P} x {T} x {A} float32 = {x_mb:.0f} MiB, rank {R}, {args.iters} iterations")

    rng = np.random.default_rng(args.seed + 1)
    init = CPTensor((np.ones(R, np.float32), [rng.random((n, R)).astype(np.float32) for n in (P, T, A)]))
    flops_iter = 4.0 * P * T * A * R

    if args.backend == "pytorch" and device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        # warm-up (CUDA context, cuBLAS handles) so the timed run measures steady state
        ntf.ncp_hals(X, R, init=init, max_iter=2, tol=0, backend="pytorch", device=device)
        torch.cuda.synchronize()
    cp, cp50, info, per_iter, total = run_ours(X, R, init, args.iters, args.backend, device)
    rss_ours = maxrss_mb()
    med = float(np.median(per_iter))
    gemm_s = (info.phase_seconds.get("gemm_pairs", 0) + info.phase_seconds.get("gemm_z", 0)) / info.n_iter
    e50 = ntf.relative_error(X, cp50) if cp50 is not None else float("nan")
    e_end = ntf.relative_error(X, cp)
    print(f"ours     : {med * 1e3:8.1f} ms/iter (median; mean {per_iter.mean() * 1e3:.1f}, "
          f"min {per_iter.min() * 1e3:.1f}), total {total:.1f} s incl. validation+init")
    print(f"ours     : rel. error after 50 = {e50:.8f}, after {args.iters} = {e_end:.8f}")
    # With several threads sharing the pass (numpy), the product times are thread-seconds: the
    # products' rate is then per thread, and the whole iteration's rate is the one to compare.
    threads = ntf._pass_threads() if args.backend == "numpy" else 1
    print(f"ours     : {flops_iter / med / 1e9:.1f} GFLOP/s over the whole iteration "
          f"({100 * flops_iter / med / 1e9 / rate:.0f} % of the sgemm rate); "
          f"{flops_iter / gemm_s / 1e9:.1f} GFLOP/s per thread in the two products over X "
          f"({threads} thread{'s' if threads > 1 else ''} share the pass)")
    phases = {k: round(v / info.n_iter * 1e3, 1) for k, v in info.phase_seconds.items() if k != "init"}
    print(f"ours     : ms/iter per phase {phases}")
    if args.backend == "pytorch" and device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**20
        print(f"ours     : CUDA peak allocated {peak:.0f} MiB = {peak / x_mb:.2f} x tensor")
    else:
        print(f"ours     : process peak RSS {rss_ours:.0f} MiB "
              f"({'since X was built' if peak_was_reset else 'since start'}; RSS before X {rss_start:.0f} MiB); "
              f"(peak RSS - RSS before X) / tensor = {(rss_ours - rss_start) / x_mb:.2f}")
        if not args.no_memory_run:
            tracemalloc.start()
            ntf.ncp_hals(X, R, init=init, max_iter=3, tol=0)
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            print(f"ours     : tracemalloc peak above X during a fit {peak / 2**20:.0f} MiB -> "
                  f"(X + peak) / X = {(x_mb + peak / 2**20) / x_mb:.2f}")

    if not args.skip_tensorly:
        tl_cp, tl_cp50, tl_per = run_tensorly(X, R, init, args.iters)
        tl_med = float(np.median(tl_per))
        print(f"tensorly : {tl_med * 1e3:8.1f} ms/iter (median of {len(tl_per)} calls of 10 iterations; "
              f"mean {tl_per.mean() * 1e3:.1f}, min {tl_per.min() * 1e3:.1f})")
        e50_tl = ntf.relative_error(X, tl_cp50) if tl_cp50 is not None else float("nan")
        print(f"tensorly : rel. error after 50 = {e50_tl:.8f}, "
              f"after {args.iters} = {ntf.relative_error(X, tl_cp):.8f}")
        print(f"tensorly : process peak RSS {maxrss_mb():.0f} MiB")
        print(f"speed-up : {tl_med / med:.1f}x per iteration on medians, {tl_per.min() / per_iter.min():.1f}x on minima, "
              f"{tl_per.mean() / per_iter.mean():.1f}x on means")

    if args.missing > 0:
        mask = neuron_mask(P, A, args.missing, args.seed)
        for start in range(0, P, 2048):  # the pipeline stores zeros at unobserved entries
            X[start:start + 2048] *= mask[start:start + 2048, None, :]
        print(f"masked   : {100 * (1 - mask.mean()):.0f} % of pair blocks unobserved "
              f"({args.missing:.0%} neurons missing per animal)")
        runs = {}
        for missing in (["exact", "em"] if args.em else ["exact"]):
            cpm, _, infom, per_m, _ = run_ours(X, R, init, args.iters, args.backend, device, mask=mask,
                                               missing=missing)
            runs[missing] = infom.loss_history
            phases = {k: round(v / infom.n_iter * 1e3, 1) for k, v in infom.phase_seconds.items() if k != "init"}
            print(f"masked {missing:5s}: {np.median(per_m) * 1e3:.1f} ms/iter, rel. error (observed) after "
                  f"{args.iters} = {ntf.relative_error(X, cpm, mask):.8f}; ms/iter per phase {phases}")
        if args.em:
            final = min(h[-1] for h in runs.values())
            for name, h in runs.items():
                for level in (1e-2, 1e-3, 1e-4):
                    hit = np.flatnonzero(h <= final * (1 + level))
                    print(f"masked {name:5s}: iterations to within {level:.0e} of the best final error: "
                          f"{hit[0] + 1 if len(hit) else '>' + str(len(h))}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Weighted-LFR benchmark of the community methods (dynconn.methods.wsbm.partition).

Partitions every ``s<setting>_r<rep>.npz`` graph (edges, weights, labels; see the data
folder's README) and prints, per setting and overall (mean of the per-setting means), the
adjusted mutual information, adjusted Rand index and NMI against the planted communities, the
number of communities found vs planted, and the CPU time of ``partition`` (process time; on a
shared machine it is noisy).

    python benchmarks/lfr.py [--data ../shared/data/lfr] [--method wsbm] [--seed 0]

``--dense-study`` instead runs the measurement that chose how dense graphs (a CP component's
pair pattern, every pair weighted) enter the model: synthetic dense planted-partition matrices
(see ``planted_dense``), partitioned after each way of building the graph
(``graph_from_dense(..., sparsify=...)``), scored by AMI against the planted groups.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dynconn.methods.clustering_metrics import (  # noqa: E402
    adjusted_mutual_info,
    adjusted_rand_index,
    normalized_mutual_info,
)
from dynconn.methods.wsbm import METHODS, partition  # noqa: E402

SETTINGS = {
    0: "beta=0.5", 1: "beta=1", 2: "beta=2", 3: "mu_t=0.25", 4: "mu_t=0.5",
    5: "mu_t=0.75", 6: "k=10", 7: "mu_w=0.25", 8: "mu_w=0.75",
}


def _parse_value(v: str):
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(v.lower(), v)


def planted_dense(rng, n=120, n_groups=4, size_range=(8, 25), n_overlap=4, snr=2.0,
                  noise=0.5):
    """A dense symmetric matrix like a CP component's pair pattern, and its planted groups.

    ``n_groups`` disjoint groups of random sizes; the other neurons are background.
    ``n_overlap`` group members also join a second group. Pair weight:
    W_ij = a_i a_j (f + sum_g A_g u_gi u_gj) * LogNormal(0, noise), with a floor f = 1, group
    amplitudes A_g ~ snr * U(0.5, 1), member loadings u ~ U(0.5, 1), neuron activity scales
    a ~ LogNormal(0, 0.3). Truth: the group of each single-group member, one class for the
    background, -2 for the overlapping neurons (left out of the scores).
    """
    labels = np.full(n, n_groups, dtype=np.int64)  # background class
    perm = rng.permutation(n)
    U = np.zeros((n_groups, n))
    pos = 0
    members = []
    for gi in range(n_groups):
        size = int(rng.integers(size_range[0], size_range[1] + 1))
        idx = perm[pos:pos + size]
        pos += size
        labels[idx] = gi
        U[gi, idx] = rng.uniform(0.5, 1.0, size)
        members.append(idx)
    for _ in range(n_overlap):
        g1, g2 = rng.choice(n_groups, 2, replace=False)
        i = int(rng.choice(members[g1]))
        if U[g2, i] == 0:
            U[g2, i] = rng.uniform(0.5, 1.0)
            labels[i] = -2
    amp = snr * rng.uniform(0.5, 1.0, n_groups)
    M = 1.0 + (U.T * amp) @ U
    a = rng.lognormal(0.0, 0.3, n)
    Z = rng.normal(0.0, noise, (n, n))
    Z = np.triu(Z, 1)
    Z = Z + Z.T
    W = np.outer(a, a) * M * np.exp(Z)
    np.fill_diagonal(W, 0.0)
    return W, labels


def dense_study(seed: int, reps: int = 5) -> int:
    from dynconn.methods.wsbm import graph_from_dense

    n = 120
    options = [("all pairs (complete graph)", dict(sparsify="none")),
               ("all pairs, node correction on", dict(sparsify="none", node_correction=True)),
               ("kNN, k=5", dict(sparsify="knn", k=5)),
               (f"kNN, k=round(sqrt(n))={int(round(np.sqrt(n)))}", dict(sparsify="knn")),
               ("kNN, k=20", dict(sparsify="knn", k=20)),
               ("top 5% of pairs", dict(sparsify="top", fraction=0.05)),
               ("top 10% of pairs", dict(sparsify="top", fraction=0.10)),
               ("top 20% of pairs", dict(sparsify="top", fraction=0.20))]
    snrs = (1.0, 2.0, 4.0, 8.0)
    res = defaultdict(list)
    cpu = defaultdict(float)
    for snr in snrs:
        for rep in range(reps):
            rng = np.random.default_rng([seed, int(snr * 10), rep])
            W, truth = planted_dense(rng, n=n, snr=snr)
            keep = truth >= 0
            for name, kw in options:
                kw = dict(kw)
                correction = {"node_correction": kw.pop("node_correction")} if "node_correction" in kw else {}
                g = graph_from_dense(W, **kw)
                for method in ("wsbm", "leiden-modularity"):
                    if correction and method != "wsbm":
                        continue
                    t0 = time.process_time()
                    r = partition(g, method=method, random_state=seed, **(correction if method == "wsbm" else {}))
                    cpu[(name, method)] += time.process_time() - t0
                    mem = r.membership[keep]
                    res[(name, method, snr)].append(adjusted_mutual_info(truth[keep], mem))
    print(f"dense planted-partition study: n={n}, 4 groups of 8-25 neurons + background, "
          f"4 overlapping neurons (not scored), {reps} matrices per SNR, seed={seed}")
    hdr = f"{'graph':<30}{'method':<19}" + "".join(f"{'AMI snr=' + str(s):>13}" for s in snrs) \
        + f"{'mean':>8}{'CPU s':>8}"
    print(hdr)
    print("-" * len(hdr))
    for name, _ in options:
        for method in ("wsbm", "leiden-modularity"):
            if not res[(name, method, snrs[0])]:
                continue
            vals = [np.mean(res[(name, method, s)]) for s in snrs]
            print(f"{name:<30}{method:<19}" + "".join(f"{v:>13.3f}" for v in vals)
                  + f"{np.mean(vals):>8.3f}{cpu[(name, method)]:>8.1f}")
    return 0


def _nanmean(x) -> float:
    x = np.asarray(x, dtype=float)
    return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(ROOT / ".." / "shared" / "data" / "lfr"),
                    help="folder with s<setting>_r<rep>.npz (default: ../shared/data/lfr)")
    ap.add_argument("--method", default="wsbm", choices=METHODS)
    ap.add_argument("--seed", type=int, default=0, help="random_state of every call")
    ap.add_argument("--unweighted", action="store_true", help="ignore the edge weights")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra keyword for partition(), e.g. --set n_runs=5")
    ap.add_argument("--settings", default=None, help="comma-separated subset, e.g. 0,3,8")
    ap.add_argument("--dense-study", action="store_true",
                    help="run the dense-graph (sparsification) measurement instead")
    ap.add_argument("--reps", type=int, default=5, help="matrices per SNR in --dense-study")
    args = ap.parse_args(argv)
    if args.dense_study:
        return dense_study(args.seed, args.reps)

    data = Path(args.data)
    files = sorted(data.glob("s*_r*.npz")) if data.is_dir() else []
    if not files:
        print(f"no LFR graphs found in {data} (expected s<setting>_r<rep>.npz); nothing to do")
        return 0
    kwargs = {}
    for kv in args.set:
        if "=" not in kv:
            ap.error(f"--set expects KEY=VALUE, got {kv!r}")
        key, val = kv.split("=", 1)
        kwargs[key] = _parse_value(val)
    only = None if args.settings is None else {int(s) for s in args.settings.split(",")}

    import igraph

    rows = defaultdict(list)
    total_cpu = 0.0
    for f in files:
        m = re.match(r"s(\d+)_r(\d+)\.npz$", f.name)
        if not m:
            continue
        s = int(m.group(1))
        if only is not None and s not in only:
            continue
        d = np.load(f)
        labels = d["labels"]
        g = igraph.Graph(n=len(labels), edges=d["edges"].tolist())
        g.es["weight"] = d["weights"].tolist()
        t0 = time.process_time()
        res = partition(g, weights=None if args.unweighted else "weight", method=args.method,
                        random_state=args.seed, **kwargs)
        cpu = time.process_time() - t0
        total_cpu += cpu
        mem = res.membership
        rows[s].append((adjusted_mutual_info(labels, mem), adjusted_rand_index(labels, mem),
                        normalized_mutual_info(labels, mem), res.n_communities,
                        len(np.unique(labels)), res.stability, cpu))

    hdr = f"{'setting':<14}{'n':>3}{'AMI':>8}{'ARI':>8}{'NMI':>8}{'K found':>9}{'K true':>8}" \
          f"{'stab.':>7}{'CPU s':>8}"
    print(f"method={args.method} seed={args.seed} {' '.join(args.set)}".rstrip())
    print(hdr)
    print("-" * len(hdr))
    means = []
    for s in sorted(rows):
        a = np.array(rows[s], dtype=float)
        mu = a.mean(0)
        if not np.isnan(a[:, 5]).all():
            mu[5] = np.nanmean(a[:, 5])
        means.append(mu)
        print(f"{s} {SETTINGS.get(s, ''):<12}{len(a):>3}{mu[0]:>8.3f}{mu[1]:>8.3f}{mu[2]:>8.3f}"
              f"{mu[3]:>9.2f}{mu[4]:>8.2f}{mu[5]:>7.2f}{a[:, 6].sum():>8.1f}")
    mm = np.array(means)
    print("-" * len(hdr))
    print(f"{'overall':<14}{sum(len(v) for v in rows.values()):>3}{mm[:, 0].mean():>8.3f}"
          f"{mm[:, 1].mean():>8.3f}{mm[:, 2].mean():>8.3f}{mm[:, 3].mean():>9.2f}"
          f"{mm[:, 4].mean():>8.2f}{_nanmean(mm[:, 5]):>7.2f}"
          f"{total_cpu:>8.1f}")
    print(f"min per-setting AMI: {mm[:, 0].min():.3f}; total CPU of partition(): "
          f"{total_cpu:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

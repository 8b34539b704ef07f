#!/usr/bin/env python
"""Weighted-LFR benchmark of the community methods (dynconn.wsbm.partition).

Partitions every ``s<setting>_r<rep>.npz`` graph (edges, weights, labels; see the data
folder's README) and prints, per setting and overall (mean of the per-setting means), the
adjusted mutual information, adjusted Rand index and NMI against the planted communities, the
number of communities found vs planted, and the CPU time of ``partition`` (process time; on a
shared machine it is noisy).

    python benchmarks/lfr.py [--data ../shared/data/lfr] [--method wsbm] [--seed 0]
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

from dynconn.clustering_metrics import (  # noqa: E402
    adjusted_mutual_info,
    adjusted_rand_index,
    normalized_mutual_info,
)
from dynconn.wsbm import METHODS, partition  # noqa: E402

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
    args = ap.parse_args(argv)

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

#!/usr/bin/env python
"""One dense rank-1-like component graph of N neurons through partition_components (time; run under
/usr/bin/time -v for peak RSS). python benchmarks/communities_scale.py N [max_edges_per_node]"""
import numpy as np, time, tracemalloc, sys
from dynconn.stages import communities as C
rng = np.random.default_rng(0)
n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
iu = np.triu_indices(n, 1)
pairs = np.column_stack(iu)
g = rng.integers(0, 5, n); u = rng.random(n) + (g == 0) * 2
val = u[iu[0]] * u[iu[1]] * rng.lognormal(0, 0.3, len(pairs))
t = time.time()
try:
    res = C.partition_components(val[:, None], pairs, n, n_runs=1, max_edges_per_node=int(sys.argv[2]) if len(sys.argv) > 2 else 0)
    print("ok", time.time() - t, res.n_communities)
except MemoryError as e:
    import traceback; traceback.print_exc()

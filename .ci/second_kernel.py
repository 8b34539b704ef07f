"""Print an OpenBLAS kernel (OPENBLAS_CORETYPE) this processor can run that is not the one numpy
picks by itself, so CI can rerun the numerical tests with other rounding (issue 14)."""

import sys
from pathlib import Path

from threadpoolctl import threadpool_info

import numpy  # noqa: F401  (loads numpy's OpenBLAS so threadpoolctl sees it)

# kernel -> the CPU flag it needs, newest first
KERNELS = [("Haswell", "avx2"), ("Sandybridge", "avx"), ("Nehalem", "sse4_2"), ("Prescott", "sse3")]

current = {i.get("architecture") for i in threadpool_info() if i.get("internal_api") == "openblas"}
try:
    flags = set(next(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("flags")).split(":", 1)[1].split())
except (OSError, StopIteration):
    flags = {"sse3"}
for kernel, flag in KERNELS:
    if flag in flags and kernel not in current:
        print(kernel)
        sys.exit(0)
sys.exit("no second OpenBLAS kernel found for this processor")

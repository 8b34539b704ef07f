"""Memory and disk: estimate what a stage needs before it starts, refuse what cannot fit.

Available memory is the smallest of

- ``MemAvailable`` from ``/proc/meminfo`` (what the kernel can give without swapping),
- the cgroup limit minus the cgroup's current use (v2 ``memory.max``/``memory.current``,
  or v1 ``memory.limit_in_bytes``/``memory.usage_in_bytes``): batch schedulers and
  containers set these,
- ``DYNCONN_MAX_MEMORY`` when set (e.g. ``8G``, ``500M``): a cap a user can give on a
  shared server.

Estimates (bytes; documented in ``docs/robustness.md``) count every upstream dataset a stage
reads in full (stages read their inputs into memory; not those it never reads, the stage
protocol's ``UNREAD_INPUTS``) plus each stage's own arrays:

``ingest``       10 × the size of text inputs (CSV parsing keeps every cell as a Python
                 string), 3 × binary inputs, plus the aligned float32 output
``affinity``     a few blocks of the tensor (it is written by blocks of pairs, never whole),
                 every animal's signals (N × F floats, twice) and the pair indices
``factorize``    twice the tensor (a working copy) -- or, over ``compute.memory_budget``
                 (streamed from the file), a few blocks of 1024 pairs -- the pair factors and
                 per-pair Gram matrices at the largest rank tried
``communities``  two N × N matrices and the edges of one component's graph (O(pairs), never
                 N³: the block-model temporaries are chunked, wsbm.CHUNK_BYTES); the tensor is
                 not read
``report``       a few N × N matrices per figure, each pair's projected affinity (pairs × animals ×
                 rank), the tensor unless it is over ``compute.memory_budget`` (then read by
                 blocks), and with surrogates one surrogate's tensor and its working copy

They are deliberately simple upper-side estimates; the point is to refuse a request
that is off by orders of magnitude (a ``bin_seconds`` of 1 ms, a rank of 10⁶) with the
option that reduces it, instead of swapping the server to a halt or dying half-way.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, ResourceError  # noqa: F401  (parse_bytes raises ConfigError)



def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1024 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PB"  # pragma: no cover


def parse_bytes(text, what: str = "DYNCONN_MAX_MEMORY", allow_zero: bool = False) -> int:
    """``"8G"`` → 8 GiB; ``"500M"``, ``"512MiB"``, ``"2GB"``, ``1024`` (bytes) likewise
    (:func:`dynconn.config.parse_size`; ``what`` names the setting in the error)."""
    from ..config import parse_size

    return parse_size(text, what, allow_zero)


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    if not text or text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_available() -> int | None:
    # cgroup v2: the process's own group
    group = ""
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                group = line[3:].strip()
    except OSError:
        pass
    for base in (f"/sys/fs/cgroup{group}", "/sys/fs/cgroup"):
        limit = _read_int(f"{base}/memory.max")
        if limit is not None:
            used = _read_int(f"{base}/memory.current") or 0
            return max(0, limit - used)
    limit = _read_int("/sys/fs/cgroup/memory/memory.limit_in_bytes")
    if limit is not None and limit < (1 << 60):  # v1 reports "no limit" as a huge number
        used = _read_int("/sys/fs/cgroup/memory/memory.usage_in_bytes") or 0
        return max(0, limit - used)
    return None


@dataclass
class Available:
    bytes: int | None
    source: str


def available_memory() -> Available:
    """The memory this process can still use, and where the figure comes from."""
    candidates = []
    cap = os.environ.get("DYNCONN_MAX_MEMORY")
    if cap:
        candidates.append((parse_bytes(cap), "DYNCONN_MAX_MEMORY"))
    mem = _meminfo_available()
    if mem is not None:
        candidates.append((mem, "MemAvailable in /proc/meminfo"))
    cg = _cgroup_available()
    if cg is not None:
        candidates.append((cg, "the cgroup memory limit"))
    if not candidates:
        return Available(None, "unknown")
    value, source = min(candidates)
    return Available(value, source)


def memory_budget(config) -> int:
    """Bytes the affinity tensor may take in memory: ``compute.memory_budget``, or by default half
    of :func:`available_memory` (2 GiB when that is unknown)."""
    try:
        value = config["compute"].get("memory_budget")
    except (KeyError, TypeError):  # a stage's own section only (the standalone commands)
        value = None
    if value is not None:
        return int(value)
    avail = available_memory().bytes
    return avail // 2 if avail is not None else 2 << 30


def check_memory(stage: str, need: int, remedy: str) -> None:
    """Refuse (ResourceError) when ``need`` bytes exceed the memory available."""
    avail = available_memory()
    if avail.bytes is None or need <= avail.bytes:
        return
    raise ResourceError(
        f"{stage}: needs about {format_bytes(need)} of memory but only {format_bytes(avail.bytes)} "
        f"is available ({avail.source}); {remedy}"
    )


def check_disk(folder: Path, need: int, what: str) -> None:
    """Refuse (ResourceError) when the file system of ``folder`` has less than ``need``
    bytes free (plus 1 % and 64 KB of headroom for HDF5 metadata)."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return  # cannot tell; the write itself will report a full disk
    if need * 1.01 + (64 << 10) > free:
        raise ResourceError(
            f"{folder}: not enough disk space to write {what} (needs about {format_bytes(need)}, "
            f"{format_bytes(free)} free); free some space or use another --workdir"
        )


# ----------------------------------------------------------------------------- estimates
F32, F64 = 4, 8


def _text_input(path: Path) -> bool:
    return path.suffix.lower() in (".csv", ".tsv", ".txt")


def estimate(stage: str, config, upstream_shapes: dict[str, dict[str, tuple[tuple, int]]],
             input_files: list[Path] | None = None) -> tuple[int, str]:
    """Bytes a stage needs and the option that lowers it.

    ``upstream_shapes[stage][dataset] = (shape, itemsize)`` of each upstream artifact
    (read from HDF5 metadata, no data); ``input_files`` for ingest.
    """
    loaded = sum(_nbytes(shape, size) for shapes in upstream_shapes.values()
                 for shape, size in shapes.values())
    if stage == "ingest":
        need = 0
        for path in input_files or []:
            try:
                size = path.stat().st_size
            except OSError:
                continue
            need += size * (10 if _text_input(path) else 3)
        return need, ("the input files are too large for this machine: split the recordings, "
                      "or set DYNCONN_MAX_MEMORY if the estimate is wrong")
    remedy_tensor = ("raise affinity.bin_seconds (fewer time bins), or analyse fewer animals or "
                     "neurons")
    if stage == "affinity":
        traces = upstream_shapes.get("ingest", {}).get("traces")
        if traces is None:
            return loaded, remedy_tensor
        (n_animals, n_neurons, n_frames), _ = traces
        rate = _sampling_rate(config)
        fpb = max(1, int(round(float(config["affinity"]["bin_seconds"]) * rate)))
        n_bins = n_frames // fpb
        pairs = n_neurons * (n_neurons - 1) // 2
        # the tensor is computed and written by blocks of pairs (stages.affinity.BLOCK_BYTES): a block,
        # its per-bin products, the signals of every animal (N × F floats, twice) and the pair indices
        from ..stages.affinity import BLOCK_BYTES

        block = min(pairs * n_bins * n_animals * F32, BLOCK_BYTES)
        work = (n_animals * 2 + 4) * n_neurons * n_frames * F64 + pairs * (8 + n_animals)
        return loaded + 3 * block + work, remedy_tensor + " (memory grows with neurons × frames × animals)"
    if stage == "factorize":
        aff = upstream_shapes.get("affinity", {}).get("affinity")
        if aff is None:
            return loaded, remedy_tensor
        (pairs, n_bins, n_animals), _ = aff
        p = config["factorize"]
        rank = p["rank"] if p["rank"] != "auto" else p["ranks"][1]
        rank = int(rank)
        factors = (pairs + n_bins + n_animals) * rank * F64 * 4
        grams = pairs * rank * rank * F32 * 2 + rank * n_bins * n_animals * F64 * 2
        # the pass over X keeps each block's part of U' X (one per 1024 pairs = ntf.PAIRS_BLOCK)
        z_parts = (pairs // 1024 + 1) * (rank + 8) * n_bins * n_animals * F32
        tensor = _nbytes((pairs, n_bins, n_animals), F32)
        streamed = tensor > memory_budget(config)
        if streamed:
            # streamed from affinity.h5 (compute.memory_budget): a few 1024-pair blocks, not the tensor
            loaded -= tensor
            tensor = min(tensor, 4 * 1024 * n_bins * n_animals * F32)
        need = loaded + tensor + factors + grams + z_parts
        if not streamed and _unfolds(config, n_animals):
            need += tensor  # the unfolded (P, A·T) copy (methods.merging.unfold_animals; streamed: by blocks)
        if not streamed:  # held in memory: a lower budget streams it from the file instead
            return need, (f"lower compute.memory_budget below the tensor's {format_bytes(tensor)} (it is then "
                          "streamed from affinity.h5), lower factorize.rank / factorize.ranks, or " + remedy_tensor)
        return need, ("lower factorize.rank / factorize.ranks, or " + remedy_tensor)
    if stage == "communities":
        # per component: the (N, N) pair matrix and the graph's edges (≤ all pairs, 7 float64
        # per edge in the model's CSR and statistics), plus the bounded move/merge temporaries
        # (dynconn.methods.wsbm.CHUNK_BYTES); components run one after another
        neurons = upstream_shapes.get("affinity", {}).get("neurons")
        n = neurons[0][0] if neurons else 0
        pairs = n * (n - 1) // 2
        need = loaded + 2 * n * n * F64 + pairs * 16 * F64 + (256 << 20)
        return need, ("partition fewer neurons per component: raise communities.min_strength "
                      "(weak neurons leave the component's graph), or choose "
                      "communities.method: leiden-modularity (no block-model temporaries)")
    if stage == "report":
        neurons = upstream_shapes.get("affinity", {}).get("neurons")
        n = neurons[0][0] if neurons else 0
        need = loaded + 4 * n * n * F64
        aff = upstream_shapes.get("affinity", {}).get("affinity")
        weights = upstream_shapes.get("factorize", {}).get("weights")
        if aff is not None:
            (pairs, _, n_animals), _ = aff
            rank = int(weights[0][0]) if weights else 1
            need += pairs * n_animals * rank * F64  # each pair's projected affinity per animal and component
            tensor = _nbytes(*aff)
            if tensor > memory_budget(config):
                need -= tensor  # read by blocks of pairs (and no surrogates: stages.surrogates.local_workers)
            elif config["report"]["surrogates"] > 0:
                # a surrogate's own tensor and the solver's copy, one at a time at least (and the
                # unfolded copy with per-animal time courses)
                need += (3 if _unfolds(config, n_animals) else 2) * tensor
        return need, remedy_tensor + ", or set report.surrogates: 0"
    return loaded, remedy_tensor


def _unfolds(config, n_animals: int) -> bool:
    """Does the factorization hold an unfolded copy of an aligned tensor (per-animal time courses,
    :func:`dynconn.methods.merging.fits_per_animal`)? A (P, T, 1) tensor unfolds to itself."""
    return config["factorize"].get("time_courses") == "per_animal" and n_animals > 1


def nbytes(shape, itemsize: int) -> int:
    """Bytes of an array of ``shape`` and ``itemsize``."""
    return _nbytes(shape, itemsize)


def _nbytes(shape, itemsize: int) -> int:
    n = itemsize
    for d in shape:
        n *= int(d)
    return n


def _sampling_rate(config) -> float:
    return float(config["data"]["sampling_rate"])

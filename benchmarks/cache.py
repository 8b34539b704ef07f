"""Benchmark of the result cache: switching a parameter back restores instead of recomputing.

For a simulated preset, through the command line as a user would:

1. ``dynconn run`` (every stage computed; nothing to keep yet);
2. ``dynconn run --set affinity.bin_seconds=10`` (affinity and after recomputed; the first
   results are kept in ``<workdir>/cache``);
3. ``dynconn run`` again (the first results restored from the cache);
4. step 3 with hard links unavailable (``os.link`` fails with EPERM, as on file systems
   without them): HDF5 artifacts are moved, report files copied.

Reported: wall-clock seconds of each command (Python start-up included), whether any stage
ran in steps 3 and 4, whether the restored files are byte-identical to step 1's, the size
of the cache after step 2, and whether the kept affinity.h5 is the very file step 1 wrote
(same inode: kept by a hard link, no copy).

Usage::

    python benchmarks/cache.py [--out DIR] [--preset standard] [--write-docs]

``--write-docs`` replaces the "Result cache" section of docs/benchmarks.md with the results.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
NO_LINKS = ("import errno, os, sys\n"
            "def no_link(*a, **k): raise OSError(errno.EPERM, 'Operation not permitted')\n"
            "os.link = no_link\n"
            "from dynconn.cli import main\n"
            "sys.argv[0] = 'dynconn'\n"
            "main()\n")


def dynconn(*args: str, links: bool = True) -> tuple[float, str]:
    """Run a dynconn command; returns (wall seconds, stderr)."""
    cmd = [sys.executable, "-m", "dynconn", *args] if links else [sys.executable, "-c", NO_LINKS, *args]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"dynconn {' '.join(args)} failed:\n{done.stderr}")
    return wall, done.stderr


def outputs(workdir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(workdir)): p.read_bytes() for p in sorted(workdir.rglob("*"))
            if p.is_file() and p.relative_to(workdir).parts[0] != "cache"}


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def measure(preset: str, out: Path) -> dict:
    data = out / preset
    shutil.rmtree(data, ignore_errors=True)
    dynconn("simulate", str(data), "--preset", preset)
    config, workdir = str(data / "config.yaml"), data / "run"
    row = {"preset": preset}
    row["first"], _ = dynconn("run", config, "-q")
    first = outputs(workdir)
    inode = (workdir / "affinity.h5").stat().st_ino
    row["switch"], _ = dynconn("run", config, "--set", "affinity.bin_seconds=10")
    kept = next((workdir / "cache" / "affinity").glob("*.h5"))
    row["linked"] = kept.stat().st_ino == inode  # the very file step 1 wrote: no copy
    row["cache_bytes"] = size(workdir / "cache")
    row["back"], err = dynconn("run", config)
    row["back_ran"] = "→" in err
    row["back_identical"] = outputs(workdir) == first
    dynconn("run", config, "--set", "affinity.bin_seconds=10", "-q")
    row["back_nolinks"], err = dynconn("run", config, links=False)
    row["nolinks_ran"] = "→" in err
    row["nolinks_identical"] = outputs(workdir) == first
    return row


def table(rows: list[dict]) -> str:
    lines = ["| preset | first run | `--set affinity.bin_seconds=10` | back to 5 s (restored) | "
             "back, no hard links | any stage ran when back | identical to the first run | cache size | "
             "kept as a hard link |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['preset']} | {r['first']:.1f} s | {r['switch']:.1f} s | {r['back']:.1f} s | "
            f"{r['back_nolinks']:.1f} s | {'yes' if r['back_ran'] or r['nolinks_ran'] else 'no'} | "
            f"{'yes' if r['back_identical'] and r['nolinks_identical'] else 'NO'} | "
            f"{r['cache_bytes'] / 2**20:.1f} MB | {'yes' if r['linked'] else 'no'} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/dynconn-bench-cache"))
    ap.add_argument("--preset", nargs="+", default=["standard"])
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()
    rows = [measure(p, args.out) for p in args.preset]
    text = table(rows)
    print(text)
    if args.write_docs:
        load = os.getloadavg()[0]
        head = (f"Measured by `python benchmarks/cache.py --write-docs` on {platform.node()} "
                f"({os.cpu_count()} CPUs, load average {load:.1f} at the end, Python "
                f"{platform.python_version()}, {time.strftime('%Y-%m-%d')}). Wall-clock seconds of whole "
                "commands (start-up included); under load the absolute times are inflated, the ratio "
                "between computing and restoring is the point. *Back to 5 s*: `dynconn run` without "
                "the `--set`, every stage restored from the cache; *no hard links*: the same with "
                "`os.link` failing (EPERM), so artifacts are moved and report files copied.")
        section = f"## Result cache\n\n{head}\n\n{text}\n\n<!-- end of generated table -->\n"
        doc = DOCS.read_text()
        if "## Result cache" in doc:
            start = doc.index("## Result cache")
            end = doc.index("<!-- end of generated table -->", start) + len("<!-- end of generated table -->\n")
            doc = doc[:start] + section + doc[end:]
        else:
            doc = doc.rstrip("\n") + "\n\n" + section
        DOCS.write_text(doc)


if __name__ == "__main__":
    main()

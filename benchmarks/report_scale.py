"""Benchmark of the report stage: time and size on the demo and at scale.

Two cases, each run once end to end through the command line (as a user would):

- ``demo``: the simulator's standard preset, seed 0 (what ``make demo`` runs): the whole
  run's time (simulate + run) against ``dynconn report --force`` alone.
- ``large``: the ``large`` preset, 300 neurons and rank 20: report size and time.
- ``neurons``: the report alone at scale (issue 15 part 5): ``--neurons N`` (default 5,000)
  neurons, 3 animals, 400 frames, two planted motifs of N/6 neurons each, the report's inputs
  built directly (the synthetic artifacts of ``tests/test_report.py``; no pipeline run), then
  ``report.build`` at 300 dpi in one process and the files written: wall time of each step,
  peak memory, page and figure sizes. ``--keep DIR`` keeps the written report.

``dynconn report --force`` is timed twice per case: *cold* (``figures/`` deleted first, so
every figure is drawn) and *warm* (the figures of the previous report are reused where their
inputs did not change; here all of them). Times are wall-clock seconds and CPU seconds
(user + system, child processes included) of the whole command, Python start-up and imports
included.

Usage::

    python benchmarks/report_scale.py [--out DIR] [--cases demo large] [--write-docs]
    python benchmarks/report_scale.py --cases neurons [--neurons 5000] [--keep DIR]

``--write-docs`` replaces the "Report" section of docs/benchmarks.md with the results (the
``neurons`` case prints its own table, for the "Report at scale" section).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"


def timed(*args: str, cwd: Path | None = None) -> tuple[float, float]:
    """Run ``python -m dynconn ARGS``; returns (wall seconds, CPU seconds of the child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "dynconn", *args], cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"dynconn {' '.join(args)} failed:\n{done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def case(name: str, preset: str, out: Path) -> dict:
    data = out / name
    shutil.rmtree(data, ignore_errors=True)
    sim = timed("simulate", str(data), "--preset", preset, "--seed", "0")
    config = data / "config.yaml"
    run = timed("run", str(config), "--quiet")
    workdir = data / "run"
    summary = json.loads((workdir / "exports" / "summary.json").read_text())
    stage_report = summary["provenance"]["seconds"]
    shutil.rmtree(workdir / "figures")
    cold = timed("report", str(config), "--force", "--quiet")
    cold_timings = json.loads((workdir / "exports" / "summary.json").read_text())["provenance"]["timings"]
    warm = timed("report", str(config), "--force", "--quiet")
    warm_timings = json.loads((workdir / "exports" / "summary.json").read_text())["provenance"]["timings"]
    noop = timed("report", str(config), "--quiet")  # up to date: start-up, imports and checks only
    n = len(summary["neuron_order"])
    return {
        "case": name, "preset": preset, "neurons": n, "rank": summary["rank"],
        "whole_wall": sim[0] + run[0], "whole_cpu": sim[1] + run[1],
        "report_stage_in_run": stage_report,
        "cold_wall": cold[0], "cold_cpu": cold[1], "cold_figures": cold_timings.get("figures_drawn"),
        "warm_wall": warm[0], "warm_cpu": warm[1], "warm_figures": warm_timings.get("figures_drawn"),
        "noop_wall": noop[0], "noop_cpu": noop[1],
        "html_bytes": size(workdir / "report.html"), "figures_bytes": size(workdir / "figures"),
        "exports_bytes": size(workdir / "exports"),
        "n_figures": len(list((workdir / "figures").glob("*.png"))),
    }


def at_scale(n: int, keep: Path | None) -> dict:
    """The report of ``n`` neurons from synthetic inputs (no pipeline): times, memory, sizes."""
    sys.path.insert(0, str(ROOT / "tests"))  # the synthetic artifacts of the report's tests
    from test_report import PARAMS, synthetic

    from dynconn.stages import report

    t0 = time.perf_counter()
    arts = synthetic("aligned", n=n, groups=[list(range(0, n // 6)), list(range(n // 6, n // 3))])
    t1 = time.perf_counter()
    data = report.gather(*arts)
    out = report.build(data, {**PARAMS, "dpi": 300, "workers": 1})
    t2 = time.perf_counter()
    folder = keep or Path(os.environ.get("TMPDIR", "/tmp")) / f"dynconn-report-{n}"
    shutil.rmtree(folder, ignore_errors=True)
    report.write(folder, out, provenance={}, seconds=t2 - t1, warnings=[])
    t3 = time.perf_counter()
    page = out["files"]["report.html"]
    figs = {k: len(v) for k, v in out["files"].items() if k.startswith("figures/")}
    return {"case": "neurons", "neurons": n, "rank": data.rank, "animals": len(data.animals),
            "inputs_s": t1 - t0, "build_s": t2 - t1, "write_s": t3 - t2, "timings": out["timings"],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "html_bytes": len(page), "figures_png_bytes": sum(v for k, v in figs.items() if k.endswith(".png")),
            "largest_png": max(((v, k) for k, v in figs.items() if k.endswith(".png")), default=(0, ""))[::-1],
            "graphml_bytes": sum(len(v) for k, v in out["files"].items() if k.endswith(".graphml")),
            "folder": str(folder)}


def markdown_scale(r: dict) -> str:
    mb = lambda b: f"{b / 1e6:.1f} MB"  # noqa: E731
    t = r["timings"]
    return (f"| {r['neurons']} | {r['animals']} | {r['rank']} | {r['build_s']:.1f} s (summaries and exports "
            f"{t['summaries']:.1f}, figures {t['figures']:.1f}, page {t['html']:.2f}) | {r['write_s']:.1f} s | "
            f"{r['peak_rss_mb']:.0f} MB | **{mb(r['html_bytes'])}** | {mb(r['figures_png_bytes'])} "
            f"(largest {r['largest_png'][0]} {mb(r['largest_png'][1])}) | {mb(r['graphml_bytes'])} |")


def markdown(results: list[dict]) -> str:
    mb = lambda b: f"{b / 1e6:.1f} MB"  # noqa: E731
    lines = [
        "## Report",
        "",
        "Measured by `python benchmarks/report_scale.py --write-docs` on "
        f"{platform.node() or 'this machine'} ({os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d')}). *Whole run* = `dynconn simulate` + `dynconn run` (what `make demo` "
        "does); *report cold* = `dynconn report --force` with `figures/` deleted (every figure drawn); "
        "*report warm* = the same again (figures whose inputs did not change are reused); *no-op* = "
        "`dynconn report` on an up-to-date workdir (start-up, imports and checks only). Wall-clock "
        "seconds, CPU seconds (user + system) in brackets, whole commands.",
        "",
        "| case | neurons | rank | whole run | report cold | cold / whole | report warm | warm / whole | no-op | "
        "report.html | figures/ | exports/ |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['case']} (`--preset {r['preset']}`) | {r['neurons']} | {r['rank']} | "
            f"{r['whole_wall']:.1f} s ({r['whole_cpu']:.1f}) | {r['cold_wall']:.1f} s ({r['cold_cpu']:.1f}) | "
            f"{100 * r['cold_wall'] / r['whole_wall']:.0f} % | {r['warm_wall']:.1f} s ({r['warm_cpu']:.1f}) | "
            f"{100 * r['warm_wall'] / r['whole_wall']:.0f} % | {r['noop_wall']:.1f} s ({r['noop_cpu']:.1f}) | "
            f"{mb(r['html_bytes'])} | {mb(r['figures_bytes'])} ({r['n_figures']} × PNG + SVG) | "
            f"{mb(r['exports_bytes'])} |")
    return "\n".join(lines) + "\n"


def write_docs(section: str) -> None:
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n\n"
    start = text.find("## Report\n")
    marker = "<!-- end of generated table -->"
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section + "\n" + marker + "\n"
    else:
        end = text.find("\n## ", start + 1)
        # keep the hand-written notes that follow the generated table (up to the next section)
        notes = ""
        body = text[start:end if end >= 0 else len(text)]
        if marker in body:
            notes = body[body.index(marker):]
        text = text[:start] + section + "\n" + (notes or marker + "\n") + (text[end + 1:] if end >= 0 else "")
    DOCS.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/dynconn-report-bench"))
    ap.add_argument("--cases", nargs="+", default=["demo", "large"], choices=["demo", "large", "neurons"])
    ap.add_argument("--neurons", type=int, default=5000)
    ap.add_argument("--keep", type=Path, default=None)
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    presets = {"demo": "standard", "large": "large"}
    results = []
    if "neurons" in args.cases:
        r = at_scale(args.neurons, args.keep)
        print(json.dumps(r, indent=1), file=sys.stderr)
        print("| neurons | animals | rank | report.build | write | peak RSS | report.html | figures (PNG) | GraphML |")
        print("|---|---|---|---|---|---|---|---|---|")
        print(markdown_scale(r))
        args.cases = [c for c in args.cases if c != "neurons"]
        if not args.cases:
            return
    for name in args.cases:
        print(f"{name}: simulating and running the pipeline …", file=sys.stderr)
        results.append(case(name, presets[name], args.out))
        print(json.dumps(results[-1], indent=1), file=sys.stderr)
    section = markdown(results)
    print(section)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    if args.write_docs:
        write_docs(section)


if __name__ == "__main__":
    main()

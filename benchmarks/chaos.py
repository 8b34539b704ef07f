#!/usr/bin/env python3
"""Chaos benchmark: kill `dynconn run` at random moments, rerun, compare with a clean run.

    python benchmarks/chaos.py                      # standard preset, 20 kills
    python benchmarks/chaos.py --preset small --kills 4 --seed 1 --json out.json

1. Simulate the demo dataset (``dynconn simulate --preset standard``) and run the whole
   pipeline once without interruption: the reference.
2. ``--kills`` times: start ``dynconn run`` in a second work directory — alternately from
   an empty work directory and with ``--force`` over finished artifacts — and send it
   SIGKILL or SIGTERM (alternating, first SIGKILL) after a random delay: one uniform draw
   in each of ``--kills`` equal slices of an uninterrupted run's length, shuffled (stratified,
   so the kills cover start-up, every stage and the writes). Then check:
   - every artifact present under its real name verifies (never a half-written one);
   - a SIGTERM'd run exited with 143 and one line (or was killed before Python set up
     its handlers: -15);
   - a plain rerun (``dynconn run``) exits 0 and its artifacts are identical to the
     reference: the same fingerprint for every HDF5 artifact (sha256 over its datasets'
     checksums; ``created``/``seconds`` attributes naturally differ), byte-identical CSV
     exports, and the same ``summary.json`` apart from its provenance block (stage times).
     ``report.html`` shows stage times, so it is checked through its recorded sha256.
3. Print one line per kill and a summary; exit 1 if any check failed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dynconn.io.artifacts import inspect as inspect_artifact  # noqa: E402
from dynconn.io.artifacts import read_attrs  # noqa: E402

H5 = ("ingest.h5", "affinity.h5", "factors.h5", "communities.h5")
EXPORTS = ("communities.csv", "factors_time.csv", "factors_animal.csv")
STAGES = ("ingest", "affinity", "factorize", "communities", "report")


def dynconn(*args) -> list[str]:
    return [sys.executable, "-m", "dynconn", *map(str, args)]


def outcome(workdir: Path) -> dict:
    """What must be identical between runs: artifact fingerprints and export contents."""
    out = {}
    for name in H5:
        attrs = read_attrs(workdir / name)
        out[name] = attrs.get("fingerprint") if attrs else None
    for name in EXPORTS:
        path = workdir / "exports" / name
        out[name] = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None
    summary = workdir / "exports" / "summary.json"
    if summary.exists():
        data = json.loads(summary.read_text())
        data.pop("provenance", None)
        out["summary.json"] = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    else:
        out["summary.json"] = None
    out["report.html"] = (workdir / "report.html").exists()
    return out


def damaged_artifacts(workdir: Path) -> list[str]:
    """Artifacts under their real names that do not verify (must be none)."""
    bad = []
    for name in H5:
        path = workdir / name
        if path.exists() and not inspect_artifact(path).verifies:
            bad.append(name)
    return bad


def stage_reached(stderr: str) -> str:
    stage = "startup"
    for line in stderr.splitlines():
        for name in STAGES:
            if line.startswith(f"→ {name}") or line.startswith(f"✓ {name}"):
                stage = name if line.startswith("→") else f"after {name}"
    return stage


def reference_run(config: Path, workdir: Path) -> tuple[dict, float]:
    started = time.perf_counter()
    proc = subprocess.run(dynconn("run", config, "--workdir", workdir), capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"reference run failed:\n{proc.stderr}")
    return outcome(workdir), seconds


def trial(config: Path, workdir: Path, sig: int, delay: float, fresh: bool, reference: dict) -> dict:
    if fresh and workdir.exists():
        shutil.rmtree(workdir)
    args = ["run", config, "--workdir", workdir] + ([] if fresh else ["--force"])
    proc = subprocess.Popen(dynconn(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    finished_first = proc.poll() is not None
    if not finished_first:
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=600)
    record = {
        "signal": signal.Signals(sig).name, "delay_s": round(delay, 2), "fresh": fresh,
        "finished_before_kill": finished_first, "exit": proc.returncode, "stage": stage_reached(err),
        "leftovers": sorted(p.name for p in workdir.rglob("*") if ".tmp-" in p.name or p.name == ".dynconn.lock")
        if workdir.exists() else [],
        "damaged": damaged_artifacts(workdir) if workdir.exists() else [],
    }
    problems = []
    if record["damaged"]:
        problems.append(f"damaged artifacts under real names: {record['damaged']}")
    if sig == signal.SIGTERM and not finished_first:
        last = err.strip().splitlines()[-1] if err.strip() else ""
        if proc.returncode == 143:
            if not last.startswith("interrupted by SIGTERM"):
                problems.append(f"SIGTERM message: {last!r}")
        elif proc.returncode == 0:
            # the run was still going when the signal was sent (poll above): a stop was lost
            problems.append("SIGTERM ignored: the run went on and exited 0")
        elif proc.returncode != -signal.SIGTERM:
            problems.append(f"SIGTERM exit status {proc.returncode}")
        if "Traceback" in err:
            problems.append("traceback after SIGTERM")
    started = time.perf_counter()
    rerun = subprocess.run(dynconn("run", config, "--workdir", workdir), capture_output=True, text=True)
    record["rerun_s"] = round(time.perf_counter() - started, 1)
    record["rerun_ran"] = [s for s in STAGES if f"→ {s}" in rerun.stderr]
    if rerun.returncode != 0:
        problems.append(f"rerun failed ({rerun.returncode}): {rerun.stderr.strip()[-300:]}")
    else:
        got = outcome(workdir)
        diff = [k for k in reference if got.get(k) != reference[k]]
        if diff:
            problems.append(f"differs from the reference: {diff}")
        if any(p.name == ".dynconn.lock" or ".tmp-" in p.name for p in workdir.rglob("*")):
            problems.append("temporary files or lock left after the rerun")
    record["problems"] = problems
    return record


def chaos(config: Path, base: Path, kills: int, seed: int, log=None, delays=None) -> dict:
    """``kills`` trials; ``delays`` (seconds) replaces the random delays when given."""
    log = log or (lambda line: print(line, flush=True))
    rng = random.Random(seed)
    reference, seconds = reference_run(config, base / "reference")
    # a second timing (over finished artifacts, like half the trials): the kill window is the
    # shorter of the two, so that load on a shared machine does not put kills after the end
    started = time.perf_counter()
    subprocess.run(dynconn("run", config, "--workdir", base / "reference", "--force", "-q"), capture_output=True)
    seconds = min(seconds, time.perf_counter() - started)
    log(f"uninterrupted run: {seconds:.1f} s (the kill window)")
    workdir = base / "chaos"
    # stratified random moments: one uniform draw in each of `kills` equal slices of a run,
    # in random order, so that the kills cover start-up, every stage and the writes
    moments = [(k + rng.random()) * seconds / max(kills, 1) for k in range(kills)]
    rng.shuffle(moments)
    records = []
    for i in range(kills):
        sig = signal.SIGKILL if i % 2 == 0 else signal.SIGTERM
        fresh = (i // 2) % 2 == 0  # pairs of (SIGKILL, SIGTERM) from empty, then over finished artifacts
        delay = delays[i] if delays is not None else moments[i]
        rec = trial(config, workdir, sig, delay, fresh, reference)
        records.append(rec)
        status = "ok" if not rec["problems"] else "FAIL: " + "; ".join(rec["problems"])
        if rec["finished_before_kill"]:
            rec["stage"] = "finished"
        log(f"{i + 1:2d} {rec['signal']:<7} after {rec['delay_s']:5.2f} s "
            f"({'empty' if fresh else '--force'}) in {rec['stage']:<18} exit {rec['exit']:>4}  "
            f"leftovers {len(rec['leftovers'])}  rerun {rec['rerun_s']:4.1f} s "
            f"ran {','.join(rec['rerun_ran']) or '-'}  {status}")
    failed = [r for r in records if r["problems"]]
    summary = {
        "kills": kills, "seed": seed, "reference_seconds": round(seconds, 1), "failed": len(failed),
        "identical": kills - len(failed),
        "stages_hit": sorted({r["stage"] for r in records}),
        "leftovers_cleaned": sum(len(r["leftovers"]) for r in records),
        "records": records,
    }
    log(f"{summary['identical']}/{kills} reruns identical to the uninterrupted run; "
        f"{summary['leftovers_cleaned']} leftover temp/lock files cleaned; "
        f"kills landed in: {', '.join(summary['stages_hit'])}")
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="standard", choices=["small", "standard", "large"])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", type=Path, help="work folder (default: a temporary one, removed)")
    parser.add_argument("--json", type=Path, help="write the full result as JSON here")
    args = parser.parse_args(argv)
    base = args.dir or Path(tempfile.mkdtemp(prefix="dynconn-chaos-"))
    try:
        sim = subprocess.run(dynconn("simulate", base / "data", "--preset", args.preset, "--seed", "0"),
                             capture_output=True, text=True)
        if sim.returncode != 0:
            raise SystemExit(sim.stderr)
        summary = chaos(base / "data" / "config.yaml", base, args.kills, args.seed)
        summary["preset"] = args.preset
        if args.json:
            args.json.write_text(json.dumps(summary, indent=2))
    finally:
        if args.dir is None:
            shutil.rmtree(base, ignore_errors=True)
    return 0 if summary["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

"""The result cache (issue 14 part 3): a parameter change loses no result, switching back
recomputes nothing, damaged entries are never used, the cache is bounded (dynconn gc)."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import h5py
import pytest

from conftest import cli, copy_dataset
from dynconn.io.artifacts import read_attrs
from dynconn.runner import cache
from dynconn.simulate import write_dataset

STAGES = ("ingest", "affinity", "factorize", "communities", "report")
ARTIFACTS = {"ingest": "ingest.h5", "affinity": "affinity.h5", "factorize": "factors.h5",
             "communities": "communities.h5"}


def outputs(workdir: Path, skip: tuple = ()) -> dict[str, bytes]:
    """The bytes of every result file in the work directory (the cache itself and the saved
    partial work under checkpoints/ -- e.g. the report's finished surrogates, kept per setting --
    excluded)."""
    return {str(p.relative_to(workdir)): p.read_bytes() for p in sorted(workdir.rglob("*"))
            if p.is_file() and p.relative_to(workdir).parts[0] not in (cache.CACHE_DIR, "checkpoints")
            and str(p.relative_to(workdir)) not in skip}


def settled_copy(folder: Path, tmp_path: Path) -> Path:
    """A copy of the switched dataset. Its data files have new paths, which are part of
    ingest's provenance, so ingest runs once there (to the same fingerprint: nothing after
    it changes) and the ingest.h5 of the old paths is dropped from the copy's cache. Tests
    on a copy therefore compare every output but ingest.h5's bytes."""
    data = copy_dataset(folder, tmp_path)
    result = cli("ingest", data / "config.yaml")
    assert result.exit_code == 0 and "→ ingest" in result.stderr, result.output
    for e in cache.entries(data / "run"):
        if e.stage == "ingest":
            e.path.unlink()
    return data


NOT_INGEST = ("ingest.h5",)


def outputs_but_ingest(files: dict[str, bytes]) -> dict[str, bytes]:
    return {k: v for k, v in files.items() if k not in NOT_INGEST}


def cached(workdir: Path) -> dict[str, str]:
    """{stage: key} of the cache entries (one per stage in these tests)."""
    found = {}
    for e in cache.entries(workdir):
        assert e.stage not in found, f"two {e.stage} entries"
        found[e.stage] = e.key
    return found


@pytest.fixture(scope="module")
def switched(tmp_path_factory):
    """A small run at the default bin (5 s), then ``--set affinity.bin_seconds=10``.
    Returns (folder, outputs of the first run, outputs of the second)."""
    config = write_dataset(tmp_path_factory.mktemp("switched") / "data", "small", 1)
    workdir = config.parent / "run"
    assert cli("run", config, "-q").exit_code == 0
    first = outputs(workdir)
    assert not (workdir / cache.CACHE_DIR).exists()  # nothing replaced yet: no cache
    result = cli("run", config, "--set", "affinity.bin_seconds=10")
    assert result.exit_code == 0, result.output
    # (this was test_pipeline's "changing bin_seconds reruns downstream only")
    assert "ingest: up to date" in result.stderr
    for stage in STAGES[1:]:
        assert f"→ {stage}" in result.stderr  # really recomputed at the new value
    second = outputs(workdir)
    assert second["ingest.h5"] == first["ingest.h5"]
    for name in ("affinity.h5", "factors.h5", "communities.h5", "report.html", "exports/summary.json"):
        assert second[name] != first[name], name
    assert json.loads(read_attrs(workdir / "affinity.h5")["params"])["bin_seconds"] == 10.0
    return config.parent, first, second


def test_switching_back_recomputes_nothing_and_the_report_is_identical(switched):
    """Issue 14's done-when. Works on the fixture's own folder (a copy would move the data
    files, which ingest's provenance names) and leaves it as it found it: 10 s results
    live, 5 s results cached."""
    data, first, second = switched
    workdir = data / "run"
    keys_10s = cached(workdir)  # the 5 s results, kept when the 10 s run replaced them
    assert sorted(keys_10s) == sorted(STAGES[1:])
    result = cli("run", data / "config.yaml")
    assert result.exit_code == 0, result.output
    assert "→" not in result.stderr  # no stage ran
    assert "ingest: up to date" in result.stderr
    for stage in STAGES[1:]:
        assert f"{stage}: restored from cache" in result.stderr
    now = outputs(workdir)
    assert now == first  # every file byte for byte: report.html, exports/, figures/, artifacts
    # the 10 s results are in the cache now, the 5 s ones left it
    entries = cached(workdir)
    assert sorted(entries) == sorted(STAGES[1:]) and not set(entries.values()) & set(keys_10s.values())
    # and the 10 s results come back just as well
    result = cli("run", data / "config.yaml", "--set", "affinity.bin_seconds=10")
    assert result.exit_code == 0 and "→" not in result.stderr
    assert outputs(workdir) == second
    # nothing is shared between the live results and the cache once a run has finished
    for name in ARTIFACTS.values():
        assert (workdir / name).stat().st_nlink == 1


def test_a_damaged_cache_entry_is_recomputed_never_used(switched, tmp_path):
    folder, first, _ = switched
    data = settled_copy(folder, tmp_path)
    workdir = data / "run"
    entry = cache.entry_path(workdir, _module("affinity"), cached(workdir)["affinity"])
    with h5py.File(entry, "r+") as f:  # one value changed, checksums left as they were
        f["affinity"][0, 0, 0] += 1.0
    result = cli("run", data / "config.yaml")
    assert result.exit_code == 0, result.output
    assert f"{entry}: dataset /affinity fails its checksum (corrupted); removed this cached affinity " \
           "result and recomputing it" in result.stderr
    assert "→ affinity" in result.stderr and not entry.exists()
    # affinity is deterministic: recomputed, it has the fingerprint the cached factors were
    # made from, so those (and the report) are still restored
    for stage in ("factorize", "communities", "report"):
        assert f"{stage}: restored from cache" in result.stderr
    assert read_attrs(workdir / "affinity.h5")["fingerprint"] == _fingerprint(first["affinity.h5"], tmp_path)
    skip = (*NOT_INGEST, "affinity.h5")  # recomputed: same datasets, a new creation time
    assert outputs(workdir, skip) == {k: v for k, v in first.items() if k not in skip}


def test_a_damaged_report_entry_is_refused(switched, tmp_path):
    data = settled_copy(switched[0], tmp_path)
    workdir = data / "run"
    module = _module("report")
    entry = cache.entry_path(workdir, module, cached(workdir)["report"])
    provenance = json.loads((entry / cache.MANIFEST).read_text())["provenance"]
    before = outputs(workdir)
    target = entry / cache.FILES / "exports" / "communities.csv"
    target.write_bytes(target.read_bytes()[:-2])  # truncated
    warnings = []
    assert not cache.restore(module, workdir, provenance, module.recorded_provenance(workdir), warnings.append)
    assert warnings == [f"{target}: does not match its recorded checksum (modified or damaged); "
                        "removed this cached report result and recomputing it"]
    assert not entry.exists() and outputs(workdir) == before
    # an entry under the name of another computation (renamed by hand) is refused too
    factorize = _module("factorize")
    other = {**_recorded(workdir / "factors.h5"), "params": {"rank": 99}}
    renamed = cache.entry_path(workdir, factorize, cache.provenance_key(other))
    cache.entry_path(workdir, factorize, cached(workdir)["factorize"]).rename(renamed)
    assert not cache.restore(factorize, workdir, other, None, warnings.append)
    assert warnings[-1] == (f"{renamed}: not the result of the computation its name says; removed this "
                            "cached factorize result and recomputing it")
    assert not renamed.exists()


def test_force_recomputes_and_replaces_the_cached_entry(switched, tmp_path):
    data = settled_copy(switched[0], tmp_path)
    workdir = data / "run"
    before = cached(workdir)
    result = cli("affinity", data / "config.yaml", "--force")
    assert result.exit_code == 0, result.output
    assert "→ affinity" in result.stderr and "restored" not in result.stderr
    after = cached(workdir)
    # the 10 s affinity was kept; the cached 5 s one is superseded by the fresh result
    assert after["affinity"] != before["affinity"]
    assert cache.provenance_key(_recorded(workdir / "affinity.h5")) == before["affinity"]
    # --from recomputes too
    result = cli("run", data / "config.yaml", "--from", "factorize", "--until", "factorize")
    assert result.exit_code == 0 and "→ factorize" in result.stderr and "restored" not in result.stderr


def test_without_hard_links_results_are_moved_or_copied(switched, tmp_path, monkeypatch):
    folder, first, second = switched
    data = settled_copy(folder, tmp_path)

    def no_links(src, dst, *args, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    result = cli("run", data / "config.yaml")
    assert result.exit_code == 0 and "→" not in result.stderr, result.output
    assert outputs(data / "run", NOT_INGEST) == outputs_but_ingest(first)
    result = cli("run", data / "config.yaml", "--set", "affinity.bin_seconds=10")
    assert result.exit_code == 0 and "→" not in result.stderr, result.output
    assert outputs(data / "run", NOT_INGEST) == outputs_but_ingest(second)


def test_a_cache_on_another_file_system_is_copied_to_and_from(switched, tmp_path, monkeypatch):
    """``cache/`` may be a symlink to another disk: links and renames across it fail with
    EXDEV (simulated here), so entries are copied in and out."""
    folder, first, second = switched
    data = settled_copy(folder, tmp_path)
    real_replace = os.replace

    def crosses(*paths) -> bool:
        return len({cache.CACHE_DIR in Path(p).parts for p in paths}) == 2

    def link(src, dst, *args, **kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    def replace(src, dst, *args, **kwargs):
        if crosses(src, dst):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "link", link)
    monkeypatch.setattr(os, "replace", replace)
    result = cli("run", data / "config.yaml")
    assert result.exit_code == 0 and "→" not in result.stderr, result.output
    assert outputs(data / "run", NOT_INGEST) == outputs_but_ingest(first)
    assert sorted(cached(data / "run")) == sorted(STAGES[1:])
    assert not any(cache.TMP_MARK in p.name for p in (data / "run").rglob("*"))


def test_cache_size_bounds_the_cache_least_recently_kept_first(switched, tmp_path):
    data = settled_copy(switched[0], tmp_path)
    workdir = data / "run"
    entries = cache.entries(workdir)
    # make the order explicit: affinity kept first … report last
    for age, e in enumerate(sorted(entries, key=lambda e: STAGES.index(e.stage))):
        os.utime(e.path, (1_000_000 + age, 1_000_000 + age))
    sizes = {e.stage: e.size for e in entries}
    keep = sizes["communities"] + sizes["report"]
    result = cli("gc", "--workdir", workdir, "--keep", str(keep))
    assert result.exit_code == 0, result.output
    assert sorted(cached(workdir)) == ["communities", "report"]
    assert "removed affinity" in result.stdout and "removed factorize" in result.stdout
    assert sum(e.size for e in cache.entries(workdir)) <= keep
    result = cli("gc", data / "config.yaml")  # default bound (10 GB): nothing to free
    assert result.exit_code == 0 and result.stdout.startswith("freed 0 B (0 result(s))")
    result = cli("gc", "--workdir", workdir, "--all")
    assert result.exit_code == 0 and "removed report" in result.stdout
    assert not (workdir / cache.CACHE_DIR).exists()
    assert (workdir / "report.html").exists()  # the live results are not the cache's


def test_cache_size_zero_keeps_nothing(switched, tmp_path):
    folder, first, _ = switched
    data = settled_copy(folder, tmp_path)
    result = cli("run", data / "config.yaml", "--set", "compute.cache_size=0")
    assert result.exit_code == 0 and "→" not in result.stderr  # earlier results are still used
    assert outputs(data / "run", NOT_INGEST) == outputs_but_ingest(first)
    assert not (data / "run" / cache.CACHE_DIR).exists()  # but the replaced ones are not kept


def test_the_bound_is_applied_at_the_end_of_a_run(switched, tmp_path):
    folder, _, second = switched
    data = settled_copy(folder, tmp_path)
    # switching back keeps the 10 s results; their sizes are those of the files kept
    report_files = sum(len(v) for k, v in second.items() if not k.endswith(".h5"))
    h5 = {stage: len(second[name]) for stage, name in ARTIFACTS.items()}
    manifest_margin = 8 << 10  # the report entry's manifest.json: about 2 KB here
    assert h5["affinity"] > 2 * manifest_margin  # so the bound below must evict it
    bound = report_files + h5["factorize"] + h5["communities"] + manifest_margin
    result = cli("run", data / "config.yaml", "--set", f"compute.cache_size={bound}")
    # during the run nothing was evicted that a later stage needed
    assert result.exit_code == 0 and "→" not in result.stderr, result.output
    assert "cache: removed 1 earlier result(s)" in result.stderr
    assert sorted(cached(data / "run")) == ["communities", "factorize", "report"]  # the oldest went
    assert sum(e.size for e in cache.entries(data / "run")) <= bound


def test_an_interrupted_keep_leaves_no_half_entry(switched, tmp_path, monkeypatch):
    data = settled_copy(switched[0], tmp_path)
    workdir = data / "run"
    shutil.rmtree(workdir / cache.CACHE_DIR)
    before = outputs(workdir)
    real_link, calls = cache._link, []

    def link_then_stop(src, dst, fallback):
        calls.append(dst)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_link(src, dst, fallback)

    monkeypatch.setattr(cache, "_link", link_then_stop)
    module = _module("report")
    with pytest.raises(KeyboardInterrupt):
        cache.keep(module, workdir, module.recorded_provenance(workdir), "another key")
    assert cache.entries(workdir) == []
    assert not any(cache.TMP_MARK in p.name for p in workdir.rglob("*"))
    assert outputs(workdir) == before


def test_a_report_that_does_not_match_its_digests_is_not_kept(switched, tmp_path):
    """A restore killed half-way leaves a mix of two reports under the live names: such a
    mix is never kept (and never overwrites a good entry)."""
    data = settled_copy(switched[0], tmp_path)
    workdir = data / "run"
    module = _module("report")
    current = module.recorded_provenance(workdir)
    before = {e.key: e.size for e in cache.entries(workdir)}
    (workdir / "exports" / "communities.csv").write_text("component,neuron,community\n")
    assert cache.keep(module, workdir, current, "another key") is None
    assert {e.key: e.size for e in cache.entries(workdir)} == before
    (workdir / "exports" / "communities.csv").unlink()  # incomplete: not kept either
    assert cache.keep(module, workdir, current, "another key") is None
    assert {e.key: e.size for e in cache.entries(workdir)} == before


def test_temporaries_left_in_the_cache_are_removed_under_the_lock(switched, tmp_path):
    data = settled_copy(switched[0], tmp_path)
    left = data / "run" / cache.CACHE_DIR / "report" / f"{'0' * 64}{cache.TMP_MARK}{_dead_pid()}"
    (left / cache.FILES).mkdir(parents=True)
    (left / cache.FILES / "report.html").write_text("half")
    result = cli("gc", "--workdir", data / "run")
    assert result.exit_code == 0 and not left.exists()


def test_gc_errors(tmp_path):
    result = cli("gc")
    assert result.exit_code == 2 and "CONFIG.yaml or --workdir" in result.output
    result = cli("gc", "--workdir", tmp_path / "nothing")
    assert result.exit_code == 1 and "no such work directory" in result.stderr
    assert not (tmp_path / "nothing").exists()
    result = cli("gc", "--workdir", tmp_path, "--keep", "lots")
    assert result.exit_code == 1 and "--keep: expected a size" in result.stderr


def test_cache_size_in_the_config(small_dataset):
    result = cli("run", small_dataset, "--set", "compute.cache_size=ten")
    assert result.exit_code == 1
    assert result.stderr.strip() == ("error: compute.cache_size: expected a size like 8GB or 500MiB "
                                     "(or bytes), got 'ten'")
    assert not (small_dataset.parent / "run").exists()


# ----------------------------------------------------------------------------- helpers
def _module(name):
    from dynconn.runner.stage import STAGES as RUNNER_STAGES

    return RUNNER_STAGES[name]


def _recorded(path: Path) -> dict:
    attrs = read_attrs(path)
    return {"dynconn_version": attrs["dynconn_version"], "params": json.loads(attrs["params"]),
            "inputs": json.loads(attrs["inputs"])}


def _fingerprint(data: bytes, tmp_path: Path) -> str:
    path = tmp_path / "first-affinity.h5"
    path.write_bytes(data)
    return read_attrs(path)["fingerprint"]


def _dead_pid() -> int:
    """A pid that is not running (a child that has exited and been reaped)."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid

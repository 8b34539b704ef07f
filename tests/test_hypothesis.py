"""Hostile inputs, generated: the CLI always ends with exit 0 or 1 and a message.

Every case runs the real CLI in-process (click's CliRunner, ``catch_exceptions=False``,
``DYNCONN_DEBUG=1`` from conftest): an unexpected exception fails the test with its
traceback, and :func:`invoke` checks the exit status, the one-line message and the time
(a watchdog fails a case that hangs). 1,180 cases (the sum of the ``fuzz(n)`` counts), about a
minute of CPU time. Set ``DYNCONN_FUZZ_SCALE=10`` for a longer exploration.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import shutil
import signal
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynconn.io.artifacts import read_h5
from dynconn.cli import main

SCALE = float(os.environ.get("DYNCONN_FUZZ_SCALE", "1"))
HANG_SECONDS = 30


def fuzz(n: int):
    return settings(max_examples=max(1, int(n * SCALE)), deadline=None, derandomize=SCALE == 1,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large],
                    database=None)


class Hang(Exception):
    pass


@contextlib.contextmanager
def watchdog(seconds: float):
    def on_alarm(signum, frame):
        raise Hang(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def invoke(*args, expect_message: bool = True):
    """Run the CLI; exit 0 or 1 only, exit 1 ends with one ``error: ...`` line, never a traceback."""
    with watchdog(HANG_SECONDS):
        result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    text = result.output + result.stderr
    assert "Traceback" not in text, text
    assert result.exit_code in (0, 1), (result.exit_code, text)
    if result.exit_code == 1 and expect_message:
        lines = result.stderr.strip().splitlines()
        assert lines and lines[-1].startswith("error: "), result.stderr
        assert len(lines[-1]) < 1500
    return result


# ----------------------------------------------------------------------------- a tiny dataset
RATE = 4.0
FRAMES = 80


def tiny_traces(seed: int, n: int = 4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(FRAMES) / RATE
    x = 100 + 5 * np.sin(t[:, None] * (1 + np.arange(n))) + rng.normal(0, 1, (FRAMES, n))
    x[20:24, :2] += 40  # a shared event
    return x


def write_csv(path: Path, names, values) -> None:
    lines = [",".join(names)] + [",".join(f"{v:.4f}" for v in row) for row in values]
    path.write_text("\n".join(lines) + "\n")


BASE_CONFIG = {
    "workdir": "run",
    "data": {"sampling_rate": RATE,
             "animals": [{"name": "w1", "path": "w1.csv"}, {"name": "w2", "path": "w2.csv"}],
             "stimuli": [{"label": "a", "start_s": 0.0, "stop_s": 10.0}, {"label": "b", "start_s": 10.0, "stop_s": 20.0}]},
    "affinity": {"bin_seconds": 2.0},
    "factorize": {"rank": 2, "restarts": 1, "max_iter": 20},
    "communities": {"n_runs": 1},
}


@pytest.fixture(scope="module")
def root():
    folder = Path(tempfile.mkdtemp(prefix="dynconn-fuzz-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


_counter = [0]


def fresh_dataset(root: Path, config: dict | None = None) -> Path:
    """A new folder with two tiny animals and a config; returns the folder."""
    _counter[0] += 1
    folder = root / f"case{_counter[0]}"
    folder.mkdir()
    names = ["AVAL", "AVAR", "RIML", "RIMR"]
    write_csv(folder / "w1.csv", names, tiny_traces(1))
    write_csv(folder / "w2.csv", names[:3] + ["SMDL"], tiny_traces(2))
    (folder / "config.yaml").write_text(yaml.safe_dump(config if config is not None else BASE_CONFIG))
    return folder


def done(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def test_the_tiny_dataset_runs(root):
    folder = fresh_dataset(root)
    assert invoke("run", folder / "config.yaml", "-q", "--until", "communities").exit_code == 0
    done(folder)


# ----------------------------------------------------------------------------- configs
@fuzz(80)
@given(st.one_of(st.binary(max_size=400), st.text(max_size=400),
                 st.sampled_from([b"", b"\xef\xbb\xbf", "data: [\n".encode(), "a: b: c".encode(),
                                  "\ufeffworkdir: run".encode("utf-16"), b"- 1\n- 2", b"!!python/object:os.system x",
                                  b"&a [*a]", b"key: \x00\x01", "workdir: \xe9".encode("latin-1"),
                                  b"affinity: &x {bin_seconds: *x}", b"data: &x [*x, *x]",
                                  b"workdir: " + b"[" * 5000 + b"]" * 5000, b"factorize: {rank: " + b"9" * 5000 + b"}",
                                  b"data: {sampling_rate: " + b"9" * 400 + b"}"])))
def test_any_config_text(root, content):
    folder = fresh_dataset(root)
    path = folder / "config.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
    invoke("run", path, "-q", "--until", "affinity")
    done(folder)


HOSTILE = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([0, -1, 1, 2, 3, 10**9, 2**63, -(2**63), 10**400]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e308, -1e308, 1e-308, 5e-324, float("nan"), float("inf"), 0.0, -0.0]),
    st.text(max_size=30),
    st.sampled_from(["auto", "../../etc/passwd", "/dev/zero", "", " ", "\x00", "~", "${HOME}", "{config}",
                     "w1.csv", "run", "..", "/", "zscore", "dff", "leiden", "nndsvd", "csv", "hdf5"]),
    st.lists(st.integers(-5, 50), max_size=4),
    st.dictionaries(st.text(max_size=8), st.integers(), max_size=3),
)

KEY_PATHS = [
    ("workdir",), ("data",), ("data", "sampling_rate"), ("data", "animals"), ("data", "stimuli"),
    ("data", "animals", 0), ("data", "animals", 0, "name"), ("data", "animals", 0, "path"),
    ("data", "animals", 0, "format"), ("data", "animals", 0, "dataset"), ("data", "animals", 0, "time_axis"),
    ("data", "animals", 0, "neurons"), ("data", "animals", 0, "drop_unlabeled"), ("data", "animals", 1, "name"),
    ("data", "stimuli", 0), ("data", "stimuli", 0, "start_s"), ("data", "stimuli", 1, "stop_s"),
    ("data", "stimuli", 0, "label"),
    ("ingest",), ("ingest", "normalize"), ("ingest", "baseline_seconds"), ("ingest", "baseline_percentile"),
    ("ingest", "max_gap_seconds"), ("ingest", "max_crop_fraction"),
    ("affinity",), ("affinity", "method"), ("affinity", "bin_seconds"), ("affinity", "smooth_seconds"),
    ("affinity", "noise_threshold"), ("affinity", "window_seconds"),
    ("factorize",), ("factorize", "rank"), ("factorize", "ranks"), ("factorize", "seed"), ("factorize", "init"),
    ("factorize", "tol"),
    ("communities",), ("communities", "method"), ("communities", "seed"), ("communities", "min_strength"),
    ("report",), ("report", "active_threshold"),
    ("unknown",), ("affinity", "bin_secs"), ("data", "animals", 0, "extra"),
]


def set_path(config: dict, path: tuple, value) -> None:
    node = config
    for part in path[:-1]:
        if isinstance(node, dict):
            node = node.setdefault(part, {})
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            return
        if not isinstance(node, (dict, list)):
            return
    last = path[-1]
    if isinstance(node, dict) and not isinstance(last, int):
        node[last] = value
    elif isinstance(node, list) and isinstance(last, int) and last < len(node):
        node[last] = value


@fuzz(250)
@given(st.lists(st.tuples(st.sampled_from(KEY_PATHS), HOSTILE), min_size=1, max_size=3))
def test_hostile_config_values(root, mutations):
    config = copy.deepcopy(BASE_CONFIG)
    for path, value in mutations:
        set_path(config, path, value)
    folder = fresh_dataset(root, config=None)
    try:
        text = yaml.safe_dump(config, allow_unicode=True)
    except (yaml.YAMLError, OverflowError, ValueError):
        return done(folder)
    (folder / "config.yaml").write_text(text)
    invoke("run", folder / "config.yaml", "-q", "--until", "communities")
    done(folder)


@fuzz(60)
@given(st.lists(st.tuples(st.text(alphabet="abcdefghijklmnopqrstuvwxyz_.[]0123456789", max_size=30),
                          st.text(max_size=20)), min_size=1, max_size=3))
def test_hostile_set_overrides(root, overrides):
    folder = fresh_dataset(root)
    args = []
    for key, value in overrides:
        args += ["--set", f"{key}={value}"]
    invoke("run", folder / "config.yaml", "-q", "--until", "affinity", *args)
    done(folder)


@fuzz(40)
@given(rank=st.one_of(st.integers(1, 30), st.integers(1, 10**12), st.just("auto")),
       ranks=st.one_of(st.tuples(st.integers(1, 6), st.integers(0, 6)),  # (a sweep costs a fit per rank)
                       st.tuples(st.integers(1, 10**9), st.integers(10**6, 10**9))),
       restarts=st.integers(1, 2), max_iter=st.integers(1, 15), seed=st.integers(0, 2**64),
       bin_seconds=st.sampled_from([0.25, 0.5, 2.0, 5.0, 19.0, 1e-9, 1e9]))
def test_factorize_requests_of_any_size(root, rank, ranks, restarts, max_iter, seed, bin_seconds):
    """Huge ranks or tiny bins: refused up front (memory estimate) or done, never a crash."""
    config = copy.deepcopy(BASE_CONFIG)
    config["factorize"] = {"rank": rank, "ranks": sorted(ranks), "restarts": restarts, "max_iter": max_iter,
                           "seed": seed}
    config["affinity"]["bin_seconds"] = bin_seconds
    folder = fresh_dataset(root, config)
    invoke("run", folder / "config.yaml", "-q", "--until", "communities")
    done(folder)


# ----------------------------------------------------------------------------- data files
NAME = st.one_of(st.sampled_from(["AVAL", "AVAR", "", " ", "a,b", '"q"', "../x", "/etc", "ÄÖ", "名", "\t", "AVAL"]),
                 st.text(max_size=8))
CELL = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64).map(repr),
    st.sampled_from(["", "nan", "NaN", "inf", "-inf", "1e308", "-1e308", "1e-320", "0", "x", " 1 ", "1,5", "NA", "null",
                     "0x10", "1_000", "１"]),
    st.integers(-(10**20), 10**20).map(str),
)


@st.composite
def csv_files(draw):
    n_cols = draw(st.integers(0, 5))
    header = [draw(NAME) for _ in range(n_cols)]
    n_rows = draw(st.integers(0, 12))
    rows = []
    for _ in range(n_rows):
        width = n_cols if draw(st.booleans()) or n_cols == 0 else draw(st.integers(0, n_cols + 2))
        rows.append([draw(CELL) for _ in range(width)])
    text = "\n".join(",".join(r) for r in [header] + rows)
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "latin-1"]))
    return text.encode(encoding, "replace")


@fuzz(150)
@given(csv_files(), st.integers(0, 1))
def test_any_csv_trace_file(root, content, which):
    folder = fresh_dataset(root)
    (folder / f"w{which + 1}.csv").write_bytes(content)
    invoke("run", folder / "config.yaml", "-q", "--until", "communities")
    done(folder)


@st.composite
def numeric_csv(draw):
    """Well-formed CSVs with hostile numbers and shapes (constant, NaN runs, few neurons/frames)."""
    n = draw(st.integers(1, 5))
    frames = draw(st.sampled_from([80] * 6 + [78, 40, 3, 1]))
    x = tiny_traces(draw(st.integers(0, 3)), n)[:frames] if frames <= FRAMES else np.vstack(
        [tiny_traces(0, n)] * 2)[:frames]
    x = np.array(x)
    for _ in range(draw(st.integers(0, 4))):
        i, j = draw(st.integers(0, frames - 1)), draw(st.integers(0, n - 1))
        length = draw(st.integers(1, frames))
        x[i : i + length, j] = draw(st.sampled_from([np.nan, 0.0, -1.0, 1e300, -1e300, 1e-300, 100.0]))
    names = draw(st.lists(st.sampled_from(["AVAL", "AVAR", "RIML", "RIMR", "SMDL", "X"]), min_size=n, max_size=n,
                          unique=draw(st.integers(0, 9)) > 0))
    return names, x


@fuzz(120)
@given(numeric_csv(), numeric_csv(), st.sampled_from(["dff", "zscore", "none"]),
       st.sampled_from(["differential", "mtd", "window-corr"]))
def test_hostile_numbers_in_traces(root, first, second, normalize, method):
    config = copy.deepcopy(BASE_CONFIG)
    config["ingest"] = {"normalize": normalize}
    config["affinity"]["method"] = method
    config["data"]["stimuli"] = None
    folder = fresh_dataset(root, config)
    write_csv(folder / "w1.csv", *first)
    write_csv(folder / "w2.csv", *second)
    result = invoke("run", folder / "config.yaml", "-q", "--until", "communities")
    if result.exit_code == 0:  # a finished run never holds a silent NaN/Inf
        aff = read_h5(folder / "run" / "affinity.h5")
        assert np.isfinite(aff["affinity"]).all()
        fac = read_h5(folder / "run" / "factors.h5")
        assert all(np.isfinite(fac[k]).all() for k in ("weights", "factors/pairs", "factors/time", "factors/animals"))
    done(folder)


@st.composite
def array_files(draw):
    kind = draw(st.sampled_from(["h5", "npy", "npz"]))
    shape = draw(st.sampled_from([(), (0,), (5,), (0, 3), (80, 0), (80, 3), (3, 80), (2, 80, 3), (1, 1)]))
    dtype = draw(st.sampled_from(["f8", "f4", "i4", "u1", "bool", "c16", "S3", "f2"]))
    data = np.zeros(shape, dtype=dtype)
    if data.size and dtype.startswith("f"):
        data = tiny_traces(0, max(1, data.size // FRAMES + 1)).ravel()[: data.size].reshape(shape).astype(dtype)
    dataset = draw(st.sampled_from(["traces", "g/traces", "missing", "", "/traces"]))
    time_axis = draw(st.integers(0, 1))
    n_names = draw(st.integers(0, 5))
    names = "\n".join(f"{i},{draw(NAME)}" for i in range(n_names))
    return kind, data, dataset, time_axis, names


@fuzz(60)
@given(array_files())
def test_any_array_trace_file(root, spec):
    kind, data, dataset, time_axis, names = spec
    config = copy.deepcopy(BASE_CONFIG)
    animal = {"name": "w2", "path": f"w2.{kind}", "time_axis": time_axis, "neurons": "names.csv"}
    if dataset:
        animal["dataset"] = dataset
    config["data"]["animals"][1] = animal
    folder = fresh_dataset(root, config)
    path = folder / f"w2.{kind}"
    key = dataset.strip("/") or "traces"
    if kind == "h5":
        with h5py.File(path, "w") as f:
            f.create_dataset(key, data=data)
    elif kind == "npy":
        np.save(path, data)
    else:
        np.savez(path, **{key.replace("/", "_"): data})
    (folder / "names.csv").write_text(names)
    invoke("run", folder / "config.yaml", "-q", "--until", "communities")
    done(folder)


# ----------------------------------------------------------------------------- paths
def _special_path(folder: Path, kind: str) -> str:
    target = folder / "special"
    if kind == "symlink to data":
        target.symlink_to(folder / "w1.csv")
    elif kind == "symlink loop":
        target.symlink_to(folder / "special")
    elif kind == "dangling symlink":
        target.symlink_to(folder / "nowhere.csv")
    elif kind == "folder":
        target.mkdir()
    elif kind == "fifo":
        os.mkfifo(target)
    elif kind == "enormous sparse file":
        with open(target, "wb") as fh:
            fh.truncate(1 << 40)  # 1 TiB of holes: no disk used, far beyond any memory
    elif kind == "empty file":
        target.write_bytes(b"")
    elif kind == "unreadable":
        target.write_text("A,B\n1,2\n")
        target.chmod(0)
        return str(target)
    else:
        return kind
    return str(target.name)


SPECIAL = ["symlink to data", "symlink loop", "dangling symlink", "folder", "fifo", "enormous sparse file",
           "empty file", "unreadable", "/dev/zero", "/dev/null", "/proc/self/status", "../../../../etc/passwd",
           "../w1.csv", "w1.csv/..", "~/nowhere.csv", "\x00bad", "a" * 300 + ".csv", "/"]


@fuzz(60)
@given(st.sampled_from(SPECIAL), st.sampled_from(["path", "neurons", "stimuli", "workdir"]),
       st.sampled_from([".csv", ".h5", ".npy", ""]))
def test_special_paths(root, kind, key, suffix):
    folder = fresh_dataset(root)
    config = copy.deepcopy(BASE_CONFIG)
    value = _special_path(folder, kind)
    if not os.path.isabs(value) and kind in ("folder", "fifo", "empty file") and suffix:
        os.rename(folder / value, folder / (value + suffix))
        value += suffix
    if key == "path":
        config["data"]["animals"][0]["path"] = value
    elif key == "neurons":
        config["data"]["animals"][0]["neurons"] = value
    elif key == "stimuli":
        config["data"]["stimuli"] = value
    elif value not in ("/", "~/nowhere.csv"):  # (valid work directories outside the test folder)
        config["workdir"] = value
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    invoke("run", folder / "config.yaml", "-q", "--until", "affinity")
    done(folder)


# ----------------------------------------------------------------------------- artifacts
@pytest.fixture(scope="module")
def finished(root):
    folder = fresh_dataset(root)
    assert invoke("run", folder / "config.yaml", "-q", "--until", "communities").exit_code == 0
    return folder / "run"


@fuzz(100)
@given(st.sampled_from(["ingest.h5", "affinity.h5", "factors.h5", "communities.h5"]),
       st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=0, max_size=4),
       st.one_of(st.none(), st.floats(0, 1)))
def test_damaged_artifacts_are_never_used_silently(root, finished, name, flips, truncate_at):
    """Whatever bytes change: inspect says 0 or 1, and when a damaged file still verifies,
    its data are exactly the original's (the change hit no dataset byte)."""
    original = read_h5(finished / name)
    path = root / f"damaged-{_counter[0]}-{name}"
    _counter[0] += 1
    shutil.copyfile(finished / name, path)
    data = bytearray(path.read_bytes())
    for where, xor in flips:
        data[int(where * len(data))] ^= xor
    if truncate_at is not None:
        data = data[: int(truncate_at * len(data))]
    path.write_bytes(bytes(data))
    result = invoke("inspect", path, expect_message=False)
    if result.exit_code == 0:
        again = read_h5(path)
        assert set(again.data) == set(original.data)
        for key, value in original.data.items():
            a, b = np.asarray(again[key]), np.asarray(value)
            assert np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"), key
    else:
        assert "verifies: NO" in result.stdout
        with pytest.raises(Exception):
            read_h5(path)
    path.unlink()


@fuzz(40)
@given(st.binary(max_size=2000))
def test_inspect_any_bytes(root, content):
    path = root / "junk.h5"
    path.write_bytes(content)
    result = invoke("inspect", path, expect_message=False)
    assert result.exit_code == 1 and "verifies: NO" in result.stdout


@fuzz(60)
@given(st.one_of(
    st.tuples(st.just("npy"), st.sampled_from([(0, 0), (1, 1), (3, 3), (4, 4), (2, 3), (3,), ()]),
              st.sampled_from(["f8", "i4", "bool", "c16", "U2"]),
              st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=16, max_size=16)),
    st.tuples(st.just("csv"), st.lists(st.lists(CELL | NAME, min_size=0, max_size=4), max_size=8),
              st.booleans(), st.none())))
def test_partition_any_graph(root, spec):
    kind = spec[0]
    path = root / f"graph.{kind}"
    if kind == "npy":
        _, shape, dtype, values = spec
        size = math.prod(shape)
        array = np.asarray((values * (size // 16 + 1))[:size], dtype=np.float64).reshape(shape)
        try:
            array = array.astype(dtype)
        except (ValueError, OverflowError):
            pass
        np.save(path, array)
    else:
        _, rows, header, _ = spec
        lines = (["source,target,weight"] if header else []) + [",".join(r) for r in rows]
        path.write_bytes("\n".join(lines).encode("utf-8", "replace"))
    invoke("partition", path, "--out", root / "membership.csv", "--runs", "1")


# ----------------------------------------------------------------------------- every format, broken
# Issue 14, part 5: each supported format written by its own library, then truncated or given
# under another format's name. A refusal must leave the work directory as it was (here: never
# created), so every check that reads the files runs before anything is written.
from formats_util import FORMAT_ENTRIES, write_format  # noqa: E402

FORMATS = list(FORMAT_ENTRIES)
EXTENSIONS = [".csv", ".tsv", ".txt", ".npy", ".npz", ".h5", ".mat", ".nwb", ""]
DECLARED = ["csv", "tsv", "npy", "npz", "hdf5", "mat", "nwb", "suite2p"]
FOUR = ["AVAL", "AVAR", "RIML", "RIMR"]


_written: dict[str, tuple[Path, dict]] = {}


def copy_of_format(root: Path, fmt: str, folder: Path) -> tuple[Path, dict]:
    """The second animal's traces in format ``fmt`` (written once, by its own library),
    copied into ``folder`` with its names file; returns the copy and the config keys."""
    if fmt not in _written:
        source = root / f"format-{fmt}"
        source.mkdir()
        path, entry, _ = write_format(source, fmt, tiny_traces(2), FOUR)
        _written[fmt] = (path, entry)
    path, entry = _written[fmt]
    for item in path.parent.iterdir():
        (shutil.copytree if item.is_dir() else shutil.copyfile)(item, folder / item.name)
    return folder / path.name, dict(entry)


def refused_cleanly(result, workdir: Path, *fragments: str) -> str:
    """Exit 1 (checked by :func:`invoke`) and the work directory never made; the error line."""
    line = result.stderr.strip().splitlines()[-1]
    assert result.exit_code == 1, result.output
    assert not workdir.exists() or not any(workdir.iterdir()), sorted(p.name for p in workdir.rglob("*"))
    for fragment in fragments:
        assert fragment in line, line
    return line


@fuzz(90)
@given(fmt=st.sampled_from(FORMATS),
       damage=st.one_of(st.tuples(st.just("intact"), st.none()),
                        st.tuples(st.just("truncate"), st.floats(0, 1, exclude_max=True)),
                        st.tuples(st.just("extension"), st.sampled_from(EXTENSIONS)),
                        st.tuples(st.just("declared"), st.sampled_from(DECLARED))),
       part=st.integers(0, 3))
def test_truncated_or_mislabelled_files_of_every_format(root, fmt, damage, part):
    config = copy.deepcopy(BASE_CONFIG)
    config["data"]["stimuli"] = None
    folder = fresh_dataset(root, config)
    path, entry = copy_of_format(root, fmt, folder)
    kind, how = damage
    if kind == "truncate":  # (suite2p: one of its files)
        target = sorted(path.iterdir())[part % 4] if path.is_dir() else path
        data = target.read_bytes()
        target.write_bytes(data[: int(how * len(data))])
    elif kind == "extension" and not path.is_dir():
        path = path.rename(path.with_name("w2" + how))
    elif kind == "declared":
        entry["format"] = how
    config["data"]["animals"][1] = {"name": "w2", "path": path.name, **entry}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    result = invoke("run", folder / "config.yaml", "-q", "--until", "ingest")  # (it reads the files)
    if kind == "intact":
        assert result.exit_code == 0, result.output
    elif result.exit_code == 1:
        refused_cleanly(result, folder / "run")
    done(folder)


# ----------------------------------------------------------------------------- issue 14's inputs
@st.composite
def issue14_inputs(draw):
    """One of the inputs issue 14 found misread or refused late, with what must happen."""
    kind = draw(st.sampled_from(["no header", "transposed", "all-NaN neuron", "bin frames", "epochs"]))
    return kind, draw(st.integers(0, 2**31 - 1))


@fuzz(70)
@given(issue14_inputs())
def test_the_inputs_of_issue_14(root, case):
    kind, seed = case
    rng = np.random.default_rng(seed)
    config = copy.deepcopy(BASE_CONFIG)
    config["data"]["stimuli"] = None
    folder = fresh_dataset(root, config)
    workdir = folder / "run"
    expect = None  # fragments of the refusal; None: the run must succeed
    if kind == "no header":
        fmt = str(rng.choice(["csv", "tsv"]))
        sep = "," if fmt == "csv" else "\t"
        x = tiny_traces(int(rng.integers(9)))
        x[0, rng.integers(4)] = np.nan if rng.random() < 0.3 else x[0, 0]
        (folder / f"w2.{fmt}").write_text("".join(sep.join("" if np.isnan(v) else f"{v:.4f}" for v in row) + "\n"
                                                  for row in x))
        config["data"]["animals"][1] = {"name": "w2", "path": f"w2.{fmt}"}
        if rng.random() < 0.4:  # the fix the message names
            (folder / "names.csv").write_text("".join(f"{i},{n}\n" for i, n in enumerate(FOUR)))
            config["data"]["animals"][1].update(header=False, neurons="names.csv")
        else:
            expect = ("holds only numbers, so the file has no header row", "data.animals[1].header: false")
    elif kind == "transposed":
        fmt = str(rng.choice(["npy", "hdf5", "mat5", "mat73", "npz"]))
        path, entry, _ = write_format(folder, fmt, tiny_traces(3).T.copy(), [f"N{i}" for i in range(FRAMES)])
        # the names file is the lab's (one row per neuron), not one per column as read
        (folder / "names.csv").write_text("".join(f"{i},{n}\n" for i, n in enumerate(FOUR)))
        config["data"]["animals"][1] = {"name": "w2", "path": path.name, **entry}
        expect = ("frames and neurons look swapped", "data.animals[1].time_axis: 1")
    elif kind == "all-NaN neuron":
        animal, column = int(rng.integers(2)), int(rng.integers(4))
        x = tiny_traces(animal + 1)
        x[:, column] = np.nan
        names = FOUR if animal == 0 else FOUR[:3] + ["SMDL"]
        write_csv(folder / f"w{animal + 1}.csv", names, x)
        lost = names[column]
    elif kind == "bin frames":
        rate = float(rng.choice([0.5, 1.0, 2.0, 4.0, 10.0]))
        bin_seconds = float(rng.choice([0.1, 0.25, 0.5, 1.0, 2.0, 3.0]))
        config["data"]["sampling_rate"] = rate
        config["affinity"]["bin_seconds"] = bin_seconds
        config["affinity"]["smooth_seconds"] = 0.5
        fpb = max(1, round(bin_seconds * rate))
        if fpb < 3:
            expect = (f"affinity.bin_seconds: a {bin_seconds:g} s bin holds {fpb} frame",
                      "(data.sampling_rate)", "at least 3 frames")
        elif FRAMES // fpb < 2:
            expect = ("affinity.bin_seconds",)
    else:  # epochs: a random set, overlapping or not, inline or in a file
        n = int(rng.integers(1, 5))
        starts = np.sort(rng.choice(np.arange(0, 19), size=n, replace=False)).astype(float)
        stops = starts + rng.integers(1, 6, size=n)
        epochs = [{"label": f"e{i}", "start_s": float(a), "stop_s": float(b)} for i, (a, b) in
                  enumerate(zip(starts, stops))]
        order = rng.permutation(n)
        epochs = [epochs[i] for i in order]
        overlapping = any(epochs[j]["start_s"] < epochs[i]["stop_s"] and epochs[i]["start_s"] < epochs[j]["stop_s"]
                          for i in range(n) for j in range(i + 1, n))
        if rng.random() < 0.5:
            config["data"]["stimuli"] = epochs
            where = "data.stimuli: epochs"
        else:
            (folder / "stim.csv").write_text("label,start_s,stop_s\n" + "".join(
                f"{e['label']},{e['start_s']:g},{e['stop_s']:g}\n" for e in epochs))
            config["data"]["stimuli"] = "stim.csv"
            where = "stim.csv: lines"
        if overlapping:
            expect = (where, "overlap", "make them disjoint")
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    result = invoke("run", folder / "config.yaml", "--until", "affinity")
    if expect is not None:
        line = refused_cleanly(result, workdir, *expect)
        if kind == "transposed":
            assert "concatenated" not in line
    else:
        assert result.exit_code == 0, result.output
        if kind == "all-NaN neuron":
            assert f"({lost}) treated as not recorded in animal 'w{animal + 1}'" in result.stderr
            aff = read_h5(workdir / "affinity.h5")
            if lost not in list(aff["neurons"]):  # recorded in that animal only: gone
                assert lost == ("RIMR" if animal == 0 else "SMDL")
                done(folder)
                return
            k = list(aff["neurons"]).index(lost)
            with_it = (aff["pairs"] == k).any(axis=1)
            assert not aff["mask"][with_it, animal].any()
            other = 1 - animal
            ing = read_h5(workdir / "ingest.h5")
            assert aff["mask"][with_it, other].sum() == (ing["present"][k, other] *
                                                        (ing["present"][:, other].sum() - 1))
    done(folder)

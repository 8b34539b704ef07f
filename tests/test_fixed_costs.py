"""What keeps the fixed cost of ``dynconn factorize --in --out`` low (docs/benchmarks.md, "Fixed
costs"): slow imports out of the way of reading the input, one pass over the tensor to validate
it, no work per pair outside the solver. Behaviour only; the seconds are measured in
benchmarks/fixed_costs.py, never asserted here."""

from __future__ import annotations

import subprocess
import sys
import types

import numpy as np

from dynconn.methods import ntf
from dynconn.runner import guards
from dynconn.runner.stage import STAGES, Stage


def modules_after(statement: str) -> set[str]:
    """The modules a fresh interpreter holds after ``statement``."""
    out = subprocess.run([sys.executable, "-c", f"{statement}\nimport sys\nprint(' '.join(sys.modules))"],
                         check=True, capture_output=True, text=True).stdout
    return set(out.split())


def test_the_solver_and_the_runner_import_neither_tensorly_nor_the_other_stages():
    # tensorly (and with it scipy) is imported where a CPTensor is built, so that a process can
    # import it in a thread while it reads its input; the runner imports a stage when asked for it
    loaded = modules_after("import dynconn.methods.ntf, dynconn.runner.pipeline")
    assert "tensorly" not in loaded and "scipy.optimize" not in loaded
    assert not {"dynconn.stages.report", "dynconn.stages.ingest"} & loaded
    loaded = modules_after("from dynconn.runner.stage import STAGES\nSTAGES['factorize']")
    assert "dynconn.stages.factorize" in loaded and "dynconn.stages.report" not in loaded


def test_stages_keep_the_pipeline_order_and_refuse_unknown_names():
    assert list(STAGES) == ["ingest", "affinity", "factorize", "communities", "report"]
    assert STAGES["factorize"] is STAGES["factorize"]  # one Stage per name
    try:
        STAGES["nope"]
    except KeyError:
        pass
    else:
        raise AssertionError("an unknown stage name must raise KeyError")
    assert "nope" not in STAGES


def test_slow_imports_are_done_by_the_end_of_the_block_and_a_failing_one_is_left_to_run():
    module = types.ModuleType("fake_stage")
    module.NAME = "fake"
    module.SLOW_IMPORTS = ("dynconn_no_such_module", "json.tool")
    sys.modules.pop("json.tool", None)
    # the missing module raises nothing here (run() would report it with its own import) and
    # does not stop the others; the thread is joined on leaving the block
    with Stage(module).importing_meanwhile():
        pass
    assert "json.tool" in sys.modules and "dynconn_no_such_module" not in sys.modules


def test_the_scan_gives_the_same_sum_of_squares_with_junk_at_unobserved_entries():
    rng = np.random.default_rng(0)
    P, T, A = 700, 30, 5  # several scan blocks: the rows per block are 2**20 // (T * A)
    X = rng.random((P, T, A)).astype(np.float32)
    mask = rng.random((P, A)) > 0.3
    X *= mask[:, None, :]
    expected = float(np.sum(X.astype(np.float64) ** 2))
    clean = ntf._scan_tensor(X, mask)
    junk = X.copy()
    junk[~np.broadcast_to(mask[:, None, :], X.shape)] = 7.0
    junk[np.argmin(mask[:, 0]), 0, 0] = np.nan  # NaN at an unobserved entry: zeroed, not an error
    dirty = ntf._scan_tensor(junk, mask)
    assert clean[1] is False and dirty[1] is True
    assert clean[0] == dirty[0]  # bitwise: the fit must not depend on what unobserved entries hold
    # float64 sums of ~10⁵ squares in two orders: relative round-off ≲ 1e-12
    np.testing.assert_allclose(clean[0], expected, rtol=1e-12)


def test_the_zero_tensor_guard_finds_a_lone_value_in_the_last_block():
    X = np.zeros((5000, 30, 4), dtype=np.float32)
    assert not guards._any_nonzero(X)
    X[-1, -1, -1] = 1e-30
    assert guards._any_nonzero(X)


# ----------------------------------------------------------------------------- the recorded scan
def _fed_in_pieces(X, mask, groups=None, seed=0):
    """An ObservedScan fed with X's rows in random pieces, each from a buffer reused afterwards."""
    rng = np.random.default_rng(seed)
    scan = ntf.ObservedScan(X.shape, mask, groups)
    start = 0
    while start < X.shape[0]:
        n = int(rng.integers(1, max(2, X.shape[0] // 3)))
        buffer = X[start:start + n].copy()
        scan.add(start, buffer)
        buffer[:] = -1  # a producer reusing its buffer must not change what was scanned
        start += n
    return scan.value()


def test_the_scan_fed_block_by_block_is_the_solvers_bit_for_bit():
    rng = np.random.default_rng(3)
    for trial in range(6):
        P, T, A = int(rng.integers(1, 2500)), int(rng.integers(1, 250)), int(rng.integers(1, 6))
        X = (rng.random((P, T, A), dtype=np.float32) ** 3)
        mask = rng.random((P, A)) > 0.2
        X *= mask[:, None, :]
        expected = ntf.prepare(X, mask).norm_sq
        assert _fed_in_pieces(X, mask, seed=trial) == expected  # bitwise: the fit starts from it
    # concatenated layout: (P, T_total, 1) with each bin's animal
    groups = np.repeat(np.arange(3), [40, 25, 35])
    mask = rng.random((900, 3)) > 0.3
    X = rng.random((900, 100, 1), dtype=np.float32) * mask[:, groups][:, :, None]
    assert _fed_in_pieces(X, mask, groups) == ntf.prepare(X, mask, time_groups=groups).norm_sq


def test_the_scan_of_a_tensor_that_is_not_clean_gives_nothing():
    rng = np.random.default_rng(4)
    X = rng.random((800, 30, 4), dtype=np.float32)
    mask = rng.random((800, 4)) > 0.3
    X *= mask[:, None, :]
    for bad in (np.nan, -1.0, np.inf):
        Y = X.copy()
        Y[700, 3, 0] = bad
        assert _fed_in_pieces(Y, mask) is None
    Y = X.copy()
    Y[~np.broadcast_to(mask[:, None, :], X.shape)] = 0.5  # junk at unobserved entries
    assert _fed_in_pieces(Y, mask) is None
    scan = ntf.ObservedScan(X.shape, mask)
    scan.add(0, X[:10])
    assert scan.value() is None  # not every row came
    try:
        scan.add(20, X[20:30])
    except ValueError as exc:
        assert "in order" in str(exc)
    else:
        raise AssertionError("rows out of order must be refused")


def test_a_recorded_sum_of_squares_replaces_the_scan_with_the_same_fit(monkeypatch):
    rng = np.random.default_rng(5)
    X = rng.random((400, 20, 3), dtype=np.float32)
    mask = rng.random((400, 3)) > 0.2
    X *= mask[:, None, :]
    value = _fed_in_pieces(X, mask)
    plain = ntf.ncp_hals(X, 3, mask=mask, random_state=0, max_iter=30)
    scans = []
    monkeypatch.setattr(ntf, "_scan_tensor", lambda *a: scans.append(1) or (_ for _ in ()).throw(AssertionError))
    data = ntf.prepare(X, mask, observed_sum_of_squares=value)
    assert not scans and data.norm_sq == value
    fast = ntf.ncp_hals(data, 3, random_state=0, max_iter=30)
    assert np.array_equal(plain[0][0], fast[0][0]) and all(np.array_equal(a, b) for a, b in zip(plain[0][1], fast[0][1]))
    assert np.array_equal(plain[1].loss_history, fast[1].loss_history)


def _affinity_run(tmp_path, layout="aligned"):
    from conftest import cli, edit_config
    from dynconn.simulate import write_dataset

    config = write_dataset(tmp_path / "data", "tiny", 0)
    edit_config(config.parent, lambda c: c["data"].update(layout=layout))
    result = cli("run", config, "--until", "affinity", "-q")
    assert result.exit_code == 0, result.output
    return config.parent / "run" / "affinity.h5"


def test_the_affinity_stage_records_the_scan_bound_to_its_data(tmp_path):
    import json

    from dynconn.io.artifacts import read_h5
    from dynconn.stages import factorize

    for layout in ("aligned", "concatenated"):
        art = read_h5(_affinity_run(tmp_path / layout, layout))
        record = json.loads(art.attrs["observed_scan"])
        groups = np.asarray(art["time_animal"]) if layout == "concatenated" else None
        scanned = ntf.prepare(art["affinity"], art["mask"], time_groups=groups).norm_sq
        assert record["sum_of_squares"] == scanned  # bit for bit (a JSON float round-trips exactly)
        assert factorize.recorded_sum_of_squares(art) == scanned
        own = json.loads(art.attrs["checksums"])
        assert record["checksums"] == {k: own[k] for k in ("affinity", "mask", "time_animal") if k in own}


def test_factorize_trusts_the_record_only_for_the_data_it_was_made_for(tmp_path, monkeypatch):
    """`dynconn factorize --in --out` on the stage's affinity.h5 skips the scan, with the factors of
    a run that scans; on a file whose tensor changed (the old attributes copied over), or one without
    the record (a user's own file), the solver scans."""
    from conftest import cli
    from dynconn.io.artifacts import read_h5, write_h5
    from dynconn.stages import factorize

    path = _affinity_run(tmp_path)
    art = read_h5(path)
    scans = []
    real_scan = ntf._scan_tensor
    monkeypatch.setattr(ntf, "_scan_tensor", lambda *a: scans.append(1) or real_scan(*a))

    def factors(in_path, out_name):
        scans.clear()
        result = cli("factorize", "--in", in_path, "--out", tmp_path / out_name, "--rank", 3, "--max-iter", 20,
                     "--restarts", 2, "-q")
        assert result.exit_code == 0, result.output
        out = read_h5(tmp_path / out_name)
        return {k: np.asarray(v) for k, v in out.data.items()}, len(scans)

    fast, n_fast = factors(path, "fast.h5")
    assert n_fast == 0
    attrs = {k: v for k, v in art.attrs.items() if k not in ("checksums", "fingerprint", "attrs_checksum",
                                                              "dynconn_version", "stage", "params", "config",
                                                              "inputs", "created")}
    mine = tmp_path / "mine.h5"
    write_h5(mine, art.data, stage="affinity", params={},
             attrs={k: v for k, v in attrs.items() if k != "observed_scan"})
    slow, n_slow = factors(mine, "slow.h5")
    assert n_slow == 1  # once for the restarts
    assert fast.keys() == slow.keys() and all(np.array_equal(fast[k], slow[k]) for k in fast)
    changed = tmp_path / "changed.h5"
    write_h5(changed, {**art.data, "affinity": art["affinity"] * np.float32(2)}, stage="affinity", params={},
             attrs=attrs)  # the stale record copied over
    assert factorize.recorded_sum_of_squares(read_h5(changed)) is None
    doubled, n_doubled = factors(changed, "doubled.h5")
    assert n_doubled == 1
    # relative errors are scale-free (with the stale record's norm, a quarter of the true one, they
    # would be off by a factor near 2); float32 HALS on the doubled tensor rounds differently:
    # 5e-7 relative seen after 20 iterations, 1e-5 is ~100 float32 ulps
    np.testing.assert_allclose(doubled["fit/losses"], fast["fit/losses"], rtol=1e-5)

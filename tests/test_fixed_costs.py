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

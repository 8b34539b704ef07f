"""The Python API (issue 13, part 1): every public name documented with running examples, the
docs/api.md tutorial, and the API computing what the stages compute (the same functions)."""

from __future__ import annotations

import doctest
import inspect
import json
import pydoc
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import dynconn
from conftest import ROOT, cli
from dynconn import api, config
from dynconn.io.artifacts import read_attrs, read_h5
from dynconn.errors import ArtifactError, ConfigError
from dynconn.methods.wsbm import graph_from_dense
from dynconn.simulate import write_dataset
from dynconn.validation import InvalidArgument

PUBLIC = ["differential_affinity", "affinity_tensor", "NonNegativeCP", "select_rank", "partition",
          "run", "load_run", "Run"]


@pytest.fixture(scope="module")
def api_folder(tmp_path_factory) -> Path:
    """One folder for the examples and the tutorial: they share the simulated `demo-small`
    dataset and its run (a second `dynconn.run` of it skips every stage)."""
    return tmp_path_factory.mktemp("api")


@pytest.fixture(scope="module")
def small_run(api_folder) -> dynconn.Run:
    return dynconn.run(write_dataset(api_folder / "demo-small", "small", 0), overrides={"factorize.rank": 3,
                       # the raw fit, as NonNegativeCP gives it: no merging of duplicate components
                       "factorize.merge_similarity": 2})


def test_public_names():
    assert dynconn.__all__ == PUBLIC
    assert all(callable(getattr(dynconn, name)) for name in PUBLIC)
    with pytest.raises(AttributeError, match="no attribute 'nonesuch'"):
        dynconn.nonesuch  # noqa: B018


def test_help_lists_every_public_name():
    text = pydoc.render_doc(dynconn, renderer=pydoc.plaintext)
    functions = text[text.index("FUNCTIONS"):]
    classes = text[text.index("CLASSES"):text.index("FUNCTIONS")]
    for name in PUBLIC:
        section = classes if name[0].isupper() else functions
        assert re.search(rf"^    (class )?{name}\(", section, re.M), f"{name} missing from help(dynconn)"


def test_import_is_light():
    """`import dynconn` (and so `dynconn --help`'s start) loads no numpy, config or solver."""
    code = ("import sys, dynconn; heavy = [m for m in ('numpy', 'yaml', 'tensorly', 'igraph', "
            "'matplotlib', 'dynconn.api') if m in sys.modules]; assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", PUBLIC)
def test_docstrings_follow_numpydoc(name):
    doc = inspect.getdoc(getattr(dynconn, name))
    assert "Examples\n--------" in doc
    assert ("Parameters\n----------" in doc) or ("Attributes\n----------" in doc)
    if name not in ("NonNegativeCP", "Run"):
        assert "Returns\n-------" in doc


def test_examples_run(api_folder, monkeypatch):
    """Every public name's Examples section runs and prints what it says (doctest), in a
    folder of its own (the run examples write `demo-small/` there)."""
    monkeypatch.chdir(api_folder)
    finder = doctest.DocTestFinder(recurse=False)
    for name in PUBLIC:
        tests = finder.find(getattr(api, name), name, globs={})
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        for test in tests:
            runner.run(test)
        result = runner.summarize(verbose=False)
        assert result.attempted >= 3, f"{name}: no examples"
        assert result.failed == 0, f"{name}: {result.failed} example(s) failed (see the output above)"


def test_tutorial_runs(api_folder, monkeypatch):
    """docs/api.md: the tutorial goes from a CSV to a figure in at most 15 lines, and runs."""
    monkeypatch.chdir(api_folder)
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 2
    assert len(blocks[0].strip().splitlines()) <= 15
    assert "read_csv" in blocks[0] and "savefig" in blocks[0]
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "docs/api.md", "exec"), namespace)
    for png in ("component0.png", "component0-report.png"):
        assert (api_folder / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    tensor, model = namespace["tensor"], namespace["model"]
    assert tensor.affinity.shape[2] == 2 and tensor.mask.shape == (tensor.pairs.shape[0], 2)
    assert model.cp_.rank == 3 and namespace["groups"].shape == (len(tensor.neurons),)


# ----------------------------------------------------------------------------- same as the stages
def test_affinity_tensor_is_the_stage(small_run):
    """From the ingest artifact's traces, affinity_tensor gives affinity.h5 exactly (one function)."""
    ing, aff = read_h5(small_run.workdir / "ingest.h5"), read_h5(small_run.workdir / "affinity.h5")
    neurons = [str(n) for n in ing["neurons"]]
    animals = {}
    for a, name in enumerate(ing["animals"]):
        rows = np.flatnonzero(ing["present"][:, a])
        animals[str(name)] = ([neurons[i] for i in rows], ing["traces"][a, rows, : int(ing["n_frames"][a])])
    p = small_run.config["affinity"]
    tensor = dynconn.affinity_tensor(animals, float(ing.attrs["sampling_rate"]), start_s=float(ing.attrs["start_s"]),
                                     **{k: p[k] for k in ("method", "bin_seconds", "smooth_seconds",
                                                          "noise_threshold", "window_seconds")})
    assert tensor.neurons == neurons and tensor.animals == [str(a) for a in ing["animals"]]
    for key in ("affinity", "mask", "pairs", "time"):
        np.testing.assert_array_equal(getattr(tensor, key), aff[key])
    assert tensor.time_animal is None


def test_nonnegative_cp_is_the_stage(small_run):
    """NonNegativeCP with the config's seed and restarts gives factors.h5 (same solver, seeds)."""
    aff, fac = read_h5(small_run.workdir / "affinity.h5"), read_h5(small_run.workdir / "factors.h5")
    p = small_run.config["factorize"]
    model = dynconn.NonNegativeCP(3, random_state=p["seed"], n_restarts=p["restarts"], max_iter=p["max_iter"],
                                  tol=p["tol"]).fit(aff["affinity"], mask=aff["mask"])
    assert model.fit(aff["affinity"], aff["mask"]) is model
    np.testing.assert_array_equal(model.weights_, fac["weights"])
    for factor, key in zip(model.factors_, ("pairs", "time", "animals")):
        np.testing.assert_array_equal(factor.astype(fac[f"factors/{key}"].dtype), fac[f"factors/{key}"])
    np.testing.assert_array_equal(model.loss_history_, fac["fit/loss_history"])
    assert model.n_iter_ == len(model.loss_history_) == int(fac["fit/n_iter"][fac["fit/best_index"]])
    assert model.cp_.rank == 3 and model.loss_ == model.loss_history_[-1]


def test_run_contents(small_run):
    run = small_run
    n = len(run.neurons)
    assert run.rank == 3 and run.config["factorize"]["rank"] == 3
    assert run.animals == ["worm1", "worm2", "worm3"]
    assert run.time.shape == (run.cp.factors[1].shape[0],) and run.membership.shape == (3, n)
    w = run.pair_matrix(1)
    assert w.shape == (n, n) and np.array_equal(w, w.T) and not w.diagonal().any()
    i, j = run.pairs[5]
    assert w[i, j] == pytest.approx(float(run.cp.factors[0][5, 1]))  # float32 loading, stored as is
    # the communities table is exports/communities.csv, and agrees with communities.h5
    csv_rows = (run.workdir / "exports" / "communities.csv").read_text().splitlines()
    assert list(run.communities.columns) == csv_rows[0].split(",") and len(run.communities) == len(csv_rows) - 1
    index = {name: k for k, name in enumerate(run.neurons)}
    for row in run.communities.itertuples():
        assert run.membership[row.component, index[row.neuron]] == row.community
    assert run.summary["rank"] == 3 and json.loads((run.workdir / "exports" / "summary.json").read_text()) == run.summary
    with pytest.raises(InvalidArgument, match="r: expected a value ≤ 2, got 3"):
        run.pair_matrix(3)


def test_run_figures_are_the_reports(small_run):
    from matplotlib.figure import Figure

    run = small_run
    on_disk = sorted(p.stem for p in (run.workdir / "figures").glob("*.png"))
    assert sorted(run.figure_names) == on_disk
    for fig in (run.plot_component(2), run.plot_atlas(), run.plot_traces(), run.plot_neuron_view()):
        assert isinstance(fig, Figure) and fig.axes
    with pytest.raises(InvalidArgument, match="figure: this run has no figure 'rank_selection'"):
        run.plot_rank_selection()  # a fixed rank: no sweep to show


def test_load_run_of_an_unfinished_folder(tmp_path):
    with pytest.raises(ArtifactError, match="summary.json: not found; is .* a finished run"):
        dynconn.load_run(tmp_path)


def test_run_from_a_dict_with_typed_overrides(small_run, tmp_path, monkeypatch):
    """A config as a dict (paths relative to the current folder), overrides used as values."""
    folder = small_run.workdir.parent
    raw = yaml.safe_load((folder / "config.yaml").read_text())
    monkeypatch.chdir(folder)
    result = dynconn.run(raw, workdir=tmp_path / "w", overrides={"ingest.smooth_seconds": 1e-1}, stop="ingest")
    assert result is None  # stopped before the report
    recorded = json.loads(read_attrs(tmp_path / "w" / "ingest.h5")["config"])
    assert recorded["ingest"]["smooth_seconds"] == 0.1 and recorded["factorize"]["restarts"] == 2
    with pytest.raises(ConfigError, match="factorize.rnak: unknown config key"):
        dynconn.run(raw, workdir=tmp_path / "w", overrides={"factorize.rnak": 3})
    with pytest.raises(InvalidArgument, match="config: expected a path to a YAML file or a mapping"):
        dynconn.run(3)


# ----------------------------------------------------------------------------- on arrays
def test_differential_affinity_is_the_stage_formula():
    """The API's result is compute_affinity's with method differential, and pairs in
    pair_index order; a pair that changes together scores above unrelated pairs."""
    from dynconn.stages.affinity import compute_affinity, pair_index

    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 240)).cumsum(axis=1)
    x[1] = 3 * x[0] - 2
    A, pairs = dynconn.differential_affinity(x, 2.0, bin_seconds=10, smooth_seconds=1.0, noise_threshold=0.5)
    np.testing.assert_array_equal(A, compute_affinity(x, sampling_rate=2.0, bin_seconds=10, smooth_seconds=1.0,
                                                      noise_threshold=0.5))
    np.testing.assert_array_equal(pairs, pair_index(4))
    assert A.shape == (6, 12) and A.dtype == np.float32 and (A >= 0).all()
    assert A[0].mean() > 2 * A[1:].mean(axis=1).max()  # pair (0, 1): identical normalised changes


def test_affinity_tensor_concatenated_layout():
    """Animals of different lengths: (P, T_total, 1), each animal's bins on its own clock, the
    mask per animal, and NonNegativeCP takes the time groups from the tensor."""
    rng = np.random.default_rng(4)
    animals = {"a": (["X", "Y", "Z"], rng.random((3, 80))), "b": (["Y", "Z"], rng.random((2, 120)))}
    t = dynconn.affinity_tensor(animals, 2.0, layout="concatenated", bin_seconds=10)
    assert t.affinity.shape == (3, 4 + 6, 1) and t.layout == "concatenated"
    assert t.time_animal.tolist() == [0] * 4 + [1] * 6
    assert t.time[:4].tolist() == t.time[4:8].tolist()  # each animal's own clock: 4.75, 14.75, ...
    assert t.mask.tolist() == [[True, False], [True, False], [True, True]]
    assert not t.affinity[:2, 4:].any()  # pairs with X are unobserved in b's bins
    model = dynconn.NonNegativeCP(1, n_restarts=1, max_iter=20).fit(t)
    assert model.factors_[1].shape == (10, 1) and model.factors_[2].shape == (1, 1)
    with pytest.raises(InvalidArgument, match="aligned layout needs recordings of one length.*a: 80 frames"):
        dynconn.affinity_tensor(animals, 2.0)


def test_partition_is_the_cli(tmp_path):
    """partition() on a dense matrix = `dynconn partition graph.npy` (same model, options, seed)."""
    rng = np.random.default_rng(5)
    group = np.repeat([0, 1, 2], 6)
    w = np.where(group[:, None] == group[None, :], 1.0, 0.1) * rng.uniform(0.5, 1.5, (18, 18))
    w = (w + w.T) / 2
    np.save(tmp_path / "g.npy", w)
    result = cli("partition", tmp_path / "g.npy", "--out", tmp_path / "m.csv", "--seed", "7")
    assert result.exit_code == 0, result.output
    from_cli = [int(line.split(",")[1]) for line in (tmp_path / "m.csv").read_text().splitlines()[1:]]
    part = dynconn.partition(w, random_state=7)
    assert part.membership.tolist() == from_cli
    assert len(set(from_cli)) == 3 and part.levels[0].tolist() == from_cli
    graph = graph_from_dense(w)
    leiden = dynconn.partition(graph, method="leiden", random_state=0)  # the config's alias works too
    assert leiden.method == "leiden-modularity" and len(set(leiden.membership.tolist())) == 3


# ----------------------------------------------------------------------------- one validator
@pytest.mark.parametrize("call, message", [
    (lambda: dynconn.NonNegativeCP(0), "rank: expected a value ≥ 1, got 0"),
    (lambda: dynconn.NonNegativeCP(2, n_restarts=0), "n_restarts: expected a value ≥ 1, got 0"),
    (lambda: dynconn.NonNegativeCP(2, tol="1e-6"), 'tol: expected a number, got "1e-6"'),
    (lambda: dynconn.NonNegativeCP(2, random_state=-1), "random_state: expected a value ≥ 0, got -1"),
    (lambda: dynconn.NonNegativeCP(2, init="svd"), "init: expected one of random, nndsvd"),
    (lambda: dynconn.NonNegativeCP(2).set_params(max_iter=0), "max_iter: expected a value ≥ 1, got 0"),
    (lambda: dynconn.differential_affinity(np.ones((3, 100)), 0), "sampling_rate: expected a value > 0, got 0"),
    (lambda: dynconn.differential_affinity(np.ones((3, 100)), 4.0, bin_seconds=20),
     "bin_seconds: 20 s leaves 1 bin"),
    (lambda: dynconn.differential_affinity(np.ones(100), 4.0), r"traces: expected a 2-D array"),
    (lambda: dynconn.affinity_tensor({}, 4.0), "animals: expected a non-empty mapping"),
    (lambda: dynconn.affinity_tensor({"a": (["X", "X"], np.ones((2, 50)))}, 4.0), "neuron 'X' appears twice"),
    (lambda: dynconn.affinity_tensor({"a": (["X"], np.ones((2, 50)))}, 4.0), "1 names for traces of shape"),
    (lambda: dynconn.affinity_tensor({"a": (["X", "Y"], np.ones((2, 50)))}, 4.0, layout="stacked"),
     "layout: expected one of aligned, concatenated"),
    (lambda: dynconn.partition(np.ones((3, 3)), method="louvain"), "method: expected one of wsbm"),
    (lambda: dynconn.partition(np.ones((3, 3)), n_runs=1.5), "n_runs: expected an integer, got 1.5"),
    (lambda: dynconn.partition(np.ones((2, 3))), r"W: expected a square \(n, n\) matrix"),
    (lambda: dynconn.select_rank(np.ones((3, 4, 2)), [1], tol=-1), "tol: expected a value ≥ 0, got -1"),
    (lambda: dynconn.NonNegativeCP(2, unobserved_penalty=-0.5), "unobserved_penalty: expected a value ≥ 0, got -0.5"),
    (lambda: dynconn.NonNegativeCP(2, unobserved_penalty="0.1"), 'unobserved_penalty: expected a number, got "0.1"'),
    (lambda: dynconn.select_rank(np.ones((3, 4, 2)), [1], unobserved_penalty=-1),
     "unobserved_penalty: expected a value ≥ 0, got -1"),
    (lambda: dynconn.select_rank(np.ones((3, 4, 2)), [1], null_ratio=-1), "null_ratio: expected a value ≥ 0, got -1"),
])
def test_bad_keywords_name_themselves(call, message):
    with pytest.raises(InvalidArgument, match=message) as err:
        call()
    assert isinstance(err.value, ValueError) and "\n" not in str(err.value)


def test_config_and_keywords_share_the_sentence(tmp_path):
    """The same rule gives the same words in a config file and as a keyword."""
    path = tmp_path / "c.yaml"
    path.write_text("data: {sampling_rate: 4, animals: [{name: w, path: w.csv}]}\nfactorize: {restarts: 0}\n")
    with pytest.raises(ConfigError) as in_config:
        config.load(path)
    with pytest.raises(InvalidArgument) as as_keyword:
        dynconn.NonNegativeCP(2, n_restarts=0)
    assert str(in_config.value).split(": ", 1)[1] == str(as_keyword.value).split(": ", 1)[1]


def test_keyword_defaults_are_the_config_defaults():
    schema = config.SCHEMA
    names = {"random_state": "seed", "n_restarts": "restarts"}
    for func, section, skip in ((dynconn.NonNegativeCP, "factorize", {"rank"}),
                                (dynconn.partition, "communities", {"W"}),
                                (dynconn.differential_affinity, "affinity", {"traces", "sampling_rate"})):
        for name, param in inspect.signature(func).parameters.items():
            if name not in skip:
                assert param.default == schema[section][names.get(name, name)].default, (func, name)
    sweep = inspect.signature(dynconn.select_rank).parameters
    assert sweep["max_iter"].default == schema["factorize"]["sweep_max_iter"].default
    assert sweep["tol"].default == schema["factorize"]["sweep_tol"].default
    assert sweep["n_restarts"].default == schema["factorize"]["restarts"].default

"""Reference graphs from files: the *C. elegans* references by name, and a user's edge list.

* :func:`reference_graph`: the anatomical connectome — White et al. 1986 (``white1986``) and
  Witvliet et al. 2021 (``witvliet2020``, the two adult datasets 7 and 8 together;
  ``witvliet2020_7``/``_8`` alone), chemical synapses, gap junctions or both — and the causal
  links of the Neural Signal Propagation Atlas (Randi et al., Nature 2023; ``randi2023``:
  pairs with q < 0.05 in wild type, either direction). Read from the data files shipped by the
  ``wormneuroatlas`` package, the optional extra ``pip install dynconn[worm]``; without it
  :func:`worm_references_available` is False and asking for one raises a one-line
  :class:`~dynconn.errors.DynconnError` naming the extra.
* :func:`read_edge_list`: a user's own graph, CSV ``source,target,weight`` (any species).

The graphs and the enrichment test are in :mod:`dynconn.methods.reference`.
"""

from __future__ import annotations

import csv
import importlib.util
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..errors import DynconnError, InputError
from ..methods.reference import (
    SIGNAL_PROPAGATION,
    ReferenceGraph,
    canonical_name,
    connectome_graph,
    pair_key,
    plain_name,
    signal_propagation_graph,
)

EXTRA_HINT = "install the optional extra: pip install 'dynconn[worm]' (the wormneuroatlas package)"

# name -> (description, files in wormneuroatlas/data); the connectome files are tab-separated
# ``pre post type synapses`` (type chemical | electrical), one row per directed contact.
_CONNECTOMES = {
    "white1986": ("White et al. 1986, whole animal", ("aconnectome_white_1986_whole.csv",)),
    "witvliet2020": ("Witvliet et al. 2021, adult datasets 7 and 8",
                     ("aconnectome_witvliet_2020_7.csv", "aconnectome_witvliet_2020_8.csv")),
    "witvliet2020_7": ("Witvliet et al. 2021, adult dataset 7", ("aconnectome_witvliet_2020_7.csv",)),
    "witvliet2020_8": ("Witvliet et al. 2021, adult dataset 8", ("aconnectome_witvliet_2020_8.csv",)),
}
SYNAPSE_KINDS = {"all": ("chemical", "electrical"), "chemical": ("chemical",),
                 "electrical": ("electrical",)}
REFERENCES = tuple(_CONNECTOMES) + (SIGNAL_PROPAGATION,)


def worm_data_folder() -> Path | None:
    """The data folder of the installed ``wormneuroatlas`` package, found without importing it
    (its import pulls pandas and tries WormBase); None when it is not installed."""
    spec = importlib.util.find_spec("wormneuroatlas")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    return folder if folder.is_dir() else None


def worm_references_available() -> bool:
    return worm_data_folder() is not None


def _worm_file(filename: str) -> Path:
    folder = worm_data_folder()
    if folder is None:
        raise DynconnError(f"the C. elegans reference graphs are not installed: {EXTRA_HINT}")
    path = folder / filename
    if not path.is_file():
        raise DynconnError(f"{path}: missing from the installed wormneuroatlas; reinstall it "
                           "(pip install --force-reinstall 'dynconn[worm]')")
    return path


def _read_connectome_rows(path: Path):
    rows = []
    with path.open() as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader)
        if header[:4] != ["pre", "post", "type", "synapses"]:
            raise InputError(f"{path}: expected the header pre, post, type, synapses; "
                             "reinstall wormneuroatlas")
        for r in reader:
            if len(r) >= 4:
                rows.append((r[0], r[1], r[2], float(r[3])))
    return rows


def reference_graph(name: str, kind: str = "all", q_max: float = 0.05) -> ReferenceGraph:
    """A *C. elegans* reference graph by name (:data:`REFERENCES`). ``kind`` (connectomes):
    ``all``, ``chemical`` or ``electrical`` (gap junctions). ``q_max``: the signal propagation
    atlas's significance threshold."""
    if name == SIGNAL_PROPAGATION:
        import h5py

        with h5py.File(_worm_file("funatlas.h5"), "r") as f:
            ids = [n.decode() for n in f["neuron_ids"][:]]
            q = f["wt/q"][:]
        return signal_propagation_graph(q, ids, q_max)
    if name not in _CONNECTOMES:
        raise DynconnError(f"unknown reference graph {name!r}; choose one of {', '.join(REFERENCES)} "
                           "or give a CSV edge list")
    if kind not in SYNAPSE_KINDS:
        raise DynconnError(f"unknown synapse kind {kind!r}; choose one of {', '.join(SYNAPSE_KINDS)}")
    description, files = _CONNECTOMES[name]
    rows = [r for fn in files for r in _read_connectome_rows(_worm_file(fn))]
    label = {"all": "chemical + gap junctions", "chemical": "chemical", "electrical": "gap junctions"}
    short = {"all": "chem+gap", "chemical": "chemical", "electrical": "gap"}
    graph = connectome_graph(rows, f"{name}:{kind}", f"{description}, {label[kind]}",
                             SYNAPSE_KINDS[kind])
    return replace(graph, label=f"synapses {name} ({short[kind]})")


def read_edge_list(path: str | Path, worm_names: bool = False) -> ReferenceGraph:
    """A user's reference graph: CSV with header ``source,target,weight``, one undirected edge
    per row (a pair given twice sums; weight ≤ 0 is no edge; self-loops ignored). Names match
    on whitespace and case, or with :func:`canonical_name` when ``worm_names``."""
    path = Path(path)
    norm = canonical_name if worm_names else plain_name
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the edge list ({exc.__class__.__name__}); give a "
                         "UTF-8 CSV with header source,target,weight") from None
    reader = csv.reader(text.splitlines())
    header = [h.strip().lower() for h in next(reader, [])]
    if header != ["source", "target", "weight"]:
        raise InputError(f"{path}: the header must be source,target,weight (got "
                         f"{','.join(header) or 'an empty file'})")
    edges, nodes = {}, set()
    for line, row in enumerate(reader, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != 3 or not row[0].strip() or not row[1].strip():
            raise InputError(f"{path}, line {line}: expected source,target,weight, got {','.join(row)!r}")
        try:
            w = float(row[2])
        except ValueError:
            raise InputError(f"{path}, line {line}: weight {row[2].strip()!r} is not a number") from None
        if not np.isfinite(w):
            raise InputError(f"{path}, line {line}: weight {row[2].strip()!r} is not finite")
        a, b = norm(row[0]), norm(row[1])
        nodes.update((a, b))
        if w > 0 and a != b:
            key = pair_key(a, b)
            edges[key] = edges.get(key, 0.0) + w
    return ReferenceGraph(path.stem, f"edge list {path.name}", edges, frozenset(nodes),
                          worm_names=worm_names)


# the worm references `report.reference_graphs: [auto]` uses when wormneuroatlas is installed
DEFAULT_WORM = ("white1986:chemical", "white1986:electrical", "witvliet2020:chemical",
                "witvliet2020:electrical", SIGNAL_PROPAGATION)


def parse_entry(entry: str) -> tuple[str, str]:
    """``report.reference_graphs`` entry → ``("csv", path)`` or ``("worm", name[:kind])``;
    a one-line :class:`~dynconn.errors.ConfigError` for an unknown name."""
    from ..errors import ConfigError

    text = str(entry).strip()
    if text.lower().endswith((".csv", ".tsv", ".txt")) or "/" in text:
        return "csv", text
    name, _, kind = text.partition(":")
    if name not in REFERENCES or (kind and (name == SIGNAL_PROPAGATION or kind not in SYNAPSE_KINDS)):
        raise ConfigError(f"report.reference_graphs: unknown entry {text!r}; give auto, a CSV edge list "
                          f"(source,target,weight) or one of {', '.join(REFERENCES)} (connectomes "
                          f"optionally :{'|:'.join(SYNAPSE_KINDS)})")
    return "worm", text


def load_references(entries, resolve) -> tuple[list[ReferenceGraph], list[str]]:
    """The graphs ``report.reference_graphs`` names, and notes on what was left out.

    ``auto`` = :data:`DEFAULT_WORM` when the optional extra is installed (else a note, no
    graph); a worm reference named explicitly without the extra is an error; a CSV path is
    made absolute by ``resolve`` (the config's folder) and read by :func:`read_edge_list`
    (worm name rules off: any species)."""
    graphs, notes = [], []
    for entry in entries:
        if str(entry).strip() == "auto":
            if worm_references_available():
                graphs += [load_one(e) for e in DEFAULT_WORM]
            else:
                notes.append(f"C. elegans reference connectomes not shown: {EXTRA_HINT}")
            continue
        kind, text = parse_entry(entry)
        graphs.append(read_edge_list(resolve(text)) if kind == "csv" else load_one(text))
    return graphs, notes


def load_one(text: str) -> ReferenceGraph:
    name, _, kind = text.partition(":")
    return reference_graph(name) if name == SIGNAL_PROPAGATION else reference_graph(name, kind or "all")

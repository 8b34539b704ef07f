"""dynconn: dynamic functional connectomes from whole-brain calcium imaging.

The method, step by step, on arrays (numpydoc docstrings with shapes, units and examples;
tutorial in docs/api.md):

- :func:`differential_affinity` — one recording's traces (neurons, frames) → the affinity of
  every pair per time bin (pairs, bins) and the pair index;
- :func:`affinity_tensor` — several animals' traces with neuron names → the masked
  pairs × time × animals tensor (:class:`~dynconn.stages.affinity.AffinityTensor`);
- :class:`NonNegativeCP` — non-negative CP decomposition (scikit-learn style ``fit``);
  :func:`select_rank` — the number of components from a rank sweep;
- :func:`partition` — communities of a weighted graph (weighted SBM or Leiden).

Whole runs, as ``dynconn run`` does them:

- :func:`run` — run the pipeline from a config (a path or a dict) → a :class:`Run`;
- :func:`load_run` — a finished work directory → a :class:`Run` (config, neurons, animals,
  time, cp, communities table, summary, ``pair_matrix(r)``, the report's figures).

Stages of the command line: ``ingest`` → ``affinity`` → ``factorize`` → ``communities`` →
``report``. ``import dynconn`` is light: the names above load their modules on first use.
"""

__version__ = "0.1.0"

__all__ = ["differential_affinity", "affinity_tensor", "NonNegativeCP", "select_rank", "partition",
           "run", "load_run", "Run"]


def __getattr__(name: str):
    # the API (numpy, config, and on use tensorly, igraph, matplotlib) is imported on first use,
    # so `import dynconn` and `dynconn --help` stay fast
    if name in __all__:
        from . import api

        value = getattr(api, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dynconn' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)

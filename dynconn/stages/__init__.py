"""One module per pipeline stage: reads its inputs, calls the methods, returns its artifact.

:data:`ORDER` is the one list of the stages, in pipeline order; the runner wraps each module
in a :class:`dynconn.runner.stage.Stage`. Importing this package imports no stage module (the
command line reads the names without loading numpy and the rest).
"""

ORDER: tuple[str, ...] = ("ingest", "affinity", "factorize", "communities", "report")

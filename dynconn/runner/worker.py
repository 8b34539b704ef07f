"""Run in every worker process of the LocalCluster an engine starts (a Dask preload).

Ctrl-C in a terminal reaches the whole process group, the cluster's worker processes too. The
``dynconn`` process handles it (saves its checkpoint, cancels the tasks, closes the cluster);
a worker that died of it first would only add tracebacks, and lost data, to that.
"""

from __future__ import annotations

import signal


def dask_setup(worker) -> None:  # noqa: ARG001 - Dask's preload hook
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread of a process (workers as threads): nothing to do
        pass

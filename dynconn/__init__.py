"""dynconn: dynamic functional connectomes from whole-brain calcium imaging.

Stages (one module each, pure core + thin artifact wrapper):
``ingest`` -> ``affinity`` -> ``factorize`` -> ``communities`` -> ``report``.
"""

__version__ = "0.1.0"

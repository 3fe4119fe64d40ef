"""The experiment folder's own file, ``search.json``: what was searched, on which data, with
which metric. Written before the first trial; read by ``best`` and later by ``status``."""

from __future__ import annotations

EXPERIMENT_FILE = "search.json"
EXPERIMENT_FORMAT = "mammotune-experiment/1"

__all__ = ["EXPERIMENT_FILE", "EXPERIMENT_FORMAT"]

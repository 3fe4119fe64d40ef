"""The test ledger: every look at the test split of anything from an experiment, recorded in
``EXP/test_ledger.json`` (what, when, which model, on which data, the metrics).

The test split is meant to be looked at once, by the promotion. A model that came from an
experiment (a trial's checkpoint, or a promotion's final model) is traced back to it through
its URL; each look is appended, and a look after the first is warned about with the count of
looks before it.
"""

from __future__ import annotations

import logging
import posixpath
import time

from tuner import storage
from tuner.search.experiment import EXPERIMENT_FILE

__all__ = ["LEDGER", "experiment_of", "read_ledger", "record_look"]

LEDGER = "test_ledger.json"
_DEPTH = 6  # EXP/promotions/<id>/cv/trial_x/checkpoint_y is the deepest a model lies

logger = logging.getLogger("tuner")


def experiment_of(url: str) -> str | None:
    """The experiment a checkpoint or final model came from: the one a final model's
    ``model.json`` names, else the nearest folder above it with ``search.json``; None for a
    checkpoint copied out of its experiment."""
    url = storage.normalize(url).rstrip("/")
    model = storage.join(url, "model.json")
    if storage.exists(model):  # a final model names its experiment (a downloaded copy too)
        named = storage.read_json(model).get("experiment")
        if named and storage.exists(storage.join(named, EXPERIMENT_FILE)):
            return named
    for _ in range(_DEPTH):
        if storage.exists(storage.join(url, EXPERIMENT_FILE)):
            return url
        parent = posixpath.dirname(url)
        if not parent or parent == url or ("://" in url and "://" not in parent):
            return None  # the top of a filesystem or a bucket
        url = parent
    return None


def read_ledger(experiment: str) -> list[dict]:
    """The looks recorded for ``experiment``, oldest first (none: an empty list)."""
    url = storage.join(experiment, LEDGER)
    return storage.read_json(url)["looks"] if storage.exists(url) else []


def record_look(models: list[str], entry: dict) -> dict | None:
    """Append a test look at ``models`` to the ledger of the experiment they came from.

    Args:
        models: the URLs evaluated (checkpoints, or a final model).
        entry: what to record (what looked, the data, the metrics).

    Returns:
        ``{"ledger", "look", "looks_before"}`` of the experiment's ledger, or None when no
        model lies in an experiment. A look after the first logs one warning line.
    """
    experiments = sorted({e for e in (experiment_of(m) for m in models) if e})
    recorded = None
    for experiment in experiments:
        looks = read_ledger(experiment)
        look = {
            "look": len(looks) + 1,
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "models": models,
            **entry,
        }
        url = storage.join(experiment, LEDGER)
        storage.write_json(url, {"format": "mammotune-test-ledger/1", "looks": [*looks, look]})
        if looks:
            logger.warning(
                "warning: this is look %d at the test split of %s (%d before, recorded in %s); "
                "a figure from a repeated look is no longer an unbiased estimate",
                len(looks) + 1,
                experiment,
                len(looks),
                url,
            )
        recorded = {"ledger": url, "look": len(looks) + 1, "looks_before": len(looks)}
    return recorded

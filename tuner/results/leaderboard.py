"""The leaderboard of an experiment, read from storage alone (no cluster, nothing unpickled).

Each trial folder holds Ray Tune's ``params.json`` (its config) and ``result.json`` (one JSON
line per epoch), and our checkpoints hold ``checkpoint.json``. Trial states (running, error,
...) come from the plain-JSON fields of Tune's newest ``experiment_state-*.json``.
"""

from __future__ import annotations

import json
import posixpath

from tuner import storage
from tuner.errors import UserError
from tuner.search.experiment import (
    EXPERIMENT_FILE,
    trial_checkpoints,
    trial_results,
    trial_states,
)
from tuner.training.metrics import best_first

__all__ = ["leaderboard", "PRODUCT_DIMENSIONS", "download_checkpoint"]

# The five dimensions of the published study: leaderboard columns whether searched or fixed.
PRODUCT_DIMENSIONS = ("backbone", "class_weight", "dropout", "input_size", "transfer")


def _best(items, key, mode: str):
    """The item whose ``key`` is best under ``mode`` (the first of equals), or None."""
    return min(items, key=lambda item: best_first(key(item), mode), default=None)


def _read_json(fs, path: str):
    return json.loads(fs.cat_file(path))


def _read_trial(fs, folder: str, meta: dict, state: str, failures: int = 0) -> dict:
    metric, mode = meta["metric"], meta["mode"]
    config = _read_json(fs, f"{folder}/params.json") if fs.exists(f"{folder}/params.json") else {}
    epochs = trial_results(fs, folder)
    best_epoch = _best(epochs, lambda row: row.get(metric), mode) or {}
    # A finished trial keeps its best checkpoints by the metric and its latest (see
    # tuner.search.retention); a running one keeps them all. Rank what is there.
    checkpoint = _best(trial_checkpoints(fs, folder), lambda item: item[1].get(metric), mode)
    error = None
    # Tune keeps error.txt after a failure even when a retry then succeeded: the trial is
    # errored only if Tune's snapshot does not say it finished or goes on.
    if fs.exists(f"{folder}/error.txt") and state not in ("TERMINATED", "RUNNING", "PENDING"):
        state = "ERROR"
        error = _error_reason(fs.cat_file(f"{folder}/error.txt").decode(errors="replace"))
    settings = {**meta["space"].get("fixed", {}), **meta["space"]["space"]}
    return {
        "trial_id": posixpath.basename(folder.rstrip("/")).removeprefix("trial_"),
        "status": _status(state, len(epochs), meta["max_epochs"]),
        "epochs": len(epochs),
        "failures": failures,
        "nodes": sorted({row["node_id"] for row in epochs if row.get("node_id")}),
        "config": {k: v for k, v in config.items() if k in settings},
        "error": error,
        "best": {
            k: v for k, v in best_epoch.items() if k.startswith(("val_", "train_loss", "epoch"))
        },
        "checkpoint": checkpoint[0] if checkpoint else None,
    }


def leaderboard(experiment: str) -> dict:
    """Every trial of an experiment with its best epoch, ranked by the search's metric.

    Returns:
        ``{"experiment", "metric", "mode", "dimensions", "trials": [...], "best": trial or
        None}``; each trial has ``trial_id``, ``status``, ``epochs``, ``failures`` (failed
        attempts, retried or not), ``nodes`` (Ray node ids that ran it), ``config``,
        ``best`` (metrics of its best epoch) and ``checkpoint`` (URL of its best kept
        checkpoint).

    Raises:
        UserError: ``experiment`` holds no mammotune experiment.
    """
    experiment = storage.normalize(experiment)
    meta_url = storage.join(experiment, EXPERIMENT_FILE)
    if not storage.exists(meta_url):
        raise UserError(
            f"no mammotune experiment at {experiment} ({EXPERIMENT_FILE} not found); "
            "give the --storage location of a search"
        )
    meta = storage.read_json(meta_url)
    fs, path = storage.filesystem(experiment)
    states = trial_states(fs, path)
    trials = []
    for folder in sorted(fs.ls(path, detail=False)):
        name = posixpath.basename(folder.rstrip("/"))
        if name.startswith("trial_") and fs.isdir(folder):
            state, failures = states.get(name.removeprefix("trial_"), ("", 0))
            trial = _read_trial(fs, folder, meta, state, failures)
            if trial["checkpoint"]:
                relative = posixpath.relpath(trial["checkpoint"], path)
                trial["checkpoint"] = storage.join(experiment, relative)
            trials.append(trial)
    metric, mode = meta["metric"], meta["mode"]

    ranked = sorted(trials, key=lambda trial: best_first(trial["best"].get(metric), mode))
    return {
        "experiment": experiment,
        "metric": metric,
        "mode": mode,
        "max_epochs": meta["max_epochs"],
        "planned_trials": meta["space"].get("trials"),
        "dimensions": _dimensions(meta["space"]),
        "trials": ranked,
        "best": next((t for t in ranked if t["checkpoint"]), None),
    }


def _status(tune_status: str, epochs: int, max_epochs: int) -> str:
    """Tune's trial status in the words of a search: ASHA-stopped trials are TERMINATED
    before the last epoch."""
    if tune_status == "TERMINATED":
        return "done" if epochs >= max_epochs else "stopped"
    names = {"ERROR": "error", "RUNNING": "running", "PENDING": "pending", "PAUSED": "paused"}
    return names.get(tune_status, tune_status.lower() or "unknown")


def _dimensions(space: dict) -> list[str]:
    """The five published dimensions, then the other searched ones, in the space's order."""
    searched = list(space["space"])
    return [*PRODUCT_DIMENSIONS, *(d for d in searched if d not in PRODUCT_DIMENSIONS)]


def _error_reason(text: str) -> str:
    """The last exception line of Tune's error.txt (for example NonFiniteLoss: ...)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error" in line or "Exception" in line or "NonFiniteLoss" in line:
            return line[:300]
    return lines[-1][:300] if lines else "unknown error"


def download_checkpoint(checkpoint: str, dest: str) -> str:
    """Copy a checkpoint (``state.pt`` + ``checkpoint.json``) to ``dest``, a new or empty
    folder or URL; returns ``dest``.

    Raises:
        UserError: ``dest`` already holds files (nothing is overwritten).
    """
    dest = storage.normalize(dest)
    fs, path = storage.filesystem(dest)
    if fs.exists(path) and fs.ls(path):
        raise UserError(f"{dest} is not empty; choose a new folder for --download")
    for name in ("state.pt", "checkpoint.json"):
        storage.write_bytes(
            storage.join(dest, name), storage.read_bytes(storage.join(checkpoint, name))
        )
    return dest

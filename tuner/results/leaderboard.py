"""The leaderboard of an experiment, read from storage alone (no cluster, nothing unpickled).

Each trial folder holds Ray Tune's ``params.json`` (its config) and ``result.json`` (one JSON
line per epoch), and our checkpoints hold ``checkpoint.json``. Trial states (running, error,
...) come from the plain-JSON fields of Tune's newest ``experiment_state-*.json``.
"""

from __future__ import annotations

import json
import math
import posixpath

from tuner import storage
from tuner.errors import UserError
from tuner.search.experiment import EXPERIMENT_FILE

__all__ = ["leaderboard"]


def _trial_states(fs, path: str) -> dict[str, str]:
    states = sorted(p for p in fs.ls(path, detail=False) if "experiment_state-" in p)
    if not states:
        return {}
    with fs.open(states[-1], "rb") as f:
        data = json.load(f)
    result = {}
    for trial_json, _ in data.get("trial_data", []):
        trial = json.loads(trial_json) if isinstance(trial_json, str) else trial_json
        result[trial["trial_id"]] = trial.get("status", "UNKNOWN")
    return result


def _read_lines(fs, path: str) -> list[dict]:
    if not fs.exists(path):
        return []
    with fs.open(path, "rb") as f:
        return [json.loads(line) for line in f.read().decode().splitlines() if line.strip()]


def _better(a: float, b: float, mode: str) -> bool:
    if b is None or (isinstance(b, float) and math.isnan(b)):
        return True
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return False
    return a > b if mode == "max" else a < b


def leaderboard(experiment: str) -> dict:
    """Every trial of an experiment with its best epoch, ranked by the search's metric.

    Returns:
        ``{"experiment", "metric", "mode", "dimensions", "trials": [...], "best": trial or
        None}``; each trial has ``trial_id``, ``status``, ``epochs``, ``config``, ``best``
        (metrics of its best epoch) and ``checkpoint`` (URL of its best kept checkpoint).

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
    metric, mode, max_epochs = meta["metric"], meta["mode"], meta["max_epochs"]
    fs, path = storage.filesystem(experiment)
    states = _trial_states(fs, path)
    trials = []
    for folder in sorted(fs.ls(path, detail=False)):
        name = posixpath.basename(folder.rstrip("/"))
        if not name.startswith("trial_") or not fs.isdir(folder):
            continue
        trial_id = name.removeprefix("trial_")
        config = {}
        if fs.exists(f"{folder}/params.json"):
            with fs.open(f"{folder}/params.json", "rb") as f:
                config = json.load(f)
        epochs = _read_lines(fs, f"{folder}/result.json")
        best_epoch = None
        for row in epochs:
            if best_epoch is None or _better(row.get(metric), best_epoch.get(metric), mode):
                best_epoch = row
        checkpoint, checkpoint_value = None, None
        for sub in sorted(fs.ls(folder, detail=False)):
            if posixpath.basename(sub.rstrip("/")).startswith("checkpoint_"):
                ckpt_meta = f"{sub}/checkpoint.json"
                if fs.exists(ckpt_meta):
                    with fs.open(ckpt_meta, "rb") as f:
                        value = json.load(f)["metrics"].get(metric)
                    if checkpoint is None or _better(value, checkpoint_value, mode):
                        checkpoint, checkpoint_value = sub, value
        status = states.get(trial_id, "UNKNOWN")
        if fs.exists(f"{folder}/error.txt"):
            status = "ERROR"
        trials.append(
            {
                "trial_id": trial_id,
                "status": _status(status, len(epochs), max_epochs),
                "epochs": len(epochs),
                "config": {k: v for k, v in config.items() if k in meta["space"]["space"]},
                "best": {
                    k: v
                    for k, v in (best_epoch or {}).items()
                    if k.startswith(("val_", "train_loss", "epoch"))
                },
                "checkpoint": storage.join(experiment, posixpath.relpath(checkpoint, path))
                if checkpoint
                else None,
            }
        )
    ranked = sorted(
        trials,
        key=lambda t: _sort_key(t["best"].get(metric), mode),
    )
    best = next((t for t in ranked if t["checkpoint"]), None)
    return {
        "experiment": experiment,
        "metric": metric,
        "mode": mode,
        "max_epochs": max_epochs,
        "dimensions": list(meta["space"]["space"]),
        "trials": ranked,
        "best": best,
    }


def _sort_key(value, mode: str):
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    return (missing, 0.0 if missing else (-value if mode == "max" else value))


def _status(tune_status: str, epochs: int, max_epochs: int) -> str:
    """Tune's trial status in the words of a search: ASHA-stopped trials are TERMINATED
    before the last epoch."""
    if tune_status == "TERMINATED":
        return "done" if epochs >= max_epochs else "stopped"
    return {"ERROR": "error", "RUNNING": "running", "PENDING": "pending", "PAUSED": "paused"}.get(
        tune_status, tune_status.lower()
    )

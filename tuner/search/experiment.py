"""The experiment folder: our own ``search.json`` (what was searched, on which data, with
which metric; written before the first trial) and plain-JSON readers of what Ray Tune keeps
beside it (trial states from its snapshot, each trial's reported epochs and checkpoints).
Nothing is unpickled."""

from __future__ import annotations

import json
import posixpath
import time

EXPERIMENT_FILE = "search.json"
EXPERIMENT_FORMAT = "mammotune-experiment/1"
# A copy of the search's dataset manifest, so that the report and the model card read what
# the search saw without following URLs: {"url": the dataset, "manifest": its manifest}.
DATASET_COPY = "dataset_manifest.json"
CHECKPOINT_META = "checkpoint.json"  # tuner.training.checkpoint.META, read without torch
_REWRITE_S = 0.5  # time to wait for a snapshot caught half written

__all__ = [
    "DATASET_COPY",
    "EXPERIMENT_FILE",
    "EXPERIMENT_FORMAT",
    "TRIAL_STATES",
    "trial_status",
    "trial_states",
    "trial_results",
    "trial_checkpoints",
]


# Tune's trial states in the words of a search: the one mapping the live table, the
# dashboards' ``mammotune_trials{state}``, the leaderboard and ``status`` use.
TRIAL_STATES = {
    "PENDING": "pending",
    "RUNNING": "running",
    "PAUSED": "paused",
    "TERMINATED": "finished",
    "ERROR": "errored",
}


def trial_status(tune_status: str, epochs: int | None = None, max_epochs: int | None = None) -> str:
    """A Tune trial status in the words of :data:`TRIAL_STATES`; given the epochs it ran,
    a finished trial is ``done`` (all its epochs) or ``stopped`` (early: the scheduler or its
    patience stopped it)."""
    word = TRIAL_STATES.get(tune_status, tune_status.lower() or "unknown")
    if word == "finished" and epochs is not None and max_epochs is not None:
        return "done" if epochs >= max_epochs else "stopped"
    return word


def trial_states(fs, path: str) -> dict[str, tuple[str, int]]:
    """Trial id -> (Tune status, failed attempts), from Tune's newest snapshot in ``path``:
    the state a ``--resume`` would start from."""
    try:
        states = sorted(p for p in fs.ls(path, detail=False) if "experiment_state-" in p)
    except FileNotFoundError:  # nothing written yet
        return {}
    if not states:
        return {}
    data = _read_snapshot(fs, states[-1])
    result = {}
    for trial_json, run_json in data.get("trial_data", []):
        trial = json.loads(trial_json) if isinstance(trial_json, str) else trial_json
        run = json.loads(run_json) if isinstance(run_json, str) else run_json
        try:
            failures = int(json.loads(str(run.get("num_failures", "0"))))
        except (TypeError, ValueError):
            failures = 0
        result[trial["trial_id"]] = (trial.get("status", "UNKNOWN"), failures)
    return result


def _read_snapshot(fs, path: str) -> dict:
    # One GET, no ETag check: Tune rewrites the snapshot under the same name while we read.
    # On a local or mounted folder the rewrite is in place, so a read may catch it half
    # written; the whole file is there again within the copy's time.
    try:
        return json.loads(fs.cat_file(path))
    except json.JSONDecodeError:
        time.sleep(_REWRITE_S)
        try:
            return json.loads(fs.cat_file(path))
        except json.JSONDecodeError as error:
            message = f"Tune's experiment snapshot {path} is not valid JSON: {error}"
            raise ValueError(message) from None


def trial_results(fs, folder: str) -> list[dict]:
    """The epochs a trial folder reported (Tune's ``result.json``, a JSON line each), oldest
    first; none if it has reported nothing yet."""
    path = f"{folder}/result.json"
    if not fs.exists(path):
        return []
    text = fs.cat_file(path).decode()  # Tune rewrites it while a search runs: one GET
    lines = [line for line in text.splitlines() if line.strip()]
    rows = [json.loads(line) for line in lines[:-1]]
    try:
        rows += [json.loads(line) for line in lines[-1:]]
    except json.JSONDecodeError:  # the last line of a copy still being written
        pass
    return rows


def trial_checkpoints(fs, folder: str) -> list[tuple[str, dict]]:
    """``(path, metrics)`` of each complete checkpoint in a trial folder, oldest first."""
    checkpoints = []
    for sub in sorted(fs.ls(folder, detail=False)):
        sub = sub.rstrip("/")
        if posixpath.basename(sub).startswith("checkpoint_"):
            meta = f"{sub}/{CHECKPOINT_META}"
            if fs.exists(meta):
                checkpoints.append((sub, json.loads(fs.cat_file(meta))["metrics"]))
    return checkpoints

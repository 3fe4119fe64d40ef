"""The leaderboard of an experiment, read from storage alone (no cluster, nothing unpickled).

Each trial folder holds Ray Tune's ``params.json`` (its config) and ``result.json`` (one JSON
line per epoch), and our checkpoints hold ``checkpoint.json``. Trial states (running, error,
...) come from the plain-JSON fields of Tune's newest ``experiment_state-*.json``.
"""

from __future__ import annotations

import json
import posixpath
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from tuner import storage
from tuner.errors import UserError
from tuner.search.experiment import (
    EXPERIMENT_FILE,
    trial_checkpoints,
    trial_results,
    trial_states,
    trial_status,
)
from tuner.training.metrics import best_first

__all__ = [
    "PRODUCT_DIMENSIONS",
    "Trial",
    "Leaderboard",
    "Status",
    "leaderboard",
    "status",
    "download_checkpoint",
    "download_model",
    "pareto_front",
]

# The five dimensions of the published study: leaderboard columns whether searched or fixed.
PRODUCT_DIMENSIONS = ("backbone", "class_weight", "dropout", "input_size", "transfer")
# What a trial's best epoch keeps of its reported row.
_KEPT = ("val_", "train_loss", "epoch", "inference_ms", "params_m")


@dataclass
class Trial:
    """One trial of a search, as storage records it.

    Attributes:
        trial_id: Tune's trial id (its folder is ``trial_<id>``).
        status: pending, running, paused, done (all epochs), stopped (early), errored.
        epochs: epochs it reported.
        failures: failed attempts, retried or not.
        nodes: Ray node ids that ran it.
        config: its searched and fixed settings.
        metrics: what its best epoch (by the search's metric) reported.
        value: the search's metric at that epoch (None before its first epoch).
        checkpoint: URL of its best kept checkpoint, or None.
        error: the reason it errored, or None.
        pareto: on the Pareto front of a multi-objective search.
    """

    trial_id: str
    status: str
    epochs: int
    failures: int
    nodes: list[str]
    config: dict[str, Any]
    metrics: dict[str, Any]
    value: float | None
    checkpoint: str | None
    error: str | None = None
    pareto: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Leaderboard:
    """Every trial of an experiment, best first by the search's metric."""

    experiment: str
    metric: str
    mode: str
    objectives: list[dict[str, str]]  # [{"name", "mode"}]: one, or several (multi-objective)
    max_epochs: int
    planned_trials: int | None
    dimensions: list[str]
    trials: list[Trial]
    best: Trial | None  # the best trial that has a checkpoint and did not error
    promotion: dict | None = None  # the newest finished promotion: id, summary, final_model

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def pareto(self) -> list[Trial]:
        """The trials no other trial beats on every objective (multi-objective searches)."""
        return [t for t in self.trials if t.pareto]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Status:
    """Progress of a search, read from storage alone."""

    experiment: str
    planned_trials: int | None
    started_trials: int
    finished: int
    running: int  # running, pending or paused
    errored: int
    by_status: dict[str, int]
    failures: int  # failed attempts, retried or not
    metric: str
    best: Trial | None
    errors: dict[str, str] = field(default_factory=dict)  # trial id -> reason
    promotion: dict | None = None  # the newest finished promotion: id, summary, final_model

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        planned = f" of {self.planned_trials}" if self.planned_trials is not None else ""
        line = (
            f"{self.started_trials}{planned} trials started: {self.finished} finished, "
            f"{self.running} running, {self.errored} errored"
        )
        value = self.best.value if self.best is not None else None
        if value is not None:
            line += f"; best {self.metric} {value:.4f} ({self.best.trial_id})"
        if self.promotion:
            line += f"; {self.promotion['summary']}"
        return line


def _best(items, key, mode: str):
    """The item whose ``key`` is best under ``mode`` (the first of equals), or None."""
    return min(items, key=lambda item: best_first(key(item), mode), default=None)


def _read_json(fs, path: str):
    return json.loads(fs.cat_file(path))


def _read_trial(fs, folder: str, meta: dict, state: str, failures: int = 0) -> Trial:
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
    return Trial(
        trial_id=posixpath.basename(folder.rstrip("/")).removeprefix("trial_"),
        status=trial_status(state, len(epochs), meta["max_epochs"]),
        epochs=len(epochs),
        failures=failures,
        nodes=sorted({row["node_id"] for row in epochs if row.get("node_id")}),
        config={k: v for k, v in config.items() if k in settings},
        metrics={k: v for k, v in best_epoch.items() if k.startswith(_KEPT)},
        value=best_epoch.get(metric),
        checkpoint=checkpoint[0] if checkpoint else None,
        error=error,
    )


def pareto_front(points: list[tuple[float, ...]], modes: list[str]) -> list[bool]:
    """Which points no other point dominates (at least as good on every objective, better on
    one), each objective maximised or minimised as ``modes`` says."""
    signs = [1.0 if m == "max" else -1.0 for m in modes]
    keyed = [tuple(s * v for s, v in zip(signs, p, strict=True)) for p in points]
    front = []
    for i, p in enumerate(keyed):
        dominated = any(
            all(a >= b for a, b in zip(q, p, strict=True)) and q != p
            for j, q in enumerate(keyed)
            if j != i
        )
        front.append(not dominated)
    return front


def _mark_pareto(trials: list[Trial], objectives: list[dict]) -> None:
    names = [o["name"] for o in objectives]
    scored = [t for t in trials if all(isinstance(t.metrics.get(n), int | float) for n in names)]
    points = [tuple(float(t.metrics[n]) for n in names) for t in scored]
    for trial, on_front in zip(
        scored, pareto_front(points, [o["mode"] for o in objectives]), strict=True
    ):
        trial.pareto = on_front


def experiment_file(experiment: str) -> str:
    """The URL of ``experiment``'s own file (a normalised URL).

    Raises:
        UserError: no mammotune experiment there.
    """
    url = storage.join(experiment, EXPERIMENT_FILE)
    if not storage.exists(url):
        raise UserError(
            f"no mammotune experiment at {experiment} ({EXPERIMENT_FILE} not found); "
            "give the storage location of a search (--storage)"
        )
    return url


def leaderboard(experiment: str) -> Leaderboard:
    """Every trial of an experiment with its best epoch, ranked by the search's metric; in
    a multi-objective search, the trials on the Pareto front are marked.

    Raises:
        UserError: ``experiment`` holds no mammotune experiment.
    """
    experiment = storage.normalize(experiment)
    meta = storage.read_json(experiment_file(experiment))
    fs, path = storage.filesystem(experiment)
    states = trial_states(fs, path)
    trials = []
    for folder in sorted(fs.ls(path, detail=False)):
        name = posixpath.basename(folder.rstrip("/"))
        if name.startswith("trial_") and fs.isdir(folder):
            state, failures = states.get(name.removeprefix("trial_"), ("", 0))
            trial = _read_trial(fs, folder, meta, state, failures)
            if trial.checkpoint:
                relative = posixpath.relpath(trial.checkpoint, path)
                trial.checkpoint = storage.join(experiment, relative)
            trials.append(trial)
    metric, mode = meta["metric"], meta["mode"]
    objectives = meta.get("objectives") or [{"name": metric, "mode": mode}]
    if len(objectives) > 1:
        _mark_pareto(trials, objectives)
    ranked = sorted(trials, key=lambda trial: best_first(trial.value, mode))
    return Leaderboard(
        experiment=experiment,
        metric=metric,
        mode=mode,
        objectives=objectives,
        max_epochs=meta["max_epochs"],
        planned_trials=meta["space"].get("trials"),
        dimensions=_dimensions(meta["space"]),
        trials=ranked,
        # An errored trial's checkpoints are of a run that did not finish: never "the best".
        best=next((t for t in ranked if t.checkpoint and t.status != "errored"), None),
        promotion=_promotion(experiment),
    )


def _promotion(experiment: str) -> dict | None:
    from tuner.promote.result import latest_promotion

    found = latest_promotion(experiment)
    if found is None:
        return None
    return {"id": found.id, "summary": found.summary(), "final_model": found.final_model}


def status(experiment: str) -> Status:
    """Trials started of planned, finished, running, errored, failed attempts, the best so
    far and each errored trial's reason, from storage alone (no cluster needed).

    Raises:
        UserError: ``experiment`` holds no mammotune experiment.
    """
    board = leaderboard(experiment)
    counts = Counter(t.status for t in board.trials)
    return Status(
        experiment=board.experiment,
        planned_trials=board.planned_trials,
        started_trials=len(board.trials),
        finished=counts["done"] + counts["stopped"],
        running=counts["running"] + counts["pending"] + counts["paused"],
        errored=counts["errored"],
        by_status=dict(counts),
        failures=sum(t.failures for t in board.trials),
        metric=board.metric,
        best=board.best,
        errors={t.trial_id: t.error for t in board.trials if t.error},
        promotion=board.promotion,
    )


def _dimensions(space: dict) -> list[str]:
    """The five published dimensions, then the other searched ones, in the space's order,
    then ``fusion`` when the space fixes it (two-view models are told apart at a glance)."""
    searched = list(space["space"])
    fixed = ["fusion"] if "fusion" in space.get("fixed", {}) and "fusion" not in searched else []
    return [*PRODUCT_DIMENSIONS, *(d for d in searched if d not in PRODUCT_DIMENSIONS), *fixed]


def _error_reason(text: str) -> str:
    """The last exception line of Tune's error.txt (for example NonFiniteLoss: ...)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error" in line or "Exception" in line or "NonFiniteLoss" in line:
            return line[:300]
    return lines[-1][:300] if lines else "unknown error"


def _new_folder(dest: str) -> str:
    """``dest`` normalized, after checking it holds nothing (nothing is overwritten)."""
    dest = storage.normalize(dest)
    fs, path = storage.filesystem(dest)
    if fs.exists(path) and fs.ls(path):
        raise UserError(f"{dest} is not empty; choose a new, empty folder to download to")
    return dest


def download_checkpoint(checkpoint: str, dest: str) -> str:
    """Copy a checkpoint (``state.pt`` + ``checkpoint.json``) to ``dest``, a new or empty
    folder or URL; returns ``dest``.

    Raises:
        UserError: ``dest`` already holds files (nothing is overwritten).
    """
    dest = _new_folder(dest)
    for name in ("state.pt", "checkpoint.json"):
        storage.write_bytes(
            storage.join(dest, name), storage.read_bytes(storage.join(checkpoint, name))
        )
    return dest


def download_model(model: str, dest: str) -> str:
    """Copy a promotion's final model (``model.json`` and its member checkpoints) to
    ``dest``, a new or empty folder or URL; returns ``dest``. The copy is evaluated and
    predicted with as the original, and its test looks go to the ledger of the experiment
    its ``model.json`` names.

    Raises:
        UserError: ``dest`` already holds files (nothing is overwritten).
    """
    meta = storage.read_json(storage.join(model, "model.json"))
    members = meta.get("members") if isinstance(meta, dict) else None
    if not isinstance(members, list) or not members:
        raise UserError(f"{model}/model.json: no members; the final model's folder is damaged")
    # Each member checked to stay inside both folders before anything is copied.
    sources = [storage.join_under(model, m, what="member") for m in members]
    targets = [storage.join_under(dest, m, what="member") for m in members]
    dest = _new_folder(dest)
    for source, target in zip(sources, targets, strict=True):
        download_checkpoint(source, target)
    storage.write_json(storage.join(dest, "model.json"), meta)
    return dest

"""Cross-validation folds by patient: the train+val rows of a prepared dataset re-split into
F patient-grouped, label-stratified folds (scikit-learn's seeded StratifiedGroupKFold), read
from the existing shards' label columns (no image is decoded, nothing is prepared again).
The test split is never read."""

from __future__ import annotations

import warnings
from collections import Counter, defaultdict

import numpy as np

from tuner.data.stream import TileStream
from tuner.data.tasks import Task
from tuner.errors import UserError

__all__ = ["TRAIN_VAL", "fold_assignment"]

TRAIN_VAL = ("train", "val")


def _rows(data: str, manifest: dict, task: Task, kinds) -> list[tuple[str, int]]:
    """(patient, label) of every train+val row the task labels, over the tile kinds the
    candidates read (their patients are the same; a kind adds only rows)."""
    rows: list[tuple[str, int]] = []
    for view, size, enhance in kinds:
        stream = TileStream(
            data, manifest, view=view, size=size, enhance=enhance, split=TRAIN_VAL, task=task
        )
        rows += [(r["patient_id"], r["label"]) for r in stream.context(["patient_id"])]
    return rows


def fold_assignment(data: str, manifest: dict, task: Task, kinds, *, folds: int, seed: int) -> dict:
    """Assign every train+val patient to one of ``folds`` folds, stratified by the labels of
    their rows.

    Args:
        kinds: (view, size, enhance) of each tile kind the candidates train on.

    Returns:
        The content of ``folds.json``: ``patients`` (patient -> fold), the seed, per-fold
        patient and row counts per class, and ``patients_in_two_folds`` (0: checked).

    Raises:
        UserError: fewer than 2 folds, or more folds than the patients who have a row of the
            rarest class (a fold would hold none of them out).
    """
    from sklearn.model_selection import StratifiedGroupKFold  # slow import, planning only

    if folds < 2:
        raise UserError(f"folds {folds}: cross-validation needs at least 2 folds (--folds)")
    rows = _rows(data, manifest, task, kinds)
    with_class = [sorted({p for p, y in rows if y == c}) for c in range(len(task.classes))]
    fewest = min(range(len(with_class)), key=lambda c: len(with_class[c]))
    if len(with_class[fewest]) < folds:
        raise UserError(
            f"folds {folds} > the {len(with_class[fewest])} train+val patients with a "
            f"{task.classes[fewest]!r} row: each fold must hold some out; use --folds "
            f"{max(2, len(with_class[fewest]))} or fewer"
        )
    patients = np.array([p for p, _ in rows])
    labels = np.array([y for _, y in rows])
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    assignment: dict[str, int] = {}
    seen: Counter = Counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class")
        for fold, (_, held) in enumerate(splitter.split(np.zeros(len(rows)), labels, patients)):
            for patient in sorted(set(patients[held].tolist())):
                seen[patient] += 1
                assignment[patient] = fold
    per_fold: dict[int, dict] = defaultdict(lambda: {"patients": set(), "rows": Counter()})
    for patient, label in rows:
        per_fold[assignment[patient]]["patients"].add(patient)
        per_fold[assignment[patient]]["rows"][task.classes[label]] += 1
    return {
        "folds": folds,
        "seed": seed,
        "task": task.name,
        "splits": list(TRAIN_VAL),
        "patients_in_two_folds": sum(n > 1 for n in seen.values()),
        "per_fold": [
            {
                "fold": f,
                "patients": len(per_fold[f]["patients"]),
                "rows": {c: per_fold[f]["rows"][c] for c in task.classes},
            }
            for f in range(folds)
        ],
        "patients": dict(sorted(assignment.items())),
    }

"""Patient-level splits: every image of a patient lands on one side.

An official split is kept where the source has one (CBIS-DDSM). Patients listed in a train
file of one abnormality type and a test file of the other go to test in full, so the official
test set stays complete and no patient is on two sides. Sources without an official split
(mini-MIAS) get a test split carved by patient. A validation split is always carved from
train by patient, seeded and stratified by malignancy (scikit-learn's StratifiedGroupKFold).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import numpy as np

__all__ = ["SPLITS", "assign_splits"]

SPLITS = ("train", "val", "test")


def _carve(patients: dict[str, int], fraction: float, seed: int) -> set[str]:
    """About ``fraction`` of ``patients`` (patient -> label), stratified by label."""
    from sklearn.model_selection import StratifiedGroupKFold  # slow import, planning only

    if fraction <= 0 or len(patients) < 2:
        return set()
    names = sorted(patients)
    labels = np.array([patients[p] for p in names])
    folds = min(max(2, int(round(1 / fraction))), len(names))
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # Small datasets (a few malignant patients) cannot be stratified exactly; the split
        # is still by patient, which is what must hold.
        warnings.filterwarnings("ignore", message="The least populated class")
        _, chosen = next(splitter.split(np.zeros(len(names)), labels, np.array(names)))
    return {names[i] for i in chosen}


def assign_splits(
    rows: Iterable[tuple[str, str | None, int]],
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> tuple[dict[str, str], dict]:
    """Assign each patient to train, val or test.

    Args:
        rows: ``(patient, official split or None, label)`` per finding or image; a patient is
            labelled by its most severe label.
        val_fraction: share of the training patients that become validation patients.
        test_fraction: share of the patients without an official split that become test.

    Returns:
        (patient -> split, report) where the report counts the patients found in both
        official splits before resolution.
    """
    official: dict[str, set[str]] = {}
    label: dict[str, int] = {}
    for patient, split, value in rows:
        official.setdefault(patient, set())
        if split:
            official[patient].add(split)
        label[patient] = max(label.get(patient, 0), int(value))
    both = sorted(p for p, splits in official.items() if len(splits) > 1)
    split = {p: ("test" if "test" in s else "train") for p, s in official.items() if s}
    unassigned = {p: label[p] for p, s in official.items() if not s}
    for patient in unassigned:
        split[patient] = "train"
    for patient in _carve(unassigned, test_fraction, seed):
        split[patient] = "test"
    training = {p: label[p] for p, s in split.items() if s == "train"}
    for patient in _carve(training, val_fraction, seed + 1):
        split[patient] = "val"
    report = {
        "rule": "patients in both official splits go to test",
        "patients_in_official_train_and_test": len(both),
        "patients": {s: sum(v == s for v in split.values()) for s in SPLITS},
    }
    return split, report

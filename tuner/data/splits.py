"""Patient-level splits: every image of a patient lands on one side.

The official CBIS-DDSM split is kept; a validation split is carved from train by patient,
seeded and stratified by label. Patients listed in a train file of one abnormality type and a
test file of the other go to test in full, so the official test set stays complete and no
patient is on two sides.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from tuner.data.cbis_ddsm import Abnormality

__all__ = ["SPLITS", "assign_splits"]

SPLITS = ("train", "val", "test")


def assign_splits(
    abnormalities: Sequence[Abnormality], *, val_fraction: float, seed: int
) -> tuple[dict[str, str], dict]:
    """Assign each patient to train, val or test.

    Returns:
        (patient -> split, report) where the report counts the patients found in both
        official splits before resolution.
    """
    official: dict[str, set[str]] = {}
    for a in abnormalities:
        official.setdefault(a.patient_id, set()).add(a.official_split)
    both = sorted(p for p, splits in official.items() if len(splits) > 1)
    split = {p: ("test" if "test" in splits else "train") for p, splits in official.items()}

    train_rows = [a for a in abnormalities if split[a.patient_id] == "train"]
    if val_fraction > 0 and train_rows:
        n_folds = max(2, int(round(1 / val_fraction)))
        labels = np.array([a.pathology == "MALIGNANT" for a in train_rows], dtype=int)
        groups = np.array([a.patient_id for a in train_rows])
        n_folds = min(n_folds, len(set(groups)))
        folds = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        _, val_index = next(folds.split(np.zeros(len(labels)), labels, groups))
        for patient in set(groups[val_index]):
            split[patient] = "val"

    report = {
        "rule": "patients in both official splits go to test",
        "patients_in_official_train_and_test": len(both),
        "patients": {s: sum(v == s for v in split.values()) for s in SPLITS},
    }
    return split, report

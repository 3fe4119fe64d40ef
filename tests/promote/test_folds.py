"""Cross-validation folds by patient, read from the prepared shards."""

import pytest

from tuner.data.stream import TileStream, load_manifest
from tuner.data.tasks import get_task
from tuner.errors import UserError
from tuner.promote.folds import fold_assignment

TASK = get_task("lesion_vs_tissue")
KIND = [("roi", 48, "none")]


def _patients(prepared, manifest, split):
    stream = TileStream(str(prepared), manifest, view="roi", size=48, split=split, task=TASK)
    return {r["patient_id"] for r in stream.context(["patient_id"])}


def test_folds_hold_each_train_val_patient_once_and_no_test_patient(prepared):
    manifest = load_manifest(str(prepared))
    folds = fold_assignment(str(prepared), manifest, TASK, KIND, folds=3, seed=5)
    train_val = _patients(prepared, manifest, ("train", "val"))
    test = _patients(prepared, manifest, "test")
    assert set(folds["patients"]) == train_val
    assert not set(folds["patients"]) & test
    assert folds["patients_in_two_folds"] == 0
    assert sorted(set(folds["patients"].values())) == [0, 1, 2]
    # Stratified: every fold holds out rows of both classes, about a third of each.
    totals = {c: sum(f["rows"][c] for f in folds["per_fold"]) for c in TASK.classes}
    for fold in folds["per_fold"]:
        for c in TASK.classes:
            assert 0.15 * totals[c] < fold["rows"][c] < 0.5 * totals[c], folds["per_fold"]
    assert sum(f["patients"] for f in folds["per_fold"]) == len(train_val)
    # Seeded: the same seed gives the same folds, another seed others.
    again = fold_assignment(str(prepared), manifest, TASK, KIND, folds=3, seed=5)
    assert again["patients"] == folds["patients"]
    other = fold_assignment(str(prepared), manifest, TASK, KIND, folds=3, seed=6)
    assert other["patients"] != folds["patients"]


def test_too_many_folds_or_too_few_is_one_line(prepared):
    manifest = load_manifest(str(prepared))
    patients = len(_patients(prepared, manifest, ("train", "val")))
    with pytest.raises(UserError, match=r"folds \d+ > the \d+ train\+val patients with a"):
        fold_assignment(str(prepared), manifest, TASK, KIND, folds=patients + 1, seed=0)
    with pytest.raises(UserError, match="at least 2 folds"):
        fold_assignment(str(prepared), manifest, TASK, KIND, folds=1, seed=0)

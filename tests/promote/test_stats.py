"""The promotion's statistics against scikit-learn and known answers."""

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from tuner.promote import stats
from tuner.training.checkpoint import temper


def _binary(n=400, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    score = np.clip(0.5 + (labels - 0.5) * 0.4 + rng.normal(0, 0.25, n), 0.01, 0.99)
    return labels, np.stack([1 - score, score], axis=1)


def test_auc_is_sklearns_and_nan_with_one_class():
    labels, p = _binary()
    assert stats.auc(labels, p) == pytest.approx(roc_auc_score(labels, p[:, 1]))
    assert math.isnan(stats.auc(np.ones(5, int), p[:5]))


def test_patient_bootstrap_resamples_patients_not_rows():
    labels, p = _binary(300)
    patients = [f"P{i // 3}" for i in range(300)]  # 100 patients, 3 rows each
    groups = stats.patient_groups(patients)
    assert len(groups) == 100 and all(len(g) == 3 for g in groups)
    seen = []

    def statistic(rows):
        seen.append(len(rows))
        return stats.auc(labels[rows], p[rows])

    low, high = stats.patient_bootstrap(statistic, groups, resamples=200, seed=1)
    assert set(seen) == {300}  # whole patients: always 100 x 3 rows
    assert low < stats.auc(labels, p) < high
    # Same seed, same interval.
    assert stats.patient_bootstrap(statistic, groups, resamples=200, seed=1) == (low, high)


def test_fit_temperature_undoes_a_known_sharpening():
    rng = np.random.default_rng(2)
    truth = rng.uniform(0.05, 0.95, 5000)
    labels = (rng.uniform(size=5000) < truth).astype(int)
    calibrated = np.stack([1 - truth, truth], axis=1)
    overconfident = temper(calibrated, 0.5)  # logits doubled
    fitted = stats.fit_temperature(labels, overconfident)
    assert fitted == pytest.approx(2.0, rel=0.1)
    assert stats.ece(labels, temper(overconfident, fitted)) < stats.ece(labels, overconfident)
    assert stats.brier(labels, temper(overconfident, fitted)) < stats.brier(labels, overconfident)


def test_subgroup_flags_a_slice_wholly_below_the_overall_auc():
    rng = np.random.default_rng(3)
    rows, labels, scores = [], [], []
    for i in range(600):
        density = 1 + i % 4
        label = int(rng.integers(0, 2))
        noise = 0.8 if density == 4 else 0.1  # density 4: near chance
        scores.append(np.clip(label + rng.normal(0, noise), -3, 4))
        labels.append(label)
        rows.append(
            {
                "patient_id": f"P{i // 2}",
                "breast_density": density,
                "abnormality_type": "mass",
                "subtlety": 3,
                "view": "CC" if i % 2 else "MLO",
                "laterality": "LEFT",
            }
        )
    s = 1 / (1 + np.exp(-np.array(scores)))
    table = stats.subgroup_table(
        rows, np.array(labels), np.stack([1 - s, s], 1), threshold=0.5, resamples=200
    )
    density = table["slices"]["breast_density"]
    assert density["4"]["flagged"] and not density["1"]["flagged"]
    assert density["4"]["rows"] == 150 and density["4"]["patients"] == 150
    assert set(table["slices"]) == set(stats.SUBGROUPS)
    low, high = density["4"]["roc_auc_95"]
    assert low <= density["4"]["roc_auc"] <= high < table["overall"]["roc_auc"]

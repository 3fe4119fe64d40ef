"""The statistics of a promotion: AUC with patient-bootstrap intervals (rows of one patient
are not independent, so patients are resampled with all their rows), temperature scaling,
calibration error, and subgroup tables."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
from scipy.stats import rankdata

__all__ = [
    "auc",
    "patient_groups",
    "patient_bootstrap",
    "fit_temperature",
    "ece",
    "brier",
    "SUBGROUPS",
    "subgroup_table",
]


def auc(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """ROC AUC: two classes, of the positive class (the Mann-Whitney statistic, fast enough
    for thousands of bootstrap resamples); more classes, scikit-learn's macro one-vs-rest.
    NaN when a class is missing."""
    labels = np.asarray(labels).astype(int)
    probabilities = np.asarray(probabilities)
    if probabilities.shape[1] > 2:
        from sklearn.metrics import roc_auc_score

        classes = np.arange(probabilities.shape[1])
        try:
            return float(roc_auc_score(labels, probabilities, multi_class="ovr", labels=classes))
        except ValueError:
            return math.nan
    positive = labels == 1
    n1, n0 = int(positive.sum()), int((~positive).sum())
    if not n1 or not n0:
        return math.nan
    ranks = rankdata(probabilities[:, 1])
    return float((ranks[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def patient_groups(patients) -> list[np.ndarray]:
    """Row indices of each patient (sorted by patient id, so resampling is reproducible)."""
    rows: dict = defaultdict(list)
    for i, patient in enumerate(patients):
        rows[patient].append(i)
    return [np.array(rows[p]) for p in sorted(rows)]


def patient_bootstrap(
    statistic,
    groups: list[np.ndarray],
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of ``statistic(row_indices)`` over resamples of patients (with
    replacement, each bringing all its rows). Resamples where the statistic is undefined
    (NaN: one class only) are left out; (NaN, NaN) when none is defined."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        chosen = rng.integers(0, len(groups), len(groups))
        value = statistic(np.concatenate([groups[i] for i in chosen]))
        if not math.isnan(value):
            values.append(value)
    if not values:
        return (math.nan, math.nan)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return (float(low), float(high))


def _nll(labels: np.ndarray, probabilities: np.ndarray, temperature: float) -> float:
    from tuner.training.checkpoint import temper

    p = temper(probabilities, temperature)[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(p, 1e-12, 1.0)).mean())


def fit_temperature(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """The temperature T minimising the negative log-likelihood of softmax(log p / T)
    (Guo et al. 2017), searched over log T in [-3, 3] (scipy's bounded Brent)."""
    from scipy.optimize import minimize_scalar

    labels = np.asarray(labels).astype(int)
    result = minimize_scalar(
        lambda log_t: _nll(labels, probabilities, math.exp(log_t)),
        bounds=(-3.0, 3.0),
        method="bounded",
    )
    return float(math.exp(result.x))


def ece(labels: np.ndarray, probabilities: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error of the predicted class's confidence, over ``bins`` equal
    bins of confidence."""
    labels = np.asarray(labels).astype(int)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    total = 0.0
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(total)


def brier(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Brier score: of the positive class for two classes (scikit-learn's), else the mean
    squared distance to the one-hot label."""
    labels = np.asarray(labels).astype(int)
    if probabilities.shape[1] == 2:
        return float(np.mean((probabilities[:, 1] - labels) ** 2))
    onehot = np.eye(probabilities.shape[1])[labels]
    return float(np.mean(np.sum((probabilities - onehot) ** 2, axis=1)))


# Row context -> subgroup: the slices a radiology team asks about.
SUBGROUPS = ("breast_density", "abnormality_type", "subtlety", "view", "laterality")


def subgroup_table(
    rows: list[dict],
    labels: np.ndarray,
    probabilities: np.ndarray,
    *,
    threshold: float | None,
    resamples: int = 1000,
    seed: int = 0,
) -> dict:
    """AUC with patient-bootstrap intervals, n (rows, patients, positives) and, for two
    classes, recall and specificity at ``threshold``, overall and per value of each of
    :data:`SUBGROUPS`. A slice whose AUC interval lies wholly below the overall AUC is
    ``flagged``."""
    labels = np.asarray(labels).astype(int)

    def figures(index: np.ndarray) -> dict:
        y, p = labels[index], probabilities[index]
        patients = [rows[i]["patient_id"] for i in index]
        groups = patient_groups(patients)
        entry = {
            "rows": len(index),
            "patients": len(groups),
            "positives": int((y == 1).sum()) if p.shape[1] == 2 else None,
            "roc_auc": auc(y, p),
        }
        entry["roc_auc_95"] = list(
            patient_bootstrap(lambda i: auc(y[i], p[i]), groups, resamples=resamples, seed=seed)
        )
        if threshold is not None and p.shape[1] == 2:
            predicted = p[:, 1] >= threshold
            positives, negatives = y == 1, y == 0
            entry["recall"] = float(predicted[positives].mean()) if positives.any() else None
            entry["specificity"] = (
                float((~predicted[negatives]).mean()) if negatives.any() else None
            )
        return entry

    overall = figures(np.arange(len(rows)))
    table = {"overall": overall, "slices": {}}
    for column in SUBGROUPS:
        values: dict = defaultdict(list)
        for i, row in enumerate(rows):
            values[row.get(column)].append(i)
        slices = {}
        for value, index in sorted(values.items(), key=lambda kv: str(kv[0])):
            entry = figures(np.array(index))
            high = entry["roc_auc_95"][1]
            entry["flagged"] = bool(
                not math.isnan(high)
                and not math.isnan(overall["roc_auc"])
                and high < overall["roc_auc"]
            )
            slices[str(value)] = entry
        table["slices"][column] = slices
    return table

"""Classification metrics, computed by scikit-learn, and how two values of a search metric
compare."""

from __future__ import annotations

import math

import numpy as np
from sklearn import metrics as skm

__all__ = ["binary_metrics", "classification_metrics", "is_missing", "is_better", "best_first"]


def binary_metrics(labels: np.ndarray, probabilities: np.ndarray, threshold: float = 0.5) -> dict:
    """Accuracy, precision, recall (sensitivity), specificity, F1 and ROC AUC.

    Args:
        labels: 0/1 ground truth.
        probabilities: predicted probability of class 1.

    ROC AUC is NaN when only one class is present; a model that predicts one class for
    everything shows as recall 0 or specificity 0.
    """
    labels = np.asarray(labels).astype(int)
    predicted = (np.asarray(probabilities) >= threshold).astype(int)
    both = len(np.unique(labels)) == 2
    return {
        "accuracy": float(skm.accuracy_score(labels, predicted)),
        "precision": float(skm.precision_score(labels, predicted, zero_division=0)),
        "recall": float(skm.recall_score(labels, predicted, zero_division=0)),
        "specificity": float(skm.recall_score(labels, predicted, pos_label=0, zero_division=0)),
        "f1": float(skm.f1_score(labels, predicted, zero_division=0)),
        "roc_auc": float(skm.roc_auc_score(labels, probabilities)) if both else math.nan,
    }


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict:
    """The metrics of :func:`binary_metrics` for two classes (``probabilities`` of shape
    (N, 2)); for more classes, macro averages over the classes (one-vs-rest ROC AUC,
    specificity per class from the confusion matrices)."""
    probabilities = np.asarray(probabilities)
    if probabilities.shape[1] == 2:
        return binary_metrics(labels, probabilities[:, 1])
    labels = np.asarray(labels).astype(int)
    classes = np.arange(probabilities.shape[1])
    predicted = probabilities.argmax(axis=1)
    matrices = skm.multilabel_confusion_matrix(labels, predicted, labels=classes)
    specificity = [tn / (tn + fp) if tn + fp else 0.0 for (tn, fp), _ in matrices]
    try:
        auc = float(skm.roc_auc_score(labels, probabilities, multi_class="ovr", labels=classes))
    except ValueError:  # a class missing from labels
        auc = math.nan
    average = dict(average="macro", labels=classes, zero_division=0)
    return {
        "accuracy": float(skm.accuracy_score(labels, predicted)),
        "precision": float(skm.precision_score(labels, predicted, **average)),
        "recall": float(skm.recall_score(labels, predicted, **average)),
        "specificity": float(np.mean(specificity)),
        "f1": float(skm.f1_score(labels, predicted, **average)),
        "roc_auc": auc,
    }


def is_missing(value) -> bool:
    """No value: None or NaN (a trial that has not reported the metric, or diverged)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def is_better(a, b, mode: str) -> bool:
    """Whether metric value ``a`` beats ``b`` under ``mode`` ("max" or "min"); a missing
    value never wins."""
    if is_missing(a):
        return False
    return is_missing(b) or (a > b if mode == "max" else a < b)


def best_first(value, mode: str) -> tuple[bool, float]:
    """Sort key that puts the best metric value first under ``mode`` and missing ones last."""
    if is_missing(value):
        return (True, 0.0)
    return (False, -value if mode == "max" else value)

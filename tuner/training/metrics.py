"""Binary classification metrics, computed by scikit-learn."""

from __future__ import annotations

import math

import numpy as np
from sklearn import metrics as skm

__all__ = ["binary_metrics"]


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

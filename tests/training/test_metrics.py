import math

import numpy as np
import pytest

from tuner.training.metrics import binary_metrics


def test_metrics_on_a_known_case():
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 0])
    probs = np.array([0.1, 0.4, 0.6, 0.8, 0.7, 0.3, 0.9, 0.2])
    m = binary_metrics(labels, probs)
    # predicted: 0 0 1 1 1 0 1 0 -> TP 3, FP 1, TN 3, FN 1
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["recall"] == pytest.approx(3 / 4)
    assert m["specificity"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(3 / 4)
    # 16 positive/negative pairs, 14 ranked correctly.
    assert m["roc_auc"] == pytest.approx(14 / 16)


def test_one_class_for_everything_is_visible():
    labels = np.array([0, 1, 0, 1])
    m = binary_metrics(labels, np.zeros(4))
    assert m["recall"] == 0.0 and m["specificity"] == 1.0
    m = binary_metrics(labels, np.ones(4))
    assert m["recall"] == 1.0 and m["specificity"] == 0.0
    assert math.isnan(binary_metrics(np.zeros(3), np.array([0.1, 0.2, 0.3]))["roc_auc"])

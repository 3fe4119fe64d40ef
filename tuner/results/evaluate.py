"""Evaluate checkpoints on a prepared split: probabilities per image, per breast, metrics with
bootstrap confidence intervals, a threshold table, and plots.

Probabilities come from each checkpoint's own view, size and enhancement; an ensemble
averages the probabilities of several checkpoints over the rows they share. Metrics are
scikit-learn's, intervals scipy's bootstrap, plots scikit-learn's displays on matplotlib.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch

from tuner import storage
from tuner.data import shards
from tuner.data.stream import load_manifest, split_entry
from tuner.data.tasks import get_task
from tuner.errors import UserError
from tuner.training.checkpoint import load_checkpoint
from tuner.training.metrics import binary_metrics, classification_metrics

__all__ = [
    "Predictions",
    "predict_split",
    "ensemble",
    "per_breast",
    "bootstrap_intervals",
    "threshold_table",
    "evaluate",
    "write_report",
    "Level",
    "Evaluation",
]

_CONTEXT = ("patient_id", "image_id", "abnormality_id", "view", "laterality", "variant", "lesion")


@dataclass
class Predictions:
    """Class probabilities of the rows of one split, with each row's context."""

    classes: list[str]
    rows: list[dict]  # patient_id, image_id, view, laterality, ..., label
    probabilities: np.ndarray  # (rows, classes)

    @property
    def labels(self) -> np.ndarray:
        return np.array([r["label"] for r in self.rows], dtype=int)

    def keys(self) -> list[tuple]:
        return [(r["image_id"], r["abnormality_id"], r["lesion"], r["variant"]) for r in self.rows]


@torch.no_grad()
def predict_split(
    checkpoint: str, data: str, split: str = "test", *, batch_size: int = 64
) -> Predictions:
    """Probabilities of one checkpoint for every row of ``split`` that its task labels.

    Raises:
        UserError: the dataset lacks the checkpoint's view/size/enhancement or the split.
    """
    model, meta, _ = load_checkpoint(checkpoint)
    config = meta["config"]
    task = get_task(config["task"])
    manifest = load_manifest(data)
    entry = split_entry(
        manifest, config["view"], config["input_size"], split, config.get("enhance", "none")
    )
    labels_and_context = list(dict.fromkeys([*task.columns, *_CONTEXT]))
    columns = ["image", "height", "width", *labels_and_context]
    rows, batches, pending = [], [], []

    def flush():
        if pending:
            tiles = torch.from_numpy(np.stack(pending))[:, None]
            batches.append(torch.softmax(model(tiles).float(), dim=1).numpy())
            pending.clear()

    root = storage.normalize(data)
    for shard in entry["shards"]:
        url = storage.join(root, shard["path"])
        table = shards.decode(io.BytesIO(storage.read_bytes(url)), columns=columns)
        tiles = shards.images(table)
        values = {c: table.column(c).to_pylist() for c in labels_and_context}
        for i, tile in enumerate(tiles):
            label = task.label(tuple(values[c][i] for c in task.columns))
            if label is None:
                continue
            rows.append({**{c: values[c][i] for c in _CONTEXT}, "label": label})
            pending.append(tile)
            if len(pending) == batch_size:
                flush()
    flush()
    if not rows:
        raise UserError(f"{data}: the {split} split has no rows for task {task.name}")
    return Predictions(list(task.classes), rows, np.concatenate(batches))


def ensemble(members: list[Predictions]) -> Predictions:
    """Average the probabilities of several checkpoints over the rows all of them scored."""
    if len(members) == 1:
        return members[0]
    if len({tuple(m.classes) for m in members}) != 1:
        raise UserError("an ensemble needs checkpoints of one task (the classes differ)")
    shared = set(members[0].keys())
    for member in members[1:]:
        shared &= set(member.keys())
    if not shared:
        raise UserError("the checkpoints of the ensemble share no rows of this split")
    first = members[0]
    order = [i for i, key in enumerate(first.keys()) if key in shared]
    keys = [first.keys()[i] for i in order]
    stacked = []
    for member in members:
        index = {key: i for i, key in enumerate(member.keys())}
        stacked.append(member.probabilities[[index[k] for k in keys]])
    return Predictions(first.classes, [first.rows[i] for i in order], np.mean(stacked, axis=0))


def per_breast(predictions: Predictions) -> Predictions:
    """One row per breast (patient and laterality): the mean probability over its images
    (CC and MLO) or tiles; the label is the worst (highest) label of the breast."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, row in enumerate(predictions.rows):
        groups[(row["patient_id"], row["laterality"])].append(i)
    rows, probabilities = [], []
    for (patient, side), members in sorted(groups.items()):
        rows.append(
            {
                "patient_id": patient,
                "laterality": side,
                "views": "+".join(sorted({predictions.rows[i]["view"] for i in members})),
                "images": len({predictions.rows[i]["image_id"] for i in members}),
                "label": max(predictions.rows[i]["label"] for i in members),
            }
        )
        probabilities.append(predictions.probabilities[members].mean(axis=0))
    return Predictions(predictions.classes, rows, np.array(probabilities))


def _metrics(labels: np.ndarray, probabilities: np.ndarray, threshold: float) -> dict:
    if probabilities.shape[1] == 2:
        return binary_metrics(labels, probabilities[:, 1], threshold=threshold)
    return classification_metrics(labels, probabilities)


def bootstrap_intervals(
    labels: np.ndarray,
    probabilities: np.ndarray,
    *,
    threshold: float = 0.5,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Percentile bootstrap intervals (scipy) of every metric, resampling rows."""
    from scipy.stats import bootstrap

    names = list(_metrics(labels, probabilities, threshold))

    def statistic(index):
        index = np.asarray(index, dtype=int)
        values = _metrics(labels[index], probabilities[index], threshold)
        return np.array([values[n] for n in names])

    result = bootstrap(
        (np.arange(len(labels)),),
        statistic,
        n_resamples=resamples,
        confidence_level=confidence,
        method="percentile",
        vectorized=False,
        rng=np.random.default_rng(seed),
    )
    low, high = result.confidence_interval
    return {n: [float(lo), float(hi)] for n, lo, hi in zip(names, low, high, strict=True)}


def threshold_table(
    labels: np.ndarray, positive: np.ndarray, *, target_recall: float = 0.9
) -> tuple[list[dict], dict]:
    """Metrics at thresholds 0.1 ... 0.9 and at the highest threshold whose recall reaches
    ``target_recall`` (from scikit-learn's ROC curve). Returns (table, the target row)."""
    from sklearn.metrics import roc_curve

    _, tpr, thresholds = roc_curve(labels, positive, drop_intermediate=False)
    reaching = [t for r, t in zip(tpr, thresholds, strict=True) if r >= target_recall]
    target = float(min(1.0, max(reaching))) if reaching else 0.0
    rows = []
    for threshold in sorted({*np.round(np.arange(0.1, 1.0, 0.1), 2).tolist(), target}):
        values = binary_metrics(labels, positive, threshold=threshold)
        rows.append({"threshold": float(threshold), **values, "target": threshold == target})
    return rows, next(r for r in rows if r["target"])


def evaluate(
    checkpoints: list[str],
    data: str,
    *,
    split: str = "test",
    target_recall: float = 0.9,
    resamples: int = 1000,
) -> dict:
    """Evaluate one checkpoint, or the ensemble of several, on ``split`` of ``data``.

    Returns:
        A JSON-able report: per-image and per-breast metrics with intervals, the confusion
        matrix, the threshold table, and the predictions (under ``"_predictions"``).
    """
    from sklearn.metrics import confusion_matrix

    members = [predict_split(c, data, split) for c in checkpoints]
    images = ensemble(members)
    binary = len(images.classes) == 2
    report: dict = {
        "checkpoints": checkpoints,
        "data": storage.normalize(data),
        "split": split,
        "classes": images.classes,
        "rows": len(images.rows),
    }
    levels = {"per_image": images}
    if binary:
        levels["per_breast"] = per_breast(images)
    for level, predictions in levels.items():
        labels, probabilities = predictions.labels, predictions.probabilities
        entry = {
            "rows": len(labels),
            "metrics": _metrics(labels, probabilities, 0.5),
            "intervals_95": bootstrap_intervals(labels, probabilities, resamples=resamples),
            "confusion_matrix": confusion_matrix(
                labels,
                (probabilities[:, 1] >= 0.5).astype(int) if binary else probabilities.argmax(1),
                labels=list(range(len(images.classes))),
            ).tolist(),
        }
        if binary and len(np.unique(labels)) == 2:
            table, target = threshold_table(
                labels, probabilities[:, 1], target_recall=target_recall
            )
            entry["thresholds"] = table
            entry["target_recall"] = {"recall_goal": target_recall, **target}
        report[level] = entry
    report["_predictions"] = levels
    return report


@dataclass(frozen=True)
class Level:
    """Figures at one level (per image, or per breast)."""

    rows: int
    metrics: dict[str, float]  # at threshold 0.5 (two classes) or the most probable class
    intervals_95: dict[str, tuple[float, float]]  # bootstrap, per metric
    confusion_matrix: list[list[int]]
    thresholds: list[dict] | None = None  # the threshold table (two classes)
    target_recall: dict | None = None  # the threshold reaching the recall goal, and its cost

    @classmethod
    def from_entry(cls, entry: dict) -> Level:
        return cls(
            rows=entry["rows"],
            metrics=entry["metrics"],
            intervals_95={k: tuple(v) for k, v in entry["intervals_95"].items()},
            confusion_matrix=entry["confusion_matrix"],
            thresholds=entry.get("thresholds"),
            target_recall=entry.get("target_recall"),
        )


@dataclass(frozen=True)
class Evaluation:
    """What :func:`tuner.evaluate` returns: the figures, and the files written."""

    checkpoints: list[str]
    data: str
    split: str
    classes: list[str]
    rows: int
    per_image: Level
    per_breast: Level | None
    written: list[str]
    report: dict = field(repr=False, default_factory=dict)  # report.json's content

    @classmethod
    def from_report(cls, report: dict, written: list[str]) -> Evaluation:
        plain = json_safe({k: v for k, v in report.items() if not k.startswith("_")})
        return cls(
            checkpoints=list(report["checkpoints"]),
            data=report["data"],
            split=report["split"],
            classes=list(report["classes"]),
            rows=report["rows"],
            per_image=Level.from_entry(report["per_image"]),
            per_breast=Level.from_entry(report["per_breast"]) if "per_breast" in report else None,
            written=list(written),
            report=plain,
        )

    def to_dict(self) -> dict:
        """The JSON report (as ``report.json``)."""
        return self.report


def json_safe(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def write_report(report: dict, folder: str) -> list[str]:
    """Write the report into a new local folder: ``report.json``, ``predictions.csv``,
    ``per_breast.csv``, ``thresholds.csv`` and PNG plots (confusion matrix, ROC, PR and
    calibration). Returns the files written.

    Raises:
        UserError: ``folder`` already holds files (nothing is overwritten).
    """
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import CalibrationDisplay
    from sklearn.metrics import (
        ConfusionMatrixDisplay,
        PrecisionRecallDisplay,
        RocCurveDisplay,
    )

    if os.path.isdir(folder) and os.listdir(folder):
        raise UserError(f"{folder} is not empty; choose a new folder for --report")
    os.makedirs(folder, exist_ok=True)
    written = []

    def path(name):
        written.append(os.path.join(folder, name))
        return written[-1]

    plain = {k: v for k, v in report.items() if not k.startswith("_")}
    with open(path("report.json"), "w") as f:
        json.dump(json_safe(plain), f, indent=2)
    levels = report["_predictions"]
    classes = report["classes"]
    for level, name in (("per_image", "predictions.csv"), ("per_breast", "per_breast.csv")):
        if level not in levels:
            continue
        predictions = levels[level]
        with open(path(name), "w", newline="") as f:
            writer = csv.writer(f)
            context = list(predictions.rows[0])
            writer.writerow([*context, *(f"p_{c}" for c in classes)])
            for row, p in zip(predictions.rows, predictions.probabilities, strict=True):
                writer.writerow([*(row[c] for c in context), *(f"{v:.6f}" for v in p)])
    if "thresholds" in report["per_image"]:
        with open(path("thresholds.csv"), "w", newline="") as f:
            table = report["per_image"]["thresholds"]
            writer = csv.DictWriter(f, fieldnames=list(table[0]))
            writer.writeheader()
            writer.writerows(table)

    images = levels["per_image"]
    labels, probabilities = images.labels, images.probabilities
    figure, axis = plt.subplots(figsize=(4.5, 4))
    ConfusionMatrixDisplay(
        np.array(report["per_image"]["confusion_matrix"]), display_labels=classes
    ).plot(ax=axis, colorbar=False)
    figure.tight_layout()
    figure.savefig(path("confusion_matrix.png"), dpi=120)
    plt.close(figure)
    if len(classes) == 2 and len(np.unique(labels)) == 2:
        positive = probabilities[:, 1]
        for name, display in (
            ("roc.png", RocCurveDisplay),
            ("pr.png", PrecisionRecallDisplay),
            ("calibration.png", CalibrationDisplay),
        ):
            figure, axis = plt.subplots(figsize=(4.5, 4))
            options = {"n_bins": 10} if display is CalibrationDisplay else {}
            display.from_predictions(labels, positive, ax=axis, name="model", **options)
            figure.tight_layout()
            figure.savefig(path(name), dpi=120)
            plt.close(figure)
    return written

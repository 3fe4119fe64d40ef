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
import logging
import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch

from tuner import storage
from tuner.data import shards
from tuner.data.pairs import PairStream, per_breast_probabilities
from tuner.data.sources import mixed_editions
from tuner.data.stream import load_manifest, shard_url, split_entry
from tuner.data.tasks import get_task
from tuner.errors import UserError
from tuner.models.classifier import class_probabilities
from tuner.training.checkpoint import ModelSet, load_checkpoint, open_model
from tuner.training.metrics import binary_metrics, classification_metrics

logger = logging.getLogger("tuner")

__all__ = [
    "Predictions",
    "predict_split",
    "ensemble",
    "per_breast",
    "bootstrap_intervals",
    "threshold_table",
    "evaluate",
    "write_report",
    "curve_figures",
    "Level",
    "Evaluation",
]

_CONTEXT = (
    "patient_id",
    "image_id",
    "abnormality_id",
    "view",
    "laterality",
    "variant",
    "lesion",
    "breast_density",
    "abnormality_type",
    "subtlety",
)


@dataclass
class Predictions:
    """Class probabilities of the rows of one split, with each row's context."""

    classes: list[str]
    rows: list[dict]  # patient_id, image_id, view, laterality, ..., label
    probabilities: np.ndarray  # (rows, classes)
    # "two_view": every image row carries its breast's probability (the model's own, per
    # breast); "single": the image's own; "single+two_view" for an ensemble of both kinds
    fusion: str = "single"

    @property
    def labels(self) -> np.ndarray:
        return np.array([r["label"] for r in self.rows], dtype=int)

    def keys(self) -> list[tuple]:
        return [(r["image_id"], r["abnormality_id"], r["lesion"], r["variant"]) for r in self.rows]


@torch.no_grad()
def predict_split(
    checkpoint: str,
    data: str,
    split: str = "test",
    *,
    batch_size: int = 64,
    tta: bool = False,
    allow_mixed_editions: bool = False,
) -> Predictions:
    """Probabilities of one checkpoint for every row of ``split`` that its task labels
    (with ``tta``, averaged over the four flips of each tile).

    Raises:
        UserError: the dataset lacks the checkpoint's view/size/enhancement or the split,
            or comes from another edition of the collection the checkpoint was trained on
            (8-bit JPEG vs 16-bit DICOM) and ``allow_mixed_editions`` is not set.
    """
    model, meta, _ = load_checkpoint(checkpoint)
    config = meta["config"]
    task = get_task(config["task"])
    manifest = load_manifest(data)
    trained = meta.get("dataset", {})
    if "source" not in trained and trained.get("id") != manifest.get("id"):
        logger.warning(
            "warning: %s does not record which source edition it was trained on (made "
            "before mammotune recorded it), so it cannot be checked against %s's (%s)",
            checkpoint,
            data,
            manifest.get("source", {}).get("kind", "unknown"),
        )
    mixed = mixed_editions(trained.get("source"), manifest.get("source"))
    if mixed and not allow_mixed_editions:
        raise UserError(
            f"{data}: the model was trained on {mixed[0]} and these shards are from "
            f"{mixed[1]}; evaluate on a dataset prepared from the same edition, or pass "
            "--allow-mixed-editions (allow_mixed_editions=True) to compare across them"
        )
    entry = split_entry(
        manifest, config["view"], config["input_size"], split, config.get("enhance", "none")
    )
    if config.get("fusion", "single") == "two_view":
        return _predict_breasts(model, config, task, data, manifest, split, batch_size, tta)
    labels_and_context = list(dict.fromkeys([*task.columns, *_CONTEXT]))
    columns = ["image", "height", "width", *labels_and_context]
    rows, batches, pending = [], [], []

    def flush():
        if pending:
            tiles = torch.from_numpy(np.stack(pending))[:, None]
            batches.append(class_probabilities(model, tiles, tta=tta).numpy())
            pending.clear()

    root = storage.normalize(data)
    for shard in entry["shards"]:
        url = shard_url(root, shard)
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


def _predict_breasts(model, config, task, data, manifest, split, batch_size, tta) -> Predictions:
    """A two-view model's probabilities, natively per breast (the mean over the breast's
    CC + MLO pairs), given to every image row of the breast: per-breast figures are the
    model's own, and the rows stay images, as single-view models' (ensembles, subgroups)."""
    from torch.utils.data import DataLoader

    stream = PairStream(
        data,
        manifest,
        size=config["input_size"],
        split=split,
        task=task,
        enhance=config.get("enhance", "none"),
    )
    if not stream.pairs:
        raise UserError(f"{data}: the {split} split has no rows for task {task.name}")
    pairs = np.concatenate(
        [
            class_probabilities(model, tiles, tta=tta).numpy()
            for tiles, _ in DataLoader(stream, batch_size=batch_size, num_workers=0)
        ]
    )
    breasts, _, probabilities = per_breast_probabilities(stream.context(["image_id"]), pairs)
    index = {breast: i for i, breast in enumerate(breasts)}
    images = stream.image_rows(_CONTEXT)
    rows = [{k: v for k, v in r.items() if k != "breast"} for r in images]
    return Predictions(
        list(task.classes), rows, probabilities[[index[r["breast"]] for r in images]], "two_view"
    )


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
    fusion = "+".join(sorted({m.fusion for m in members}))
    return Predictions(
        first.classes, [first.rows[i] for i in order], np.mean(stacked, axis=0), fusion
    )


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
    return Predictions(predictions.classes, rows, np.array(probabilities), predictions.fusion)


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
    groups=None,
) -> dict[str, list[float]]:
    """Percentile bootstrap intervals (scipy) of every metric, resampling rows, or with
    ``groups`` (a patient id per row) resampling patients with all their rows, as the
    rows of one patient are not independent."""
    from scipy.stats import bootstrap

    names = list(_metrics(labels, probabilities, threshold))
    members = _group_rows(groups, len(labels))

    def statistic(index):
        index = np.concatenate([members[i] for i in np.asarray(index, dtype=int)])
        values = _metrics(labels[index], probabilities[index], threshold)
        return np.array([values[n] for n in names])

    import warnings

    from scipy.stats import DegenerateDataWarning

    with warnings.catch_warnings():
        # A metric that is the same in every resample (specificity 1.0) is a point interval.
        warnings.simplefilter("ignore", DegenerateDataWarning)
        result = bootstrap(
            (np.arange(len(members)),),
            statistic,
            n_resamples=resamples,
            confidence_level=confidence,
            method="percentile",
            vectorized=False,
            rng=np.random.default_rng(seed),
        )
    low, high = result.confidence_interval
    return {n: [float(lo), float(hi)] for n, lo, hi in zip(names, low, high, strict=True)}


def _group_rows(groups, n: int) -> list[np.ndarray]:
    """Row indices per group (one group per row when ``groups`` is None)."""
    if groups is None:
        return [np.array([i]) for i in range(n)]
    index: dict = defaultdict(list)
    for i, group in enumerate(groups):
        index[group].append(i)
    return [np.array(rows) for _, rows in sorted(index.items())]


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
    model: str | list[str] | ModelSet,
    data: str,
    *,
    split: str = "test",
    target_recall: float = 0.9,
    resamples: int = 1000,
    threshold: float | None = None,
    what: str = "evaluate",
    key: str | None = None,
    keep=None,
    allow_mixed_editions: bool = False,
) -> dict:
    """Evaluate a checkpoint, the ensemble of several, or a promotion's final model, on
    ``split`` of ``data``. This is the one door to the test split: a look at it is recorded
    in the model's experiment's test ledger (:mod:`tuner.results.ledger`).

    Args:
        threshold: the operating threshold of two-class metrics (default: the final
            model's, fixed on out-of-fold predictions, else 0.5).
        what: what is looking, for the ledger ("evaluate", "promote p1").
        key, keep: for a caller that keeps its own record of the look (a promotion): a key
            stored with the ledger's entry, and a function of the report whose result is
            stored with it, in the same write.
        allow_mixed_editions: evaluate a model trained on one edition of a collection (the
            CBIS-DDSM DICOM or JPEG edition) on the other's shards.

    Returns:
        A JSON-able report: per-image and per-breast metrics at the threshold with patient
        bootstrap intervals, the confusion matrix, the threshold table, the ledger entry
        (``test_look``) and the predictions (under ``"_predictions"``).
    """
    from sklearn.metrics import confusion_matrix

    from tuner.results.ledger import record_look

    models = model if isinstance(model, ModelSet) else None
    if models is None:
        listed = [model] if isinstance(model, str) else list(model)
        models = open_model(listed[0]) if len(listed) == 1 else ModelSet("", listed)
    members = [
        predict_split(c, data, split, tta=models.tta, allow_mixed_editions=allow_mixed_editions)
        for c in models.members
    ]
    images = ensemble(members)
    images = Predictions(
        images.classes, images.rows, models.calibrate(images.probabilities), images.fusion
    )
    binary = len(images.classes) == 2
    if threshold is None:
        threshold = models.threshold if models.threshold is not None else 0.5
    report: dict = {
        "checkpoints": models.members,
        "model": models.url or None,
        "data": storage.normalize(data),
        "split": split,
        "classes": images.classes,
        "rows": len(images.rows),
        "threshold": threshold if binary else None,
        "tta": models.tta,
        # two_view: per breast is the model's own level; per-image rows carry their breast's
        "fusion": images.fusion,
        "temperature": models.temperature,
    }
    levels = {"per_image": images}
    if binary:
        levels["per_breast"] = per_breast(images)
    for level, predictions in levels.items():
        labels, probabilities = predictions.labels, predictions.probabilities
        patients = [r["patient_id"] for r in predictions.rows]
        entry = {
            "rows": len(labels),
            "patients": len(set(patients)),
            "metrics": _metrics(labels, probabilities, threshold),
            "intervals_95": bootstrap_intervals(
                labels, probabilities, threshold=threshold, resamples=resamples, groups=patients
            ),
            "confusion_matrix": confusion_matrix(
                labels,
                (probabilities[:, 1] >= threshold).astype(int)
                if binary
                else probabilities.argmax(1),
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
    if split == "test":
        # A two-view model's figures are its breasts': the ledger keeps those.
        level = "per_breast" if "two_view" in images.fusion and "per_breast" in report else None
        level = level or "per_image"
        look = {
            "what": what,
            "data": report["data"],
            "threshold": report["threshold"],
            "level": level,
            "metrics": json_safe(report[level]["metrics"]),
            "intervals_95": json_safe(report[level]["intervals_95"]),
        }
        if key is not None:
            look["key"] = key
        if keep is not None:
            look["report"] = keep(report)
        report["test_look"] = record_look([models.url] if models.url else models.members, look)
    return report


@dataclass(frozen=True)
class Level:
    """Figures at one level (per image, or per breast)."""

    rows: int
    metrics: dict[str, float]  # at the threshold (two classes) or the most probable class
    intervals_95: dict[str, tuple[float, float]]  # patient bootstrap, per metric
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
    threshold: float | None = None  # the operating threshold of the metrics (two classes)
    test_look: dict | None = None  # on the test split: {"ledger", "look", "looks_before"}
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
            threshold=report.get("threshold"),
            test_look=report.get("test_look"),
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
    from sklearn.metrics import ConfusionMatrixDisplay

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
    for name, figure in curve_figures(labels, probabilities, "model"):
        figure.tight_layout()
        figure.savefig(path(f"{name}.png"), dpi=120)
        plt.close(figure)
    return written


def curve_figures(labels: np.ndarray, probabilities: np.ndarray, name: str, size=(4.5, 4)):
    """ROC, precision-recall and calibration curves (scikit-learn's displays) of two-class
    probabilities, as ``[("roc" | "pr" | "calibration", matplotlib figure)]``; none when
    there are more classes or one label only."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import CalibrationDisplay
    from sklearn.metrics import PrecisionRecallDisplay, RocCurveDisplay

    if probabilities.shape[1] != 2 or len(np.unique(labels)) != 2:
        return []
    figures = []
    for kind, display in (
        ("roc", RocCurveDisplay),
        ("pr", PrecisionRecallDisplay),
        ("calibration", CalibrationDisplay),
    ):
        figure, axis = plt.subplots(figsize=size)
        options = {"n_bins": 10} if display is CalibrationDisplay else {}
        display.from_predictions(labels, probabilities[:, 1], ax=axis, name=name, **options)
        figures.append((kind, figure))
    return figures

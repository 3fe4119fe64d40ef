"""How results look on a terminal: the one presentation module the CLI and the quickstart
share. Each function takes a rich Console and a typed result of :mod:`tuner`'s API, and
prints; none computes anything a notebook user would need.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from tuner.api import Predictions, Pretrained
    from tuner.data.dataset import Dataset, Synthetic
    from tuner.promote.result import Promotion
    from tuner.results.evaluate import Evaluation
    from tuner.results.leaderboard import Leaderboard, Status

__all__ = [
    "consoles",
    "short",
    "print_json",
    "synthetic",
    "dataset",
    "leaderboard",
    "status",
    "evaluation",
    "predictions",
    "pretrained",
]

# The five published dimensions (and enhancement) are the leaderboard's columns; any other
# searched setting is in the best config below the table and in --json.
_COLUMNS = ("backbone", "class_weight", "dropout", "input_size", "transfer", "enhance", "fusion")


def consoles() -> tuple[Console, Console]:
    """(stdout, stderr) consoles. Piped or logged output (CI, files) gets room for the
    leaderboard instead of rich's 80 columns; markup off, so user text (paths, --set values
    such as backbone=[vgg19]) prints as given."""
    out = Console(highlight=False, markup=False, width=None if sys.stdout.isatty() else 200)
    err = Console(stderr=True, highlight=False, markup=False, soft_wrap=True)
    return out, err


def short(value) -> str:
    """A number as a table shows it (3 decimals, or 3 significant digits when tiny)."""
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-2 else f"{value:.3f}"
    return "-" if value is None else str(value)


def print_json(data) -> None:
    """Machine-readable output on stdout (``--json``)."""
    print(json.dumps(data, indent=2, default=str))


def synthetic(console: Console, result: Synthetic) -> None:
    verb = (
        "already there (same settings), nothing written"
        if result.reused
        else f"written in {result.seconds}s"
    )
    console.print(
        f"synthetic {result.format} at {result.url}: {result.patients} patients, "
        f"{result.images} images, {result.abnormalities} abnormalities "
        f"({result.malignant} malignant); {verb}"
    )


def dataset(console: Console, data: Dataset) -> None:
    if data.reused:
        console.print(f"{data.url} already holds this dataset (id {data.id}); nothing to do")
    else:
        console.print(f"prepared dataset {data.id} at {data.url} in {data.seconds}s")
    if data.edition:
        depth = f", {data.bit_depth}-bit" if data.bit_depth else ""
        console.print(f"source: {data.source_kind} ({data.edition} edition{depth})")
    table = Table("tiles", "split", "rows", "pathology", "lesion / tissue", "patients")
    for kind in data.tiles:
        for split, rows in kind.rows.items():
            counts = ", ".join(f"{k.lower()} {v}" for k, v in kind.pathology[split].items())
            lesion = kind.lesion[split]
            lesions = f"{lesion.get('lesion', 0)} / {lesion.get('tissue', 0)}"
            table.add_row(kind.key, split, str(rows), counts, lesions, str(data.patients[split]))
    console.print(table)
    leak = data.leakage
    console.print(
        f"patients in official train and test: {leak['patients_in_official_train_and_test']} "
        f"(resolved: {leak['rule']}); in two splits now: {leak['patients_in_two_splits']}"
    )
    if data.skipped:
        console.print(f"skipped inputs: {len(data.skipped)} (reasons in manifest.json), e.g.:")
        for item in data.skipped[:5]:
            console.print(f"  {item['item']}: {item['reason']}", soft_wrap=True)


_DEFAULTS = {"fusion": "single"}  # trials from before the setting existed


def leaderboard(console: Console, board: Leaderboard) -> None:
    metric = board.metric
    columns = [d for d in board.dimensions if d in _COLUMNS]
    others = [o["name"] for o in board.objectives[1:]]
    extra = ["pareto", *others] if board.multi_objective else []
    table = Table(
        "#",
        "trial",
        "status",
        "epochs",
        *columns,
        metric,
        *extra,
        "accuracy",
        "recall",
        "specificity",
        title=f"{board.experiment}: best epoch of each trial",
    )
    for rank, trial in enumerate(board.trials, 1):
        marks = ["*" if trial.pareto else ""] + [short(trial.metrics.get(n)) for n in others]
        table.add_row(
            str(rank),
            trial.trial_id,
            trial.status,
            str(trial.epochs),
            *(short(trial.config.get(d, _DEFAULTS.get(d))) for d in columns),
            short(trial.value),
            *(marks if board.multi_objective else []),
            short(trial.metrics.get("val_accuracy")),
            short(trial.metrics.get("val_recall")),
            short(trial.metrics.get("val_specificity")),
        )
    console.print(table)
    for trial in board.trials:
        if trial.error:
            console.print(f"trial {trial.trial_id} errored: {trial.error}", soft_wrap=True)
    if board.multi_objective:
        names = ", ".join(f"{o['name']} ({o['mode']})" for o in board.objectives)
        front = board.pareto
        console.print(f"Pareto front on {names}: {len(front)} trials (* above)")
        for trial in front:
            values = ", ".join(
                f"{o['name']} {short(trial.metrics.get(o['name']))}" for o in board.objectives
            )
            console.print(
                f"  {trial.trial_id}: {values}; {json.dumps(trial.config)}", soft_wrap=True
            )
    best = board.best
    if best is None:
        console.print("no trial has a checkpoint yet")
        return
    console.print(f"best trial {best.trial_id}: {metric} {short(best.value)}")
    console.print(f"  config: {json.dumps(best.config)}", soft_wrap=True)
    console.print(f"  checkpoint: {best.checkpoint}", soft_wrap=True)
    _promoted(console, board.promotion)


def _promoted(console: Console, promotion: dict | None) -> None:
    if promotion:
        console.print(promotion["summary"], soft_wrap=True)
        console.print(f"  final model: {promotion['final_model']}", soft_wrap=True)


def status(console: Console, summary: Status) -> None:
    console.print(
        f"{summary.experiment}: {summary.started_trials} of {summary.planned_trials} "
        f"trials started; {summary.finished} finished, {summary.running} running, "
        f"{summary.errored} errored; {summary.failures} failed attempts (a trial is "
        "retried from its last checkpoint up to --max-failures times)"
    )
    best = summary.best
    if best is not None:
        console.print(
            f"best so far: {summary.metric} {short(best.value)} (trial {best.trial_id}, "
            f"epoch {best.metrics.get('epoch')}) {json.dumps(best.config)}",
            soft_wrap=True,
        )
    else:
        console.print("no trial has a checkpoint yet")
    for trial_id, error in summary.errors.items():
        console.print(f"trial {trial_id} errored: {error}", soft_wrap=True)
    _promoted(console, summary.promotion)


def _flagged(console: Console, where: str, table: dict) -> None:
    """The subgroups whose AUC interval lies wholly below the overall AUC, if any."""
    flagged = [
        f"{column}={value}"
        for column, slices in table["slices"].items()
        for value, entry in slices.items()
        if entry["flagged"]
    ]
    if flagged:
        console.print(f"{where} subgroups below the overall AUC: {', '.join(flagged)}")


def promotion(console: Console, result: Promotion) -> None:
    """The candidates' cross-validation, the winner, its calibration and the test look."""
    data = result.data
    plan = data["plan"]
    table = Table(
        "rank",
        "trial",
        "search " + plan["metric"],
        "OOF AUC (mean of seeds)",
        "sd",
        "95% CI (patients)",
        "wins",
        title=f"promotion {result.id}: {len(data['candidates'])} candidates x "
        f"{plan['folds']} folds x {len(plan['seeds'])} seeds, ranked by the CI's lower bound",
    )
    for entry in result.ranking:
        if not entry["complete"]:
            table.add_row(
                str(entry["rank"]),
                entry["trial_id"],
                short(entry["search_value"]),
                "incomplete",
                "-",
                "-",
                "-",
            )
            continue
        low, high = entry["oof_auc_95"]
        table.add_row(
            str(entry["rank"]),
            entry["trial_id"],
            short(entry["search_value"]),
            short(entry["oof_auc_mean"]),
            short(entry["oof_auc_sd"]),
            f"{short(low)} - {short(high)}",
            f"{entry['wins_across_seeds']}/{len(plan['seeds'])}",
        )
    console.print(table)
    folds = data["folds"]
    sizes = ", ".join(str(f["patients"]) for f in folds["per_fold"])
    console.print(
        f"folds by patient: {folds['folds']} ({sizes} patients), "
        f"{folds['patients_in_two_folds']} patients in two folds, test never in a fold"
    )
    c = data["calibration"]
    line = (
        f"from OOF predictions only: temperature {c['temperature']:.3f} (ECE "
        f"{c['ece_before']:.3f} -> {c['ece_after']:.3f}, Brier {c['brier_before']:.3f} -> "
        f"{c['brier_after']:.3f})"
    )
    if result.threshold is not None:
        at = c["oof_at_threshold"]
        line += (
            f"; threshold {result.threshold:.3f} for recall >= {data['target_recall']} "
            f"(OOF recall {at['recall']:.3f}, specificity {at['specificity']:.3f})"
        )
    console.print(line, soft_wrap=True)
    _flagged(console, "OOF", data["oof_subgroups"])
    test = result.test
    if test:
        look = test.get("test_look") or {}
        # A two-view model scores breasts: its own level is the one to show.
        two_view = "two_view" in (test.get("fusion") or "") and "per_breast" in test
        level = "per_breast" if two_view else "per_image"
        unit = "breasts" if level == "per_breast" else "images"
        m, ci = test[level]["metrics"], test[level]["intervals_95"]
        parts = [
            f"{name} {short(m[name])} [{short(ci[name][0])}, {short(ci[name][1])}]"
            for name in ("roc_auc", "recall", "specificity")
            if name in m
        ]
        console.print(
            f"test (look {look.get('look', '?')}, {test[level]['rows']} {unit}, "
            f"{test[level]['patients']} patients): {', '.join(parts)}",
            soft_wrap=True,
        )
        _flagged(console, "test", test["subgroups"])
    else:
        console.print("no test split in this dataset: nothing was looked at")
    compute = data["compute"]
    if compute.get("ratio_to_search"):
        console.print(
            f"compute: {compute['trials']} trials, {compute['promotion_trial_seconds']:.0f} "
            f"trial-seconds ({compute['ratio_to_search']:.2f}x the search's)"
        )
    console.print(f"final model: {result.final_model}", soft_wrap=True)


def evaluation(console: Console, result: Evaluation) -> None:
    count = len(result.checkpoints)
    kind = f"ensemble of {count}" if count > 1 else "checkpoint"
    if result.report.get("model") and count > 1:
        kind = f"final model ({count} members)"
    at = f"; threshold {result.threshold:.3f}" if result.threshold is not None else ""
    console.print(f"{kind} on {result.split} of {result.data}: {result.rows} rows{at}")
    levels = ("per_image", "per_breast")
    if "two_view" in result.report.get("fusion", ""):
        # The model scores breasts: its own level first; image rows carry their breast's.
        levels = ("per_breast", "per_image")
        console.print(
            "two-view model: scored per breast (CC + MLO); each image row carries its "
            "breast's probability"
        )
    for name in levels:
        level = getattr(result, name)
        if level is None:
            continue
        title = f"{name} ({level.rows} rows; 95% CI by patient bootstrap)"
        table = Table("metric", "value", "95% CI", title=title)
        for metric, value in level.metrics.items():
            low, high = level.intervals_95[metric]
            table.add_row(metric, short(value), f"{short(low)} - {short(high)}")
        console.print(table)
        if level.target_recall:
            t = level.target_recall
            console.print(
                f"threshold {t['threshold']:.3f} reaches recall {t['recall']:.3f} "
                f"(goal {t['recall_goal']}): precision {t['precision']:.3f}, "
                f"specificity {t['specificity']:.3f}"
            )
    for path in result.written:
        console.print(f"wrote {path}", soft_wrap=True)


def predictions(console: Console, result: Predictions) -> None:
    for item in result.items:
        probabilities = ", ".join(f"{c} {p:.3f}" for c, p in item.probabilities.items())
        where = f" [roi: {item.roi}]" if item.roi else ""
        console.print(f"{item.file}: {item.predicted} ({probabilities}){where}", soft_wrap=True)
        if item.heatmap:
            empty = (
                f" (empty: no region raised the score of {item.predicted})"
                if item.heatmap_empty
                else ""
            )
            console.print(f"  Grad-CAM: {item.heatmap}{empty}", soft_wrap=True)
    if any(item.roi == "whole file" for item in result.items):
        console.print(
            "note: each file was taken to be the finding's tile; for the exact training "
            "preprocessing give the full mammogram with --roi-mask or --roi-box",
            soft_wrap=True,
        )


def pretrained(console: Console, models: list[Pretrained]) -> None:
    for model in models:
        console.print(
            f"{model.backbone} ({model.stage}): val AUC {model.metrics['val_roc_auc']:.3f} -> "
            f"{model.checkpoint}",
            soft_wrap=True,
        )


def report(console: Console, result) -> None:
    console.print(
        f"wrote {result.path} ({', '.join(result.sections)}; {result.trials} trials, "
        f"{result.figures} figures)",
        soft_wrap=True,
    )
    if result.model_card:
        console.print(f"wrote {result.model_card}", soft_wrap=True)
    for note in result.notes:
        console.print(f"note: {note}", soft_wrap=True)


def bundle(console: Console, result) -> None:
    meta = result.meta
    source = meta["source"]
    classes = ", ".join(meta["classes"])
    threshold = "" if meta.get("threshold") is None else f", threshold {meta['threshold']:.3f}"
    console.print(
        f"exported {source['kind']} {source['model']} ({meta['members']} member(s)) as "
        f"{meta['runtime']} to {result.url}",
        soft_wrap=True,
    )
    shape = "x".join("N" if d is None else str(d) for d in meta["input"]["shape"])
    console.print(
        f"input {meta['input']['name']} {shape} float32 0-255 -> {meta['output']['name']} "
        f"({classes}){threshold}; max |difference| to PyTorch "
        f"{meta['verified_max_abs_diff']:.1e}",
        soft_wrap=True,
    )
    console.print(f"files: {', '.join(meta['files'])}, bundle.json", soft_wrap=True)
    console.print(
        f"sha256 {result.sha256} (of bundle.json, which pins every file): keep it where the "
        "bundle's users can trust it; predict --expect-sha256 refuses any other bundle",
        soft_wrap=True,
    )

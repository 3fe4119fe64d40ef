"""One real search end to end: Ray Tune trials streaming real shards, OptunaSearch with a
SQLite study, ASHA, checkpoints in the experiment folder, then the leaderboard."""

import json
from pathlib import Path

import fsspec
import numpy as np
import optuna
import pytest
import torch
from torch.utils.data import DataLoader

from tests.conftest import TINY, lost_checkpoints, retention_errors, trial_rows
from tuner.cli import main
from tuner.data.stream import TileStream, load_manifest
from tuner.data.tasks import TASKS
from tuner.training.checkpoint import load_checkpoint
from tuner.training.metrics import binary_metrics


def _board(experiment, capsys):
    capsys.readouterr()
    assert main(["best", str(experiment), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_every_trial_reported_and_the_best_has_a_checkpoint(experiment, capsys):
    board = _board(experiment, capsys)
    assert board["metric"] == "val_roc_auc"
    assert len(board["trials"]) == 3
    assert all(t["status"] in ("done", "stopped") for t in board["trials"])
    assert {"backbone", "class_weight", "dropout", "input_size", "transfer"} <= set(
        board["dimensions"]
    )
    best = board["best"]
    assert best["checkpoint"] and Path(best["checkpoint"]).is_dir()
    aucs = [t["metrics"]["val_roc_auc"] for t in board["trials"]]
    assert aucs == sorted(aucs, reverse=True)
    assert [t["value"] for t in board["trials"]] == aucs
    # The search learned the synthetic task (chance is 0.5).
    assert best["metrics"]["val_roc_auc"] > 0.9
    # Every trial reports what serving its model costs (a multi-objective space may use it).
    for trial in board["trials"]:
        assert 0 < trial["metrics"]["inference_ms"] < 1000
        assert trial["metrics"]["params_m"] == pytest.approx(0.376, abs=0.001)  # small_vgg_bn


def test_each_trial_keeps_its_best_checkpoints_and_its_latest(experiment):
    """tiny.yaml keeps 2 checkpoints per trial by the metric, plus the latest."""
    fs = fsspec.filesystem("file")
    assert retention_errors(fs, str(experiment), "val_roc_auc", "max", keep=2) == {}
    rows = trial_rows(fs, str(experiment))
    assert max(len(r) for r in rows.values()) == 4  # a trial ran all epochs: pruning was due
    assert lost_checkpoints(fs, str(experiment)) == {}


def test_best_checkpoint_reproduces_its_reported_metric(experiment, prepared, capsys):
    """Metrics are measured, not made up: re-evaluating the saved model gives the same AUC."""
    best = _board(experiment, capsys)["best"]
    model, meta, _ = load_checkpoint(best["checkpoint"])
    config = meta["config"]
    manifest = load_manifest(str(prepared))
    assert meta["dataset"]["id"] == manifest["id"]
    assert meta["dataset"]["params_hash"] == manifest["params_hash"]
    assert meta["mammotune_version"] and meta["seed"] == 1
    assert {"backbone", "lr", "task", "view", "input_size", "transfer"} <= set(config)
    val = TileStream(
        str(prepared),
        manifest,
        view="roi",
        size=config["input_size"],
        split="val",
        task=TASKS[config["task"]],
    )
    labels, probabilities = [], []
    with torch.no_grad():
        for tiles, target in DataLoader(val, batch_size=64):
            probabilities.append(torch.softmax(model(tiles), 1)[:, 1].numpy())
            labels.append(target.numpy())
    assert labels
    auc = binary_metrics(np.concatenate(labels), np.concatenate(probabilities))["roc_auc"]
    assert auc == pytest.approx(meta["metrics"]["val_roc_auc"], abs=1e-6)


def test_the_optuna_study_holds_every_trial(experiment):
    search = json.loads((experiment / "search.json").read_text())
    study = optuna.load_study(
        study_name=search["study"]["name"], storage=search["study"]["storage"]
    )
    assert len(study.trials) == 3
    assert {"backbone", "class_weight", "dropout", "input_size", "transfer", "lr"} == set(
        study.trials[0].params
    )


def test_a_second_search_into_the_same_folder_is_refused(experiment, prepared, capsys):
    before = sorted(p.stat().st_mtime_ns for p in experiment.rglob("*"))
    code = main(
        ["search", "--space", str(TINY), "--data", str(prepared), "--storage", str(experiment)]
    )
    assert code == 2
    assert "already holds an experiment" in capsys.readouterr().err
    assert sorted(p.stat().st_mtime_ns for p in experiment.rglob("*")) == before


def test_a_checkpoint_alone_is_enough_to_evaluate(experiment, prepared, tmp_path, capsys):
    """A checkpoint copied out of its experiment (found in a bucket a year later)."""
    import shutil

    capsys.readouterr()
    assert main(["best", str(experiment), "--json"]) == 0
    best = json.loads(capsys.readouterr().out)["best"]["checkpoint"]
    alone = tmp_path / "found-later"
    shutil.copytree(best, alone)
    code = main(["evaluate", str(alone), "--data", str(prepared), "--json", "--resamples", "50"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["checkpoints"] == [str(alone)] and report["per_image"]["rows"] > 0

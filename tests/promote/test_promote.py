"""``mammotune promote``: the search's best, cross-validated by patient and reseeded, one
final model whose threshold and calibration come from out-of-fold predictions, and one
recorded look at the test split."""

import io
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import tuner
from tuner.cli import main
from tuner.data import shards
from tuner.data.stream import TileStream, load_manifest
from tuner.data.tasks import get_task
from tuner.promote import runner, stats
from tuner.results.ledger import read_ledger
from tuner.training.checkpoint import temper

pytestmark = pytest.mark.slow
TASK = get_task("lesion_vs_tissue")


def _key(row):
    return (row["image_id"], row["abnormality_id"], row["lesion"], row["variant"])


def _train_val_keys(data):
    manifest = load_manifest(str(data))
    stream = TileStream(str(data), manifest, view="roi", size=48, split=("train", "val"), task=TASK)
    return sorted(
        _key(r) for r in stream.context(["image_id", "abnormality_id", "lesion", "variant"])
    )


def _heldout(cell):
    return json.loads((Path(cell["checkpoint"]) / "heldout.json").read_text())


def test_candidates_are_cross_validated_by_patient_and_ranked(promoted, experiment, prepared):
    exp, promotion = promoted
    board = tuner.Experiment.open(str(experiment)).leaderboard()
    finished = [t.trial_id for t in board.trials if t.status in ("done", "stopped")]
    assert [c["trial_id"] for c in promotion["candidates"]] == finished[:2]

    cells = promotion["cells"]
    seeds = promotion["plan"]["seeds"]
    assert sorted((c["candidate"], c["fold"], c["seed"]) for c in cells) == sorted(
        (k, f, s) for k in (0, 1) for f in (0, 1) for s in seeds
    )
    assert all(c["state"] == "TERMINATED" and c["epochs"] == 1 for c in cells)
    assert promotion["folds"]["patients_in_two_folds"] == 0

    # Each held-out fold is that fold's patients, and the OOF predictions of a candidate
    # and seed cover every train+val row exactly once.
    folds = json.loads((exp / "promotions" / "p1" / "folds.json").read_text())["patients"]
    expected = _train_val_keys(prepared)
    for candidate in (0, 1):
        for seed in seeds:
            keys = []
            for cell in cells:
                if (cell["candidate"], cell["seed"]) != (candidate, seed):
                    continue
                rows = _heldout(cell)["rows"]
                assert {r["patient_id"] for r in rows} == {
                    p for p, f in folds.items() if f == cell["fold"]
                }
                keys += [_key(r) for r in rows]
            assert sorted(keys) == expected
    # Ranked by the lower bound of the seed-mean OOF AUC's patient-bootstrap interval.
    ranking = promotion["ranking"]
    lows = [e["oof_auc_95"][0] for e in ranking]
    assert lows == sorted(lows, reverse=True)
    # One OOF row per lesion (a train patient's jittered crops averaged) and tissue tile.
    lesions = {(k[0], k[1], k[2], 0 if k[2] == "lesion" else k[3]) for k in expected}
    for entry in ranking:
        assert entry["oof_covers_train_val_once"] and entry["oof_rows"] == len(lesions)
        low, high = entry["oof_auc_95"]
        assert low <= entry["oof_auc_mean"] <= high
        assert entry["oof_auc_mean"] == pytest.approx(
            np.mean(list(entry["oof_auc_by_seed"].values()))
        )
    assert sum(e["wins_across_seeds"] for e in ranking) == len(seeds)
    assert promotion["winner"]["trial_id"] == ranking[0]["trial_id"]
    assert promotion["compute"]["trials"] == 8 and promotion["compute"]["ratio_to_search"] > 0


def test_threshold_and_temperature_come_from_the_winners_oof_predictions(promoted):
    exp, promotion = promoted
    winner = promotion["winner"]["candidate"]
    first_seed = promotion["plan"]["seeds"][0]
    rows, probabilities = [], []
    for cell in promotion["cells"]:
        if (cell["candidate"], cell["seed"]) == (winner, first_seed):
            heldout = _heldout(cell)
            rows += heldout["rows"]
            probabilities += heldout["probabilities"]
    rows, probabilities = runner._per_lesion(rows, np.array(probabilities))
    labels = np.array([r["label"] for r in rows])
    temperature = stats.fit_temperature(labels, probabilities)
    calibration = promotion["calibration"]
    assert calibration["temperature"] == pytest.approx(temperature, rel=1e-6)
    # The highest threshold whose OOF recall reaches the target (on calibrated OOF
    # probabilities; 1e-9 spares a score that sits on the threshold from float rounding).
    positive = temper(probabilities, calibration["temperature"])[labels == 1, 1]
    threshold = promotion["threshold"]
    assert (positive >= threshold - 1e-9).mean() >= promotion["target_recall"]
    assert (positive >= threshold + 1e-6).mean() < promotion["target_recall"]
    for name in ("ece_before", "ece_after", "brier_before", "brier_after"):
        assert 0 <= calibration[name] <= 1
    model = json.loads((Path(promotion["final_model"]) / "model.json").read_text())
    assert model["threshold"] == threshold and model["temperature"] == calibration["temperature"]
    assert model["members"] == ["fold_0", "fold_1"]
    for column in stats.SUBGROUPS:
        for table in (promotion["oof_subgroups"], promotion["test"]["subgroups"]):
            for entry in table["slices"][column].values():
                assert {"rows", "patients", "roc_auc", "roc_auc_95", "flagged"} <= set(entry)


def _flip_test_labels(data: Path) -> None:
    """Swap lesion and tissue in every test shard of a dataset copy (labels only)."""
    manifest = json.loads((data / "manifest.json").read_text())
    for kind in manifest["tiles"].values():
        for shard in kind["splits"].get("test", {}).get("shards", []):
            path = data / shard["path"]
            table = shards.decode(io.BytesIO(path.read_bytes()))
            lesion = table.column("lesion")
            swapped = pc.if_else(pc.equal(lesion, "lesion"), "tissue", "lesion")
            table = table.set_column(table.schema.get_field_index("lesion"), "lesion", swapped)
            pq.write_table(table, path)


def test_the_threshold_does_not_change_when_test_labels_do(promoted, prepared, tmp_path):
    exp, promotion = promoted
    data = tmp_path / "flipped"
    shutil.copytree(prepared, data)
    _flip_test_labels(data)
    copy = tmp_path / "exp"
    shutil.copytree(exp, copy)
    (copy / "test_ledger.json").unlink()
    folder = copy / "promotions" / "p1"
    shutil.rmtree(folder / "final")
    (folder / "promotion.json").unlink()
    plan = json.loads((folder / "plan.json").read_text())
    plan.update(data=str(data), experiment=str(copy), url=str(folder))
    (folder / "plan.json").write_text(json.dumps(plan))

    again = runner._conclude(plan, console=None, emit=lambda line: None)
    assert again["threshold"] == promotion["threshold"]
    assert again["calibration"] == promotion["calibration"]
    assert [e["trial_id"] for e in again["ranking"]] == [
        e["trial_id"] for e in promotion["ranking"]
    ]
    before = promotion["test"]["per_image"]["metrics"]["roc_auc"]
    after = again["test"]["per_image"]["metrics"]["roc_auc"]
    assert after == pytest.approx(1 - before, abs=1e-6)  # the test labels did change


def test_an_unfinished_trial_stops_the_promotion_before_the_test_look(promoted, tmp_path):
    exp, promotion = promoted
    copy = tmp_path / "exp"
    shutil.copytree(exp, copy)
    (copy / "test_ledger.json").unlink()
    folder = copy / "promotions" / "p1"
    plan = json.loads((folder / "plan.json").read_text())
    plan.update(experiment=str(copy), url=str(folder))
    cell = promotion["cells"][0]
    checkpoint = (
        folder / "cv" / Path(cell["checkpoint"]).relative_to(exp / "promotions" / "p1" / "cv")
    )
    (checkpoint / "heldout.json").unlink()  # as if it had died before its last epoch
    with pytest.raises(tuner.UserError, match=r"1 of 8 trials did not finish .* promote --resume"):
        runner._conclude(plan, console=None, emit=lambda line: None)
    assert read_ledger(str(copy)) == []


def test_every_test_look_is_recorded_and_repeats_are_warned(promoted, prepared, caplog):
    exp, promotion = promoted
    looks = read_ledger(str(exp))
    assert [look["what"] for look in looks] == ["promote p1"]
    assert looks[0]["metrics"]["roc_auc"] == promotion["test"]["per_image"]["metrics"]["roc_auc"]
    assert promotion["test"]["test_look"] == {
        "ledger": str(exp / "test_ledger.json"),
        "look": 1,
        "looks_before": 0,
    }
    with caplog.at_level(logging.WARNING, logger="tuner"):
        second = tuner.evaluate(promotion["final_model"], data=prepared, resamples=100)
    assert second.test_look["look"] == 2 and second.test_look["looks_before"] == 1
    assert "look 2 at the test split" in caplog.text and "1 before" in caplog.text
    assert second.threshold == promotion["threshold"]  # the final model's own
    tuner.evaluate(promotion["final_model"], data=prepared, split="val", resamples=100)
    assert len(read_ledger(str(exp))) == 2  # validation is not a test look
    trial = tuner.Experiment.open(str(exp)).best().checkpoint
    third = tuner.evaluate(trial, data=prepared, resamples=100)  # a search trial: recorded too
    assert third.test_look["look"] == 3
    assert [look["what"] for look in read_ledger(str(exp))] == [
        "promote p1",
        "evaluate",
        "evaluate",
    ]


def test_the_final_model_serves_evaluate_predict_status_and_best(
    promoted, prepared, tmp_path, capsys
):
    import cv2

    exp, promotion = promoted
    manifest = load_manifest(str(prepared))
    shard = manifest["tiles"]["roi-48"]["splits"]["val"]["shards"][0]
    table = shards.decode(io.BytesIO((prepared / shard["path"]).read_bytes()))
    tile = tmp_path / "tile.png"
    cv2.imwrite(str(tile), shards.images(table)[0])
    result = tuner.predict(promotion["final_model"], [tile])
    assert result.threshold == promotion["threshold"]
    assert sum(result.items[0].probabilities.values()) == pytest.approx(1.0, abs=1e-5)

    capsys.readouterr()
    assert main(["status", str(exp)]) == 0
    out = capsys.readouterr().out
    assert "promotion p1: trial" in out and "final model:" in out
    dest = tmp_path / "download"
    assert main(["best", str(exp), "--download", str(dest)]) == 0
    assert "promoted final model downloaded" in capsys.readouterr().out
    assert sorted(p.name for p in dest.iterdir()) == ["fold_0", "fold_1", "model.json"]
    copy = tuner.evaluate(dest, data=prepared, split="val", resamples=100)
    assert copy.threshold == promotion["threshold"] and len(copy.checkpoints) == 2


def test_bad_input_is_one_line_exit_2_and_writes_nothing(promoted, prepared, tmp_path, capsys):
    exp, _ = promoted
    no_val = tmp_path / "no-val"
    shutil.copytree(prepared, no_val)
    manifest = json.loads((no_val / "manifest.json").read_text())
    for kind in manifest["tiles"].values():
        kind["splits"].pop("val")
    (no_val / "manifest.json").write_text(json.dumps(manifest))
    leaky = tmp_path / "leaky"  # another dataset whose test split holds search patients
    shutil.copytree(prepared, leaky)
    manifest = json.loads((leaky / "manifest.json").read_text())
    manifest["id"] = "another"
    for kind in manifest["tiles"].values():
        kind["splits"]["test"] = kind["splits"]["train"]
    (leaky / "manifest.json").write_text(json.dumps(manifest))
    before = sorted(p.name for p in (exp / "promotions").iterdir())
    cases = {
        "fewer than --top 9": ["--top", "9"],
        "train+val patients with a": ["--top", "1", "--folds", "500"],
        "promotion p1 exists": ["--top", "1", "--id", "p1"],
        "cannot cross-validate": ["--top", "1", "--data", str(no_val)],
        "were in the search's train+val": ["--top", "1", "--data", str(leaky)],
        "choose folds or refit": ["--final", "best"],
        "no unfinished promotion": ["--resume"],
        "--set fusion: fusion two_view pairs the CC and MLO": ["--set", "fusion=two_view"],
    }
    for message, args in cases.items():
        capsys.readouterr()
        code = main(["promote", str(exp), *args])
        err = capsys.readouterr().err
        assert code == 2, (args, err)
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in (exp / "promotions").iterdir()) == before

"""evaluate, predict and best --download on a real experiment's checkpoints."""

import json

import cv2
import numpy as np
import pytest

from tuner.cli import main
from tuner.data import shards
from tuner.data.stream import load_manifest
from tuner.results.evaluate import Predictions, ensemble, per_breast, threshold_table
from tuner.results.leaderboard import leaderboard


def _evaluate(capsys, *args):
    capsys.readouterr()
    code = main(["evaluate", *args, "--json", "--resamples", "200"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def test_evaluate_the_best_checkpoint_with_intervals_thresholds_and_plots(
    experiment, prepared, tmp_path, capsys
):
    report_dir = tmp_path / "report"
    report = _evaluate(
        capsys,
        str(experiment),
        "--data",
        str(prepared),
        "--split",
        "test",
        "--report",
        str(report_dir),
    )
    image = report["per_image"]
    assert report["classes"] == ["tissue", "lesion"] and image["rows"] > 20
    for name, value in image["metrics"].items():
        low, high = image["intervals_95"][name]
        assert low <= value + 1e-9 and value <= high + 1e-9, name
    assert image["metrics"]["roc_auc"] > 0.8  # learnt, on patients it never saw
    assert np.sum(image["confusion_matrix"]) == image["rows"]
    target = image["target_recall"]
    assert target["recall"] >= 0.9 and target["recall_goal"] == 0.9
    assert report["per_breast"]["rows"] < image["rows"]
    names = {p.name for p in report_dir.iterdir()}
    assert {"report.json", "predictions.csv", "per_breast.csv", "thresholds.csv"} <= names
    for png in ("confusion_matrix.png", "roc.png", "pr.png", "calibration.png"):
        picture = cv2.imread(str(report_dir / png))
        assert picture is not None and picture.shape[0] > 100, png
    # Nothing is overwritten: a second report into the same folder is refused.
    assert (
        main(["evaluate", str(experiment), "--data", str(prepared), "--report", str(report_dir)])
        == 2
    )
    assert "not empty" in capsys.readouterr().err


def test_an_ensemble_averages_the_best_checkpoints(experiment, prepared, capsys):
    single = _evaluate(capsys, str(experiment), "--data", str(prepared))
    pair = _evaluate(capsys, str(experiment), "--data", str(prepared), "--ensemble", "2")
    assert len(pair["checkpoints"]) == 2 and pair["checkpoints"][0] == single["checkpoints"][0]
    assert pair["per_image"]["metrics"] != single["per_image"]["metrics"]


def test_ensemble_and_per_breast_arithmetic():
    rows = [
        dict(
            patient_id="P1",
            laterality="LEFT",
            view="CC",
            image_id="a",
            abnormality_id=1,
            lesion="lesion",
            variant=0,
            label=1,
        ),
        dict(
            patient_id="P1",
            laterality="LEFT",
            view="MLO",
            image_id="b",
            abnormality_id=1,
            lesion="lesion",
            variant=0,
            label=0,
        ),
        dict(
            patient_id="P2",
            laterality="RIGHT",
            view="CC",
            image_id="c",
            abnormality_id=0,
            lesion="tissue",
            variant=0,
            label=0,
        ),
    ]
    one = Predictions(["b", "m"], rows, np.array([[0.2, 0.8], [0.6, 0.4], [0.9, 0.1]]))
    two = Predictions(["b", "m"], rows[::-1], np.array([[0.7, 0.3], [0.4, 0.6], [0.4, 0.6]]))
    mean = ensemble([one, two])
    assert np.allclose(mean.probabilities[:, 1], [0.7, 0.5, 0.2])
    breasts = per_breast(mean)
    assert [r["patient_id"] for r in breasts.rows] == ["P1", "P2"]
    assert breasts.rows[0]["views"] == "CC+MLO" and breasts.labels.tolist() == [1, 0]
    assert np.allclose(breasts.probabilities[:, 1], [0.6, 0.2])
    assert np.allclose(breasts.probabilities.sum(axis=1), 1)


def test_threshold_for_a_target_recall():
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1])
    scores = np.array([0.1, 0.5, 0.7, 0.2, 0.3, 0.4, 0.6, 0.65, 0.8, 0.85, 0.9, 0.95, 0.99])
    table, target = threshold_table(labels, scores, target_recall=0.9)
    assert target["threshold"] == pytest.approx(0.3) and target["recall"] == 0.9
    assert target["threshold"] == max(r["threshold"] for r in table if r["recall"] >= 0.9)


def _test_tile(prepared, tmp_path):
    manifest = load_manifest(str(prepared))
    entry = manifest["tiles"]["roi-48"]["splits"]["test"]
    table = shards.decode(str(prepared / entry["shards"][0]["path"]))
    lesion = table.column("lesion").to_pylist()
    tiles = shards.images(table)
    path = tmp_path / "tile.png"
    cv2.imwrite(str(path), tiles[lesion.index("lesion")])
    return path


def test_predict_reads_png_and_dicom_with_the_checkpoint_preprocessing(
    experiment, prepared, synthetic_source, tmp_path, capsys
):
    best = leaderboard(str(experiment)).best.checkpoint
    png = _test_tile(prepared, tmp_path)
    dicom = next(synthetic_source.rglob("*.dcm"))
    capsys.readouterr()
    assert main(["predict", best, str(png), str(dicom), "--json", "--threshold", "0.3"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["preprocessing"] == {
        "view": "roi",
        "size": 48,
        "enhance": "none",
        "context_px": 150,
        "resized_from": [],
        "views": 1,
    }
    first, second = result["predictions"]
    assert set(first["probabilities"]) == {"tissue", "lesion"}
    assert sum(first["probabilities"].values()) == pytest.approx(1, abs=1e-5)
    assert first["predicted"] == ("lesion" if first["probabilities"]["lesion"] >= 0.3 else "tissue")
    assert second["file"] == str(dicom)


def test_predict_bad_inputs(experiment, tmp_path, capsys):
    best = leaderboard(str(experiment)).best.checkpoint
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    assert main(["predict", best, str(text)]) == 2
    assert "cannot read" in capsys.readouterr().err
    # A checkpoint whose weights come from another backbone.
    import shutil

    other = tmp_path / "other"
    shutil.copytree(best, other)
    meta = json.loads((other / "checkpoint.json").read_text())
    meta["model_args"]["backbone"] = "resnet18"
    (other / "checkpoint.json").write_text(json.dumps(meta))
    assert main(["predict", str(other), str(text)]) == 2
    err = capsys.readouterr().err
    assert "does not fit the model" in err and "resnet18" in err


def test_best_downloads_the_best_checkpoint(experiment, tmp_path, capsys):
    dest = tmp_path / "best"
    assert main(["best", str(experiment), "--download", str(dest)]) == 0
    assert sorted(p.name for p in dest.iterdir()) == ["checkpoint.json", "state.pt"]
    assert main(["best", str(experiment), "--download", str(dest)]) == 2
    assert "not empty" in capsys.readouterr().err


def test_predict_a_full_mammogram_with_its_roi_mask(experiment, synthetic_source, capsys):
    """A ROI model given one full mammogram and its finding's mask file sees the tile
    prepare would have cut (tests/data/test_one_path.py holds the pixels to the bit)."""
    import pydicom

    from tuner.data.cbis_ddsm import CbisDdsmSource

    best = leaderboard(str(experiment)).best.checkpoint
    cbis = CbisDdsmSource(str(synthetic_source))
    index = cbis.dicom_index()
    finding = cbis.abnormalities()[0]
    image = index[finding.image_series][0]
    mask = next(
        path
        for path in index[finding.roi_series]
        if pydicom.dcmread(path, stop_before_pixels=True).SeriesDescription == "ROI mask images"
    )
    capsys.readouterr()
    assert main(["predict", best, image, "--roi-mask", mask, "--json"]) == 0
    (item,) = json.loads(capsys.readouterr().out)["predictions"]
    assert item["roi"] == "mask" and sum(item["probabilities"].values()) == pytest.approx(1, 1e-5)
    # A box belongs to one mammogram: two files with one box is one line, exit 2.
    assert main(["predict", best, image, image, "--roi-box", "10,10,40,40"]) == 2
    assert "one mammogram" in capsys.readouterr().err


def test_a_model_meets_another_editions_shards_only_when_asked(experiment, tmp_path, capsys):
    """The session's models were trained on the DICOM edition (16-bit); the same patients'
    JPEG edition (8-bit, windowed, lossy) is another input distribution: refused, before
    any look at the test split is recorded, unless --allow-mixed-editions says so."""
    from tests.conftest import SYNTH, prepare_params
    from tuner.data.prepare import prepare
    from tuner.data.synthetic import SynthParams, synthesize

    source = tmp_path / "jpeg-edition"
    synthesize(str(source), SynthParams(**{**SYNTH, "patients": 16}, layout="jpeg-edition"))
    data = "memory://jpeg-edition-for-evaluate"
    prepare(str(source), data, prepare_params(views=("roi",), sizes=(48,)))
    ledger = experiment / "test_ledger.json"
    before = ledger.read_text() if ledger.exists() else None

    capsys.readouterr()
    assert main(["evaluate", str(experiment), "--data", data]) == 2
    err = capsys.readouterr().err.strip()
    assert "trained on the CBIS-DDSM DICOM edition (cbis-ddsm, 16-bit)" in err
    assert "from its JPEG edition (cbis-ddsm-jpeg, 8-bit)" in err
    assert "--allow-mixed-editions" in err and len(err.splitlines()) == 1
    assert (ledger.read_text() if ledger.exists() else None) == before  # no look recorded

    report = _evaluate(
        capsys, str(experiment), "--data", data, "--split", "val", "--allow-mixed-editions"
    )
    assert report["per_image"]["rows"] > 0

    # Configurations searched on one edition are not promoted on the other's unless asked.
    promotions = lambda: sorted(p.name for p in (experiment / "promotions").glob("*"))  # noqa: E731
    before = promotions()
    assert main(["promote", str(experiment), "--data", data, "--top", "1", "--folds", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "the search ran on the CBIS-DDSM DICOM edition" in err and "its JPEG edition" in err
    assert "--allow-mixed-editions" in err and len(err.splitlines()) == 1
    assert promotions() == before  # nothing written

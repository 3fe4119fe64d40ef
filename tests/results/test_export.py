"""Export bundles: ONNX Runtime and TorchScript give the checkpoint's probabilities on real
test tiles, an ensemble exports as one graph, and a bundle refuses what it cannot trust."""

import json

import cv2
import numpy as np
import pytest

from tuner.cli import main
from tuner.data import shards
from tuner.data.stream import load_manifest
from tuner.results.bundle import BUNDLE_VERSION
from tuner.results.leaderboard import leaderboard

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiles(prepared, tmp_path_factory):
    """16 lesion and 8 tissue tiles of the test split, written as PNG files."""
    folder = tmp_path_factory.mktemp("tiles")
    manifest = load_manifest(str(prepared))
    paths, kinds = [], {"lesion": 0, "tissue": 0}
    for shard in manifest["tiles"]["roi-48"]["splits"]["test"]["shards"]:
        table = shards.decode(str(prepared / shard["path"]))
        for tile, kind in zip(
            shards.images(table), table.column("lesion").to_pylist(), strict=True
        ):
            if kinds[kind] < (16 if kind == "lesion" else 8):
                kinds[kind] += 1
                paths.append(folder / f"{kind}-{kinds[kind]:02d}.png")
                cv2.imwrite(str(paths[-1]), tile)
    assert len(paths) == 24
    return [str(p) for p in paths]


def _predict(capsys, model, files, *extra):
    capsys.readouterr()
    code = main(["predict", str(model), *files, "--json", *extra])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def _export(capsys, model, out, fmt):
    capsys.readouterr()
    code = main(["export", str(model), str(out), "--format", fmt, "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_a_bundle_gives_the_checkpoints_probabilities(experiment, tiles, tmp_path, capsys, fmt):
    best = leaderboard(str(experiment)).best.checkpoint
    bundle = _export(capsys, best, tmp_path / "bundle", fmt)
    names = {p.name for p in (tmp_path / "bundle").iterdir()}
    model_file = {"onnx": "model.onnx", "torchscript": "model.pt"}[fmt]
    assert names == {"bundle.json", model_file, "preprocessing.json", "model_card.json"}
    assert bundle["runtime"] == fmt and bundle["input"]["shape"] == [None, 1, 48, 48]
    assert bundle["classes"] == ["tissue", "lesion"] and bundle["members"] == 1
    assert bundle["verified_max_abs_diff"] < 1e-5
    prep = json.loads((tmp_path / "bundle" / "preprocessing.json").read_text())
    assert {k: prep[k] for k in ("view", "size", "enhance", "context_px")} == {
        "view": "roi",
        "size": 48,
        "enhance": "none",
        "context_px": 150,
    }
    card = json.loads((tmp_path / "bundle" / "model_card.json").read_text())
    assert "not a medical device" in json.dumps(card["intended_use"]).lower()

    # Same files, the checkpoint in PyTorch and the bundle in its runtime.
    direct = _predict(capsys, best, tiles)
    exported = _predict(capsys, tmp_path / "bundle", tiles)
    assert exported["preprocessing"] == direct["preprocessing"]
    differences = [
        abs(a["probabilities"][c] - b["probabilities"][c])
        for a, b in zip(direct["predictions"], exported["predictions"], strict=True)
        for c in a["probabilities"]
    ]
    assert len(direct["predictions"]) >= 16 and max(differences) <= 1e-4
    assert [p["predicted"] for p in direct["predictions"]] == [
        p["predicted"] for p in exported["predictions"]
    ]
    probabilities = [p["probabilities"]["lesion"] for p in exported["predictions"]]
    assert np.std(probabilities) > 0.01  # real, varied outputs, not a constant


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_a_final_model_exports_as_one_graph_with_its_threshold(
    promoted, tiles, tmp_path, capsys, fmt
):
    copy, promotion = promoted
    final = promotion["final_model"]
    # The experiment stands for its promoted final model.
    bundle = _export(capsys, copy, tmp_path / "bundle", fmt)
    assert bundle["source"]["kind"] == "experiment" and bundle["source"]["model"] == final
    assert bundle["members"] == 2 and bundle["threshold"] == pytest.approx(promotion["threshold"])
    assert bundle["temperature"] == pytest.approx(promotion["calibration"]["temperature"])
    direct = _predict(capsys, final, tiles)
    exported = _predict(capsys, tmp_path / "bundle", tiles)
    assert exported["threshold"] == pytest.approx(direct["threshold"])
    for a, b in zip(direct["predictions"], exported["predictions"], strict=True):
        assert a["predicted"] == b["predicted"]
        for c in a["probabilities"]:
            assert abs(a["probabilities"][c] - b["probabilities"][c]) <= 1e-4
    card = json.loads((tmp_path / "bundle" / "model_card.json").read_text())
    test = card["quantitative_analyses"]["test"]["per_image"]
    assert test["metrics"]["roc_auc"] == pytest.approx(
        promotion["test"]["per_image"]["metrics"]["roc_auc"]
    )
    assert card["model_details"]["version"] == "p1"


def test_bad_bundles_and_exports_are_one_line_exit_2(experiment, tiles, tmp_path, capsys):
    best = leaderboard(str(experiment)).best.checkpoint
    out = tmp_path / "bundle"
    _export(capsys, best, out, "onnx")
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def refused(argv, *words):
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        for word in words:
            assert word in err, err

    # An output folder that exists: nothing in it changes.
    refused(["export", best, str(out)], "exists")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    refused(["export", str(tmp_path / "nothing"), str(tmp_path / "b2")], "not a mammotune")
    # ONNX carries no gradients: Grad-CAM needs the checkpoint or a TorchScript bundle.
    refused(["predict", str(out), tiles[0], "--heatmap", str(tmp_path / "h")], "torchscript")
    assert not (tmp_path / "h").exists()

    # A bundle from a newer mammotune.
    newer = tmp_path / "newer"
    newer.mkdir()
    for name, data in before.items():
        (newer / name).write_bytes(data)
    meta = json.loads(before["bundle.json"])
    (newer / "bundle.json").write_text(json.dumps({**meta, "version": BUNDLE_VERSION + 1}))
    refused(["predict", str(newer), tiles[0]], "newer", "upgrade")

    # bundle.json's own fields: a threshold edited by hand would change every prediction.
    edited = tmp_path / "edited-threshold"
    edited.mkdir()
    for name, data in before.items():
        (edited / name).write_bytes(data)
    (edited / "bundle.json").write_text(json.dumps({**meta, "threshold": 0.05}))
    refused(["predict", str(edited), tiles[0]], "bundle.json", "changed after export")

    # Edited files: the preprocessing, or the model itself.
    for name in ("preprocessing.json", "model.onnx"):
        edited = tmp_path / f"edited-{name}"
        edited.mkdir()
        for other, data in before.items():
            (edited / other).write_bytes(data)
        data = bytearray(before[name])
        data[len(data) // 2] ^= 0x01
        (edited / name).write_bytes(bytes(data))
        refused(["predict", str(edited), tiles[0]], name, "changed after export")

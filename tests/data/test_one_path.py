"""prepare and predict make a model's input by one path: for each view and enhancement, what
predict builds from a source DICOM (a ROI model: the full mammogram plus that finding's ROI
mask file) is, bit for bit, the tile prepare stored in the shard. And predict's ROI inputs."""

from __future__ import annotations

import io
import uuid
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
import torch

from tuner import storage
from tuner.data import dicom, shards
from tuner.data.cbis_ddsm import CbisDdsmSource
from tuner.data.prepare import PrepareParams, prepare, tile_key
from tuner.data.preprocess import ENHANCEMENTS, VIEWS, Preprocessing, whole_shape
from tuner.data.single import model_input
from tuner.data.synthetic import SynthParams, synthesize
from tuner.errors import UserError
from tuner.models.classifier import ModelArgs, build_model
from tuner.results.predict import predict_files
from tuner.training.checkpoint import save_checkpoint

# Small and coarse (500 x 300 px mammograms) so that the test runs in seconds; two whole
# sizes, since the smaller whole image is resized from the larger one.
SYNTH = SynthParams(patients=10, seed=3, difficulty=0.2, scale=0.1)
PARAMS = PrepareParams(
    views=VIEWS,
    sizes=(16, 32),
    whole_sizes=(32, 48),
    enhance=ENHANCEMENTS,
    context_px=60,
    train_variants=1,
)


def _roi_files(source: Path) -> dict[tuple[str, int], dict[str, str]]:
    """(image series, abnormality id) -> the finding's files: its full mammogram ("image"),
    "mask" and "crop", told apart by their DICOM series description (not by content, as the
    code under test does)."""
    cbis = CbisDdsmSource(str(source))
    index = cbis.dicom_index()
    files = {}
    for a in cbis.abnormalities():
        entry = {"image": index[a.image_series][0]}
        for path in index[a.roi_series]:
            description = pydicom.dcmread(path, stop_before_pixels=True).SeriesDescription
            entry["mask" if description == "ROI mask images" else "crop"] = path
        files[(a.image_series, a.abnormality_id)] = entry
    return files


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one-path") / "cbis"
    synthesize(str(out), SYNTH, workers=1)
    # One test-split mask a few pixels off its image's size, as a few real ones are: prepare
    # and predict must fit (rescale) it alike.
    (key, entry), *_ = ((k, e) for k, e in sorted(_roi_files(out).items()) if "-Test_" in k[0])
    h, w = dicom.read_image(entry["image"]).shape
    mask = dicom.read_image(entry["mask"])
    off = cv2.resize(mask, (w + 3, h - 2), interpolation=cv2.INTER_NEAREST)
    buffer = io.BytesIO()
    attributes = {"SeriesDescription": "ROI mask images"}
    write = dict(study_uid="1.2", series_uid="1.3", instance_uid="1.4", attributes=attributes)
    dicom.write_image(buffer, off, **write)
    Path(entry["mask"]).write_bytes(buffer.getvalue())
    return out


@pytest.fixture(scope="module")
def dataset(source):
    """The prepared dataset (in this process's memory: no Ray) and its manifest."""
    out = f"memory://one-path-{uuid.uuid4().hex[:8]}"
    manifest = prepare(str(source), out, PARAMS)
    yield out, manifest
    fs, path = storage.filesystem(out)
    fs.rm(path, recursive=True)


def _meta(manifest: dict, view: str, size: int, enhance: str) -> dict:
    """The parts of a checkpoint.json that say how its model's inputs are made."""
    config = {"view": view, "input_size": size, "enhance": enhance}
    return {"config": config, "dataset": {"params": manifest["params"]}}


def _stored(dataset, key: str, splits):
    """(row, tile) of every stored tile of one kind in ``splits``."""
    out, manifest = dataset
    for split in splits:
        for shard in manifest["tiles"][key]["splits"][split]["shards"]:
            table = shards.decode(storage.read_bytes(storage.join(out, shard["path"])))
            yield from zip(table.to_pylist(), shards.images(table), strict=True)


@pytest.mark.parametrize("enhance", ENHANCEMENTS)
@pytest.mark.parametrize("view", VIEWS)
def test_predict_builds_exactly_the_stored_tile(dataset, source, view, enhance):
    _, manifest = dataset
    files = _roi_files(source)
    images = {image_id: entry["image"] for (image_id, _), entry in files.items()}
    rescaled = _rescaled(manifest)
    checked = defaultdict(int)
    for size in PARAMS.sizes if view == "roi" else PARAMS.whole_sizes:
        preprocessing = Preprocessing.from_checkpoint_meta(_meta(manifest, view, size, enhance))
        # ROI: the centred tiles (variant 0 of validation and test; training tiles are random
        # crops). Whole: every image, whatever its split.
        splits = ("val", "test") if view == "roi" else ("train", "val", "test")
        for row, stored in _stored(dataset, tile_key(view, size, enhance), splits):
            if view == "roi":
                if row["lesion"] != "lesion":
                    continue  # tissue tiles lie at random places
                entry = files[(row["image_id"], row["abnormality_id"])]
                made = model_input(entry["image"], preprocessing, roi_mask=entry["mask"])
                label = f"{row['image_id']}/{row['abnormality_id']}"
                checked["rescaled mask"] += label in rescaled
            else:
                made = model_input(images[row["image_id"]], preprocessing)
            assert made.dtype == stored.dtype == np.uint8
            assert made.shape == stored.shape
            assert np.array_equal(made, stored), (row["image_id"], row["abnormality_id"], size)
            checked[size] += 1
    assert all(checked[s] >= 4 for s in PARAMS.sizes if view == "roi"), checked
    assert all(checked[s] >= 10 for s in PARAMS.whole_sizes if view == "whole"), checked
    if view == "roi":
        assert checked["rescaled mask"] >= len(PARAMS.sizes), "no rescaled mask was checked"


def _rescaled(manifest: dict) -> set[str]:
    """The findings ("image/abnormality") whose mask prepare rescaled to fit the image."""
    return {note["item"] for note in manifest["notes"] if "rescaled" in note["note"]}


def _a_test_finding(dataset, source):
    """A stored centred test tile (32 px, no enhancement) of a finding whose mask has its
    image's size, and the finding's files."""
    rescaled = _rescaled(dataset[1])
    for row, stored in _stored(dataset, "roi-32", ["test"]):
        label = f"{row['image_id']}/{row['abnormality_id']}"
        if row["lesion"] == "lesion" and label not in rescaled:
            return stored, _roi_files(source)[(row["image_id"], row["abnormality_id"])]
    raise AssertionError("no test tile")


def test_a_png_mask_and_a_box_give_the_same_tile(dataset, source, tmp_path):
    stored, entry = _a_test_finding(dataset, source)
    _, manifest = dataset
    preprocessing = Preprocessing.from_checkpoint_meta(_meta(manifest, "roi", 32, "none"))
    mask = dicom.read_image(entry["mask"])
    png = tmp_path / "mask.png"
    cv2.imwrite(str(png), mask.astype(np.uint8))
    assert np.array_equal(model_input(entry["image"], preprocessing, roi_mask=png), stored)
    ys, xs = np.nonzero(mask)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    assert np.array_equal(model_input(entry["image"], preprocessing, roi_box=box), stored)


@pytest.fixture(scope="module")
def checkpoints(dataset, tmp_path_factory) -> dict[str, str]:
    """A small untrained checkpoint per view, with its dataset's prepare params."""
    _, manifest = dataset
    folders = {}
    for view, size in (("roi", 32), ("whole", 48)):
        folder = tmp_path_factory.mktemp(f"checkpoint-{view}")
        torch.manual_seed(0)
        meta = {
            **_meta(manifest, view, size, "clahe"),
            "task": {"name": "lesion", "classes": ["tissue", "lesion"]},
        }
        model = build_model(ModelArgs(backbone="small_vgg_bn", num_classes=2))
        save_checkpoint(str(folder), model=model, optimizer=None, meta=meta)
        folders[view] = str(folder)
    return folders


def test_predict_with_a_mask_a_box_or_a_crop(dataset, source, checkpoints):
    _, entry = _a_test_finding(dataset, source)
    with_mask = predict_files(checkpoints["roi"], [entry["image"]], roi_mask=entry["mask"])
    assert with_mask["preprocessing"] == {
        "view": "roi",
        "size": 32,
        "enhance": "clahe",
        "context_px": PARAMS.context_px,
        "resized_from": [],
        "views": 1,
    }
    (item,) = with_mask["predictions"]
    assert item["roi"] == "mask"
    assert sum(item["probabilities"].values()) == pytest.approx(1, abs=1e-5)
    with_box = predict_files(checkpoints["roi"], [entry["image"]], roi_box=(10, 20, 60, 90))
    assert with_box["predictions"][0]["roi"] == "box"

    # A ROI model given a plain crop (CBIS-DDSM's cropped image): the whole file is the tile.
    crop = predict_files(checkpoints["roi"], [entry["crop"]])
    assert crop["predictions"][0]["roi"] == "whole file"
    preprocessing = Preprocessing.from_checkpoint_meta(_meta(dataset[1], "roi", 32, "clahe"))
    tile = model_input(entry["crop"], preprocessing)
    assert tile.dtype == np.uint8 and tile.shape == (32, 32)

    whole = predict_files(checkpoints["whole"], [entry["image"], entry["image"]])
    assert whole["preprocessing"]["resized_from"] == []  # 48 is the largest whole size
    assert [p["roi"] for p in whole["predictions"]] == [None, None]
    small = Preprocessing.from_checkpoint_meta(_meta(dataset[1], "whole", 32, "none"))
    assert small.sizes == (48, 32)
    assert model_input(entry["image"], small).shape == whole_shape(32)


def test_bad_roi_inputs_are_one_clear_error(dataset, source, checkpoints, tmp_path):
    _, entry = _a_test_finding(dataset, source)
    image, mask, roi = entry["image"], entry["mask"], checkpoints["roi"]
    cases = [
        ((checkpoints["whole"], [image]), {"roi_mask": mask}, "classifies whole mammograms"),
        ((checkpoints["whole"], [image]), {"roi_box": (0, 0, 9, 9)}, "give the mammogram alone"),
        ((roi, [image, image]), {"roi_mask": mask}, "2 files were given"),
        ((roi, [image]), {"roi_mask": mask, "roi_box": (0, 0, 9, 9)}, "not both"),
        ((roi, [image]), {"roi_mask": entry["crop"]}, "not a ROI mask"),
        ((roi, [image]), {"roi_box": (250, 10, 400, 50)}, "does not lie inside the 300x500"),
        ((roi, [image]), {"roi_box": (50, 10, 40, 50)}, "0 <= x0 < x1 <= 300"),
    ]
    wide = tmp_path / "wide.png"
    cv2.imwrite(str(wide), np.pad(np.full((20, 20), 255, np.uint8), ((40, 40), (100, 280))))
    cases.append(((roi, [image]), {"roi_mask": wide}, "mask 400x100 does not match image"))
    empty = tmp_path / "empty.png"
    cv2.imwrite(str(empty), np.zeros((500, 300), np.uint8))
    cases.append(((roi, [image]), {"roi_mask": empty}, "ROI mask is empty"))
    for args, roi_args, message in cases:
        with pytest.raises(UserError, match=message) as caught:
            predict_files(*args, **roi_args)
        assert "\n" not in str(caught.value)

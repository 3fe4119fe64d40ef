"""Grad-CAM: a model trained here to find a bright lesion looks at the lesion, through
captum on the checkpoint and through a TorchScript bundle alike."""

import json

import cv2
import numpy as np
import pytest
import torch

from tuner.cli import main
from tuner.data.preprocess import Preprocessing
from tuner.data.single import model_input
from tuner.models.classifier import ModelArgs, build_model
from tuner.results.bundle import open_bundle
from tuner.results.explain import gradcam, gradcam_scripted
from tuner.training.checkpoint import save_checkpoint

SIZE, RADIUS = 64, 10
PREPROCESSING = Preprocessing(view="roi", size=SIZE)


def _image(rng, lesion: bool):
    """Textured tissue, with a bright round lesion somewhere (and its mask) or without."""
    noise = rng.normal(0, 1, (SIZE // 4, SIZE // 4)).astype(np.float32)
    tissue = cv2.resize(noise, (SIZE, SIZE), interpolation=cv2.INTER_CUBIC) * 18 + 110
    pixels = tissue + rng.normal(0, 6, (SIZE, SIZE))
    mask = np.zeros((SIZE, SIZE), np.uint8)
    if lesion:
        cy, cx = (int(v) for v in rng.integers(RADIUS + 2, SIZE - RADIUS - 2, 2))
        cv2.circle(mask, (cx, cy), RADIUS, 1, -1)
        pixels = np.where(mask > 0, pixels + 70, pixels)
    return np.clip(pixels, 0, 255).astype(np.uint8), mask.astype(bool)


def _write(folder, name, pixels):
    path = folder / f"{name}.png"
    cv2.imwrite(str(path), pixels)
    return str(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small VGG trained on 320 synthetic images fed through predict's own path, saved
    as a checkpoint: (checkpoint folder, model)."""
    folder = tmp_path_factory.mktemp("lesions")
    rng = np.random.default_rng(0)
    tiles, labels = [], []
    for i in range(320):
        pixels, _ = _image(rng, lesion=i % 2 == 1)
        tiles.append(model_input(_write(folder, f"train-{i}", pixels), PREPROCESSING))
        labels.append(i % 2)
    x = torch.from_numpy(np.stack(tiles))[:, None].float()
    y = torch.tensor(labels)
    torch.manual_seed(0)
    model = build_model(ModelArgs("small_vgg_bn", 2, dropout=0.0))
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(4):
        for batch in torch.randperm(len(y)).split(32):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    model.eval()
    checkpoint = tmp_path_factory.mktemp("checkpoint") / "lesion"
    meta = {
        "config": {
            "view": "roi",
            "input_size": SIZE,
            "enhance": "none",
            "backbone": "small_vgg_bn",
        },
        "task": {"name": "lesion_vs_tissue", "classes": ["tissue", "lesion"]},
        "dataset": {"params": {"context_px": 150}},
        "metrics": {},
    }
    save_checkpoint(str(checkpoint), model=model, optimizer=None, meta=meta)
    return checkpoint, model


def test_the_heatmap_peaks_inside_the_lesion_more_often_than_chance(trained, tmp_path):
    _, model = trained
    rng = np.random.default_rng(1)
    hits, chance, tiles = [], [], []
    masks = []
    for i in range(40):
        pixels, mask = _image(rng, lesion=True)
        tiles.append(model_input(_write(tmp_path, f"test-{i}", pixels), PREPROCESSING))
        masks.append(mask)
    x = torch.from_numpy(np.stack(tiles))[:, None].float()
    with torch.no_grad():
        assert torch.softmax(model(x), 1)[:, 1].mean() > 0.8  # it learnt to see lesions
    cams = gradcam([model], x, target=1)
    for cam, mask in zip(cams, masks, strict=True):
        y, x_ = np.unravel_index(np.argmax(cam), cam.shape)
        hits.append(mask[y, x_])
        chance.append(mask.mean())
    rate, expected = np.mean(hits), np.mean(chance)
    # Chance: a peak anywhere lands in the lesion as often as the lesion covers the image.
    print(f"peak in lesion {rate:.2f}, chance {expected:.3f}")
    assert expected < 0.1 and rate > max(0.5, 4 * expected), (rate, expected)


def test_heatmaps_from_a_checkpoint_and_a_torchscript_bundle_agree(trained, tmp_path, capsys):
    checkpoint, model = trained
    rng = np.random.default_rng(2)
    files = [_write(tmp_path, f"case-{i}", _image(rng, lesion=True)[0]) for i in range(3)]
    assert main(["export", str(checkpoint), str(tmp_path / "ts"), "--format", "torchscript"]) == 0
    x = torch.from_numpy(np.stack([model_input(f, PREPROCESSING) for f in files]))[:, None]
    scripted = gradcam_scripted(open_bundle(str(tmp_path / "ts")).module, x.float(), target=1)
    eager = gradcam([model], x.float(), target=1)
    assert np.abs(scripted - eager).max() < 1e-4

    for source, folder in ((checkpoint, "from-checkpoint"), (tmp_path / "ts", "from-bundle")):
        capsys.readouterr()
        argv = ["predict", str(source), *files, "--heatmap", str(tmp_path / folder), "--json"]
        assert main(argv) == 0
        result = json.loads(capsys.readouterr().out)
        for item in result["predictions"]:
            overlay = cv2.imread(item["heatmap"])
            assert overlay is not None and overlay.shape[:2] == (256, 256)
    a = cv2.imread(str(tmp_path / "from-checkpoint" / "case-0_gradcam.png")).astype(int)
    b = cv2.imread(str(tmp_path / "from-bundle" / "case-0_gradcam.png")).astype(int)
    assert np.abs(a - b).max() <= 2  # the same picture, up to rounding
    # A heatmap folder that holds files is not written into.
    assert (
        main(["predict", str(checkpoint), files[0], "--heatmap", str(tmp_path / "from-bundle")])
        == 2
    )
    assert "not empty" in capsys.readouterr().err

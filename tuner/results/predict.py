"""``mammotune predict``: class probabilities for image files, each made into the model's input
by the path prepare made its training tiles by (``tuner.data.single.model_input``), with the
checkpoint's own preprocessing (view, size, enhancement and ROI tile context as trained).

A ROI-view model takes a full mammogram plus where the finding is (a mask file or a box) and
sees prepare's tile around it; given a file alone, it takes the file to be the finding's crop.
A two-view model takes the CC and MLO files of one breast and gives one prediction for the
breast.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from tuner.data.preprocess import Preprocessing
from tuner.data.single import breast_views, model_input
from tuner.errors import UserError
from tuner.models.classifier import class_probabilities
from tuner.results.explain import gradcam, gradcam_scripted, write_overlay
from tuner.training.checkpoint import load_checkpoint, open_model

__all__ = ["predict_files"]


def predict_files(
    checkpoint: str,
    files: list[str],
    *,
    threshold: float | None = None,
    roi_mask: str | Path | None = None,
    roi_box: tuple[int, int, int, int] | None = None,
    heatmap: str | None = None,
    expect_sha256: str | None = None,
    max_pixels: int | None = None,
) -> dict:
    """Probabilities per class for each file, and the predicted class.

    ``checkpoint`` may be a promotion's final model: its members' probabilities are
    averaged (over flips too, with its TTA) and temperature-scaled; or an export bundle
    (``mammotune export``), run with ONNX Runtime or TorchScript and fed by the
    preprocessing its ``preprocessing.json`` names. For two classes the prediction is the
    positive class when its probability reaches ``threshold`` (default: the final model's
    or bundle's, fixed on out-of-fold predictions, else 0.5); for more classes it is the
    most probable class.

    Args:
        roi_mask: ROI-view models: a mask image file of the finding in the one file given.
        roi_box: ROI-view models: the finding's box in the one file's pixels, x0, y0, x1,
            y1 (ends exclusive). With neither, a ROI-view model takes each file to be the
            finding's crop.
        heatmap: a new or empty folder for Grad-CAM overlays (one PNG per file, over the
            tile the model saw, for the predicted class): checkpoints, final models and
            TorchScript bundles.
        expect_sha256: the bundle's SHA-256 (of ``bundle.json``) from a trusted place; see
            :func:`tuner.results.bundle.open_bundle`. Only bundles carry one.
        max_pixels: the most pixels a file may declare (see :mod:`tuner.data.limits`).

    Returns:
        checkpoint, task, preprocessing (see :class:`Preprocessing`), threshold, and per
        file: probabilities, predicted class, ``roi`` (what the model's tile was cut
        around: "mask", "box", "whole file" (the file as the crop), or None (whole view))
        and, with ``heatmap``, the overlay's path. A two-view model gives one prediction
        for the breast (``file`` "CC + MLO") and ``views`` (which file it took for which).

    Raises:
        UserError: an unreadable checkpoint, bundle or image file, a bundle edited since
            export, a ROI that does not apply (see :func:`tuner.data.single.model_input`) or
            comes with more than one file, a heatmap folder that holds files, or a heatmap
            from an ONNX bundle; for a two-view model, not two files, two files of one
            view or of two breasts (see :func:`tuner.data.single.breast_views`).
    """
    from tuner.data.limits import pixel_cap
    from tuner.results.bundle import is_bundle, open_bundle

    max_pixels = pixel_cap(max_pixels)  # a bad setting is refused before the model loads
    roi = "mask" if roi_mask is not None else "box" if roi_box is not None else None
    if heatmap is not None:
        heatmap = str(heatmap).removeprefix("file://")
        if "://" in heatmap:
            raise UserError(f"--heatmap {heatmap}: give a local folder for the overlays")
        if os.path.exists(heatmap) and not os.path.isdir(heatmap):
            raise UserError(f"--heatmap {heatmap} is a file; give a new folder")
        if os.path.isdir(heatmap) and os.listdir(heatmap):
            raise UserError(f"{heatmap} is not empty; choose a new folder for --heatmap")
    if expect_sha256 is not None and not is_bundle(checkpoint):
        raise UserError(
            f"--expect-sha256 checks an export bundle (mammotune export); {checkpoint} is not "
            "one: export it and pin the bundle's SHA-256"
        )
    if is_bundle(checkpoint):
        bundle = open_bundle(checkpoint, expect_sha256=expect_sha256)
        preprocessing, classes, task = bundle.preprocessing, bundle.classes, bundle.meta["task"]
        fixed = bundle.threshold
        score = bundle.probabilities
        if heatmap is not None:
            module = bundle.module  # a UserError for ONNX bundles, before any work

            def explain(tiles, target):
                return gradcam_scripted(module, tiles, target)
    else:
        models = open_model(checkpoint)
        loaded = [load_checkpoint(member)[:2] for member in models.members]
        meta = loaded[0][1]
        preprocessing = Preprocessing.from_checkpoint_meta(meta)
        if any(Preprocessing.from_checkpoint_meta(m) != preprocessing for _, m in loaded):
            raise UserError(f"{checkpoint}: its members were trained on different inputs")
        classes, task, fixed = meta["task"]["classes"], meta["task"]["name"], models.threshold

        @torch.no_grad()
        def score(tiles):
            tiles = torch.from_numpy(tiles)
            tiles = tiles[:, None] if tiles.dim() == 3 else tiles
            averaged = np.mean(
                [class_probabilities(m, tiles, tta=models.tta).numpy() for m, _ in loaded],
                axis=0,
            )
            return models.calibrate(averaged)

        def explain(tiles, target):
            return gradcam([m for m, _ in loaded], tiles, target)

    if threshold is None:
        threshold = fixed if fixed is not None else 0.5
    if roi and len(files) != 1 and preprocessing.views == 1:
        raise UserError(
            f"a ROI belongs to one mammogram, but {len(files)} files were given: "
            "predict one file at a time with its ROI mask or box"
        )
    if roi is None and preprocessing.view == "roi":
        roi = "whole file"
    if preprocessing.views == 2:
        if heatmap is not None:
            raise UserError(
                "Grad-CAM overlays are made for single-view models; predict this two-view "
                "model without --heatmap"
            )
        if roi is not None:
            raise UserError(
                "a ROI was given, but this model classifies whole mammograms (two views of "
                "a breast): give its CC and MLO files alone"
            )
        ordered = breast_views(files, max_pixels=max_pixels)
        pixels = np.stack(
            [model_input(path, preprocessing, max_pixels=max_pixels) for path in ordered]
        )
        return _result(
            checkpoint,
            task,
            preprocessing,
            threshold,
            classes,
            [_item(" + ".join(ordered), score(pixels[None])[0], classes, threshold, None)],
            views={"CC": ordered[0], "MLO": ordered[1]},
        )
    results, names = [], set()
    for path in files:
        pixels = model_input(
            path, preprocessing, roi_mask=roi_mask, roi_box=roi_box, max_pixels=max_pixels
        )
        result = _item(str(path), score(pixels[None])[0], classes, threshold, roi)
        predicted = result["predicted"]
        if heatmap is not None:
            name = _unique(f"{Path(path).stem}_gradcam.png", names)
            target = classes.index(predicted)
            cam = explain(torch.from_numpy(pixels)[None, None].float(), target)[0]
            result["heatmap"] = write_overlay(os.path.join(heatmap, name), pixels, cam)
            # Grad-CAM keeps only what raised the class's score: all zero means no region did.
            result["heatmap_empty"] = bool(cam.max() <= 0)
        results.append(result)
    return _result(checkpoint, task, preprocessing, threshold, classes, results)


def _item(name: str, p: np.ndarray, classes: list[str], threshold: float, roi) -> dict:
    p = p.astype(float)
    if len(classes) == 2:
        predicted = classes[1] if p[1] >= threshold else classes[0]
    else:
        predicted = classes[int(np.argmax(p))]
    return {
        "file": name,
        "probabilities": {c: round(float(v), 6) for c, v in zip(classes, p, strict=True)},
        "predicted": predicted,
        "roi": roi,
    }


def _result(checkpoint, task, preprocessing, threshold, classes, items, **extra) -> dict:
    return {
        "checkpoint": checkpoint,
        "task": task,
        "preprocessing": preprocessing.to_json(),
        "threshold": threshold if len(classes) == 2 else None,
        "predictions": items,
        **extra,
    }


def _unique(name: str, taken: set[str]) -> str:
    stem, n = name.removesuffix(".png"), 1
    while name in taken:
        n += 1
        name = f"{stem}-{n}.png"
    taken.add(name)
    return name

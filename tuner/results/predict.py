"""``mammotune predict``: class probabilities for image files, each made into the model's input
by the path prepare made its training tiles by (``tuner.data.single.model_input``), with the
checkpoint's own preprocessing (view, size, enhancement and ROI tile context as trained).

A ROI-view model takes a full mammogram plus where the finding is (a mask file or a box) and
sees prepare's tile around it; given a file alone, it takes the file to be the finding's crop.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tuner.data.preprocess import Preprocessing
from tuner.data.single import model_input
from tuner.errors import UserError
from tuner.models.classifier import class_probabilities
from tuner.training.checkpoint import load_checkpoint, open_model

__all__ = ["predict_files"]


@torch.no_grad()
def predict_files(
    checkpoint: str,
    files: list[str],
    *,
    threshold: float | None = None,
    roi_mask: str | Path | None = None,
    roi_box: tuple[int, int, int, int] | None = None,
) -> dict:
    """Probabilities per class for each file, and the predicted class.

    ``checkpoint`` may be a promotion's final model: its members' probabilities are
    averaged (over flips too, with its TTA) and temperature-scaled. For two classes the
    prediction is the positive class when its probability reaches ``threshold`` (default:
    the final model's, fixed on out-of-fold predictions, else 0.5); for more classes it is
    the most probable class.

    Args:
        roi_mask: ROI-view models: a mask image file of the finding in the one file given.
        roi_box: ROI-view models: the finding's box in the one file's pixels, x0, y0, x1,
            y1 (ends exclusive). With neither, a ROI-view model takes each file to be the
            finding's crop.

    Returns:
        checkpoint, task, preprocessing (see :class:`Preprocessing`), threshold, and per
        file: probabilities, predicted class and ``roi``, what the model's tile was cut
        around: "mask", "box", "whole file" (the file as the crop), or None (whole view).

    Raises:
        UserError: an unreadable checkpoint or image file, or a ROI that does not apply
            (see :func:`tuner.data.single.model_input`) or comes with more than one file.
    """
    roi = "mask" if roi_mask is not None else "box" if roi_box is not None else None
    if roi and len(files) != 1:
        raise UserError(
            f"a ROI belongs to one mammogram, but {len(files)} files were given: "
            "predict one file at a time with its ROI mask or box"
        )
    models = open_model(checkpoint)
    loaded = [load_checkpoint(member)[:2] for member in models.members]
    meta = loaded[0][1]
    preprocessing = Preprocessing.from_checkpoint_meta(meta)
    if any(Preprocessing.from_checkpoint_meta(m) != preprocessing for _, m in loaded):
        raise UserError(f"{checkpoint}: its members were trained on different inputs")
    if threshold is None:
        threshold = models.threshold if models.threshold is not None else 0.5
    if roi is None and preprocessing.view == "roi":
        roi = "whole file"
    classes = meta["task"]["classes"]
    results = []
    for path in files:
        pixels = model_input(path, preprocessing, roi_mask=roi_mask, roi_box=roi_box)
        tiles = torch.from_numpy(pixels)[None, None]
        averaged = np.mean(
            [class_probabilities(m, tiles, tta=models.tta).numpy() for m, _ in loaded], axis=0
        )
        p = models.calibrate(averaged)[0].astype(float)
        if len(classes) == 2:
            predicted = classes[1] if p[1] >= threshold else classes[0]
        else:
            predicted = classes[int(np.argmax(p))]
        results.append(
            {
                "file": str(path),
                "probabilities": {c: round(float(v), 6) for c, v in zip(classes, p, strict=True)},
                "predicted": predicted,
                "roi": roi,
            }
        )
    return {
        "checkpoint": checkpoint,
        "task": meta["task"]["name"],
        "preprocessing": preprocessing.to_json(),
        "threshold": threshold if len(classes) == 2 else None,
        "predictions": results,
    }

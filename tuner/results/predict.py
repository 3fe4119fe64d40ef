"""``mammotune predict``: class probabilities for image files, with the checkpoint's own
preprocessing (view, size and enhancement as it was trained)."""

from __future__ import annotations

import numpy as np
import torch

from tuner.data.single import prepare_image
from tuner.training.checkpoint import load_checkpoint

__all__ = ["predict_files"]


@torch.no_grad()
def predict_files(checkpoint: str, files: list[str], *, threshold: float = 0.5) -> dict:
    """Probabilities per class for each file, and the predicted class.

    For two classes the prediction is the positive class when its probability reaches
    ``threshold`` (pick one from ``evaluate``'s threshold table, e.g. for 0.90 recall); for
    more classes it is the most probable class.

    Raises:
        UserError: an unreadable checkpoint or image file.
    """
    model, meta, _ = load_checkpoint(checkpoint)
    config = meta["config"]
    classes = meta["task"]["classes"]
    view, size, enhance = config["view"], config["input_size"], config.get("enhance", "none")
    results = []
    for path in files:
        pixels = prepare_image(path, view=view, size=size, enhance=enhance)
        probabilities = torch.softmax(model(torch.from_numpy(pixels)[None, None]), dim=1)[0]
        p = probabilities.numpy().astype(float)
        if len(classes) == 2:
            predicted = classes[1] if p[1] >= threshold else classes[0]
        else:
            predicted = classes[int(np.argmax(p))]
        results.append(
            {
                "file": str(path),
                "probabilities": {c: round(float(v), 6) for c, v in zip(classes, p, strict=True)},
                "predicted": predicted,
            }
        )
    return {
        "checkpoint": checkpoint,
        "task": meta["task"]["name"],
        "preprocessing": {"view": view, "size": size, "enhance": enhance},
        "threshold": threshold if len(classes) == 2 else None,
        "predictions": results,
    }

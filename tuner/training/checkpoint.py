"""Checkpoints that stand alone: plain state dicts plus what is needed to rebuild and judge
the model (model arguments, trial config, metrics, dataset id, version, seed).

A checkpoint is a folder (or bucket prefix) holding ``state.pt`` and ``checkpoint.json``;
``state.pt`` is read with ``torch.load(weights_only=True)``, so nothing is unpickled.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np
import torch

from tuner import storage
from tuner.errors import UserError
from tuner.models.classifier import Classifier, ModelArgs, build_model
from tuner.models.weights import read_state

__all__ = [
    "FORMAT",
    "MODEL",
    "save_checkpoint",
    "load_checkpoint",
    "read_meta",
    "ModelSet",
    "open_model",
    "temper",
]

FORMAT = "mammotune-checkpoint/1"
STATE, META = "state.pt", "checkpoint.json"


def save_checkpoint(
    directory: str, *, model: Classifier, optimizer: torch.optim.Optimizer | None, meta: dict
) -> None:
    """Write ``model`` (and ``optimizer``, for resuming) and ``meta`` into a local folder."""
    os.makedirs(directory, exist_ok=True)
    state = {"model": model.state_dict()}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    torch.save(state, os.path.join(directory, STATE))
    meta = {"format": FORMAT, "model_args": model.args.to_dict(), **meta}
    with open(os.path.join(directory, META), "w") as f:
        json.dump(meta, f, indent=2)


def read_meta(checkpoint: str) -> dict:
    """The ``checkpoint.json`` of a checkpoint folder (local path or URL).

    Raises:
        UserError: not a mammotune checkpoint.
    """
    url = storage.join(checkpoint, META)
    if not storage.exists(url):
        raise UserError(f"{checkpoint} is not a mammotune checkpoint ({META} not found)")
    meta = storage.read_json(url)
    if meta.get("format") != FORMAT:
        raise UserError(f"{url}: unknown checkpoint format {meta.get('format')!r}")
    return meta


def load_checkpoint(checkpoint: str) -> tuple[Classifier, dict, dict]:
    """Rebuild the model of a checkpoint.

    Returns:
        (model in eval mode, meta, the raw state with "model" and maybe "optimizer").
    """
    meta = read_meta(checkpoint)
    state = read_state(storage.join(checkpoint, STATE))
    try:
        model = build_model(ModelArgs(**meta["model_args"]))
        model.load_state_dict(state["model"])
    except (RuntimeError, TypeError, KeyError) as exc:
        reason = str(exc).splitlines()[0][:200]
        raise UserError(
            f"{checkpoint}: {STATE} does not fit the model {META} describes "
            f"({meta.get('model_args', {}).get('backbone')}): {reason}; "
            "keep each checkpoint's two files together"
        ) from None
    return model.eval(), meta, state


# A promotion's final model: several checkpoints (the fold models) whose probabilities are
# averaged, with flip TTA, a temperature and an operating threshold fixed on out-of-fold
# predictions. ``model.json`` names the member folders relative to itself.
MODEL, MODEL_FORMAT = "model.json", "mammotune-model/1"


@dataclass(frozen=True)
class ModelSet:
    """What evaluate and predict score with: one checkpoint, or a promotion's final model."""

    url: str
    members: list[str]  # checkpoint URLs
    tta: bool = False
    temperature: float = 1.0
    threshold: float | None = None  # the operating threshold (two classes), if fixed
    meta: dict = field(default_factory=dict)  # model.json

    def calibrate(self, probabilities: np.ndarray) -> np.ndarray:
        """Temperature scaling of averaged class probabilities: softmax(log p / T)."""
        return temper(probabilities, self.temperature)


def temper(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T), row-wise: T > 1 softens, T < 1 sharpens, T = 1 keeps ``p``."""
    if temperature == 1.0:
        return np.asarray(probabilities)
    logits = np.log(np.clip(probabilities, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def open_model(url: str) -> ModelSet:
    """A checkpoint folder, or a final model folder (``model.json``), as a :class:`ModelSet`.

    Raises:
        UserError: neither is there.
    """
    url = storage.normalize(url)
    if storage.exists(storage.join(url, MODEL)):
        meta = storage.read_json(storage.join(url, MODEL))
        if meta.get("format") != MODEL_FORMAT:
            raise UserError(f"{url}/{MODEL}: unknown model format {meta.get('format')!r}")
        members = meta.get("members")
        if not isinstance(members, list) or not members:
            raise UserError(f"{url}/{MODEL}: no members; the final model's folder is damaged")
        return ModelSet(
            url=url,
            members=[storage.join_under(url, m, what="member") for m in members],
            tta=bool(meta.get("tta", False)),
            temperature=float(meta.get("temperature", 1.0)),
            threshold=meta.get("threshold"),
            meta=meta,
        )
    read_meta(url)  # a UserError when it is no checkpoint either
    return ModelSet(url=url, members=[url])

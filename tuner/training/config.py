"""The configuration of one trial: the searched dimensions plus the fixed settings.

Every value a search space may name is a field here, with its check, so a bad choice in a
space file is caught before any trial starts (see ``tuner.search.space``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator

from tuner.data.preprocess import ENHANCEMENTS
from tuner.data.tasks import TASKS
from tuner.errors import unknown_choice
from tuner.models.backbones import get_spec
from tuner.models.weights import TRANSFERS

__all__ = ["TrialConfig", "CLASS_WEIGHTS", "SEARCHABLE", "CATEGORICAL_ONLY", "WHOLE_NUMBERS"]

CLASS_WEIGHTS = ("none", "balanced")

# Fields a search-space file may search over or fix; the rest are set by the search runner.
SEARCHABLE = (
    "backbone",
    "class_weight",
    "dropout",
    "input_size",
    "transfer",
    "enhance",
    "lr",
    "weight_decay",
    "batch_size",
    "epochs",
)

# Settings a space may only list (names), and settings that are whole numbers.
CATEGORICAL_ONLY = ("backbone", "class_weight", "transfer", "enhance")
WHOLE_NUMBERS = ("input_size", "batch_size", "epochs")


class TrialConfig(BaseModel):
    """One trial's settings. ``class_weight`` is "none", "balanced" (inverse class
    frequency, as sklearn computes it) or a number: the weight of the positive class."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    # searched or fixed by the space file
    backbone: str = "mobilenet_v2"
    class_weight: str | float = "none"
    dropout: float = 0.2
    input_size: int = 224  # ROI tile side, or the whole image's long side
    transfer: str = "random"
    enhance: str = "none"  # none, equalize or clahe: which prepared tiles to read
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 32
    epochs: int = 10
    # set by the runner
    data: str = ""
    view: Literal["roi", "whole"] = "roi"
    task: str = "benign_vs_malignant"
    weights_dir: str | None = None
    seed: int = 0
    loader_workers: int = 0
    augment_on_gpu: bool = False  # flips and quarter turns on the GPU instead of CPU workers

    @field_validator("backbone")
    @classmethod
    def _backbone(cls, value: str) -> str:
        get_spec(value)  # raises a UserError listing the registered names
        return value

    @field_validator("transfer")
    @classmethod
    def _transfer(cls, value: str) -> str:
        if value not in TRANSFERS:
            raise ValueError(unknown_choice("transfer", value, TRANSFERS))
        return value

    @field_validator("enhance")
    @classmethod
    def _enhance(cls, value: str) -> str:
        if value not in ENHANCEMENTS:
            raise ValueError(unknown_choice("enhance", value, ENHANCEMENTS))
        return value

    @field_validator("task")
    @classmethod
    def _task(cls, value: str) -> str:
        if value not in TASKS:
            raise ValueError(unknown_choice("task", value, TASKS))
        return value

    @field_validator("class_weight")
    @classmethod
    def _class_weight(cls, value: str | float) -> str | float:
        if isinstance(value, str) and value not in CLASS_WEIGHTS:
            try:
                value = float(value)
            except ValueError:
                raise ValueError(
                    unknown_choice("class_weight", value, [*CLASS_WEIGHTS, "<a number > 0>"])
                ) from None
        if not isinstance(value, str) and value <= 0:
            raise ValueError(f"class_weight {value} must be > 0")
        return value

    @field_validator("dropout")
    @classmethod
    def _dropout(cls, value: float) -> float:
        if not 0.0 <= value < 1.0:
            raise ValueError(f"dropout {value} must be in [0, 1)")
        return value

    @field_validator("input_size", "batch_size", "epochs")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"{value} must be >= 1")
        return value

    @field_validator("lr")
    @classmethod
    def _lr(cls, value: float) -> float:
        if not 0.0 < value < 1.0:
            raise ValueError(f"lr {value} must be in (0, 1)")
        return value

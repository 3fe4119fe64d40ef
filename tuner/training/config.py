"""The configuration of one trial: the searched dimensions plus the fixed settings.

Every value a search space may name is a field here, with its check, so a bad choice in a
space file is caught before any trial starts (see ``tuner.search.space``).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from tuner.data.preprocess import ENHANCEMENTS
from tuner.data.tasks import TASKS
from tuner.errors import unknown_choice
from tuner.models.backbones import get_spec
from tuner.models.classifier import stem_blocks
from tuner.models.weights import TRANSFERS

__all__ = [
    "TrialConfig",
    "FUSIONS",
    "CLASS_WEIGHTS",
    "SEARCHABLE",
    "CATEGORICAL_ONLY",
    "WHOLE_NUMBERS",
]

CLASS_WEIGHTS = ("none", "balanced", "minority_x1.5")
# single: one image per sample; two_view: the CC and MLO of one breast as one sample (one
# backbone for both views, their pooled features concatenated into the head).
FUSIONS = ("single", "two_view")
# Tasks whose classes are ordered by severity, so that a breast takes its worst image's label.
TWO_VIEW_TASKS = ("benign_vs_malignant", "lesion_vs_tissue")
# "minority_xF": the minority class (fewest training rows) weighs F, the others 1.
MINORITY = re.compile(r"^minority_x(\d+(?:\.\d+)?)$")

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
    "head_epochs",
    "finetune_lr_factor",
    "patience",
    "max_backbone_size",
    "precision",
    "loader_workers",
    "augment_on_gpu",
    "fusion",
)

# Settings a space may only list (names), and settings that are whole numbers.
CATEGORICAL_ONLY = ("backbone", "transfer", "enhance", "precision", "fusion")
WHOLE_NUMBERS = (
    "input_size",
    "batch_size",
    "epochs",
    "head_epochs",
    "patience",
    "max_backbone_size",
    "loader_workers",
)


class TrialConfig(BaseModel):
    """One trial's settings.

    ``class_weight`` is "none", "balanced" (inverse class frequency, as sklearn computes it),
    "minority_xF" (the minority class weighs F, e.g. minority_x1.5 is the published +50%)
    or a number: the weight of the positive class.

    Training has two phases when the backbone is pretrained (``transfer`` other than
    random): ``head_epochs`` with the backbone frozen at ``lr``, then everything at
    ``lr * finetune_lr_factor``. ``patience`` > 0 stops a trial when the validation loss has
    not improved for that many epochs.
    """

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
    epochs: int = 10  # in all, head-only epochs included
    head_epochs: int = 2
    finetune_lr_factor: float = 0.1
    patience: int = 0
    max_backbone_size: int = 512  # larger inputs get stem blocks: 1024 -> 1, 2048 -> 2
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 on a GPU
    fusion: str = "single"  # single or two_view (whole images only)
    # set by the runner
    data: str = ""
    view: Literal["roi", "whole"] = "roi"
    task: str = "benign_vs_malignant"
    weights_dir: str | None = None
    seed: int = 0
    loader_workers: int = 0
    augment_on_gpu: bool = False  # flips and quarter turns on the GPU instead of CPU workers
    # set by a promotion (cross-validation by patient): the fold assignment's URL and the
    # held-out fold; folds without a fold trains on all of train+val (a refit)
    folds: str | None = None
    fold: int | None = None

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

    @field_validator("fusion")
    @classmethod
    def _fusion(cls, value: str) -> str:
        if value not in FUSIONS:
            raise ValueError(unknown_choice("fusion", value, FUSIONS))
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
        if isinstance(value, str) and value not in CLASS_WEIGHTS and not MINORITY.match(value):
            try:
                value = float(value)
            except ValueError:
                raise ValueError(
                    unknown_choice(
                        "class_weight", value, [*CLASS_WEIGHTS, "minority_x<F>", "<a number > 0>"]
                    )
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

    @field_validator("input_size", "batch_size", "epochs", "max_backbone_size")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"{value} must be >= 1")
        return value

    @field_validator("head_epochs", "patience", "loader_workers")
    @classmethod
    def _not_negative(cls, value: int) -> int:
        if value < 0:
            raise ValueError(f"{value} must be >= 0")
        return value

    @field_validator("finetune_lr_factor")
    @classmethod
    def _factor(cls, value: float) -> float:
        if not 0.0 < value <= 1.0:
            raise ValueError(f"finetune_lr_factor {value} must be in (0, 1]")
        return value

    @property
    def stem_blocks(self) -> int:
        return stem_blocks(self.input_size, self.max_backbone_size)

    @model_validator(mode="after")
    def _fusion_needs_whole_images(self):
        if self.fusion == "two_view" and self.view != "whole":
            raise ValueError(
                f"fusion two_view pairs the CC and MLO whole images of a breast, but the view "
                f"is {self.view!r}; use view: whole (a dataset prepared with --views whole), "
                "or fusion: single for ROI tiles"
            )
        if self.fusion == "two_view" and self.task not in TWO_VIEW_TASKS:
            raise ValueError(
                f"fusion two_view labels a breast by its worst finding, which task "
                f"{self.task} does not order; use it with {' or '.join(TWO_VIEW_TASKS)}"
            )
        return self

    @property
    def views(self) -> int:
        """Images per sample: 2 for two-view fusion (CC then MLO), else 1."""
        return 2 if self.fusion == "two_view" else 1

    @property
    def two_phase(self) -> bool:
        """Head-only epochs first (pretrained backbones only)."""
        return self.transfer != "random" and self.head_epochs > 0

    @field_validator("lr")
    @classmethod
    def _lr(cls, value: float) -> float:
        if not 0.0 < value < 1.0:
            raise ValueError(f"lr {value} must be in (0, 1)")
        return value

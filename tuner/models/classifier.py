"""The classifier a trial trains: input normalisation, a backbone and a dropout MLP head.

The head follows Jaamour et al.: MLP 512 -> 32 -> classes with dropout, here after global
average pooling so any input size works. Normalisation constants live in the model (and so
in every checkpoint): callers feed raw uint8 tiles.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from tuner.errors import UserError, unknown_choice
from tuner.models.backbones import create_backbone
from tuner.models.weights import TRANSFERS, load_imagenet_state

__all__ = ["ModelArgs", "Classifier", "build_model"]

# ImageNet mean/std collapsed to one channel (the mean over RGB), as timm does for in_chans=1.
GREY_MEAN, GREY_STD = 0.449, 0.226


@dataclass(frozen=True)
class ModelArgs:
    """Everything needed to rebuild a trained model's architecture (saved in checkpoints)."""

    backbone: str
    num_classes: int
    dropout: float = 0.2
    in_chans: int = 1
    mean: float = GREY_MEAN
    std: float = GREY_STD

    def to_dict(self) -> dict:
        return asdict(self)


class Classifier(nn.Module):
    def __init__(self, args: ModelArgs, backbone: nn.Module, width: int):
        super().__init__()
        self.args = args
        self.register_buffer("mean", torch.tensor(args.mean * 255.0))
        self.register_buffer("std", torch.tensor(args.std * 255.0))
        self.backbone = backbone
        self.head = nn.Sequential(
            nn.Dropout(args.dropout),
            nn.Linear(width, 512),
            nn.ReLU(inplace=True),
            nn.Dropout(args.dropout),
            nn.Linear(512, 32),
            nn.ReLU(inplace=True),
            nn.Linear(32, args.num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of raw tiles, (N, in_chans, H, W) with values 0-255."""
        x = (x.float() - self.mean) / self.std
        return self.head(self.backbone(x))


def build_model(args: ModelArgs, *, transfer: str = "random", weights_dir: str | None = None):
    """Build the classifier, with the backbone weights the transfer degree asks for."""
    if transfer not in TRANSFERS:
        raise UserError(unknown_choice("transfer", transfer, TRANSFERS))
    state = load_imagenet_state(args.backbone, weights_dir) if transfer == "imagenet" else None
    backbone, width = create_backbone(args.backbone, state_dict=state, in_chans=args.in_chans)
    return Classifier(args, backbone, width)

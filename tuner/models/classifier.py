"""The classifier a trial trains: input normalisation, an optional stem, a backbone and a
dropout MLP head.

The head follows Jaamour et al.: MLP 512 -> 32 -> classes with dropout, here after global
average pooling so any input size works. Normalisation constants live in the model (and so
in every checkpoint): callers feed raw uint8 tiles. Inputs larger than the backbone's working
size (published: 1024 and 2048 px whole images) pass first through one or two extra
conv + pool blocks, the stem, each halving the side.

A two-view model (``fusion="two_view"``) takes the CC and MLO images of one breast as the two
channels of one input (N, 2, H, W): one backbone, shared by both views, pools each view's
features, and their concatenation (late fusion) feeds the head.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from tuner.errors import UserError, unknown_choice
from tuner.models.backbones import create_backbone, get_spec
from tuner.models.weights import TRANSFERS, load_imagenet_state, load_mias_state

__all__ = ["ModelArgs", "Classifier", "build_model", "stem_blocks", "class_probabilities"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelArgs:
    """Everything needed to rebuild a trained model's architecture (saved in checkpoints).

    ``mean`` and ``std`` (input normalisation) default to what the backbone's registry entry
    says its weights expect, and are stored resolved, so a checkpoint never depends on
    the registry's defaults of a later version.
    """

    backbone: str
    num_classes: int
    dropout: float = 0.2
    in_chans: int = 1
    mean: float | None = None
    std: float | None = None
    stem_blocks: int = 0  # extra conv + pool blocks before the backbone
    fusion: str = "single"  # or "two_view": CC and MLO of one breast, one shared backbone

    def __post_init__(self):
        if self.mean is None or self.std is None:
            spec = get_spec(self.backbone)  # a UserError naming the registered backbones
            object.__setattr__(self, "mean", spec.mean if self.mean is None else self.mean)
            object.__setattr__(self, "std", spec.std if self.std is None else self.std)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def views(self) -> int:
        """Images per sample, the channels of the model's input: 2 for two-view, else 1."""
        return 2 if self.fusion == "two_view" else 1

    @property
    def backbone_chans(self) -> int:
        # The stem hands the backbone three channels, so ImageNet's RGB filters are kept.
        return 3 if self.stem_blocks else self.in_chans


def stem_blocks(input_size: int, max_backbone_size: int = 512) -> int:
    """Extra halving blocks for inputs above ``max_backbone_size``: 1024 -> 1, 2048 -> 2."""
    if input_size <= max_backbone_size:
        return 0
    return math.ceil(math.log2(input_size / max_backbone_size))


def _stem(args: ModelArgs) -> nn.Module:
    layers: list[nn.Module] = []
    channels = args.in_chans
    for block in range(args.stem_blocks):
        out = args.backbone_chans if block == args.stem_blocks - 1 else 16
        layers += [
            nn.Conv2d(channels, out, 3, padding=1, bias=False),
            nn.BatchNorm2d(out),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        ]
        channels = out
    return nn.Sequential(*layers)


class Classifier(nn.Module):
    def __init__(self, args: ModelArgs, backbone: nn.Module, width: int):
        super().__init__()
        self.args = args
        self.register_buffer("mean", torch.tensor(args.mean * 255.0))
        self.register_buffer("std", torch.tensor(args.std * 255.0))
        self.stem = _stem(args)
        self.backbone = backbone
        self.head = nn.Sequential(
            nn.Dropout(args.dropout),
            nn.Linear(width * args.views, 512),
            nn.ReLU(inplace=True),
            nn.Dropout(args.dropout),
            nn.Linear(512, 32),
            nn.ReLU(inplace=True),
            nn.Linear(32, args.num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of raw tiles, (N, in_chans, H, W) with values 0-255; for a
        two-view model (N, 2, H, W), CC then MLO."""
        return self.head(self.features(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled features the head takes: (N, width), or (N, 2 * width) for two views
        (the CC's, then the MLO's, from the same backbone)."""
        x = (x.float() - self.mean) / self.std
        views = self.args.views
        if views > 1:
            # Both views through the one backbone as one batch: (N, 2, H, W) -> (2N, 1, H, W).
            x = x.reshape(-1, 1, *x.shape[2:])
        pooled = self.backbone(self.stem(x))
        return pooled.reshape(-1, pooled.shape[1] * views) if views > 1 else pooled

    def head_parameters(self) -> list[nn.Parameter]:
        """What trains in the head-only phase: the head and the (always new) stem."""
        return [*self.stem.parameters(), *self.head.parameters()]


def build_model(args: ModelArgs, *, transfer: str = "random", weights_dir: str | None = None):
    """Build the classifier with the weights of a transfer-learning degree.

    - ``random``: everything randomly initialised;
    - ``imagenet``: torchvision's ImageNet backbone, random head;
    - ``imagenet_mias_head``: ImageNet backbone + the head trained on mini-MIAS with it;
    - ``mias_all``: every layer of the model fine-tuned on mini-MIAS.

    Layers the source model does not have keep their random initialisation: the stem, and
    the last head layer when the task's class count differs from mini-MIAS's two.
    """
    if transfer not in TRANSFERS:
        raise UserError(unknown_choice("transfer", transfer, TRANSFERS))
    imagenet = transfer in ("imagenet", "imagenet_mias_head")
    state = load_imagenet_state(args.backbone, weights_dir) if imagenet else None
    backbone, width = create_backbone(args.backbone, state_dict=state, in_chans=args.backbone_chans)
    model = Classifier(args, backbone, width)
    if transfer in ("mias_all", "imagenet_mias_head"):
        mias, _ = load_mias_state(transfer, args.backbone, weights_dir)
        prefixes = ("backbone.", "head.") if transfer == "mias_all" else ("head.",)
        own = model.state_dict()
        taken = {}
        for key, value in mias.items():
            if not key.startswith(prefixes) or key not in own:
                continue
            if own[key].shape == value.shape:
                taken[key] = value
            elif key == "head.1.weight" and own[key].shape[1] == value.shape[1] * args.views:
                # Two views: the mini-MIAS head's first layer on each view's features, halved,
                # so the head starts as the mean of what it says of either view.
                taken[key] = torch.cat([value] * args.views, dim=1) / args.views
            elif value.dim() == 4 and own[key].shape[1] == 3 and value.shape[1] == 1:
                # Behind a stem the backbone sees three channels; mini-MIAS models see one.
                taken[key] = value.repeat(1, 3, 1, 1) / 3
        skipped = [k for k in mias if k.startswith(prefixes) and k not in taken]
        if skipped:
            logger.info("mini-MIAS weights not transferred (shape differs): %s", skipped)
        model.load_state_dict(taken, strict=False)
    return model


def class_probabilities(
    model: nn.Module, tiles: torch.Tensor, *, tta: bool = False
) -> torch.Tensor:
    """Softmax probabilities of ``model`` for a batch of raw tiles (N, 1, H, W); with
    ``tta``, averaged over the four flips of each tile (identity, left-right, up-down, both:
    the flips training augments with, valid for both views)."""
    if not tta:
        return torch.softmax(model(tiles).float(), dim=1)
    views = (tiles, tiles.flip(-1), tiles.flip(-2), tiles.flip(-1).flip(-2))
    return torch.stack([torch.softmax(model(v).float(), dim=1) for v in views]).mean(0)

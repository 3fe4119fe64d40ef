"""Backbone registry: torchvision models by name, stripped to a pooled feature vector.

Like timm's ``create_model``: thin builders registered by name, one
:func:`create_backbone`, and the search space may name any registered backbone. Tests are
parametrised over :func:`list_backbones`, so a newly registered one is tested automatically.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torchvision
from torch import nn

from tuner.errors import UserError, unknown_choice

__all__ = ["BackboneSpec", "register_backbone", "list_backbones", "get_spec", "create_backbone"]


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    build: Callable[[dict | None, int], tuple[nn.Module, int]]  # (state, in_chans) -> (net, width)
    min_size: int  # smallest input side the architecture accepts
    published: bool  # one of the five backbones of the divide-and-conquer study
    imagenet: bool  # torchvision publishes ImageNet weights for it


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(
    name: str,
    build: Callable[[dict | None, int], tuple[nn.Module, int]],
    *,
    min_size: int = 32,
    published: bool = False,
    imagenet: bool = False,
) -> None:
    """Register a builder ``(state_dict or None, in_chans) -> (module, feature width)``."""
    _REGISTRY[name] = BackboneSpec(name, build, min_size, published, imagenet)


def list_backbones() -> list[str]:
    return sorted(_REGISTRY)


def get_spec(name: str) -> BackboneSpec:
    if name not in _REGISTRY:
        raise UserError(unknown_choice("backbone", name, list_backbones()))
    return _REGISTRY[name]


def _strip_fc(model: nn.Module) -> int:
    width = model.fc.in_features
    model.fc = nn.Identity()
    return width


def _strip_inception(model: nn.Module) -> int:
    model.aux_logits, model.AuxLogits = False, None
    model.dropout = nn.Identity()  # the head has its own dropout
    return _strip_fc(model)


def _strip_classifier(model: nn.Module) -> int:
    head = model.classifier
    first = (
        head
        if isinstance(head, nn.Linear)
        else next(m for m in head.modules() if isinstance(m, nn.Linear))
    )
    model.classifier = nn.Identity()
    return first.in_features


def _strip_vgg(model: nn.Module) -> int:
    # Global average pooling instead of VGG's 7x7 flatten: any input size, 512 features.
    model.avgpool = nn.AdaptiveAvgPool2d(1)
    model.classifier = nn.Identity()
    return 512


def _adapt_input_conv(model: nn.Module, in_chans: int) -> None:
    """Give the first convolution ``in_chans`` inputs; for greyscale, sum the RGB filters
    (timm's approach), which keeps ImageNet features meaningful on one channel."""
    if in_chans == 3:
        return
    for parent in model.modules():
        for child_name, conv in parent.named_children():
            if isinstance(conv, nn.Conv2d) and conv.in_channels == 3:
                new = nn.Conv2d(
                    in_chans,
                    conv.out_channels,
                    conv.kernel_size,
                    conv.stride,
                    conv.padding,
                    conv.dilation,
                    conv.groups,
                    conv.bias is not None,
                    conv.padding_mode,
                )
                with torch.no_grad():
                    weight = conv.weight.sum(dim=1, keepdim=True)
                    new.weight.copy_(weight.repeat(1, in_chans, 1, 1) / in_chans)
                    if conv.bias is not None:
                        new.bias.copy_(conv.bias)
                setattr(parent, child_name, new)
                return
    raise ValueError("no 3-channel input convolution found")


def _torchvision(name: str, strip: Callable[[nn.Module], int], **kwargs):
    """Builder for a torchvision classification model: build, load the given (ImageNet)
    weights into the full model, strip the classifier, adapt the input convolution."""

    def build(state_dict: dict | None, in_chans: int) -> tuple[nn.Module, int]:
        model = torchvision.models.get_model(name, weights=None, **kwargs)
        if state_dict is not None:
            model.load_state_dict(state_dict)
        width = strip(model)
        _adapt_input_conv(model, in_chans)
        return model, width

    return build


def _small_vgg_bn(state_dict: dict | None, in_chans: int) -> tuple[nn.Module, int]:
    """A small VGG-style network with batch norm for tiles trained from scratch, after
    Scuccimarra's custom network: four blocks of two 3x3 conv + BN + ReLU and a max pool,
    16-32-64-128 channels, global average pooling. Learns fast on a CPU."""
    layers: list[nn.Module] = []
    channels = in_chans
    for width in (16, 32, 64, 128):
        for i in range(2):
            layers += [
                nn.Conv2d(channels if i == 0 else width, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
        layers.append(nn.MaxPool2d(2))
        channels = width
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    if state_dict is not None:
        model.load_state_dict(state_dict)
    return model, channels


for _name, _strip, _min, _published in (
    ("vgg19", _strip_vgg, 32, True),
    ("resnet50", _strip_fc, 32, True),
    ("inception_v3", _strip_inception, 75, True),
    ("densenet121", _strip_classifier, 32, True),
    ("mobilenet_v2", _strip_classifier, 32, True),
    ("resnet18", _strip_fc, 32, False),
    ("mobilenet_v3_small", _strip_classifier, 32, False),
    ("efficientnet_b0", _strip_classifier, 32, False),
):
    # Inception: the Classifier normalises inputs itself, and init_weights=False skips a
    # slow scipy initialisation (PyTorch's default init is used, or the given weights).
    _extra = {"transform_input": False, "init_weights": False} if _name == "inception_v3" else {}
    register_backbone(
        _name,
        _torchvision(_name, _strip, **_extra),
        min_size=_min,
        published=_published,
        imagenet=True,
    )
register_backbone("small_vgg_bn", _small_vgg_bn, min_size=16)


def create_backbone(
    name: str, *, state_dict: dict[str, torch.Tensor] | None = None, in_chans: int = 1
) -> tuple[nn.Module, int]:
    """Build a registered backbone that maps (N, in_chans, H, W) to (N, width) features.

    Args:
        state_dict: weights for the full model (for a torchvision model, its own state dict,
            for example ImageNet), loaded before the classifier is stripped; None for random
            initialisation.
        in_chans: input channels (1 for mammograms).

    Returns:
        (module, width).
    """
    return get_spec(name).build(state_dict, in_chans)

"""Backbone registry: networks by name, stripped to a pooled feature vector, with the metadata
that travels with them.

Like timm's ``create_model``: thin builders registered by name with a decorator
(:func:`register_backbone`, which refuses a name already taken), one
:func:`create_backbone`, and the search space may name any registered backbone. Each entry
carries its metadata (:class:`BackboneSpec`: smallest input, torchvision's ImageNet weights
file, the normalisation its weights expect), so no caller hard-codes it. Tests are
parametrised over :func:`list_backbones`, so a newly registered one is tested automatically.

Backbones from other packages register through the entry-point group ``mammotune.backbones``
(a module whose import registers them): the registry loads it in every process that looks a
backbone up, Ray trial workers included, wherever the package is installed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torchvision
from torch import nn

from tuner.errors import UserError, unknown_choice

__all__ = [
    "GREY_MEAN",
    "GREY_STD",
    "PLUGIN_GROUP",
    "BackboneSpec",
    "register_backbone",
    "list_backbones",
    "get_spec",
    "create_backbone",
]

logger = logging.getLogger(__name__)

# ImageNet mean/std collapsed to one channel (the mean over RGB), as timm does for in_chans=1.
GREY_MEAN, GREY_STD = 0.449, 0.226
PLUGIN_GROUP = "mammotune.backbones"
# Where torchvision publishes its weight files (each file name carries its hash prefix).
TORCHVISION_MODELS = "https://download.pytorch.org/models"

Builder = Callable[[dict | None, int], tuple[nn.Module, int]]  # (state, in_chans) -> (net, width)


@dataclass(frozen=True)
class BackboneSpec:
    """A registered backbone and its metadata."""

    name: str
    build: Builder
    min_size: int  # smallest input side the architecture accepts
    published: bool  # one of the five backbones of the divide-and-conquer study
    weights_file: str | None  # torchvision's ImageNet file name; None: no ImageNet weights
    mean: float  # input normalisation on one channel, as fractions of full scale
    std: float

    @property
    def imagenet(self) -> bool:
        """torchvision publishes ImageNet weights for it."""
        return self.weights_file is not None

    @property
    def weights_url(self) -> str | None:
        """Where torchvision publishes those weights."""
        return f"{TORCHVISION_MODELS}/{self.weights_file}" if self.weights_file else None


_REGISTRY: dict[str, BackboneSpec] = {}
_plugins_loaded = False


def register_backbone(
    name: str,
    *,
    min_size: int = 32,
    published: bool = False,
    weights_file: str | None = None,
    mean: float = GREY_MEAN,
    std: float = GREY_STD,
) -> Callable[[Builder], Builder]:
    """Decorator: register a builder ``(state_dict or None, in_chans) -> (module, width)``.

    Example::

        @register_backbone("tiny_cnn", min_size=16)
        def tiny_cnn(state_dict, in_chans):
            ...
            return module, width

    Raises:
        UserError: ``name`` is taken (names are never silently replaced).
    """

    def register(build: Builder) -> Builder:
        if name in _REGISTRY:
            raise UserError(
                f"backbone {name!r} is already registered; register yours under another name"
            )
        _REGISTRY[name] = BackboneSpec(
            name, build, min_size, published, weights_file, float(mean), float(std)
        )
        return build

    return register


def _load_plugins() -> None:
    """Import the modules of the ``mammotune.backbones`` entry points, once per process."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from importlib.metadata import entry_points

    for entry in entry_points(group=PLUGIN_GROUP):
        try:
            entry.load()
        except Exception as exc:  # a broken plugin must not take the built-in ones down
            logger.warning(
                "backbone plugin %s (%s) failed to load: %s", entry.name, entry.value, exc
            )


def list_backbones() -> list[str]:
    """Every registered backbone name, sorted."""
    _load_plugins()
    return sorted(_REGISTRY)


def get_spec(name: str) -> BackboneSpec:
    """The registered backbone ``name``.

    Raises:
        UserError: no such backbone (the message lists the registered ones).
    """
    if name not in _REGISTRY:
        _load_plugins()
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


_TORCHVISION = (
    # name, how to strip its classifier, min input side, published, ImageNet weights file
    ("vgg19", _strip_vgg, 32, True, "vgg19-dcbb9e9d.pth"),
    ("resnet50", _strip_fc, 32, True, "resnet50-11ad3fa6.pth"),
    ("inception_v3", _strip_inception, 75, True, "inception_v3_google-0cc3c7bd.pth"),
    ("densenet121", _strip_classifier, 32, True, "densenet121-a639ec97.pth"),
    ("mobilenet_v2", _strip_classifier, 32, True, "mobilenet_v2-7ebf99e0.pth"),
    ("resnet18", _strip_fc, 32, False, "resnet18-f37072fd.pth"),
    ("mobilenet_v3_small", _strip_classifier, 32, False, "mobilenet_v3_small-047dcff4.pth"),
    ("efficientnet_b0", _strip_classifier, 32, False, "efficientnet_b0_rwightman-7f5810bc.pth"),
)
for _name, _strip, _min, _published, _file in _TORCHVISION:
    # Inception: the Classifier normalises inputs itself, and init_weights=False skips a
    # slow scipy initialisation (PyTorch's default init is used, or the given weights).
    _extra = {"transform_input": False, "init_weights": False} if _name == "inception_v3" else {}
    register_backbone(_name, min_size=_min, published=_published, weights_file=_file)(
        _torchvision(_name, _strip, **_extra)
    )


@register_backbone("small_vgg_bn", min_size=16)
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

"""Pretrained weights, read from a folder or bucket the user gives; never downloaded silently.

ImageNet weights use torchvision's own file names (``mobilenet_v2-7ebf99e0.pth``, ...), so a
folder filled by torchvision's cache or by hand works as is.
"""

from __future__ import annotations

import io
import posixpath
import re

import torch
import torchvision

from tuner import storage
from tuner.errors import UserError
from tuner.models.backbones import get_spec

__all__ = [
    "TRANSFERS",
    "imagenet_filename",
    "imagenet_url",
    "find_imagenet_weights",
    "load_imagenet_state",
]

# Transfer-learning degrees. Issue 4 adds the mini-MIAS ones (published degrees a and b).
TRANSFERS = {
    "imagenet": "ImageNet backbone, random head (published degree c)",
    "random": "everything randomly initialised (published degree d)",
}

# torchvision's DenseNet files predate a module rename; remapped as torchvision does (plus
# num_batches_tracked, which newer saves of the old layout carry).
_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


def imagenet_url(backbone: str) -> str:
    """Where torchvision publishes the default ImageNet weights of ``backbone``.

    Raises:
        UserError: the backbone has no ImageNet weights (a custom network).
    """
    if not get_spec(backbone).imagenet:
        raise UserError(
            f"backbone {backbone} has no ImageNet weights; use transfer 'random' with it"
        )
    return torchvision.models.get_model_weights(backbone).DEFAULT.url


def imagenet_filename(backbone: str) -> str:
    """torchvision's file name for the default ImageNet weights of ``backbone``."""
    return posixpath.basename(imagenet_url(backbone))


def find_imagenet_weights(backbone: str, weights_dir: str | None) -> str:
    """The URL of ``backbone``'s ImageNet file in ``weights_dir``, checked to exist.

    Raises:
        UserError: no folder given, no ImageNet weights for this backbone, or no file there.
    """
    name = imagenet_filename(backbone)
    if not weights_dir:
        raise UserError(
            f"transfer 'imagenet' needs ImageNet weights: pass --weights DIR with {name} "
            f"in it (download from {imagenet_url(backbone)} on a machine with internet)"
        )
    url = storage.join(weights_dir, name)
    if not storage.exists(url):
        raise UserError(
            f"ImageNet weights for {backbone} not found at {url}; "
            f"download {imagenet_url(backbone)} into {storage.normalize(weights_dir)}"
        )
    return url


def load_imagenet_state(backbone: str, weights_dir: str | None) -> dict[str, torch.Tensor]:
    """Read the ImageNet state dict of ``backbone`` from ``weights_dir`` (weights only)."""
    url = find_imagenet_weights(backbone, weights_dir)
    state = torch.load(io.BytesIO(storage.read_bytes(url)), map_location="cpu", weights_only=True)
    if backbone.startswith("densenet"):
        state = {_DENSENET_KEY.sub(r"\1\2", k): v for k, v in state.items()}
    return state

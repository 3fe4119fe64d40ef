"""Pretrained weights, read from a folder or bucket the user gives; never downloaded silently.

One weights folder (``--weights DIR``, local or a bucket URL) holds both kinds:

- ImageNet weights under torchvision's own file names (``mobilenet_v2-7ebf99e0.pth``, ...),
  so a folder filled by torchvision's cache, by ``mammotune weights fetch`` or by hand works;
- mini-MIAS models written by ``mammotune pretrain-mias``:
  ``mini-mias/<backbone>/head/`` (ImageNet backbone frozen, head trained on mini-MIAS) and
  ``mini-mias/<backbone>/all/`` (then every layer fine-tuned), each a mammotune checkpoint.
"""

from __future__ import annotations

import io
import posixpath
import re

import torch

from tuner import storage
from tuner.errors import UserError
from tuner.models.backbones import get_spec

__all__ = [
    "TRANSFERS",
    "imagenet_filename",
    "imagenet_url",
    "find_imagenet_weights",
    "load_imagenet_state",
    "MIAS_STAGES",
    "mias_checkpoint",
    "find_transfer_weights",
    "load_mias_state",
    "fetch_imagenet",
]

# Transfer-learning degrees, as published (DOMAIN.md, degrees a-d).
TRANSFERS = {
    "mias_all": "(a) every layer from the model trained on binarised mini-MIAS",
    "imagenet_mias_head": "(b) ImageNet backbone + head trained on mini-MIAS",
    "imagenet": "(c) ImageNet backbone, random head",
    "random": "(d) everything randomly initialised",
}
# The pretrain-mias stage each mini-MIAS degree loads.
MIAS_STAGES = {"mias_all": "all", "imagenet_mias_head": "head"}

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
    spec = get_spec(backbone)
    if spec.weights_url is None:
        raise UserError(
            f"backbone {backbone} has no ImageNet weights; use transfer 'random' with it"
        )
    return spec.weights_url


def imagenet_filename(backbone: str) -> str:
    """torchvision's file name for the default ImageNet weights of ``backbone`` (from the
    registry's metadata)."""
    return posixpath.basename(imagenet_url(backbone))


def find_imagenet_weights(backbone: str, weights_dir: str | None) -> str:
    """The URL of ``backbone``'s ImageNet file in ``weights_dir``, checked to exist.

    Raises:
        UserError: no folder given, no ImageNet weights for this backbone, or no file there.
    """
    name = imagenet_filename(backbone)
    if not weights_dir:
        raise UserError(
            f"ImageNet transfer needs weights: pass --weights DIR with {name} in it "
            f"(`mammotune weights fetch DIR --backbones {backbone}` on a machine with internet)"
        )
    url = storage.join(weights_dir, name)
    if not storage.exists(url):
        raise UserError(
            f"ImageNet weights for {backbone} not found at {url}; run `mammotune weights fetch "
            f"{storage.normalize(weights_dir)} --backbones {backbone}` on a machine with internet"
        )
    return url


def read_state(url: str) -> dict:
    """A ``torch.save`` file read with ``weights_only=True``: tensors and plain containers only,
    so a file carrying pickled code is refused, never run.

    Raises:
        UserError: the file holds anything else (a pickled payload, a foreign format).
    """
    try:
        return torch.load(
            io.BytesIO(storage.read_bytes(url)), map_location="cpu", weights_only=True
        )
    except Exception as exc:  # pickle.UnpicklingError, RuntimeError: what weights_only refuses
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"{url} is not a plain state dict and was not loaded (weights_only refused it: "
            f"{reason}); use weights and checkpoints made by mammotune or torchvision"
        ) from None


def load_imagenet_state(backbone: str, weights_dir: str | None) -> dict[str, torch.Tensor]:
    """Read the ImageNet state dict of ``backbone`` from ``weights_dir`` (weights only)."""
    url = find_imagenet_weights(backbone, weights_dir)
    state = read_state(url)
    if backbone.startswith("densenet"):
        state = {_DENSENET_KEY.sub(r"\1\2", k): v for k, v in state.items()}
    return state


def mias_checkpoint(weights_dir: str, backbone: str, stage: str) -> str:
    """Where ``pretrain-mias`` stores the mini-MIAS model of ``backbone`` for ``stage``."""
    return storage.join(weights_dir, "mini-mias", backbone, stage)


def find_transfer_weights(transfer: str, backbone: str, weights_dir: str | None) -> list[str]:
    """Every file the transfer degree needs for ``backbone``, checked to exist.

    Raises:
        UserError: a file is missing; the message says which command makes it.
    """
    if transfer == "random":
        return []
    if transfer == "imagenet":
        return [find_imagenet_weights(backbone, weights_dir)]
    stage = MIAS_STAGES[transfer]
    if not weights_dir:
        raise UserError(
            f"transfer {transfer!r} needs a mini-MIAS model: run `mammotune pretrain-mias "
            f"--weights DIR --backbones {backbone}` and pass --weights DIR"
        )
    url = storage.join(mias_checkpoint(weights_dir, backbone, stage), "state.pt")
    if not storage.exists(url):
        raise UserError(
            f"transfer {transfer!r} needs the mini-MIAS model of {backbone}, not found at {url}; "
            f"run `mammotune pretrain-mias --data MIAS --weights {storage.normalize(weights_dir)} "
            f"--backbones {backbone}`"
        )
    return [url]


def load_mias_state(
    transfer: str, backbone: str, weights_dir: str | None
) -> tuple[dict[str, torch.Tensor], dict]:
    """The classifier state dict and ``checkpoint.json`` of the mini-MIAS model a transfer
    degree starts from (read with ``weights_only=True``)."""
    (url,) = find_transfer_weights(transfer, backbone, weights_dir)
    meta = storage.read_json(posixpath.join(posixpath.dirname(url), "checkpoint.json"))
    if meta.get("model_args", {}).get("backbone") != backbone:
        raise UserError(
            f"{url} holds a {meta.get('model_args', {}).get('backbone')} model, not {backbone}"
        )
    return read_state(url)["model"], meta


def fetch_imagenet(
    dest: str, backbones: list[str], *, base_url: str | None = None, progress: bool = True
) -> list[tuple[str, str]]:
    """Download the ImageNet weights of ``backbones`` into ``dest`` (a folder or bucket URL),
    checking each file against the SHA-256 prefix in torchvision's file name. The explicit,
    one-time step for a machine with internet; searches then read from ``dest``.

    Args:
        base_url: a mirror holding torchvision's file names (default: torchvision's own URLs).

    Returns:
        ``(file URL, "downloaded" or "already there")`` per backbone.

    Raises:
        UserError: a backbone without ImageNet weights, a download that fails, or a file whose
            content does not match its name (nothing is written for it).
    """
    import tempfile
    import urllib.error

    from torch.hub import download_url_to_file

    done = []
    for backbone in backbones:
        name = imagenet_filename(backbone)
        target = storage.join(dest, name)
        if storage.exists(target):
            done.append((target, "already there"))
            continue
        url = f"{base_url.rstrip('/')}/{name}" if base_url else imagenet_url(backbone)
        digest = re.search(r"-([0-9a-f]{8,})\.pth$", name)
        with tempfile.TemporaryDirectory() as folder:
            local = f"{folder}/{name}"
            try:
                download_url_to_file(
                    url, local, hash_prefix=digest.group(1) if digest else None, progress=progress
                )
            except (urllib.error.URLError, OSError) as exc:
                raise UserError(
                    f"cannot download {url} ({exc}); check the network or URL"
                ) from None
            except RuntimeError as exc:  # torch.hub: "invalid hash value"
                raise UserError(
                    f"{url} does not match its name ({exc}); nothing was written for {backbone}"
                ) from None
            with open(local, "rb") as f:
                storage.write_bytes(target, f.read())
        done.append((target, "downloaded"))
    return done

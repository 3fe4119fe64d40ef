"""Where the model looks: Grad-CAM (Selvaraju et al., 2017) heatmaps over the tile a model saw.

Checkpoints go through captum's ``LayerGradCam`` on the backbone's last spatial stage
(:func:`tuner.results.bundle.cam_layer`). A TorchScript bundle runs no Python hooks, so its
``explain`` method returns each member's logits and that stage's output, and the same
formula is applied with autograd: ReLU(sum_k mean_ij(d logit / d A_k) * A_k). An ensemble's
map is the mean of its members' maps, each scaled to [0, 1] first.
"""

from __future__ import annotations

import os

import cv2
import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["gradcam", "gradcam_scripted", "overlay", "write_overlay"]


def _upsampled(cams: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    """(N, 1, h, w) maps -> (N, H, W) in [0, 1], each map scaled by its own maximum."""
    cams = F.interpolate(cams.detach().float(), size=shape, mode="bilinear", align_corners=False)
    cams = cams[:, 0].clamp_min(0)
    peak = cams.flatten(1).max(1).values.clamp_min(1e-12)[:, None, None]
    return (cams / peak).numpy()


def gradcam(models: list[torch.nn.Module], tiles: torch.Tensor, target: int) -> np.ndarray:
    """Grad-CAM of ``target``'s logit for raw tiles (N, 1, H, W), averaged over ``models``
    (checkpoint classifiers); (N, H, W) in [0, 1]."""
    from captum.attr import LayerGradCam

    from tuner.results.bundle import cam_layer

    tiles = tiles.float()
    maps = []
    for model in models:
        layer = cam_layer(model, tiles[:1])
        cam = LayerGradCam(model, layer).attribute(tiles, target=target, relu_attributions=True)
        maps.append(_upsampled(cam, tiles.shape[-2:]))
    return np.mean(maps, axis=0)


def gradcam_scripted(module, tiles: torch.Tensor, target: int) -> np.ndarray:
    """Grad-CAM of ``target`` from a TorchScript bundle's ``explain`` (see module doc)."""
    tiles = tiles.float()
    # The JIT's optimised executor fuses the layer output into a differentiable subgraph
    # after the first call, and autograd then no longer sees it: run it unoptimised.
    with torch.enable_grad(), torch.jit.optimized_execution(False):
        outputs = module.explain(tiles)
        maps = []
        for logits, features in zip(outputs[0::2], outputs[1::2], strict=True):
            (grads,) = torch.autograd.grad(logits[:, target].sum(), features)
            cam = (grads.mean(dim=(2, 3), keepdim=True) * features).sum(1, keepdim=True)
            maps.append(_upsampled(torch.relu(cam), tiles.shape[-2:]))
    return np.mean(maps, axis=0)


def overlay(tile: np.ndarray, cam: np.ndarray, *, min_side: int = 256) -> np.ndarray:
    """A BGR image: the uint8 tile in grey with the heatmap in colour over it (JET, 40%),
    enlarged to at least ``min_side`` px so a small tile can be seen."""
    scale = max(1, int(np.ceil(min_side / min(tile.shape))))
    size = (tile.shape[1] * scale, tile.shape[0] * scale)
    grey = cv2.resize(tile, size, interpolation=cv2.INTER_NEAREST)
    heat = cv2.resize((cam * 255).astype(np.uint8), size, interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap(heat, cv2.COLORMAP_JET)
    return cv2.addWeighted(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR), 0.6, colour, 0.4, 0)


def write_overlay(path: str, tile: np.ndarray, cam: np.ndarray) -> str:
    """Write :func:`overlay` as a PNG; returns ``path``."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    if not cv2.imwrite(path, overlay(tile, cam)):
        raise OSError(f"could not write {path}")
    return path

"""Image preprocessing as published: intensity windowing and ROI-centred context tiles.

ROI tiles follow Scuccimarra's "method 2" (see ``datasets/cbis_ddsm.md``): a square tile of
``context_px`` (598 at CBIS-DDSM resolution) centred on the ROI; when the ROI is larger, the
tile grows to the ROI's bounding box padded by 5%, and a small ROI is never blown up to fill
the tile (resizing by ROI size did not generalise). Random-crop variants shift the tile while
keeping the ROI inside it, then flip and rotate by multiples of 90 degrees.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["to_uint8", "roi_box", "tile_side", "roi_tiles"]


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Window a decoded mammogram to 8 bits between its 0.1st and 99.9th percentiles."""
    sample = image[:: max(1, image.shape[0] // 512), :: max(1, image.shape[1] // 512)]
    low, high = np.percentile(sample, [0.1, 99.9])
    scaled = (image - low) * (255.0 / max(high - low, 1e-6))
    return np.clip(scaled, 0, 255).astype(np.uint8)


def roi_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Bounding box (y0, x0, y1, x1) of a binary mask; exclusive ends."""
    ys, xs = np.nonzero(mask)
    return int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1


def tile_side(roi_side: int, context_px: int) -> int:
    """Side of the square tile around a ROI whose larger bounding-box side is ``roi_side``."""
    if roi_side < context_px:
        return max(context_px, int(round(roi_side * 1.2)))
    return int(round(roi_side * 1.05))


def _crop(image: np.ndarray, y0: int, x0: int, side: int) -> np.ndarray:
    """Square crop that may reach past the image edge (filled with background, 0)."""
    h, w = image.shape
    out = np.zeros((side, side), image.dtype)
    sy0, sx0 = max(0, y0), max(0, x0)
    sy1, sx1 = min(h, y0 + side), min(w, x0 + side)
    if sy0 < sy1 and sx0 < sx1:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return out


def roi_tiles(
    image: np.ndarray,
    mask: np.ndarray,
    *,
    context_px: int,
    sizes: tuple[int, ...],
    variants: int,
    rng: np.random.Generator,
) -> list[dict[int, np.ndarray]]:
    """Tiles around the ROI in ``mask``, each resized to every size in ``sizes``.

    Args:
        image: uint8 mammogram.
        mask: boolean ROI mask of the same shape.
        variants: 0 gives the centred tile only (for evaluation splits); n > 0 gives n
            random variants (shift, flip, rot90) for training.

    Returns:
        One ``{size: uint8 tile}`` dict per tile.
    """
    y0, x0, y1, x1 = roi_box(mask)
    roi_h, roi_w = y1 - y0, x1 - x0
    side = tile_side(max(roi_h, roi_w), context_px)
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    tiles = []
    for _ in range(max(1, variants)):
        dy = dx = 0.0
        if variants:
            # Shift while keeping the ROI inside the tile.
            slack_y, slack_x = max(0.0, (side - roi_h) / 2), max(0.0, (side - roi_w) / 2)
            dy, dx = rng.uniform(-slack_y, slack_y) * 0.8, rng.uniform(-slack_x, slack_x) * 0.8
        crop = _crop(image, int(round(cy + dy - side / 2)), int(round(cx + dx - side / 2)), side)
        if variants:
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
            crop = np.rot90(crop, int(rng.integers(4)))
        crop = np.ascontiguousarray(crop)
        tiles.append(
            {size: cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA) for size in sizes}
        )
    return tiles

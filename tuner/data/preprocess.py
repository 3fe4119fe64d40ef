"""Image preprocessing as published (see ``datasets/cbis_ddsm.md``).

- Intensity: decoded values windowed to 8 bits between their 0.1st and 99.9th percentiles
  (of the pixels outside any border strip, below).
- Breast region: bright strips along the image border (unexposed film edge, label tape on
  digitised film: near-saturated, up to about 2% of the side thick, along all or part of a
  side) are found first (:func:`border_strips`: short bright runs from an edge ending in a
  sharp drop, of constant depth along the edge, so a pectoral muscle does not qualify) and
  cut away, as they would otherwise join the breast where they touch it. Then Otsu threshold
  on a downsampled copy, largest connected component, holes filled; everything outside it
  (background, burnt-in labels, border strips) is set to 0.
- Enhancement (optional): Gaussian filter (sigma 0.5) then histogram equalisation or CLAHE
  (Jaamour et al.: helps at large input sizes).
- ROI tiles (Scuccimarra's "method 2"): a square tile of ``context_px`` centred on the ROI;
  an ROI larger than that gets its bounding box plus 5%; a small ROI is never blown up to
  fill the tile (resizing by ROI size did not generalise). Random-crop variants shift the tile
  while keeping the ROI inside, then flip and rotate by multiples of 90 degrees.
- Tissue tiles: tiles of the same side inside the breast, away from every ROI, kept only when
  their mean and standard deviation lie within thresholds (no background, no artefacts).
- Whole images: cropped to the breast, chest wall turned to the left, padded to a 1.5:1
  height:width aspect (2048 x 1376 in Jaamour et al.) and resized.

Crop boxes are drawn once per finding and cut from every enhancement of the image, so the
variants of one tile show the same crop (MONAI's "image and mask move together").

One path from a source image to a model's input, for every caller: a decoded mammogram
becomes a :class:`SourceImage` (windowed, breast found, background zeroed, each enhancement
computed once), and :func:`model_inputs` cuts a ROI or tissue tile or the whole image from it.
prepare stores what it returns in the shards and predict feeds it to the model, so the two
cannot drift apart (``tests/data/test_one_path.py`` holds them to the bit). ROI masks are
fitted to their image by :func:`fit_mask`, for prepare and predict alike, and
:class:`Preprocessing` is what travels with a model to say which inputs it takes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from tuner.errors import UserError, unknown_choice

__all__ = [
    "ENHANCEMENTS",
    "VIEWS",
    "WHOLE_ASPECT",
    "MAX_MASK_ASPECT_ERROR",
    "Box",
    "SourceImage",
    "Preprocessing",
    "model_inputs",
    "is_mask",
    "is_lossy_mask",
    "fit_mask",
    "to_uint8",
    "border_strips",
    "breast_mask",
    "enhance",
    "roi_box",
    "tile_side",
    "roi_boxes",
    "tissue_boxes",
    "cut",
    "whole_shape",
    "whole_image",
]

ENHANCEMENTS = ("none", "equalize", "clahe")
VIEWS = ("roi", "whole")  # a tile around a finding (or of tissue), or the whole breast
WHOLE_ASPECT = 1.5  # height : width of the whole-image view
# Tissue tiles are kept when mean and standard deviation (uint8) fall in these ranges: darker
# tiles are mostly background or skin line, flatter ones are pectoral muscle or artefacts.
TISSUE_MEAN = (40.0, 230.0)
TISSUE_STD = (4.0, 70.0)
# Masks whose aspect ratio differs from their image's by more than this are not rescaled.
MAX_MASK_ASPECT_ERROR = 0.02


@dataclass(frozen=True)
class Box:
    """A square crop (may reach past the image edge) and the flip / quarter turns applied."""

    y0: int
    x0: int
    side: int
    flip: bool = False
    turns: int = 0


def to_uint8(image: np.ndarray, *, ignore: np.ndarray | None = None) -> np.ndarray:
    """Window a decoded mammogram to 8 bits between its 0.1st and 99.9th percentiles (of
    the pixels outside ``ignore``, a boolean mask, where given)."""
    grid = (
        slice(None, None, max(1, image.shape[0] // 512)),
        slice(None, None, max(1, image.shape[1] // 512)),
    )
    sample = image[grid]
    if ignore is not None and not ignore[grid].all():
        sample = sample[~ignore[grid]]
    low, high = (float(v) for v in np.percentile(sample, [0.1, 99.9]))
    scale = 255.0 / max(high - low, 1e-6)
    # One saturating pass in OpenCV (5x faster than NumPy's subtract, multiply, clip), on
    # the decoded type where OpenCV takes it (8/16-bit integers, float32).
    if image.dtype not in (np.uint8, np.uint16, np.int16, np.float32):
        image = image.astype(np.float32)
    floor = cv2.max(image, low)
    return cv2.convertScaleAbs(floor, alpha=scale, beta=-low * scale)


# Border strips (unexposed film edge, label tape on digitised film): near-saturated runs of
# pixels from an image edge, at most STRIP_DEPTH of the perpendicular side deep, ending in a
# drop of at least STRIP_DROP grey levels within 3 pixels, of about the same depth along at
# least STRIP_LENGTH of the edge.
STRIP_LEVEL = 216  # uint8, about 0.85 of full scale after windowing
STRIP_DEPTH = 0.03
STRIP_DROP = 30
STRIP_LENGTH = 0.03
STRIP_SPREAD = 12  # grey levels a strip's pixels stay within, about its median
STRIP_MARGIN = 1  # pixels added inwards of a strip found (blur: JPEG, resampling)
STRIP_MARGIN_ALONG = 2  # and at its ends


def _edge_strip_depths(band: np.ndarray) -> np.ndarray:
    """Per position along an edge, how deep (pixels from the edge, margin included) the
    border strip reaches there, 0 where there is none. ``band`` holds the pixels near the
    edge, row 0 on the edge and each column one line perpendicular to it."""
    depth, length = band.shape
    columns = np.arange(length)
    # Averaged along the edge only: noise is evened out, the strip's inner edge stays sharp.
    smooth = cv2.blur(band, (3, 1), borderType=cv2.BORDER_REPLICATE)
    bright = smooth >= STRIP_LEVEL
    head = bright[:4]  # a strip starts at the edge or up to 3 px in
    start = np.argmax(head, axis=0)
    after = ~bright & (np.arange(depth)[:, None] >= start)
    end = np.argmax(after, axis=0)  # the first pixel past the bright run
    level = smooth[(start + end) // 2, columns].astype(np.int16)
    inner = smooth[np.maximum(start, end - 2), columns].astype(np.int16)
    beyond = smooth[np.minimum(end + 1, depth - 1), columns].astype(np.int16)
    found = (
        head.any(axis=0) & after.any(axis=0) & (end <= depth - 3) & (inner - beyond >= STRIP_DROP)
    )
    if not found.any():
        return np.zeros(length, np.int32)
    # Runs of positions along the edge where the strip keeps about the same depth (a
    # pectoral muscle's depth changes along the edge) over a good length (a calcification
    # is short).
    end = end.astype(np.int32)
    jump = np.abs(np.diff(end, prepend=end[0])) > np.maximum(2, end // 5)
    first = found & (~np.concatenate(([False], found[:-1])) | jump)
    starts = np.flatnonzero(first)
    counts = np.bincount(np.cumsum(first)[found], minlength=len(starts) + 1)[1:]
    deepest = np.maximum.reduceat(np.where(found, end, 0), starts)
    shallowest = np.minimum.reduceat(np.where(found, end, depth), starts)
    shortest = max(8, int(STRIP_LENGTH * length))
    keep = (counts >= shortest) & (deepest - shallowest <= np.maximum(3, 0.4 * deepest))
    # A blurred inner edge: up to 2 pixels past the run still above half-way to what lies
    # beyond the strip belong to it.
    half = (level + beyond) // 2
    run_end = end.copy()
    for _ in range(2):
        end += smooth[np.minimum(end, depth - 1), columns] > half
    reach = np.zeros(length, np.int32)
    for a, count, deep in zip(starts[keep], counts[keep], deepest[keep], strict=True):
        b = a + count
        reach[a:b] = end[a:b] + STRIP_MARGIN
        # Along the edge the strip goes on where pixels as bright as it fill its depth but
        # what lies beyond is about as bright (dense tissue): no drop there, the same strip.
        top, bottom = int(np.median(start[a:b])), int(np.median(run_end[a:b]))
        floor = np.median(level[a:b]) - STRIP_SPREAD
        full = (smooth[top:bottom] >= floor).all(axis=0) & (bottom > top)
        broken = np.flatnonzero(~full)
        i, j = np.searchsorted(broken, a), np.searchsorted(broken, b)
        lo = max(broken[i - 1] + 1 if i > 0 else 0, a - max(count, shortest))
        hi = min(broken[j] if j < len(broken) else length, b + max(count, shortest))
        for part in (slice(lo, a), slice(b, hi)):
            reach[part] = np.maximum(reach[part], deep + STRIP_MARGIN)
    # Widen along the edge (a blurred strip's ends).
    padded = np.pad(reach, STRIP_MARGIN_ALONG)
    return np.max([padded[k : k + length] for k in range(2 * STRIP_MARGIN_ALONG + 1)], axis=0)


def border_strips(image: np.ndarray) -> np.ndarray:
    """Bright strips along the edges of a uint8 mammogram (unexposed film edge, label tape):
    near-saturated, thin (up to :data:`STRIP_DEPTH` of the perpendicular side), starting at
    an edge and ending in a sharp drop, of about constant depth along a run of at least
    :data:`STRIP_LENGTH` of the edge. A pectoral muscle (its depth changes along the edge)
    or a calcification at the edge (too short) does not qualify.

    Returns the boolean mask of their pixels, a couple of pixels added for blur.
    """
    h, w = image.shape
    mask = np.zeros((h, w), bool)
    for along, across, view in (
        (w, h, lambda a, d: a[:d]),  # top: rows from the edge
        (w, h, lambda a, d: a[::-1][:d]),  # bottom
        (h, w, lambda a, d: a[:, :d].T),  # left
        (h, w, lambda a, d: a[:, ::-1][:, :d].T),  # right
    ):
        depth = min(across, int(STRIP_DEPTH * across) + 6)
        if depth < 6 or along < 8:
            continue
        reach = _edge_strip_depths(np.ascontiguousarray(view(image, depth)))
        if reach.any():
            band = view(mask, depth)
            band |= np.arange(depth)[:, None] < reach
    return mask


def breast_mask(image: np.ndarray) -> np.ndarray:
    """The breast region of a uint8 mammogram (labels and background excluded).

    Returns an all-False mask when nothing stands out from the background.
    """
    h, w = image.shape
    factor = max(1, max(h, w) // 512)
    small = cv2.resize(image, (w // factor, h // factor), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (5, 5), 0)
    _, binary = cv2.threshold(small, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    binary = cv2.morphologyEx(binary, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if count < 2:
        return np.zeros((h, w), bool)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    region = (labels == largest).astype(np.uint8)
    # Fill holes: flood the background from outside (a zero border, since the breast itself
    # touches the image edge at the chest wall); what the flood cannot reach is inside.
    flood = cv2.copyMakeBorder(region, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    cv2.floodFill(flood, None, (0, 0), 1)
    region |= 1 - flood[1:-1, 1:-1]
    return cv2.resize(region, (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)


def enhance(image: np.ndarray, mode: str) -> np.ndarray:
    """Gaussian filter (sigma 0.5) then histogram equalisation or CLAHE; "none" is a no-op."""
    if mode == "none":
        return image
    smooth = cv2.GaussianBlur(image, (0, 0), 0.5)
    if mode == "equalize":
        return cv2.equalizeHist(smooth)
    if mode == "clahe":
        return cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(smooth)
    raise ValueError(f"unknown enhancement {mode!r}; allowed: {', '.join(ENHANCEMENTS)}")


def roi_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Bounding box (y0, x0, y1, x1) of a binary mask; exclusive ends."""
    rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(columns[0]), int(rows[-1]) + 1, int(columns[-1]) + 1


def tile_side(roi_side: int, context_px: int) -> int:
    """Side of the square tile around a ROI whose larger bounding-box side is ``roi_side``."""
    if roi_side < context_px:
        return max(context_px, int(round(roi_side * 1.2)))
    return int(round(roi_side * 1.05))


def roi_boxes(
    mask: np.ndarray, *, context_px: int, variants: int, rng: np.random.Generator
) -> list[Box]:
    """The centred box (``variants=0``) or ``variants`` random variants around a ROI."""
    y0, x0, y1, x1 = roi_box(mask)
    roi_h, roi_w = y1 - y0, x1 - x0
    side = tile_side(max(roi_h, roi_w), context_px)
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    if not variants:
        return [Box(int(round(cy - side / 2)), int(round(cx - side / 2)), side)]
    boxes = []
    slack_y, slack_x = max(0.0, (side - roi_h) / 2), max(0.0, (side - roi_w) / 2)
    for _ in range(variants):
        # Shift while keeping the ROI inside the tile.
        dy, dx = rng.uniform(-slack_y, slack_y) * 0.8, rng.uniform(-slack_x, slack_x) * 0.8
        boxes.append(
            Box(
                int(round(cy + dy - side / 2)),
                int(round(cx + dx - side / 2)),
                side,
                flip=bool(rng.random() < 0.5),
                turns=int(rng.integers(4)),
            )
        )
    return boxes


def tissue_boxes(
    image: np.ndarray,
    breast: np.ndarray,
    lesions: list[tuple[int, int, int, int]],
    *,
    side: int,
    count: int,
    rng: np.random.Generator,
    attempts: int = 40,
) -> list[Box]:
    """Up to ``count`` boxes of background tissue: inside the breast, at least half a tile
    clear of every lesion's bounding box (``roi_box``), within the mean/std thresholds."""
    h, w = image.shape
    if count <= 0 or side > min(h, w):
        return []
    margin = side // 2
    boxes: list[Box] = []
    for _ in range(count * attempts):
        if len(boxes) == count:
            break
        y0, x0 = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        y1, x1 = y0 + side, x0 + side
        if any(
            y0 < ly1 + margin and ly0 - margin < y1 and x0 < lx1 + margin and lx0 - margin < x1
            for ly0, lx0, ly1, lx1 in lesions
        ):
            continue
        if any(abs(b.y0 - y0) < side and abs(b.x0 - x0) < side for b in boxes):
            continue  # no overlapping tissue tiles
        if breast[y0:y1, x0:x1].mean() < 0.98:
            continue
        patch = image[y0:y1, x0:x1]
        if not (TISSUE_MEAN[0] <= patch.mean() <= TISSUE_MEAN[1]):
            continue
        if not (TISSUE_STD[0] <= patch.std() <= TISSUE_STD[1]):
            continue
        boxes.append(Box(y0, x0, side))
    return boxes


def cut(image: np.ndarray, box: Box, sizes: tuple[int, ...]) -> dict[int, np.ndarray]:
    """The tile of ``box`` (outside the image: 0), transformed and resized to each size."""
    h, w = image.shape
    crop = np.zeros((box.side, box.side), image.dtype)
    sy0, sx0 = max(0, box.y0), max(0, box.x0)
    sy1, sx1 = min(h, box.y0 + box.side), min(w, box.x0 + box.side)
    if sy0 < sy1 and sx0 < sx1:
        crop[sy0 - box.y0 : sy1 - box.y0, sx0 - box.x0 : sx1 - box.x0] = image[sy0:sy1, sx0:sx1]
    if box.flip:
        crop = crop[:, ::-1]
    crop = np.ascontiguousarray(np.rot90(crop, box.turns))
    return {s: cv2.resize(crop, (s, s), interpolation=cv2.INTER_AREA) for s in sizes}


def whole_shape(size: int) -> tuple[int, int]:
    """(height, width) of the whole-image view whose long (height) side is ``size``."""
    return size, int(round(size / WHOLE_ASPECT))


def whole_image(image: np.ndarray, breast: np.ndarray, sizes: tuple[int, ...]) -> dict:
    """The breast, chest wall on the left, padded to 1.5:1 and resized to each size."""
    y0, x0, y1, x1 = roi_box(breast)
    crop = image[y0:y1, x0:x1]
    region = breast[y0:y1, x0:x1]
    # The chest wall is the side where the breast is widest: put it on the left.
    if region[:, region.shape[1] // 2 :].sum() > region[:, : region.shape[1] // 2].sum():
        crop = crop[:, ::-1]
    h, w = crop.shape
    target_w = int(round(h / WHOLE_ASPECT))
    if target_w >= w:  # pad on the nipple side (right), as the breast ends there
        crop = np.pad(crop, ((0, 0), (0, target_w - w)))
    else:  # unusually wide: pad the height, top and bottom equally
        target_h = int(round(w * WHOLE_ASPECT))
        top = (target_h - h) // 2
        crop = np.pad(crop, ((top, target_h - h - top), (0, 0)))
    out = {}
    for size in sorted(sizes, reverse=True):
        # Each smaller size from the one above: area averaging of an area average, at a
        # fraction of the cost of going back to the full-size image.
        height, width = whole_shape(size)
        crop = out[size] = cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA)
    return out


def is_mask(pixels: np.ndarray) -> bool:
    """A ROI mask holds two values (background and ROI); a cropped image is greyscale."""
    step_y, step_x = max(1, pixels.shape[0] // 256), max(1, pixels.shape[1] // 256)
    return np.unique(pixels[::step_y, ::step_x]).size <= 2


def is_lossy_mask(pixels: np.ndarray) -> bool:
    """A ROI mask saved lossily (the CBIS-DDSM JPEG edition's): nearly every pixel close to
    black or white, and both present (looked for in every pixel: a calcification's mask
    may be a few pixels in a full mammogram). A cropped ROI is greyscale tissue."""
    sample = pixels[:: max(1, pixels.shape[0] // 256), :: max(1, pixels.shape[1] // 256)]
    extreme = ((sample <= 40) | (sample >= 215)).mean() >= 0.97
    return bool(extreme and (pixels <= 40).any() and (pixels >= 215).any())


def fit_mask(masks: Sequence[np.ndarray], shape: tuple[int, int]) -> tuple[np.ndarray | None, str]:
    """A finding's ROI mask fitted to its image, for prepare and predict alike.

    The candidate of the image's shape is taken (else the largest); one whose size differs
    (a few CBIS-DDSM masks are off by a few pixels) is rescaled when its aspect ratio matches
    the image's, and refused otherwise, since stretching would misplace the ROI. The ROI is
    every pixel above the mask's minimum.

    Args:
        masks: candidate masks (two values each, see :func:`is_mask`), at least one.
        shape: (height, width) of the image.

    Returns:
        (boolean mask of ``shape``, note) where the note says what was rescaled, or
        (None, why there is no mask).
    """
    mask = max(masks, key=lambda m: (m.shape == shape, m.size))
    note = ""
    if mask.shape != shape:
        aspect = (mask.shape[0] / mask.shape[1]) / (shape[0] / shape[1])
        if abs(aspect - 1) > MAX_MASK_ASPECT_ERROR:
            return None, (
                f"mask {mask.shape[1]}x{mask.shape[0]} does not match image "
                f"{shape[1]}x{shape[0]} (aspect differs by {abs(aspect - 1):.1%})"
            )
        note = f"mask {mask.shape[1]}x{mask.shape[0]} rescaled to image {shape[1]}x{shape[0]}"
        mask = cv2.resize(mask, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    mask = mask > mask.min()
    if not mask.any():
        return None, "ROI mask is empty"
    return mask, note


class SourceImage:
    """One decoded mammogram, ready to cut model inputs from: windowed to 8 bits
    (:func:`to_uint8`), bright strips along its border cut away (:func:`border_strips`; the
    window then taken without them), its breast found (:func:`breast_mask`) and everything
    outside the breast (background, burnt-in labels, border strips) set to 0. Each
    enhancement is computed on first use and kept, so an image cut into many tiles is
    enhanced once per mode.

    Args:
        decoded: the decoded pixels (bright = dense), of any integer or float type.
        crop: the pixels are a crop around a finding rather than a mammogram: windowed only,
            as a crop may hold no background to tell the breast by.

    Raises:
        UserError: no breast region found (a blank image).
    """

    def __init__(self, decoded: np.ndarray, *, crop: bool = False):
        pixels = to_uint8(decoded)
        if crop:
            breast = np.ones(pixels.shape, bool)
        else:
            strips = border_strips(pixels)
            if strips.any():
                # Windowed again without the strips, so that they do not set the contrast.
                pixels = to_uint8(decoded, ignore=strips)
                pixels[strips] = 0
                breast = breast_mask(pixels) & ~strips
            else:
                breast = breast_mask(pixels)
            if not breast.any():
                raise UserError("no breast region found (blank image)")
            pixels = np.where(breast, pixels, 0).astype(np.uint8)
        self.pixels = pixels  # uint8, background 0, not enhanced
        self.breast = breast
        self._enhanced = {"none": pixels}

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) in source pixels."""
        return self.pixels.shape

    def enhanced(self, mode: str) -> np.ndarray:
        """The pixels with enhancement ``mode`` (see :func:`enhance`), computed once."""
        if mode not in self._enhanced:
            self._enhanced[mode] = enhance(self.pixels, mode)
        return self._enhanced[mode]


def model_inputs(
    image: SourceImage,
    *,
    view: str,
    enhance: str,
    sizes: tuple[int, ...],
    box: Box | None = None,
) -> dict[int, np.ndarray]:
    """What a model of ``view`` sees of ``image``, as uint8 arrays by size: the tile of
    ``box`` (view "roi": a ROI or tissue tile, see :func:`cut`) or the whole breast (view
    "whole", see :func:`whole_image`). prepare and predict both make inputs here.

    Args:
        enhance: one of :data:`ENHANCEMENTS`.
        sizes: tile sides (roi) or long sides (whole). A whole image of one size is resized
            from the next larger size given, so it is reproduced only with the same larger
            sizes (see :attr:`Preprocessing.sizes`).
        box: the tile to cut (roi only).

    Raises:
        ValueError: an unknown view or enhancement, or ``box`` missing for "roi" or given
            for "whole".
    """
    if view not in VIEWS:
        raise ValueError(unknown_choice("view", view, VIEWS))
    if view == "roi" and box is None:
        raise ValueError("a ROI tile needs its box")
    if view == "whole" and box is not None:
        raise ValueError("a whole image takes no box")
    pixels = image.enhanced(enhance)
    if view == "roi":
        return cut(pixels, box, sizes)
    return whole_image(pixels, image.breast, sizes)


@dataclass(frozen=True)
class Preprocessing:
    """Which inputs a model takes: what travels with it from training to predict and export.

    ``context_px`` is the prepared dataset's ROI tile side in source pixels (the tile around
    a small ROI). ``resized_from`` lists, largest first, the larger whole-image sizes the
    dataset was prepared with: each whole size is resized from the one above it, so predict
    must take the same steps to give the same pixels. ``views`` is 2 for a two-view model
    (the CC and MLO whole images of one breast, stacked as its input's two channels).
    """

    view: str
    size: int
    enhance: str = "none"
    context_px: int | None = None
    resized_from: tuple[int, ...] = ()
    views: int = 1

    def __post_init__(self):
        if self.view not in VIEWS:
            raise UserError(unknown_choice("view", self.view, VIEWS))
        if self.enhance not in ENHANCEMENTS:
            raise UserError(unknown_choice("enhancement", self.enhance, ENHANCEMENTS))

    @property
    def sizes(self) -> tuple[int, ...]:
        """The ``sizes`` to give :func:`model_inputs` for this model's input."""
        return (*self.resized_from, self.size)

    @property
    def input_shape(self) -> tuple[int, int]:
        """(height, width) of the tiles a model with this preprocessing takes."""
        return whole_shape(self.size) if self.view == "whole" else (self.size, self.size)

    @classmethod
    def from_checkpoint_meta(cls, meta: dict) -> Preprocessing:
        """From a checkpoint's ``checkpoint.json``: the trial config's view, input size and
        enhancement, and the dataset's prepare params (``context_px``, ``whole_sizes``).

        Raises:
            UserError: an unknown view or enhancement.
        """
        config = meta["config"]
        params = meta.get("dataset", {}).get("params", {})
        view, size = config["view"], int(config["input_size"])
        larger = (s for s in params.get("whole_sizes", ()) if s > size)
        return cls(
            view=view,
            size=size,
            enhance=config.get("enhance", "none"),
            context_px=params.get("context_px"),
            resized_from=tuple(sorted(larger, reverse=True)) if view == "whole" else (),
            views=2 if config.get("fusion", "single") == "two_view" else 1,
        )

    def to_json(self) -> dict:
        """A plain dict (for JSON: what a predict result reports)."""
        return {
            "view": self.view,
            "size": self.size,
            "enhance": self.enhance,
            "context_px": self.context_px,
            "resized_from": list(self.resized_from),
            "views": self.views,
        }

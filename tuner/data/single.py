"""One image file prepared exactly as ``prepare`` prepares shard tiles, for ``predict``.

DICOM goes through the same decoder as prepare; PNG, PGM, JPEG and TIFF through OpenCV
(8- or 16-bit). ``whole``: the breast is cropped, the background and labels removed,
enhanced, and padded to 1.5:1 at the model's size. ``roi``: the file is taken to be a
region-of-interest crop (for example a radiologist's box) and is enhanced and resized.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from tuner.data import dicom, preprocess
from tuner.errors import UserError

__all__ = ["read_pixels", "prepare_image"]


def read_pixels(path: str | Path) -> np.ndarray:
    """The pixels of a DICOM or ordinary image file, greyscale.

    Raises:
        UserError: the file is missing or is neither a readable DICOM nor an image.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found")
    with open(path, "rb") as f:
        head = f.read(132)
    if head[128:132] == b"DICM" or path.suffix.lower() in (".dcm", ".dicom"):
        return dicom.read_image(str(path), name=path.name)
    pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        try:  # DICOM without the preamble, under any name
            return dicom.read_image(str(path), name=path.name)
        except UserError:
            raise UserError(
                f"cannot read {path}: not a DICOM file nor an image OpenCV can decode "
                "(PNG, PGM, JPEG, TIFF)"
            ) from None
    if pixels.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if pixels.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        pixels = cv2.cvtColor(pixels, code)
    return pixels


def prepare_image(path: str | Path, *, view: str, size: int, enhance: str) -> np.ndarray:
    """``path`` as the uint8 array a model of this view, size and enhancement was trained on."""
    pixels = preprocess.to_uint8(read_pixels(path))
    if view == "roi":
        pixels = preprocess.enhance(pixels, enhance)
        return cv2.resize(pixels, (size, size), interpolation=cv2.INTER_AREA)
    breast = preprocess.breast_mask(pixels)
    if not breast.any():
        raise UserError(f"{path}: no breast region found (blank image)")
    pixels = np.where(breast, pixels, 0).astype(np.uint8)
    pixels = preprocess.enhance(pixels, enhance)
    return preprocess.whole_image(pixels, breast, (size,))[size]

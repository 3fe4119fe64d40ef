"""One image file as a model's input, for ``predict``: made by the path prepare makes shard
tiles by (``preprocess.SourceImage`` and ``preprocess.model_inputs``), so a model is fed
exactly what it was trained on.

DICOM goes through prepare's decoder; PNG, PGM, JPEG and TIFF (and BMP) through OpenCV (8- or
16-bit). Either way the size a file's header declares is checked against the pixel cap
(:mod:`tuner.data.limits`, ``max_pixels``) before anything is decoded.
``whole``: the file is a mammogram, and the model sees the whole breast. ``roi``: the file is
a mammogram and the finding is given as a mask file (CBIS-DDSM's ROI mask DICOM, a PNG, or
the JPEG edition's lossy mask; fitted to the image as prepare fits masks) or a box, and the
model sees prepare's centred tile around it; or, with neither, the file is taken to be the
finding's crop (for example a radiologist's box): windowed, enhanced, cut as the square
around the whole file and resized, with no breast region looked for.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from tuner.data import dicom, limits, preprocess
from tuner.data.preprocess import Box, Preprocessing, SourceImage
from tuner.errors import UserError

__all__ = ["read_pixels", "model_input", "breast_views"]


def read_pixels(path: str | Path, *, max_pixels: int | None = None) -> np.ndarray:
    """The pixels of a DICOM or ordinary image file, greyscale.

    Args:
        max_pixels: the most pixels the file may declare (default: ``MAMMOTUNE_MAX_PIXELS``
            or 100 million; see :func:`tuner.data.limits.pixel_cap`), checked before
            decoding.

    Raises:
        UserError: the file is missing, is neither a readable DICOM nor an image, or
            declares more pixels than the cap.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found")
    with open(path, "rb") as f:
        head = f.read(132)
    if head[128:132] == b"DICM" or path.suffix.lower() in (".dcm", ".dicom"):
        return dicom.read_image(str(path), name=path.name, max_pixels=max_pixels)
    # The header's size is checked before OpenCV decodes (not OpenCV's own 2^30 limit).
    pixels = limits.decode_image(path.read_bytes(), what=path.name, max_pixels=max_pixels)
    if pixels is None:
        try:  # DICOM without the preamble, under any name
            return dicom.read_image(str(path), name=path.name, max_pixels=max_pixels)
        except UserError:
            raise UserError(
                f"cannot read {path}: not a DICOM file nor an image OpenCV can decode "
                "(PNG, PGM, JPEG, TIFF)"
            ) from None
    if pixels.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if pixels.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        pixels = cv2.cvtColor(pixels, code)
    return pixels


def _mask_from_file(
    path: str | Path, shape: tuple[int, int], *, max_pixels: int | None = None
) -> np.ndarray:
    pixels = read_pixels(path, max_pixels=max_pixels)
    if not preprocess.is_mask(pixels) and preprocess.is_lossy_mask(pixels):
        # A lossy mask (the CBIS-DDSM JPEG edition's): values near 0 and 255, not exactly.
        pixels = ((pixels > 127) * 255).astype(np.uint8)
    if not preprocess.is_mask(pixels):
        raise UserError(
            f"{path} is not a ROI mask (it holds more than two values): give the finding's "
            "mask file (background and ROI only), not its cropped image"
        )
    mask, note = preprocess.fit_mask([pixels], shape)
    if mask is None:
        raise UserError(f"{path}: {note}; give the ROI mask made for this mammogram")
    return mask


def _mask_from_box(box: Sequence[int], shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    if len(box) != 4:
        raise UserError(f"ROI box {list(box)}: give four numbers, x0 y0 x1 y1")
    x0, y0, x1, y1 = (int(v) for v in box)
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        raise UserError(
            f"ROI box {[x0, y0, x1, y1]} does not lie inside the {w}x{h} image: give x0 y0 x1 "
            f"y1 in its pixels, 0 <= x0 < x1 <= {w} and 0 <= y0 < y1 <= {h}"
        )
    mask = np.zeros(shape, bool)
    mask[y0:y1, x0:x1] = True
    return mask


def model_input(
    path: str | Path,
    preprocessing: Preprocessing,
    *,
    roi_mask: str | Path | None = None,
    roi_box: tuple[int, int, int, int] | None = None,
    max_pixels: int | None = None,
) -> np.ndarray:
    """``path`` as the uint8 (height, width) array a model with ``preprocessing`` takes.

    Args:
        preprocessing: the model's, see :meth:`Preprocessing.from_checkpoint_meta`.
        roi_mask: ROI view: a mask image file of the finding in the mammogram ``path``.
        roi_box: ROI view: the finding's box in the mammogram's pixels, x0, y0, x1, y1
            (ends exclusive). Neither: ``path`` is taken to be the finding's crop.
        max_pixels: the most pixels ``path`` and ``roi_mask`` may declare (see
            :func:`read_pixels`).

    Raises:
        UserError: an unreadable or blank file, one that declares more pixels than the
            cap, a ROI for a whole-view model, both a mask and a box, a mask that does not
            fit the image, or a box outside it.
    """
    view, size, mode = preprocessing.view, preprocessing.size, preprocessing.enhance
    located = roi_mask is not None or roi_box is not None
    if roi_mask is not None and roi_box is not None:
        raise UserError("give the finding as a ROI mask file or as a ROI box, not both")
    if located and view == "whole":
        raise UserError(
            "a ROI was given, but this model classifies whole mammograms (view 'whole'): "
            "give the mammogram alone"
        )
    if located and preprocessing.context_px is None:
        raise UserError(
            "this model's preprocessing lacks context_px (its dataset's ROI tile side), so "
            "its tile cannot be cut: give the finding's crop instead of a ROI"
        )
    decoded = read_pixels(path, max_pixels=max_pixels)
    try:
        image = SourceImage(decoded, crop=view == "roi" and not located)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    if view == "whole":
        return preprocess.model_inputs(
            image, view="whole", enhance=mode, sizes=preprocessing.sizes
        )[size]
    if located:
        if roi_mask is not None:
            mask = _mask_from_file(roi_mask, image.shape, max_pixels=max_pixels)
        else:
            mask = _mask_from_box(roi_box, image.shape)
        # The centred tile, as prepare cuts for validation and test (no random draw is made).
        (box,) = preprocess.roi_boxes(
            mask, context_px=preprocessing.context_px, variants=0, rng=np.random.default_rng(0)
        )
    else:
        h, w = image.shape
        side = max(h, w)
        box = Box((h - side) // 2, (w - side) // 2, side)
    return preprocess.model_inputs(
        image, view="roi", enhance=mode, sizes=preprocessing.sizes, box=box
    )[size]


# CBIS-DDSM keeps its own key in PatientID: <Mass|Calc>-<Training|Test>_P_00001_LEFT_CC.
_CBIS_KEY = re.compile(r"^(?:Mass|Calc)-(?:Training|Test)_(P_\d+)_(LEFT|RIGHT)_(CC|MLO)(?:_\d+)?$")
CC = "CC"
_SIDES = {"L": "LEFT", "R": "RIGHT", "LEFT": "LEFT", "RIGHT": "RIGHT"}


def _header(path: str | Path, max_pixels: int | None = None) -> dict:
    """What a DICOM file's header says of its breast and view (nothing for other files)."""
    import pydicom

    try:
        # pydicom inflates a deflated dataset whole, even to read its header.
        dicom.check_deflated(str(path), max_pixels=max_pixels)
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    except Exception:  # not DICOM (PNG, JPEG, ...), or no preamble: the order given holds
        return {}
    patient = str(ds.get("PatientID", "") or "")
    side = str(ds.get("ImageLaterality", "") or ds.get("Laterality", "") or "").upper()
    view = str(ds.get("ViewPosition", "") or "").upper()
    key = _CBIS_KEY.match(patient)
    if key:  # CBIS-DDSM: one PatientID per series, which names the patient, side and view
        patient = key.group(1)
        side, view = side or key.group(2), view or key.group(3)
    return {"patient": patient, "side": _SIDES.get(side, side), "view": view}


def breast_views(paths: Sequence[str | Path], *, max_pixels: int | None = None) -> list[str]:
    """The CC and MLO files of one breast, CC first, for a two-view model. The order given
    holds unless the DICOM headers (ViewPosition, or CBIS-DDSM's PatientID) say otherwise.

    Args:
        max_pixels: the pixel cap (see :func:`read_pixels`): a deflated DICOM that would
            inflate beyond it has its header left unread here (and is refused when read).

    Raises:
        UserError: not two files, two files of one view, or of two breasts (by the headers'
            PatientID and laterality). Refusals name the files, never a patient's ID.
    """
    if len(paths) != 2:
        raise UserError(
            f"a two-view model takes the CC and MLO of one breast: give two files (CC then "
            f"MLO), not {len(paths)}"
        )
    headers = [_header(p, max_pixels) for p in paths]
    views = [h.get("view", "") for h in headers]
    if views[0] and views[0] == views[1]:
        raise UserError(
            f"{paths[0]} and {paths[1]} are both {views[0]} views (their DICOM headers say "
            "so); give the CC and the MLO of one breast"
        )
    if all(views) and CC not in views:
        raise UserError(
            f"neither {paths[0]} ({views[0]}) nor {paths[1]} ({views[1]}) is a CC view (their "
            "DICOM headers say so); give the CC and the MLO of one breast"
        )
    # Patient IDs are compared, never printed: a refusal names the files (a patient's ID
    # is identifying; ends up in logs and shell history).
    a, b = (h.get("patient", "") for h in headers)
    if a and b and a != b:
        raise UserError(
            f"{paths[0]} and {paths[1]} are of two patients (their DICOM headers' patient IDs "
            "differ); give the CC and the MLO of one breast"
        )
    a, b = (h.get("side", "") for h in headers)
    if a and b and a != b:
        raise UserError(
            f"{paths[0]} and {paths[1]} are of two breasts ({a} and {b} in their DICOM "
            "headers); give the CC and the MLO of one breast"
        )
    if views[1] == "CC" or (views[0] and views[0] != "CC" and not views[1]):
        return [str(paths[1]), str(paths[0])]
    return [str(p) for p in paths]

"""Reading and writing greyscale DICOM images.

Decoding follows the DICOM pixel pipeline: stored values -> modality LUT (rescale slope and
intercept, or a modality LUT sequence) -> VOI LUT or window when the file carries one ->
MONOCHROME1 inverted, so the result is always "bright = dense"; any other (or a damaged)
PhotometricInterpretation is refused, never read as MONOCHROME2. 8-, 12- and 16-bit data and
the compressed transfer syntaxes of pydicom's installed plugins decode: RLE and JPEG 2000
through pylibjpeg (-rle, -openjpeg), JPEG lossless and JPEG-LS through GDCM (python-gdcm;
pylibjpeg's own JPEG plugin is GPL-licensed, so it is not a dependency). Anything else gives
a UserError naming the file and the reason, which prepare records as a skipped input.
"""

from __future__ import annotations

from typing import BinaryIO

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, get_decoder
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
    SecondaryCaptureImageStorage,
)

from tuner.errors import UserError

__all__ = ["PHOTOMETRIC", "read_dataset", "read_image", "decode", "write_image"]

# The photometric interpretations decode handles (greyscale, and colour turned to luminance).
PHOTOMETRIC = (
    "MONOCHROME2",
    "MONOCHROME1",
    "RGB",
    "YBR_FULL",
    "YBR_FULL_422",
    "YBR_PARTIAL_420",
    "YBR_ICT",
    "YBR_RCT",
    "PALETTE COLOR",
)


def _name(ds: Dataset | None, fallback: str = "DICOM file") -> str:
    return str(getattr(ds, "filename", None) or fallback)


def read_dataset(fileobj: BinaryIO | str, *, name: str | None = None) -> Dataset:
    """Parse a DICOM file (pixel data not yet decoded).

    Files written without the 128-byte preamble and file meta header (older software) are
    read as well; their transfer syntax is taken from the encoding pydicom detected.

    Raises:
        UserError: not a DICOM file, or truncated before its pixel data.
    """
    label = name or (fileobj if isinstance(fileobj, str) else _name(None))
    try:
        return pydicom.dcmread(fileobj)
    except InvalidDicomError:
        pass  # no preamble / meta header: try once more without them
    except Exception as exc:  # EOFError, struct/value errors on truncation
        raise UserError(
            f"{label}: not a readable DICOM file ({type(exc).__name__}: {exc})"
        ) from None
    try:
        if not isinstance(fileobj, str):
            fileobj.seek(0)
        ds = pydicom.dcmread(fileobj, force=True)
    except Exception as exc:
        raise UserError(
            f"{label}: not a readable DICOM file ({type(exc).__name__}: {exc})"
        ) from None
    if "PixelData" not in ds:
        raise UserError(f"{label}: not a readable DICOM file (no DICOM header, no pixel data)")
    if "TransferSyntaxUID" not in ds.file_meta:
        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (
            (ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian)
            if little
            else ExplicitVRBigEndian
        )
    return ds


def decode(ds: Dataset, *, frame: int = 0, name: str | None = None) -> np.ndarray:
    """Decode one frame of a dataset to a (rows, columns) array, bright = dense: the stored
    8- or 16-bit integers when no LUT or inversion changes them, float32 otherwise.

    Colour images are turned into luminance; multi-frame images give frame ``frame``.

    Raises:
        UserError: no pixel data, an unsupported transfer syntax, or broken pixel data.
    """
    label = name or _name(ds)
    if "PixelData" not in ds:
        raise UserError(f"{label}: no pixel data")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric and photometric not in PHOTOMETRIC:
        # Never guessed: a damaged MONOCHROMEX read as MONOCHROME2 may be inverted.
        raise UserError(
            f"{label}: unsupported PhotometricInterpretation {photometric!r}; "
            f"readable: {', '.join(PHOTOMETRIC)}"
        )
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if syntax is not None and syntax.is_compressed and not _decoder_available(syntax):
        raise UserError(
            f"{label}: unsupported transfer syntax {syntax.name} (no installed decoder plugin)"
        )
    try:
        stored = ds.pixel_array
    except Exception as exc:
        # pydicom lists each plugin's reason on its own line: keep them, on one line.
        reasons = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        kind = (
            "unsupported pixel encoding" if "does not support" in reasons else "broken pixel data"
        )
        raise UserError(f"{label}: {kind} ({type(exc).__name__}: {reasons})") from None
    if stored.size == 0:
        raise UserError(f"{label}: empty image")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if frames > 1:
        if not 0 <= frame < frames:
            raise UserError(f"{label}: frame {frame} of {frames}")
        stored = stored[frame]
    if ds.get("PhotometricInterpretation") == "PALETTE COLOR":
        stored, samples = apply_color_lut(stored, ds), 3
    if samples > 1:
        # pydicom returns RGB for colour data; keep luminance (ITU-R BT.601 weights).
        rgb = stored.astype(np.float32)
        return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    values = apply_modality_lut(stored, ds)
    if "WindowCenter" in ds or "VOILUTSequence" in ds:
        values = apply_voi_lut(values, ds)
    if ds.get("PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1":
        values = np.asarray(values, np.float32)
        return values.max() + values.min() - values
    # Stored integers that no LUT changed stay integers: a full mammogram is 15 million
    # pixels, and a float copy of it costs more than everything prepare does with it.
    if values.dtype.kind in "ui" and values.dtype.itemsize <= 2:
        return values
    return np.asarray(values, np.float32)


def _decoder_available(syntax) -> bool:
    try:
        return get_decoder(syntax).is_available
    except NotImplementedError:  # a syntax pydicom has no decoder class for at all
        return False


def read_image(fileobj: BinaryIO | str, *, name: str | None = None) -> np.ndarray:
    """Read and decode one DICOM image (see :func:`decode`)."""
    return decode(read_dataset(fileobj, name=name), name=name)


def write_image(
    fileobj: BinaryIO | str,
    pixels: np.ndarray,
    *,
    study_uid: str,
    series_uid: str,
    instance_uid: str,
    attributes: dict[str, object],
    rle: bool = False,
) -> None:
    """Write a single-frame MONOCHROME2 image as a DICOM file.

    Args:
        pixels: uint8 or uint16 array (rows, columns).
        attributes: further DICOM keywords and values (PatientID, ViewPosition, ...).
        rle: compress with RLE Lossless (through pylibjpeg-rle) instead of storing raw.
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = instance_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = "MG"
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    bits = 8 if pixels.dtype == np.uint8 else 16
    ds.set_pixel_data(pixels, "MONOCHROME2", bits, generate_instance_uid=False)
    if rle:
        ds.compress(RLELossless, encoding_plugin="pylibjpeg")
    ds.save_as(fileobj, enforce_file_format=True)

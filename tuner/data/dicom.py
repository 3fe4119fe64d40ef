"""Reading and writing greyscale DICOM images.

Decoding follows the DICOM pixel pipeline: stored values -> modality LUT (rescale slope and
intercept) -> VOI LUT or window when the file carries one -> MONOCHROME1 inverted, so that
the result is always "bright = dense". Compressed transfer syntaxes are decoded by pydicom's
pylibjpeg plugins (installed with the package).
"""

from __future__ import annotations

from typing import BinaryIO

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, SecondaryCaptureImageStorage

from tuner.errors import UserError

__all__ = ["read_header", "read_image", "decode", "write_image"]


def read_header(fileobj: BinaryIO | str) -> Dataset:
    """Read a DICOM file's attributes without its pixel data."""
    return pydicom.dcmread(fileobj, stop_before_pixels=True)


def decode(ds: Dataset) -> np.ndarray:
    """Decode a dataset's pixels to float32 with bright = dense.

    Raises:
        UserError: the file has no pixel data or no decoder can read it.
    """
    if "PixelData" not in ds:
        raise UserError(f"DICOM file {getattr(ds, 'filename', '?')} has no pixel data")
    try:
        stored = ds.pixel_array
    except Exception as exc:  # pydicom raises several types for unsupported/broken data
        raise UserError(
            f"cannot decode DICOM pixel data of {getattr(ds, 'filename', '?')} "
            f"(transfer syntax {ds.file_meta.get('TransferSyntaxUID', '?')}): {exc}"
        ) from exc
    values = apply_modality_lut(stored, ds)
    if "WindowCenter" in ds or "VOILUTSequence" in ds:
        values = apply_voi_lut(values, ds)
    values = np.asarray(values, dtype=np.float32)
    if ds.get("PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1":
        values = values.max() + values.min() - values
    return values


def read_image(fileobj: BinaryIO | str) -> np.ndarray:
    """Read and decode one DICOM image (see :func:`decode`)."""
    return decode(pydicom.dcmread(fileobj))


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

"""Reading and writing greyscale DICOM images.

Decoding follows the DICOM pixel pipeline: stored values -> modality LUT (rescale slope and
intercept, or a modality LUT sequence) -> VOI LUT or window when the file carries one ->
MONOCHROME1 inverted, so the result is always "bright = dense"; any other (or a damaged)
PhotometricInterpretation is refused, never read as MONOCHROME2. 8-, 12- and 16-bit data and
the compressed transfer syntaxes of pydicom's installed plugins decode: RLE and JPEG 2000
through pylibjpeg (-rle, -openjpeg), JPEG lossless and JPEG-LS through GDCM (python-gdcm;
pylibjpeg's own JPEG plugin is GPL-licensed, so it is not a dependency). Anything else gives
a UserError naming the file and the reason, which prepare records as a skipped input.

Nothing is decoded beyond what a file may declare (see :mod:`tuner.data.limits`): the
header's Rows x Columns, and for JPEG and JPEG 2000 data the size their own frame header
declares, are checked against the pixel cap before decoding, only the one frame used is
decoded, and a deflated dataset is refused when it would inflate beyond what such a frame
needs.
"""

from __future__ import annotations

import struct
import zlib
from typing import BinaryIO

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import get_frame
from pydicom.errors import InvalidDicomError
from pydicom.pixels import (
    apply_color_lut,
    apply_modality_lut,
    apply_voi_lut,
    get_decoder,
    pixel_array,
)
from pydicom.pixels.utils import get_nr_frames
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000TransferSyntaxes,
    JPEGLSTransferSyntaxes,
    JPEGTransferSyntaxes,
    RLELossless,
    SecondaryCaptureImageStorage,
)

from tuner.data.limits import (
    SETTING,
    check_pixels,
    j2k_frame,
    jpeg_frame,
    megapixels,
    pixel_cap,
)
from tuner.errors import UserError

__all__ = [
    "PHOTOMETRIC",
    "check_deflated",
    "read_dataset",
    "read_image",
    "decode",
    "write_image",
]

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


def read_dataset(
    fileobj: BinaryIO | str, *, name: str | None = None, max_pixels: int | None = None
) -> Dataset:
    """Parse a DICOM file (pixel data not yet decoded).

    Files written without the 128-byte preamble and file meta header (older software) are
    read as well; their transfer syntax is taken from the encoding pydicom detected.

    Args:
        max_pixels: the pixel cap (see :func:`tuner.data.limits.pixel_cap`); here it bounds
            what a deflated dataset may inflate to.

    Raises:
        UserError: not a DICOM file, truncated before its pixel data, or a deflated dataset
            that inflates beyond the cap's frame.
    """
    label = name or (fileobj if isinstance(fileobj, str) else _name(None))
    check_deflated(fileobj, name=label, max_pixels=max_pixels)
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


# Bytes per pixel a deflated dataset may inflate to (64-bit samples at most), plus its header.
_INFLATED_PER_PIXEL, _INFLATED_HEADER = 8, 64 * 2**20
# Explicit VRs whose length takes 4 bytes (after 2 reserved ones).
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT"}
_LONG_VRS.add(b"UV")


def _deflated_start(head: bytes) -> int | None:
    """Where the dataset starts when the file meta names Deflated Explicit VR Little Endian
    (-1: it does, but its meta runs past ``head``), else None."""
    if head[128:132] != b"DICM":
        return None
    at, syntax, ended = 132, None, False
    while at + 12 <= len(head):
        group, element = struct.unpack("<HH", head[at : at + 4])
        if group != 2:
            ended = True
            break
        if head[at + 4 : at + 6] in _LONG_VRS:
            (length,), value = struct.unpack("<I", head[at + 8 : at + 12]), at + 12
        else:
            (length,), value = struct.unpack("<H", head[at + 6 : at + 8]), at + 8
        if element == 0x0010:
            syntax = head[value : value + length].rstrip(b"\0 ").decode("ascii", "replace")
        at = value + length
    if syntax != DeflatedExplicitVRLittleEndian:
        return None
    return at if ended else -1


def check_deflated(
    fileobj: BinaryIO | str, *, name: str | None = None, max_pixels: int | None = None
) -> None:
    """Refuse a deflated dataset (Deflated Explicit VR Little Endian) that inflates to more
    than a frame within the pixel cap needs, counted while inflating in 1 MB steps (pydicom
    inflates the whole file in one call: a few MB of zeros deflated is gigabytes). Any
    other file passes untouched; a file object is left at its start.

    Raises:
        UserError: the dataset inflates beyond the cap.
    """
    if isinstance(fileobj, str):
        try:
            with open(fileobj, "rb") as f:
                return check_deflated(f, name=name or fileobj, max_pixels=max_pixels)
        except OSError:
            return None  # pydicom gives its own error for an unreadable path
    label = name or _name(None)
    try:
        start = _deflated_start(fileobj.read(1 << 16))
        if start is None:
            return None
        cap = pixel_cap(max_pixels)
        limit = cap * _INFLATED_PER_PIXEL + _INFLATED_HEADER
        refusal = UserError(
            f"{label}: its deflated dataset inflates to more than {limit // 2**20} MB, more "
            f"than an image within the {megapixels(cap)} MP cap needs ({SETTING})"
        )
        if start < 0:
            raise refusal
        fileobj.seek(start)
        inflater, total = zlib.decompressobj(-zlib.MAX_WBITS), 0
        while not inflater.eof and (data := fileobj.read(1 << 20)):
            while data and not inflater.eof:
                total += len(inflater.decompress(data, 1 << 20))
                if total > limit:
                    raise refusal
                data = inflater.unconsumed_tail
    except zlib.error:
        return None  # broken deflate data: pydicom's own error names it
    finally:
        fileobj.seek(0)
    return None


_JPEG_SYNTAXES = {*JPEGTransferSyntaxes, *JPEGLSTransferSyntaxes}


def _check_declared_size(
    ds: Dataset, syntax, frame: int, frames: int, label: str, max_pixels: int | None
) -> None:
    """Rows x Columns against the pixel cap; and for JPEG and JPEG 2000 data, that frame
    ``frame``'s own header declares that size too (its decoder allocates what the frame
    header says, whatever Rows and Columns say). Other compressed data is refused: its
    size is not known before decoding."""
    rows, cols = ds.get("Rows"), ds.get("Columns")
    if not (isinstance(rows, int) and isinstance(cols, int)):
        return  # pydicom refuses the header before decoding
    check_pixels(rows, cols, what=label, max_pixels=max_pixels)
    if syntax is None or not syntax.is_compressed or syntax == RLELossless:
        return  # native data is as large as the file; RLE decodes to Rows x Columns
    j2k = syntax in JPEG2000TransferSyntaxes
    if not j2k and syntax not in _JPEG_SYNTAXES:
        raise UserError(
            f"{label}: unsupported transfer syntax {syntax.name} (the size its frames "
            "decode to cannot be checked before decoding)"
        )
    kind = "JPEG 2000" if j2k else "JPEG"
    try:
        extended = None
        if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
            extended = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
        encoded = get_frame(ds.PixelData, frame, number_of_frames=frames, extended_offsets=extended)
    except Exception as exc:
        raise UserError(f"{label}: broken pixel data ({type(exc).__name__}: {exc})") from None
    declared = j2k_frame(encoded) if j2k else jpeg_frame(encoded)
    if declared is None:
        raise UserError(f"{label}: broken pixel data (no {kind} frame header in frame {frame})")
    size, components = declared[:2], declared[2]
    if size != (cols, rows):
        raise UserError(
            f"{label}: broken pixel data (its {kind} data declares {size[0]} x {size[1]} "
            f"pixels, its header {cols} x {rows})"
        )
    samples = ds.get("SamplesPerPixel", 1)
    if components != samples:  # the decoder allocates every component the frame declares
        raise UserError(
            f"{label}: broken pixel data (its {kind} data declares {components} components, "
            f"its header {samples} samples per pixel)"
        )


def decode(
    ds: Dataset, *, frame: int = 0, name: str | None = None, max_pixels: int | None = None
) -> np.ndarray:
    """Decode one frame of a dataset to a (rows, columns) array, bright = dense: the stored
    8- or 16-bit integers when no LUT or inversion changes them, float32 otherwise.

    Colour images are turned into luminance; multi-frame images give frame ``frame``, and
    only that frame is decoded. Nothing is decoded when the header (or the frame's JPEG or
    JPEG 2000 header) declares more pixels than the cap.

    Args:
        max_pixels: the pixel cap (see :func:`tuner.data.limits.pixel_cap`).

    Raises:
        UserError: no pixel data, an unsupported transfer syntax, broken pixel data, or
            more pixels declared than the cap.
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
        frames = int(get_nr_frames(ds, warn=False))
    except Exception as exc:  # a NumberOfFrames that is not a number
        raise UserError(f"{label}: broken pixel data ({type(exc).__name__}: {exc})") from None
    if not 0 <= frame < frames:
        raise UserError(f"{label}: frame {frame} of {frames}")
    _check_declared_size(ds, syntax, frame, frames, label, max_pixels)
    try:
        stored = pixel_array(ds, index=frame)
    except Exception as exc:
        # pydicom lists each plugin's reason on its own line: keep them, on one line.
        reasons = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        kind = (
            "unsupported pixel encoding" if "does not support" in reasons else "broken pixel data"
        )
        raise UserError(f"{label}: {kind} ({type(exc).__name__}: {reasons})") from None
    if stored.size == 0:
        raise UserError(f"{label}: empty image")
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
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


def read_image(
    fileobj: BinaryIO | str, *, name: str | None = None, max_pixels: int | None = None
) -> np.ndarray:
    """Read and decode one DICOM image (see :func:`decode`); ``max_pixels``: the pixel cap
    (see :func:`tuner.data.limits.pixel_cap`)."""
    ds = read_dataset(fileobj, name=name, max_pixels=max_pixels)
    return decode(ds, name=name, max_pixels=max_pixels)


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

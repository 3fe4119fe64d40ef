"""The most pixels an image file may declare before it is decoded (decompression bombs).

A few hundred bytes of RLE, JPEG 2000 or PNG can declare 65535 x 65535 pixels: gigabytes
once decoded. Every reader checks what a file declares, from its header, against one cap
before decoding anything, and refuses the file as unreadable (a skipped input in prepare,
one line in predict). The cap is on pixels per decoded frame (only one frame of a file is
ever decoded): :data:`MAX_PIXELS`, or the environment variable ``MAMMOTUNE_MAX_PIXELS`` (read
at each check, so Ray workers that inherit the environment follow it), or a reader's
``max_pixels`` argument, which wins over both.

OpenCV's own limit (``OPENCV_IO_MAX_IMAGE_PIXELS``, 2^30 pixels by default: 8 GiB as a
16-bit RGBA PNG) is not relied upon: :func:`decode_image` reads the size from the file's
header itself and hands OpenCV only files it could read a size from (PNG, JPEG, PBM / PGM /
PPM / PAM, TIFF and BMP).
"""

from __future__ import annotations

import operator
import os
import struct

import numpy as np

from tuner.errors import UserError

__all__ = [
    "MAX_PIXELS",
    "ENV",
    "pixel_cap",
    "check_pixels",
    "megapixels",
    "image_size",
    "jpeg_size",
    "jpeg_frame",
    "j2k_size",
    "j2k_frame",
    "decode_image",
]

# Real CBIS-DDSM films are about 4,500 x 3,000 (13.5 MP), the largest about 6,000 x 4,000.
MAX_PIXELS = 100_000_000
ENV = "MAMMOTUNE_MAX_PIXELS"
SETTING = f"--max-pixels or {ENV}"


def pixel_cap(max_pixels: int | None = None) -> int:
    """The cap in force: ``max_pixels`` when given, else ``$MAMMOTUNE_MAX_PIXELS``, else
    :data:`MAX_PIXELS`.

    Raises:
        UserError: a cap that is not a whole number of pixels above 0.
    """
    if max_pixels is not None:
        where, value = "max_pixels", max_pixels
    elif os.environ.get(ENV, "").strip():
        where, value = ENV, os.environ[ENV].strip()
    else:
        return MAX_PIXELS
    cap = _whole(value)
    if cap is None or cap <= 0:
        raise UserError(
            f"{where} {value!r}: give the most pixels an image may have, a whole number "
            f"above 0 (default {MAX_PIXELS})"
        )
    return cap


def _whole(value: object) -> int | None:
    """An int, or a string such as "200000000", "200_000_000" or "2e8"; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
        try:
            number = float(value)
        except ValueError:
            return None
        return int(number) if number.is_integer() else None
    try:
        return operator.index(value)
    except TypeError:
        return None


def megapixels(pixels: int) -> str:
    """``pixels`` in MP for a message: 1600, 13.5, 100.01."""
    return f"{pixels / 1e6:.2f}".rstrip("0").rstrip(".")


def check_pixels(
    rows: int, cols: int, frames: int = 1, *, what: str, max_pixels: int | None = None
) -> None:
    """Refuse ``rows`` x ``cols`` (x ``frames``, as they will be decoded) beyond the cap.

    Raises:
        UserError: ``what`` (the file's name) and its declared size, naming the setting.
    """
    cap = pixel_cap(max_pixels)
    total = int(rows) * int(cols) * max(int(frames), 1)
    if total <= cap:
        return
    count = f"{frames} frames of " if frames > 1 else ""
    raise UserError(
        f"{what}: declares {count}{int(cols)} x {int(rows)} pixels ({megapixels(total)} MP), more "
        f"than the {megapixels(cap)} MP cap ({SETTING})"
    )


# ---- sizes from headers: (width, height), or None when the header cannot be read ----------

_SOF = {*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC), *range(0xCD, 0xD0), 0xF7}


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """A JPEG's (or JPEG-LS's) frame size from its first SOF segment, walked to segment by
    segment (an EXIF thumbnail's SOF inside APP1 is skipped, as libjpeg skips it)."""
    frame = jpeg_frame(data)
    return None if frame is None else frame[:2]


def jpeg_frame(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, components) of a JPEG's (or JPEG-LS's) first SOF segment."""
    if data[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # standalone markers
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, or a scan before any frame header
            return None
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if length < 2:
            return None
        if marker in _SOF:
            if i + 10 > n:
                return None
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height, data[i + 9]
        i += 2 + length
    return None


def j2k_size(data: bytes) -> tuple[int, int] | None:
    """A JPEG 2000 codestream's image size from its SIZ segment (Xsiz - XOsiz by Ysiz -
    YOsiz); a JP2 file's codestream is found in its jp2c box."""
    frame = j2k_frame(data)
    return None if frame is None else frame[:2]


def j2k_frame(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, components) of a JPEG 2000 codestream's SIZ segment: OpenJPEG
    allocates every component (Csiz, up to 16384), whatever the DICOM header says."""
    start = 0
    if data[4:8] == b"jP  ":  # JP2 boxes: find the contiguous codestream box
        i, n = 0, len(data)
        while i + 8 <= n:
            length = int.from_bytes(data[i : i + 4], "big")
            kind, header = data[i + 4 : i + 8], 8
            if length == 1:  # an extended length follows the box type
                length, header = int.from_bytes(data[i + 8 : i + 16], "big"), 16
            if kind == b"jp2c":
                start = i + header
                break
            if length < header:  # 0: the last box, to the end of the file
                return None
            i += length
        else:
            return None
    if data[start : start + 4] != b"\xff\x4f\xff\x51" or len(data) < start + 42:
        return None
    xsiz, ysiz, xosiz, yosiz = struct.unpack(">IIII", data[start + 8 : start + 24])
    (components,) = struct.unpack(">H", data[start + 40 : start + 42])
    return max(xsiz - xosiz, 0), max(ysiz - yosiz, 0), components


def _png_size(data: bytes) -> tuple[int, int] | None:
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR" or len(data) < 24:
        return None
    return struct.unpack(">II", data[16:24])


def _pnm_size(data: bytes) -> tuple[int, int] | None:
    """PBM / PGM / PPM (P1 to P6): width and height are the first two numbers after the
    magic, with whitespace and # comments between; PAM (P7): its WIDTH and HEIGHT lines."""
    if data[:1] != b"P" or data[1:2] not in (b"1", b"2", b"3", b"4", b"5", b"6", b"7"):
        return None
    if data[2:3] not in (b" ", b"\t", b"\n", b"\r", b"\v", b"\f"):
        return None
    head = data[: 64 * 1024]
    if data[1:2] == b"7":
        fields = {}
        for line in head.split(b"\n")[1:]:
            words = line.split(b"#", 1)[0].split()
            if words[:1] == [b"ENDHDR"]:
                break
            if len(words) >= 2:
                fields[words[0]] = words[1]
        try:
            return int(fields[b"WIDTH"]), int(fields[b"HEIGHT"])
        except (KeyError, ValueError):
            return None
    numbers, i, n = [], 2, len(head)
    while len(numbers) < 2 and i < n:
        c = head[i : i + 1]
        if c == b"#":
            end = head.find(b"\n", i)
            i = n if end < 0 else end + 1
        elif c.isspace():
            i += 1
        elif c.isdigit():
            j = i
            while j < n and head[j : j + 1].isdigit():
                j += 1
            numbers.append(int(head[i:j]))
            i = j
        else:
            return None
    return (numbers[0], numbers[1]) if len(numbers) == 2 else None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """The first IFD's ImageWidth and ImageLength (classic TIFF and BigTIFF); a tile larger
    than the image counts as its size (OpenCV allocates one whole tile)."""
    order = {b"II": "<", b"MM": ">"}.get(data[:2])
    if order is None:
        return None
    try:
        (version,) = struct.unpack(order + "H", data[2:4])
        if version == 42:
            (ifd,) = struct.unpack(order + "I", data[4:8])
            (count,) = struct.unpack(order + "H", data[ifd : ifd + 2])
            first, step, head, offsets = ifd + 2, 12, "HHI", {3: "H", 4: "I"}
        elif version == 43:
            (ifd,) = struct.unpack(order + "Q", data[8:16])
            (count,) = struct.unpack(order + "Q", data[ifd : ifd + 8])
            first, step, head, offsets = ifd + 8, 20, "HHQ", {3: "H", 4: "I", 16: "Q"}
        else:
            return None
        tags = {}
        entry = struct.calcsize(order + head)
        for k in range(min(count, 4096)):
            at = first + k * step
            tag, kind, _ = struct.unpack(order + head, data[at : at + entry])
            if tag in (256, 257, 322, 323) and kind in offsets:
                fmt = order + offsets[kind]
                value = data[at + entry : at + entry + struct.calcsize(fmt)]
                (tags[tag],) = struct.unpack(fmt, value)
    except struct.error:
        return None
    if 256 not in tags or 257 not in tags:
        return None
    width, height = tags[256], tags[257]
    tile = (tags.get(322, 0), tags.get(323, 0))
    return tile if tile[0] * tile[1] > width * height else (width, height)


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    if data[:2] != b"BM" or len(data) < 26:
        return None
    (header,) = struct.unpack("<I", data[14:18])
    if header == 12:  # BITMAPCOREHEADER
        return struct.unpack("<HH", data[18:22])
    width, height = struct.unpack("<ii", data[18:26])
    return abs(width), abs(height)


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) that an image file's header declares: PNG, JPEG, PBM / PGM / PPM /
    PAM, TIFF or BMP; None for anything else or a header that cannot be read."""
    for reader in (_png_size, jpeg_size, _pnm_size, _tiff_size, _bmp_size):
        size = reader(data)
        if size is not None:
            return int(size[0]), int(size[1])
    return None


def decode_image(
    data: bytes, *, what: str, max_pixels: int | None = None, flags: int | None = None
) -> np.ndarray | None:
    """``cv2.imdecode`` (``IMREAD_UNCHANGED`` unless ``flags``), once the size the header
    declares is within the cap. None, as from OpenCV, for a file that does not decode (or
    that OpenCV refuses), and for one that is not PNG, JPEG, PNM, TIFF or BMP (its size is
    not known: it is not handed to OpenCV).

    Raises:
        UserError: the header declares more pixels than the cap (see :func:`check_pixels`).
    """
    import cv2

    size = image_size(data)
    if size is None:
        return None
    width, height = size
    check_pixels(height, width, what=what, max_pixels=max_pixels)
    flags = cv2.IMREAD_UNCHANGED if flags is None else flags
    try:
        return cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error:  # one of OpenCV's own checks (a TIFF tile over 1 GB, ...)
        return None

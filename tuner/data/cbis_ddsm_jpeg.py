"""CBIS-DDSM's community JPEG edition (about 6 GB, the one most public notebooks read):
``csv/`` with the four case-description CSVs and ``dicom_info.csv`` (one row per image),
and ``jpeg/<SeriesInstanceUID>/1-<n>.jpg``.

The case CSVs still hold the archive's DICOM paths
(``<series folder>/<study UID>/<series UID>/00000N.dcm``): each row is joined to its JPEGs
through the series UID (the path's third component), never by patient id alone (a patient
has several series). ``dicom_info.csv`` says which JPEG of a series is the full mammogram,
the cropped ROI or the ROI mask (``SeriesDescription``: crop and mask of one ROI often
share a series folder); where it says nothing (some real rows are blank) the full image is
the series' only JPEG and a mask is told from a crop by content. Its ``image_path`` roots
(``CBIS-DDSM/jpeg/...``) rarely match where the user unpacked: a path is resolved by its
last two components, relative to the folder given. Images are 8-bit and already windowed;
masks are lossy (values near 0 and 255, not exactly) and are thresholded at mid-grey.
An image whose ``PhotometricInterpretation`` is not MONOCHROME2 is skipped with the reason:
whether its JPEG was inverted is not recorded anywhere, so it is never guessed.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
from collections import defaultdict

import cv2
import numpy as np
import pandas as pd

from tuner import storage
from tuner.data.cbis_ddsm import Abnormality, CbisDdsmSource
from tuner.data.limits import check_pixels, jpeg_size
from tuner.data.preprocess import fit_mask, is_lossy_mask
from tuner.data.records import ROI_FILES_MISSING
from tuner.errors import UserError

__all__ = ["DICOM_INFO", "DICOM_INFO_COLUMNS", "CbisDdsmJpegSource", "decode_jpeg"]

DICOM_INFO = "dicom_info.csv"
# The columns read; the real file has ~38 (DICOM header fields), which pass untouched.
DICOM_INFO_COLUMNS = ("image_path", "SeriesInstanceUID", "SeriesDescription")
FULL, CROP, MASK = "full mammogram images", "cropped images", "ROI mask images"
_JPEG = (".jpg", ".jpeg")


def decode_jpeg(data: bytes, *, name: str, max_pixels: int | None = None) -> np.ndarray:
    """Decode one JPEG to a greyscale uint8 array, once its frame header's size is within
    the pixel cap ``max_pixels`` (see :func:`tuner.data.limits.pixel_cap`).

    Raises:
        UserError: not a JPEG, truncated (libjpeg would fill the missing rows with grey
            and carry on; a missing end-of-image marker is refused instead), or declaring
            more pixels than the cap.
    """
    if not data.startswith(b"\xff\xd8"):
        raise UserError(f"{name}: not a JPEG file (no start-of-image marker)")
    if b"\xff\xd9" not in data[-64:]:  # a few bytes of padding may follow the marker
        raise UserError(f"{name}: truncated JPEG (no end-of-image marker)")
    size = jpeg_size(data)
    if size is None:
        raise UserError(f"{name}: JPEG data that does not decode (no frame header)")
    check_pixels(size[1], size[0], what=name, max_pixels=max_pixels)
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None or pixels.size == 0:
        raise UserError(f"{name}: JPEG data that does not decode")
    if pixels.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if pixels.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        pixels = cv2.cvtColor(pixels, code)
    return pixels


class CbisDdsmJpegSource(CbisDdsmSource):
    """The JPEG edition of CBIS-DDSM at a local path or URL, listed once.

    Raises:
        UserError: no ``dicom_info.csv`` or case CSVs, or ``dicom_info.csv`` lacks a column
            it needs.
    """

    kind = "cbis-ddsm-jpeg"
    edition = "jpeg"  # 8-bit JPEG, already windowed (~6 GB)

    def __init__(self, root: str, files: list[str] | None = None):
        folder = storage.Folder(root, files)
        infos = sorted(
            (p for p in folder.files if posixpath.basename(p) == DICOM_INFO),
            key=lambda p: (p.count("/"), p),
        )
        if not infos:
            raise UserError(
                f"{folder.root} is not a CBIS-DDSM JPEG edition: no {DICOM_INFO} "
                "(it comes in the edition's csv/ folder beside the four case CSVs)"
            )
        self._info_path = infos[0]
        super().__init__(root, files=folder.files)
        self._info_bytes = self._folder.read(self._info_path)
        info = pd.read_csv(io.BytesIO(self._info_bytes), dtype=str, keep_default_na=False)
        info = info.rename(columns=str.strip)
        lacking = [c for c in DICOM_INFO_COLUMNS if c not in info.columns]
        if lacking:
            raise UserError(
                f"{self._folder.url(self._info_path)}: missing column"
                f"{'s' if len(lacking) > 1 else ''} {', '.join(lacking)} (the JPEG edition's "
                f"dicom_info.csv has "
                f"{', '.join(DICOM_INFO_COLUMNS)} among others)"
            )
        self._info = info

    def _csv_folder(self) -> str | None:
        return posixpath.dirname(self._info_path)

    def fingerprint(self) -> str:
        """SHA-256 over the CSVs' bytes, dicom_info.csv and the JPEG files' relative paths."""
        digest = hashlib.sha256()
        for key in sorted(self._csv_bytes):
            digest.update(self._csv_bytes[key])
        digest.update(self._info_bytes)
        for path in self._files:
            if path.lower().endswith(_JPEG):
                digest.update(posixpath.relpath(path, self._base).encode())
        return digest.hexdigest()

    def _image_index(self) -> dict[str, list[dict]]:
        """Each series UID's JPEGs: ``{"url", "description", "photometric", "listed"}``."""
        on_disk: dict[str, str] = {}
        for path in self._files:
            if path.lower().endswith(_JPEG):
                on_disk.setdefault("/".join(path.split("/")[-2:]), path)
        if not on_disk:
            raise UserError(f"{self.root}: no JPEG files (the edition keeps them in jpeg/)")
        index: dict[str, list[dict]] = defaultdict(list)
        found: set[str] = set()
        photometric = "PhotometricInterpretation" in self._info.columns
        for row in self._info.to_dict("records"):
            uid = row["SeriesInstanceUID"].strip()
            tail = "/".join(row["image_path"].strip().replace("\\", "/").split("/")[-2:])
            path = on_disk.get(tail)
            if not uid or (path is not None and path in found):
                continue  # a row without a series, or one listed twice
            if path is not None:
                found.add(path)
            index[uid].append(
                {
                    "url": self._folder.url(path) if path else None,
                    "listed": row["image_path"].strip(),
                    "description": row["SeriesDescription"].strip(),
                    "photometric": row["PhotometricInterpretation"].strip() if photometric else "",
                }
            )
        # A JPEG that dicom_info.csv does not list is still its folder's (series UID's).
        for tail, path in on_disk.items():
            if path not in found:
                uid = tail.split("/")[0]
                index[uid].append(
                    {
                        "url": self._folder.url(path),
                        "listed": "",
                        "description": "",
                        "photometric": "",
                    }
                )
        return dict(index)

    def _full_image(self, a: Abnormality, index: dict) -> tuple[str | None, str]:
        entries = index.get(a.image_uid, [])
        present = [e for e in entries if e["url"]]
        if not present:
            if entries:
                listed = entries[0]["listed"]
                return None, f"series {a.image_uid}: {listed} not found under {self.root}"
            return None, f"series {a.image_uid} has no JPEG (not in dicom_info.csv nor jpeg/)"
        full = [e for e in present if e["description"] == FULL]
        if not full:
            full = [e for e in present if e["description"] not in (CROP, MASK)]
        if len(full) != 1:
            return None, (
                f"series {a.image_uid}: {len(present)} JPEGs and none (or several) marked "
                f"{FULL!r} in dicom_info.csv"
            )
        interpretation = full[0]["photometric"]
        if interpretation not in ("", "MONOCHROME2"):
            return None, (
                f"PhotometricInterpretation {interpretation!r} in dicom_info.csv: only "
                "MONOCHROME2 JPEGs are read (how another was converted is not recorded)"
            )
        return full[0]["url"], ""

    def _roi_files(self, a: Abnormality, index: dict) -> dict:
        files, descriptions = [], []
        for uid in dict.fromkeys((a.roi_uid, a.crop_uid)):
            for entry in index.get(uid, []):
                if entry["url"] and entry["url"] not in files and entry["description"] != FULL:
                    files.append(entry["url"])
                    descriptions.append(entry["description"])
        return {"files": files, "descriptions": descriptions}

    @staticmethod
    def load_image(url: str, *, max_pixels: int | None = None) -> np.ndarray:
        """Decode a full mammogram JPEG (8-bit, bright = dense) within the pixel cap."""
        data = storage.read_bytes(url)
        return decode_jpeg(data, name=posixpath.basename(url), max_pixels=max_pixels)

    @staticmethod
    def load_mask(
        roi: dict, shape: tuple[int, int], *, max_pixels: int | None = None
    ) -> tuple[np.ndarray | None, str]:
        """The finding's ROI mask at ``shape``: the JPEG ``dicom_info.csv`` calls the ROI
        mask, else the one whose content is a (lossy) mask; thresholded at mid-grey and
        fitted like a DICOM mask (:func:`tuner.data.preprocess.fit_mask`). Each file is
        decoded within the pixel cap ``max_pixels``."""
        files = roi.get("files", [])
        if not files:
            return None, ROI_FILES_MISSING
        descriptions = roi.get("descriptions") or [""] * len(files)
        masks = []
        for url, description in zip(files, descriptions, strict=True):
            if description == CROP:
                continue
            data = storage.read_bytes(url)
            pixels = decode_jpeg(data, name=posixpath.basename(url), max_pixels=max_pixels)
            if description == MASK or is_lossy_mask(pixels):
                masks.append(((pixels > 127) * 255).astype(np.uint8))
        if not masks:
            return None, "no ROI mask among the finding's files"
        return fit_mask(masks, shape)

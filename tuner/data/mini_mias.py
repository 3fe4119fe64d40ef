"""mini-MIAS (Suckling et al., 1994): 322 greyscale 1024x1024 PGM mammograms (MLO views) and
``Info.txt``, the ground truth: reference, background tissue, abnormality class, severity,
centre x and y (origin at the bottom-left corner) and radius.

Used as a transfer-learning source and as an out-of-distribution test set. Quirks handled:
rows without coordinates (``*NOTE 3*``, or none), several rows for one image, normal images
(``NORM``) without class data, and the bottom-left origin (converted to top-left here).
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from dataclasses import dataclass

import numpy as np

from tuner import storage
from tuner.data.limits import decode_image
from tuner.data.records import Finding, ImageRecord
from tuner.data.splits import assign_splits
from tuner.errors import UserError

__all__ = ["INFO", "CLASSES", "MiasRow", "parse_info", "MiniMiasSource"]

INFO = "Info.txt"
SIDE = 1024  # every mini-MIAS image is 1024 x 1024
# Abnormality classes as mammotune's abnormality types (as CBIS-DDSM files architectural
# distortions and asymmetries under masses).
CLASSES = {
    "CALC": "calcification",
    "CIRC": "mass",
    "SPIC": "mass",
    "MISC": "mass",
    "ARCH": "mass",
    "ASYM": "mass",
    "NORM": "none",
}
TISSUE = {"F": 1, "G": 2, "D": 3}  # fatty, fatty-glandular, dense-glandular
_REF = re.compile(r"^mdb\d{3}$")


@dataclass(frozen=True)
class MiasRow:
    ref: str
    tissue: str
    abnormality: str  # CALC, CIRC, ..., NORM
    severity: str | None  # B, M, or None for NORM
    x: int | None  # column, from the left
    y: int | None  # row, from the BOTTOM as in Info.txt
    radius: int | None


def parse_info(text: str, name: str = INFO) -> list[MiasRow]:
    """Parse Info.txt.

    Raises:
        UserError: a line that is not a mini-MIAS ground-truth row (naming the line).
    """
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if not _REF.match(fields[0]) or len(fields) < 3:
            raise UserError(f"{name} line {number}: not a mini-MIAS row: {line.strip()!r}")
        ref, tissue, abnormality = fields[0], fields[1], fields[2]
        if tissue not in TISSUE or abnormality not in CLASSES:
            raise UserError(
                f"{name} line {number}: unknown tissue {tissue!r} or class {abnormality!r}; "
                f"allowed: {', '.join(TISSUE)} and {', '.join(CLASSES)}"
            )
        severity = fields[3] if len(fields) > 3 and fields[3] in ("B", "M") else None
        numbers = fields[4:7] if len(fields) >= 7 else []
        if numbers and all(f.isdigit() for f in numbers):
            x, y, radius = (int(f) for f in numbers)
        else:
            x = y = radius = None  # "*NOTE 3*" or no coordinates at all
        rows.append(MiasRow(ref, tissue, abnormality, severity, x, y, radius))
    return rows


class MiniMiasSource:
    """A mini-MIAS folder (local path or URL): ``Info.txt`` and ``mdbNNN.pgm`` files.

    Raises:
        UserError: the folder does not exist or has no Info.txt.
    """

    kind = "mini-mias"
    collection = "mini-MIAS"
    edition = "pgm"  # 8-bit PGM at 200 um/pixel
    # 598 px at CBIS-DDSM's ~50 um/pixel is ~30 mm; mini-MIAS has 200 um/pixel.
    default_context_px = 150

    def __init__(self, root: str, files: list[str] | None = None):
        self._folder = storage.Folder(root, files)
        self.root = self._folder.root
        info = [p for p in self._folder.files if posixpath.basename(p) == INFO]
        if not info:
            raise UserError(f"{self.root} is not a mini-MIAS folder: {INFO} not found")
        self._info = self._folder.read(info[0])
        self._pgm = {
            posixpath.basename(p).lower().removesuffix(".pgm"): p
            for p in self._folder.files
            if p.lower().endswith(".pgm")
        }

    def rows(self) -> list[MiasRow]:
        return parse_info(self._info.decode("ascii", errors="replace"), f"{self.root}/{INFO}")

    def fingerprint(self) -> str:
        digest = hashlib.sha256(self._info)
        for ref in sorted(self._pgm):
            digest.update(ref.encode())
        return digest.hexdigest()

    def images(self, *, val_fraction: float, test_fraction: float, seed: int):
        """Every image with its findings and split (patients: mdb001+mdb002 are one woman's
        left and right breast, and so on in pairs).

        Returns:
            (records, skipped inputs with reasons, split report).
        """
        rows = self.rows()
        if not rows:
            raise UserError(f"{self.root}/{INFO} lists no images")
        patient = {r.ref: f"mias{(int(r.ref[3:]) + 1) // 2:03d}" for r in rows}
        split_of, report = assign_splits(
            ((patient[r.ref], None, r.severity == "M") for r in rows),
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            seed=seed,
        )
        images: dict[str, ImageRecord] = {}
        skipped = []
        for row in rows:
            if row.ref not in self._pgm:
                skipped.append({"item": row.ref, "reason": f"{row.ref}.pgm not found"})
                continue
            record = images.setdefault(
                row.ref,
                ImageRecord(
                    image_id=row.ref,
                    url=self._folder.url(self._pgm[row.ref]),
                    patient_id=patient[row.ref],
                    split=split_of[patient[row.ref]],
                    view="MLO",
                    breast_density=TISSUE[row.tissue],
                ),
            )
            if row.abnormality == "NORM":
                continue
            roi = {}
            if row.x is not None:
                roi = {"x": row.x, "y": SIDE - row.y, "radius": row.radius}  # top-left origin
            record.findings.append(
                Finding(
                    abnormality_id=len(record.findings) + 1,
                    abnormality_type=CLASSES[row.abnormality],
                    pathology="MALIGNANT" if row.severity == "M" else "BENIGN",
                    roi=roi,
                )
            )
        return list(images.values()), skipped, report

    @staticmethod
    def load_image(url: str, *, max_pixels: int | None = None) -> np.ndarray:
        """Decode a PGM mammogram (its 8-bit values, bright = dense), once the size its
        header declares is within the pixel cap (see :func:`tuner.data.limits.pixel_cap`)."""
        name = posixpath.basename(url)
        pixels = decode_image(storage.read_bytes(url), what=name, max_pixels=max_pixels)
        if pixels is None or pixels.ndim != 2 or pixels.size == 0:
            raise UserError(f"{name}: not a readable greyscale PGM image")
        return pixels

    @staticmethod
    def load_mask(
        roi: dict, shape: tuple[int, int], *, max_pixels: int | None = None
    ) -> tuple[np.ndarray | None, str]:
        """The finding's circle as a mask, or None when Info.txt gives no coordinates
        (``max_pixels``, as every source takes it: no file is decoded here)."""
        import cv2

        if not roi:
            return None, "no coordinates in Info.txt"
        mask = np.zeros(shape, np.uint8)
        cv2.circle(mask, (int(roi["x"]), int(roi["y"])), max(1, int(roi["radius"])), 1, -1)
        if not mask.any():
            return None, "circle lies outside the image"
        return mask.astype(bool), ""

"""CBIS-DDSM as distributed by The Cancer Imaging Archive: four case-description CSVs and a
tree of DICOM files, joined on the series folder name.

Quirks of the real collection handled here (see ``datasets/cbis_ddsm.md``): CRLF line ends,
``breast_density`` vs ``breast density`` headers, quoted paths ending in a newline, crop and
mask file names that do not tell which is which (told apart by content instead), masks whose
size differs from their image (fitted by ``preprocess.fit_mask``), and two DICOM layouts (the
CSVs' own ``<series folder>/<study UID>/<series UID>/00000N.dcm`` and the current download's
``CBIS-DDSM/<series folder>/<date>-DDSM-NA-<n>/<k>.000000-<description>-<n>/1-1.dcm``).
"""

from __future__ import annotations

import hashlib
import io
import posixpath
import re
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tuner import storage
from tuner.data.dicom import read_image
from tuner.data.preprocess import fit_mask, is_mask
from tuner.data.records import ROI_FILES_MISSING, Finding, ImageRecord
from tuner.data.splits import assign_splits
from tuner.errors import UserError

__all__ = [
    "CSV_FILES",
    "MASS_COLUMNS",
    "CALC_COLUMNS",
    "PATHOLOGIES",
    "Abnormality",
    "CbisDdsmSource",
    "series_folder",
    "series_uid",
    "is_mask",  # from tuner.data.preprocess, where prepare and predict share it
]

CSV_FILES = {
    ("mass", "train"): "mass_case_description_train_set.csv",
    ("mass", "test"): "mass_case_description_test_set.csv",
    ("calcification", "train"): "calc_case_description_train_set.csv",
    ("calcification", "test"): "calc_case_description_test_set.csv",
}

MASS_COLUMNS = [
    "patient_id",
    "breast_density",
    "left or right breast",
    "image view",
    "abnormality id",
    "abnormality type",
    "mass shape",
    "mass margins",
    "assessment",
    "pathology",
    "subtlety",
    "image file path",
    "cropped image file path",
    "ROI mask file path",
]
CALC_COLUMNS = [
    "patient_id",
    "breast density",
    "left or right breast",
    "image view",
    "abnormality id",
    "abnormality type",
    "calc type",
    "calc distribution",
    "assessment",
    "pathology",
    "subtlety",
    "image file path",
    "cropped image file path",
    "ROI mask file path",
]

PATHOLOGIES = ("BENIGN", "BENIGN_WITHOUT_CALLBACK", "MALIGNANT")  # as in the CSVs

# A series folder: Mass-Training_P_00001_LEFT_CC (full image) or ..._CC_1 (ROI of abnormality 1).
_SERIES = re.compile(r"^(Mass|Calc)-(Training|Test)_P_\d+_(LEFT|RIGHT)_(CC|MLO)(_\d+)?$")


@dataclass(frozen=True)
class Abnormality:
    """One row of a case-description CSV, cleaned."""

    patient_id: str
    abnormality_type: str  # "mass" | "calcification"
    abnormality_id: int
    pathology: str  # BENIGN | BENIGN_WITHOUT_CALLBACK | MALIGNANT
    laterality: str  # LEFT | RIGHT
    view: str  # CC | MLO
    breast_density: int
    subtlety: int
    assessment: int
    official_split: str  # "train" | "test", from the CSV file it came from
    image_series: str  # series folder of the full mammogram
    roi_series: str  # series folder(s) of the cropped image and ROI mask
    crop_series: str
    # Series instance UIDs of the same (the CSV paths' third component): the JPEG edition's
    # folder names, where a series folder name would not tell one series from another.
    image_uid: str = ""
    roi_uid: str = ""
    crop_uid: str = ""


def series_folder(path: str) -> str | None:
    """The series folder name (the join key) in a CSV path or a downloaded file's path."""
    for part in path.strip().replace("\\", "/").split("/"):
        if _SERIES.match(part):
            return part
    return None


def series_uid(path: str) -> str:
    """The series instance UID in a case-description CSV path
    (``<series folder>/<study UID>/<series UID>/00000N.dcm``), or "" when it has none."""
    parts = path.strip().replace("\\", "/").split("/")
    return parts[2] if len(parts) >= 4 else ""


def find_case_csvs(root: str, files: list[str], near: str | None = None) -> dict[tuple, str]:
    """The four case-description CSVs among ``files`` by (type, split), preferring those in
    the folder ``near`` (the JPEG edition keeps them beside ``dicom_info.csv``).

    Raises:
        UserError: one of the four is missing.
    """
    by_name: dict[str, str] = {}
    for path in sorted(files, key=lambda p: (posixpath.dirname(p) != near, p.count("/"), p)):
        if path.endswith(".csv"):
            by_name.setdefault(posixpath.basename(path), path)
    missing = [name for name in CSV_FILES.values() if name not in by_name]
    if missing:
        raise UserError(
            f"{root} is not a CBIS-DDSM folder: missing {', '.join(missing)} "
            "(download the four case-description CSVs from TCIA next to the DICOM tree, or "
            "unpack the JPEG edition with its csv/ folder)"
        )
    return {key: by_name[name] for key, name in CSV_FILES.items()}


def _clean(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.rename(columns=lambda c: c.strip().replace("breast density", "breast_density"))
    for column in frame.columns:
        if frame[column].dtype == object:
            frame[column] = frame[column].astype(str).str.strip()
    return frame


class CbisDdsmSource:
    """A CBIS-DDSM download at a local path or URL, listed once.

    Raises:
        UserError: the folder does not exist, or lacks one of the four CSVs.
    """

    kind = "cbis-ddsm"
    collection = "CBIS-DDSM"
    edition = "dicom"  # 16-bit DICOM as TCIA distributes it (~164 GB)
    default_context_px = 598  # Scuccimarra's tile at CBIS-DDSM's ~50 um/pixel

    def __init__(self, root: str, files: list[str] | None = None):
        self._folder = storage.Folder(root, files)
        self.root, self._files, self._base = (
            self._folder.root,
            self._folder.files,
            self._folder.path,
        )
        self._csv = find_case_csvs(self.root, self._files, self._csv_folder())
        self._csv_bytes = {key: self._folder.read(path) for key, path in self._csv.items()}

    def _csv_folder(self) -> str | None:
        return None  # the DICOM edition's CSVs may be anywhere in the tree

    def fingerprint(self) -> str:
        """SHA-256 over the CSVs' bytes and the DICOM files' relative paths."""
        digest = hashlib.sha256()
        for key in sorted(self._csv_bytes):
            digest.update(self._csv_bytes[key])
        for path in self._files:
            if path.lower().endswith(".dcm"):
                digest.update(posixpath.relpath(path, self._base).encode())
        return digest.hexdigest()

    def abnormalities(self) -> list[Abnormality]:
        """Every row of the four CSVs, cleaned.

        Raises:
            UserError: a CSV lacks an expected column or has an unknown pathology.
        """
        rows: list[Abnormality] = []
        expected = {c.replace("breast density", "breast_density") for c in MASS_COLUMNS}
        expected -= {"mass shape", "mass margins"}
        for (kind, split), data in self._csv_bytes.items():
            name = self._csv[(kind, split)]
            frame = _clean(pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False))
            lacking = sorted(expected - set(frame.columns))
            if lacking:
                raise UserError(f"{name}: missing columns {', '.join(lacking)}")
            for record in frame.to_dict("records"):
                rows.append(_abnormality(name, kind, split, record))
        return rows

    def dicom_index(self) -> dict[str, list[str]]:
        """Map each series folder name to the DICOM files inside it (URLs), whichever of
        the two layouts the tree uses."""
        index: dict[str, list[str]] = defaultdict(list)
        for path in self._files:
            if path.lower().endswith(".dcm"):
                key = series_folder(posixpath.relpath(path, self._base))
                if key:
                    index[key].append(self._folder.url(path))
        return dict(index)

    def images(self, *, val_fraction: float, test_fraction: float, seed: int):
        """Every full mammogram with its findings and split. A finding whose ROI files are
        missing still labels its image (a whole-image model needs only the mammogram and
        the CSV row); prepare skips its ROI tiles alone, with the reason.

        Returns:
            (records, skipped inputs with reasons, split report).

        Raises:
            UserError: the CSVs list nothing, or no image file is found.
        """
        abnormalities = self.abnormalities()
        if not abnormalities:
            raise UserError(f"{self.root}: the case-description CSVs list no abnormalities")
        index = self._image_index()
        split_of, report = assign_splits(
            ((a.patient_id, a.official_split, a.pathology == "MALIGNANT") for a in abnormalities),
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            seed=seed,
        )
        images: dict[str, ImageRecord] = {}
        skipped: list[dict] = []
        unusable: set[str] = set()  # full mammograms already skipped (one line each)
        for a in abnormalities:
            if a.image_series in unusable:
                continue
            if a.image_series not in images:
                url, reason = self._full_image(a, index)
                if url is None:
                    skipped.append({"item": a.image_series, "reason": reason})
                    unusable.add(a.image_series)
                    continue
                images[a.image_series] = ImageRecord(
                    image_id=a.image_series,
                    url=url,
                    patient_id=a.patient_id,
                    split=split_of[a.patient_id],
                    laterality=a.laterality,
                    view=a.view,
                    breast_density=a.breast_density,
                )
            images[a.image_series].findings.append(
                Finding(
                    abnormality_id=a.abnormality_id,
                    abnormality_type=a.abnormality_type,
                    pathology=a.pathology,
                    roi={**self._roi_files(a, index), "series": a.roi_series},
                    subtlety=a.subtlety,
                )
            )
        return list(images.values()), skipped, report

    # Where the DICOM edition's files are: by series folder name, either layout.
    def _image_index(self) -> dict[str, list[str]]:
        index = self.dicom_index()
        if not index:
            hint = ""
            if any(posixpath.basename(p) == "dicom_info.csv" for p in self._files):
                hint = " (this is the JPEG edition: use --source-kind cbis-ddsm-jpeg)"
            raise UserError(f"{self.root}: no DICOM files under the CSVs' series folders{hint}")
        return index

    def _full_image(self, a: Abnormality, index: dict) -> tuple[str | None, str]:
        files = index.get(a.image_series, [])
        return (files[0], "") if files else (None, "full mammogram not found")

    def _roi_files(self, a: Abnormality, index: dict) -> dict:
        return {"files": sorted(set(index.get(a.roi_series, []) + index.get(a.crop_series, [])))}

    @staticmethod
    def load_image(url: str, *, max_pixels: int | None = None) -> np.ndarray:
        """Decode a full mammogram (bright = dense; see :func:`tuner.data.dicom.decode`);
        ``max_pixels``: the pixel cap (see :func:`tuner.data.limits.pixel_cap`)."""
        fs, path = storage.filesystem(url)
        with fs.open(path, "rb") as f:
            return read_image(f, name=posixpath.basename(url), max_pixels=max_pixels)

    @staticmethod
    def load_mask(
        roi: dict, shape: tuple[int, int], *, max_pixels: int | None = None
    ) -> tuple[np.ndarray | None, str]:
        """The finding's ROI mask at ``shape``, found among its files by content (a mask has
        two values; a cropped ROI is greyscale), never by file name or CSV column, and fitted
        to the image by :func:`tuner.data.preprocess.fit_mask` (as predict fits a mask file).
        Each file is decoded within the pixel cap ``max_pixels``.

        Returns:
            (mask or None, note): the note says what was rescaled, or why there is no mask.
        """
        if not roi.get("files"):
            return None, ROI_FILES_MISSING
        masks = []
        for url in roi["files"]:
            fs, path = storage.filesystem(url)
            with fs.open(path, "rb") as f:
                pixels = read_image(f, name=posixpath.basename(url), max_pixels=max_pixels)
            if is_mask(pixels):
                masks.append(pixels)
        if not masks:
            return None, "no ROI mask among the finding's files"
        return fit_mask(masks, shape)


def _abnormality(name: str, kind: str, split: str, record: dict) -> Abnormality:
    pathology = record["pathology"].upper()
    if pathology not in PATHOLOGIES:
        raise UserError(
            f"{name}: patient {record['patient_id']}: unknown pathology "
            f"{record['pathology']!r}; allowed: {', '.join(PATHOLOGIES)}"
        )
    return Abnormality(
        patient_id=record["patient_id"],
        abnormality_type=kind,
        abnormality_id=int(record["abnormality id"]),
        pathology=pathology,
        laterality=record["left or right breast"].upper(),
        view=record["image view"].upper(),
        breast_density=int(record["breast_density"] or 0),
        subtlety=int(record["subtlety"] or 0),
        assessment=int(record["assessment"] or 0),
        official_split=split,
        image_series=series_folder(record["image file path"]) or "",
        roi_series=series_folder(record["ROI mask file path"]) or "",
        crop_series=series_folder(record["cropped image file path"]) or "",
        image_uid=series_uid(record["image file path"]),
        roi_uid=series_uid(record["ROI mask file path"]),
        crop_uid=series_uid(record["cropped image file path"]),
    )

"""Synthetic CBIS-DDSM: DICOM files and the four CSVs in the layout of the real download.

Writes the real quirks: CRLF, both ``breast density`` spellings, quoted paths ending in a
newline, crop and mask file names that do not say which is which (and CSV columns that point
the wrong way in some rows), the odd mask whose size differs from its image, and patients in
a train file of one abnormality type and a test file of the other. Files go either where the
CSVs' own paths say (``layout="csv"``) or where a current download puts them
(``layout="archive"``: ``CBIS-DDSM/<series>/<date>-DDSM-NA-<n>/<k>.000000-<desc>-<n>/1-1.dcm``).
"""

from __future__ import annotations

import csv
import io
import posixpath
import zlib
from dataclasses import dataclass, field

import cv2
import numpy as np
from pydicom.uid import generate_uid

from tuner import storage
from tuner.data import _phantom
from tuner.data.cbis_ddsm import CALC_COLUMNS, CSV_FILES, MASS_COLUMNS
from tuner.data.dicom import write_image

__all__ = ["plan", "render", "finish"]

REAL_HEIGHT, REAL_WIDTH = 5000, 3000  # a typical CBIS-DDSM full mammogram, in pixels


@dataclass
class _Finding:
    kind: str  # mass | calcification
    abnormality_id: int
    pathology: str
    split: str  # official split of the CSV this finding is listed in
    radius: float
    shape_seed: int


@dataclass
class _Case:
    """One breast, one abnormality type: the images (CC, MLO) of one series-folder family."""

    index: int
    patient_id: str
    laterality: str
    kind: str
    split: str
    density: int
    views: list[str]
    findings: list[_Finding] = field(default_factory=list)


def plan(params) -> list[_Case]:
    """The cases (one breast, one abnormality type) of a synthetic download."""
    rng = np.random.default_rng(params.seed)
    cases: list[_Case] = []
    number = 0
    for _ in range(params.patients):
        number += int(rng.integers(1, 4))  # real patient numbers are sparse: P_00001, P_00004, ...
        patient = f"P_{number:05d}"
        split = "test" if rng.random() < params.test_fraction else "train"
        sides = ["LEFT", "RIGHT"] if rng.random() < 0.15 else [str(rng.choice(["LEFT", "RIGHT"]))]
        density = int(rng.integers(1, 5))
        for side in sides:
            kinds = [str(rng.choice(["mass", "calcification"]))]
            if rng.random() < 0.1:
                kinds = ["mass", "calcification"]
            for kind in kinds:
                case_split = split
                if len(kinds) == 2 and kind == "calcification" and rng.random() < 0.4:
                    # The real collection lists some patients in a train file of one
                    # abnormality type and a test file of the other.
                    case_split = "train" if split == "test" else "test"
                views = ["CC", "MLO"] if rng.random() < 0.95 else [str(rng.choice(["CC", "MLO"]))]
                case = _Case(len(cases), patient, side, kind, case_split, density, views)
                for abnormality_id in range(1, 2 + int(rng.random() < 0.15)):
                    malignant = rng.random() < params.malignant_fraction
                    pathology = (
                        "MALIGNANT"
                        if malignant
                        else ("BENIGN_WITHOUT_CALLBACK" if rng.random() < 0.3 else "BENIGN")
                    )
                    low, high = (80, 220) if kind == "mass" else (60, 160)
                    case.findings.append(
                        _Finding(
                            kind,
                            abnormality_id,
                            pathology,
                            case_split,
                            radius=float(rng.uniform(low, high)) * params.scale,
                            shape_seed=int(rng.integers(2**31)),
                        )
                    )
                cases.append(case)
    return cases


def _uid(params, *parts: object) -> str:
    return generate_uid(entropy_srcs=[str(params.seed), *map(str, parts)])


def _series(case: _Case, view: str) -> str:
    kind = "Mass" if case.kind == "mass" else "Calc"
    split = "Training" if case.split == "train" else "Test"
    return f"{kind}-{split}_{case.patient_id}_{case.laterality}_{view}"


def _to_uint16(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0.0, 1.0) * 60000 + 200).astype(np.uint16)


def render(args: tuple) -> list[dict]:
    """Render and write every image of one case; return its CSV rows."""
    params, case, out = args
    rng = np.random.default_rng([params.seed, case.index])
    height, width = round(REAL_HEIGHT * params.scale), round(REAL_WIDTH * params.scale)
    rows = []
    for view in case.views:
        image, breast, allowed = _phantom.render_breast(
            rng, height, width, view=view, density=case.density, scale=params.scale
        )
        if rng.random() < 0.7:
            _phantom.add_label_artifact(rng, image, breast)
        # Film-edge strips from a generator of their own: the phantoms and lesions stay
        # those of the same seed without them.
        strips = np.random.default_rng([params.seed, case.index, zlib.crc32(view.encode())])
        if strips.random() < 0.5:
            _phantom.add_border_strips(strips, image)
        masks = []
        for finding in case.findings:
            shape_rng = np.random.default_rng(finding.shape_seed)  # same lesion in both views
            # A lesion occult in one view is placed (its mask written) but not drawn; its own
            # generator keeps every other draw as it was.
            occult = np.random.default_rng([finding.shape_seed, 1])
            hidden = (
                len(case.views) == 2
                and occult.random() < params.one_view_fraction
                and view == case.views[int(occult.integers(2))]
            )
            lesion = _phantom.render_lesion(
                shape_rng,
                kind=finding.kind,
                malignant=finding.pathology == "MALIGNANT",
                radius=finding.radius,
                difficulty=params.difficulty,
                scale=params.scale,
            )
            target = image.copy() if hidden else image
            masks.append(_phantom.place(rng, target, allowed, lesion, masks, finding.radius))

        if case.laterality == "RIGHT":  # chest wall on the right edge
            image = image[:, ::-1]
            masks = [m[:, ::-1] for m in masks]
        pixels = _to_uint16(image)
        series = _series(case, view)
        study = _uid(params, series, "study")
        common = {
            "PatientID": series,  # CBIS-DDSM's own anonymised key, as in the real files
            "PatientName": series,
            "BodyPartExamined": "BREAST",
            "ImageLaterality": case.laterality[0],
            "ViewPosition": view,
        }
        listed_full = f"{series}/{study}/{_uid(params, series, 'series')}/000000.dcm"
        jpeg = params.layout == "jpeg-edition"
        if jpeg:
            # The edition's JPEGs are 8-bit, windowed over each image's own range.
            low, high = int(pixels.min()), int(pixels.max())
            pixels = ((pixels.astype(np.float32) - low) * (255.0 / max(high - low, 1))).astype(
                np.uint8
            )
            rows.append(_jpeg(out, params, listed_full, pixels, common, "full mammogram images"))
        else:
            full_path = _stored(params, listed_full, series, "full mammogram images")
            _write(out, full_path, pixels, params, series, study, common, "full mammogram images")

        for finding, mask in zip(case.findings, masks, strict=True):
            roi = f"{series}_{finding.abnormality_id}"
            roi_study, roi_series = _uid(params, roi, "study"), _uid(params, roi, "series")
            ys, xs = np.nonzero(mask)
            crop = pixels[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
            mask_pixels = mask.astype(np.uint8) * 255
            if rng.random() < 0.03:
                # A few real masks differ in size from their image by a few pixels.
                mask_pixels = cv2.resize(
                    mask_pixels, (width + 3, height - 2), interpolation=cv2.INTER_NEAREST
                )
            # Real file names do not tell crop from mask: either may be 000000.dcm.
            crop_name, mask_name = ("000000.dcm", "000001.dcm")
            if rng.random() < 0.5:
                crop_name, mask_name = mask_name, crop_name
            folder = f"{roi}/{roi_study}/{roi_series}"
            # Most crops and masks share a series; some real ROIs (104 of 3,568) have two.
            mask_series = roi_series
            if zlib.crc32(roi.encode()) % 20 == 0:
                mask_series = _uid(params, roi, "mask series")
            mask_folder = f"{roi}/{roi_study}/{mask_series}"
            roi_common = {**common, "PatientID": roi, "PatientName": roi}  # as in the real files
            for where, name, data, description, uid in (
                (folder, crop_name, crop, "cropped images", roi_series),
                (mask_folder, mask_name, mask_pixels, "ROI mask images", mask_series),
            ):
                if jpeg:
                    rows.append(
                        _jpeg(out, params, f"{where}/{name}", data, roi_common, description)
                    )
                    continue
                path = _stored(params, f"{where}/{name}", roi, description)
                _write(out, path, data, params, roi, roi_study, roi_common, description, uid)
            # ... and the CSV columns do not always point at the right one either.
            listed_crop, listed_mask = f"{folder}/{crop_name}", f"{mask_folder}/{mask_name}"
            if rng.random() < 0.1:
                listed_crop, listed_mask = listed_mask, listed_crop
            rows.append(_csv_row(rng, case, view, finding, listed_full, listed_crop, listed_mask))
    return rows


def _stored(params, listed: str, series: str, description: str) -> str:
    """Where a file goes: the CSV's own path, or the current download's layout (whose
    numbers come from the path, so both layouts hold the same pixels)."""
    if params.layout == "csv":
        return listed
    number = 10000 + zlib.crc32(listed.encode()) % 90000
    return (
        f"CBIS-DDSM/{series}/07-21-2016-DDSM-NA-{number}/"
        f"1.000000-{description}-{number % 1000:03d}/1-1.dcm"
    )


# The columns of the JPEG edition's dicom_info.csv (DICOM header fields of each image).
DICOM_INFO_COLUMNS = [
    "file_path",
    "image_path",
    "AccessionNumber",
    "BitsAllocated",
    "BitsStored",
    "BodyPartExamined",
    "Columns",
    "HighBit",
    "Laterality",
    "Modality",
    "PatientID",
    "PatientName",
    "PhotometricInterpretation",
    "PixelRepresentation",
    "Rows",
    "SOPInstanceUID",
    "SamplesPerPixel",
    "SeriesDescription",
    "SeriesInstanceUID",
    "SeriesNumber",
    "StudyInstanceUID",
]


def _jpeg(out, params, listed: str, pixels: np.ndarray, common: dict, description: str) -> dict:
    """Write one image of the JPEG edition (``jpeg/<series UID>/1-<n>.jpg``, lossy, 8-bit)
    and return its dicom_info.csv row (flagged ``_dicom_info`` for :func:`finish`)."""
    _, study, series_uid, name = listed.split("/")
    # Crop and mask of one ROI share a folder: 1-<n>.jpg and 1-<n+1>.jpg, never one name.
    number = zlib.crc32(posixpath.dirname(listed).encode()) % 300 + 1 + int(name[:6])
    image_path = f"CBIS-DDSM/jpeg/{series_uid}/1-{number}.jpg"
    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(pixels), [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    storage.write_bytes(storage.join(out, image_path.removeprefix("CBIS-DDSM/")), data.tobytes())
    sop = _uid(params, listed)
    # As in the real file, some full mammograms' rows leave SeriesDescription blank.
    blank = description == "full mammogram images" and zlib.crc32(listed.encode()) % 12 == 0
    return {
        "_dicom_info": {
            "file_path": f"CBIS-DDSM/dicom/{sop}.dcm",
            "image_path": image_path,
            "AccessionNumber": "",
            "BitsAllocated": 16 if description != "ROI mask images" else 8,
            "BitsStored": 16 if description != "ROI mask images" else 8,
            "BodyPartExamined": "BREAST",
            "Columns": pixels.shape[1],
            "HighBit": 15 if description != "ROI mask images" else 7,
            "Laterality": common["ImageLaterality"],
            "Modality": "MG",
            "PatientID": common["PatientID"],
            "PatientName": common["PatientName"],
            "PhotometricInterpretation": "MONOCHROME2",
            "PixelRepresentation": 0,
            "Rows": pixels.shape[0],
            "SOPInstanceUID": sop,
            "SamplesPerPixel": 1,
            "SeriesDescription": "" if blank else description,
            "SeriesInstanceUID": series_uid,
            "SeriesNumber": 1,
            "StudyInstanceUID": study,
        }
    }


def _write(out, relative, pixels, params, series, study, common, description, series_uid=None):
    # Masks are stored RLE-compressed: 60x smaller, and prepare meets a compressed syntax.
    rle = description == "ROI mask images"
    buffer = io.BytesIO()
    write_image(
        buffer,
        np.ascontiguousarray(pixels),
        study_uid=study,
        series_uid=series_uid or _uid(params, series, "series"),
        instance_uid=_uid(params, relative),
        attributes={**common, "SeriesDescription": description},
        rle=rle,
    )
    storage.write_bytes(storage.join(out, relative), buffer.getvalue())


def _csv_row(rng, case: _Case, view, finding: _Finding, full, crop, mask) -> dict:
    malignant = finding.pathology == "MALIGNANT"
    pick = lambda options: str(rng.choice(options))  # noqa: E731
    row = {
        "patient_id": case.patient_id,
        "breast_density": case.density,
        "left or right breast": case.laterality,
        "image view": view,
        "abnormality id": finding.abnormality_id,
        "abnormality type": finding.kind,
        "assessment": int(rng.integers(4, 6)) if malignant else int(rng.integers(2, 5)),
        "pathology": finding.pathology,
        "subtlety": int(rng.integers(1, 6)),
        "image file path": full,
        # Like the real files, some paths end in a newline (and get quoted for it).
        "cropped image file path": crop + ("\n" if rng.random() < 0.5 else ""),
        "ROI mask file path": mask + ("\n" if rng.random() < 0.5 else ""),
    }
    if finding.kind == "mass":
        row["mass shape"] = pick(["IRREGULAR", "LOBULATED"] if malignant else ["ROUND", "OVAL"])
        row["mass margins"] = pick(
            ["SPICULATED", "ILL_DEFINED"] if malignant else ["CIRCUMSCRIBED", "OBSCURED"]
        )
    else:
        row["breast density"] = row.pop("breast_density")
        row["calc type"] = pick(
            ["PLEOMORPHIC", "FINE_LINEAR_BRANCHING", "AMORPHOUS"]
            if malignant
            else ["PUNCTATE", "ROUND_AND_REGULAR", "COARSE"]
        )
        row["calc distribution"] = pick(
            ["CLUSTERED", "LINEAR", "SEGMENTAL"] if malignant else ["SCATTERED", "REGIONAL"]
        )
    return row


def _csv_bytes(columns: list[str], rows: list[dict]) -> bytes:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue().encode()


def finish(out: str, rows: list[dict]) -> dict:
    """Write the four case-description CSVs (and, for the JPEG edition, dicom_info.csv,
    all in ``csv/``); return counts for the summary."""
    infos = [r["_dicom_info"] for r in rows if "_dicom_info" in r]
    rows = [r for r in rows if "_dicom_info" not in r]
    folder = storage.join(out, "csv") if infos else out
    if infos:
        storage.write_bytes(
            storage.join(folder, "dicom_info.csv"), _csv_bytes(DICOM_INFO_COLUMNS, infos)
        )
    for (kind, split), name in CSV_FILES.items():
        selected = [r for r in rows if r["abnormality type"] == kind and _row_split(r) == split]
        columns = MASS_COLUMNS if kind == "mass" else CALC_COLUMNS
        storage.write_bytes(storage.join(folder, name), _csv_bytes(columns, selected))
    return {
        "images": len({r["image file path"] for r in rows}),
        "abnormalities": len(rows),
        "patients": len({r["patient_id"] for r in rows}),
        "malignant": sum(r["pathology"] == "MALIGNANT" for r in rows),
    }


def _row_split(row: dict) -> str:
    return "train" if "-Training_" in row["image file path"] else "test"

"""Synthetic CBIS-DDSM: a small dataset in the layout of the real download, with a seed.

It exists so that every stage can run, and be tested, on a machine with no network and no
access to the real collection: DICOM full mammograms, cropped ROIs and ROI masks under the
series folders the four case-description CSVs point to, with the real column headers and
the real quirks (CRLF, both ``breast density`` spellings, quoted paths ending in a newline,
crop and mask file names that do not say which is which, the odd mask whose size differs from
its image, patients in a train file of one abnormality type and a test file of the other).
"""

from __future__ import annotations

import csv
import io
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np
from pydicom.uid import generate_uid

from tuner import storage
from tuner.data import _phantom
from tuner.data.cbis_ddsm import CALC_COLUMNS, CSV_FILES, MASS_COLUMNS
from tuner.data.dicom import write_image
from tuner.errors import UserError

__all__ = ["SynthParams", "synthesize"]

MARKER = "synth.json"
REAL_HEIGHT, REAL_WIDTH = 5000, 3000  # a typical CBIS-DDSM full mammogram, in pixels


@dataclass(frozen=True)
class SynthParams:
    """What a synthetic dataset is made from; equal params give byte-identical files."""

    patients: int = 200
    seed: int = 0
    difficulty: float = 0.5
    scale: float = 0.25  # fraction of real CBIS-DDSM resolution (~50 um/pixel)
    test_fraction: float = 0.2
    malignant_fraction: float = 0.42

    def validate(self) -> None:
        if self.patients < 10:
            raise UserError(f"--patients {self.patients} is too few; use at least 10")
        if not 0.0 <= self.difficulty <= 1.0:
            raise UserError(f"--difficulty {self.difficulty} is out of range; use 0.0 to 1.0")
        if not 0.05 <= self.scale <= 1.0:
            raise UserError(f"--scale {self.scale} is out of range; use 0.05 to 1.0")


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


def _plan(params: SynthParams) -> list[_Case]:
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


def _uid(params: SynthParams, *parts: object) -> str:
    return generate_uid(entropy_srcs=[str(params.seed), *map(str, parts)])


def _series(case: _Case, view: str) -> str:
    kind = "Mass" if case.kind == "mass" else "Calc"
    split = "Training" if case.split == "train" else "Test"
    return f"{kind}-{split}_{case.patient_id}_{case.laterality}_{view}"


def _to_uint16(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0.0, 1.0) * 60000 + 200).astype(np.uint16)


def _render_case(args: tuple[SynthParams, _Case, str]) -> list[dict]:
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
        masks = []
        for finding in case.findings:
            shape_rng = np.random.default_rng(finding.shape_seed)  # same lesion in both views
            malignant = finding.pathology == "MALIGNANT"
            if finding.kind == "mass":
                lesion = _phantom.render_mass(
                    shape_rng,
                    malignant=malignant,
                    radius=finding.radius,
                    difficulty=params.difficulty,
                )
            else:
                lesion = _phantom.render_calcifications(
                    shape_rng,
                    malignant=malignant,
                    radius=finding.radius,
                    difficulty=params.difficulty,
                    scale=params.scale,
                )
            # Keep lesions apart so that each ROI tile shows one finding.
            free = allowed.copy()
            for other in masks:
                ys, xs = np.nonzero(other)
                cy, cx = int(ys.mean()), int(xs.mean())
                r = int(finding.radius * 4)
                free[max(0, cy - r) : cy + r, max(0, cx - r) : cx + r] = False
            ys, xs = np.nonzero(free if free.any() else allowed)
            pick = int(rng.integers(len(ys)))
            masks.append(_phantom.paste(image, lesion, (int(ys[pick]), int(xs[pick]))))

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
        full_path = f"{series}/{study}/{_uid(params, series, 'series')}/000000.dcm"
        _write(out, full_path, pixels, params, series, study, common, "full mammogram images")

        for finding, mask in zip(case.findings, masks, strict=True):
            roi = f"{series}_{finding.abnormality_id}"
            roi_study, roi_series = _uid(params, roi, "study"), _uid(params, roi, "series")
            ys, xs = np.nonzero(mask)
            y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
            crop = pixels[y0:y1, x0:x1]
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
            roi_common = {**common, "PatientID": roi, "PatientName": roi}  # as in the real files
            _write(
                out,
                f"{folder}/{crop_name}",
                crop,
                params,
                roi,
                roi_study,
                roi_common,
                "cropped images",
                roi_series,
            )
            _write(
                out,
                f"{folder}/{mask_name}",
                mask_pixels,
                params,
                roi,
                roi_study,
                roi_common,
                "ROI mask images",
                roi_series,
            )
            # ... and the CSV columns do not always point at the right one either.
            listed_crop, listed_mask = f"{folder}/{crop_name}", f"{folder}/{mask_name}"
            if rng.random() < 0.1:
                listed_crop, listed_mask = listed_mask, listed_crop
            rows.append(_csv_row(rng, case, view, finding, full_path, listed_crop, listed_mask))
    return rows


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


def synthesize(
    out: str, params: SynthParams = SynthParams(), *, workers: int | None = None, progress=None
) -> dict:
    """Write a synthetic CBIS-DDSM dataset to ``out`` (a local path or URL).

    Writing the same params into a folder that already holds them does nothing.

    Args:
        workers: processes to render with (default: one per CPU core).
        progress: optional callable ``(done, total)`` called as cases finish.

    Returns:
        The summary stored in ``out/synth.json``: params, counts, seconds taken.

    Raises:
        UserError: bad params, or ``out`` already holds something else.
    """
    params.validate()
    out = storage.normalize(out)
    fs, path = storage.filesystem(out)
    marker = storage.join(out, MARKER)
    if fs.exists(path) and fs.ls(path):
        if fs.exists(storage.filesystem(marker)[1]):
            summary = storage.read_json(marker)
            if summary.get("params") == asdict(params):
                return {**summary, "reused": True}
            raise UserError(
                f"{out} already holds a synthetic dataset made with other settings "
                f"({summary.get('params')}); choose another folder"
            )
        raise UserError(f"{out} is not empty; choose a new or empty folder for the dataset")

    started = time.perf_counter()
    cases = _plan(params)
    rows: list[dict] = []
    workers = workers or os.cpu_count() or 1
    jobs = [(params, case, out) for case in cases]
    if workers > 1 and len(cases) > 8:
        # spawn: safe whatever threads the parent runs (rich, Ray); each child imports numpy once.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            for done, case_rows in enumerate(pool.map(_render_case, jobs, chunksize=4), 1):
                rows.extend(case_rows)
                if progress:
                    progress(done, len(cases))
    else:
        for done, job in enumerate(jobs, 1):
            rows.extend(_render_case(job))
            if progress:
                progress(done, len(cases))

    for (kind, split), name in CSV_FILES.items():
        selected = [r for r in rows if r["abnormality type"] == kind and _row_split(r) == split]
        columns = MASS_COLUMNS if kind == "mass" else CALC_COLUMNS
        storage.write_bytes(storage.join(out, name), _csv_bytes(columns, selected))

    summary = {
        "params": asdict(params),
        "images": len({r["image file path"] for r in rows}),
        "abnormalities": len(rows),
        "patients": len({r["patient_id"] for r in rows}),
        "malignant": sum(r["pathology"] == "MALIGNANT" for r in rows),
        "seconds": round(time.perf_counter() - started, 1),
    }
    storage.write_json(marker, summary)  # written last: the dataset is complete
    return summary


def _row_split(row: dict) -> str:
    return "train" if "-Training_" in row["image file path"] else "test"

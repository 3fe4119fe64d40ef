import csv
import io
from pathlib import Path

import numpy as np
import pydicom
import pytest

from tuner.data.cbis_ddsm import CALC_COLUMNS, CSV_FILES, MASS_COLUMNS, is_mask, series_folder
from tuner.data.synthetic import SynthParams, synthesize
from tuner.errors import UserError


def _rows(path: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(path.read_bytes().decode(), newline="")))


def test_every_dicom_parses_and_decodes(synthetic_source):
    files = sorted(synthetic_source.rglob("*.dcm"))
    assert len(files) > 100
    for path in files[::7]:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array
        assert pixels.ndim == 2 and pixels.size > 0
        assert ds.Modality == "MG"
        assert ds.PatientID == series_folder(str(path.relative_to(synthetic_source)))


def test_csvs_have_the_real_headers_and_quirks(synthetic_source, shared_data):
    for (kind, _), name in CSV_FILES.items():
        ours = (synthetic_source / name).read_bytes()
        real = (shared_data / "cbis-ddsm" / name).read_bytes()
        assert ours.split(b"\r\n", 1)[0] == real.split(b"\r\n", 1)[0]
        assert ours.split(b"\r\n", 1)[0].decode().split(",") == (
            MASS_COLUMNS if kind == "mass" else CALC_COLUMNS
        )
        assert b"\r\n" in ours
    # Quoted paths that end in a newline, as in the real files.
    text = (synthetic_source / "mass_case_description_train_set.csv").read_bytes()
    assert b'.dcm\n"' in text


def test_csv_paths_lead_to_files_and_crop_mask_told_by_content(synthetic_source):
    rows = _rows(synthetic_source / "mass_case_description_train_set.csv")
    assert rows
    swapped = 0
    for row in rows:
        full = synthetic_source / row["image file path"].strip()
        assert full.is_file()
        mask_path = synthetic_source / row["ROI mask file path"].strip()
        crop_path = synthetic_source / row["cropped image file path"].strip()
        assert mask_path.is_file() and crop_path.is_file()
        if not is_mask(pydicom.dcmread(mask_path).pixel_array):
            swapped += 1
            assert is_mask(pydicom.dcmread(crop_path).pixel_array)
    # Some rows point the wrong way, like the real collection; not all of them.
    assert 0 < swapped < len(rows)


def test_same_seed_same_bytes_and_reuse(tmp_path):
    params = SynthParams(patients=10, seed=3, scale=0.1)
    first = synthesize(str(tmp_path / "a"), params, workers=1)
    second = synthesize(str(tmp_path / "b"), params, workers=1)
    assert first["images"] == second["images"]
    for name in CSV_FILES.values():
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    some = sorted((tmp_path / "a").rglob("*.dcm"))[3]
    assert some.read_bytes() == (tmp_path / "b" / some.relative_to(tmp_path / "a")).read_bytes()
    again = synthesize(str(tmp_path / "a"), params, workers=1)
    assert again["reused"] is True


def test_refuses_to_overwrite(tmp_path):
    synthesize(str(tmp_path / "a"), SynthParams(patients=10, scale=0.1), workers=1)
    before = sorted(p.stat().st_mtime_ns for p in (tmp_path / "a").rglob("*"))
    with pytest.raises(UserError, match="other settings"):
        synthesize(str(tmp_path / "a"), SynthParams(patients=11, scale=0.1), workers=1)
    assert sorted(p.stat().st_mtime_ns for p in (tmp_path / "a").rglob("*")) == before
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        synthesize(str(tmp_path / "busy"), SynthParams(patients=10, scale=0.1), workers=1)


@pytest.mark.parametrize("bad", [dict(patients=3), dict(difficulty=1.5), dict(scale=0.0)])
def test_bad_params(tmp_path, bad):
    with pytest.raises(UserError):
        synthesize(str(tmp_path / "x"), SynthParams(**bad))


def test_lesion_classes_differ_in_the_published_cues():
    """Malignant masses have a longer, more irregular outline than benign ones of the same
    size; malignant calcification clusters hold more, smaller particles."""
    import cv2

    from tuner.data import _phantom

    def outline_ratio(malignant: bool) -> float:
        ratios = []
        for seed in range(20):
            lesion = _phantom.render_mass(
                np.random.default_rng(seed), malignant=malignant, radius=30, difficulty=0.3
            )
            # Threshold the intensity (spicules included), compare perimeter to area.
            shape = (lesion.intensity > 0.3 * lesion.intensity.max()).astype(np.uint8)
            contours, _ = cv2.findContours(shape, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            contour = max(contours, key=cv2.contourArea)
            ratios.append(cv2.arcLength(contour, True) / np.sqrt(cv2.contourArea(contour)))
        return float(np.mean(ratios))

    assert outline_ratio(True) > 1.2 * outline_ratio(False)

    def particles(malignant: bool) -> tuple[float, float]:
        counts, sizes = [], []
        for seed in range(20):
            lesion = _phantom.render_calcifications(
                np.random.default_rng(seed),
                malignant=malignant,
                radius=30,
                difficulty=0.3,
                scale=0.25,
            )
            binary = (lesion.intensity > 0.5 * lesion.intensity.max()).astype(np.uint8)
            n, _, stats, _ = cv2.connectedComponentsWithStats(binary)
            counts.append(n - 1)
            sizes.append(np.median(stats[1:, cv2.CC_STAT_AREA]))
        return float(np.mean(counts)), float(np.mean(sizes))

    malignant_count, malignant_size = particles(True)
    benign_count, benign_size = particles(False)
    assert malignant_count > benign_count
    assert malignant_size < benign_size


def test_some_patients_are_in_a_train_file_and_a_test_file():
    from tuner.data import _synth_cbis

    splits: dict[str, set[str]] = {}
    for case in _synth_cbis.plan(SynthParams(patients=200)):
        splits.setdefault(case.patient_id, set()).add(case.split)
    assert sum(len(s) > 1 for s in splits.values()) >= 2

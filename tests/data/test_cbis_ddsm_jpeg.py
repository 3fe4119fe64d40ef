"""The community JPEG edition of CBIS-DDSM: joined through series UIDs, prepared like the
DICOM edition, its bad inputs skipped with reasons; whole images need no ROI files in
either edition; a folder with both editions must say which to read."""

import json
import shutil
import uuid
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from tests.conftest import prepare_params
from tuner.data.cbis_ddsm import CSV_FILES
from tuner.data.cbis_ddsm_jpeg import CbisDdsmJpegSource
from tuner.data.prepare import plan_prepare, prepare
from tuner.data.sources import open_source
from tuner.data.synthetic import SynthParams, synthesize
from tuner.errors import UserError

SYNTH = dict(patients=16, seed=5, scale=0.1)
PARAMS = dict(views=("roi", "whole"), sizes=(32,), whole_sizes=(64,), context_px=60)


@pytest.fixture(scope="module")
def editions(tmp_path_factory) -> dict[str, Path]:
    """The same synthetic patients as the DICOM edition (csv layout) and the JPEG edition."""
    root = tmp_path_factory.mktemp("editions")
    out = {}
    for layout in ("csv", "jpeg-edition"):
        out[layout] = root / layout
        synthesize(str(out[layout]), SynthParams(**SYNTH, layout=layout), workers=1)
    return out


@pytest.fixture
def jpeg(editions, tmp_path) -> Path:
    copy = tmp_path / "jpeg"
    shutil.copytree(editions["jpeg-edition"], copy)
    return copy


def _prepare(source: Path, **overrides) -> dict:
    # memory:// runs the chunks in this process: no Ray needed.
    out = f"memory://editions-{uuid.uuid4().hex[:8]}"
    return prepare(str(source), out, prepare_params(**{**PARAMS, **overrides}))


def _rows(manifest: dict, key: str, lesion: str | None = None) -> Counter:
    counts = Counter()
    for split, entry in manifest["tiles"].get(key, {"splits": {}})["splits"].items():
        for c in entry["counts"]:
            if lesion is None or c["lesion"] == lesion:
                counts[(split, c["pathology"], c["abnormality_type"])] += c["rows"]
    return counts


def _synth(folder: Path) -> dict:
    return json.loads((folder / "synth.json").read_text())


def _info(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "csv" / "dicom_info.csv", dtype=str, keep_default_na=False)


def _jpeg_of(folder: Path, row) -> Path:
    return folder / row["image_path"].removeprefix("CBIS-DDSM/")


def test_the_jpeg_edition_is_recognised_and_prepared_like_the_dicom_one(editions):
    assert open_source(str(editions["jpeg-edition"])).kind == "cbis-ddsm-jpeg"
    dicom, jpeg = (_prepare(editions[layout]) for layout in ("csv", "jpeg-edition"))
    assert jpeg["skipped"] == [] and dicom["skipped"] == []
    # Same images, same findings, same labels and splits, found through the series UIDs.
    assert _rows(jpeg, "whole-64") == _rows(dicom, "whole-64")
    assert _rows(jpeg, "roi-32", "lesion") == _rows(dicom, "roi-32", "lesion")
    assert jpeg["splits"] == dicom["splits"]
    assert jpeg["leakage"]["patients_in_two_splits"] == 0
    # What the pixels were is on record: a search or evaluation can tell them apart.
    assert {k: jpeg["source"][k] for k in ("kind", "edition", "bit_depth")} == {
        "kind": "cbis-ddsm-jpeg",
        "edition": "jpeg",
        "bit_depth": 8,
    }
    assert (dicom["source"]["edition"], dicom["source"]["bit_depth"]) == ("dicom", 16)


def test_real_csvs_join_through_series_uids_on_a_tiny_jpeg_tree(shared_data, tmp_path):
    """The real CSVs against a tree in the edition's layout: a dicom_info.csv row and a
    tiny JPEG for every full mammogram, roots that differ from where it was unpacked, and
    the blank series descriptions of the real file."""
    (tmp_path / "csv").mkdir()
    frames = []
    for name in CSV_FILES.values():
        shutil.copy(shared_data / "cbis-ddsm" / name, tmp_path / "csv" / name)
        frames.append(pd.read_csv(tmp_path / "csv" / name, dtype=str))
    paths = pd.concat(frames)["image file path"].str.strip().unique()
    ok, tiny = cv2.imencode(".jpg", np.full((8, 6), 128, np.uint8))
    rows = []
    for i, path in enumerate(paths):
        series, study, uid, _ = path.split("/")
        folder = tmp_path / "jpeg" / uid
        folder.mkdir(parents=True)
        (folder / "1-1.jpg").write_bytes(tiny.tobytes())
        rows.append(
            {
                "file_path": f"CBIS-DDSM/dicom/{i}.dcm",
                "image_path": f"CBIS-DDSM/jpeg/{uid}/1-1.jpg",
                "PatientID": series,
                "SeriesDescription": "" if i % 10 == 0 else "full mammogram images",
                "SeriesInstanceUID": uid,
                "StudyInstanceUID": study,
                "Rows": 8,
                "Columns": 6,
                "Laterality": series.split("_")[3][0],
                "an extra column": "passes",
            }
        )
    pd.DataFrame(rows).to_csv(tmp_path / "csv" / "dicom_info.csv", index=False)

    source = open_source(str(tmp_path))
    assert isinstance(source, CbisDdsmJpegSource)
    images, skipped, _ = source.images(val_fraction=0.2, test_fraction=0.0, seed=0)
    assert skipped == []
    assert len(images) == 3103
    assert sum(len(i.findings) for i in images) == 3568
    assert len({i.patient_id for i in images}) == 1566
    splits: dict[str, set[str]] = {}
    for image in images:
        splits.setdefault(image.patient_id, set()).add(image.split)
    assert all(len(s) == 1 for s in splits.values())  # 0 patients in two splits
    # Each image is its own series' JPEG, never another series of the same patient.
    by_series = {r["PatientID"]: r["SeriesInstanceUID"] for r in rows}
    assert all(Path(i.url).parent.name == by_series[i.image_id] for i in images)


@pytest.mark.parametrize("layout", ["csv", "jpeg-edition"])
def test_whole_images_need_no_roi_files(editions, tmp_path, layout):
    source = tmp_path / layout
    shutil.copytree(editions[layout], source)
    if layout == "csv":  # the ROI series folders end in _<abnormality id>
        for folder in [p for p in source.iterdir() if p.is_dir() and p.name[-2] == "_"]:
            shutil.rmtree(folder)
    else:
        for _, row in _info(source).iterrows():
            if row["SeriesDescription"] in ("cropped images", "ROI mask images"):
                _jpeg_of(source, row).unlink(missing_ok=True)
    whole = _prepare(source, views=("whole",))
    assert whole["skipped"] == []
    images = sum(e["rows"] for e in whole["tiles"]["whole-64"]["splits"].values())
    assert images == _synth(source)["images"]  # every full mammogram

    both = _prepare(source)
    assert _rows(both, "whole-64") == _rows(whole, "whole-64")
    assert _rows(both, "roi-32", "lesion") == Counter()
    reasons = Counter(item["reason"] for item in both["skipped"])
    # One per finding, nothing else.
    assert reasons == Counter({"ROI mask/crop files not found": _synth(source)["abnormalities"]})
    assert all("/" in item["item"] for item in both["skipped"])  # <image>/<abnormality id>


def test_bad_jpegs_are_skipped_with_reasons_and_the_rest_prepared(jpeg):
    info = _info(jpeg)
    full = info[info["SeriesDescription"] == "full mammogram images"].reset_index(drop=True)
    truncated, garbage, missing, unlisted, inverted = (full.iloc[i] for i in range(5))

    data = _jpeg_of(jpeg, truncated).read_bytes()
    _jpeg_of(jpeg, truncated).write_bytes(data[: len(data) // 2])
    _jpeg_of(jpeg, garbage).write_bytes(b"this is not a JPEG" * 50)
    _jpeg_of(jpeg, missing).unlink()
    _jpeg_of(jpeg, unlisted).unlink()
    info = info[info["image_path"] != unlisted["image_path"]].copy()
    info.loc[info["image_path"] == inverted["image_path"], "PhotometricInterpretation"] = (
        "MONOCHROMEX"
    )
    # A mask that does not decode: only that finding's ROI tiles are skipped.
    mask = info[info["SeriesDescription"] == "ROI mask images"].iloc[0]
    _jpeg_of(jpeg, mask).write_bytes(b"\xff\xd8 broken \xff\xd9")
    info.to_csv(jpeg / "csv" / "dicom_info.csv", index=False)

    manifest = _prepare(jpeg)
    reasons = by_uid = {item["item"]: item["reason"] for item in manifest["skipped"]}
    assert "truncated JPEG" in by_uid[truncated["PatientID"]]
    assert "not a JPEG file" in by_uid[garbage["PatientID"]]
    assert "not found under" in by_uid[missing["PatientID"]]
    assert "has no JPEG" in by_uid[unlisted["PatientID"]]
    assert "PhotometricInterpretation 'MONOCHROMEX'" in by_uid[inverted["PatientID"]]
    roi = [item for item in reasons if item.startswith(mask["PatientID"].rsplit("_", 1)[0] + "/")]
    assert roi and "JPEG data that does not decode" in reasons[roi[0]]
    assert all("\n" not in reason for reason in reasons.values())
    # Everything else was prepared: five whole images fewer than all.
    whole = sum(e["rows"] for e in manifest["tiles"]["whole-64"]["splits"].values())
    assert whole == _synth(jpeg)["images"] - 5


def test_a_dicom_info_without_a_needed_column_is_one_clear_error(jpeg):
    info = _info(jpeg).drop(columns=["SeriesInstanceUID"])
    info.to_csv(jpeg / "csv" / "dicom_info.csv", index=False)
    with pytest.raises(UserError, match="dicom_info.csv: missing column SeriesInstanceUID") as e:
        plan_prepare(str(jpeg), "memory://never-written", prepare_params(**PARAMS))
    assert "\n" not in str(e.value)


def test_a_folder_with_both_editions_must_say_which(editions, tmp_path):
    both = tmp_path / "both"
    shutil.copytree(editions["csv"], both)
    shutil.copytree(editions["jpeg-edition"] / "csv", both / "csv")
    shutil.copytree(editions["jpeg-edition"] / "jpeg", both / "jpeg")
    with pytest.raises(UserError, match="holds both CBIS-DDSM editions.*--source-kind") as e:
        plan_prepare(str(both), "memory://never", prepare_params(**PARAMS))
    assert "\n" not in str(e.value)
    plans = {
        kind: plan_prepare(str(both), f"memory://{kind}", prepare_params(**PARAMS), kind=kind)
        for kind in ("cbis-ddsm", "cbis-ddsm-jpeg")
    }
    images = {
        k: sorted(i["image_id"] for c in p.chunks for i in c["images"]) for k, p in plans.items()
    }
    assert images["cbis-ddsm"] == images["cbis-ddsm-jpeg"]
    assert len(images["cbis-ddsm"]) == _synth(editions["csv"])["images"]
    urls = {k: {i["url"][-4:] for c in p.chunks for i in c["images"]} for k, p in plans.items()}
    assert urls == {"cbis-ddsm": {".dcm"}, "cbis-ddsm-jpeg": {".jpg"}}


def test_lossy_masks_are_told_from_crops_and_thresholded(jpeg, tmp_path):
    """Where dicom_info.csv leaves the description blank, content tells a lossy mask from a
    crop; predict reads such a mask file the way prepare does."""
    from tuner.data.cbis_ddsm_jpeg import decode_jpeg
    from tuner.data.preprocess import is_lossy_mask
    from tuner.data.single import _mask_from_file

    info = _info(jpeg)
    mask_row = info[info["SeriesDescription"] == "ROI mask images"].iloc[0]
    crop_row = info[info["SeriesDescription"] == "cropped images"].iloc[0]
    mask = decode_jpeg(_jpeg_of(jpeg, mask_row).read_bytes(), name="mask")
    crop = decode_jpeg(_jpeg_of(jpeg, crop_row).read_bytes(), name="crop")
    assert len(np.unique(mask)) > 2  # lossy: not exactly two values
    assert is_lossy_mask(mask) and not is_lossy_mask(crop)
    # A calcification's mask may be a few pixels of a full mammogram: still a mask.
    speck = np.zeros((3000, 2000), np.uint8)
    speck[1501:1511, 999:1009] = 255
    ok, data = cv2.imencode(".jpg", speck, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert is_lossy_mask(decode_jpeg(data.tobytes(), name="speck"))
    fitted = _mask_from_file(_jpeg_of(jpeg, mask_row), mask.shape)
    assert np.array_equal(fitted, mask > 127)

    # Blank descriptions: prepare finds the same masks by content.
    described = _prepare(jpeg, views=("roi",))
    info["SeriesDescription"] = ""
    info.to_csv(jpeg / "csv" / "dicom_info.csv", index=False)
    blank = _prepare(jpeg, views=("roi",))
    assert blank["skipped"] == [] and blank["tiles"] == described["tiles"]

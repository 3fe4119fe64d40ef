import shutil

import pytest

from tuner.data.cbis_ddsm import CSV_FILES, CbisDdsmSource, series_folder
from tuner.data.splits import assign_splits
from tuner.errors import UserError


@pytest.fixture(scope="module")
def real_rows(shared_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("real-csv")
    for name in CSV_FILES.values():
        shutil.copy(shared_data / "cbis-ddsm" / name, folder / name)
    return CbisDdsmSource(str(folder)).abnormalities()


def test_real_csvs_parse_completely(real_rows):
    assert len(real_rows) == 3568
    assert len({r.image_series for r in real_rows}) == 3103
    assert len({r.patient_id for r in real_rows}) == 1566
    # Both header spellings end up in one field (two real calc-test rows say density 0).
    assert {r.breast_density for r in real_rows} == {0, 1, 2, 3, 4}
    assert all(r.roi_series and r.image_series for r in real_rows)
    assert {r.pathology for r in real_rows} == {"BENIGN", "BENIGN_WITHOUT_CALLBACK", "MALIGNANT"}


def test_real_split_has_no_shared_patient(real_rows):
    rows = [(r.patient_id, r.official_split, r.pathology == "MALIGNANT") for r in real_rows]
    split, report = assign_splits(rows, val_fraction=0.2, test_fraction=0.0, seed=0)
    assert report["patients_in_official_train_and_test"] > 0  # the collection's own quirk
    by_patient: dict[str, set[str]] = {}
    for row in real_rows:
        by_patient.setdefault(row.patient_id, set()).add(split[row.patient_id])
    assert all(len(sides) == 1 for sides in by_patient.values())
    assert set(split.values()) == {"train", "val", "test"}
    # Every patient of an official test file stays in test.
    assert all(split[r.patient_id] == "test" for r in real_rows if r.official_split == "test")


def test_series_folder_in_both_layouts():
    csv_layout = "Mass-Training_P_00001_LEFT_CC/1.3.6.1/1.3.6.2/000000.dcm"
    download = (
        "CBIS-DDSM/Mass-Training_P_00001_LEFT_CC_1/07-21-2016-DDSM-NA-74994/"
        "1.000000-ROI mask images-24407/1-1.dcm"
    )
    assert series_folder(csv_layout) == "Mass-Training_P_00001_LEFT_CC"
    assert series_folder(download) == "Mass-Training_P_00001_LEFT_CC_1"
    assert series_folder("notes/readme.dcm") is None


def test_missing_csv_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="missing mass_case_description_train_set.csv"):
        CbisDdsmSource(str(tmp_path))
    with pytest.raises(UserError, match="does not exist"):
        CbisDdsmSource(str(tmp_path / "nowhere"))

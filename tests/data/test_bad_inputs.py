"""Bad inputs: the bad item is skipped and listed with its reason, everything good is still
prepared; whole-run problems are one clear error. And no patient data leaves the source."""

import io
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pydicom
import pytest
from pydicom.data import get_testdata_file

from tests.conftest import prepare_params
from tuner.data.cbis_ddsm import CbisDdsmSource, is_mask
from tuner.data.dicom import write_image
from tuner.data.prepare import prepare
from tuner.data.synthetic import SynthParams, synthesize
from tuner.errors import UserError

PARAMS = dict(views=("roi", "whole"), sizes=(32,))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    out = tmp_path_factory.mktemp("pristine") / "cbis"
    synthesize(str(out), SynthParams(patients=24, seed=5, scale=0.25), workers=1)
    return out


@pytest.fixture
def source(pristine, tmp_path):
    copy = tmp_path / "cbis"
    shutil.copytree(pristine, copy)
    return copy


def _files(source: Path):
    cbis = CbisDdsmSource(str(source))
    return cbis.abnormalities(), cbis.dicom_index()


def test_bad_items_are_skipped_with_reasons_and_the_rest_prepared(source, tmp_path, ray_local):
    clean = prepare(str(source), str(tmp_path / "clean"), prepare_params(**PARAMS))
    abnormalities, index = _files(source)
    images = sorted({a.image_series for a in abnormalities})
    truncated, missing, unsupported, blank, garbage = images[:5]

    data = Path(index[truncated][0]).read_bytes()
    Path(index[truncated][0]).write_bytes(data[: len(data) // 2])
    Path(index[missing][0]).unlink()
    shutil.copy(get_testdata_file("JPGExtended.dcm", download=False), index[unsupported][0])
    ds = pydicom.dcmread(index[blank][0])
    ds.PixelData = np.zeros((ds.Rows, ds.Columns), np.uint16).tobytes()
    ds.save_as(index[blank][0])
    Path(index[garbage][0]).write_bytes(b"this is not a DICOM file" * 100)
    # A damaged PhotometricInterpretation: refused, never read as MONOCHROME2.
    damaged = images[6]
    ds = pydicom.dcmread(index[damaged][0])
    ds.PhotometricInterpretation = "MONOCHROMEX"
    ds.save_as(index[damaged][0])

    # A mask whose aspect ratio does not match its image (rescaling would misplace the ROI).
    finding = next(a for a in abnormalities if a.image_series == images[5])
    mask_file = next(
        f for f in index[finding.roi_series] if is_mask(pydicom.dcmread(f).pixel_array)
    )
    wide = np.zeros((100, 400), np.uint8)
    wide[40:60, 100:150] = 255
    buffer = io.BytesIO()
    write_image(buffer, wide, study_uid="1.2", series_uid="1.3", instance_uid="1.4", attributes={})
    Path(mask_file).write_bytes(buffer.getvalue())

    manifest = prepare(str(source), str(tmp_path / "ds"), prepare_params(**PARAMS))
    reasons = {item["item"].split("/")[0]: item["reason"] for item in manifest["skipped"]}
    assert "broken pixel data" in reasons[truncated]
    assert reasons[missing] == "full mammogram not found"
    assert "unsupported pixel encoding" in reasons[unsupported]
    assert "no breast region found" in reasons[blank]
    assert "not a readable DICOM file" in reasons[garbage]
    assert "unsupported PhotometricInterpretation 'MONOCHROMEX'" in reasons[damaged]
    assert (
        "does not match image"
        in reasons[finding.roi_series if finding.roi_series in reasons else images[5]]
    )

    # Everything else was prepared: six whole images fewer than the clean run.
    rows = lambda m: sum(e["rows"] for e in m["tiles"]["whole-64"]["splits"].values())  # noqa: E731
    assert rows(manifest) == rows(clean) - 6


def test_a_csv_with_a_missing_column_is_one_clear_error(source, tmp_path):
    csv = source / "mass_case_description_train_set.csv"
    lines = csv.read_bytes().split(b"\r\n")
    lines[0] = lines[0].replace(b",pathology,", b",diagnosis,")
    csv.write_bytes(b"\r\n".join(lines))
    with pytest.raises(
        UserError, match="mass_case_description_train_set.csv: missing columns pathology"
    ):
        prepare(str(source), str(tmp_path / "ds"), prepare_params(**PARAMS))
    assert not (tmp_path / "ds").exists()


IDENTIFYING = {
    "PatientName": "Doe^Jane",
    "PatientBirthDate": "19610203",
    "InstitutionName": "Saint Example General Hospital",
    "StudyDate": "20190405",
    "AccessionNumber": "ACC7355608",
    "OtherPatientIDs": "MRN90210777",
    "ReferringPhysicianName": "Smith^Jonathan",
}


def _every_text(folder: Path) -> str:
    """Everything a reader of ``folder`` could see: file names and bytes, and the decoded
    cells and metadata of Parquet files (their compressed bytes would hide strings)."""
    parts = []
    for path in folder.rglob("*"):
        parts.append(str(path))
        if not path.is_file():
            continue
        data = path.read_bytes()
        parts.append(data.decode("latin-1"))
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            parts.append(str(pq.read_metadata(path).metadata))
            for name in table.column_names:
                if name != "image":
                    parts.append(" ".join(map(str, table.column(name).to_pylist())))
    return "\n".join(parts)


def test_no_patient_data_leaves_the_source(source, tmp_path, ray_local, capfd):
    from tuner.cli import main

    _, index = _files(source)
    for files in index.values():
        for file in files:
            ds = pydicom.dcmread(file)
            for keyword, value in IDENTIFYING.items():
                setattr(ds, keyword, value)
            ds.save_as(file)

    dataset, experiment = tmp_path / "ds", tmp_path / "exp"
    space = tmp_path / "space.yaml"
    space.write_text(
        "name: phi\ntrials: 1\nmax_concurrent: 1\n"
        "fixed: {epochs: 1, batch_size: 16, input_size: 32}\n"
        "space:\n  backbone: {type: categorical, choices: [small_vgg_bn]}\n"
    )
    assert (
        main(
            [
                "prepare",
                str(source),
                str(dataset),
                "--views",
                "roi,whole",
                "--sizes",
                "32",
                "--context-px",
                "150",
            ]
        )
        == 0
    )
    assert (
        main(
            ["search", "--space", str(space), "--data", str(dataset), "--storage", str(experiment)]
        )
        == 0
    )
    assert main(["best", str(experiment)]) == 0
    # Everything a model's results pass through: report, export, evaluate, predict.
    results = tmp_path / "results"
    assert main(["report", str(experiment), "--out", str(results / "report.html")]) == 0
    assert main(["export", str(experiment), str(results / "bundle")]) == 0
    evaluated = ["evaluate", str(experiment), "--data", str(dataset), "--split", "val"]
    assert main([*evaluated, "--report", str(results / "evaluation")]) == 0
    film = next(iter(index.values()))[0]  # a full mammogram with every identifying field
    from tuner.results.leaderboard import leaderboard

    for model in (leaderboard(str(experiment)).best.checkpoint, results / "bundle"):
        assert main(["predict", str(model), film, "--json"]) == 0
    logs = capfd.readouterr()
    seen = _every_text(dataset) + _every_text(experiment) + _every_text(results)
    seen += logs.out + logs.err
    assert (dataset / "manifest.json").exists() and list(experiment.rglob("state.pt"))
    assert (results / "report.html").exists() and (results / "evaluation").is_dir()
    for value in IDENTIFYING.values():
        for form in {value, value.replace("^", " "), value.split("^")[0]}:
            assert form not in seen, form

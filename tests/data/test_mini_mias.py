import cv2
import numpy as np
import pytest

from tests.conftest import prepare_params
from tuner.data.mini_mias import INFO, MiniMiasSource, parse_info
from tuner.data.prepare import prepare
from tuner.data.synthetic import SynthParams, synthesize
from tuner.errors import UserError


def test_the_real_info_txt_parses_completely(shared_data):
    rows = parse_info((shared_data / "mini-mias" / INFO).read_text())
    assert len(rows) == 330
    assert len({r.ref for r in rows}) == 322
    assert sum(r.abnormality == "NORM" for r in rows) == 207
    abnormal = [r for r in rows if r.abnormality != "NORM"]
    assert all(r.severity in ("B", "M") for r in abnormal)
    without = sorted(r.ref for r in abnormal if r.x is None)
    assert without == ["mdb059", "mdb216", "mdb233", "mdb245"]
    first = rows[0]
    assert (first.ref, first.x, first.y, first.radius) == ("mdb001", 535, 425, 197)


def test_bad_rows_name_the_line():
    with pytest.raises(UserError, match="line 2: not a mini-MIAS row"):
        parse_info("mdb001 G NORM\nhello world\n")
    with pytest.raises(UserError, match="line 1: unknown tissue 'X' or class 'CIRC'"):
        parse_info("mdb001 X CIRC B 1 2 3\n")


@pytest.fixture(scope="module")
def mias(tmp_path_factory):
    out = tmp_path_factory.mktemp("mias") / "mini-mias"
    synthesize(str(out), SynthParams(format="mini-mias", patients=40, seed=2), workers=1)
    return out


def test_synthetic_mini_mias_has_the_real_layout_and_quirks(mias):
    rows = parse_info((mias / INFO).read_text())
    refs = sorted({r.ref for r in rows})
    assert refs[0] == "mdb001" and len(refs) == 80
    image = cv2.imread(str(mias / "mdb001.pgm"), cv2.IMREAD_UNCHANGED)
    assert image.shape == (1024, 1024) and image.dtype == np.uint8
    assert (mias / "mdb001.pgm").read_bytes().startswith(b"P5")
    assert any(r.abnormality == "NORM" for r in rows)
    located = [r for r in rows if r.x is not None and r.abnormality != "CALC"]
    # Origin at the bottom-left: the mass at (x, 1024 - y) is brighter than its ring.
    for row in located[:5]:
        picture = cv2.imread(str(mias / f"{row.ref}.pgm"), cv2.IMREAD_UNCHANGED).astype(float)
        yy, xx = np.mgrid[0:1024, 0:1024]
        distance = np.hypot(xx - row.x, yy - (1024 - row.y))
        inside = picture[distance < row.radius * 0.5].mean()
        ring = picture[(distance > row.radius * 1.5) & (distance < row.radius * 2.5)].mean()
        assert inside > ring, row


def test_prepare_mini_mias(mias, tmp_path, ray_local):
    manifest = prepare(
        str(mias), str(tmp_path / "ds"), prepare_params(context_px=None, sizes=(32,))
    )
    assert manifest["source"]["kind"] == "mini-mias"
    assert manifest["params"]["context_px"] == 150  # the source's own default
    rows = parse_info((mias / INFO).read_text())
    unlocated = {r.ref for r in rows if r.abnormality != "NORM" and r.x is None}
    skipped = {s["item"].split("/")[0] for s in manifest["skipped"]}
    assert unlocated <= skipped
    whole = manifest["tiles"]["whole-64"]["splits"]
    assert sum(e["rows"] for e in whole.values()) == len({r.ref for r in rows})
    lesion_images = {r.ref for r in rows if r.abnormality != "NORM"}
    assert sum(e["lesion"].get("lesion", 0) for e in whole.values()) == len(lesion_images)
    assert manifest["leakage"]["patients_in_two_splits"] == 0
    assert all(whole[s]["rows"] for s in ("train", "val", "test"))


def test_pairs_of_images_are_one_patient(mias):
    images, _, _ = MiniMiasSource(str(mias)).images(val_fraction=0.2, test_fraction=0.2, seed=0)
    by_id = {i.image_id: i for i in images}
    assert by_id["mdb001"].patient_id == by_id["mdb002"].patient_id != by_id["mdb003"].patient_id
    assert by_id["mdb001"].split == by_id["mdb002"].split


def test_a_folder_without_info_txt(tmp_path):
    (tmp_path / "mdb001.pgm").write_bytes(b"P5\n1 1\n255\n\0")
    with pytest.raises(UserError, match="Info.txt not found"):
        MiniMiasSource(str(tmp_path))

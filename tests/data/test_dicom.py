"""DICOM decoding on the real files that ship with pydicom and pydicom-data (read offline)."""

import io
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest

from tuner.data.dicom import decode, read_dataset, read_image, write_image
from tuner.errors import UserError

BUNDLED = Path(pydicom.data.__file__).parent / "test_files"
try:
    import data_store  # the pydicom-data package

    EXTRA = Path(data_store.__file__).parent / "data"
except ImportError:  # pragma: no cover - a test extra
    EXTRA = None

ALL_FILES = sorted(BUNDLED.rglob("*.dcm")) + (sorted(EXTRA.glob("*.dcm")) if EXTRA else [])

# Files pydicom's own test suite calls broken or that need a decoder we do not ship
# (12-bit JPEG Extended needs the GPL libjpeg plugin): each must give a clear UserError.
EXPECTED_FAILURES = {
    "JPEG-lossy.dcm": "unsupported pixel encoding",
    "JPGExtended.dcm": "unsupported pixel encoding",
    "JPEG2000-embedded-sequence-delimiter.dcm": "broken pixel data",
    "MR_truncated.dcm": "broken pixel data",
    "badVR.dcm": "broken pixel data",
    "meta_missing_tsyntax.dcm": "broken pixel data",
    "nested_priv_SQ.dcm": "broken pixel data",
}


def find(name: str) -> Path:
    for path in ALL_FILES:
        if path.name == name:
            return path
    pytest.skip(f"{name} is not installed (pydicom-data missing?)")


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the odd VR in its test files
        yield


def test_there_are_real_files_to_test():
    assert len(ALL_FILES) > 100


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: p.name)
def test_every_file_decodes_or_gives_a_clear_error(path):
    try:
        pixels = read_image(str(path))
    except UserError as exc:
        message = str(exc)
        assert str(path) in message
        if path.name in EXPECTED_FAILURES:
            assert EXPECTED_FAILURES[path.name] in message
        else:
            assert "no pixel data" in message
        return
    assert path.name not in EXPECTED_FAILURES
    assert pixels.ndim == 2 and pixels.size > 0
    assert pixels.dtype == np.float32 or pixels.dtype.kind in "ui"
    assert np.isfinite(pixels).all()


@pytest.mark.parametrize(
    "compressed, reference",
    [
        ("MR_small_RLE.dcm", "MR_small.dcm"),
        ("MR_small_jp2klossless.dcm", "MR_small.dcm"),
        ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"),
        ("MR2_J2KR.dcm", "MR2_UNCR.dcm"),
        ("RG1_J2KR.dcm", "RG1_UNCR.dcm"),
        ("SC_rgb_jpeg_gdcm.dcm", "SC_rgb.dcm"),  # JPEG lossless, process 14
        ("emri_small_jpeg_2k_lossless.dcm", "emri_small.dcm"),
    ],
)
def test_lossless_syntaxes_decode_to_the_uncompressed_pixels(compressed, reference):
    # (693_J2KR/693_UNCR are left out: their headers disagree on Bits Stored, 16 vs 14, which
    # changes the VOI window's output range although the stored pixels agree.)
    assert np.array_equal(read_image(str(find(compressed))), read_image(str(find(reference))))


def test_jpeg_lossless_decodes():
    for name, bits in (("JPEG-LL.dcm", 16), ("JPGLosslessP14SV1_1s_1f_8b.dcm", 8)):
        ds = read_dataset(str(find(name)))
        assert ds.BitsStored == bits
        pixels = decode(ds)
        assert pixels.shape == (ds.Rows, ds.Columns) and pixels.std() > 0


def test_rescale_slope_and_intercept():
    ds = pydicom.dcmread(find("CT_small.dcm"))
    assert float(ds.RescaleIntercept) == -1024
    expected = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) - 1024
    assert np.array_equal(decode(ds), expected)


def test_monochrome1_is_inverted_to_bright_is_dense():
    ds = pydicom.dcmread(find("RG1_UNCR.dcm"))
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    stored = ds.pixel_array.astype(np.float64).ravel()
    decoded = decode(ds).astype(np.float64).ravel()
    assert np.corrcoef(stored, decoded)[0, 1] < -0.9


def test_voi_and_modality_lut_sequences():
    voi = pydicom.dcmread(find("vlut_04.dcm"))
    assert "VOILUTSequence" in voi
    assert not np.array_equal(decode(voi), voi.pixel_array.astype(np.float32))
    modality = pydicom.dcmread(find("mlut_18.dcm"))
    assert "ModalityLUTSequence" in modality
    assert not np.array_equal(decode(modality), modality.pixel_array.astype(np.float32))


@pytest.mark.parametrize("name, bits", [("MR_small.dcm", 16), ("MR2_UNCR.dcm", 12)])
def test_bit_depths(name, bits):
    ds = pydicom.dcmread(find(name))
    assert ds.BitsStored == bits
    assert decode(ds).max() > 255


def test_file_without_preamble_is_read():
    pixels = read_image(str(find("OT-PAL-8-face.dcm")))
    assert pixels.ndim == 2 and pixels.std() > 0


def test_truncated_and_foreign_files(tmp_path):
    buffer = io.BytesIO()
    pixels = (np.arange(64 * 48, dtype=np.uint16) * 7).reshape(64, 48)
    write_image(
        buffer, pixels, study_uid="1.2.3", series_uid="1.2.4", instance_uid="1.2.5", attributes={}
    )
    data = buffer.getvalue()
    assert np.array_equal(read_image(io.BytesIO(data)), pixels.astype(np.float32))

    (tmp_path / "cut.dcm").write_bytes(data[: len(data) - 1000])
    with pytest.raises(UserError, match="cut.dcm: broken pixel data"):
        read_image(str(tmp_path / "cut.dcm"))
    (tmp_path / "header-only.dcm").write_bytes(data[:200])
    with pytest.raises(UserError, match="header-only.dcm: no pixel data"):
        read_image(str(tmp_path / "header-only.dcm"))
    (tmp_path / "photo.dcm").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 300)
    with pytest.raises(UserError, match="photo.dcm"):
        read_image(str(tmp_path / "photo.dcm"))


def test_rle_written_masks_round_trip():
    buffer = io.BytesIO()
    mask = np.zeros((40, 30), np.uint8)
    mask[5:20, 3:9] = 255
    write_image(
        buffer, mask, study_uid="1.2", series_uid="1.3", instance_uid="1.4", attributes={}, rle=True
    )
    ds = pydicom.dcmread(io.BytesIO(buffer.getvalue()))
    assert ds.file_meta.TransferSyntaxUID.name == "RLE Lossless"
    assert np.array_equal(decode(ds), mask.astype(np.float32))

"""Decompression bombs: every reader checks the size a file declares against the pixel cap
(tuner.data.limits) before decoding, refuses beyond it quickly and in little memory, decodes
only the one DICOM frame it uses, and decodes normal files exactly as before. A bomb in
prepare is a skipped input with its reason; in predict, one line. And two-view refusals name
files, never patients."""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import DeflatedExplicitVRLittleEndian

from tests.conftest import prepare_params
from tuner.data import dicom, limits
from tuner.data.cbis_ddsm import CbisDdsmSource
from tuner.data.cbis_ddsm_jpeg import decode_jpeg
from tuner.data.mini_mias import MiniMiasSource
from tuner.data.single import breast_views, read_pixels
from tuner.errors import UserError

REPO = Path(__file__).resolve().parents[2]
CAP = "more than the 100 MP cap (--max-pixels or MAMMOTUNE_MAX_PIXELS)"


@pytest.fixture(autouse=True)
def _default_cap(monkeypatch):
    monkeypatch.delenv(limits.ENV, raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about odd VRs in its test files
        yield


def _testdata(name: str) -> str:
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not installed")
    return path


# ---- small files that declare huge sizes ------------------------------------------------


def _dicom_bytes(pixels: np.ndarray, *, rle: bool = False, **attributes) -> bytes:
    buffer = io.BytesIO()
    dicom.write_image(
        buffer,
        pixels,
        study_uid="1.2.3",
        series_uid="1.2.4",
        instance_uid="1.2.5",
        attributes=attributes,
        rle=rle,
    )
    return buffer.getvalue()


def _save(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def rle_bomb(rows: int = 40000, cols: int = 40000) -> bytes:
    """An RLE DICOM of a few hundred bytes whose header declares rows x cols at 16 bits."""
    ds = pydicom.dcmread(io.BytesIO(_dicom_bytes(np.zeros((8, 8), np.uint16), rle=True)))
    ds.Rows, ds.Columns = rows, cols
    return _save(ds)


def _patched_codestream(name: str, marker: bytes, at: int, fmt: str, size) -> pydicom.Dataset:
    """A bundled compressed DICOM whose frame header (found after ``marker``) declares
    ``size`` (width, height) from offset ``at`` on."""
    ds = pydicom.dcmread(_testdata(name))
    data = bytearray(ds.PixelData)
    start = data.index(marker)
    values = size if fmt.endswith("II") else size[::-1]  # J2K: x, y; JPEG SOF: y, x
    data[start + at : start + at + struct.calcsize(fmt)] = struct.pack(fmt, *values)
    ds.PixelData = bytes(data)
    return ds


def j2k_bomb(header_size=None, codestream_size=(40000, 40000)) -> bytes:
    """A JPEG 2000 DICOM (pydicom's 64 x 64 MR) whose codestream's SIZ declares
    ``codestream_size``, and whose header Rows x Columns ``header_size`` (as it was: 64 x 64)."""
    ds = _patched_codestream(
        "MR_small_jp2klossless.dcm", b"\xff\x4f\xff\x51", 8, ">II", codestream_size
    )
    if header_size is not None:
        ds.Columns, ds.Rows = header_size
    return _save(ds)


def jpeg_dicom_bomb(size=(65000, 65000)) -> bytes:
    """A JPEG lossless DICOM (pydicom's 100 x 100 RGB) whose SOF3 declares ``size``, its
    header still 100 x 100."""
    ds = _patched_codestream("SC_rgb_jpeg_gdcm.dcm", b"\xff\xc3", 5, ">HH", size)
    return _save(ds)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = struct.pack(">I", zlib.crc32(kind + data))
    return struct.pack(">I", len(data)) + kind + data + crc


def png_bomb(width=60000, height=60000, depth=16, colour=6) -> bytes:
    """A PNG whose IHDR declares width x height (16-bit RGBA: 8 bytes a pixel) and whose
    IDAT is a few bytes."""
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + _png_chunk(b"IEND", b"")
    )


def jpeg_bomb(width=65000, height=65000) -> bytes:
    """A baseline JPEG whose SOF0 declares width x height, with tables and a scan of a few
    bytes and its end marker (libjpeg fills what is missing with grey, every row of it)."""
    dqt = b"\xff\xdb" + struct.pack(">H", 67) + b"\0" + bytes([1] * 64)
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    dht = b"".join(
        b"\xff\xc4" + struct.pack(">H", 20) + bytes([table]) + bytes([1] + [0] * 15) + b"\0"
        for table in (0x00, 0x10)
    )
    sos = b"\xff\xda" + struct.pack(">HB", 8, 1) + b"\x01\x00\x00\x3f\x00"
    return b"\xff\xd8" + dqt + sof + dht + sos + b"\0" * 32 + b"\xff\xd9"


def pgm_bomb(width=60000, height=60000) -> bytes:
    return f"P5\n# a comment\n{width} {height}\n255\n".encode() + b"\0" * 16


def tiff_bomb(width=60000, height=60000, big=False) -> bytes:
    """A little-endian TIFF (or BigTIFF) whose first IFD declares width x height."""
    entries = [(256, 4, width), (257, 4, height), (258, 3, 8), (277, 3, 1)]
    if not big:
        ifd = struct.pack("<H", len(entries))
        ifd += b"".join(struct.pack("<HHII", tag, kind, 1, value) for tag, kind, value in entries)
        return b"II*\0" + struct.pack("<I", 8) + ifd + b"\0" * 4
    ifd = struct.pack("<Q", len(entries))
    ifd += b"".join(struct.pack("<HHQQ", tag, kind, 1, value) for tag, kind, value in entries)
    return b"II+\0" + struct.pack("<HHQ", 8, 0, 16) + ifd + b"\0" * 8


def bmp_bomb(width=60000, height=60000) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, -height, 1, 8, 0, 0, 0, 0, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info) + 16, 0, 0, 14 + len(info)) + info


# (file name, bytes, reader, declared width x height): the readers prepare and predict use.
BOMBS = {
    "rle.dcm": (rle_bomb, "predict", "40000 x 40000"),
    "rle-source.dcm": (rle_bomb, "cbis-ddsm", "40000 x 40000"),
    "j2k.dcm": (lambda: j2k_bomb((40000, 40000)), "predict", "40000 x 40000"),
    "png.png": (png_bomb, "predict", "60000 x 60000"),
    "png-under-opencv-limit.png": (lambda: png_bomb(30000, 30000), "predict", "30000 x 30000"),
    "jpeg.jpg": (jpeg_bomb, "predict", "65000 x 65000"),
    "jpeg-under-opencv-limit.jpg": (lambda: jpeg_bomb(30000, 30000), "predict", "30000 x 30000"),
    "jpeg-source.jpg": (lambda: jpeg_bomb(30000, 30000), "cbis-ddsm-jpeg", "30000 x 30000"),
    "pgm.pgm": (lambda: pgm_bomb(30000, 30000), "predict", "30000 x 30000"),
    "pgm-source.pgm": (lambda: pgm_bomb(30000, 30000), "mini-mias", "30000 x 30000"),
    "tiff.tif": (tiff_bomb, "predict", "60000 x 60000"),
    "bigtiff.tif": (lambda: tiff_bomb(big=True), "predict", "60000 x 60000"),
    "bmp.bmp": (bmp_bomb, "predict", "60000 x 60000"),
}

_CHILD = """
import json, resource, sys, time
from tuner.data.cbis_ddsm import CbisDdsmSource
from tuner.data.cbis_ddsm_jpeg import CbisDdsmJpegSource
from tuner.data.mini_mias import MiniMiasSource
from tuner.data.single import read_pixels
from tuner.errors import UserError

readers = {"predict": read_pixels, "cbis-ddsm": CbisDdsmSource.load_image,
           "cbis-ddsm-jpeg": CbisDdsmJpegSource.load_image,
           "mini-mias": MiniMiasSource.load_image}
results = {}
for name, reader, path in json.loads(sys.argv[1]):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    try:
        readers[reader](path)
        error = None
    except UserError as exc:
        error = str(exc)
    seconds = time.perf_counter() - start
    grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024  # MB
    results[name] = {"error": error, "seconds": seconds, "grew_mb": grew}
print(json.dumps(results))
"""


def _in_a_child(jobs: list, env: dict | None = None, timeout: int = 120) -> dict:
    """Run readers on files in a fresh Python (its peak RSS is its own), return per file
    the error, seconds and peak-RSS growth in MB."""
    environment = {k: v for k, v in os.environ.items() if k != limits.ENV}
    environment.update(env or {})
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(jobs)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=environment,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def bombs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bombs")
    jobs = []
    for name, (make, reader, _) in BOMBS.items():
        path = folder / name
        path.write_bytes(make())
        assert path.stat().st_size < 10_000, name  # bytes; each declares gigapixels
        jobs.append((name, reader, str(path)))
    # OpenCV's own limit raised out of the way: the refusal must be ours.
    return _in_a_child(jobs, env={"OPENCV_IO_MAX_IMAGE_PIXELS": str(2**40)})


@pytest.mark.parametrize("name", BOMBS)
def test_a_bomb_is_refused_from_its_header_quickly_and_in_little_memory(bombs, name):
    result = bombs[name]
    declared = BOMBS[name][2]
    assert result["error"] is not None, f"{name} was decoded"
    assert f"{name}: declares {declared} pixels" in result["error"]
    assert CAP in result["error"]
    assert result["seconds"] < 2
    assert result["grew_mb"] < 200


def test_jpeg_and_jpeg_2000_data_larger_than_the_dicom_header_is_refused_undecoded(tmp_path):
    """Their decoders allocate what the codestream declares, whatever Rows x Columns say."""
    files = {"j2k.dcm": j2k_bomb(codestream_size=(60000, 60000)), "jpeg.dcm": jpeg_dicom_bomb()}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    results = _in_a_child([(name, "predict", str(tmp_path / name)) for name in files])
    for name, kind, header in (("j2k.dcm", "JPEG 2000", 64), ("jpeg.dcm", "JPEG", 100)):
        declared = "60000 x 60000" if kind == "JPEG 2000" else "65000 x 65000"
        assert results[name]["error"].endswith(
            f"{name}: broken pixel data (its {kind} data declares {declared} pixels, its "
            f"header {header} x {header})"
        )
        assert results[name]["seconds"] < 2 and results[name]["grew_mb"] < 200


def _deflated(rows: int, cols: int) -> bytes:
    """A Deflated Explicit VR Little Endian DICOM whose zeros inflate to rows x cols x 2
    bytes of pixel data (the deflate stream is written in pieces: nothing large is held)."""
    ds = pydicom.dcmread(io.BytesIO(_dicom_bytes(np.zeros((2, 1), np.uint16))))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.Rows, ds.Columns = rows, cols
    small = _save(ds)
    start = dicom._deflated_start(small)
    body = zlib.decompress(small[start:], -zlib.MAX_WBITS)
    tail = b"\xe0\x7f\x10\x00OW\0\0" + struct.pack("<I", 4) + b"\0" * 4  # the 2 x 1 pixels
    assert body.endswith(tail)
    size = rows * cols * 2
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = [small[:start], deflater.compress(body[:-8] + struct.pack("<I", size))]
    chunk = bytes(1 << 22)
    for begin in range(0, size, len(chunk)):
        out.append(deflater.compress(chunk[: min(len(chunk), size - begin)]))
    out.append(deflater.flush())
    return b"".join(out)


def test_a_deflated_dataset_is_refused_while_it_inflates_past_the_cap(tmp_path):
    bomb = tmp_path / "deflated.dcm"
    bomb.write_bytes(_deflated(9000, 9000))  # 162 MB of zeros, about 160 KB on disk
    assert bomb.stat().st_size < 400_000
    results = _in_a_child([("deflated.dcm", "predict", str(bomb))], {limits.ENV: "1000000"})
    result = results["deflated.dcm"]
    assert "deflated.dcm: its deflated dataset inflates to more than 71 MB" in result["error"]
    assert "within the 1 MP cap needs (--max-pixels or MAMMOTUNE_MAX_PIXELS)" in result["error"]
    assert result["seconds"] < 2 and result["grew_mb"] < 100
    # A small deflated file reads as before.
    small = tmp_path / "small.dcm"
    pixels = (np.arange(40 * 30, dtype=np.uint16) * 3).reshape(40, 30)
    ds = pydicom.dcmread(io.BytesIO(_dicom_bytes(pixels)))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    small.write_bytes(_save(ds))
    assert np.array_equal(read_pixels(small), pixels)


# ---- normal files decode exactly as before --------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "rtdose.dcm",  # 15 frames
        "rtdose_rle.dcm",
        "SC_rgb_rle_2frame.dcm",
        "examples_ybr_color.dcm",  # 30 JPEG frames
        "CT_small.dcm",  # rescale slope and intercept
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
        "SC_rgb_jpeg_gdcm.dcm",
        "RG1_UNCR.dcm",  # MONOCHROME1
    ],
)
def test_decoding_one_frame_gives_exactly_what_decoding_all_gave(monkeypatch, name):
    """New: ``pixel_array(ds, index=k)`` decodes frame k alone. Old: ``ds.pixel_array``
    decoded every frame, and frame k was taken from them."""
    ds = pydicom.dcmread(_testdata(name))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    indices = sorted({0, frames - 1})
    calls = []
    real = dicom.pixel_array

    def new_path(src, **kwargs):
        calls.append(kwargs["index"])
        return real(src, **kwargs)

    def old_path(src, index, **_):
        every = pydicom.dcmread(_testdata(name)).pixel_array
        return every[index] if frames > 1 else every

    monkeypatch.setattr(dicom, "pixel_array", new_path)
    new = [dicom.decode(ds, frame=k) for k in indices]
    assert calls == indices
    monkeypatch.setattr(dicom, "pixel_array", old_path)
    old = [dicom.decode(ds, frame=k) for k in indices]
    for a, b in zip(new, old, strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    with pytest.raises(UserError, match=f"frame {frames} of {frames}"):
        dicom.decode(ds, frame=frames)


def _images(tmp_path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    grey8 = rng.integers(0, 256, (37, 53), dtype=np.uint8)
    grey16 = rng.integers(0, 65536, (41, 29), dtype=np.uint16)
    colour = rng.integers(0, 256, (23, 31, 3), dtype=np.uint8)
    cases = {
        "grey.png": (grey8, []),
        "grey16.png": (grey16, []),
        "colour.png": (colour, []),
        "grey.jpg": (grey8, [cv2.IMWRITE_JPEG_QUALITY, 90]),
        "progressive.jpg": (colour, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
        "grey.pgm": (grey8, []),
        "grey16.pgm": (grey16, []),
        "colour.ppm": (colour, []),
        "grey.pam": (grey8, []),
        "grey16.tif": (grey16, []),
        "colour.tif": (colour, []),
        "grey.bmp": (grey8, []),
        "colour.bmp": (colour, []),
    }
    files = {}
    for name, (pixels, params) in cases.items():
        path = tmp_path / name
        assert cv2.imwrite(str(path), pixels, params)
        files[name] = pixels
    return files


def test_ordinary_images_decode_exactly_as_opencv_did(tmp_path):
    for name, pixels in _images(tmp_path).items():
        path = tmp_path / name
        assert limits.image_size(path.read_bytes()) == (pixels.shape[1], pixels.shape[0]), name
        before = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)  # the old path
        if before.ndim == 3:
            before = cv2.cvtColor(before, cv2.COLOR_BGR2GRAY)
        after = read_pixels(path)
        assert after.dtype == before.dtype and np.array_equal(after, before), name


def test_the_jpeg_edition_and_mini_mias_readers_decode_as_before(tmp_path):
    ok, data = cv2.imencode(".jpg", np.full((60, 40), 200, np.uint8))
    assert ok
    expected = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    assert np.array_equal(decode_jpeg(data.tobytes(), name="a.jpg"), expected)
    pgm = tmp_path / "mdb001.pgm"
    cv2.imwrite(str(pgm), np.arange(64 * 64, dtype=np.uint8).reshape(64, 64))
    assert np.array_equal(MiniMiasSource.load_image(str(pgm)), cv2.imread(str(pgm), 0))


# ---- the setting -------------------------------------------------------------------------------


def test_the_keyword_and_the_environment_lower_and_raise_the_cap(tmp_path, monkeypatch):
    png = tmp_path / "wide.png"
    cv2.imwrite(str(png), np.full((100, 300), 128, np.uint8))  # 30,000 pixels
    mri = _testdata("MR_small_RLE.dcm")  # 64 x 64 = 4,096 pixels
    assert read_pixels(png).shape == (100, 300)

    with pytest.raises(UserError, match=r"wide.png: declares 300 x 100 pixels \(0.03 MP\), "):
        read_pixels(png, max_pixels=29_999)
    with pytest.raises(UserError, match="declares 64 x 64 pixels"):
        dicom.read_image(mri, max_pixels=4_095)
    assert dicom.read_image(mri, max_pixels=4_096).shape == (64, 64)

    monkeypatch.setenv(limits.ENV, "29999")
    with pytest.raises(UserError, match="more than the 0.03 MP cap"):
        read_pixels(png)
    assert read_pixels(png, max_pixels=30_000).shape == (100, 300)  # the keyword wins

    # Raised above the default: a default of 10,000 pixels refuses, the setting admits.
    monkeypatch.delenv(limits.ENV)
    monkeypatch.setattr(limits, "MAX_PIXELS", 10_000)
    with pytest.raises(UserError, match="more than the 0.01 MP cap"):
        read_pixels(png)
    with pytest.raises(UserError, match="declares 64 x 64"):
        CbisDdsmSource.load_image(mri, max_pixels=4_000)
    for value in ("30000", "30_000", "3e4"):
        monkeypatch.setenv(limits.ENV, value)
        assert read_pixels(png).shape == (100, 300)
    assert read_pixels(png, max_pixels=10**9).shape == (100, 300)

    for value in ("many", "0", "-5", "2.5"):
        monkeypatch.setenv(limits.ENV, value)
        with pytest.raises(UserError, match=f"MAMMOTUNE_MAX_PIXELS '{value}': give the most"):
            read_pixels(png)
    monkeypatch.delenv(limits.ENV)
    for value in (0, -1, 2.5, True, "x"):
        with pytest.raises(UserError, match="max_pixels .*: give the most pixels"):
            read_pixels(png, max_pixels=value)


def test_opencv_formats_without_a_readable_size_are_not_decoded(tmp_path):
    webp = tmp_path / "image.webp"
    if not cv2.imwrite(str(webp), np.full((20, 20), 100, np.uint8)):
        pytest.skip("OpenCV cannot write WebP here")
    with pytest.raises(UserError, match="not a DICOM file nor an image OpenCV can decode"):
        read_pixels(webp)


# ---- through prepare and predict ---------------------------------------------------------


@pytest.fixture(scope="module")
def cbis(tmp_path_factory):
    from tuner.data.synthetic import SynthParams, synthesize

    out = tmp_path_factory.mktemp("cbis") / "cbis"
    synthesize(str(out), SynthParams(patients=10, seed=5, scale=0.1), workers=1)
    return out


def test_a_bomb_among_good_files_is_skipped_by_prepare_with_its_reason(cbis, tmp_path, ray_local):
    from tuner.data.cbis_ddsm import is_mask
    from tuner.data.prepare import prepare

    source = tmp_path / "cbis"
    shutil.copytree(cbis, source)
    reader = CbisDdsmSource(str(source))
    abnormalities, index = reader.abnormalities(), reader.dicom_index()
    images = sorted({a.image_series for a in abnormalities if index.get(a.image_series)})
    bomb_image = images[0]
    Path(index[bomb_image][0]).write_bytes(rle_bomb())
    # A ROI mask bomb (JPEG 2000) for a finding of another image.
    finding = next(a for a in abnormalities if a.image_series == images[1])
    mask = next(f for f in index[finding.roi_series] if is_mask(pydicom.dcmread(f).pixel_array))
    Path(mask).write_bytes(j2k_bomb((40000, 40000)))

    manifest = prepare(
        str(source), str(tmp_path / "ds"), prepare_params(views=("roi", "whole"), sizes=(32,))
    )
    reasons = {item["item"]: item["reason"] for item in manifest["skipped"]}
    name = Path(index[bomb_image][0]).name
    assert reasons[bomb_image] == f"{name}: declares 40000 x 40000 pixels (1600 MP), {CAP}"
    mask_reason = f"{Path(mask).name}: declares 40000 x 40000 pixels (1600 MP), {CAP}"
    assert reasons[f"{images[1]}/{finding.abnormality_id}"] == mask_reason
    # Every other image was prepared: one whole image fewer than there are images.
    whole = next(k for k in manifest["tiles"] if k.startswith("whole"))
    rows = sum(split["rows"] for split in manifest["tiles"][whole]["splits"].values())
    assert rows == len(images) - 1


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import torch

    from tuner.models import ModelArgs, build_model
    from tuner.training.checkpoint import save_checkpoint

    folder = tmp_path_factory.mktemp("checkpoint")
    torch.manual_seed(0)
    meta = {
        "config": {"view": "whole", "input_size": 32, "enhance": "none"},
        "dataset": {"params": {"whole_sizes": [32]}},
        "task": {"name": "lesion", "classes": ["tissue", "lesion"]},
    }
    model = build_model(ModelArgs("small_vgg_bn", num_classes=2))
    save_checkpoint(str(folder), model=model, optimizer=None, meta=meta)
    return str(folder)


def test_predict_refuses_a_bomb_in_one_line(checkpoint, tmp_path, capsys):
    from tuner.cli import main

    bomb = tmp_path / "scan.dcm"
    bomb.write_bytes(rle_bomb())
    capsys.readouterr()
    assert main(["predict", checkpoint, str(bomb)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"scan.dcm: declares 40000 x 40000 pixels (1600 MP), {CAP}" in err


# ---- two-view refusals name files, not patients -----------------------------------------------


def test_two_view_refusals_name_files_not_patients(tmp_path):
    pixels = np.zeros((8, 8), np.uint16)
    files = {}
    for name, patient, side, view in (
        ("a-cc.dcm", "Doe^Jane-4711", "L", "CC"),
        ("b-mlo.dcm", "Roe^Richard-0815", "L", "MLO"),
        ("c-mlo.dcm", "Doe^Jane-4711", "R", "MLO"),
    ):
        files[name] = tmp_path / name
        files[name].write_bytes(
            _dicom_bytes(pixels, PatientID=patient, ImageLaterality=side, ViewPosition=view)
        )
    with pytest.raises(UserError) as refused:
        breast_views([files["a-cc.dcm"], files["b-mlo.dcm"]])
    message = str(refused.value)
    assert str(files["a-cc.dcm"]) in message and str(files["b-mlo.dcm"]) in message
    assert "are of two patients" in message
    for identifying in ("Doe", "Jane", "4711", "Roe", "Richard", "0815"):
        assert identifying not in message.replace(str(tmp_path), "")
    with pytest.raises(UserError, match=r"two breasts \(LEFT and RIGHT in their DICOM"):
        breast_views([files["a-cc.dcm"], files["c-mlo.dcm"]])


def test_more_components_in_the_codestream_than_the_header_is_refused_undecoded(tmp_path):
    """OpenJPEG and libjpeg allocate every component a frame declares (Csiz up to 16384):
    a 64 x 64 codestream with 16000 components passes a pixel count alone."""
    # SIZ's Csiz, 40 bytes after its marker: 16000 components, the header says 1.
    j2k = _patched_codestream("MR_small_jp2klossless.dcm", b"\xff\x4f\xff\x51", 40, ">H", (16000,))
    jpeg = pydicom.dcmread(_testdata("SC_rgb_jpeg_gdcm.dcm"))
    data = bytearray(jpeg.PixelData)
    data[data.index(b"\xff\xc3") + 9] = 200  # Nf: 200 components, the header says 3
    jpeg.PixelData = bytes(data)
    files = {"j2k-components.dcm": _save(j2k), "jpeg-components.dcm": _save(jpeg)}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    results = _in_a_child([(name, "predict", str(tmp_path / name)) for name in files])
    for name, declared, samples in (
        ("j2k-components.dcm", 16000, 1),
        ("jpeg-components.dcm", 200, 3),
    ):
        assert results[name]["error"].endswith(
            f"{name}: broken pixel data (its {'JPEG 2000' if 'j2k' in name else 'JPEG'} data "
            f"declares {declared} components, its header {samples} samples per pixel)"
        ), results[name]
        assert results[name]["seconds"] < 2 and results[name]["grew_mb"] < 200

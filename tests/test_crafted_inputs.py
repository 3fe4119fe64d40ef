"""Crafted inputs: files whose content names paths (a final model's members, a bundle's file
list, a manifest's shards and digests, a model's promotion, a source's CSV) or that claim to
be another bundle. Each is refused in one line (exit code 2) or skipped with its reason,
and nothing is read or written outside the folders chosen.

With tests/data/test_decode_limits.py (size bombs) this is the fuzz set of
``benchmarks/crafted_inputs.py``, which also measures peak memory."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tuner.cli import main
from tuner.results.bundle import _meta_digest
from tuner.results.leaderboard import leaderboard

# Relative parts that must not leave their folder: a content path's usual disguises.
ESCAPES = [
    "../evil",
    "../../evil",
    "a/../../evil",
    "/tmp/evil",
    "/dev/zero",
    "/etc/passwd",
    "//host/share/evil",
    "C:\\evil",
    "s3://other-bucket/evil",
    "file:///tmp/evil",
]
NOT_HEX = ["", "0" * 63, "0" * 65, "G" * 64, "../" + "0" * 61, "00/../../" + "0" * 55]


def _refused(capsys, argv, *words):
    capsys.readouterr()
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def _nothing_named_evil(*folders: Path) -> None:
    for folder in {*folders, Path("/tmp")}:
        assert not list(folder.glob("evil*")), folder


@pytest.fixture(scope="module")
def best(experiment) -> str:
    return leaderboard(str(experiment)).best.checkpoint


@pytest.fixture(scope="module")
def image(prepared, tmp_path_factory) -> str:
    import cv2
    import numpy as np

    path = tmp_path_factory.mktemp("image") / "tile.png"
    cv2.imwrite(str(path), np.full((48, 48), 120, np.uint8))
    return str(path)


@pytest.mark.parametrize("member", ESCAPES)
def test_a_final_models_members_stay_in_its_folder(best, image, tmp_path, capsys, member):
    final = tmp_path / "exp" / "final"
    shutil.copytree(best, final / "m0")
    meta = {"format": "mammotune-model/1", "members": ["m0", member], "threshold": 0.5}
    (final / "model.json").write_text(json.dumps(meta))
    _refused(capsys, ["predict", final, image], "not a relative path inside")
    _refused(capsys, ["export", final, tmp_path / "bundle"], "not a relative path inside")
    from tuner.errors import UserError
    from tuner.results.leaderboard import download_model

    with pytest.raises(UserError, match="not a relative path inside"):
        download_model(str(final), str(tmp_path / "copy"))
    assert not (tmp_path / "copy").exists() and not (tmp_path / "bundle").exists()
    _nothing_named_evil(tmp_path, tmp_path / "exp")


@pytest.mark.parametrize("promotion", ["../../evil", "/tmp/evil", "s3://other/evil"])
def test_a_models_promotion_names_a_folder_of_its_experiment(
    best, image, tmp_path, capsys, promotion
):
    final = tmp_path / "final"
    shutil.copytree(best, final / "m0")
    meta = {"format": "mammotune-model/1", "members": ["m0"], "promotion": promotion}
    (final / "model.json").write_text(json.dumps({**meta, "experiment": str(tmp_path)}))
    _refused(capsys, ["export", final, tmp_path / "bundle"], "not a relative path inside")


@pytest.fixture(scope="module")
def bundle(best, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "b"
    assert main(["export", best, str(out), "--format", "torchscript"]) == 0
    return out


def _craft_bundle(bundle: Path, folder: Path, edit) -> Path:
    """A copy of ``bundle`` whose bundle.json ``edit`` changed, its own digest recomputed
    (anyone who can write a bundle can do that)."""
    shutil.copytree(bundle, folder)
    meta = json.loads((folder / "bundle.json").read_text())
    edit(meta)
    meta["meta_sha256"] = _meta_digest(meta)
    (folder / "bundle.json").write_text(json.dumps(meta))
    return folder


@pytest.mark.parametrize("name", ESCAPES)
def test_a_bundles_file_list_stays_in_its_folder(bundle, image, tmp_path, capsys, name):
    def edit(meta):
        meta["files"][name] = meta["files"].pop("model.pt")
        meta["model_file"] = name

    crafted = _craft_bundle(bundle, tmp_path / "crafted", edit)
    _refused(capsys, ["predict", crafted, image], "bundle.json", "does not name")

    def extra(meta):  # the model file where it belongs, and one more name outside
        meta["files"][name] = "0" * 64

    crafted = _craft_bundle(bundle, tmp_path / "extra", extra)
    _refused(capsys, ["predict", crafted, image], "not a relative path inside")
    _nothing_named_evil(tmp_path)


def test_predict_runs_only_the_bundle_pinned_by_its_sha256(bundle, image, tmp_path, capsys):
    capsys.readouterr()
    digest = __import__("hashlib").sha256((bundle / "bundle.json").read_bytes()).hexdigest()
    assert main(["predict", str(bundle), image, "--expect-sha256", digest, "--json"]) == 0

    # Someone swapped the model and rewrote bundle.json consistently: the pinned digest
    # refuses it before torch.jit.load runs any of it.
    def swap(meta):
        meta["files"]["model.pt"] = __import__("hashlib").sha256(b"code").hexdigest()

    swapped = _craft_bundle(bundle, tmp_path / "swapped", swap)
    (swapped / "model.pt").write_bytes(b"code")
    line = _refused(
        capsys, ["predict", swapped, image, "--expect-sha256", digest], "not the bundle you"
    )
    assert "nothing in it was loaded" in line
    _refused(capsys, ["predict", bundle, image, "--expect-sha256", "abc"], "SHA-256 hex")
    _refused(capsys, ["predict", bundle.parent, image, "--expect-sha256", digest], "bundle")


@pytest.fixture(scope="module")
def manifest(prepared) -> dict:
    return json.loads((prepared / "manifest.json").read_text())


def _craft_dataset(manifest: dict, folder: Path, key: str, value) -> Path:
    folder.mkdir()
    crafted = json.loads(json.dumps(manifest))
    shard = next(iter(crafted["tiles"].values()))["splits"]["test"]["shards"][0]
    shard[key] = value
    (folder / "manifest.json").write_text(json.dumps(crafted))
    return folder


@pytest.mark.parametrize("path", ESCAPES)
def test_a_manifests_shard_paths_stay_in_the_dataset(best, manifest, tmp_path, capsys, path):
    data = _craft_dataset(manifest, tmp_path / "data", "path", path)
    _refused(capsys, ["evaluate", best, "--data", data, "--split", "val"], "shard path")
    _nothing_named_evil(tmp_path)


@pytest.mark.parametrize("digest", NOT_HEX)
def test_a_manifests_shard_digests_are_hex(best, manifest, tmp_path, capsys, digest):
    data = _craft_dataset(manifest, tmp_path / "data", "sha256", digest)
    _refused(capsys, ["evaluate", best, "--data", data, "--split", "val"], "SHA-256")


def test_csv_paths_name_only_files_inside_the_source(synthetic_source, ray_local, tmp_path):
    """A CBIS-DDSM CSV's paths are join keys matched against the files found under the
    source folder, never opened as given: traversal, absolute and 1 MB paths are skipped
    with their reason, the rest prepared."""
    import pandas as pd

    import tuner

    source = tmp_path / "source"
    shutil.copytree(synthetic_source, source)
    outside = tmp_path / "outside.dcm"
    outside.write_bytes(b"not read")
    csv = sorted(source.rglob("mass_case_description_train_set.csv"))[0]
    table = pd.read_csv(csv, dtype=str)
    column = "image file path"
    crafted = [f"../../../{outside.name}", str(outside), "x/" * 500_000 + "000000.dcm"]
    for i, value in enumerate(crafted):
        table.loc[i, column] = value
    table.to_csv(csv, index=False)
    data = tuner.prepare(str(source), str(tmp_path / "data"), sizes=[32], context_px=150)
    reasons = " ".join(str(item.get("reason")) for item in data.skipped)
    assert data.skipped and "not found" in reasons, data.skipped[:5]
    assert outside.read_bytes() == b"not read"
    _nothing_named_evil(tmp_path)

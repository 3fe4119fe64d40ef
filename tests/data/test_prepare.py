import hashlib
import json
from collections import Counter

import pytest

from tests.conftest import CONTEXT_PX, SIZES, WHOLE_SIZES, prepare_params
from tuner.data import shards
from tuner.data.prepare import MANIFEST, _process_chunk, plan_prepare, prepare, tile_key
from tuner.data.preprocess import whole_shape
from tuner.errors import UserError


def _manifest(folder):
    return json.loads((folder / MANIFEST).read_text())


def _table(folder, shard, columns=None):
    return shards.decode((folder / shard["path"]).read_bytes(), columns)


def test_manifest_counts_match_the_shards(prepared):
    manifest = _manifest(prepared)
    expected = {tile_key("roi", s) for s in SIZES} | {tile_key("whole", s) for s in WHOLE_SIZES}
    assert set(manifest["tiles"]) == expected
    for key, kind in manifest["tiles"].items():
        assert set(kind["splits"]) == {"train", "val", "test"}
        for entry in kind["splits"].values():
            rows, joint = 0, Counter()
            for shard in entry["shards"]:
                data = (prepared / shard["path"]).read_bytes()
                assert hashlib.sha256(data).hexdigest() == shard["sha256"]
                assert shard["path"].endswith(shards.content_name(data))
                table = shards.decode(data)
                assert len(table) == shard["rows"]
                assert list(shards.images(table).shape[1:]) == kind["shape"]
                rows += len(table)
                joint.update(
                    zip(*(table.column(c).to_pylist() for c in shards.LABELS), strict=True)
                )
            assert rows == entry["rows"]
            listed = {
                (c["pathology"], c["abnormality_type"], c["lesion"]): c["rows"]
                for c in entry["counts"]
            }
            assert dict(joint) == listed
            assert {"BENIGN", "MALIGNANT"} <= set(entry["pathology"]), key


def test_no_patient_in_two_splits(prepared):
    manifest = _manifest(prepared)
    patients = {}
    for split, entry in manifest["tiles"][tile_key("roi", SIZES[0])]["splits"].items():
        for shard in entry["shards"]:
            table = _table(prepared, shard, ["patient_id"])
            patients[split] = patients.get(split, set()) | set(table.column(0).to_pylist())
    assert not patients["train"] & patients["val"]
    assert not patients["train"] & patients["test"]
    assert not patients["val"] & patients["test"]
    assert manifest["leakage"]["patients_in_two_splits"] == 0
    assert manifest["splits"]["val"]["patients"] == len(patients["val"])


def test_lesion_variants_tissue_tiles_and_labels(prepared):
    splits = _manifest(prepared)["tiles"][tile_key("roi", SIZES[0])]["splits"]
    for split, entry in splits.items():
        variants, lesions = Counter(), Counter()
        for shard in entry["shards"]:
            table = _table(prepared, shard, ["variant", "lesion", "pathology", "abnormality_type"])
            for variant, lesion, pathology, kind in zip(
                *(c.to_pylist() for c in table.columns), strict=True
            ):
                lesions[lesion] += 1
                if lesion == "lesion":
                    variants[variant] += 1
                    assert pathology != "NORMAL" and kind in ("mass", "calcification")
                else:
                    assert pathology == "NORMAL" and kind == "none"
        # three random-crop variants per training ROI; evaluation splits: the centred tile
        assert set(variants) == ({0, 1, 2} if split == "train" else {0})
        assert lesions["tissue"] > 0, split


def test_whole_view_holds_one_image_per_mammogram_labelled_by_its_worst_finding(prepared):
    manifest = _manifest(prepared)
    kind = manifest["tiles"][tile_key("whole", WHOLE_SIZES[0])]
    assert kind["shape"] == list(whole_shape(WHOLE_SIZES[0]))
    images, roi_worst = {}, {}
    for entry in kind["splits"].values():
        for shard in entry["shards"]:
            table = _table(prepared, shard, ["image_id", "pathology"])
            images.update(
                zip(table.column(0).to_pylist(), table.column(1).to_pylist(), strict=True)
            )
    severity = {"BENIGN_WITHOUT_CALLBACK": 1, "BENIGN": 2, "MALIGNANT": 3}
    for entry in manifest["tiles"][tile_key("roi", SIZES[0])]["splits"].values():
        for shard in entry["shards"]:
            table = _table(prepared, shard, ["image_id", "pathology"])
            for image, pathology in zip(
                table.column(0).to_pylist(), table.column(1).to_pylist(), strict=True
            ):
                if pathology != "NORMAL":
                    roi_worst[image] = max(
                        roi_worst.get(image, pathology), pathology, key=severity.get
                    )
    assert len(images) == len(set(images))
    assert {k: v for k, v in images.items() if k in roi_worst} == roi_worst


def test_rerun_does_nothing_and_other_params_are_refused(prepared, synthetic_source):
    before = {p: p.stat().st_mtime_ns for p in prepared.rglob("*")}
    again = prepare(str(synthetic_source), str(prepared), prepare_params())
    assert again["reused"] is True
    with pytest.raises(UserError, match="already holds a different dataset"):
        prepare(str(synthetic_source), str(prepared), prepare_params(sizes=(32,)))
    assert {p: p.stat().st_mtime_ns for p in prepared.rglob("*")} == before


def test_non_empty_output_and_missing_source_are_refused(tmp_path, synthetic_source, ray_local):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("keep me")
    with pytest.raises(UserError, match="not empty"):
        prepare(str(synthetic_source), str(tmp_path / "busy"), prepare_params())
    assert (tmp_path / "busy" / "mine.txt").read_text() == "keep me"
    with pytest.raises(UserError, match="does not exist"):
        prepare(str(tmp_path / "nowhere"), str(tmp_path / "out"), prepare_params())
    with pytest.raises(UserError, match="sizes"):
        prepare(str(synthetic_source), str(tmp_path / "out"), prepare_params(sizes=(4,)))
    with pytest.raises(UserError, match="unknown enhancement 'sharpen'"):
        prepare(str(synthetic_source), str(tmp_path / "out"), prepare_params(enhance=("sharpen",)))
    (tmp_path / "random").mkdir()
    (tmp_path / "random" / "notes.csv").write_text("a,b\n")
    with pytest.raises(UserError, match="neither a CBIS-DDSM folder"):
        prepare(str(tmp_path / "random"), str(tmp_path / "out"), prepare_params())


def test_interrupted_run_resumes_with_the_same_result(tmp_path, synthetic_source, ray_local):
    params = prepare_params(views=("roi",), sizes=(32,))
    clean = prepare(str(synthetic_source), str(tmp_path / "clean"), params)

    # An interrupted run: the output folder was claimed and one chunk's Ray task finished.
    out = tmp_path / "interrupted"
    plan = plan_prepare(str(synthetic_source), str(out), params)
    assert plan.dataset_id == clean["id"] and len(plan.chunks) > 2
    out.mkdir()
    (out / "_prepare.json").write_text(json.dumps({"id": plan.dataset_id}))
    work = {"kind": plan.kind, "out": str(out), "params_json": json.dumps(plan.params.to_json())}
    _process_chunk({"chunk": json.dumps(plan.chunks[0])}, **work)

    resumed = prepare(str(synthetic_source), str(out), params)
    assert resumed["resumed_chunks"] == 1
    assert resumed["id"] == clean["id"]
    assert resumed["tiles"] == clean["tiles"]
    assert not (out / "_work").exists() and not (out / "_prepare.json").exists()


def test_enhanced_tiles_are_the_same_crops(tmp_path, synthetic_source, ray_local):
    params = prepare_params(views=("roi",), sizes=(32,), enhance=("none", "clahe"))
    manifest = prepare(str(synthetic_source), str(tmp_path / "ds"), params)
    plain, enhanced = manifest["tiles"]["roi-32"], manifest["tiles"]["roi-clahe-32"]
    for split in ("train", "val", "test"):
        assert plain["splits"][split]["counts"] == enhanced["splits"][split]["counts"]
    first = plain["splits"]["val"]["shards"][0]
    other = enhanced["splits"]["val"]["shards"][0]
    a = shards.decode((tmp_path / "ds" / first["path"]).read_bytes())
    b = shards.decode((tmp_path / "ds" / other["path"]).read_bytes())
    assert a.column("image_id").to_pylist() == b.column("image_id").to_pylist()
    assert (shards.images(a) != shards.images(b)).any()


def test_context_defaults_to_the_source_resolution(synthetic_source, tmp_path):
    from tuner.data.prepare import PrepareParams

    plan = plan_prepare(str(synthetic_source), str(tmp_path / "x"), PrepareParams())
    assert plan.params.context_px == 598 and plan.kind == "cbis-ddsm"
    assert CONTEXT_PX == 150  # what the tests use for synthetic data at scale 0.25


def test_both_download_layouts_give_the_same_shards(tmp_path, ray_local):
    from tuner.data.synthetic import SynthParams, synthesize

    manifests = {}
    for layout in ("csv", "archive"):
        source = tmp_path / layout
        synthesize(str(source), SynthParams(patients=16, seed=4, layout=layout), workers=1)
        manifests[layout] = prepare(
            str(source), str(tmp_path / f"{layout}-ds"), prepare_params(views=("roi",), sizes=(32,))
        )
    downloaded = sorted((tmp_path / "archive").rglob("*.dcm"))[0].relative_to(tmp_path / "archive")
    assert downloaded.parts[0] == "CBIS-DDSM" and "-DDSM-NA-" in downloaded.parts[2]
    assert downloaded.name == "1-1.dcm"
    assert manifests["csv"]["tiles"] == manifests["archive"]["tiles"]

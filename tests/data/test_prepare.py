import hashlib
import json
from collections import Counter

import pytest

from tests.conftest import CONTEXT_PX, SIZES
from tuner.data import shards
from tuner.data.prepare import MANIFEST, PrepareParams, _process_chunk, plan_prepare, prepare
from tuner.errors import UserError


def _manifest(folder):
    return json.loads((folder / MANIFEST).read_text())


def test_manifest_counts_match_the_shards(prepared):
    manifest = _manifest(prepared)
    assert set(manifest["views"]["roi"]) == {str(s) for s in SIZES}
    for size, splits in manifest["views"]["roi"].items():
        assert set(splits) == {"train", "val", "test"}
        for entry in splits.values():
            rows, pathology = 0, Counter()
            for shard in entry["shards"]:
                data = (prepared / shard["path"]).read_bytes()
                assert hashlib.sha256(data).hexdigest() == shard["sha256"]
                assert shard["path"].endswith(shards.content_name(data))
                table = shards.decode(data)
                assert len(table) == shard["rows"]
                assert shards.images(table).shape[1:] == (int(size), int(size))
                rows += len(table)
                pathology.update(table.column("pathology").to_pylist())
            assert rows == entry["rows"]
            assert dict(pathology) == entry["pathology"]
            assert {"BENIGN", "MALIGNANT"} <= set(pathology)


def test_no_patient_in_two_splits(prepared):
    manifest = _manifest(prepared)
    patients = {}
    for split, entry in manifest["views"]["roi"][str(SIZES[0])].items():
        for shard in entry["shards"]:
            table = shards.decode((prepared / shard["path"]).read_bytes(), ["patient_id"])
            patients[split] = patients.get(split, set()) | set(table.column(0).to_pylist())
    assert not patients["train"] & patients["val"]
    assert not patients["train"] & patients["test"]
    assert not patients["val"] & patients["test"]
    assert manifest["leakage"]["patients_in_two_splits"] == 0
    assert manifest["splits"]["val"]["patients"] == len(patients["val"])


def test_training_tiles_have_variants_and_evaluation_tiles_do_not(prepared):
    manifest = _manifest(prepared)
    entry = manifest["views"]["roi"][str(SIZES[0])]
    assert entry["train"]["rows"] % 3 == 0  # three random-crop variants per training ROI
    for split in ("val", "test"):
        for shard in entry[split]["shards"]:
            table = shards.decode((prepared / shard["path"]).read_bytes(), ["variant"])
            assert set(table.column(0).to_pylist()) == {0}


def test_rerun_does_nothing_and_other_params_are_refused(prepared, synthetic_source):
    params = PrepareParams(sizes=SIZES, context_px=CONTEXT_PX, train_variants=3, val_fraction=0.25)
    before = {p: p.stat().st_mtime_ns for p in prepared.rglob("*")}
    again = prepare(str(synthetic_source), str(prepared), params)
    assert again["reused"] is True
    with pytest.raises(UserError, match="already holds a different dataset"):
        prepare(
            str(synthetic_source), str(prepared), PrepareParams(sizes=(32,), context_px=CONTEXT_PX)
        )
    assert {p: p.stat().st_mtime_ns for p in prepared.rglob("*")} == before


def test_non_empty_output_and_missing_source_are_refused(tmp_path, synthetic_source, ray_local):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("keep me")
    with pytest.raises(UserError, match="not empty"):
        prepare(str(synthetic_source), str(tmp_path / "busy"), PrepareParams(sizes=(32,)))
    assert (tmp_path / "busy" / "mine.txt").read_text() == "keep me"
    with pytest.raises(UserError, match="does not exist"):
        prepare(str(tmp_path / "nowhere"), str(tmp_path / "out"), PrepareParams(sizes=(32,)))
    with pytest.raises(UserError, match="sizes"):
        prepare(str(synthetic_source), str(tmp_path / "out"), PrepareParams(sizes=(4,)))


def test_interrupted_run_resumes_with_the_same_result(tmp_path, synthetic_source, ray_local):
    params = PrepareParams(sizes=(32,), context_px=CONTEXT_PX, val_fraction=0.25)
    clean = prepare(str(synthetic_source), str(tmp_path / "clean"), params)

    # An interrupted run: the output folder was claimed and one chunk's Ray task finished.
    out = tmp_path / "interrupted"
    plan = plan_prepare(str(synthetic_source), str(out), params)
    assert plan.dataset_id == clean["id"] and len(plan.chunks) > 2
    out.mkdir()
    (out / "_prepare.json").write_text(json.dumps({"id": plan.dataset_id}))
    chunk = {"chunk": json.dumps(plan.chunks[0])}
    _process_chunk(chunk, out=str(out), params_json=json.dumps(params.to_json()))

    resumed = prepare(str(synthetic_source), str(out), params)
    assert resumed["resumed_chunks"] == 1
    assert resumed["id"] == clean["id"]
    assert resumed["views"] == clean["views"]
    assert not (out / "_work").exists() and not (out / "_prepare.json").exists()

"""One conformance suite over every storage backend (like Optuna's storage tests): a local
folder, ``memory://`` and a real S3-protocol server on loopback. The same source gives the
same shards, byte for byte, wherever they are written, and reads back the same."""

import json
import multiprocessing
import os
import re
import uuid

import fsspec
import pytest
from torch.utils.data import DataLoader

from tests.conftest import free_port, prepare_params, start_moto
from tuner.data.cache import ShardCache
from tuner.data.prepare import prepare
from tuner.data.stream import TileStream, load_manifest
from tuner.data.synthetic import SynthParams, synthesize
from tuner.data.tasks import TASKS
from tuner.errors import UserError

PARAMS = dict(views=("roi",), sizes=(32,))


@pytest.fixture(scope="module")
def small_source(tmp_path_factory):
    out = tmp_path_factory.mktemp("small") / "cbis"
    synthesize(str(out), SynthParams(patients=24, seed=3, scale=0.25), workers=1)
    return out


@pytest.fixture(scope="module")
def reference(small_source, tmp_path_factory, ray_local):
    out = tmp_path_factory.mktemp("reference") / "ds"
    manifest = prepare(str(small_source), str(out), prepare_params(**PARAMS))
    return {**manifest, "at": str(out)}


def _target(backend: str, tmp_path, bucket) -> str:
    if backend == "local":
        return f"file://{tmp_path}/ds"
    if backend == "memory":
        return f"memory://mammotune-test-{uuid.uuid4().hex}/ds"
    return f"{bucket}/datasets/ds"


def _tiles(dataset: str, manifest: dict) -> list[bytes]:
    stream = TileStream(
        dataset, manifest, view="roi", size=32, split="val", task=TASKS["benign_vs_malignant"]
    )
    return sorted(
        t.numpy().tobytes() for tiles, _ in DataLoader(stream, batch_size=32) for t in tiles
    )


@pytest.mark.parametrize("backend", ["local", "memory", "s3"])
def test_same_shards_on_every_backend(
    backend, small_source, reference, tmp_path, request, ray_local
):
    bucket = request.getfixturevalue("bucket") if backend == "s3" else None
    url = _target(backend, tmp_path, bucket)
    manifest = prepare(str(small_source), url, prepare_params(**PARAMS))
    assert manifest["tiles"] == reference["tiles"]
    assert manifest["id"] == reference["id"]
    again = prepare(str(small_source), url, prepare_params(**PARAMS))
    assert again["reused"] is True
    loaded = load_manifest(url)
    assert loaded["id"] == manifest["id"]
    tiles = _tiles(url, loaded)
    assert tiles and tiles == _tiles(reference["at"], reference)


def test_source_and_dataset_in_a_bucket(small_source, bucket, ray_local, reference):
    fs = fsspec.filesystem("s3")
    fs.put(str(small_source), f"{bucket[5:]}/source", recursive=True)
    manifest = prepare(f"{bucket}/source", f"{bucket}/dataset", prepare_params(**PARAMS))
    assert manifest["tiles"] == reference["tiles"]  # same pixels, same shards
    assert manifest["source"]["url"] == f"{bucket}/source"


def test_a_bucket_that_does_not_exist(small_source, s3_server):
    with pytest.raises(UserError, match="bucket 'no-such-bucket' .* does not exist"):
        prepare(str(small_source), "s3://no-such-bucket/ds", prepare_params(**PARAMS))
    with pytest.raises(UserError, match="does not exist"):
        prepare("s3://no-such-bucket/source", "memory://x/ds", prepare_params(**PARAMS))


def test_wrong_credentials_are_one_clear_error(small_source, tmp_path):
    """A server that checks credentials (moto with authentication on) refuses ours."""
    import subprocess
    import sys

    port = free_port()
    server = start_moto(port, tmp_path / "auth.log", {"INITIAL_NO_AUTH_ACTION_COUNT": "0"})
    try:
        result = subprocess.run(
            [sys.executable, "-m", "tuner", "prepare", str(small_source), "s3://secure/ds"],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"},
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "access denied to s3://secure/ds" in result.stderr
    assert "mammotune-test-secret" not in result.stderr + result.stdout


def _read_all(dataset: str, cache_dir: str) -> int:
    manifest = load_manifest(dataset)
    stream = TileStream(
        dataset,
        manifest,
        view="roi",
        size=32,
        split="train",
        task=TASKS["lesion_vs_tissue"],
        cache=ShardCache(cache_dir),
    )
    return sum(len(y) for _, y in DataLoader(stream, batch_size=64))


def _requests(log) -> list[str]:
    """The S3 server's request log, without the terminal colours it adds."""
    return [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in log.read_text().splitlines()]


def test_concurrent_readers_on_one_node_fetch_each_shard_once(
    small_source, bucket, s3_server, tmp_path, ray_local
):
    dataset = f"{bucket}/cached"
    manifest = prepare(str(small_source), dataset, prepare_params(**PARAMS))
    shards = manifest["tiles"]["roi-32"]["splits"]["train"]["shards"]
    start = len(_requests(s3_server))
    context = multiprocessing.get_context("spawn")
    with context.Pool(3) as pool:  # three "trials" on one node, one cache folder
        counts = pool.starmap(_read_all, [(dataset, str(tmp_path / "cache"))] * 3)
    assert len(set(counts)) == 1 and counts[0] > 0
    log = _requests(s3_server)[start:]
    for shard in shards:
        key = re.escape(f"{bucket[5:]}/cached/{shard['path']}")
        gets = [line for line in log if re.search(rf'"GET /{key}[ ?]', line)]
        assert len(gets) == 1, (shard["path"], gets)
    # Later passes read the local copies: no more GETs.
    assert _read_all(dataset, str(tmp_path / "cache")) == counts[0]
    log = _requests(s3_server)[start:]
    assert sum('"GET /' in line and "/cached/roi-32/train/" in line for line in log) == len(shards)


def test_a_corrupt_cached_copy_is_fetched_again(small_source, bucket, tmp_path, ray_local):
    dataset = f"{bucket}/corrupt"
    prepare(str(small_source), dataset, prepare_params(**PARAMS))
    cache = tmp_path / "cache"
    expected = _read_all(dataset, str(cache))
    for copy in cache.glob("*.parquet"):
        copy.write_bytes(b"not parquet")
    with pytest.warns(UserWarning, match="corrupt"):
        assert _read_all(dataset, str(cache)) == expected
    manifest = json.loads(fsspec.open(f"{dataset}/manifest.json").open().read())
    assert manifest["id"]

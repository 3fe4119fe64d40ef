import json

import pytest
import torch
from torch.utils.data import DataLoader

from tests.conftest import SIZES
from tuner.data.stream import TileStream, default_augment, load_manifest
from tuner.data.tasks import TASKS
from tuner.errors import UserError

SIZE = SIZES[0]


def _stream(prepared, **kwargs):
    manifest = load_manifest(str(prepared))
    options = dict(view="roi", size=SIZE, split="train", task=TASKS["benign_vs_malignant"])
    return TileStream(str(prepared), manifest, **{**options, **kwargs})


def _fingerprints(loader):
    return sorted(tile.numpy().tobytes() for tiles, _ in loader for tile in tiles)


def test_streams_every_tile_once_in_order_or_shuffled(prepared):
    plain = _stream(prepared)
    shuffled = _stream(prepared, shuffle=True, buffer_size=64)
    every = _fingerprints(DataLoader(plain, batch_size=16))
    assert len(every) == len(plain)
    assert _fingerprints(DataLoader(shuffled, batch_size=16)) == every

    first = [t.numpy().tobytes() for t, _ in shuffled]
    shuffled.set_epoch(1)
    second = [t.numpy().tobytes() for t, _ in shuffled]
    assert first != second and sorted(first) == sorted(second)


def test_loader_workers_split_shards_without_duplicates(prepared):
    stream = _stream(prepared, shuffle=True)
    single = _fingerprints(DataLoader(stream, batch_size=8))
    double = _fingerprints(DataLoader(stream, batch_size=8, num_workers=2))
    assert double == single


def test_labels_follow_the_task(prepared):
    manifest = load_manifest(str(prepared))
    entry = manifest["views"]["roi"][str(SIZE)]["train"]
    for name, task in TASKS.items():
        labels = torch.cat([y for _, y in DataLoader(_stream(prepared, task=task), batch_size=64)])
        assert labels.bincount(minlength=2).tolist() == task.counts(entry), name


def test_augmentation_keeps_shape_and_type(prepared):
    tile, label = next(iter(_stream(prepared, augment=default_augment())))
    assert tile.shape == (1, SIZE, SIZE) and tile.dtype == torch.uint8
    assert label.dtype == torch.int64


def test_missing_dataset_size_and_split_are_user_errors(prepared, tmp_path):
    with pytest.raises(UserError, match="no prepared dataset"):
        load_manifest(str(tmp_path))
    with pytest.raises(UserError, match="no data URL"):
        load_manifest("")
    with pytest.raises(UserError, match="it has: 32, 48"):
        _stream(prepared, size=224)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(UserError, match="format"):
        load_manifest(str(broken))

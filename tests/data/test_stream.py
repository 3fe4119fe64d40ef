import json

import pytest
import torch
from torch.utils.data import DataLoader

from tests.conftest import SIZES, WHOLE_SIZES
from tuner.data.preprocess import whole_shape
from tuner.data.stream import TileStream, default_augment, flip_rot90, load_manifest
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
    assert len(every) == sum(plain.task.counts(plain.entries[0]))
    assert _fingerprints(DataLoader(shuffled, batch_size=16)) == every

    first = [t.numpy().tobytes() for t, _ in shuffled]
    shuffled.set_epoch(1)
    second = [t.numpy().tobytes() for t, _ in shuffled]
    assert first != second and sorted(first) == sorted(second)


def test_loader_workers_and_ranks_split_shards_without_duplicates(prepared):
    stream = _stream(prepared, shuffle=True)
    single = _fingerprints(DataLoader(stream, batch_size=8))
    double = _fingerprints(DataLoader(stream, batch_size=8, num_workers=2))
    assert double == single
    ranks = [_stream(prepared, shuffle=True, rank=r, world_size=2) for r in (0, 1)]
    parts = [_fingerprints(DataLoader(r, batch_size=8)) for r in ranks]
    assert parts[0] and parts[1]
    assert sorted(parts[0] + parts[1]) == single


@pytest.mark.parametrize("name", sorted(TASKS))
def test_labels_follow_the_task(prepared, name):
    task = TASKS[name]
    stream = _stream(prepared, task=task)
    labels = torch.cat([y for _, y in DataLoader(stream, batch_size=64)])
    counts = labels.bincount(minlength=len(task.classes)).tolist()
    assert counts == task.counts(stream.entries[0])
    assert all(counts), name  # every class is present in the synthetic data


def test_whole_images_stream_at_their_own_shape(prepared):
    stream = _stream(
        prepared, view="whole", size=WHOLE_SIZES[0], augment=default_augment(square=False)
    )
    tiles, labels = next(iter(DataLoader(stream, batch_size=4)))
    assert tiles.shape == (4, 1, *whole_shape(WHOLE_SIZES[0]))


def test_augmentation_keeps_shape_and_type(prepared):
    tile, label = next(iter(_stream(prepared, augment=default_augment())))
    assert tile.shape == (1, SIZE, SIZE) and tile.dtype == torch.uint8
    assert label.dtype == torch.int64


def test_flip_rot90_on_batches_keeps_every_pixel():
    batch = torch.arange(2 * 1 * 5 * 5, dtype=torch.uint8).reshape(2, 1, 5, 5).repeat(8, 1, 1, 1)
    out = flip_rot90(batch, torch.Generator().manual_seed(0))
    assert out.shape == batch.shape
    assert not torch.equal(out, batch)
    for before, after in zip(batch, out, strict=True):
        assert torch.equal(before.flatten().sort().values, after.flatten().sort().values)
    wide = torch.zeros(3, 1, 6, 4)
    assert flip_rot90(wide).shape == wide.shape  # no quarter turns for non-square images


def test_missing_dataset_size_and_split_are_user_errors(prepared, tmp_path):
    with pytest.raises(UserError, match="no prepared dataset"):
        load_manifest(str(tmp_path))
    with pytest.raises(UserError, match="no data URL"):
        load_manifest("")
    with pytest.raises(UserError, match="no roi-224 tiles"):
        _stream(prepared, size=224)
    with pytest.raises(UserError, match="no roi-clahe-32 tiles"):
        _stream(prepared, enhance="clahe")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(UserError, match="format"):
        load_manifest(str(broken))

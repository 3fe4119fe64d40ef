"""Streaming tiles from shards to a trial, never holding the whole dataset in memory.

Only the shards of the view, size and split a trial asks for are read, in a seeded order that
changes each epoch, through a shuffle buffer; DataLoader workers split the shards between
them. Shards are found through the manifest, never by listing folders, so a dataset that is
still being written is invisible.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from tuner import storage
from tuner.data import shards
from tuner.data.prepare import FORMAT, MANIFEST
from tuner.data.tasks import Task
from tuner.errors import UserError

__all__ = ["load_manifest", "split_entry", "TileStream", "default_augment"]


def load_manifest(dataset: str) -> dict:
    """Read and check a prepared dataset's manifest.

    Raises:
        UserError: no manifest at ``dataset`` or an unknown format.
    """
    if not dataset:
        raise UserError("no data URL given; pass --data with the output folder of `prepare`")
    url = storage.join(dataset, MANIFEST)
    if not storage.exists(url):
        raise UserError(
            f"no prepared dataset at {storage.normalize(dataset)} ({MANIFEST} not found); "
            f"run `mammotune prepare SOURCE {dataset}` first"
        )
    manifest = storage.read_json(url)
    if manifest.get("format") != FORMAT:
        raise UserError(
            f"{url}: dataset format {manifest.get('format')!r} is not {FORMAT!r}; "
            "prepare it again with this version"
        )
    return manifest


def split_entry(manifest: dict, view: str, size: int, split: str) -> dict:
    """The manifest entry of one view, size and split.

    Raises:
        UserError: the dataset was not prepared with that view, size or split.
    """
    views = manifest["views"]
    if view not in views:
        raise UserError(f"dataset has no view {view!r}; it has: {', '.join(sorted(views))}")
    sizes = views[view]
    if str(size) not in sizes:
        raise UserError(
            f"dataset has no {view} tiles of size {size}; it has: "
            f"{', '.join(sorted(sizes, key=int))} (prepare again with --sizes)"
        )
    if split not in sizes[str(size)] or not sizes[str(size)][split]["rows"]:
        raise UserError(f"dataset has no {split!r} tiles for {view}-{size}")
    return sizes[str(size)][split]


def default_augment():
    """Training-time augmentation: flips, 90-degree turns, small affine and contrast."""
    import albumentations as A

    return A.Compose(
        [
            A.HorizontalFlip(p=0.5),
            A.VerticalFlip(p=0.5),
            A.RandomRotate90(p=0.5),
            A.Affine(scale=(0.9, 1.1), rotate=(-15, 15), translate_percent=(-0.05, 0.05), p=0.5),
            A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.5),
        ]
    )


class TileStream(IterableDataset):
    """Yields ``(tile, label)``: a uint8 tensor (1, size, size) and an int64 class index.

    Args:
        dataset: URL of a prepared dataset.
        manifest: its manifest (see :func:`load_manifest`).
        task: which label to yield.
        shuffle: shuffle shard order and rows (through a buffer of ``buffer_size`` tiles).
        seed: base of the shuffle; :meth:`set_epoch` varies it per epoch.
        augment: an albumentations ``Compose`` applied to each uint8 tile, or None; it is
            reseeded from ``seed``, the epoch and the worker at every pass.
    """

    def __init__(
        self,
        dataset: str,
        manifest: dict,
        *,
        view: str,
        size: int,
        split: str,
        task: Task,
        shuffle: bool = False,
        seed: int = 0,
        buffer_size: int = 512,
        augment=None,
    ):
        self.dataset = storage.normalize(dataset)
        self.entry = split_entry(manifest, view, size, split)
        self.task = task
        self.shuffle = shuffle
        self.seed = seed
        self.buffer_size = buffer_size
        self.augment = augment
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.entry["rows"]

    def _shards(self) -> list[dict]:
        listed = list(self.entry["shards"])
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(len(listed))
            listed = [listed[i] for i in order]
        worker = get_worker_info()
        if worker is not None:
            listed = listed[worker.id :: worker.num_workers]
        return listed

    def _rows(self) -> Iterator[tuple[np.ndarray, int]]:
        columns = ["image", "height", "width", self.task.column]
        for shard in self._shards():
            fs, path = storage.filesystem(storage.join(self.dataset, shard["path"]))
            with fs.open(path, "rb") as f:
                table = shards.decode(f, columns=columns)
            tiles = shards.images(table)
            values = table.column(self.task.column).to_pylist()
            for tile, value in zip(tiles, values, strict=True):
                if value in self.task.mapping:
                    yield tile, self.task.mapping[value]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        worker = get_worker_info()
        rng = np.random.default_rng([self.seed, self.epoch, worker.id if worker else 0, 1])
        if self.augment is not None:
            # Reproducible, and different per epoch and per DataLoader worker (each worker
            # holds a copy of the transform, which would otherwise repeat the same draws).
            self.augment.set_random_seed(int(rng.integers(2**31)))
        buffer: list[tuple[np.ndarray, int]] = []
        rows = self._rows()
        for row in rows:
            if not self.shuffle:
                yield self._sample(*row)
                continue
            buffer.append(row)
            if len(buffer) >= self.buffer_size:
                # Swap a random row to the end and pop it: O(1) per row.
                i = int(rng.integers(len(buffer)))
                buffer[i], buffer[-1] = buffer[-1], buffer[i]
                yield self._sample(*buffer.pop())
        rng.shuffle(buffer)
        for row in buffer:
            yield self._sample(*row)

    def _sample(self, tile: np.ndarray, label: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.augment is not None:
            tile = self.augment(image=tile)["image"]
        # Copy: tiles decoded from a shard are read-only views of its buffer.
        return torch.tensor(tile)[None], torch.tensor(label)

"""Streaming tiles from shards to a trial, never holding the whole dataset in memory.

Only the shards of the tile kind (view, size, enhancement) and split a trial asks for are
read, in a seeded order that changes each epoch, through a shuffle buffer. Data-parallel
ranks and DataLoader workers split the shards between them. Remote shards go through the
node-local cache, so trials on one node fetch each shard once. Shards are found through the
manifest, never by listing folders, so a dataset that is still being written is invisible.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from tuner import storage
from tuner.data import shards
from tuner.data.cache import ShardCache
from tuner.data.prepare import FORMAT, MANIFEST, tile_key
from tuner.data.tasks import Task
from tuner.errors import UserError

__all__ = [
    "shard_url",
    "load_manifest",
    "split_entry",
    "TileStream",
    "default_augment",
    "flip_rot90",
]


def load_manifest(dataset: str) -> dict:
    """Read and check a prepared dataset's manifest.

    Raises:
        UserError: no manifest at ``dataset`` or an unknown format.
    """
    if not dataset:
        raise UserError("no data URL given; give data (--data): the output folder of `prepare`")
    storage.check_location(dataset)
    url = storage.join(dataset, MANIFEST)
    if not storage.exists(url):
        raise UserError(
            f"no prepared dataset at {storage.normalize(dataset)} ({MANIFEST} not found); "
            f"run `mammotune prepare SOURCE {dataset}` first"
        )
    try:
        manifest = storage.read_json(url)
    except ValueError:
        raise UserError(f"{url} is not valid JSON; prepare the dataset again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise UserError(
            f"{url}: dataset format {found!r} is not {FORMAT!r}; prepare it again with this version"
        )
    try:
        for kind in (manifest.get("tiles") or {}).values():
            for entry in (kind.get("splits") or {}).values():
                for shard in entry.get("shards", []):
                    shard_url(dataset, shard)  # a UserError: a path or digest was edited
    except (AttributeError, TypeError):  # a list or number where the format has a mapping
        raise UserError(f"{url} is damaged (its tiles are not as prepare writes them)") from None
    return manifest


def shard_url(dataset: str, shard: dict) -> str:
    """The URL of a manifest's shard entry, checked: its path stays inside the dataset and
    its SHA-256 (which names the node cache's copy) is a hex digest.

    Raises:
        UserError: an entry whose path or digest was edited.
    """
    if not isinstance(shard, dict):
        raise UserError(f"a shard entry of {storage.normalize(dataset)}'s {MANIFEST} is damaged")
    named = str(shard.get("path"))[:60]
    storage.check_sha256(shard.get("sha256"), what=f"shard {named!r}'s SHA-256")
    return storage.join_under(dataset, shard.get("path") or "", what="shard path")


def split_entry(manifest: dict, view: str, size: int, split: str, enhance: str = "none") -> dict:
    """The manifest entry of one tile kind and split.

    Raises:
        UserError: the dataset was not prepared with that view, size, enhancement or split.
    """
    key = tile_key(view, size, enhance)
    if key not in manifest["tiles"]:
        raise UserError(
            f"dataset has no {key} tiles (view {view}, size {size}, enhancement {enhance}); "
            f"it has: {', '.join(manifest['tiles']) or 'none'} (prepare again with --views, "
            "--sizes, --whole-sizes or --enhance)"
        )
    splits = manifest["tiles"][key]["splits"]
    if split not in splits or not splits[split]["rows"]:
        raise UserError(f"dataset has no {split!r} tiles for {key}")
    return splits[split]


def default_augment(*, square: bool = True, flips: bool = True):
    """Training-time augmentation on CPU: flips and 90-degree turns (turns for square tiles
    only, as they would change a whole image's shape; neither when :func:`flip_rot90` does
    them on the GPU), small affine and contrast changes."""
    import albumentations as A

    steps = []
    if flips:
        steps += [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)]
        if square:
            steps.append(A.RandomRotate90(p=0.5))
    steps += [
        A.Affine(scale=(0.9, 1.1), rotate=(-15, 15), translate_percent=(-0.05, 0.05), p=0.5),
        A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.5),
    ]
    return A.Compose(steps)


def flip_rot90(batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random flips and quarter turns of a (N, C, H, W) batch, on whatever device it is on:
    the GPU option for square tiles, instead of doing them per sample on CPU workers."""
    n = batch.shape[0]
    device = batch.device
    draw = torch.rand(n, 2, generator=generator, device="cpu").to(device)
    turns = torch.randint(0, 4, (n,), generator=generator, device="cpu").to(device)
    out = torch.where((draw[:, 0] < 0.5).view(-1, 1, 1, 1), batch.flip(-1), batch)
    out = torch.where((draw[:, 1] < 0.5).view(-1, 1, 1, 1), out.flip(-2), out)
    if batch.shape[-1] == batch.shape[-2]:
        for k in (1, 2, 3):
            chosen = turns == k
            if chosen.any():
                out[chosen] = torch.rot90(out[chosen], k, dims=(-2, -1))
    return out


class TileStream(IterableDataset):
    """Yields ``(tile, label)``: a uint8 tensor (1, H, W) and an int64 class index.

    Args:
        dataset: URL of a prepared dataset.
        manifest: its manifest (see :func:`load_manifest`).
        split: one split, or several read as one (cross-validation reads train and val).
        task: which label to yield; rows outside the task are skipped.
        only_patients, without_patients: keep only the rows of these patients, or drop
            theirs (a cross-validation fold, held out or trained on).
        shuffle: shuffle shard order and rows (through a buffer of ``buffer_size`` tiles).
        seed: base of the shuffle; :meth:`set_epoch` varies it per epoch.
        augment: an albumentations ``Compose`` applied to each uint8 tile, or None; it is
            reseeded from ``seed``, the epoch and the worker at every pass.
        rank, world_size: this reader's share of the shards in data-parallel training.
        cache: the node-local shard cache (default: one at ``MAMMOTUNE_CACHE_DIR``).
    """

    def __init__(
        self,
        dataset: str,
        manifest: dict,
        *,
        view: str,
        size: int,
        split: str | Sequence[str],
        task: Task,
        enhance: str = "none",
        only_patients: Collection[str] | None = None,
        without_patients: Collection[str] | None = None,
        shuffle: bool = False,
        seed: int = 0,
        buffer_size: int = 512,
        augment=None,
        rank: int = 0,
        world_size: int = 1,
        cache: ShardCache | None = None,
    ):
        self.dataset = storage.normalize(dataset)
        splits = (split,) if isinstance(split, str) else tuple(split)
        self.entries = [split_entry(manifest, view, size, s, enhance) for s in splits]
        self.only = None if only_patients is None else frozenset(only_patients)
        self.without = frozenset(without_patients or ())
        self.task = task
        self.shuffle = shuffle
        self.seed = seed
        self.buffer_size = buffer_size
        self.augment = augment
        self.rank, self.world_size = rank, world_size
        self.cache = cache
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        """Rows of the splits of the tile kind (before the task's and patients' filtering)."""
        return sum(entry["rows"] for entry in self.entries)

    def _keeps(self, patient: str) -> bool:
        return (self.only is None or patient in self.only) and patient not in self.without

    def _filtered(self) -> bool:
        return self.only is not None or bool(self.without)

    def context(self, columns: Sequence[str]) -> list[dict]:
        """``columns`` of every row this stream yields, in the order it yields them when
        unshuffled in one process (the rows' identity and subgroups, for held-out
        predictions); reads no image."""
        if self.shuffle:
            raise ValueError(
                "context() follows the unshuffled order: make a stream without shuffle"
            )
        names = list(dict.fromkeys([*self.task.columns, "patient_id", *columns]))
        if self._remote():
            self.cache = self.cache or ShardCache()
        rows = []
        for shard in self._shards():
            table = self._read(shard, names)
            values = {c: table.column(c).to_pylist() for c in names}
            for i in range(table.num_rows):
                label = self.task.label(tuple(values[c][i] for c in self.task.columns))
                if label is not None and self._keeps(values["patient_id"][i]):
                    rows.append({**{c: values[c][i] for c in columns}, "label": label})
        return rows

    def _shards(self) -> list[dict]:
        listed = [shard for entry in self.entries for shard in entry["shards"]]
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(len(listed))
            listed = [listed[i] for i in order]
        listed = listed[self.rank :: self.world_size]
        worker = get_worker_info()
        if worker is not None:
            listed = listed[worker.id :: worker.num_workers]
        return listed

    def _remote(self) -> bool:
        return not (storage.is_local(self.dataset) or storage.is_process_local(self.dataset))

    def _read(self, shard: dict, columns: list[str]):
        url = shard_url(self.dataset, shard)
        if not self._remote():
            fs, path = storage.filesystem(url)
            with fs.open(path, "rb") as f:
                return shards.decode(f, columns=columns)
        local = self.cache.path(url, shard["sha256"])
        try:
            return shards.decode(local, columns=columns)
        except Exception as exc:  # a corrupt local copy: drop it and fetch again once
            self.cache.evict(url, shard["sha256"], str(exc))
            return shards.decode(self.cache.path(url, shard["sha256"]), columns=columns)

    def _rows(self) -> Iterator[tuple[np.ndarray, int]]:
        columns = ["image", "height", "width", *self.task.columns]
        filtered = self._filtered()
        if filtered:
            columns.append("patient_id")
        listed = self._shards()
        pool, fetched = None, []
        if self._remote():
            # Fetch the coming shards into the node cache while this one is decoded: a cold
            # epoch overlaps downloads with work (the copies go to disk, not to memory).
            self.cache = self.cache or ShardCache()
            pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="shard-fetch")
            fetched = [
                pool.submit(self.cache.path, shard_url(self.dataset, s), s["sha256"])
                for s in listed
            ]
        try:
            for index, shard in enumerate(listed):
                if fetched:
                    fetched[index].result()
                table = self._read(shard, columns)
                tiles = shards.images(table)
                values = zip(*(table.column(c).to_pylist() for c in self.task.columns), strict=True)
                patients = table.column("patient_id").to_pylist() if filtered else None
                for i, (tile, key) in enumerate(zip(tiles, values, strict=True)):
                    label = self.task.label(key)
                    if label is not None and (patients is None or self._keeps(patients[i])):
                        # A copy: a view would keep its whole shard alive in the shuffle
                        # buffer, and memory would grow with the shards the buffer touches.
                        yield tile.copy(), label
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        worker = get_worker_info()
        rng = np.random.default_rng(
            [self.seed, self.epoch, self.rank, worker.id if worker else 0, 1]
        )
        if self.augment is not None:
            # Reproducible, and different per epoch, rank and DataLoader worker (each worker
            # holds a copy of the transform, which would otherwise repeat the same draws).
            self.augment.set_random_seed(int(rng.integers(2**31)))
        buffer: list[tuple[np.ndarray, int]] = []
        for row in self._rows():
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
            tile = np.ascontiguousarray(self.augment(image=tile)["image"])
        return torch.from_numpy(tile)[None], torch.tensor(label)

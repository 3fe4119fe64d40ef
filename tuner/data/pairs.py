"""Two-view samples: the CC and MLO whole images of one breast, streamed as one input.

A breast is a patient and a side. Its samples pair its CC images with its MLO images:
sorted by image id, the i-th CC with the i-th MLO, the shorter list reused in turn when one
view has more images (CBIS-DDSM lists the same mammogram under a mass and a calcification
case). A breast with one view only is fed that view twice (CC slot and MLO slot alike), and
such breasts are counted (:attr:`PairStream.single_view_breasts`). Every sample of a breast
carries the breast's label: the worst (highest) label among its images, as per-breast
evaluation scores it. Splits are by patient, so a pair never crosses them.

Prepare writes whole images in hash order, so the two views of a breast usually lie in
different shards: the stream first reads the shards' label columns (no pixels) to plan the
pairs, then reads the shards in the epoch's order and emits a pair as soon as both its images
have been read, holding an image only until its partner arrives. Data-parallel ranks and
DataLoader workers take whole breasts (by a hash of the breast), each reading the shards that
hold its images.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import get_worker_info

from tuner import storage
from tuner.data import shards
from tuner.data.cache import ShardCache
from tuner.data.stream import TileStream, shard_url

__all__ = ["Pair", "pair_breasts", "breast_key", "PairStream", "CC"]

CC = "CC"  # the first view slot; every other view (MLO, ML, ...) fills the second


def breast_key(row: dict) -> str:
    """The id of a row's breast: ``<patient>_<side>`` (e.g. ``P_00001_LEFT``); an image
    whose side is not known is a breast of its own (never paired across sides)."""
    if not row.get("laterality"):
        return f"{row['patient_id']}_{row['image_id']}"
    return f"{row['patient_id']}_{row['laterality']}"


@dataclass(frozen=True)
class Pair:
    """One two-view sample: where its CC and MLO images lie ((shard, row) positions; the
    same position twice for a one-view breast), the breast's label and its context row."""

    breast: str
    cc: tuple[int, int]
    mlo: tuple[int, int]
    label: int
    single: bool  # the breast has one view only, fed twice
    row: dict  # the breast's context: its worst image's, with image_id the breast and view


def pair_breasts(rows: Sequence[dict]) -> list[Pair]:
    """The two-view samples of ``rows`` (one per image, each with ``at`` (shard, row),
    ``patient_id``, ``laterality``, ``view``, ``image_id`` and ``label``), in breast order."""
    breasts: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        breasts[breast_key(row)].append(row)
    pairs = []
    for key in sorted(breasts):
        images = sorted(breasts[key], key=lambda r: (r["image_id"], r["at"]))
        cc = [r for r in images if r["view"] == CC]
        mlo = [r for r in images if r["view"] != CC]
        worst = max(images, key=lambda r: r["label"])  # the first of the highest label
        views = "+".join(v for v, members in ((CC, cc), ("MLO", mlo)) if members)
        context = {**worst, "image_id": key, "view": views, "images": len(images)}
        context.pop("at", None)
        single = not (cc and mlo)
        if single:
            matched = [(r, r) for r in cc or mlo]
        else:
            n = max(len(cc), len(mlo))
            matched = [(cc[i % len(cc)], mlo[i % len(mlo)]) for i in range(n)]
        for first, second in matched:
            pairs.append(
                Pair(key, first["at"], second["at"], worst["label"], single, dict(context))
            )
    return pairs


class PairStream(TileStream):
    """Yields ``(views, label)``: a uint8 tensor (2, H, W), the CC then the MLO whole image of
    one breast, and the breast's class index. Takes :class:`TileStream`'s arguments, with
    ``view`` "whole"; ``augment`` is applied to each view on its own draw."""

    def __init__(self, *args, **kwargs):
        kwargs["view"] = "whole"
        # A pair is two images: the same buffer memory as TileStream's default in images.
        kwargs.setdefault("buffer_size", 256)
        super().__init__(*args, **kwargs)
        self._plan: tuple[list[list[str]], list[Pair]] | None = None

    # -- the plan: every image's context and the pairs, from the label columns only --
    def _planned(self) -> tuple[list[dict], list[Pair]]:
        if self._plan is None:
            names = list(dict.fromkeys([*self.task.columns, *shards.LABEL_COLUMNS, "patient_id"]))
            images = []
            for index, shard in enumerate(self._all_shards()):
                table = self._label_columns(shard, names)
                values = {c: table.column(c).to_pylist() for c in names}
                for i in range(table.num_rows):
                    label = self.task.label(tuple(values[c][i] for c in self.task.columns))
                    if label is None or not self._keeps(values["patient_id"][i]):
                        continue
                    row = {c: values[c][i] for c in shards.LABEL_COLUMNS}
                    images.append({**row, "label": label, "at": (index, i)})
            self._plan = (images, pair_breasts(images))
        return self._plan

    def _label_columns(self, shard: dict, columns: list[str]):
        """Some columns of a shard, read from storage with Parquet's column projection:
        planning needs no pixels, so a search's driver fetches no shard whole."""
        fs, path = storage.filesystem(shard_url(self.dataset, shard))
        with fs.open(path, "rb") as f:
            return shards.decode(f, columns=columns)

    def _all_shards(self) -> list[dict]:
        return [shard for entry in self.entries for shard in entry["shards"]]

    @property
    def pairs(self) -> list[Pair]:
        """Every pair of the stream's splits and patients (all ranks and workers)."""
        return self._planned()[1]

    @property
    def single_view_breasts(self) -> int:
        """Breasts with one view only (fed twice)."""
        return len({p.breast for p in self.pairs if p.single})

    @property
    def breasts(self) -> int:
        return len({p.breast for p in self.pairs})

    def __len__(self) -> int:
        return len(self.pairs)

    def image_rows(self, columns: Sequence[str]) -> list[dict]:
        """``columns`` of every image the pairs use, with its ``breast`` and own ``label``,
        in breast order (to give each image its breast's prediction)."""
        images = self._planned()[0]
        used = {p.breast for p in self.pairs}
        rows = [
            {**{c: r[c] for c in columns}, "label": r["label"], "breast": breast_key(r)}
            for r in images
            if breast_key(r) in used
        ]
        return sorted(rows, key=lambda r: (r["breast"], r["image_id"]))

    def context(self, columns: Sequence[str]) -> list[dict]:
        """``columns`` of every pair (its breast's context: ``image_id`` is the breast,
        ``view`` "CC+MLO", "CC" or "MLO") in the order an unshuffled stream in one process
        yields the pairs; reads no image."""
        if self.shuffle:
            raise ValueError(
                "context() follows the unshuffled order: make a stream without shuffle"
            )
        order = [index for index, _ in self._emission(self._all_order(), self._mine())]
        return [
            {**{c: self.pairs[i].row[c] for c in columns}, "label": self.pairs[i].label}
            for i in order
        ]

    # -- streaming --
    def _all_order(self) -> list[int]:
        count = len(self._all_shards())
        if not self.shuffle:
            return list(range(count))
        return list(np.random.default_rng([self.seed, self.epoch]).permutation(count))

    def _mine(self) -> list[int]:
        """Indices of the pairs this rank and DataLoader worker yields (whole breasts)."""
        worker = get_worker_info()
        workers, wid = (worker.num_workers, worker.id) if worker else (1, 0)
        slots, slot = self.world_size * workers, self.rank * workers + wid
        return [
            i
            for i, p in enumerate(self.pairs)
            if slots == 1 or zlib.crc32(p.breast.encode()) % slots == slot
        ]

    def _emission(self, order: list[int], mine: list[int]):
        """(pair index, shard index) in the order pairs complete when the shards are read
        in ``order``: a pair completes at the shard holding the later of its images."""
        position = {shard: step for step, shard in enumerate(order)}
        done_at = defaultdict(list)
        for i in mine:
            pair = self.pairs[i]
            last = max(pair.cc, pair.mlo, key=lambda at: position[at[0]])
            done_at[last[0]].append(i)
        for shard in order:
            for i in done_at.get(shard, ()):
                yield i, shard

    def _rows(self) -> Iterator[tuple[np.ndarray, int]]:
        if self._remote():  # pixels come through the node-local cache, as TileStream's
            self.cache = self.cache or ShardCache()
        order, mine = self._all_order(), self._mine()
        needed: dict[int, set[int]] = defaultdict(set)  # shard -> rows of my pairs in it
        uses: dict[tuple[int, int], int] = defaultdict(int)  # image -> my pairs still to emit
        for i in mine:
            pair = self.pairs[i]
            for at in {pair.cc, pair.mlo}:
                needed[at[0]].add(at[1])
                uses[at] += 1
        completes = defaultdict(list)
        for i, shard in self._emission(order, mine):
            completes[shard].append(i)
        listed = self._all_shards()
        held: dict[tuple[int, int], np.ndarray] = {}
        for shard in order:
            if shard not in needed:
                continue
            table = self._read(listed[shard], ["image", "height", "width"])
            tiles = shards.images(table)
            for row in needed[shard]:
                held[(shard, row)] = tiles[row].copy()  # a copy frees the shard's buffer
            del table, tiles
            for i in completes.get(shard, ()):
                pair = self.pairs[i]
                yield np.stack([held[pair.cc], held[pair.mlo]]), pair.label
                for at in {pair.cc, pair.mlo}:
                    uses[at] -= 1
                    if not uses[at]:
                        del held[at]

    def _sample(self, views: np.ndarray, label: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.augment is not None:
            views = np.stack([np.ascontiguousarray(self.augment(image=v)["image"]) for v in views])
        return torch.from_numpy(views), torch.tensor(label)


def per_breast_probabilities(
    rows: Sequence[dict], probabilities: np.ndarray
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Pair predictions merged per breast (``rows`` from :meth:`PairStream.context`, whose
    ``image_id`` is the breast) or image predictions with their breast as ``image_id``:
    (breasts sorted, their worst labels, their mean probabilities)."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        groups[row["image_id"]].append(i)
    breasts = sorted(groups)
    labels = np.array([max(rows[i]["label"] for i in groups[b]) for b in breasts], dtype=int)
    merged = np.array([np.asarray(probabilities)[groups[b]].mean(axis=0) for b in breasts])
    return breasts, labels, merged

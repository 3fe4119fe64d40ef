"""The trial-side loader at 224 px with augmentation, measured in one run, one CPU core.

Compares, in tiles per second on one core (one process, one thread, DataLoader without
workers):

- local: shards on the local disk, shuffled, augmented (albumentations);
- s3 cold: the same shards on a real S3-protocol server on loopback (moto), first epoch
  with an empty node cache;
- s3 warm: later epochs, read through the node cache;
- naive: the per-sample path of the published pipelines: decode the full-size DICOM and its
  mask, crop around the ROI, resize and augment, for every sample;

and the loader's peak resident memory on the dataset and on a 10x larger one (the same
shards listed ten times), each in a fresh process.

    python benchmarks/loader.py [--epochs 3] [--naive-samples 24]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

SIZE = 224


def _single_core() -> None:
    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def _stream(dataset: str, cache=None):
    from tuner.data.stream import TileStream, default_augment, load_manifest
    from tuner.data.tasks import TASKS

    return TileStream(
        dataset,
        load_manifest(dataset),
        view="roi",
        size=SIZE,
        split="train",
        task=TASKS["lesion_vs_tissue"],  # every tile, lesion and tissue
        shuffle=True,
        augment=default_augment(),
        cache=cache,
    )


def tiles_per_second(stream, epoch: int) -> tuple[float, int]:
    from torch.utils.data import DataLoader

    stream.set_epoch(epoch)
    count, started = 0, time.perf_counter()
    for tiles, _ in DataLoader(stream, batch_size=64):
        count += len(tiles)
    return count / (time.perf_counter() - started), count


class NaiveDataset:
    """Every sample from the DICOM files, as published pipelines did."""

    def __init__(self, source: str, limit: int):
        from tuner.data.cbis_ddsm import CbisDdsmSource

        images, _, _ = CbisDdsmSource(source).images(val_fraction=0.0, test_fraction=0.0, seed=0)
        self.items = [(image.url, f.roi) for image in images for f in image.findings][:limit]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        import numpy as np

        from tuner.data.cbis_ddsm import CbisDdsmSource
        from tuner.data.preprocess import cut, roi_boxes, to_uint8
        from tuner.data.stream import default_augment

        url, roi = self.items[index]
        pixels = to_uint8(CbisDdsmSource.load_image(url))
        mask, _ = CbisDdsmSource.load_mask(roi, pixels.shape)
        (box,) = roi_boxes(mask, context_px=598, variants=1, rng=np.random.default_rng(index))
        tile = cut(pixels, box, (SIZE,))[SIZE]
        return default_augment()(image=tile)["image"]


def peak_rss_mb(dataset: str, copies: int, work: Path) -> float:
    """Peak resident memory of a fresh process reading one epoch of ``copies`` x the data."""
    listed = work / f"rss-{copies}x"
    shutil.rmtree(listed, ignore_errors=True)
    listed.mkdir(parents=True)
    manifest = json.loads((Path(dataset) / "manifest.json").read_text())
    for key, kind in manifest["tiles"].items():
        (listed / key).symlink_to(Path(dataset).resolve() / key)
        for entry in kind["splits"].values():
            entry["shards"] = entry["shards"] * copies
            entry["rows"] *= copies
            for combination in entry["counts"]:
                combination["rows"] *= copies
    (listed / "manifest.json").write_text(json.dumps(manifest))
    child = subprocess.run(
        [sys.executable, __file__, "--rss", str(listed)], capture_output=True, text=True, check=True
    )
    return float(child.stdout.strip().splitlines()[-1])


def _peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: Linux carries ru_maxrss over
    from the (large) parent across fork and exec, VmHWM starts afresh with the new program."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--naive-samples", type=int, default=24)
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--rss", help=argparse.SUPPRESS)
    args = parser.parse_args()
    _single_core()
    if args.rss:
        tiles_per_second(_stream(args.rss), 0)
        print(_peak_rss_mb())
        return

    import fsspec
    from _datasets import WORK, full_size_source, tile_dataset

    from tuner.data.cache import ShardCache

    dataset = str(tile_dataset(args.patients, SIZE))
    naive_source = str(full_size_source(16))

    local = [tiles_per_second(_stream(dataset), e) for e in range(args.epochs + 1)][1:]
    local_rate = statistics.median(r for r, _ in local)
    tiles = local[0][1]

    port = _free_port()
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "benchmark",
        "AWS_SECRET_ACCESS_KEY": "benchmark",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    os.environ.update(env)
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        fs = fsspec.filesystem("s3")
        fs.mkdir("bench")
        fs.put(dataset, "bench/tiles", recursive=True)
        cache_dir = WORK / "cache"
        shutil.rmtree(cache_dir, ignore_errors=True)
        remote = _stream("s3://bench/tiles", cache=ShardCache(cache_dir))
        cold_rate, _ = tiles_per_second(remote, 0)
        warm = [tiles_per_second(remote, e)[0] for e in range(1, args.epochs + 1)]
        warm_rate = statistics.median(warm)
    finally:
        server.terminate()
        server.wait()

    naive = NaiveDataset(naive_source, args.naive_samples)
    started = time.perf_counter()
    for i in range(len(naive)):
        naive[i]
    naive_rate = len(naive) / (time.perf_counter() - started)

    rss_1 = peak_rss_mb(dataset, 1, WORK)
    rss_10 = peak_rss_mb(dataset, 10, WORK)

    print(f"loader, {SIZE} px, augmentation on, one core; {tiles} training tiles per epoch")
    print(f"{'path':10s} {'tiles/s':>9s} {'x local':>8s}")
    for name, rate in (
        ("local", local_rate),
        ("s3 warm", warm_rate),
        ("s3 cold", cold_rate),
        ("naive", naive_rate),
    ):
        print(f"{name:10s} {rate:9.1f} {rate / local_rate:8.3f}")
    checks = [
        (f"local >= 1000 tiles/s per core: {local_rate:.0f}", local_rate >= 1000),
        (
            f"s3 through the node cache >= 0.9x local: {warm_rate / local_rate:.2f}x",
            warm_rate >= 0.9 * local_rate,
        ),
        (
            f"s3 cold first epoch >= 0.5x local: {cold_rate / local_rate:.2f}x",
            cold_rate >= 0.5 * local_rate,
        ),
        (
            f"local >= 100x the naive per-sample path: {local_rate / naive_rate:.0f}x",
            local_rate >= 100 * naive_rate,
        ),
        (
            f"peak memory, 10x data within 10% of 1x: {rss_1:.0f} MB -> {rss_10:.0f} MB "
            f"({rss_10 / rss_1 - 1:+.1%})",
            rss_10 <= 1.1 * rss_1,
        ),
    ]
    for text, ok in checks:
        print(f"  {'met' if ok else 'NOT met'}: {text}")


if __name__ == "__main__":
    main()

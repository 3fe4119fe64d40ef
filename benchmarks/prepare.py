"""prepare on full-size synthetic DICOMs (~5000 x 3000, 16-bit): images/s per core and the
speed-up from 1 to 2 cores, measured in one run.

Each measurement runs in its own process with its own Ray (``num_cpus`` 1, then 2) and times
``run_prepare`` into a fresh folder: decoding, windowing, breast crop, ROI and tissue tiles
at 224 and 299 px, whole images at 512 and 1024 px, Parquet encoding and writing. Ray's
start is not timed; its workers' start is.

    python benchmarks/prepare.py [--patients 160] [--repeats 1]
    python benchmarks/prepare.py --editions [--patients 40]

``--editions`` instead compares the two CBIS-DDSM editions of the same synthetic images on
one core: 16-bit DICOM (csv layout) against the 8-bit JPEG edition, images/s and the ratio.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

PARAMS = dict(views=("roi", "whole"), sizes=(224, 299), whole_sizes=(512, 1024))


def measure(source: str, out: str, cpus: int) -> dict:
    import ray

    from tuner.data.prepare import PrepareParams, plan_prepare, run_prepare

    ray.init(address="local", num_cpus=cpus, include_dashboard=False, logging_level="ERROR")
    shutil.rmtree(out, ignore_errors=True)
    plan = plan_prepare(source, out, PrepareParams(**PARAMS))
    started = time.perf_counter()
    manifest = run_prepare(plan)
    seconds = time.perf_counter() - started
    images = sum(len(c["images"]) for c in plan.chunks)
    tiles = sum(e["rows"] for kind in manifest["tiles"].values() for e in kind["splits"].values())
    ray.shutdown()
    shutil.rmtree(out, ignore_errors=True)
    return {"cpus": cpus, "seconds": seconds, "images": images, "tiles": tiles}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=160)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--editions", action="store_true", help="DICOM vs JPEG edition, 1 core")
    parser.add_argument(
        "--measure", nargs=3, metavar=("SOURCE", "OUT", "CPUS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.measure:
        source, out, cpus = args.measure
        print(json.dumps(measure(source, out, int(cpus))))
        return

    from _datasets import WORK, full_size_source

    if args.editions:
        compare_editions(args.patients, args.repeats, WORK, full_size_source)
        return
    source = full_size_source(args.patients)
    results = {1: [], 2: []}
    for _ in range(args.repeats):
        for cpus in (1, 2):
            out = str(WORK / f"prepared-{cpus}")
            child = subprocess.run(
                [sys.executable, __file__, "--measure", str(source), out, str(cpus)],
                capture_output=True,
                text=True,
                check=True,
            )
            results[cpus].append(json.loads(child.stdout.strip().splitlines()[-1]))
    best = {cpus: min(runs, key=lambda r: r["seconds"]) for cpus, runs in results.items()}
    one, two = best[1], best[2]
    print(f"prepare: {one['images']} full-size DICOM images -> {one['tiles']} tiles and images")
    print(f"{'cores':>5s} {'seconds':>8s} {'images/s':>9s} {'images/s/core':>14s}")
    for cpus, run in best.items():
        rate = run["images"] / run["seconds"]
        print(f"{cpus:5d} {run['seconds']:8.1f} {rate:9.2f} {rate / cpus:14.2f}")
    speedup = one["seconds"] / two["seconds"]
    verdict = "met" if speedup >= 1.7 else "NOT met"
    print(f"speed-up 1 -> 2 cores: {speedup:.2f}x (goal >= 1.7x: {verdict})")


def _run(source, out: str, cpus: int) -> dict:
    child = subprocess.run(
        [sys.executable, __file__, "--measure", str(source), out, str(cpus)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(child.stdout.strip().splitlines()[-1])


def compare_editions(patients: int, repeats: int, work: Path, full_size_source) -> None:
    sources = {
        layout: full_size_source(patients, layout=layout) for layout in ("csv", "jpeg-edition")
    }
    best = {}
    for layout, source in sources.items():
        runs = [_run(source, str(work / f"prepared-{layout}"), 1) for _ in range(repeats)]
        best[layout] = min(runs, key=lambda r: r["seconds"])
    print(f"prepare on 1 core, the same {best['csv']['images']} full-size images per edition")
    print(f"{'edition':>13s} {'seconds':>8s} {'images/s':>9s} {'tiles':>6s}")
    for layout, run in best.items():
        name = "DICOM 16-bit" if layout == "csv" else "JPEG 8-bit"
        rate = run["images"] / run["seconds"]
        print(f"{name:>13s} {run['seconds']:8.1f} {rate:9.2f} {run['tiles']:6d}")
    ratio = best["csv"]["seconds"] / best["jpeg-edition"]["seconds"]
    print(f"JPEG edition / DICOM edition speed: {ratio:.2f}x")


if __name__ == "__main__":
    main()

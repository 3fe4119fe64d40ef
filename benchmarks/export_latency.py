"""CPU inference latency: the PyTorch checkpoint vs its ONNX Runtime and TorchScript bundles.

For each backbone and input size, a randomly initialised model (latency does not depend on
the weights) is saved as a checkpoint, exported by ``tuner.export`` to both formats, and
timed on the same tiles: one image at a time (what ``predict`` does) and in batches of 8.
Each cell is the median of repeated runs after warm-up; the ratios are within this run.

    python benchmarks/export_latency.py [--backbones resnet50,mobilenet_v2] [--sizes 224,512]
        [--threads N] [--seconds 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

import numpy as np
import torch

from tuner.models.classifier import ModelArgs, build_model, class_probabilities
from tuner.results.bundle import export_model, open_bundle
from tuner.training.checkpoint import load_checkpoint, save_checkpoint


def _time(run, budget_s: float, minimum: int = 5) -> float:
    """Median seconds of ``run()`` over at least ``minimum`` calls or ``budget_s``."""
    run()  # warm-up (first-call allocations, JIT profiling runs)
    run()
    times, started = [], time.perf_counter()
    while len(times) < minimum or time.perf_counter() - started < budget_s:
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
        if len(times) >= 200:
            break
    return statistics.median(times)


def _checkpoint(folder: str, backbone: str, size: int) -> str:
    model = build_model(ModelArgs(backbone, 2))
    meta = {
        "config": {"view": "roi", "input_size": size, "enhance": "none", "backbone": backbone},
        "task": {"name": "benign_vs_malignant", "classes": ["benign", "malignant"]},
        "dataset": {"params": {"context_px": 598}},
        "metrics": {},
    }
    path = os.path.join(folder, f"{backbone}-{size}")
    save_checkpoint(path, model=model, optimizer=None, meta=meta)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default="resnet50,mobilenet_v2")
    parser.add_argument("--sizes", default="224,512")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--seconds", type=float, default=3.0, help="timing budget per cell")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"{platform.machine()}, {os.cpu_count()} cores, {args.threads} threads; torch "
        f"{torch.__version__}"
    )
    import onnxruntime

    print(f"onnxruntime {onnxruntime.__version__}")
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for backbone in args.backbones.split(","):
            for size in (int(s) for s in args.sizes.split(",")):
                checkpoint = _checkpoint(work, backbone, size)
                model, _, _ = load_checkpoint(checkpoint)
                bundles = {}
                for fmt in ("onnx", "torchscript"):
                    out = os.path.join(work, f"{backbone}-{size}-{fmt}")
                    export_model(checkpoint, out, fmt=fmt)
                    bundles[fmt] = open_bundle(out)
                rng = np.random.default_rng(0)
                tiles = rng.integers(0, 256, (8, size, size), dtype=np.uint8)
                for batch in (1, 8):
                    x = tiles[:batch]

                    @torch.no_grad()
                    def pytorch(x=x, model=model):
                        class_probabilities(model, torch.from_numpy(x)[:, None])

                    cells = {"pytorch": _time(pytorch, args.seconds)}
                    for fmt, bundle in bundles.items():
                        cells[fmt] = _time(lambda b=bundle, x=x: b.probabilities(x), args.seconds)
                    diff = max(
                        float(np.abs(b.probabilities(x) - _reference(model, x)).max())
                        for b in bundles.values()
                    )
                    ms = {k: 1000 * v / batch for k, v in cells.items()}
                    rows.append((backbone, size, batch, ms, diff))
                    print(
                        f"{backbone:>13} {size:>4} px batch {batch}: PyTorch {ms['pytorch']:7.1f} "
                        f"ms/image, ONNX Runtime {ms['onnx']:7.1f} "
                        f"({ms['pytorch'] / ms['onnx']:.2f}x), TorchScript "
                        f"{ms['torchscript']:7.1f} ({ms['pytorch'] / ms['torchscript']:.2f}x); "
                        f"max |dp| {diff:.1e}",
                        flush=True,
                    )
    print()
    print(
        "| backbone | px | batch | PyTorch ms/img | ONNX Runtime ms/img (speed-up) | "
        "TorchScript ms/img (speed-up) | max abs diff |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for backbone, size, batch, ms, diff in rows:
        print(
            f"| {backbone} | {size} | {batch} | {ms['pytorch']:.1f} | {ms['onnx']:.1f} "
            f"({ms['pytorch'] / ms['onnx']:.2f}x) | {ms['torchscript']:.1f} "
            f"({ms['pytorch'] / ms['torchscript']:.2f}x) | {diff:.1e} |"
        )


@torch.no_grad()
def _reference(model, x):
    return class_probabilities(model, torch.from_numpy(x)[:, None]).numpy()


if __name__ == "__main__":
    main()

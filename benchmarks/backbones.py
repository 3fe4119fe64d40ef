"""Training throughput of the registered backbones, as ratios measured in one run.

Times forward + backward + Adam steps on random uint8 tiles (batch 32, one thread per trial as
in the quick preset) and prints images/s and the ratio to mobilenet_v2, the published best
backbone. Used to size the CPU presets; absolute numbers drift on shared machines, ratios much
less.

    python benchmarks/backbones.py [--size 64] [--threads 1] [--steps 5] [--backbones a,b]
"""

from __future__ import annotations

import argparse
import time

import torch

from tuner.models import ModelArgs, build_model, get_spec, list_backbones


def images_per_second(name: str, size: int, steps: int, batch: int = 32) -> float:
    model = build_model(ModelArgs(name, num_classes=2)).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    tiles = torch.randint(0, 256, (batch, 1, size, size), dtype=torch.uint8)
    labels = torch.randint(0, 2, (batch,))
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(tiles), labels).backward()
        optimizer.step()

    step()  # warm-up: allocations, first-call dispatch
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--backbones", default=None, help="comma-separated (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = args.backbones.split(",") if args.backbones else list_backbones()
    if "mobilenet_v2" not in names:
        names.append("mobilenet_v2")
    size = {n: max(args.size, get_spec(n).min_size) for n in names}
    rates = {n: images_per_second(n, size[n], args.steps) for n in names}
    reference = rates["mobilenet_v2"]
    print(f"training throughput, batch 32, {args.threads} thread(s), torch {torch.__version__}")
    print(f"{'backbone':20s} {'size':>5s} {'images/s':>9s} {'x mobilenet_v2':>15s}")
    for name in sorted(names, key=rates.get, reverse=True):
        print(f"{name:20s} {size[name]:5d} {rates[name]:9.1f} {rates[name] / reference:15.2f}")


if __name__ == "__main__":
    main()

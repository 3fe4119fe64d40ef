"""Search efficiency on a surrogate of the published divide-and-conquer space (a simulation).

The published study (../shared/DOMAIN.md) hand-ran ~22 combinations of backbone, class
weight, dropout, input size, enhancement, transfer degree and learning rate at 1-9 GPU-hours
each. This benchmark asks how much compute each way of searching that space needs to find a
configuration within 0.5 accuracy points of the space's best:

- searches with each Optuna sampler compared (``--samplers``, by default TPE, GP, CMA-ES and
  random) run through mammotune's own machinery (``run_search``: Ray Tune, OptunaSearch with
  the space compiled from ``search_spaces/divide_and_conquer.yaml``, the preset's ASHA
  scheduler for every sampler, a concurrency limit of 4) with a trainable that *reports
  simulated learning curves* instead of training. The sampler is set as a space file sets it
  (``space.sampler``), with the preset's ``n_startup_trials`` for every sampler that takes it
  (TPE, GP, CMA-ES); random takes no options. The machine time each search took is recorded
  too: it is the sampler's own cost on the driver (GP fits a model per trial), since the
  simulated trials cost next to nothing;
- the full grid (every configuration trained to the end, in a random order) and the
  published manual sequence are computed from the same surrogate without Ray: neither adapts
  to results, so there is nothing for the machinery to decide.

The surrogate: final accuracy = the published baseline (VGG19, 512 px, dropout 0.2, ImageNet
backbone: 61.80%) plus the published deltas (MobileNetV2 +4.66, DenseNet121 above VGG19,
ResNet50 and InceptionV3 below; balanced class weights +0.62, +50% minority -1.41; 224 px
-2.03 for VGG19 and -4.52 for MobileNetV2; 1024 px overfits without enhancement; MobileNetV2
runs out of memory at 1024 and above; transfer (c) best, (b) 5.28 above random, (a) poor),
smooth penalties for dropout and learning rate away from their best values, and a fixed
+-0.25 point offset per discrete combination. Learning curves approach the final accuracy
exponentially (faster with pretrained weights). Cost per epoch in simulated GPU-hours scales
with the published runtimes: VGG19 at 512 px 3h50m for 30 epochs, MobileNetV2 0.72x of that,
input size by pixels (with the stem's halving above 512), 1h15m-8h49m per full trial as
published. These are modelling choices, not measurements: the ratios say how the search
strategies compare on a space shaped like the published one, not what a real search costs.

Run: python benchmarks/search_efficiency.py [--seeds 20] [--samplers tpe,gp,cmaes,random]
         [--max-trials 250] [--out results.json]
     python benchmarks/search_efficiency.py --summarize results.json

With ``--out``, each search's numbers are written to the file as soon as it ends, and a run
given an existing file runs only the (sampler, seed) searches it does not hold yet: an
interrupted run continues where it stopped.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Simulated trials need no per-trial CSV/JSON/TensorBoard files.
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")

REPO = Path(__file__).resolve().parents[1]
SPACE_FILE = REPO / "search_spaces" / "divide_and_conquer.yaml"

BASELINE = 61.80
BACKBONE = {
    "vgg19": 0.0,
    "resnet50": -1.2,
    "inception_v3": -0.8,
    "densenet121": 2.1,
    "mobilenet_v2": 4.66,
}
CLASS_WEIGHT = {"none": 0.0, "balanced": 0.62, "minority_x1.5": -1.41}
TRANSFER = {"imagenet": 0.0, "imagenet_mias_head": -0.72, "mias_all": -3.5, "random": -6.0}
# relative cost per epoch
BACKBONE_COST = {
    "vgg19": 1.0,
    "resnet50": 0.8,
    "inception_v3": 0.85,
    "densenet121": 0.9,
    "mobilenet_v2": 0.72,
}
SIZE_COST = {224: 0.3, 512: 1.0, 1024: 1.6, 2048: 2.3}
EPOCH_HOURS = (3 + 50 / 60) / 30  # VGG19, 512 px: 3h50m for 30 epochs
OOM_HOURS = 0.05  # a trial that runs out of GPU memory at its first step


def size_delta(backbone: str, size: int, enhance: str) -> float:
    at_224 = {"vgg19": -2.03, "mobilenet_v2": -4.52}.get(backbone, -3.0)
    plain = {224: at_224, 512: 0.0, 1024: -2.5, 2048: -4.0}[size]
    # Gaussian + histogram equalisation helps at large sizes, costs a little at small ones.
    enhanced = {224: -0.3, 512: -0.2, 1024: 3.3, 2048: 3.5}[size]
    return plain + (enhanced if enhance == "equalize" else 0.0)


def offset(*key) -> float:
    digest = hashlib.sha256(repr(key).encode()).digest()
    return (int.from_bytes(digest[:4], "big") / 2**32 - 0.5) * 0.5  # +-0.25


def final_accuracy(config: dict) -> float | None:
    """Test accuracy (%) after full training; None when the trial runs out of memory."""
    backbone, size = config["backbone"], int(config["input_size"])
    if backbone == "mobilenet_v2" and size >= 1024:
        return None
    accuracy = (
        BASELINE
        + BACKBONE[backbone]
        + CLASS_WEIGHT[config["class_weight"]]
        + size_delta(backbone, size, config["enhance"])
        + TRANSFER[config["transfer"]]
        - 4.0 * (config["dropout"] - 0.25) ** 2
        - 0.8 * (math.log10(config["lr"]) + 3.5) ** 2
    )
    if config["transfer"] != "random":
        accuracy -= 0.05 * (config.get("head_epochs", 3) - 3) ** 2
        accuracy -= 0.5 * (math.log10(config.get("finetune_lr_factor", 0.1)) + 1) ** 2
    key = (backbone, config["class_weight"], size, config["enhance"], config["transfer"])
    return accuracy + offset(*key)


def curve(config: dict, epoch: int) -> float:
    """Validation accuracy after ``epoch`` epochs (1-based)."""
    final = final_accuracy(config)
    tau = 6.0 if config["transfer"] == "random" else 2.5
    return final - (final - 50.0) * math.exp(-epoch / tau)


def epoch_hours(config: dict) -> float:
    return EPOCH_HOURS * BACKBONE_COST[config["backbone"]] * SIZE_COST[int(config["input_size"])]


def simulated_trial(config: dict) -> None:
    """The Ray Tune trainable: reports the surrogate's curve, one result per epoch."""
    from ray import tune

    if final_accuracy(config) is None:
        # As a real trial would: it errors, Tune records it, Optuna marks it failed.
        raise MemoryError("CUDA out of memory (simulated: MobileNetV2 at 1024 px and above)")
    for epoch in range(1, int(config["epochs"]) + 1):
        tune.report(
            {
                "val_accuracy": curve(config, epoch),
                "epoch": epoch,
                "gpu_hours": epoch_hours(config),
            }
        )


# ---------------------------------------------------------------------------- the space
GRID = {
    "backbone": list(BACKBONE),
    "class_weight": list(CLASS_WEIGHT),
    "dropout": [0.0, 0.25, 0.5],
    "input_size": [224, 512, 1024, 2048],
    "enhance": ["none", "equalize"],
    "transfer": list(TRANSFER),
    "lr": [1e-5, 1e-4, 1e-3],
}
GRID_FIXED = {"head_epochs": 3, "finetune_lr_factor": 0.1, "epochs": 30}


def best_accuracy() -> float:
    """The space's best: every discrete combination at its best dropout, learning rate and
    two-phase settings (the continuous optimum of the surrogate)."""
    best = -math.inf
    for combo in itertools.product(
        GRID["backbone"],
        GRID["class_weight"],
        GRID["input_size"],
        GRID["enhance"],
        GRID["transfer"],
    ):
        names = ("backbone", "class_weight", "input_size", "enhance", "transfer")
        config = dict(zip(names, combo, strict=True))
        value = final_accuracy({**config, "dropout": 0.25, "lr": 10**-3.5, **GRID_FIXED})
        if value is not None:
            best = max(best, value)
    return best


# The published hand-run sequence (DOMAIN.md): baseline, backbones, class weights, sizes,
# enhancement, transfer degrees, dropout; each trained to the end.
_BASE = dict(
    backbone="vgg19",
    class_weight="none",
    dropout=0.2,
    input_size=512,
    enhance="none",
    transfer="imagenet",
    lr=1e-3,
    **GRID_FIXED,
)
MANUAL = [
    {},
    {"backbone": "resnet50"},
    {"backbone": "inception_v3"},
    {"backbone": "densenet121"},
    {"backbone": "mobilenet_v2"},
    {"backbone": "mobilenet_v2", "class_weight": "balanced"},
    {"backbone": "mobilenet_v2", "class_weight": "minority_x1.5"},
    {"input_size": 224},
    {"backbone": "mobilenet_v2", "input_size": 224},
    {"input_size": 1024},
    {"backbone": "mobilenet_v2", "input_size": 1024},
    {"input_size": 1024, "enhance": "equalize"},
    {"input_size": 2048, "enhance": "equalize"},
    {"backbone": "mobilenet_v2", "transfer": "mias_all"},
    {"backbone": "mobilenet_v2", "transfer": "imagenet_mias_head"},
    {"backbone": "mobilenet_v2", "transfer": "random"},
    {"transfer": "imagenet_mias_head"},
    {"transfer": "random"},
    {"backbone": "mobilenet_v2", "class_weight": "balanced", "dropout": 0.5},
    {"backbone": "mobilenet_v2", "class_weight": "balanced", "dropout": 0.0},
    {"backbone": "densenet121", "class_weight": "balanced"},
    {"backbone": "mobilenet_v2", "class_weight": "balanced", "enhance": "equalize"},
]


def full_cost(config: dict) -> float:
    if final_accuracy(config) is None:
        return OOM_HOURS
    return epoch_hours(config) * config["epochs"]


def sequence_cost(configs, target: float) -> float | None:
    """Compute spent, in order, until a configuration reaches ``target`` (None: never)."""
    spent = 0.0
    for config in configs:
        spent += full_cost(config)
        accuracy = final_accuracy(config)
        if accuracy is not None and accuracy >= target:
            return spent
    return None


def grid_cost(target: float, seed: int) -> float:
    import random

    configs = [
        {**dict(zip(GRID, values, strict=True)), **GRID_FIXED}
        for values in itertools.product(*GRID.values())
    ]
    random.Random(seed).shuffle(configs)
    return sequence_cost(configs, target)


# --------------------------------------------------------------- the machinery, for real
SAMPLERS = ("tpe", "gp", "cmaes", "random")
LABELS = {"tpe": "TPE", "gp": "GP", "cmaes": "CMA-ES", "random": "random", "qmc": "QMC"}


def sampler_section(name: str, preset):
    """The sampler section a search of ``name`` runs with: the preset's number of random
    startup trials for every sampler that takes one (tpe, gp, cmaes), the library's defaults
    for everything else (random has no options)."""
    from tuner.config import Strategy
    from tuner.errors import UserError, unknown_choice
    from tuner.search.strategies import SAMPLERS as REGISTERED

    if name not in REGISTERED:
        raise UserError(unknown_choice("sampler", name, REGISTERED))
    options = {}
    startup = preset.sampler.options.get("n_startup_trials")
    if startup is not None and "n_startup_trials" in REGISTERED[name].options.model_fields:
        options["n_startup_trials"] = startup
    return Strategy(type=name, **options)


class Budget:
    """Tune callback + stopper: adds up the simulated GPU-hours of every reported epoch (and
    of out-of-memory trials) and stops the search once a result reaches the target."""

    def __init__(self, target: float):
        self.target, self.hours, self.reached, self.trials = target, 0.0, None, 0


def run_machinery(preset, sampler, seed: int, target: float, max_trials: int, root: str) -> dict:
    """One search of the preset with ``sampler`` (a ``Strategy``) and the preset's scheduler."""
    from ray.tune import Callback, Stopper

    from tuner.search.runner import SearchPlan, _max_epochs, run_search

    budget = Budget(target)

    class Account(Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            if budget.reached is None:
                budget.hours += result["gpu_hours"]
                if result["val_accuracy"] >= target:
                    budget.reached = budget.hours

        def on_trial_start(self, iteration, trials, trial, **info):
            budget.trials += 1

        def on_trial_complete(self, iteration, trials, trial, **info):
            if not trial.last_result.get("epoch") and budget.reached is None:
                budget.hours += OOM_HOURS

    class StopWhenReached(Stopper):
        def __call__(self, trial_id, result):
            return False

        def stop_all(self):
            return budget.reached is not None

    space = preset.model_copy(
        update={
            "trials": max_trials,
            "seed": seed,
            "sampler": sampler,  # the scheduler stays the preset's (ASHA) for every sampler
            "metric": "val_accuracy",  # the published study reports accuracy
            "resources": preset.resources.model_copy(update={"cpu": 0.5, "gpu": 0.0}),
        }
    )
    name = f"{sampler.type}-{seed}"
    experiment, study = f"{root}/{name}", f"{root}/{name}.db"
    plan = SearchPlan(
        space=space,
        space_file=str(SPACE_FILE),
        data="",
        dataset_id="surrogate",
        experiment=experiment,
        study_storage=f"sqlite:///{study}",
        max_epochs=_max_epochs(space),
        constants={},
    )
    started = time.perf_counter()
    try:
        run_search(
            plan,
            verbose=0,
            max_failures=0,
            trainable=simulated_trial,
            stop=StopWhenReached(),
            callbacks=[Account()],
            reuse_actors=True,  # simulated trials hold no state: skip a process start per trial
        )
        seconds = time.perf_counter() - started
    finally:
        # A long run holds dozens of searches: free the tmpfs as each one ends.
        shutil.rmtree(experiment, ignore_errors=True)
        Path(study).unlink(missing_ok=True)
    return {
        "hours": budget.reached,
        "spent": budget.hours,
        "trials": budget.trials,
        "seconds": seconds,
    }


# ------------------------------------------------------------------ the run and its file
def machine() -> dict:
    from importlib.metadata import version

    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory = next(
        int(line.split()[1]) / 2**20
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    return {
        "cpu": f"{os.cpu_count()}-core {platform.machine()}, {model}",
        "memory_gib": round(memory, 1),
        **{package: version(package) for package in ("torch", "ray", "optuna")},
    }


def _save(path: Path, data: dict) -> None:
    """Write ``data`` whole or not at all (a run killed mid-write keeps the previous file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=1))
    os.replace(partial, path)


def _load(path: Path | None, fresh: dict) -> dict:
    """The results so far in ``path``, checked to come from the same settings (so that a
    resumed run adds comparable searches), or ``fresh``."""
    if path is None or not path.exists():
        return fresh
    data = json.loads(path.read_text())
    for key in ("format", "best", "max_trials", "scheduler", "max_concurrent"):
        if data.get(key) != fresh[key]:
            raise SystemExit(
                f"{path}: {key} is {data.get(key)!r} there, {fresh[key]!r} now; "
                "give another --out to start afresh"
            )
    for name, section in fresh["samplers"].items():
        if data["samplers"].setdefault(name, section) != section:
            raise SystemExit(
                f"{path}: sampler {name} ran as {data['samplers'][name]} there, {section} now; "
                "give another --out to start afresh"
            )
        data["runs"].setdefault(name, {})
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument(
        "--samplers",
        default=",".join(SAMPLERS),
        help="Optuna samplers to compare, comma-separated (default: %(default)s)",
    )
    parser.add_argument("--max-trials", type=int, default=250, help="per search")
    parser.add_argument(
        "--out",
        default=None,
        help="JSON of the per-seed numbers, written after every search; a run given an "
        "existing file skips the (sampler, seed) searches it holds and adds the others",
    )
    parser.add_argument("--summarize", metavar="JSON", help="print the table of an --out file")
    args = parser.parse_args()
    if args.summarize:
        _summarize_file(args.summarize)
        return

    from tuner.config import load_space

    preset = load_space(SPACE_FILE)
    names = [name.strip() for name in args.samplers.split(",") if name.strip()]
    sections = {name: sampler_section(name, preset) for name in names}
    best = best_accuracy()
    target = best - 0.5
    manual = sequence_cost([{**_BASE, **change} for change in MANUAL], target)
    manual_best = max(a for a in (final_accuracy({**_BASE, **c}) for c in MANUAL) if a is not None)
    print(
        f"space's best {best:.2f}% (target {target:.2f}%); published manual sequence: "
        f"best {manual_best:.2f}% in {len(MANUAL)} runs",
        flush=True,
    )
    out = Path(args.out) if args.out else None
    data = _load(
        out,
        {
            "format": 2,
            "best": best,
            "target": target,
            "manual": manual,
            "max_trials": args.max_trials,
            "scheduler": preset.scheduler.model_dump(),
            "max_concurrent": preset.max_concurrent,
            "samplers": {name: section.model_dump() for name, section in sections.items()},
            "runs": {name: {} for name in names},
            "grid": {},
            "invocations": [],
        },
    )
    invocation = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **machine()}
    invocation.update(command=" ".join(sys.argv), searches=0, wall_s=0.0)
    data["invocations"].append(invocation)
    started = time.perf_counter()
    for seed in range(args.seeds):
        data["grid"].setdefault(str(seed), {"hours": grid_cost(target, seed)})
    pending = [
        (seed, name)
        for seed in range(args.seeds)
        for name in names
        if str(seed) not in data["runs"][name]
    ]
    done = args.seeds * len(names) - len(pending)
    print(f"{len(pending)} searches to run ({done} already in {out})", flush=True)
    if pending:
        import ray

        ray.init(
            address="local", include_dashboard=False, logging_level="ERROR", log_to_driver=False
        )
    # On tmpfs where there is one: the study and experiment files see thousands of small
    # writes, which a disk would turn into fsync waits rather than search work.
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=shm) as root:
        for seed, name in pending:
            outcome = run_machinery(preset, sections[name], seed, target, args.max_trials, root)
            data["runs"][name][str(seed)] = outcome
            invocation.update(searches=invocation["searches"] + 1)
            invocation.update(wall_s=round(time.perf_counter() - started, 1))
            if out:
                _save(out, data)
            reached = "-" if outcome["hours"] is None else f"{outcome['hours']:.1f}"
            print(
                f"seed {seed:2d} {name:6s}: {reached:>7s} GPU-h to target, "
                f"{outcome['trials']:4d} trials, {outcome['spent']:.1f} GPU-h spent, "
                f"{outcome['seconds']:.0f} s",
                flush=True,
            )
    invocation.update(wall_s=round(time.perf_counter() - started, 1))
    if out:
        _save(out, data)
    summarize(data, names, args.seeds)


# ----------------------------------------------------------------------------- the table
def _median(runs: list[dict]) -> tuple[float, bool, int]:
    """Median compute to the target over seeds, whether it is only a lower bound, and how
    many searches reached the target. A search stopped by the trial cap before reaching it
    would have needed more than what it spent: replacing its unknown value by what it spent
    gives a lower bound for each seed, so the median of those is a lower bound of the
    median."""
    reached = [r["hours"] for r in runs if r["hours"] is not None]
    exact = [r["hours"] if r["hours"] is not None else math.inf for r in runs]
    if statistics.median(exact) != math.inf:
        return statistics.median(exact), False, len(reached)
    bounds = [r["hours"] if r["hours"] is not None else r["spent"] for r in runs]
    return statistics.median(bounds), True, len(reached)


def _ratio(value: float, bound: bool, tpe: float, tpe_bound: bool) -> str:
    """``value / tpe`` where either may be a lower bound of the true median."""
    if bound and tpe_bound:
        return "-"  # both unknown from below: no side of the ratio is known
    prefix = "> " if bound else "< " if tpe_bound else ""
    return f"{prefix}{value / tpe:.2f}"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def _quantile(values: list[float], q: float) -> float:
    """The q-quantile of sorted ``values`` (linear between neighbours, as numpy's default);
    infinite where a neighbour is (a search that never reached the target)."""
    position = q * (len(values) - 1)
    low, high = values[math.floor(position)], values[math.ceil(position)]
    if math.inf in (low, high):
        return math.inf
    return low + (high - low) * (position - math.floor(position))


def _quantiles(runs: list[dict]) -> str:
    """Min, quartiles and max of compute to the target ('-': beyond the searches that
    reached it, an unreached search counting as more than any reached one)."""
    values = sorted(r["hours"] if r["hours"] is not None else math.inf for r in runs)
    picks = [_quantile(values, q) for q in (0, 0.25, 0.5, 0.75, 1)]
    return " / ".join(f"{v:.1f}" if math.isfinite(v) else "-" for v in picks)


def summarize(data: dict, names: list[str] | None = None, seeds: int | None = None) -> None:
    names = names or list(data["runs"])
    seeds = seeds if seeds is not None else max(len(r) for r in data["runs"].values())

    def runs(name: str) -> list[dict]:
        found = data["runs"][name]
        return [found[str(seed)] for seed in range(seeds) if str(seed) in found]

    grid = [data["grid"][str(seed)] for seed in range(seeds) if str(seed) in data["grid"]]
    max_trials, manual = data["max_trials"], data["manual"]
    scheduler = data["scheduler"]
    asha = ", ".join(f"{k} {v}" for k, v in scheduler.items() if k != "type")
    tpe, tpe_bound, tpe_reached = _median(runs("tpe")) if runs("tpe") else (None, False, 0)
    print()
    print(
        f"| method ({scheduler['type'].upper()}: {asha}) | median simulated GPU-h to within "
        f"0.5 points | reached ({max_trials} trials max) | x TPE | machine time per search, "
        "median (all searches) |"
    )
    print("| --- | --- | --- | --- | --- |")
    medians = {}
    for name in names:
        found = runs(name)
        if not found:
            continue
        value, bound, reached = _median(found)
        medians[name] = (value, bound, reached)
        seconds = [r["seconds"] for r in found]
        options = {k: v for k, v in data["samplers"][name].items() if k != "type"}
        label = LABELS.get(name, name) + (
            f" ({', '.join(f'{k} {v}' for k, v in options.items())})" if options else ""
        )
        text = f"> {value:.1f}" if bound else f"{value:.1f}"
        ratio = "-" if tpe is None else _ratio(value, bound, tpe, tpe_bound)
        print(
            f"| {label} | {text} | {reached}/{len(found)} | {ratio} | "
            f"{_duration(statistics.median(seconds))} ({_duration(sum(seconds))}) |"
        )
    if grid:
        value, bound, reached = _median(grid)
        medians["grid"] = (value, bound, reached)
        ratio = "-" if tpe is None else _ratio(value, bound, tpe, tpe_bound)
        print(f"| full grid, random order | {value:.1f} | {reached}/{len(grid)} | {ratio} | - |")
    manual_text = "never" if manual is None else f"{manual:.1f}"
    ratio = "-" if manual is None or tpe is None else _ratio(manual, False, tpe, tpe_bound)
    print(f"| published manual sequence (22 runs, hindsight) | {manual_text} | - | {ratio} | - |")

    print()
    print("per sampler: GPU-h to the target, min / 25% / median / 75% / max ('-': not reached);")
    print("trials per search, median; machine time per trial, median")
    for name in medians:
        if name == "grid":
            continue
        found = runs(name)
        per_trial = statistics.median(r["seconds"] / max(r["trials"], 1) for r in found)
        trials = statistics.median(r["trials"] for r in found)
        print(
            f"  {LABELS.get(name, name):7s} {_quantiles(found):40s} {trials:5.0f} trials "
            f"{per_trial:6.2f} s/trial"
        )
    if tpe is None:
        return
    print()
    if "grid" in medians:
        print(f"TPE / grid: {_ratio(tpe, tpe_bound, medians['grid'][0], False)} (goal <= 0.2)")
    if "random" in medians:
        value, bound, _ = medians["random"]
        print(f"TPE / random: {_ratio(tpe, tpe_bound, value, bound)} (goal <= 0.5)")
    # The rule: a sampler replaces TPE as the default only if it needs less compute
    # (a median that is known, not a lower bound, and below TPE's) AND reaches the target in
    # more searches.
    winners = [
        name
        for name, (value, bound, reached) in medians.items()
        if name not in ("tpe", "grid")
        and not bound
        and value < tpe
        and reached > tpe_reached
        and len(runs(name)) == len(runs("tpe"))
    ]
    print(
        "beats TPE on both median GPU-h and searches reaching the target: "
        + (", ".join(LABELS.get(n, n) for n in winners) if winners else "none")
    )


def _summarize_file(path: str) -> None:
    data = json.loads(Path(path).read_text())
    if "runs" not in data:  # written before --samplers: {"tpe": [...], "random": [...]}
        data["runs"] = {
            name: dict(enumerate(data.pop(name))) for name in ("tpe", "random") if name in data
        }
        data["runs"] = {n: {str(k): v for k, v in r.items()} for n, r in data["runs"].items()}
        data["grid"] = {str(seed): run for seed, run in enumerate(data["grid"])}
        data.setdefault("samplers", {name: {"type": name} for name in data["runs"]})
        data.setdefault("scheduler", {"type": "asha", "grace_period": 4, "reduction_factor": 3})
    summarize(data)


if __name__ == "__main__":
    main()

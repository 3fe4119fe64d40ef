"""Ray/Tune overhead of a real CPU search, measured in one run.

A 16-trial search (small_vgg_bn on 64 px lesion-vs-tissue tiles, 2 trials at a time on the
2 cores, ASHA) through ``run_search``, the code path of ``mammotune search``. Measured:

- trial start to first training step: from Tune starting the trial (driver clock) to the end
  of the trial's first optimizer step (the trial's clock; same machine). Includes starting
  the worker process, imports, reading the manifest, building the model and the first batch.
  Shards are local, the equivalent of a warm node cache.
- overhead share: 1 - (time spent inside trainables) / (search wall time x concurrency), so
  everything that is not a trial running its own code counts: worker start-up, scheduling,
  result and checkpoint handling, idle slots. It is split by where the idle slot time went:
  before the first trial (the first workers' start, once per search), between trials (the
  per-trial cost), the drain (slots left free while the last trial finishes) and time
  inside a trial outside the trainable.

Each variant runs in its own Ray session: recycled worker processes (``reuse_actors``, the
default since issue 14), and one process per trial (``--no-reuse-actors``). The driver's
and Ray's own processes share the 2 cores with the trials here (on a cluster they have the
head to themselves): their CPU seconds during the search are printed too.

    python benchmarks/overhead.py [--trials 16]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent))

SPACE = """
name: overhead
task: lesion_vs_tissue
trials: {trials}
max_concurrent: 2
seed: 0
tpe: {{n_startup_trials: 6}}
asha: {{grace_period: 2, reduction_factor: 2}}
fixed: {{epochs: 4, batch_size: 32, backbone: small_vgg_bn, input_size: 64}}
space:
  class_weight: {{type: categorical, choices: [none, balanced]}}
  dropout: {{type: float, low: 0.0, high: 0.4}}
  lr: {{type: log-float, low: 3.0e-4, high: 3.0e-3}}
"""


def run(data: Path, trials: int, reuse: bool, root: Path) -> dict:
    import ray
    from ray.tune import Callback

    from tuner.config import load_space
    from tuner.search.runner import plan_search, run_search

    starts, ends, results = {}, {}, {}

    class Timing(Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            starts[trial.trial_id] = time.time()

        def on_trial_result(self, iteration, trials, trial, result, **info):
            results.setdefault(trial.trial_id, []).append(result)

        def on_trial_complete(self, iteration, trials, trial, **info):
            ends[trial.trial_id] = time.time()  # finished, or stopped by ASHA

        def on_trial_error(self, iteration, trials, trial, **info):
            ends[trial.trial_id] = time.time()

    space_file = root / f"overhead-{reuse}.yaml"
    space_file.write_text(SPACE.format(trials=trials))
    plan = plan_search(
        load_space(space_file),
        space_file=str(space_file),
        data=str(data),
        experiment=str(root / f"exp-{reuse}"),
    )
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        control = _control_processes()
        cpu_before = _cpu_seconds(control)
        started = time.time()
        run_search(plan, verbose=0, callbacks=[Timing()], reuse_actors=reuse)
        finished = time.time()
        wall = finished - started
        control_cpu = _cpu_seconds(control) - cpu_before
    finally:
        ray.shutdown()
    startup = [
        rows[0]["first_step_at"] - starts[trial]
        for trial, rows in results.items()
        if rows and rows[0].get("first_step_at")
    ]
    busy = sum(rows[-1]["time_total_s"] for rows in results.values())
    epochs = sum(len(rows) for rows in results.values())
    slots = plan.space.max_concurrent
    parts = _idle_parts(started, finished, starts, ends, slots)
    parts["in trials, outside the trainable"] = (
        sum(ends.get(t, finished) - starts[t] for t in starts) - busy
    )
    return {
        "wall": wall,
        "busy": busy,
        "share": 1 - busy / (wall * slots),
        "parts": {name: seconds / (wall * slots) for name, seconds in parts.items()},
        "startup": startup,
        "epochs": epochs,
        "trials": len(results),
        "control_cpu": control_cpu,
    }


def _idle_parts(started, finished, starts, ends, slots) -> dict[str, float]:
    """Slot-seconds with no trial in them (driver clock), split into before the first trial
    started, between trials while more were waiting, and the drain: after the last trial
    started, the slots its companions left free (a fixed cost per search, not per trial)."""
    events = sorted(
        [(t, 1) for t in starts.values()] + [(ends.get(k, finished), -1) for k in starts]
    )
    first_start, last_start = min(starts.values()), max(starts.values())
    parts = {"before the first trial": 0.0, "between trials": 0.0, "drain": 0.0}
    running, at = 0, started
    for when, change in [*events, (finished, 0)]:
        idle = max(slots - running, 0) * (when - at)
        if at < first_start:
            parts["before the first trial"] += idle
        elif at >= last_start:
            parts["drain"] += idle
        else:
            parts["between trials"] += idle
        running, at = running + change, when
    return parts


def _control_processes() -> list:
    """This driver and the Ray processes started with it (GCS, raylet, agents), not the
    trial workers (started later, and not ``ray::IDLE`` workers' training)."""
    import psutil

    me = psutil.Process()
    control = [me]
    for child in me.children(recursive=True):
        try:
            if "default_worker.py" not in " ".join(child.cmdline()):  # a (future) trial's
                control.append(child)
        except psutil.Error:
            pass
    return control


def _cpu_seconds(processes) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except Exception:  # gone
            pass
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    args = parser.parse_args()
    from _datasets import tile_dataset

    data = tile_dataset(patients=120, size=64)
    print(f"dataset: {data}")
    import ray

    ray.shutdown()  # prepare's local Ray (when the dataset was made now): each variant its own
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for reuse in (False, True):
            outcome = run(data, args.trials, reuse, Path(folder))
            rows.append((reuse, outcome))
    print()
    print(
        "| workers | trials | epochs | wall s | in trainables s | overhead share "
        "| start to first step, median s | max s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for reuse, o in rows:
        name = "recycled (default)" if reuse else "one process per trial (--no-reuse-actors)"
        print(
            f"| {name} | {o['trials']} | {o['epochs']} | {o['wall']:.1f} | {o['busy']:.1f} | "
            f"{o['share']:.1%} | {statistics.median(o['startup']):.2f} | {max(o['startup']):.2f} |"
        )
    fresh, reused = rows[0][1], rows[1][1]
    print()
    print(
        f"overhead share {reused['share']:.1%} recycled (the default; goal <= 5%), "
        f"{fresh['share']:.1%} one process per trial; trial start to first step median "
        f"{statistics.median(reused['startup']):.2f} s (goal <= 10 s)"
    )
    for name, o in (("recycled", reused), ("one process per trial", fresh)):
        print(
            f"{name}: the driver and Ray's own processes used {o['control_cpu']:.1f} CPU s "
            f"= {o['control_cpu'] / (o['wall'] * 2):.1%} of the 2 cores over the search"
        )
        parts = ", ".join(f"{part} {share:.1%}" for part, share in o["parts"].items())
        print(f"{name}: overhead share by where the slot time went: {parts}")
        print(
            f"{name}: overhead share without the drain (the per-trial cost): "
            f"{o['share'] - o['parts']['drain']:.1%}"
        )


if __name__ == "__main__":
    main()

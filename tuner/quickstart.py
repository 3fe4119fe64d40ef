"""``mammotune quickstart``: synth -> prepare -> search -> best in one work folder, sized for a
2-core CPU with no GPU and no network, printing each step, where things went and the measured
time and best validation ROC AUC.

Steps whose output is already there with the same settings are reused (synth and prepare are
idempotent); every run gets a new experiment folder, so nothing is overwritten.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from rich.console import Console
from rich.rule import Rule

from tuner import storage

__all__ = ["run_quickstart"]

DIFFICULTY = 0.5
SCALE = 0.25  # synthetic images at a quarter of CBIS-DDSM resolution ...
CONTEXT_PX = round(598 * SCALE)  # ... so the published 598 px context becomes 150 px
SIZES = (48, 64)
GOAL_SECONDS, GOAL_AUC = 600, 0.80


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}m{seconds % 60:04.1f}s"


def run_quickstart(
    workdir: str, *, patients: int = 240, trials: int | None = None, console: Console
) -> dict:
    """Run the whole path on synthetic data; returns the measured summary (also written to
    ``WORKDIR/quickstart-<time>.json``)."""
    from rich.progress import Progress

    from tuner.cli import print_leaderboard, print_manifest, resolve_space
    from tuner.cluster import connect
    from tuner.config import load_space
    from tuner.data.prepare import PrepareParams, prepare
    from tuner.data.synthetic import SynthParams, synthesize
    from tuner.search.runner import plan_search, run_search

    started = time.perf_counter()
    root = Path(workdir).resolve()
    source, data = root / "cbis-ddsm-synthetic", root / "dataset"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    experiment = root / "experiments" / f"quick-{stamp}"
    seconds: dict[str, float] = {}

    console.print(Rule("1/4 synth: a synthetic CBIS-DDSM download"))
    t = time.perf_counter()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("rendering cases", total=None)
        summary = synthesize(
            str(source),
            SynthParams(patients=patients, difficulty=DIFFICULTY, scale=SCALE),
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    seconds["synth"] = time.perf_counter() - t
    note = "reused" if summary.get("reused") else f"{summary['images']} DICOM images"
    console.print(f"{source}: {summary['patients']} patients, {note}")

    console.print(Rule("2/4 prepare: ROI tile shards + manifest"))
    t = time.perf_counter()
    dashboard = connect()
    if dashboard:
        console.print(f"Ray dashboard: {dashboard}")
    manifest = prepare(
        str(source),
        str(data),
        PrepareParams(sizes=SIZES, context_px=CONTEXT_PX, val_fraction=0.25),
    )
    seconds["prepare"] = time.perf_counter() - t
    print_manifest(manifest, str(data))

    console.print(Rule("3/4 search: Optuna TPE + ASHA on Ray Tune"))
    t = time.perf_counter()
    space_file = resolve_space("quick")
    plan = plan_search(
        load_space(space_file),
        space_file=str(space_file),
        data=str(data),
        experiment=str(experiment),
        trials=trials,
    )
    console.print(
        f"{plan.space.trials} trials, {plan.space.max_concurrent} at a time, up to "
        f"{plan.max_epochs} epochs each; experiment at {experiment}"
    )
    run_search(plan, console=console)
    seconds["search"] = time.perf_counter() - t

    console.print(Rule("4/4 best: leaderboard"))
    board = print_leaderboard(str(experiment))
    total = time.perf_counter() - started
    best = board["best"]
    auc = best["best"].get("val_roc_auc") if best else None
    result = {
        "seconds": {**{k: round(v, 1) for k, v in seconds.items()}, "total": round(total, 1)},
        "best_val_roc_auc": auc,
        "best_trial": best,
        "experiment": str(experiment),
        "dataset": str(data),
        "cpus": os.cpu_count(),
    }
    storage.write_json(str(root / f"quickstart-{stamp}.json"), result)

    console.print(Rule("quickstart done"))
    met = auc is not None and auc >= GOAL_AUC and total <= GOAL_SECONDS
    console.print(
        f"measured: {_minutes(total)} in all (synth {_minutes(seconds['synth'])}, prepare "
        f"{_minutes(seconds['prepare'])}, search {_minutes(seconds['search'])}) on "
        f"{os.cpu_count()} CPUs; best validation ROC AUC "
        f"{'n/a' if auc is None else f'{auc:.3f}'} (chance 0.5)"
    )
    console.print(
        f"goal (<= {GOAL_SECONDS // 60} min, AUC >= {GOAL_AUC}): {'met' if met else 'NOT met'}"
    )
    console.print(f"next: mammotune best {experiment}")
    return result

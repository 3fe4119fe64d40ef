"""``mammotune quickstart``: synth -> prepare -> search -> best in one work folder, sized for a
2-core CPU with no GPU and no network, printing each step, where things went and the measured
time and best validation ROC AUC. A face over :mod:`tuner`'s API, like the CLI.

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
    """Run the whole path on synthetic data through :mod:`tuner`'s API; returns the measured
    summary (also written to ``WORKDIR/quickstart-<time>.json``)."""
    from rich.progress import Progress

    import tuner
    from tuner import present

    started = time.perf_counter()
    root = Path(workdir).resolve()
    source, data = root / "cbis-ddsm-synthetic", root / "dataset"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    experiment_url = root / "experiments" / f"quick-{stamp}"
    seconds: dict[str, float] = {}

    console.print(Rule("1/4 synth: a synthetic CBIS-DDSM download"))
    t = time.perf_counter()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("rendering cases", total=None)
        synthetic = tuner.synth(
            source,
            patients=patients,
            difficulty=DIFFICULTY,
            scale=SCALE,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    seconds["synth"] = time.perf_counter() - t
    note = "reused" if synthetic.reused else f"{synthetic.images} DICOM images"
    console.print(f"{source}: {synthetic.patients} patients, {note}")

    console.print(Rule("2/4 prepare: ROI tile shards + manifest"))
    t = time.perf_counter()
    dataset = tuner.prepare(
        synthetic, data, sizes=SIZES, context_px=CONTEXT_PX, val_fraction=0.25, log=console.print
    )
    seconds["prepare"] = time.perf_counter() - t
    present.dataset(console, dataset)

    space = tuner.load_space("quick")
    strategies = f"{space.sampler.type.upper()} + {space.scheduler.type.upper()}"
    console.print(Rule(f"3/4 search: Optuna {strategies} on Ray Tune"))
    t = time.perf_counter()
    experiment = tuner.search(
        space,
        data=dataset,
        storage=experiment_url,
        trials=trials,
        console=console,
        log=console.print,
    )
    seconds["search"] = time.perf_counter() - t

    console.print(Rule("4/4 best: leaderboard"))
    board = experiment.leaderboard()
    present.leaderboard(console, board)
    total = time.perf_counter() - started
    best = board.best
    auc = best.value if best else None
    result = {
        "seconds": {**{k: round(v, 1) for k, v in seconds.items()}, "total": round(total, 1)},
        "best_val_roc_auc": auc,
        "best_trial": best.to_dict() if best else None,
        "experiment": experiment.url,
        "dataset": dataset.url,
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
    console.print(f"next: mammotune best {experiment.url}")
    return result

"""Ray Tune callbacks of the search driver: telemetry for the dashboards, the live trial
table in the terminal, and checkpoint retention."""

from __future__ import annotations

import logging
import time
from collections import Counter

from ray.tune import Callback

from tuner.search.experiment import TRIAL_STATES, trial_status
from tuner.search.retention import prune_checkpoints
from tuner.telemetry import record_search
from tuner.training.metrics import is_better

__all__ = ["Telemetry", "TrialTable", "CheckpointRetention"]

logger = logging.getLogger(__name__)


class _SearchView(Callback):
    """Trial states and the best metric so far, as the driver sees them."""

    def __init__(self, experiment: str, metric: str, mode: str):
        self.experiment, self.metric, self.mode = experiment, metric, mode
        self.best: float | None = None
        self.best_trial: str | None = None

    def on_trial_result(self, iteration, trials, trial, result, **info):
        value = result.get(self.metric)
        if is_better(value, self.best, self.mode):
            self.best, self.best_trial = float(value), trial.trial_id

    def states(self, trials) -> dict[str, int]:
        counts = Counter(trial_status(t.status) for t in trials)
        return {state: counts.get(state, 0) for state in TRIAL_STATES.values()}


class Telemetry(_SearchView):
    """Exports ``mammotune_trials`` (by state) and ``mammotune_best_metric``."""

    def on_step_end(self, iteration, trials, **info):
        record_search(self.experiment, self.states(trials), metric=self.metric, best=self.best)

    def on_experiment_end(self, trials, **info):
        self.on_step_end(0, trials)


class TrialTable(_SearchView):
    """A live table of the trials on a terminal; one summary line per change elsewhere
    (CI logs, files)."""

    def __init__(self, console, experiment: str, metric: str, mode: str, columns=()):
        super().__init__(experiment, metric, mode)
        self.console, self.columns = console, list(columns)
        self.live = None
        self.last_line, self.last_draw = "", 0.0

    def __getstate__(self):
        # Tune pickles its callbacks with the experiment (tuner.pkl): a console and a live
        # display are this process's, so a resumed search gets fresh ones.
        state = self.__dict__.copy()
        state.update(console=None, live=None)
        return state

    def __setstate__(self, state):
        from rich.console import Console

        self.__dict__.update(state)
        self.console = Console(highlight=False, markup=False)

    def _table(self, trials):
        from rich.table import Table

        table = Table(
            "trial",
            "status",
            "node",
            "failures",
            *self.columns,
            "epoch",
            self.metric,
            "img/s",
            "data wait",
            title=self._summary(trials),
        )
        for trial in trials:
            result = trial.last_result or {}
            node = str(result.get("node_id", ""))[:8] or "-"
            table.add_row(
                trial.trial_id,
                trial_status(trial.status),
                node,
                str(getattr(trial, "num_failures", 0)),
                *(_cell(trial.config.get(c)) for c in self.columns),
                _cell(result.get("epoch")),
                _cell(result.get(self.metric)),
                _cell(result.get("train_images_per_s")),
                _cell(result.get("data_wait_share")),
            )
        return table

    def _summary(self, trials) -> str:
        states = ", ".join(f"{n} {s}" for s, n in self.states(trials).items() if n)
        best = f"; best {self.metric} {self.best:.3f} ({self.best_trial})" if self.best else ""
        return f"{self.experiment}: {states}{best}"

    def on_step_end(self, iteration, trials, **info):
        if self.console.is_terminal:
            if time.monotonic() - self.last_draw < 1.0:
                return
            self.last_draw = time.monotonic()
            if self.live is None:
                from rich.live import Live

                self.live = Live(console=self.console, auto_refresh=False, transient=False)
                self.live.start()
            self.live.update(self._table(trials), refresh=True)
            return
        line = self._summary(trials)
        if line != self.last_line:
            self.console.print(line, soft_wrap=True)
            self.last_line = line

    def on_experiment_end(self, trials, **info):
        if self.live is not None:
            self.live.update(self._table(trials), refresh=True)
            self.live.stop()
            self.live = None


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-2 or abs(value) >= 100 else f"{value:.3f}"
    return str(value)


class CheckpointRetention(Callback):
    """Prunes finished trials' checkpoints during a search (see :func:`prune_checkpoints`),
    at most every ``period_s`` seconds, once Tune's snapshot on storage records them as
    finished; checks storage only while a finished trial waits to be pruned. Holds no
    handles, so Tune can pickle it with the experiment."""

    def __init__(self, experiment: str, metric: str, mode: str, keep: int, period_s: float = 30):
        self.experiment, self.metric, self.mode, self.keep = experiment, metric, mode, keep
        self.period_s = period_s
        self._waiting: set[str] = set()
        self._last_check = 0.0  # wall clock: a resumed search runs in another process

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._waiting.add(trial.trial_id)

    def on_step_end(self, iteration, trials, **info):
        if not self._waiting or time.time() - self._last_check < self.period_s:
            return
        self._last_check = time.time()
        try:
            pruned = prune_checkpoints(
                self.experiment,
                metric=self.metric,
                mode=self.mode,
                keep=self.keep,
                trial_ids=self._waiting,
            )
        except Exception as error:  # storage hiccup: the next check, or the search's end, retries
            logger.warning("could not prune finished trials' checkpoints yet: %s", error)
            return
        self._waiting -= set(pruned)

"""The search runner: a space file, a prepared dataset and an experiment URL become a Ray Tune
run with OptunaSearch (TPE, seeded, persistent study) and ASHA early stopping.

Everything that can be checked on the driver is checked before the first trial starts: the
space, the dataset and its tile sizes, the weights, and the experiment location.
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import time
from dataclasses import dataclass

import tuner
from tuner import storage
from tuner.config import Categorical, Resources, SearchSpace
from tuner.data.stream import load_manifest, split_entry
from tuner.errors import UserError
from tuner.models.weights import find_transfer_weights
from tuner.search.experiment import EXPERIMENT_FILE, EXPERIMENT_FORMAT
from tuner.search.retention import prune_checkpoints
from tuner.search.space import DefineByRun, check_space
from tuner.training.config import TrialConfig
from tuner.training.trainable import train_trial

__all__ = ["SearchPlan", "plan_search", "run_search", "check_resumable", "resume_search"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchPlan:
    """A checked search, ready to run."""

    space: SearchSpace
    space_file: str
    data: str
    dataset_id: str
    experiment: str
    study_storage: str
    max_epochs: int
    constants: dict


def _max_epochs(space: SearchSpace) -> int:
    dim = space.space.get("epochs")
    if dim is None:
        return int(space.fixed.get("epochs", TrialConfig().epochs))
    return int(max(dim.choices) if isinstance(dim, Categorical) else dim.high)


def _default_study(experiment: str) -> str:
    """SQLite next to a local experiment; for a bucket, in the user's cache (SQLite needs a
    local disk). Pass --study with an SQLAlchemy URL (PostgreSQL) on a cluster."""
    if storage.is_local(experiment):
        return f"sqlite:///{storage.join(experiment, 'optuna.db')}"
    digest = hashlib.sha256(experiment.encode()).hexdigest()[:12]
    folder = os.path.join(os.path.expanduser("~"), ".cache", "mammotune", "studies")
    os.makedirs(folder, exist_ok=True)
    return f"sqlite:///{folder}/{posixpath.basename(experiment)}-{digest}.db"


def plan_search(
    space: SearchSpace,
    *,
    space_file: str,
    data: str,
    experiment: str,
    weights_dir: str | None = None,
    trials: int | None = None,
    study: str | None = None,
    cpus: float | None = None,
    gpus: float | None = None,
) -> SearchPlan:
    """Check everything the search needs, before any trial starts.

    Args:
        trials, cpus, gpus: override the space's trial count and resources per trial.

    Raises:
        UserError: a bad space, a missing dataset or tile size, missing weights, an unknown
            metric, or an experiment location that already holds something or cannot be
            written.
    """
    check_space(space, space_file)
    if trials is not None:
        space = space.model_copy(update={"trials": trials})
    if cpus is not None or gpus is not None:
        resources = Resources(
            cpu=space.resources.cpu if cpus is None else cpus,
            gpu=space.resources.gpu if gpus is None else gpus,
        )
        space = space.model_copy(update={"resources": resources})
    manifest = load_manifest(data)
    for size in space.input_sizes():
        for enhance in space.values("enhance", TrialConfig().enhance):
            for split in ("train", "val"):
                split_entry(manifest, space.view, size, split, enhance)

    for transfer in space.values("transfer", TrialConfig().transfer):
        for name in space.values("backbone", TrialConfig().backbone):
            find_transfer_weights(transfer, name, weights_dir)

    if not experiment:
        raise UserError("no experiment location given; pass --storage with a folder or bucket URL")
    experiment = storage.normalize(experiment)
    if storage.exists(storage.join(experiment, EXPERIMENT_FILE)):
        raise UserError(
            f"{experiment} already holds an experiment; choose a new --storage location "
            "(nothing there was changed)"
        )
    fs, path = storage.filesystem(experiment)
    if fs.exists(path) and fs.ls(path):
        raise UserError(f"{experiment} is not empty; choose a new --storage location")
    storage.check_writable(posixpath.dirname(experiment))

    constants = {
        "data": storage.normalize(data),
        "view": space.view,
        "task": space.task,
        "weights_dir": storage.normalize(weights_dir) if weights_dir else None,
        "seed": space.seed,
    }
    return SearchPlan(
        space=space,
        space_file=str(space_file),
        data=storage.normalize(data),
        dataset_id=manifest["id"],
        experiment=experiment,
        study_storage=study or _default_study(experiment),
        max_epochs=_max_epochs(space),
        constants=constants,
    )


def _trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


def _tune_environment() -> None:
    # Snapshot the experiment (trials and searcher) every 2 s (Tune's default is 10 s or
    # more): a driver killed outright loses at most that much bookkeeping. Trials resume
    # from the checkpoints the snapshot knows, so only what a trial did in the last 2 s
    # before the kill is done again.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    _keep_credentials_on_the_driver()


# Cloud credentials Ray Tune would copy from the driver's environment into every trial's
# runtime environment.
_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
}


def _keep_credentials_on_the_driver() -> None:
    """Stop Tune from shipping the driver's AWS credentials to trials.

    Tune puts them into each trial's ``runtime_env``, which Ray writes in clear into its logs
    (runtime_env_agent.log) and actor tables (the dashboard). Trials need no copy: each node
    has its own credentials (its environment, or an instance role), which its workers inherit
    (the local in-process cluster's workers inherit the driver's environment).
    """
    from ray.tune.execution import class_cache

    propagated = getattr(class_cache, "ENV_VARS_TO_PROPAGATE", None)
    if isinstance(propagated, set | frozenset):
        class_cache.ENV_VARS_TO_PROPAGATE = set(propagated) - _CREDENTIALS


def _trainable(space: SearchSpace, function=None):
    from ray import tune

    return tune.with_resources(
        function or train_trial, {"cpu": space.resources.cpu, "gpu": space.resources.gpu}
    )


def run_search(
    plan: SearchPlan,
    *,
    verbose: int = 1,
    max_failures: int = 1,
    sampler: str = "tpe",
    trainable=None,
    stop=None,
    callbacks=None,
    reuse_actors: bool = False,
    console=None,
):
    """Run the planned search on the connected Ray cluster; returns Tune's ResultGrid.

    Args:
        max_failures: retries of a trial that errored (a dead worker, a lost node) from its
            last checkpoint; a trial that still fails ends as errored and Optuna records it
            as failed.
        sampler: "tpe" (seeded TPE, the default) or "random" (Optuna's seeded random
            sampler: the baseline ``benchmarks/search_efficiency.py`` compares against).
        trainable, stop, callbacks: another function trainable, a Tune stopper and Tune
            callbacks (the search-efficiency benchmark runs a simulated trainable through
            this same machinery).
        reuse_actors: run trials in recycled worker processes; off for real training, so
            that each trial starts with fresh GPU memory.
        console: a rich Console for the live trial table (instead of Tune's own output).
    """
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    _tune_environment()
    space = plan.space
    storage.write_json(
        storage.join(plan.experiment, EXPERIMENT_FILE),
        {
            "format": EXPERIMENT_FORMAT,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "mammotune_version": tuner.__version__,
            "space_file": plan.space_file,
            "space": space.model_dump(mode="json"),
            "data": plan.data,
            "dataset_id": plan.dataset_id,
            "study": {"storage": plan.study_storage, "name": posixpath.basename(plan.experiment)},
            "metric": space.metric,
            "mode": space.mode,
            "max_epochs": plan.max_epochs,
        },
    )
    name = posixpath.basename(plan.experiment)
    searcher = OptunaSearch(
        DefineByRun(space, plan.constants),
        metric=space.metric,
        mode=space.mode,
        sampler=(
            optuna.samplers.TPESampler(seed=space.seed, n_startup_trials=space.tpe.n_startup_trials)
            if sampler == "tpe"
            else optuna.samplers.RandomSampler(seed=space.seed)
        ),
        study_name=name,
        storage=optuna.storages.RDBStorage(plan.study_storage),
    )
    scheduler = ASHAScheduler(
        time_attr="training_iteration",
        max_t=plan.max_epochs,
        grace_period=min(space.asha.grace_period, plan.max_epochs),
        reduction_factor=space.asha.reduction_factor,
    )
    filesystem, parent = storage.pyarrow_filesystem(posixpath.dirname(plan.experiment))
    tuner_ = tune.Tuner(
        _trainable(space, trainable),
        tune_config=tune.TuneConfig(
            metric=space.metric,
            mode=space.mode,
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=space.max_concurrent),
            scheduler=scheduler,
            num_samples=space.trials,
            trial_dirname_creator=_trial_dirname,
            reuse_actors=reuse_actors,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=parent,
            storage_filesystem=filesystem,
            # Tune deletes nothing (num_to_keep=None): CheckpointRetention prunes finished
            # trials once a snapshot says they finished (tuner.search.retention says why).
            checkpoint_config=tune.CheckpointConfig(
                checkpoint_score_attribute=space.metric, checkpoint_score_order=space.mode
            ),
            failure_config=tune.FailureConfig(max_failures=max_failures),
            stop=stop,
            callbacks=[
                *_driver_callbacks(plan.experiment, space, console),
                *(callbacks or []),
            ],
            verbose=0 if console is not None else verbose,
        ),
    )
    return _fit_and_prune(tuner_, plan.experiment, space)


def _fit_and_prune(tuner_, experiment: str, space: SearchSpace):
    """Run the search, then prune what its last snapshot records as finished (trials that
    finished after the retention callback's last check)."""
    results = tuner_.fit()
    try:
        prune_checkpoints(
            experiment, metric=space.metric, mode=space.mode, keep=space.keep_checkpoints
        )
    except OSError as error:  # the search itself is done and saved: only space is at stake
        logger.warning("finished trials keep all their checkpoints (pruning failed: %s)", error)
    return results


def _driver_callbacks(experiment: str, space: SearchSpace, console) -> list:
    from tuner.search.callbacks import CheckpointRetention, Telemetry, TrialTable

    name = posixpath.basename(experiment)
    callbacks = [
        Telemetry(name, space.metric, space.mode),
        CheckpointRetention(experiment, space.metric, space.mode, space.keep_checkpoints),
    ]
    if console is not None:
        columns = [d for d in space.space if d in ("backbone", "input_size", "transfer")]
        callbacks.append(TrialTable(console, name, space.metric, space.mode, columns))
    return callbacks


def check_resumable(experiment: str) -> dict:
    """The experiment's ``search.json``, after checking that Tune can resume it (no Ray needed).

    Raises:
        UserError: no search there, or none that got as far as Tune's first snapshot.
    """
    from ray import tune

    experiment = storage.normalize(experiment)
    meta_url = storage.join(experiment, EXPERIMENT_FILE)
    if not storage.exists(meta_url):
        raise UserError(
            f"no mammotune search at {experiment} ({EXPERIMENT_FILE} not found); "
            "give the --storage location of the interrupted search"
        )
    filesystem, path = storage.pyarrow_filesystem(experiment)
    if not tune.Tuner.can_restore(path, storage_filesystem=filesystem):
        raise UserError(
            f"{experiment} has no search state to resume from yet (the driver stopped before "
            "Tune's first snapshot); start a new search"
        )
    return storage.read_json(meta_url)


def resume_search(experiment: str):
    """Continue an interrupted search (Ctrl-C, or a driver killed outright) where it stopped.

    Finished trials keep their results; unfinished ones resume from their last checkpoint;
    the searcher, with the same Optuna study, goes on to the space's trial count. Trials
    that Optuna had started but Tune never recorded (the driver died in between) are marked
    failed in the study so that they do not linger as running.

    Raises:
        UserError: nothing to resume at ``experiment``.
    """
    from ray import tune

    _tune_environment()
    experiment = storage.normalize(experiment)
    meta = check_resumable(experiment)
    filesystem, path = storage.pyarrow_filesystem(experiment)
    space = SearchSpace.model_validate(meta["space"])
    tuner_ = tune.Tuner.restore(
        path,
        trainable=_trainable(space),
        resume_unfinished=True,
        resume_errored=True,
        storage_filesystem=filesystem,
    )
    _fail_orphans(meta["study"], experiment)
    return _fit_and_prune(tuner_, experiment, space)


def _fail_orphans(study: dict, experiment: str) -> None:
    """Mark as failed the Optuna trials left running by a killed driver."""
    import optuna

    storage_ = optuna.storages.RDBStorage(study["storage"])
    study_id = storage_.get_study_id_from_name(study["name"])
    known = _searcher_trial_numbers(experiment)
    for trial in storage_.get_all_trials(study_id, deepcopy=False):
        if trial.state == optuna.trial.TrialState.RUNNING and trial.number not in known:
            storage_.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)


def _searcher_trial_numbers(experiment: str) -> set[int]:
    """Optuna trial numbers the searcher's last snapshot knows (Tune restores from it)."""
    import pickle

    fs, path = storage.filesystem(experiment)
    snapshots = sorted(fs.glob(posixpath.join(path, "searcher-state-*.pkl")))
    if not snapshots:
        return set()
    # Tune's own snapshot of OptunaSearch, which it unpickles too.
    state = pickle.loads(fs.cat_file(snapshots[-1]))
    return {trial.number for trial in state.get("_ot_trials", {}).values()}

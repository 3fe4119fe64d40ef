"""The search runner: a space file, a prepared dataset and an experiment URL become a Ray Tune
run with OptunaSearch (the space's sampler, seeded, persistent study) and the space's
scheduler (ASHA by default).

Everything that can be checked on the driver is checked before the first trial starts: the
space, the dataset and its tile sizes, the weights, and the experiment location.
"""

from __future__ import annotations

import logging
import os
import posixpath
import time
from dataclasses import dataclass, field

import tuner
from tuner import storage
from tuner.config import Categorical, SearchSpace, apply_overrides
from tuner.data.stream import load_manifest, split_entry
from tuner.errors import UserError
from tuner.models.weights import find_transfer_weights
from tuner.search.experiment import (
    DATASET_COPY,
    EXPERIMENT_FILE,
    EXPERIMENT_FORMAT,
    trial_states,
)
from tuner.search.retention import prune_checkpoints
from tuner.search.space import DefineByRun, check_space
from tuner.search.strategies import build_sampler, build_scheduler
from tuner.search.study import (
    SNAPSHOT_FILE,
    StudyStorage,
    bind,
    check_new_study,
    default_study,
    prepare_resume,
    upload_snapshot,
    without_password,
)
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
    # A bucket experiment's default study: a copy goes into every snapshot (tuner.search.study)
    study_snapshot: bool = False
    manifest: dict = field(default_factory=dict, repr=False)  # the dataset's, as checked


def _max_epochs(space: SearchSpace) -> int:
    dim = space.space.get("epochs")
    if dim is None:
        return int(space.fixed.get("epochs", TrialConfig().epochs))
    return int(max(dim.choices) if isinstance(dim, Categorical) else dim.high)


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
    given = {"trials": trials, "resources.cpu": cpus, "resources.gpu": gpus}
    given = {key: value for key, value in given.items() if value is not None}
    if given:  # checked like the file's own settings (trials >= 1, whole or fractional GPUs)
        space = apply_overrides(space, given, space_file)
    check_space(space, space_file)
    manifest = load_manifest(data)
    if "two_view" in space.values("fusion", TrialConfig().fusion):
        _check_two_view(space, manifest, data)
    for size in space.input_sizes():
        for enhance in space.values("enhance", TrialConfig().enhance):
            for split in ("train", "val"):
                split_entry(manifest, space.view, size, split, enhance)

    for transfer in space.values("transfer", TrialConfig().transfer):
        for name in space.values("backbone", TrialConfig().backbone):
            find_transfer_weights(transfer, name, weights_dir)

    if not experiment:
        raise UserError(
            "no experiment location given; give storage (--storage): a folder or bucket URL"
        )
    experiment = storage.normalize(experiment)
    # Writable first: where the user may not list, asking what is there is refused too.
    storage.check_writable(posixpath.dirname(experiment))
    if storage.exists(storage.join(experiment, EXPERIMENT_FILE)):
        raise UserError(
            f"{experiment} already holds an experiment; choose a new storage location (--storage) "
            "(nothing there was changed)"
        )
    fs, path = storage.filesystem(experiment)
    with storage.denied(experiment, "list"):
        if fs.exists(path) and fs.ls(path):
            raise UserError(f"{experiment} is not empty; choose a new storage location (--storage)")
    if study:
        check_new_study(study, posixpath.basename(experiment), stale_copy=False)
        snapshot = False
    else:
        study, snapshot = default_study(experiment)
        if snapshot:  # the location is empty: a working copy of the same URL is stale
            check_new_study(study, posixpath.basename(experiment), stale_copy=True)

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
        study_storage=study,
        study_snapshot=snapshot,
        max_epochs=_max_epochs(space),
        constants=constants,
        manifest=manifest,
    )


def _check_two_view(space, manifest: dict, data: str) -> None:
    """Two-view trials pair whole images: refuse a dataset without them; warn when no
    training breast has both views (each image would be fed twice)."""
    from tuner.data.pairs import PairStream
    from tuner.data.tasks import get_task

    if not any(kind["view"] == "whole" for kind in manifest["tiles"].values()):
        raise UserError(
            f"fusion two_view pairs the CC and MLO whole images of a breast, but {data} was "
            "prepared without whole images; prepare it again with --views whole (or roi,whole)"
        )
    size = min(space.input_sizes())
    enhance = space.values("enhance", TrialConfig().enhance)[0]
    split_entry(manifest, "whole", size, "train", enhance)  # a UserError naming what exists
    stream = PairStream(
        data, manifest, size=size, split="train", task=get_task(space.task), enhance=enhance
    )
    if stream.breasts and stream.single_view_breasts == stream.breasts:
        logger.warning(
            "warning: fusion two_view: none of the %d training breasts of %s has both a CC "
            "and an MLO image, so each is fed its one view twice",
            stream.breasts,
            data,
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
    trainable=None,
    stop=None,
    callbacks=None,
    reuse_actors: bool = True,
    console=None,
):
    """Run the planned search on the connected Ray cluster; returns Tune's ResultGrid.

    The space names the sampler (``sampler: {type: gp}`` by default, seeded) and the
    scheduler (``scheduler: {type: asha}`` by default); see :mod:`tuner.search.strategies`.

    Args:
        max_failures: retries of a trial that errored (a dead worker, a lost node) from its
            last checkpoint; a trial that still fails ends as errored and Optuna records it
            as failed.
        trainable, stop, callbacks: another function trainable, a Tune stopper and Tune
            callbacks (the search-efficiency benchmark runs a simulated trainable through
            this same machinery).
        reuse_actors: run trials in recycled worker processes (a fresh one costs seconds
            of start-up and imports per trial; ``benchmarks/overhead.py``). Each trial frees
            its model, optimizer, loaders and CUDA cache as it ends
            (:func:`tuner.training.trainable.release_trial_memory`); Tune recycles a process
            only for a trial that asks for the same resources.
        console: a rich Console for the live trial table (instead of Tune's own output).
    """
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    from tuner.search.searcher import TrialRecordingSearch

    _tune_environment()
    space = plan.space
    objectives = space.objectives
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
            "study": {
                "storage": without_password(plan.study_storage),
                "name": posixpath.basename(plan.experiment),
                # where Tune's snapshots put a copy of it, relative to the experiment
                **({"snapshot": SNAPSHOT_FILE} if plan.study_snapshot else {}),
            },
            "metric": space.metric,
            "mode": space.mode,
            "objectives": [o.model_dump() for o in objectives],
            "max_epochs": plan.max_epochs,
        },
    )
    if plan.manifest:  # what the report and the model card read: no URL is followed
        storage.write_json(
            storage.join(plan.experiment, DATASET_COPY),
            {"url": plan.data, "manifest": plan.manifest},
        )
    name = posixpath.basename(plan.experiment)
    multi = space.multi_objective
    searcher = TrialRecordingSearch(
        DefineByRun(space, plan.constants),
        metric=[o.name for o in objectives] if multi else space.metric,
        mode=[o.mode for o in objectives] if multi else space.mode,
        sampler=build_sampler(space),
        study_name=name,
        storage=StudyStorage(plan.study_storage, plan.experiment, snapshot=plan.study_snapshot),
        snapshot_study=plan.study_snapshot,
    )
    filesystem, parent = storage.pyarrow_filesystem(posixpath.dirname(plan.experiment))
    tuner_ = tune.Tuner(
        _trainable(space, trainable),
        tune_config=tune.TuneConfig(
            # Several metrics: the searcher holds them, and the scheduler is FIFO
            # (check_strategies), which ranks nothing.
            metric=None if multi else space.metric,
            mode=None if multi else space.mode,
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=space.max_concurrent),
            scheduler=build_scheduler(space, plan.max_epochs),
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
    study = {"storage": plan.study_storage, "name": name, "snapshot": plan.study_snapshot}
    return _fit_and_prune(tuner_, plan.experiment, space, study)


def _fit_and_prune(tuner_, experiment: str, space: SearchSpace, study: dict):
    """Run the search, then prune what its last snapshot records as finished (trials that
    finished after the retention callback's last check) and close the study's orphans."""
    results = tuner_.fit()
    if _close_study(study, experiment, space.trials) and study.get("snapshot"):
        upload_snapshot(study["storage"], experiment)  # Tune's last snapshot predates that
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
            "give the storage location of the interrupted search (--storage)"
        )
    filesystem, path = storage.pyarrow_filesystem(experiment)
    if not tune.Tuner.can_restore(path, storage_filesystem=filesystem):
        raise UserError(
            f"{experiment} has no search state to resume from yet (the driver stopped before "
            "Tune's first snapshot); start a new search"
        )
    return storage.read_json(meta_url)


def resume_search(experiment: str, study: str | None = None):
    """Continue an interrupted search (Ctrl-C, or a driver killed outright) where it stopped.

    Finished trials keep their results; unfinished ones resume from their last checkpoint;
    the searcher, with the same Optuna study, goes on to the space's trial count. Trials
    that Optuna had started but Tune never recorded (the driver died in between) are marked
    failed in the study so that they do not linger as running.

    Args:
        study: the study's storage URL, when it is not the one ``search.json`` records (it
            holds no password) or the bucket's snapshot.

    Raises:
        UserError: nothing to resume at ``experiment``, or its study is not found.
    """
    from ray import tune

    _tune_environment()
    experiment = storage.normalize(experiment)
    meta = check_resumable(experiment)
    meta["study"] = {**meta["study"], "storage": prepare_resume(meta, experiment, study)}
    bind(experiment, meta["study"]["storage"])  # the searcher Tune unpickles opens it
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
    return _fit_and_prune(tuner_, experiment, space, meta["study"])


def _close_study(study: dict, experiment: str, planned: int) -> bool:
    """Once the search has run all its trials and Tune's snapshot records every one as
    finished or errored, no Tune trial can report to an Optuna trial any more: fail those
    still running (orphans of a killed driver, including from experiments written before
    Optuna trials named their Tune trial)."""
    import optuna

    fs, path = storage.filesystem(experiment)
    states = trial_states(fs, path)
    if len(states) < planned or any(s not in ("TERMINATED", "ERROR") for s, _ in states.values()):
        return False
    storage_ = optuna.storages.RDBStorage(study["storage"])
    study_id = storage_.get_study_id_from_name(study["name"])
    closed = False
    for trial in storage_.get_all_trials(study_id, deepcopy=False):
        if trial.state == optuna.trial.TrialState.RUNNING:
            storage_.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
            closed = True
    return closed


def _fail_orphans(study: dict, experiment: str) -> None:
    """Mark as failed the Optuna trials a killed driver left running that no resumed Tune
    trial will finish: those whose Tune trial the snapshot does not record as unfinished.

    Read from the study (each Optuna trial names its Tune trial) and Tune's JSON snapshot;
    nothing is unpickled. Trials of experiments from before that record are left alone.
    """
    import optuna

    from tuner.search.searcher import TUNE_TRIAL_ATTR

    fs, path = storage.filesystem(experiment)
    resuming = {tid for tid, (state, _) in trial_states(fs, path).items() if state != "TERMINATED"}
    storage_ = optuna.storages.RDBStorage(study["storage"])
    study_id = storage_.get_study_id_from_name(study["name"])
    for trial in storage_.get_all_trials(study_id, deepcopy=False):
        tune_id = trial.user_attrs.get(TUNE_TRIAL_ATTR)
        if trial.state == optuna.trial.TrialState.RUNNING and tune_id and tune_id not in resuming:
            storage_.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)

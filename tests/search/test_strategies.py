"""Samplers and schedulers chosen in the space file: checked like every key, built from the
registries, run through the real machinery (Ray Tune + OptunaSearch + the scheduler) with a
trainable that reports simulated learning curves; a multi-objective search and its Pareto
front."""

import json
import math
import tempfile

import optuna
import pytest

from tests.conftest import REPO
from tuner.cli import main
from tuner.config import SearchSpace, apply_overrides
from tuner.errors import UserError
from tuner.results.leaderboard import leaderboard, pareto_front
from tuner.search.runner import SearchPlan, _max_epochs, run_search
from tuner.search.space import check_space
from tuner.search.strategies import SAMPLERS, SCHEDULERS, build_sampler, build_scheduler

EPOCHS = 4
SPACE = {
    "name": "sim",
    "task": "lesion_vs_tissue",
    "trials": 6,
    "max_concurrent": 2,
    "seed": 5,
    "sampler": {"type": "tpe", "n_startup_trials": 2},
    "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
    "fixed": {"epochs": EPOCHS, "input_size": 48},
    "space": {
        "backbone": {"type": "categorical", "choices": ["small_vgg_bn", "resnet18"]},
        "dropout": {"type": "float", "low": 0.0, "high": 0.5},
        "lr": {"type": "log-float", "low": 1.0e-4, "high": 1.0e-2},
    },
}
MULTI = {
    "metrics": [{"name": "val_roc_auc", "mode": "max"}, {"name": "inference_ms", "mode": "min"}],
    "sampler": {"type": "nsga2", "population_size": 4},
    "scheduler": {"type": "fifo"},
}


def space(**changes) -> SearchSpace:
    return SearchSpace.model_validate({**SPACE, **changes})


def simulated(config: dict) -> None:
    """Reports a learning curve whose height depends on the config, with a checkpoint per
    epoch (``checkpoint.json`` as real trials write it) so that paused trials resume."""
    from ray import tune

    final = 0.95 - 2.0 * (config["dropout"] - 0.2) ** 2 - 0.05 * (math.log10(config["lr"]) + 3) ** 2
    cost = {"resnet18": 9.0, "small_vgg_bn": 2.0}[config["backbone"]] + config["dropout"]
    start = 0
    resumed = tune.get_checkpoint()
    if resumed:
        with resumed.as_directory() as folder, open(f"{folder}/checkpoint.json") as f:
            start = json.load(f)["epoch"]
    for epoch in range(start + 1, int(config["epochs"]) + 1):
        metrics = {
            "epoch": epoch,
            "val_roc_auc": 0.5 + (final - 0.5) * (1 - math.exp(-epoch / 1.5)),
            "val_loss": 1.0 / epoch,
            "inference_ms": cost,
            "params_m": 11.0 if config["backbone"] == "resnet18" else 0.4,
        }
        with tempfile.TemporaryDirectory() as folder:
            with open(f"{folder}/checkpoint.json", "w") as f:
                json.dump({"epoch": epoch, "metrics": metrics}, f)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def run(tmp_path, search_space: SearchSpace, name: str):
    experiment = str(tmp_path / name)
    plan = SearchPlan(
        space=search_space,
        space_file="test",
        data="",
        dataset_id="simulated",
        experiment=experiment,
        study_storage=f"sqlite:///{tmp_path}/{name}.db",
        max_epochs=_max_epochs(search_space),
        constants={},
    )
    run_search(plan, verbose=0, max_failures=0, trainable=simulated, reuse_actors=True)
    study = optuna.load_study(study_name=name, storage=plan.study_storage)
    return experiment, study


# ------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "changes, fragments",
    [
        ({"sampler": {"type": "bayes"}}, ["sampler.type", "unknown sampler 'bayes'", "tpe, gp"]),
        (
            {"scheduler": {"type": "ashaa"}},
            ["scheduler.type", "unknown scheduler 'ashaa'", "did you mean 'asha'"],
        ),
        (
            {"sampler": {"type": "gp", "n_startup": 3}},
            ["sampler.n_startup", "unknown option of sampler gp", "n_startup_trials"],
        ),
        ({"sampler": {"type": "random", "seed": 3}}, ["allowed: none (give type alone)"]),
        ({"scheduler": {"type": "asha", "grace_period": 0}}, ["scheduler.grace_period"]),
        ({"metric": "val_auc"}, ["metric: unknown metric 'val_auc'", "val_roc_auc"]),
        (
            {"metrics": [{"name": "val_roc_auc"}, {"name": "latency", "mode": "min"}]},
            ["metrics[1].name", "unknown metric 'latency'", "inference_ms"],
        ),
        (
            {"metrics": MULTI["metrics"], "sampler": {"type": "tpe"}},
            ["scheduler asha stops trials by one metric", "scheduler: {type: fifo}"],
        ),
        (
            {**MULTI, "sampler": {"type": "cmaes"}},
            ["sampler cmaes optimises one metric", "use one of: tpe, gp, random, qmc, nsga2"],
        ),
    ],
)
def test_bad_strategies_and_metrics_are_one_error_naming_the_key(changes, fragments):
    with pytest.raises(UserError) as caught:
        check_space(space(**changes), "sim.yaml")
    message = str(caught.value)
    assert "\n" not in message and message.startswith("sim.yaml: ")
    for fragment in fragments:
        assert fragment in message, message


def test_metric_and_metrics_must_agree():
    with pytest.raises(ValueError, match="differs from metrics"):
        space(metric="val_loss", metrics=MULTI["metrics"])
    assert space(metrics=MULTI["metrics"]).metric == "val_roc_auc"


def test_old_tpe_and_asha_sections_still_read():
    """Spaces and experiments written before samplers were pluggable (search.json of a
    resumed search) keep their meaning."""
    old = {k: v for k, v in SPACE.items() if k not in ("sampler", "scheduler")}
    loaded = SearchSpace.model_validate(
        {**old, "tpe": {"n_startup_trials": 7}, "asha": {"grace_period": 3}}
    )
    assert loaded.sampler.type == "tpe" and loaded.sampler.options == {"n_startup_trials": 7}
    assert loaded.scheduler.type == "asha" and loaded.scheduler.options == {"grace_period": 3}
    changed = apply_overrides(loaded, {"asha.grace_period": 2, "sampler.type": "gp"}, "old")
    assert changed.scheduler.options == {"grace_period": 2}
    assert changed.sampler.type == "gp" and changed.sampler.options == {}
    # An old whole section, as --set tpe={n_startup_trials: 4} gave it.
    again = apply_overrides(changed, {"tpe": {"n_startup_trials": 4}}, "old")
    assert again.sampler.type == "tpe" and again.sampler.options == {"n_startup_trials": 4}
    # An old dotted key names its strategy: on another one it is an error, not a quiet change.
    with pytest.raises(UserError, match="the sampler is gp, not tpe; use sampler.n_startup"):
        apply_overrides(changed, {"tpe.n_startup_trials": 3}, "old")


def test_overrides_of_strategies_keep_what_they_give():
    base = space()
    # The type is applied first, whatever the order: options given with it stay.
    for overrides in (
        {"scheduler.grace_period": 2, "scheduler.type": "median"},
        {"scheduler.type": "median", "scheduler.grace_period": 2},
    ):
        changed = apply_overrides(base, overrides, "sim")
        assert changed.scheduler.type == "median"
        assert changed.scheduler.options == {"grace_period": 2}
    assert apply_overrides(base, {"sampler": "gp"}, "sim").sampler.type == "gp"
    assert SearchSpace.model_validate({**SPACE, "scheduler": "fifo"}).scheduler.type == "fifo"
    # Objectives given as objects keep metric and mode in step with metrics[0].
    from tuner.config import Objective

    multi = space(metrics=[Objective(name="val_loss", mode="min"), Objective(name="params_m")])
    assert (multi.metric, multi.mode) == ("val_loss", "min")


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_registered_sampler_builds_seeded(name):
    sampler = build_sampler(space(sampler={"type": name}))
    assert isinstance(sampler, optuna.samplers.BaseSampler)
    # Seeded: two samplers of one space propose the same first trial.
    first = []
    for _ in range(2):
        study = optuna.create_study(sampler=build_sampler(space(sampler={"type": name})))
        trial = study.ask()
        first.append(trial.suggest_float("x", 0.0, 1.0))
    assert first[0] == first[1]


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_every_registered_scheduler_builds(name):
    from ray.tune.schedulers import TrialScheduler

    assert isinstance(build_scheduler(space(scheduler={"type": name}), EPOCHS), TrialScheduler)


def test_a_taken_strategy_name_is_refused():
    from tuner.search.strategies import register_sampler, register_scheduler

    with pytest.raises(UserError, match="already registered"):
        register_sampler("tpe", options=SAMPLERS["tpe"].options, multi_objective=True)(print)
    with pytest.raises(UserError, match="already registered"):
        register_scheduler("asha", options=SCHEDULERS["asha"].options)(print)


# --------------------------------------------------------------- through the machinery
@pytest.mark.slow
@pytest.mark.parametrize(
    "sampler, scheduler",
    [
        ({"type": "gp", "n_startup_trials": 2}, {"type": "asha", "grace_period": 1}),
        ({"type": "cmaes", "n_startup_trials": 2}, {"type": "fifo"}),
        ({"type": "qmc", "scramble": True}, {"type": "median", "grace_period": 1}),
        ({"type": "random"}, {"type": "hyperband", "reduction_factor": 2}),
    ],
    ids=["gp-asha", "cmaes-fifo", "qmc-median", "random-hyperband"],
)
def test_searches_run_with_each_kind_of_sampler_and_scheduler(
    ray_local, tmp_path, sampler, scheduler
):
    name = f"{sampler['type']}-{scheduler['type']}"
    experiment, study = run(tmp_path, space(sampler=sampler, scheduler=scheduler), name)
    # Every trial ended in the study: complete, or pruned when the scheduler stopped it
    # without a final result (HyperBand); none left running or failed.
    states = [t.state for t in study.trials]
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    assert len(states) == 6 and all(s in done for s in states), states
    # Each Optuna trial names its Tune trial (what a resume reads instead of a pickle).
    board = leaderboard(experiment)
    assert sorted(t.user_attrs["tune_trial_id"] for t in study.trials) == sorted(
        t.trial_id for t in board.trials
    )
    epochs = sorted(t.epochs for t in board.trials)
    if scheduler["type"] == "fifo":
        assert epochs == [EPOCHS] * 6  # nothing stops a trial early
    else:
        assert epochs[-1] == EPOCHS  # the best went on to the end
    search = json.loads((tmp_path / name / "search.json").read_text())
    assert (
        search["space"]["sampler"] == sampler
        and search["space"]["scheduler"]["type"] == (scheduler["type"])
    )


@pytest.mark.slow
def test_a_multi_objective_search_shows_its_pareto_front(ray_local, tmp_path, capsys):
    experiment, study = run(tmp_path, space(**MULTI), "multi")
    assert len(study.directions) == 2
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 6 and all(len(t.values) == 2 for t in complete)
    board = leaderboard(experiment)
    assert [o["name"] for o in board.objectives] == ["val_roc_auc", "inference_ms"]
    front = board.pareto
    assert front and all(t.checkpoint for t in front)
    for trial in board.trials:  # off the front: some front trial is at least as good on both
        if not trial.pareto:
            assert any(
                f.metrics["val_roc_auc"] >= trial.metrics["val_roc_auc"]
                and f.metrics["inference_ms"] <= trial.metrics["inference_ms"]
                for f in front
            )
    # Optuna's own Pareto front of the study agrees (every trial ran all its epochs).
    ours = {t.trial_id for t in front}
    assert {t.user_attrs["tune_trial_id"] for t in study.best_trials} == ours
    capsys.readouterr()
    assert main(["best", experiment]) == 0
    out = capsys.readouterr().out
    assert "Pareto front on val_roc_auc (max), inference_ms (min)" in out
    assert f"{len(front)} trials" in out


def test_pareto_front_of_points():
    points = [(0.9, 5.0), (0.8, 2.0), (0.85, 6.0), (0.9, 5.0), (0.7, 1.0)]
    assert pareto_front(points, ["max", "min"]) == [True, True, False, True, True]


def test_presets_use_registered_strategies():
    import yaml

    from tuner.config import load_space

    for path in sorted((REPO / "search_spaces").glob("*.yaml")):
        assert not {"tpe", "asha"} & set(yaml.safe_load(path.read_text())), path
        loaded = load_space(path)
        check_space(loaded, str(path))
        assert loaded.sampler.type in SAMPLERS and loaded.scheduler.type in SCHEDULERS


def _study_with_trials(tmp_path, tune_ids):
    """A real SQLite study with one RUNNING Optuna trial per Tune trial id (None: a trial
    without the record, as an older version wrote them)."""
    from tuner.search.searcher import TUNE_TRIAL_ATTR

    url = f"sqlite:///{tmp_path}/study.db"
    study = optuna.create_study(study_name="orphans", storage=url)
    for tune_id in tune_ids:
        trial = study.ask()
        if tune_id:
            trial.set_user_attr(TUNE_TRIAL_ATTR, tune_id)
    return {"storage": url, "name": "orphans"}


def _snapshot(folder, states: dict[str, str]) -> None:
    """Tune's experiment snapshot as it writes it: trial JSON and run metadata JSON."""
    folder.mkdir(exist_ok=True)
    data = [
        [json.dumps({"trial_id": t, "status": s}), json.dumps({"num_failures": "0"})]
        for t, s in states.items()
    ]
    (folder / "experiment_state-2026-12-01_00-00-00.json").write_text(
        json.dumps({"trial_data": data})
    )


def _states(study: dict) -> list[str]:
    loaded = optuna.load_study(study_name=study["name"], storage=study["storage"])
    return [t.state.name for t in loaded.trials]


def test_a_resume_fails_only_the_optuna_trials_no_tune_trial_goes_on_with(tmp_path):
    from tuner.search.runner import _close_study, _fail_orphans

    study = _study_with_trials(tmp_path, ["a", "b", "c", None])
    experiment = tmp_path / "exp"
    _snapshot(experiment, {"a": "RUNNING", "b": "TERMINATED"})  # c: never recorded
    _fail_orphans(study, str(experiment))
    # a resumes; b finished (its trial is stale); c was never recorded; the unnamed one is
    # left to the end of the search.
    assert _states(study) == ["RUNNING", "FAIL", "FAIL", "RUNNING"]
    _close_study(study, str(experiment), planned=3)  # a still running: nothing closed
    assert _states(study) == ["RUNNING", "FAIL", "FAIL", "RUNNING"]
    _snapshot(experiment, {"a": "TERMINATED", "b": "TERMINATED", "d": "ERROR"})
    _close_study(study, str(experiment), planned=4)  # fewer trials than planned: not yet
    assert _states(study) == ["RUNNING", "FAIL", "FAIL", "RUNNING"]
    _close_study(study, str(experiment), planned=3)  # all ran and ended: none can report
    assert _states(study) == ["FAIL", "FAIL", "FAIL", "FAIL"]

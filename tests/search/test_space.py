import optuna

from tests.conftest import REPO
from tuner.config import load_space
from tuner.search.space import DefineByRun
from tuner.training.config import TrialConfig


def test_define_by_run_samples_valid_trial_configs():
    space = load_space(REPO / "search_spaces" / "quick.yaml")
    define = DefineByRun(space, {"data": "/data", "seed": 3})
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(20):
        trial = study.ask()
        constants = define(trial)
        config = TrialConfig.model_validate({**trial.params, **constants})
        assert set(trial.params) == set(space.space)
        assert config.data == "/data" and config.epochs == space.fixed["epochs"]
        assert space.space["dropout"].low <= config.dropout <= space.space["dropout"].high
        seen.add(config.backbone)
        study.tell(trial, 0.5)
    assert seen == set(space.space["backbone"].choices)

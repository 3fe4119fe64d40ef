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


def test_conditional_dimensions_exist_only_when_their_condition_holds(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(
        "name: t\n"
        "fixed: {head_epochs: 0}\n"
        "space:\n"
        "  head_epochs: {type: int, low: 1, high: 3, when: {transfer: [imagenet]}}\n"
        "  transfer: {type: categorical, choices: [imagenet, random]}\n"
        "  lr: {type: log-float, low: 1.0e-5, high: 1.0e-2}\n"
    )
    space = load_space(path)
    assert space.ordered() == ["transfer", "lr", "head_epochs"]
    assert space.space["lr"].log
    define = DefineByRun(space, {"data": "/data"})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    transfers = set()
    for _ in range(30):
        trial = study.ask()
        constants = define(trial)
        config = TrialConfig.model_validate({**trial.params, **constants})
        transfers.add(config.transfer)
        if config.transfer == "imagenet":
            assert "head_epochs" in trial.params and "head_epochs" not in constants
            assert 1 <= config.head_epochs <= 3
        else:
            assert "head_epochs" not in trial.params
            assert config.head_epochs == 0  # the fixed fallback
        assert 1e-5 <= config.lr <= 1e-2
        study.tell(trial, 0.5)
    assert transfers == {"imagenet", "random"}


DROPOUT = "space:\n  dropout: {type: float, low: 0.0, high: 0.5}\n"


def test_two_view_and_per_breast_metric_need_whole_images(tmp_path):
    import re

    import pytest

    from tuner.errors import UserError
    from tuner.search.space import check_space

    cases = {
        "view: roi\nspace:\n  fusion: {type: categorical, choices: [single, two_view]}\n": (
            "space.fusion.choices[1]: fusion two_view pairs the CC and MLO"
        ),
        "view: roi\nmetric: val_breast_roc_auc\n"
        + DROPOUT: "metric: val_breast_roc_auc is reported",
        "view: whole\ntask: four_class\nfixed: {fusion: two_view}\n" + DROPOUT: "worst finding",
    }
    for text, message in cases.items():
        path = tmp_path / "space.yaml"
        path.write_text("name: t\n" + text)
        with pytest.raises(UserError, match=re.escape(message)):
            check_space(load_space(path), str(path))
    path.write_text(
        "name: t\nview: whole\nmetric: val_breast_roc_auc\n"
        "space:\n  fusion: {type: categorical, choices: [single, two_view]}\n"
    )
    check_space(load_space(path), str(path))  # whole images: both fusions, per breast

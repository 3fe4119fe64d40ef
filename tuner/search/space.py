"""A search-space file as Optuna sees it: checked against the trial config, then compiled to
a define-by-run function for ``OptunaSearch``.

The define-by-run function only asks Optuna for values (Ray warns when it takes over a
second); data loading and training belong in the trial.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from tuner.config import Categorical, FloatRange, SearchSpace
from tuner.data.preprocess import whole_shape
from tuner.data.tasks import get_task
from tuner.errors import UserError, unknown_choice
from tuner.models.backbones import get_spec
from tuner.models.classifier import stem_blocks
from tuner.search.strategies import check_strategies
from tuner.training.config import CATEGORICAL_ONLY, SEARCHABLE, WHOLE_NUMBERS, TrialConfig
from tuner.training.trainable import REPORTED_METRICS

__all__ = ["check_space", "backbone_side", "DefineByRun"]

_ABSENT = object()


def _check_value(source: str, where: str, name: str, value: Any, space=None) -> None:
    # Settings checked against each other (fusion needs whole images) see the space's own.
    context = {"view": space.view, "task": space.task} if space is not None else {}
    try:
        TrialConfig.model_validate({**context, name: value})
    except ValidationError as exc:
        message = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise UserError(f"{source}: {where}: {message}") from None
    except UserError as exc:  # registry look-ups raise the user-facing error directly
        raise UserError(f"{source}: {where}: {exc}") from None


def check_space(space: SearchSpace, source: str = "search space") -> None:
    """Check every setting and every choice of ``space`` before any trial starts.

    Raises:
        UserError: naming the file, the key and the allowed values.
    """
    try:
        get_task(space.task)
    except UserError as exc:
        raise UserError(f"{source}: task: {exc}") from None
    for i, objective in enumerate(space.objectives):
        if objective.name not in REPORTED_METRICS:
            where = f"metrics[{i}].name" if space.metrics else "metric"
            message = unknown_choice("metric", objective.name, REPORTED_METRICS)
            raise UserError(f"{source}: {where}: {message}")
        if objective.name == "val_breast_roc_auc" and space.view != "whole":
            where = f"metrics[{i}].name" if space.metrics else "metric"
            raise UserError(
                f"{source}: {where}: val_breast_roc_auc is reported for whole images (view: "
                "whole); ROI tiles report val_roc_auc"
            )
    check_strategies(space, source)
    for section, names in (("fixed", space.fixed), ("space", space.space)):
        for name in names:
            if name not in SEARCHABLE:
                raise UserError(
                    f"{source}: {section}.{name}: {unknown_choice('setting', name, SEARCHABLE)}"
                )
    for name, value in space.fixed.items():
        _check_value(source, f"fixed.{name}", name, value, space)
    for name, dim in space.space.items():
        if name in CATEGORICAL_ONLY and not isinstance(dim, Categorical):
            raise UserError(f"{source}: space.{name}: {name} takes type: categorical")
        if name in WHOLE_NUMBERS and isinstance(dim, FloatRange):
            raise UserError(f"{source}: space.{name}: {name} is a whole number; use type: int")
        if isinstance(dim, Categorical):
            for i, choice in enumerate(dim.choices):
                _check_value(source, f"space.{name}.choices[{i}]", name, choice, space)
        else:
            _check_value(source, f"space.{name}.low", name, dim.low)
            _check_value(source, f"space.{name}.high", name, dim.high)

    limits = space.values("max_backbone_size", TrialConfig().max_backbone_size)
    sides = {
        size: min(backbone_side(size, space.view, int(limit)) for limit in limits)
        for size in space.input_sizes()
    }
    size, smallest = min(sides.items(), key=lambda item: item[1])
    for backbone in space.values("backbone", TrialConfig().backbone):
        spec = get_spec(backbone)
        if spec.min_size > smallest:
            raise UserError(
                f"{source}: backbone {backbone} needs inputs of at least {spec.min_size} px "
                f"but input_size may be {size} ({smallest} px on its short side at the "
                f"backbone); raise input_size or drop {backbone}"
            )


def backbone_side(input_size: int, view: str, max_backbone_size: int = 512) -> int:
    """The short side of what the backbone sees: whole images are 1.5:1, and the stem
    halves inputs above ``max_backbone_size``."""
    short = whole_shape(input_size)[1] if view == "whole" else input_size
    return short // 2 ** stem_blocks(input_size, max_backbone_size)


class DefineByRun:
    """Optuna define-by-run function for a space; returns the fixed settings.

    A plain class (not a closure) so that Ray Tune can pickle the searcher with its state.
    """

    def __init__(self, space: SearchSpace, constants: dict[str, Any]):
        # Conditions first: a dimension is sampled after the ones its condition names.
        self.dimensions = {name: space.space[name].model_dump() for name in space.ordered()}
        self.constants = {**space.fixed, **constants}

    def __call__(self, trial) -> dict[str, Any]:
        sampled: dict[str, Any] = {}
        for name, dim in self.dimensions.items():
            if any(
                sampled.get(parent, _ABSENT) not in values for parent, values in dim["when"].items()
            ):
                continue
            if dim["type"] == "categorical":
                sampled[name] = trial.suggest_categorical(name, dim["choices"])
            elif dim["type"] in ("float", "log-float"):
                sampled[name] = trial.suggest_float(name, dim["low"], dim["high"], log=dim["log"])
            else:
                step = 1 if dim["log"] else dim["step"]
                sampled[name] = trial.suggest_int(
                    name, dim["low"], dim["high"], step=step, log=dim["log"]
                )
        # OptunaSearch merges what this returns over the sampled values: return only the
        # settings not sampled in this trial (fixed fallbacks of conditional dimensions too).
        return {k: v for k, v in self.constants.items() if k not in sampled}

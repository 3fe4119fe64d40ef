"""Search-space files: the schema and the YAML loader.

A space file names what is searched (``space``), what is fixed (``fixed``) and how the
search runs (metric, trials, concurrency, ASHA, resources). Errors name the file, the key and
the allowed values. Which values are allowed for each dimension (registered backbones,
transfer degrees, ...) is checked by ``tuner.search.space``, which knows the trial config.

Example::

    name: quick
    metric: val_roc_auc
    mode: max
    trials: 8
    fixed: {epochs: 6, batch_size: 32}
    space:
      backbone: {type: categorical, choices: [resnet18, mobilenet_v3_small]}
      dropout: {type: float, low: 0.0, high: 0.5}
      lr: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tuner.errors import UserError

__all__ = [
    "Categorical",
    "FloatRange",
    "IntRange",
    "Dimension",
    "Asha",
    "Tpe",
    "Resources",
    "SearchSpace",
    "load_space",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Categorical(_Strict):
    type: Literal["categorical"]
    choices: list[Any] = Field(min_length=1)


class FloatRange(_Strict):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self):
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


class IntRange(_Strict):
    type: Literal["int"]
    low: int
    high: int
    step: int = 1
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self):
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self


Dimension = Annotated[Categorical | FloatRange | IntRange, Field(discriminator="type")]


class Asha(_Strict):
    """ASHA early stopping; the time unit is the epoch."""

    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(2.0, gt=1.0)


class Tpe(_Strict):
    """Optuna's TPE sampler; it samples at random for its first ``n_startup_trials``."""

    n_startup_trials: int = Field(10, ge=1)


class Resources(_Strict):
    """Resources of one trial; fractional GPUs pack several trials on one GPU."""

    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0)


class SearchSpace(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    task: str = "benign_vs_malignant"
    view: Literal["roi", "whole"] = "roi"
    metric: str = "val_roc_auc"
    mode: Literal["max", "min"] = "max"
    trials: int = Field(10, ge=1)
    max_concurrent: int = Field(2, ge=1)
    seed: int = 0
    asha: Asha = Asha()
    tpe: Tpe = Tpe()
    resources: Resources = Resources()
    fixed: dict[str, Any] = {}
    space: dict[str, Dimension] = Field(min_length=1)

    @model_validator(mode="after")
    def _disjoint(self):
        both = sorted(set(self.fixed) & set(self.space))
        if both:
            raise ValueError(f"{', '.join(both)} both fixed and searched; keep one")
        return self

    def values(self, name: str, default: Any) -> list[Any]:
        """Every value a categorical or fixed setting may take in this space."""
        dim = self.space.get(name)
        if isinstance(dim, Categorical):
            return list(dim.choices)
        if dim is not None:
            raise ValueError(f"{name} is a range, not a list of values")
        return [self.fixed.get(name, default)]

    def input_sizes(self) -> list[int]:
        """Every input size a trial of this space may ask for."""
        dim = self.space.get("input_size")
        if isinstance(dim, IntRange):
            return list(range(dim.low, dim.high + 1, dim.step))
        return sorted({int(size) for size in self.values("input_size", 224)})


def _location(error: dict) -> str:
    # Drop pydantic's union tags ("categorical", "float", ...) from the key path.
    parts = [str(p) for p in error["loc"] if p not in ("categorical", "float", "int")]
    return ".".join(parts) or "(top level)"


def load_space(path: str | Path) -> SearchSpace:
    """Load and check a search-space YAML file.

    Raises:
        UserError: the file is missing, is not YAML, or breaks the schema; the message names
            the file and the key.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"search space file {path} not found (presets are in search_spaces/)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(
            f"{path}:{where} is not valid YAML: {getattr(exc, 'problem', exc)}"
        ) from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of settings at the top level")
    try:
        return SearchSpace.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            allowed = _allowed_keys(error["loc"])
            message = f"unknown key; allowed: {', '.join(allowed)}" if allowed else "unknown key"
        elif error["type"] == "union_tag_invalid":
            message = "unknown dimension type; allowed: categorical, float, int"
        raise UserError(f"{path}: {_location(error)}: {message}") from None


def _allowed_keys(loc: tuple) -> list[str]:
    model: type[BaseModel] = SearchSpace
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        if field is None:
            if part in ("categorical", "float", "int"):
                model = {"categorical": Categorical, "float": FloatRange, "int": IntRange}[part]
            continue
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
    return list(model.model_fields)

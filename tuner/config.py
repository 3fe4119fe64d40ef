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
      transfer: {type: categorical, choices: [imagenet, random]}
      dropout: {type: float, low: 0.0, high: 0.5}
      lr: {type: log-float, low: 1.0e-4, high: 3.0e-3}
      head_epochs: {type: int, low: 1, high: 3, when: {transfer: [imagenet]}}

Dimension types: ``categorical`` (``choices``), ``int`` (``low``, ``high``, ``step``, ``log``),
``float`` (``low``, ``high``, ``log``) and ``log-float``. ``when`` makes a dimension
conditional: it is sampled only in trials where the named categorical dimensions take one of
the listed values (elsewhere the trial uses the fixed value or the default).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

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
    "apply_overrides",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Dimension(_Strict):
    # A condition: the dimension exists only in trials where each named categorical
    # dimension takes one of the listed values, e.g. ``when: {transfer: [imagenet]}``.
    when: dict[str, list[Any]] = {}

    @field_validator("when", mode="before")
    @classmethod
    def _listed(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: v if isinstance(v, list) else [v] for k, v in value.items()}
        return value


class Categorical(_Dimension):
    type: Literal["categorical"]
    choices: list[Any]

    @field_validator("choices")
    @classmethod
    def _not_empty(cls, value: list[Any]) -> list[Any]:
        if not value:
            raise ValueError("empty choice list; give at least one choice (or fix the value)")
        return value


class FloatRange(_Dimension):
    """A float range; ``type: log-float`` is shorthand for ``type: float`` with ``log: true``."""

    type: Literal["float", "log-float"]
    low: float
    high: float
    log: bool = False

    @model_validator(mode="before")
    @classmethod
    def _log_float(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("type") == "log-float":
            data = {**data, "log": True}
        return data

    @model_validator(mode="after")
    def _ordered(self):
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


class IntRange(_Dimension):
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

    @field_validator("gpu")
    @classmethod
    def _whole_or_fraction(cls, value: float) -> float:
        if value > 1 and value != int(value):
            raise ValueError(f"gpu {value}: use a fraction of one GPU or a whole number")
        return value


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
    keep_checkpoints: int = Field(1, ge=1)  # best checkpoints a finished trial keeps, + latest
    fixed: dict[str, Any] = {}
    space: dict[str, Dimension] = Field(min_length=1)

    @model_validator(mode="after")
    def _disjoint(self):
        # A conditional dimension may also be fixed: the fixed value applies where the
        # condition does not hold.
        both = sorted(n for n in set(self.fixed) & set(self.space) if not self.space[n].when)
        if both:
            raise ValueError(f"{', '.join(both)} both fixed and searched; keep one")
        for name, dim in self.space.items():
            for parent, values in dim.when.items():
                where = f"space.{name}.when.{parent}"
                if parent not in self.space:
                    raise ValueError(
                        f"{where}: condition on unknown dimension {parent!r}; "
                        f"dimensions: {', '.join(self.space)}"
                    )
                target = self.space[parent]
                if parent == name or not isinstance(target, Categorical):
                    raise ValueError(f"{where}: a condition needs another, categorical dimension")
                missing = [v for v in values if v not in target.choices]
                if missing:
                    raise ValueError(
                        f"{where}: {missing[0]!r} is not a choice of {parent}; "
                        f"allowed: {', '.join(map(str, target.choices))}"
                    )
        self.ordered()  # raises on a cycle
        return self

    def ordered(self) -> list[str]:
        """Dimension names with every condition's dimension before the ones it conditions."""
        done: list[str] = []
        pending = dict(self.space)
        while pending:
            ready = [n for n, d in pending.items() if all(p in done for p in d.when)]
            if not ready:
                raise ValueError(f"space: conditions form a cycle among {', '.join(pending)}")
            for name in ready:
                done.append(name)
                del pending[name]
        return done

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


_TAGS = ("categorical", "float", "log-float", "int")


def _location(error: dict) -> str:
    # Drop pydantic's union tags ("categorical", "float", ...) from the key path.
    parts = [str(p) for p in error["loc"] if p not in _TAGS]
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
    return _validate(raw, str(path))


def apply_overrides(space: SearchSpace, overrides: list[str], source: str) -> SearchSpace:
    """``space`` with ``KEY=VALUE`` overrides from the command line (values in YAML).

    - a search setting (``trials=4``, ``resources.gpu=0.5``, ``asha.grace_period=1``);
    - a searched dimension given a list narrows its choices (``backbone=[vgg19,resnet50]``),
      given a mapping replaces it, given one value fixes it (``input_size=224``);
    - anything else is a fixed trial setting (``epochs=2``).

    Raises:
        UserError: a malformed override, or a space the overrides make invalid.
    """
    raw = space.model_dump(mode="json")
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {item!r}: expected KEY=VALUE, for example --set epochs=2")
        key = key.strip()
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise UserError(f"--set {item!r}: {text!r} is not a YAML value") from None
        head, _, rest = key.partition(".")
        if head in SearchSpace.model_fields and head not in ("space", "fixed"):
            if rest:
                if not isinstance(raw.get(head), dict):
                    raise UserError(f"--set {item!r}: {head} has no sub-settings")
                raw[head] = {**raw[head], rest: value}
            else:
                raw[head] = value
        elif key in raw["space"]:
            dim = raw["space"][key]
            if isinstance(value, list) and dim["type"] == "categorical":
                dim["choices"] = value
            elif isinstance(value, dict):
                raw["space"][key] = value
            else:
                del raw["space"][key]
                raw["fixed"][key] = value
        else:
            raw["fixed"][key] = value
    return _validate(raw, f"{source} with --set {' '.join(overrides)}")


def _validate(raw: dict, source: str) -> SearchSpace:
    try:
        return SearchSpace.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            allowed = _allowed_keys(error["loc"])
            message = f"unknown key; allowed: {', '.join(allowed)}" if allowed else "unknown key"
        elif error["type"] == "union_tag_invalid":
            message = "unknown dimension type; allowed: categorical, float, log-float, int"
        where = f"{_location(error)}: " if error["loc"] else ""
        raise UserError(f"{source}: {where}{message}") from None


def _allowed_keys(loc: tuple) -> list[str]:
    model: type[BaseModel] = SearchSpace
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        if field is None:
            if part in _TAGS:
                model = {"categorical": Categorical, "int": IntRange}.get(part, FloatRange)
            continue
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
    return sorted(model.model_fields, key=lambda name: name == "when")  # "when" last

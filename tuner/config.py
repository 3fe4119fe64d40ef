"""Search-space files: the schema and the YAML loader.

A space file names what is searched (``space``), what is fixed (``fixed``) and how the
search runs (metric or metrics, trials, concurrency, sampler, scheduler, resources). Errors
name the file, the key and the allowed values. Which values are allowed for each dimension
(registered backbones, transfer degrees, ...) and which samplers and schedulers exist (with
their options) is checked by ``tuner.search`` (``space.check_space``), which knows the trial
config and the registries.

Example::

    name: quick
    metric: val_roc_auc
    mode: max
    trials: 8
    sampler: {type: gp, n_startup_trials: 4}       # Optuna's; tpe, cmaes, random, qmc, nsga2
    scheduler: {type: asha, grace_period: 2}        # Ray Tune's; hyperband, median, fifo
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
    "Strategy",
    "Objective",
    "Resources",
    "SearchSpace",
    "load_space",
    "parse_overrides",
    "describe_overrides",
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


class Strategy(BaseModel):
    """A sampler or scheduler section: a registered ``type`` and its options, e.g.
    ``{type: tpe, n_startup_trials: 4}``. The options are checked against the registered
    strategy's own schema by ``tuner.search.strategies``."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: str

    @property
    def options(self) -> dict[str, Any]:
        """The options given besides ``type``."""
        return dict(self.model_extra or {})


class Objective(_Strict):
    """One metric a search optimises and its direction."""

    name: str
    mode: Literal["max", "min"] = "max"


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
    # The metric trials are ranked and early-stopped by. ``metrics`` (two or more) makes the
    # search multi-objective: metric and mode are then its first entry's.
    metric: str = "val_roc_auc"
    mode: Literal["max", "min"] = "max"
    metrics: list[Objective] = []
    trials: int = Field(10, ge=1)
    max_concurrent: int = Field(2, ge=1)
    seed: int = 0
    # GP: the fewest simulated GPU-hours to the target and the most searches reaching it
    # (benchmarks/search_efficiency.py, 20 seeds; benchmarks/RESULTS.md).
    sampler: Strategy = Strategy(type="gp")
    scheduler: Strategy = Strategy(type="asha")
    resources: Resources = Resources()
    keep_checkpoints: int = Field(1, ge=1)  # best checkpoints a finished trial keeps, + latest
    fixed: dict[str, Any] = {}
    space: dict[str, Dimension] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _objectives(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        # Files and experiments written before samplers and schedulers were pluggable had
        # a ``tpe`` and an ``asha`` section: read them as what they were.
        for old, new in (("tpe", "sampler"), ("asha", "scheduler")):
            if old in data:
                if new in data:
                    raise ValueError(f"{old}: give {new}: {{type: {old}, ...}} alone")
                section = data.pop(old)
                data[new] = {"type": old, **(section if isinstance(section, dict) else {})}
        for section in ("sampler", "scheduler"):
            if isinstance(data.get(section), str):  # sampler: gp is sampler: {type: gp}
                data[section] = {"type": data[section]}
        metrics = data.get("metrics")
        if isinstance(metrics, list) and metrics:
            first = metrics[0]
            if isinstance(first, BaseModel):
                first = first.model_dump()
            if isinstance(first, dict) and "name" in first:
                for key, value in (("metric", first["name"]), ("mode", first.get("mode", "max"))):
                    if key in data and data[key] != value:
                        raise ValueError(
                            f"{key} {data[key]!r} differs from metrics[0]'s {value!r}; "
                            "give metrics alone (its first entry ranks the trials)"
                        )
                    data[key] = value
        return data

    @model_validator(mode="after")
    def _disjoint(self):
        names = [m.name for m in self.metrics]
        if len(set(names)) != len(names):
            raise ValueError(f"metrics: a metric is listed twice ({', '.join(names)})")
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

    @property
    def objectives(self) -> list[Objective]:
        """The metrics the search optimises, the ranking one first (one, or several)."""
        return list(self.metrics) or [Objective(name=self.metric, mode=self.mode)]

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

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
_LEGACY_SECTIONS = {"tpe": "sampler", "asha": "scheduler"}


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


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["epochs=2", "backbone=[vgg19,resnet50]"]`` (``--set KEY=VALUE``, values in YAML) as
    ``{"epochs": 2, "backbone": ["vgg19", "resnet50"]}``; a key given twice keeps its last.

    Raises:
        UserError: an item that is not KEY=VALUE, or a value that is not YAML.
    """
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {item!r}: expected KEY=VALUE, for example --set epochs=2")
        try:
            overrides[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError:
            raise UserError(f"--set {item!r}: {text!r} is not a YAML value") from None
    return overrides


def describe_overrides(overrides: dict[str, Any]) -> str:
    """Overrides as the ``--set`` arguments that give them (for messages and records)."""

    def text(value: Any) -> str:
        dumped = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**6)
        return dumped.strip().removesuffix("\n...")

    return " ".join(f"{key}={text(value)}" for key, value in overrides.items())


def apply_overrides(space: SearchSpace, overrides: dict[str, Any], source: str) -> SearchSpace:
    """``space`` with overrides (``--set KEY=VALUE`` on the command line, a dict in Python):

    - a search setting (``trials: 4``, ``resources.gpu: 0.5``, ``scheduler.grace_period: 1``,
      ``sampler: {type: gp}``);
    - a searched dimension given a list narrows its choices (``backbone: [vgg19, resnet50]``),
      given a mapping replaces it, given one value fixes it (``input_size: 224``);
    - anything else is a fixed trial setting (``epochs: 2``).

    Raises:
        UserError: a space the overrides make invalid (naming the overrides).
    """
    raw = space.model_dump(mode="json")
    # A strategy's type first: choosing another sampler drops the options of the old one,
    # not options given beside the new type.
    ordered = sorted(overrides.items(), key=lambda item: not str(item[0]).endswith(".type"))
    for key, value in ordered:
        key = str(key).strip()
        if not key:
            raise UserError(f"{source}: an override has an empty key")
        head, _, rest = key.partition(".")
        if head in _LEGACY_SECTIONS:  # tpe.x / asha.x: options of that strategy only
            head, legacy = _LEGACY_SECTIONS[head], head
            if rest and raw[head]["type"] != legacy:
                raise UserError(
                    f"{source}: override {key!r}: the {head} is {raw[head]['type']}, not "
                    f"{legacy}; use {head}.{rest}"
                )
            if not rest:
                value = {"type": legacy, **(value if isinstance(value, dict) else {})}
        if head in SearchSpace.model_fields and head not in ("space", "fixed"):
            if head in ("sampler", "scheduler") and isinstance(value, str) and not rest:
                value = {"type": value}  # sampler=gp
            if head in ("sampler", "scheduler") and rest == "type" and value != raw[head]["type"]:
                raw[head] = {"type": value}  # another strategy: the old one's options go
            elif rest:
                if not isinstance(raw.get(head), dict):
                    raise UserError(f"{source}: override {key!r}: {head} has no sub-settings")
                raw[head] = {**raw[head], rest: value}
            else:
                raw[head] = value
                if head == "metrics":  # metric and mode follow metrics[0]
                    raw.pop("metric", None)
                    raw.pop("mode", None)
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
    return _validate(raw, f"{source} with {describe_overrides(overrides)}")


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

"""Pluggable search strategies: Optuna samplers and Ray Tune schedulers, registered by name.

A space file chooses them by name with their options (``sampler: {type: gp}``,
``scheduler: {type: median, grace_period: 2}``); each registered strategy carries a pydantic
schema of its options, so an unknown name, an unknown option or a bad value is one error
naming the file, the key and the allowed values, before any trial starts (as Ray Tune's own
search-algorithm and scheduler registries and MONAI's ``HPOGen`` do). Options left out are
not passed on: the library's own defaults apply.

Multi-objective searches (``metrics:`` with two or more entries) need a sampler that handles
several objectives and the ``fifo`` scheduler: early stopping by one metric would judge a
trial on half of what the search asks for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tuner.config import SearchSpace, Strategy
from tuner.errors import UserError, unknown_choice

__all__ = [
    "Registered",
    "SAMPLERS",
    "SCHEDULERS",
    "register_sampler",
    "register_scheduler",
    "check_strategies",
    "build_sampler",
    "build_scheduler",
]


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def given(self) -> dict[str, Any]:
        """The options set in the file (unset ones keep the library's default)."""
        return self.model_dump(exclude_none=True)


@dataclass(frozen=True)
class Registered:
    """A registered sampler or scheduler: its options' schema and its factory."""

    name: str
    options: type[_Options]
    build: Callable[..., Any]
    multi_objective: bool  # can serve a search with several metrics
    summary: str


SAMPLERS: dict[str, Registered] = {}
SCHEDULERS: dict[str, Registered] = {}


def _register(registry: dict, kind: str, name: str, options, multi_objective: bool, summary):
    def register(build):
        if name in registry:
            raise UserError(f"{kind} {name!r} is already registered; use another name")
        registry[name] = Registered(name, options, build, multi_objective, summary)
        return build

    return register


def register_sampler(
    name: str, *, options: type[_Options], multi_objective: bool, summary: str = ""
):
    """Decorator: register ``build(seed, **options) -> optuna.samplers.BaseSampler``."""
    return _register(SAMPLERS, "sampler", name, options, multi_objective, summary)


def register_scheduler(
    name: str, *, options: type[_Options], multi_objective: bool = False, summary: str = ""
):
    """Decorator: register ``build(max_epochs, **options) -> ray.tune.schedulers.TrialScheduler``
    (metric and mode come from the search)."""
    return _register(SCHEDULERS, "scheduler", name, options, multi_objective, summary)


# ------------------------------------------------------------------------------- samplers
class _TpeOptions(_Options):
    n_startup_trials: int | None = Field(None, ge=1)  # random trials first (Optuna: 10)
    multivariate: bool | None = None
    constant_liar: bool | None = None  # Optuna 5: on, which suits trials run in parallel


class _GpOptions(_Options):
    n_startup_trials: int | None = Field(None, ge=1)
    deterministic_objective: bool | None = None


class _CmaEsOptions(_Options):
    n_startup_trials: int | None = Field(None, ge=0)
    sigma0: float | None = Field(None, gt=0)
    popsize: int | None = Field(None, ge=2)
    use_separable_cma: bool | None = None
    with_margin: bool | None = None  # handles int dimensions better
    lr_adapt: bool | None = None


class _NoOptions(_Options):
    pass


class _QmcOptions(_Options):
    qmc_type: Literal["sobol", "halton"] | None = None
    scramble: bool | None = None  # the seed matters only when scrambled


class _NsgaOptions(_Options):
    population_size: int | None = Field(None, ge=2)
    mutation_prob: float | None = Field(None, ge=0, le=1)
    crossover_prob: float | None = Field(None, ge=0, le=1)
    swapping_prob: float | None = Field(None, ge=0, le=1)


@register_sampler(
    "tpe", options=_TpeOptions, multi_objective=True, summary="tree-structured Parzen estimator"
)
def _tpe(seed: int, **options):
    import optuna

    return optuna.samplers.TPESampler(seed=seed, **options)


@register_sampler(
    "gp",
    options=_GpOptions,
    multi_objective=True,
    summary="Gaussian process; conditional dimensions sampled at random",
)
def _gp(seed: int, **options):
    import optuna

    # A conditional space is dynamic: Optuna's GP models the dimensions every trial has and
    # samples the conditional ones (head_epochs, ...) at random, warning on every trial.
    return optuna.samplers.GPSampler(seed=seed, warn_independent_sampling=False, **options)


@register_sampler(
    "cmaes",
    options=_CmaEsOptions,
    multi_objective=False,
    summary="CMA-ES on numeric dimensions; categorical ones sampled at random",
)
def _cmaes(seed: int, **options):
    import optuna

    # CMA-ES models numbers only: Optuna samples categorical dimensions (backbone, transfer,
    # ...) with its independent (random) sampler, and would warn about it on every trial.
    return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False, **options)


@register_sampler("random", options=_NoOptions, multi_objective=True, summary="uniform random")
def _random(seed: int):
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


@register_sampler(
    "qmc", options=_QmcOptions, multi_objective=True, summary="quasi-Monte Carlo (Sobol, Halton)"
)
def _qmc(seed: int, **options):
    import optuna

    # Trials start asynchronously on Ray, which QMC's sequence tolerates; its warning about
    # it would repeat for every trial.
    return optuna.samplers.QMCSampler(
        seed=seed, warn_asynchronous_seeding=False, warn_independent_sampling=False, **options
    )


@register_sampler(
    "nsga2", options=_NsgaOptions, multi_objective=True, summary="NSGA-II genetic algorithm"
)
def _nsga2(seed: int, **options):
    import optuna

    return optuna.samplers.NSGAIISampler(seed=seed, **options)


# ----------------------------------------------------------------------------- schedulers
class _AshaOptions(_Options):
    grace_period: int = Field(1, ge=1)  # epochs every trial runs before it can be stopped
    reduction_factor: float = Field(2.0, gt=1.0)
    brackets: int | None = Field(None, ge=1)


class _HyperbandOptions(_Options):
    reduction_factor: float | None = Field(None, gt=1.0)  # Ray: 3
    stop_last_trials: bool | None = None


class _MedianOptions(_Options):
    # Epochs before a trial may be stopped (Ray's default of 60 is meant for seconds).
    grace_period: int = Field(1, ge=0)
    min_samples_required: int | None = Field(None, ge=1)


@register_scheduler(
    "asha", options=_AshaOptions, summary="asynchronous successive halving (stops poor trials)"
)
def _asha(max_epochs: int, *, grace_period: int = 1, **options):
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(
        time_attr="training_iteration",
        max_t=max_epochs,
        grace_period=min(grace_period, max_epochs),
        **options,
    )


@register_scheduler(
    "hyperband", options=_HyperbandOptions, summary="synchronous HyperBand (pauses, resumes)"
)
def _hyperband(max_epochs: int, **options):
    from ray.tune.schedulers import HyperBandScheduler

    return HyperBandScheduler(time_attr="training_iteration", max_t=max_epochs, **options)


@register_scheduler(
    "median", options=_MedianOptions, summary="median stopping rule (below the running median)"
)
def _median(max_epochs: int, **options):
    from ray.tune.schedulers import MedianStoppingRule

    return MedianStoppingRule(time_attr="training_iteration", **options)


@register_scheduler("fifo", options=_NoOptions, multi_objective=True, summary="no early stopping")
def _fifo(max_epochs: int):
    from ray.tune.schedulers import FIFOScheduler

    return FIFOScheduler()


# ----------------------------------------------------------------------------- checking
def _options(kind: str, registry: dict, section: Strategy, source: str) -> _Options:
    if section.type not in registry:
        raise UserError(f"{source}: {kind}.type: {unknown_choice(kind, section.type, registry)}")
    schema = registry[section.type].options
    try:
        return schema.model_validate(section.options)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(p) for p in error["loc"])
        if error["type"] == "extra_forbidden":
            allowed = ", ".join(schema.model_fields) or "none (give type alone)"
            message = f"unknown option of {kind} {section.type}; allowed: {allowed}"
        else:
            message = error["msg"].removeprefix("Value error, ")
        raise UserError(f"{source}: {kind}.{key}: {message}") from None


def check_strategies(space: SearchSpace, source: str = "search space") -> None:
    """Check the sampler and scheduler sections of ``space`` and that they can serve its
    metrics.

    Raises:
        UserError: an unknown sampler or scheduler (listing the registered ones), an unknown
            or bad option, or a multi-objective space with a single-objective sampler or an
            early-stopping scheduler.
    """
    _options("sampler", SAMPLERS, space.sampler, source)
    _options("scheduler", SCHEDULERS, space.scheduler, source)
    if not space.multi_objective:
        return
    names = ", ".join(o.name for o in space.objectives)
    sampler = SAMPLERS[space.sampler.type]
    if not sampler.multi_objective:
        able = ", ".join(n for n, r in SAMPLERS.items() if r.multi_objective)
        raise UserError(
            f"{source}: sampler {sampler.name} optimises one metric but metrics lists several "
            f"({names}); use one of: {able}"
        )
    if not SCHEDULERS[space.scheduler.type].multi_objective:
        raise UserError(
            f"{source}: scheduler {space.scheduler.type} stops trials by one metric but "
            f"metrics lists several ({names}); use scheduler: {{type: fifo}} (every trial "
            "runs its epochs) or a single metric"
        )


def build_sampler(space: SearchSpace):
    """The seeded Optuna sampler ``space`` names (checked by :func:`check_strategies`)."""
    options = _options("sampler", SAMPLERS, space.sampler, "search space")
    return SAMPLERS[space.sampler.type].build(space.seed, **options.given())


def build_scheduler(space: SearchSpace, max_epochs: int):
    """The Ray Tune scheduler ``space`` names, its time unit the epoch."""
    options = _options("scheduler", SCHEDULERS, space.scheduler, "search space")
    return SCHEDULERS[space.scheduler.type].build(max_epochs, **options.given())

"""mammotune: distributed hyperparameter search for mammography classifiers.

The Python API; the ``mammotune`` command is a face over the same calls::

    import tuner

    source = tuner.synth("work/cbis", patients=80, scale=0.25)
    data = tuner.prepare(source, "work/dataset", sizes=[48, 64], context_px=150)
    experiment = tuner.search(
        "quick", data=data, storage="work/exp-1", trials=2, overrides={"epochs": 2}
    )
    print(experiment.leaderboard().best)
    tuner.evaluate(experiment, data=data, split="val")

Importing the package is cheap: torch, Ray and the rest load when a name is first used.
"""

import os as _os
from importlib import import_module as _import_module
from typing import TYPE_CHECKING

# Defaults for every process that imports the package (the CLI, Ray workers, tests): Ray must
# not phone home, and albumentations otherwise checks PyPI for updates on import. Users can
# still override either in their environment.
_os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

# A Ray token given in the environment turns on token mode. Ray reads the mode when it is
# first imported, so this runs on import, before any API call loads Ray (notebooks as the CLI).
from tuner.cluster import use_given_token as _use_given_token  # noqa: E402

_use_given_token()

__version__ = "0.1.0"

# Public name -> the module that defines it (imported on first use).
_EXPORTS = {
    "synth": "tuner.api",
    "prepare": "tuner.api",
    "load_space": "tuner.api",
    "presets": "tuner.api",
    "evaluate": "tuner.api",
    "predict": "tuner.api",
    "report": "tuner.api",
    "export": "tuner.api",
    "pretrain_mias": "tuner.api",
    "fetch_weights": "tuner.api",
    "submit": "tuner.api",
    "Job": "tuner.api",
    "Prediction": "tuner.api",
    "Predictions": "tuner.api",
    "Pretrained": "tuner.api",
    "Experiment": "tuner.results.experiment",
    "Trial": "tuner.results.leaderboard",
    "Leaderboard": "tuner.results.leaderboard",
    "Status": "tuner.results.leaderboard",
    "Evaluation": "tuner.results.evaluate",
    "Promotion": "tuner.promote.result",
    "Report": "tuner.results.report",
    "Bundle": "tuner.results.bundle",
    "Dataset": "tuner.data.dataset",
    "Synthetic": "tuner.data.dataset",
    "SearchSpace": "tuner.config",
    "register_backbone": "tuner.models.backbones",
    "UserError": "tuner.errors",
}

__all__ = [  # spelled out for tools that read it statically; a test checks it is _EXPORTS
    "__version__",
    "search",
    "synth",
    "prepare",
    "load_space",
    "presets",
    "evaluate",
    "predict",
    "report",
    "export",
    "pretrain_mias",
    "fetch_weights",
    "submit",
    "Job",
    "Prediction",
    "Predictions",
    "Pretrained",
    "Experiment",
    "Trial",
    "Leaderboard",
    "Status",
    "Evaluation",
    "Promotion",
    "Report",
    "Bundle",
    "Dataset",
    "Synthetic",
    "SearchSpace",
    "register_backbone",
    "UserError",
]

# ``tuner.search`` is the subpackage tuner/search/, made callable as the API's search function
# (see its __init__): a subpackage's name is bound to this module when it is imported, so a
# function of the same name could not stay here. Importing it costs nothing.
from tuner import search  # noqa: E402

if TYPE_CHECKING:  # for type checkers and IDEs; at run time names load on first use
    from tuner.api import (
        Job,
        Prediction,
        Predictions,
        Pretrained,
        evaluate,
        export,
        fetch_weights,
        load_space,
        predict,
        prepare,
        presets,
        pretrain_mias,
        report,
        submit,
        synth,
    )
    from tuner.config import SearchSpace
    from tuner.data.dataset import Dataset, Synthetic
    from tuner.errors import UserError
    from tuner.models.backbones import register_backbone
    from tuner.promote.result import Promotion
    from tuner.results.bundle import Bundle
    from tuner.results.evaluate import Evaluation
    from tuner.results.experiment import Experiment
    from tuner.results.leaderboard import Leaderboard, Status, Trial
    from tuner.results.report import Report


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tuner' has no attribute {name!r}")
    value = getattr(_import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

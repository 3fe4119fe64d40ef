"""mammotune: distributed hyperparameter search for mammography classifiers."""

import os as _os

# Defaults for every process that imports the package (the CLI, Ray workers, tests): Ray must
# not phone home, and albumentations otherwise checks PyPI for updates on import. Users can
# still override either in their environment.
_os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"

__all__ = ["__version__"]

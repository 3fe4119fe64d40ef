"""Search: space files compiled for Optuna, the sampler and scheduler registries, and the Ray
Tune run (OptunaSearch + the space's scheduler).

``tuner.search`` is both this package and the API's search function: calling the package,
``tuner.search("quick", data=..., storage=...)``, runs :func:`tuner.api.search`. Every import
form of the package's modules still works (``import tuner.search.strategies as s``).
"""

import sys as _sys
import types as _types


class _CallablePackage(_types.ModuleType):
    """This package, callable as :func:`tuner.api.search` (the name ``tuner.search`` cannot
    be both a function and the subpackage otherwise: importing a subpackage binds it to its
    parent's attribute)."""

    def __call__(self, *args, **kwargs):
        from tuner.api import search

        return search(*args, **kwargs)

    @property
    def __signature__(self):
        import inspect

        from tuner.api import search

        return inspect.signature(search)


_sys.modules[__name__].__class__ = _CallablePackage

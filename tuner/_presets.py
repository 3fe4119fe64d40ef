"""Search-space presets: the YAML files of the top-level ``search_spaces/`` folder.

A wheel ships them as the package data ``tuner/search_spaces/*.yaml`` (see ``package-dir`` in
pyproject.toml); an editable install and a source checkout read the folder itself. Cheap to
import: the standard library only (yaml is imported when descriptions are read).
"""

from __future__ import annotations

import atexit
import contextlib
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from tuner.errors import UserError, unknown_choice

SUFFIX = ".yaml"

# Files extracted by importlib.resources.as_file (an install that is not plain files, such as
# a zip), kept until the process exits because callers get their paths.
_extracted = contextlib.ExitStack()
atexit.register(_extracted.close)


def _folder() -> Traversable:
    """The folder of preset files, as installed or in the source checkout."""
    # Looked up under tuner rather than imported as tuner.search_spaces: a folder without
    # __init__.py does not import from a zip, nor through setuptools' editable finder.
    folder = resources.files("tuner") / "search_spaces"
    if folder.is_dir():
        return folder
    # An editable install or a source checkout: search_spaces/ is beside tuner/, not in it.
    return Path(__file__).resolve().parent.parent / "search_spaces"


def _names() -> list[str]:
    folder = _folder()
    if not folder.is_dir():
        return []
    files = (entry.name for entry in folder.iterdir() if entry.is_file())
    return sorted(name.removesuffix(SUFFIX) for name in files if name.endswith(SUFFIX))


def preset_path(name: str) -> Traversable:
    """The file of a preset.

    Args:
        name: A preset name, such as ``"quick"``.

    Returns:
        A ``pathlib.Path`` when the package is installed as plain files (a wheel, an editable
        install, a source checkout), otherwise an ``importlib.resources`` Traversable; either
        has ``read_text()``.

    Raises:
        UserError: ``name`` is not a preset.
    """
    names = _names()
    if name not in names:
        raise UserError(unknown_choice("search space preset", name, names))
    return _folder() / f"{name}{SUFFIX}"


def read_preset(name: str) -> str:
    """The YAML text of a preset.

    Raises:
        UserError: ``name`` is not a preset.
    """
    return preset_path(name).read_text(encoding="utf-8")


def presets() -> dict[str, str]:
    """Every preset's name and its ``description:``, sorted by name."""
    import yaml

    result = {}
    for name in _names():
        data = yaml.safe_load(read_preset(name))
        result[name] = str(data.get("description", "")) if isinstance(data, dict) else ""
    return result


def resolve_space(value: str) -> Path:
    """The search-space file that ``value`` names.

    Args:
        value: A path to a YAML file (which need not exist yet if it ends in ``.yaml`` or
            ``.yml``), or a preset name such as ``"quick"``.

    Returns:
        ``Path(value)`` for a file path, or the preset's file (extracted to a temporary file
        that lasts until the process exits if the install is not plain files).

    Raises:
        UserError: ``value`` is neither a file nor a preset; the message lists the presets.
    """
    path = Path(value)
    if path.is_file() or path.suffix in (".yaml", ".yml"):
        return path
    names = _names()
    if value not in names:
        raise UserError(unknown_choice("search space", value, names + ["<path to a .yaml file>"]))
    preset = _folder() / f"{value}{SUFFIX}"
    if isinstance(preset, Path):
        return preset
    return _extracted.enter_context(resources.as_file(preset))

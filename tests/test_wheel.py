"""The presets ship inside the wheel: built offline from a copy of the packaging inputs,
unpacked outside the repository and imported there, they resolve without the checkout."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tuner._presets import preset_path, presets, read_preset, resolve_space
from tuner.errors import UserError

PRESET_FILES = sorted((REPO / "search_spaces").glob("*.yaml"))

# Run with -I -S: no site-packages .pth files, so not the editable install's finder (which would
# import tuner from the checkout), and neither cwd nor PYTHONPATH on sys.path. The unpacked wheel
# goes first, pyyaml's folder last.
PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
sys.path.append(sys.argv[2])
import tuner
from tuner._presets import resolve_space
quick = resolve_space("quick")
print(json.dumps({
    "tuner": tuner.__file__,
    "presets": tuner.presets(),
    "order": list(tuner.presets()),
    "quick": str(quick),
    "text": quick.read_text(encoding="utf-8"),
    "heavy": sorted(m for m in ("torch", "ray", "pydantic") if m in sys.modules),
}))
"""


def test_every_subpackage_is_listed_in_pyproject():
    """The package list is explicit (see pyproject.toml): a new subpackage must be added."""
    listed = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    modules = (REPO / "tuner").rglob("*.py")
    missing = {".".join(m.parent.relative_to(REPO).parts) for m in modules} - set(listed)
    assert not missing, f"add {sorted(missing)} to [tool.setuptools] packages in pyproject.toml"
    assert "tuner.search_spaces" in listed


def test_presets_resolve_from_the_checkout():
    names = [p.stem for p in PRESET_FILES]
    descriptions = {p.stem: yaml.safe_load(p.read_text())["description"] for p in PRESET_FILES}
    assert presets() == descriptions and list(presets()) == names
    assert Path(resolve_space("quick")).samefile(REPO / "search_spaces" / "quick.yaml")
    assert read_preset("quick") == (REPO / "search_spaces" / "quick.yaml").read_text()
    assert preset_path("roi_tiles").read_text() == read_preset("roi_tiles")
    assert resolve_space("mine.yml") == Path("mine.yml")  # a path need not exist yet

    with pytest.raises(UserError) as error:
        resolve_space("quik")
    assert str(error.value) == (
        f"unknown search space 'quik'; allowed: {', '.join(names)}, <path to a .yaml file>"
        " (did you mean 'quick'?)"
    )
    with pytest.raises(UserError, match="did you mean 'quick'"):
        preset_path("quik")


def test_the_wheel_ships_every_preset_and_resolves_them_outside_the_checkout(tmp_path):
    # Built from a copy: building in the repository would leave build/ and *.egg-info there.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("tuner", "search_spaces"):
        shutil.copytree(REPO / name, source / name, ignore=skip)
    # Offline: no dependencies, no isolated build environment (this venv's setuptools), no index.
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    build += ["--no-index", "--no-cache-dir", "--wheel-dir", str(tmp_path / "dist"), str(source)]
    result = subprocess.run(build, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = (tmp_path / "dist").glob("mammotune-*.whl")

    with zipfile.ZipFile(wheel) as archive:
        members = set(archive.namelist())
        for preset in PRESET_FILES:
            shipped = archive.read(f"tuner/search_spaces/{preset.name}")
            assert shipped == preset.read_bytes(), preset.name
        modules = {p.relative_to(REPO).as_posix() for p in (REPO / "tuner").rglob("*.py")}
        assert modules <= members
        archive.extractall(tmp_path / "site")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    yaml_dir = Path(yaml.__file__).resolve().parents[1]
    probe = [sys.executable, "-I", "-S", "-c", PROBE, str(tmp_path / "site"), str(yaml_dir)]
    result = subprocess.run(probe, capture_output=True, text=True, cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)

    site = (tmp_path / "site").resolve()
    assert Path(seen["tuner"]).resolve() == site / "tuner" / "__init__.py"
    assert seen["presets"] == presets() and seen["order"] == sorted(seen["presets"])
    assert set(seen["presets"]) == {p.stem for p in PRESET_FILES}
    assert Path(seen["quick"]).resolve() == site / "tuner" / "search_spaces" / "quick.yaml"
    assert seen["text"] == (REPO / "search_spaces" / "quick.yaml").read_text(encoding="utf-8")
    assert seen["heavy"] == []  # importing tuner and listing presets stays cheap

"""The Python API: the README's "From Python" example runs as written, `import tuner` stays
cheap, missing arguments are one UserError, and the CLI and quickstart are faces over it."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import tuner
from tests.conftest import REPO


def _readme_python() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## From Python", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.slow
def test_the_readme_python_example_runs(ray_local, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(_readme_python(), "README.md (From Python)", "exec"), namespace)
    experiment, best, result = namespace["experiment"], namespace["best"], namespace["result"]
    assert isinstance(experiment, tuner.Experiment) and isinstance(best, tuner.Trial)
    status = experiment.status()
    assert status.finished == 2 and status.errored == 0 and status.running == 0
    assert best.checkpoint and best.config["backbone"] == "small_vgg_bn"
    assert isinstance(result, tuner.Evaluation) and result.split == "val" and result.rows > 0
    low, high = result.per_image.intervals_95["roc_auc"]
    assert low <= result.per_image.metrics["roc_auc"] <= high
    assert sorted(p.name for p in (tmp_path / "work" / "best-model").iterdir()) == [
        "checkpoint.json",
        "state.pt",
    ]
    assert tuner.Dataset.open("work/dataset").id == namespace["data"].id
    # The same experiment reopened from storage, as a laptop would while a cluster searches.
    again = tuner.Experiment.open("work/experiments/quick-1")
    assert again.best().trial_id == best.trial_id
    assert [t.trial_id for t in again.leaderboard().trials] == [
        t.trial_id for t in experiment.leaderboard().trials
    ]
    promotion = namespace["promotion"]
    assert isinstance(promotion, tuner.Promotion) and promotion.test["test_look"]["look"] == 1
    assert again.promotion().id == promotion.id == "p1"
    assert again.space.sampler.type == "random" and again.space.task == "lesion_vs_tissue"
    report, bundle = namespace["report"], namespace["bundle"]
    assert isinstance(report, tuner.Report) and report.sections[-2:] == ["promotion", "model card"]
    assert (tmp_path / "work" / "experiments" / "quick-1" / "reports") in Path(report.path).parents
    assert isinstance(bundle, tuner.Bundle) and bundle.meta["source"]["kind"] == "experiment"
    assert bundle.threshold == promotion.threshold and bundle.runtime == "onnx"
    printed = capsys.readouterr().out
    assert "quick" in printed and "2 of 2 trials started: 2 finished" in printed
    assert "promotion p1: trial" in printed


def test_import_tuner_is_cheap():
    code = (
        "import sys, json, tuner\n"
        "loaded = lambda: sorted(m for m in ('torch', 'ray', 'optuna', 'pydantic', 'numpy', "
        "'sklearn', 'fsspec') if m in sys.modules)\n"
        "first = loaded()\n"
        "names = tuner.presets()\n"
        "print(json.dumps([first, loaded(), sorted(names)]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/"
    )
    assert done.returncode == 0, done.stderr
    first, after_presets, names = json.loads(done.stdout)
    assert first == [] and after_presets == []
    assert "quick" in names and "divide_and_conquer" in names


def test_import_tuner_turns_on_ray_token_mode_for_a_given_token():
    """As the CLI does: Ray reads the mode on its first import, which any API call may do."""
    code = "import os, tuner; print(os.environ.get('RAY_AUTH_MODE'))"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    modes = []
    for extra in ({}, {"RAY_AUTH_TOKEN": "x" * 32}, {"RAY_AUTH_TOKEN_PATH": "/nonexistent"}):
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            cwd="/",
            env={**env, **extra},
        )
        assert done.returncode == 0, done.stderr
        modes.append(done.stdout.strip())
    assert modes == ["None", "token", "token"]


def test_every_public_name_resolves_and_search_is_callable_and_the_package():
    import inspect

    import tuner.search.strategies as strategies  # every import form of the subpackage
    from tuner.search import runner

    for name in tuner.__all__:
        assert getattr(tuner, name) is not None, name
    assert set(tuner.__all__) <= set(dir(tuner))
    assert tuner.__all__ == ["__version__", "search", *tuner._EXPORTS]
    assert callable(tuner.search) and tuner.search is sys.modules["tuner.search"]
    assert tuner.search.strategies is strategies and tuner.search.runner is runner
    assert list(inspect.signature(tuner.search).parameters)[:3] == ["space", "data", "storage"]
    with pytest.raises(tuner.UserError, match="search needs space="):
        tuner.search()
    with pytest.raises(AttributeError):
        tuner.no_such_name  # noqa: B018


@pytest.mark.parametrize(
    "call, fragments",
    [
        (lambda: tuner.search(), ["search needs space=, data=, storage="]),
        (lambda: tuner.search("quick", data="x"), ["search needs storage="]),
        (lambda: tuner.prepare(None, "out"), ["prepare needs source="]),
        (lambda: tuner.evaluate("x"), ["evaluate needs data="]),
        (lambda: tuner.predict("ckpt"), ["predict needs files="]),
        (lambda: tuner.load_space(None), ["load_space needs space="]),
        (lambda: tuner.synth(None), ["synth needs out="]),
        (lambda: tuner.synth(), ["synth needs out="]),
        (lambda: tuner.prepare(), ["prepare needs source=, out="]),
        (lambda: tuner.Experiment.open(), ["Experiment.open needs url="]),
        (lambda: tuner.load_space("quikc"), ["unknown search space 'quikc'", "did you mean"]),
        (
            lambda: tuner.load_space("quick", {"sampler.type": "bohb"}),
            ["sampler.type", "unknown sampler 'bohb'", "allowed: tpe, gp, cmaes"],
        ),
        (
            lambda: tuner.load_space("quick", {"scheduler": {"type": "pbt"}}),
            ["unknown scheduler 'pbt'", "asha, hyperband, median, fifo"],
        ),
        (
            lambda: tuner.load_space(
                "quick",
                {"metrics": [{"name": "val_roc_auc"}, {"name": "inference_ms", "mode": "min"}]},
            ),
            ["scheduler asha stops trials by one metric", "fifo"],
        ),
        (lambda: tuner.load_space("quick", ["epochs=2"]), ["overrides must be a dict"]),
        (
            lambda: tuner.search("quick", data="d", storage="e", trials=0),
            ["with trials=0", "trials: Input should be greater than or equal to 1"],
        ),
        (
            lambda: tuner.search("quick", data="d", storage="e", gpus_per_trial=1.5),
            ["resources.gpu", "use a fraction of one GPU or a whole number"],
        ),
        (lambda: tuner.prepare("src", "out", sizes="48,x"), ["sizes='48,x'", "whole numbers"]),
        (lambda: tuner.predict("c", ["f"], roi_box="1,2,3"), ["roi_box takes four"]),
    ],
)
def test_bad_api_calls_are_one_user_error_and_write_nothing(tmp_path, monkeypatch, call, fragments):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(tuner.UserError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    assert list(tmp_path.iterdir()) == []


def test_load_space_takes_a_preset_a_file_or_a_space(tmp_path):
    quick = tuner.load_space("quick", {"epochs": 1, "backbone": ["resnet18"]})
    assert isinstance(quick, tuner.SearchSpace)
    assert quick.fixed["epochs"] == 1 and quick.space["backbone"].choices == ["resnet18"]
    path = tmp_path / "mine.yaml"
    path.write_text((REPO / "search_spaces" / "quick.yaml").read_text())
    assert tuner.load_space(path) == tuner.load_space("quick")
    assert tuner.load_space(quick, {"trials": 3}).trials == 3


def _imports(path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n for n in names if n == "tuner" or n.startswith("tuner.")}


def test_the_cli_and_quickstart_are_faces_over_the_api():
    """They reach the package only through `tuner` (the API), the presentation module, the
    errors and the `--set` parser."""
    faces = {"tuner", "tuner.present", "tuner.errors", "tuner.quickstart"}
    assert _imports(REPO / "tuner" / "cli.py") <= faces | {"tuner.config"}
    assert _imports(REPO / "tuner" / "quickstart.py") <= faces | {"tuner.storage"}
    cli = (REPO / "tuner" / "cli.py").read_text()
    assert "from tuner.config import parse_overrides" in cli

"""Bad input gets one line naming the problem, exit code 2, no traceback, and nothing that
was already written is changed. Run as real subprocesses, as a user would."""

import subprocess
import sys

import pytest

from tests.conftest import REPO

BAD_BACKBONE = """name: bad
space:
  backbone: {type: categorical, choices: [mobilenet_v2, resnet5]}
"""


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tuner", *args], capture_output=True, text=True, timeout=300
    )


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def snapshot(folder):
    return sorted((str(p), p.stat().st_mtime_ns) for p in folder.rglob("*"))


def test_unknown_backbone(tmp_path, prepared):
    space = tmp_path / "bad.yaml"
    space.write_text(BAD_BACKBONE)
    result = run(
        "search", "--space", str(space), "--data", str(prepared), "--storage", str(tmp_path / "exp")
    )
    assert_one_line_error(
        result, str(space), "unknown backbone 'resnet5'", "allowed:", "did you mean 'resnet50'"
    )
    assert not (tmp_path / "exp").exists()


def test_malformed_space_file(tmp_path, prepared):
    space = tmp_path / "broken.yaml"
    space.write_text("name: x\nspace:\n  dropout: {type: float, low: 0.1\n")
    result = run(
        "search", "--space", str(space), "--data", str(prepared), "--storage", str(tmp_path / "exp")
    )
    assert_one_line_error(result, str(space), "not valid YAML")


@pytest.mark.parametrize("data", ["", "missing", "empty"])
def test_missing_or_empty_data(tmp_path, data):
    (tmp_path / "empty").mkdir()
    url = str(tmp_path / data) if data else ""
    result = run("search", "--space", "quick", "--data", url, "--storage", str(tmp_path / "exp"))
    expected = "no data URL given" if not data else "no prepared dataset at"
    assert_one_line_error(result, expected)


def test_prepare_into_a_folder_holding_another_dataset(tmp_path, prepared, synthetic_source):
    before = snapshot(prepared)
    result = run(
        "prepare", str(synthetic_source), str(prepared), "--sizes", "64", "--context-px", "150"
    )
    assert_one_line_error(result, "already holds a different dataset", "choose a new output folder")
    assert snapshot(prepared) == before


def test_prepare_from_a_folder_that_is_not_cbis_ddsm(tmp_path):
    (tmp_path / "src").mkdir()
    result = run("prepare", str(tmp_path / "src"), str(tmp_path / "out"))
    assert_one_line_error(result, "is neither a CBIS-DDSM folder", "nor a mini-MIAS folder")


def test_synth_into_a_used_folder(tmp_path):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "thesis.tex").write_text("precious")
    result = run("synth", str(tmp_path / "used"), "--patients", "10")
    assert_one_line_error(result, "not empty")
    assert (tmp_path / "used" / "thesis.tex").read_text() == "precious"


def test_best_of_a_folder_without_an_experiment(tmp_path):
    assert_one_line_error(run("best", str(tmp_path)), "no mammotune experiment")


def test_unknown_preset_lists_the_presets(tmp_path):
    result = run(
        "search", "--space", "quik", "--data", str(tmp_path), "--storage", str(tmp_path / "e")
    )
    assert_one_line_error(result, "unknown search space 'quik'", "did you mean 'quick'")


def test_help_lists_every_command():
    result = subprocess.run(
        [sys.executable, "-m", "tuner", "--help"], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 0
    for command in ("quickstart", "synth", "prepare", "search", "best"):
        assert command in result.stdout


def test_prepare_into_a_bucket_that_does_not_exist(synthetic_source, s3_server):
    result = run("prepare", str(synthetic_source), "s3://no-such-bucket/ds")
    assert_one_line_error(result, "bucket 'no-such-bucket'", "does not exist")


def test_prepare_without_credentials(synthetic_source, s3_server, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    result = run("prepare", str(synthetic_source), "s3://anything/ds")
    assert_one_line_error(result, "Unable to locate credentials", "AWS_ACCESS_KEY_ID")


def test_prepare_with_an_unknown_enhancement(synthetic_source, tmp_path):
    result = run(
        "prepare", str(synthetic_source), str(tmp_path / "ds"), "--enhance", "none,sharpen"
    )
    assert_one_line_error(result, "unknown enhancement 'sharpen'", "clahe")
    assert not (tmp_path / "ds").exists()


def test_synth_mini_mias_and_prepare_it(tmp_path, ray_local):
    assert (
        run("synth", str(tmp_path / "mias"), "--format", "mini-mias", "--patients", "10").returncode
        == 0
    )
    assert (tmp_path / "mias" / "Info.txt").is_file()
    result = run(
        "prepare",
        str(tmp_path / "mias"),
        str(tmp_path / "ds"),
        "--views",
        "whole",
        "--whole-sizes",
        "64",
    )
    assert result.returncode == 0, result.stderr
    assert "mini-mias" in result.stdout and "whole-64" in result.stdout
    assert "Traceback" not in result.stderr and "UserWarning" not in result.stderr


def _search(prepared, tmp_path, *extra):
    return run("search", "--data", str(prepared), "--storage", str(tmp_path / "exp"), *extra)


@pytest.mark.parametrize(
    "extra, fragments",
    [
        (("--space", "quick", "--set", "epochs"), ["--set 'epochs': expected KEY=VALUE"]),
        (
            ("--space", "quick", "--set", "backbone=[resnet18,resnet5]"),
            ["with backbone=[resnet18, resnet5]", "unknown backbone 'resnet5'"],
        ),
        (
            (
                "--space",
                "quick",
                *("--set", "transfer=imagenet", "--set", "input_size=48"),
                *("--set", "backbone=[resnet18]"),
            ),
            ["ImageNet transfer needs weights", "weights fetch"],
        ),
        (
            (
                "--space",
                "divide_and_conquer",
                *("--set", "view=roi", "--set", "input_size=[48]", "--set", "enhance=none"),
                *("--set", "fusion=single", "--set", "metric=val_roc_auc"),
                *("--set", "backbone=[mobilenet_v2]"),
            ),
            ["transfer 'mias_all'", "mammotune pretrain-mias"],
        ),
        (("--space", "quick", "--resume", "x"), ["--resume continues", "drop --space"]),
        (
            ("--space", "quick", "--set", "sampler.type=bohb"),
            ["sampler.type: unknown sampler 'bohb'", "allowed: tpe, gp, cmaes, random"],
        ),
        (
            (
                "--space",
                "quick",
                "--set",
                "metrics=[{name: val_roc_auc}, {name: inference_ms, mode: min}]",
            ),
            ["scheduler asha stops trials by one metric", "scheduler: {type: fifo}"],
        ),
        (
            ("--space", "quick", "--set", "metric=auc"),
            ["metric: unknown metric 'auc'", "val_roc_auc"],
        ),
    ],
)
def test_search_overrides_and_preflight(tmp_path, prepared, extra, fragments):
    result = _search(prepared, tmp_path, *extra)
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "exp").exists()


def test_search_needs_its_inputs_or_resume(tmp_path):
    assert_one_line_error(run("search", "--space", "quick"), "search needs --data, --storage")
    assert_one_line_error(
        run("search", "--resume", str(tmp_path / "none")), "no mammotune search", "search.json"
    )


def test_an_unwritable_experiment_location_fails_before_any_trial(tmp_path, prepared):
    blocker = tmp_path / "a-file"  # a file where the experiment's parent folder should be
    blocker.write_text("keep me")
    result = run(
        *("search", "--space", "quick", "--set", "input_size=[48]"),
        *("--data", str(prepared), "--storage", str(blocker / "e")),
    )
    assert_one_line_error(result, "cannot write to", str(blocker))
    assert blocker.read_text() == "keep me"

"""A trial that fails (here: its tile shards are corrupt) ends as errored with its reason,
Optuna records it as failed, and the search goes on with the other trials."""

import json
import shutil

import optuna

from tuner.cli import main

SPACE = """
name: errors
task: lesion_vs_tissue
trials: 4
max_concurrent: 2
seed: 0
tpe: {n_startup_trials: 4}
fixed: {epochs: 2, batch_size: 32, backbone: small_vgg_bn}
space:
  input_size: {type: categorical, choices: [32, 48]}
  dropout: {type: float, low: 0.0, high: 0.3}
"""


def test_a_failing_trial_is_recorded_and_the_search_goes_on(prepared, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(prepared, data)
    for shard in (data / "roi-48" / "train").glob("*.parquet"):
        shard.write_bytes(shard.read_bytes()[:100])  # truncated in transit, say
    space = tmp_path / "errors.yaml"
    space.write_text(SPACE)
    experiment = tmp_path / "exp"
    code = main(
        ["search", "--space", str(space), "--data", str(data), "--storage", str(experiment)]
        + ["--max-failures", "0"]
    )
    assert code == 0  # the search itself finished
    capsys.readouterr()
    assert main(["best", str(experiment), "--json"]) == 0
    board = json.loads(capsys.readouterr().out)
    by_size = {}
    for trial in board["trials"]:
        by_size.setdefault(trial["config"]["input_size"], []).append(trial)
    assert set(by_size) == {32, 48}, "the seeded sampler should draw both sizes"
    for trial in by_size[48]:
        assert trial["status"] == "errored"
        assert "parquet" in trial["error"].lower(), trial["error"]
    for trial in by_size[32]:
        assert trial["status"] in ("done", "stopped") and trial["checkpoint"]
    assert board["best"]["config"]["input_size"] == 32

    meta = json.loads((experiment / "search.json").read_text())["study"]
    study = optuna.load_study(study_name=meta["name"], storage=meta["storage"])
    states = sorted(t.state.name for t in study.trials)
    assert states.count("FAIL") == len(by_size[48])
    assert states.count("COMPLETE") == len(by_size[32])

    # An errored trial is not exported (its checkpoints are of a run that did not finish),
    # and the report marks it on the learning curves and in the leaderboard.
    errored = by_size[48][0]["trial_id"]
    capsys.readouterr()
    assert main(["export", str(experiment / f"trial_{errored}"), str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "errored" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()
    assert main(["report", str(experiment), "--out", str(tmp_path / "r" / "report.html")]) == 0
    page = (tmp_path / "r" / "report.html").read_text()
    for trial in by_size[48]:
        assert f"<td>{trial['trial_id']}</td><td>errored</td>" in page

"""A search whose driver is killed outright (SIGKILL, with its whole process group: the
local Ray cluster it started dies too) resumes with `mammotune search --resume`: no finished
trial is lost or run again, the same Optuna study goes on, and the trial count is reached."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import fsspec
import optuna

from tests.conftest import finished_and_one_halfway, lost_checkpoints, retention_errors, trial_rows
from tuner.cli import main
from tuner.search.callbacks import CheckpointRetention

SPACE = """
name: resume
task: lesion_vs_tissue
trials: 4
max_concurrent: 1
seed: 3
sampler: {type: tpe, n_startup_trials: 2}
scheduler: {type: asha, grace_period: 4}
fixed: {epochs: 4, batch_size: 16, input_size: 48, backbone: small_vgg_bn}
space:
  dropout: {type: float, low: 0.0, high: 0.3}
  lr: {type: log-float, low: 3.0e-4, high: 1.0e-3}
"""

FS = fsspec.filesystem("file")
EPOCHS = 4


def _results(experiment: Path) -> dict[str, int]:
    """Reported epochs per trial folder (a trial re-running an epoch would show more)."""
    return {name: len(rows) for name, rows in trial_rows(FS, str(experiment)).items()}


def test_search_resumes_after_the_driver_is_killed(prepared, tmp_path, capsys):
    space = tmp_path / "resume.yaml"
    space.write_text(SPACE)
    experiment = tmp_path / "exp"
    command = [sys.executable, "-m", "tuner", "search", "--space", str(space)]
    command += ["--data", str(prepared), "--storage", str(experiment)]
    log = (tmp_path / "driver.log").open("w")
    # The state the kill waits for below is only seen once Tune's snapshot (and the trials'
    # result.json, synced with it) records it: a snapshot a second (Tune's documented
    # setting), and trials whose epochs 2 to 4 span several snapshots, make sure it is.
    env = os.environ | {"TUNE_GLOBAL_CHECKPOINT_S": "1"}
    driver = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
    )
    finished: set[str] = set()
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and driver.poll() is None:
            finished = finished_and_one_halfway(FS, str(experiment)) or set()
            if finished:
                break
            time.sleep(0.2)
        assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
        assert finished, "no trial finished within the time limit"
    finally:
        with contextlib.suppress(ProcessLookupError):  # all gone if the search has ended
            os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray cluster it started
        driver.wait()
    before = _results(experiment)
    assert len(before) < 4, before
    # Every checkpoint an unfinished trial reported is still there (Tune's own num_to_keep
    # would have deleted the older ones before its snapshot knew of the newer).
    assert lost_checkpoints(FS, str(experiment)) == {}
    meta = json.loads((experiment / "search.json").read_text())
    metric, mode = meta["metric"], meta["mode"]
    # The retention callback prunes the finished trials only.
    retention = CheckpointRetention(str(experiment), metric, mode, keep=1, period_s=0)
    for name in finished:
        retention.on_trial_complete(0, [], SimpleNamespace(trial_id=name.removeprefix("trial_")))
    retention.on_step_end(0, [])
    assert retention_errors(FS, str(experiment), metric, mode, keep=1) == {}
    assert lost_checkpoints(FS, str(experiment)) == {}

    assert main(["search", "--resume", str(experiment)]) == 0, capsys.readouterr()
    capsys.readouterr()
    assert main(["best", str(experiment), "--json"]) == 0
    board = json.loads(capsys.readouterr().out)

    after = _results(experiment)
    assert len(board["trials"]) == 4 and len(after) == 4, (before, after)
    assert all(t["status"] in ("done", "stopped") for t in board["trials"]), board["trials"]
    for name in finished:  # finished before the kill: kept, not trained again
        assert after[name] == EPOCHS, (before, after)
    # The resumed search pruned every trial to its best checkpoint and its latest.
    assert retention_errors(FS, str(experiment), metric, mode, keep=1) == {}
    study_meta = meta["study"]
    study = optuna.load_study(study_name=study_meta["name"], storage=study_meta["storage"])
    states = [t.state for t in study.trials]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 4, states
    assert optuna.trial.TrialState.RUNNING not in states
    # One Optuna trial per Tune trial: the same sampled settings, none twice.
    sampled = sorted((t.params["dropout"], t.params["lr"]) for t in complete)
    configs = sorted((t["config"]["dropout"], t["config"]["lr"]) for t in board["trials"])
    assert sampled == configs
    # Each Optuna trial names its Tune trial: what the resume read instead of unpickling
    # Tune's searcher snapshot to tell orphans from trials that go on.
    recorded = sorted(t.user_attrs["tune_trial_id"] for t in complete)
    assert recorded == sorted(t["trial_id"] for t in board["trials"])

"""A search whose driver is killed outright (SIGKILL, with its whole process group: the
local Ray cluster it started dies too) resumes with `mammotune search --resume`: no finished
trial is lost or run again, the same Optuna study goes on, and the trial count is reached."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna

from tuner.cli import main

SPACE = """
name: resume
task: lesion_vs_tissue
trials: 4
max_concurrent: 1
seed: 3
tpe: {n_startup_trials: 2}
asha: {grace_period: 3}
fixed: {epochs: 3, batch_size: 8, input_size: 48, backbone: small_vgg_bn}
space:
  dropout: {type: float, low: 0.0, high: 0.3}
  lr: {type: log-float, low: 3.0e-4, high: 1.0e-3}
"""


def _results(experiment: Path) -> dict[str, int]:
    """Reported epochs per trial folder (a trial re-running an epoch would show more)."""
    counts = {}
    for folder in experiment.glob("trial_*"):
        result = folder / "result.json"
        counts[folder.name] = len(result.read_text().splitlines()) if result.exists() else 0
    return counts


def test_search_resumes_after_the_driver_is_killed(prepared, tmp_path, capsys):
    space = tmp_path / "resume.yaml"
    space.write_text(SPACE)
    experiment = tmp_path / "exp"
    command = [sys.executable, "-m", "tuner", "search", "--space", str(space)]
    command += ["--data", str(prepared), "--storage", str(experiment)]
    log = (tmp_path / "driver.log").open("w")
    driver = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    finished: set[str] = set()
    try:
        deadline = time.monotonic() + 300
        # Kill once one trial has finished and the next is under way.
        while time.monotonic() < deadline and driver.poll() is None:
            counts = _results(experiment) if experiment.exists() else {}
            if 3 in counts.values() and len(counts) >= 2:
                finished = {name for name, n in counts.items() if n == 3}
                break
            time.sleep(0.5)
        assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
        assert finished, "no trial finished within the time limit"
        # Past the next experiment snapshot (every 2 s): what finished before it is final.
        time.sleep(4.0)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray cluster it started
        driver.wait()
    before = _results(experiment)
    assert len(before) < 4, before

    assert main(["search", "--resume", str(experiment)]) == 0, capsys.readouterr()
    capsys.readouterr()
    assert main(["best", str(experiment), "--json"]) == 0
    board = json.loads(capsys.readouterr().out)

    after = _results(experiment)
    assert len(board["trials"]) == 4 and len(after) == 4, (before, after)
    assert all(t["status"] in ("done", "stopped") for t in board["trials"]), board["trials"]
    for name in finished:  # finished before the kill: kept, not trained again
        assert after[name] == 3, (before, after)
    study_meta = json.loads((experiment / "search.json").read_text())["study"]
    study = optuna.load_study(study_name=study_meta["name"], storage=study_meta["storage"])
    states = [t.state for t in study.trials]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 4, states
    assert optuna.trial.TrialState.RUNNING not in states
    # One Optuna trial per Tune trial: the same sampled settings, none twice.
    sampled = sorted((t.params["dropout"], t.params["lr"]) for t in complete)
    configs = sorted((t["config"]["dropout"], t["config"]["lr"]) for t in board["trials"])
    assert sampled == configs

"""The whole cluster lost mid-search (driver, head and worker node SIGKILLed, their disks
gone with them), and the search resumed from the bucket alone on a new cluster with another
HOME, other temp dirs and empty shard caches: the study of a bucket experiment without
--study lives in the bucket (a copy in every snapshot of Tune's), so nothing is lost."""

from __future__ import annotations

import json
import os
import shutil
import signal

import optuna

from tests.cluster.conftest import Client
from tests.cluster.test_faults import _epochs_in_order, _wait
from tests.cluster.test_jobs_and_bad_input import _one_clear_line
from tests.conftest import finished_and_one_halfway, lost_checkpoints, stack_module, trial_rows

EXPERIMENT = "s3://runs/whole-cluster"
NODES = ("head", "worker")


def _cluster(tmp_path, name: str, client: Client, secret: str):
    """A new stack (head + worker node) on the session's S3 server, which outlives it as a
    cloud bucket would, and a client of it whose HOME is the new cluster's own."""
    home = tmp_path / f"home-{name}"
    home.mkdir()
    env = {**client.env, "HOME": str(home)}
    stack = stack_module.LocalStack(tmp_path / f"stack-{name}")
    stack.up(env=env, s3_endpoint=client.stack.s3_endpoint)
    other = Client(stack, secret, client.postgres)
    other.env["HOME"] = str(home)
    return stack, other, home


def test_the_whole_cluster_lost_is_resumed_from_the_bucket(client, cluster_data, secret, tmp_path):
    first, driver_client, home = _cluster(tmp_path, "a", client, secret)
    args = driver_client.search_args(
        tmp_path, "whole-cluster", cluster_data, study=False, trials=4, epochs=4, seed=5
    )
    log = tmp_path / "driver.log"
    fs = client.s3()
    try:
        driver = driver_client.start(*args, log=log, env={"TUNE_GLOBAL_CHECKPOINT_S": "1"})
        try:
            finished = _wait(
                lambda: finished_and_one_halfway(fs, EXPERIMENT),
                "a finished trial and another halfway",
                driver,
                log,
                poll_s=0.2,
            )
        finally:  # the whole cluster at once: driver, head, worker node
            os.kill(driver.pid, signal.SIGKILL)
            driver.wait()
            first.kill_node("head")
            first.kill_node("worker")
    finally:
        first.down()
    shutil.rmtree(home)  # the head's disk: the driver's working copy of the study with it
    assert lost_checkpoints(fs, EXPERIMENT) == {}
    assert fs.exists("runs/whole-cluster/optuna.db")

    second, resumer, _ = _cluster(tmp_path, "b", client, secret)
    try:
        result = resumer.run("search", "--resume", EXPERIMENT, "--address", second.address)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        # The new nodes started with empty shard caches: what they trained on came from S3.
        fetched = [list((second.directory / f"cache-{n}").glob("*.parquet")) for n in NODES]
        assert any(fetched), fetched
    finally:
        second.down()

    status = json.loads(client.run("status", EXPERIMENT, "--json").stdout)
    assert status["started_trials"] == 4 and status["finished"] == 4, status
    rows = trial_rows(fs, EXPERIMENT)
    for name in finished:
        assert _epochs_in_order(rows[name]) == [1, 2, 3, 4]  # not trained again
    # The same study, from the bucket: every trial complete, none left running, and the
    # trials finished before the loss are those of the first cluster.
    local = tmp_path / "study.db"
    fs.get("runs/whole-cluster/optuna.db", str(local))
    study = optuna.load_study(study_name="whole-cluster", storage=f"sqlite:///{local}")
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 4, states
    assert optuna.trial.TrialState.RUNNING not in states
    recorded = {t.user_attrs.get("tune_trial_id") for t in study.trials}
    assert {name.removeprefix("trial_") for name in finished} <= recorded

    # Bad input: a bucket experiment whose study is gone cannot be resumed; one line says so.
    fs.rm("runs/whole-cluster/optuna.db")
    result = client.run("search", "--resume", EXPERIMENT, "--address", client.stack.address)
    _one_clear_line(result, "s3://runs/whole-cluster/optuna.db", "not found")

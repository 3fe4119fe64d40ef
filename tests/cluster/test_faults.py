"""Faults on the local two-node cluster, each in a real search: a worker node lost, the
driver killed outright, the S3 server frozen for 20 s, a trial that keeps failing."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time

import optuna

from tests.conftest import finished_and_one_halfway, lost_checkpoints, retention_errors, trial_rows


def _wait(condition, what: str, driver, log, timeout: float = 300, poll_s: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert driver.poll() is None, f"the search ended before {what}:\n{log.read_text()[-3000:]}"
        value = condition()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")


def _status(client, experiment: str) -> dict:
    result = client.run("status", experiment, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _epochs_in_order(rows: list[dict]) -> list[int]:
    return [row["epoch"] for row in rows]


def test_a_lost_worker_node_moves_its_trials_to_the_survivor(client, cluster_data, tmp_path):
    experiment = "s3://runs/node-lost"
    log = tmp_path / "driver.log"
    args = client.search_args(
        tmp_path, "node-lost", cluster_data, "--max-failures", "2", trials=3, epochs=4, seed=1
    )
    driver = client.start(*args, log=log)
    fs = client.s3()
    worker = client.stack.node_ids()["worker"]
    try:
        # Kill the worker once a trial there has a checkpoint and has not finished.
        def on_worker():
            rows = trial_rows(fs, experiment)
            return {
                name: len(r)
                for name, r in rows.items()
                if r and r[-1]["node_id"] == worker and 1 <= len(r) < 4
            }

        victims = _wait(on_worker, "a checkpoint of a trial on the worker node", driver, log)
        finished_before = {n for n, r in trial_rows(fs, experiment).items() if len(r) == 4}
        client.stack.kill_node("worker")
        assert driver.wait(timeout=400) == 0, log.read_text()[-3000:]
    finally:
        if driver.poll() is None:
            driver.kill()
        client.stack.restart_worker()

    status = _status(client, experiment)
    assert status["finished"] == 3 and status["errored"] == 0, status
    assert status["failures"] >= 1, status  # the attempt that died with the node
    rows = trial_rows(fs, experiment)
    head = client.stack.node_ids()["head"]
    for name in victims:
        epochs = _epochs_in_order(rows[name])
        # Resumed from its last checkpoint on the surviving node: epoch 1 ran once, and the
        # trial went on to the end on the head.
        assert epochs.count(1) == 1 and epochs[-1] == 4, epochs
        assert rows[name][-1]["node_id"] == head
        assert len(epochs) <= 4 + 1, epochs  # at most the epoch in flight ran twice
    for name in finished_before:  # finished before the loss: kept as they were
        assert _epochs_in_order(rows[name]) == [1, 2, 3, 4]


def test_a_killed_driver_is_resumed_on_the_cluster_with_a_postgres_study(
    client, cluster_data, tmp_path
):
    experiment = "s3://runs/driver-killed"
    log = tmp_path / "driver.log"
    args = client.search_args(tmp_path, "driver-killed", cluster_data, trials=4, epochs=4, seed=2)
    # The state the kill waits for below is only seen once a snapshot of Tune's (and the
    # trials' result.json, uploaded with it) records it. mammotune snapshots every 2 s; a
    # snapshot a second (Tune's documented setting), and trials whose epochs 2 to 4 span
    # several snapshots, make sure the state is recorded.
    driver = client.start(*args, log=log, env={"TUNE_GLOBAL_CHECKPOINT_S": "1"})
    fs = client.s3()
    try:
        finished = _wait(
            lambda: finished_and_one_halfway(fs, experiment),
            "a finished trial and another halfway",
            driver,
            log,
            poll_s=0.2,
        )
    finally:
        os.kill(driver.pid, signal.SIGKILL)  # the driver only: the cluster lives on
        driver.wait()
    assert client.stack.alive_nodes() == 2
    assert lost_checkpoints(fs, experiment) == {}

    result = client.run("search", "--resume", experiment, "--address", client.stack.address)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    status = _status(client, experiment)
    assert status["started_trials"] == 4 and status["finished"] == 4, (
        json.dumps(status) + result.stdout[-4000:]
    )
    rows = trial_rows(fs, experiment)
    for name in finished:
        assert _epochs_in_order(rows[name]) == [1, 2, 3, 4]  # not trained again
    assert retention_errors(fs, experiment, "val_roc_auc", "max", keep=1) == {}
    # The same study on the PostgreSQL server, its password from the environment (PGPASSWORD)
    os.environ["PGPASSWORD"] = client.postgres.password
    study = optuna.load_study(study_name="driver-killed", storage=client.postgres.url)
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 4, states
    assert optuna.trial.TrialState.RUNNING not in states


def test_a_frozen_s3_server_delays_the_search_but_loses_nothing(client, cluster_data, tmp_path):
    experiment = "s3://runs/s3-frozen"
    log = tmp_path / "driver.log"
    args = client.search_args(
        tmp_path, "s3-frozen", cluster_data, "--max-failures", "0", trials=2, epochs=3, seed=3
    )
    driver = client.start(*args, log=log)
    fs = client.s3()
    try:
        _wait(
            lambda: any(len(r) >= 1 for r in trial_rows(fs, experiment).values()),
            "the first checkpoint",
            driver,
            log,
        )
        client.stack.pause_s3()  # reads, checkpoint uploads and snapshots now hang
        frozen_at = time.monotonic()
        time.sleep(20)
        client.stack.resume_s3()
        assert driver.wait(timeout=400) == 0, log.read_text()[-3000:]
    finally:
        client.stack.resume_s3()
        if driver.poll() is None:
            driver.kill()
    assert time.monotonic() - frozen_at >= 20
    status = _status(client, experiment)
    # --max-failures 0: any failed read or upload would have errored a trial for good.
    assert status["finished"] == 2 and status["errored"] == 0 and status["failures"] == 0, status
    for rows in trial_rows(fs, experiment).values():
        assert _epochs_in_order(rows) == [1, 2, 3]


def test_a_trial_that_keeps_failing_is_retried_max_failures_times_then_reported(
    client, cluster_data, tmp_path
):
    fs = client.s3()
    broken = "data/broken"
    fs.copy("data/cbis", broken, recursive=True)
    # Training shards truncated in transit, say, and listed as they are now (new names and
    # hashes, so no node's cache holds a good copy): every attempt fails to decode them.
    manifest = json.loads(fs.cat(f"{broken}/manifest.json"))
    for shard in manifest["tiles"]["roi-48"]["splits"]["train"]["shards"]:
        data = fs.cat(f"{broken}/{shard['path']}")[:100]
        shard["path"] = shard["path"].replace(".parquet", "-cut.parquet")
        shard["sha256"] = hashlib.sha256(data).hexdigest()
        fs.pipe_file(f"{broken}/{shard['path']}", data)
    fs.pipe_file(f"{broken}/manifest.json", json.dumps(manifest).encode())
    experiment = "s3://runs/failing"
    args = client.search_args(
        tmp_path, "failing", f"s3://{broken}", "--max-failures", "2", trials=1, epochs=2, seed=4
    )
    result = client.run(*args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "errored" in result.stdout
    status = _status(client, experiment)
    assert status["errored"] == 1 and status["finished"] == 0, status
    assert status["failures"] == 3, status  # the first attempt and two retries, then no more
    (reason,) = status["errors"].values()
    assert "parquet" in reason.lower() or "shard" in reason.lower(), reason

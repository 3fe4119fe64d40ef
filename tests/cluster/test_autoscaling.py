"""Autoscaling from zero GPU workers, with the node types of infra/aws/cluster.yaml.

Ray's own test provider for its autoscaler (``fake_multi_node``) launches worker nodes as
processes on this machine: a real head with Ray's real autoscaler, worker nodes that are
real raylets advertising the AWS file's resources (8 CPUs, 1 GPU; CPU processes, no GPU
behind them). A search with one GPU per trial, then half a GPU, starts with none: the test
records when workers launch, that no more start than the trials can use, that the trials
run on them, and that idle ones are removed after the idle timeout."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request

import yaml

from tests.cluster.conftest import Client
from tests.cluster.test_jobs_and_bad_input import _one_clear_line
from tests.conftest import REPO, stack_module, trial_rows

IDLE_MINUTES = 0.1  # the file's 10 minutes is a cloud's; the mechanism is the same at 6 s


def _aws() -> dict:
    return yaml.safe_load((REPO / "infra" / "aws" / "cluster.yaml").read_text())


class NodeWatch:
    """Polls the head's state API (as `ray list nodes` does, token in the header) and
    records when each GPU worker node is first and last seen alive."""

    def __init__(self, stack):
        self.url = f"{stack.dashboard}/api/v0/nodes?limit=100&detail=1"
        token = (stack.directory / "auth_token").read_text().strip()
        self.headers = {"Authorization": f"Bearer {token}"}
        self.seen: dict[str, dict] = {}
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def nodes(self) -> list[dict]:
        request = urllib.request.Request(self.url, headers=self.headers)
        with urllib.request.urlopen(request, timeout=10) as reply:
            return json.loads(reply.read())["data"]["result"]["result"]

    def _run(self):
        while not self.done.is_set():
            try:
                nodes = self.nodes()
            except OSError:
                nodes = None
            now = time.time()
            with self.lock:
                for node in nodes or []:
                    if node.get("resources_total", {}).get("GPU", 0) <= 0:
                        continue
                    entry = self.seen.setdefault(node["node_id"], {"first": None, "last": None})
                    if node["state"] == "ALIVE":
                        entry["first"] = entry["first"] or now
                        entry["last"] = now
            self.done.wait(0.5)

    def alive_gpu_nodes(self) -> set[str]:
        return {
            n["node_id"]
            for n in self.nodes()
            if n["state"] == "ALIVE" and n.get("resources_total", {}).get("GPU", 0) > 0
        }

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()


def _bad_input(user: Client, stack, tmp_path, data: str) -> None:
    """More GPUs per trial than any node type has: one line. More trials at once than the
    node types' max workers hold: a warning with the numbers. Neither launches a node."""
    args = user.search_args(tmp_path, "too-big", data, "--gpus-per-trial", 2, trials=1)
    _one_clear_line(user.run(*args), "2 GPUs per trial", "largest node", "has 1")
    probe = (
        "from tuner.cluster import connect, check_gpus; import sys; a = sys.argv[1]; "
        "connect(a); check_gpus(1, a, 9, warn=print)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, stack.address],
        capture_output=True,
        text=True,
        timeout=120,
        env=user.env,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "can run at most 8 trial(s) at once at 1 GPU per trial" in result.stdout, result.stdout
    assert "gpu_worker: up to 8 worker(s) of 1 GPU" in result.stdout
    assert "max_concurrent is 9" in result.stdout


def _wait_for(condition, what: str, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def test_autoscaling_from_zero_gpu_workers(client, cluster_data, secret, tmp_path):
    config = stack_module.fake_autoscaling_config(_aws(), idle_timeout_minutes=IDLE_MINUTES)
    (gpu_type,) = [
        t for t, spec in config["available_node_types"].items() if "GPU" in spec["resources"]
    ]
    assert config["available_node_types"][gpu_type]["min_workers"] == 0
    stack = stack_module.LocalStack(tmp_path / "stack")
    stack.up(
        env={**client.env},
        s3_endpoint=client.stack.s3_endpoint,
        autoscaling=config,
        prometheus=False,
    )
    user = Client(stack, secret, client.postgres)
    timings = {}
    try:
        with NodeWatch(stack) as watch:
            assert watch.alive_gpu_nodes() == set()  # zero GPU workers at the start
            _bad_input(user, stack, tmp_path, cluster_data)
            for gpus, expected in ((1, 2), (0.5, 1)):
                name = f"autoscaled-{str(gpus).replace('.', '')}"
                args = user.search_args(
                    tmp_path, name, cluster_data, "--gpus-per-trial", gpus, trials=2, epochs=1
                )
                submitted = time.time()
                result = user.run(*args, timeout=900)
                assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
                ended = time.time()
                rows = trial_rows(client.s3(), f"s3://runs/{name}")
                assert len(rows) == 2 and all(rows.values()), rows
                on = {r["node_id"] for trial in rows.values() for r in trial}
                with watch.lock:
                    gpu_nodes = {n for n, e in watch.seen.items() if e["first"]}
                assert on <= gpu_nodes, (on, gpu_nodes)  # trials ran on autoscaled workers
                with watch.lock:
                    started = {n for n, e in watch.seen.items() if e["first"] >= submitted - 1}
                    launched = min(watch.seen[n]["first"] for n in started)
                # The autoscaler launched as many workers as the two queued trials could use at
                # once, or one more: a launched node that registers only after the
                # autoscaler's next update is not counted as pending (this provider creates
                # nodes synchronously); that one gets no trial and is removed.
                assert expected <= len(started) <= expected + 1, watch.seen
                # The trials ran on no more workers than that. Fewer when the first trial
                # ended before the second worker was up: its recycled worker process took
                # the second trial, one after the other, never two 1-GPU trials at once.
                assert 1 <= len(on) <= expected, (on, watch.seen)
                if gpus == 1 and len(on) == 1:
                    first, second = sorted(rows.values(), key=lambda t: t[0]["first_step_at"])
                    assert second[0]["first_step_at"] >= first[-1]["timestamp"] - 1, rows
                first_step = min(row[0]["first_step_at"] for row in rows.values())
                _wait_for(lambda: not watch.alive_gpu_nodes(), "idle workers removed", 180)
                removed = time.time()
                # Each worker stayed at least the idle timeout after its last trial's last
                # report (Tune's whole-second timestamp; the watch polls every 0.5 s).
                idle = {}
                for node in on:
                    last_report = max(
                        r["timestamp"] for t in rows.values() for r in t if r["node_id"] == node
                    )
                    idle[node] = watch.seen[node]["last"] - last_report
                assert min(idle.values()) >= IDLE_MINUTES * 60 - 1, idle
                timings[gpus] = {
                    "submit_to_first_worker_s": launched - submitted,
                    "submit_to_first_step_s": first_step - submitted,
                    "search_end_to_idle_removed_s": removed - ended,
                    "last_report_to_removal_s": sorted(idle.values()),
                    "workers_with_trials": len(on),
                    "workers_started": len(started),
                }
    finally:
        stack.down()
    print(json.dumps(timings, indent=2))  # benchmarks/RESULTS.md quotes these (pytest -s)

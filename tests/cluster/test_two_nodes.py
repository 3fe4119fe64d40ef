"""A search on the local two-node cluster (infra/local/stack.py): trials run on both nodes,
stream their shards from the S3 server into each node's own cache, checkpoint to the bucket;
`status` reads progress from storage alone; the search's metrics reach Ray's Prometheus
endpoints; the dashboard listens on loopback; the secret key is written nowhere."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import urllib.parse
import urllib.request

import psutil
import pytest

from tests.conftest import REPO, trial_rows

EXPERIMENT = "s3://runs/two-nodes"
# Ray's GPU metrics exist only on nodes with GPUs (none here); the dashboard's other queries
# must all be exported by this CPU cluster.
GPU_ONLY = {"ray_node_gpus_utilization", "ray_node_gram_used", "ray_node_gram_available"}


def _scrape(targets: list[str]) -> set[str]:
    names = set()
    for target in targets:
        try:
            text = urllib.request.urlopen(f"http://{target}/metrics", timeout=5).read().decode()
        except OSError:
            continue
        names |= {
            line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1].isalpha()
        }
    return names


@pytest.fixture(scope="module")
def searched(client, cluster_data, tmp_path_factory):
    """`mammotune search --address` on the stack, its metrics scraped while it runs."""
    folder = tmp_path_factory.mktemp("two-nodes")
    scraped: set[str] = set()
    done = threading.Event()

    def scrape():
        while not done.is_set():
            try:
                scraped.update(_scrape(client.stack.metrics_targets()))
            except (OSError, ValueError):
                pass
            done.wait(2)

    thread = threading.Thread(target=scrape, daemon=True)
    thread.start()
    started = time.time()
    try:
        result = client.run(*client.search_args(folder, "two-nodes", cluster_data))
        time.sleep(3)  # one more report interval of the metrics agents
        scraped.update(_scrape(client.stack.metrics_targets()))
    finally:
        done.set()
        thread.join()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {
        "result": result,
        "metrics": scraped,
        "folder": folder,
        "window": (started, time.time()),
    }


def test_trials_ran_on_both_nodes_and_streamed_from_s3(client, searched):
    fs = client.s3()
    rows = trial_rows(fs, EXPERIMENT)
    assert len(rows) == 3 and all(len(r) >= 1 for r in rows.values()), rows
    nodes = {row["node_id"] for trial in rows.values() for row in trial}
    assert nodes == set(client.stack.node_ids().values())  # the head and the worker node
    for node in ("head", "worker"):  # each node fetched the shards into its own cache
        assert list((client.stack.directory / f"cache-{node}").glob("*.parquet")), node
    log = (client.stack.directory / "logs" / "s3.log").read_text()
    assert re.search(r"GET /data/cbis/roi-48/train/\w+\.parquet", log)
    checkpoints = fs.glob(f"{EXPERIMENT.removeprefix('s3://')}/trial_*/checkpoint_*/state.pt")
    assert checkpoints


def test_live_trial_table_and_status_from_storage(client, searched):
    out = searched["result"].stdout
    assert "two-nodes: 3 finished; best val_roc_auc" in out  # the last line of the table
    result = client.run("status", EXPERIMENT, "--json", env={"RAY_ADDRESS": "127.0.0.1:1"})
    assert result.returncode == 0, result.stderr  # no cluster needed: storage only
    status = json.loads(result.stdout)
    assert status["started_trials"] == status["planned_trials"] == 3
    assert status["finished"] == 3 and status["running"] == 0 and status["errored"] == 0
    assert status["best"]["value"] > 0.5 and status["best"]["checkpoint"].startswith(EXPERIMENT)


def test_every_dashboard_metric_is_exported(searched):
    dashboard = json.loads((REPO / "dashboards" / "grafana" / "mammotune.json").read_text())
    queried = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            queried |= set(re.findall(r"\b(ray_[a-z0-9_]+)", target["expr"]))
    own = {q for q in queried if q.startswith("ray_mammotune_")}
    assert len(own) >= 5, own  # trials by state, best, images/s, data wait, epoch time
    exported = searched["metrics"]
    histogram_parts = {n.rsplit("_", 1)[0] for n in exported if n.endswith(("_bucket", "_sum"))}
    missing = {q for q in queried - GPU_ONLY if q not in exported | histogram_parts}
    assert not missing, f"queried by the dashboard, never exported: {sorted(missing)}"


def _prometheus(url: str, path: str, **params):
    query = urllib.parse.urlencode(params)
    with urllib.request.urlopen(f"{url}/api/v1/{path}?{query}", timeout=30) as reply:
        body = json.loads(reply.read())
    assert body["status"] == "success", body
    return body["data"]


def test_every_dashboard_query_returns_data_on_prometheus(client, searched):
    """Prometheus (Debian's, with dashboards/prometheus/prometheus.yml, started with the
    stack) scraped both nodes through Ray's service discovery during the search; every
    query of the Grafana dashboard, its variable filled in, returns data over that time."""
    url = client.stack.prometheus
    assert url, "the stack started no Prometheus: install Debian's prometheus (.ci/run does)"
    targets = _prometheus(url, "targets")["activeTargets"]
    assert len({t["labels"]["instance"] for t in targets if t["health"] == "up"}) >= 2, targets
    dashboard = json.loads((REPO / "dashboards" / "grafana" / "mammotune.json").read_text())
    (variable,) = [v for v in dashboard["templating"]["list"] if v["name"] == "experiment"]
    metric, label = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["definition"]).groups()
    assert "two-nodes" in _prometheus(url, f"label/{label}/values", **{"match[]": metric})
    start, end = searched["window"]
    empty, exempt, evaluated = [], [], 0
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$experiment", "two-nodes")
            if set(re.findall(r"\b(ray_[a-z0-9_]+)", expr)) & GPU_ONLY:
                exempt.append(panel["title"])  # no GPU on this machine: no series
                continue
            data = _prometheus(url, "query_range", query=expr, start=start, end=end, step=2)
            evaluated += 1
            if not any(series["values"] for series in data["result"]):
                empty.append(f"{panel['title']}: {expr}")
    assert not empty, "dashboard queries with no data:\n" + "\n".join(empty)
    assert evaluated >= 10 and sorted(exempt) == [
        "GPU memory used per node (Ray)",
        "GPU utilization per node (Ray)",
    ]


def test_dashboard_and_jobs_api_listen_on_loopback_only(client):
    port = int(client.stack.dashboard.rsplit(":", 1)[1])
    listening = [
        c.laddr.ip
        for c in psutil.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port
    ]
    assert listening and set(listening) <= {"127.0.0.1", "::1"}, listening
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass


def test_the_secret_key_is_written_nowhere(client, searched, secret, tmp_path):
    downloaded = tmp_path / "best"
    result = client.run("best", EXPERIMENT, "--download", downloaded)
    assert result.returncode == 0, result.stderr
    assert (downloaded / "state.pt").exists()
    needle = secret.encode()
    # nor the PostgreSQL study's password (Tune pickles the searcher, its storage with it)
    password = client.postgres.password.encode()
    places = [searched["folder"], downloaded, client.stack.directory, client.stack.temp_dir]
    checked = 0
    for place in places:
        for path in place.rglob("*"):
            if path.is_file() and not path.is_socket():
                try:
                    data = path.read_bytes()
                    assert needle not in data, f"secret key found in {path}"
                    assert password not in data, f"PostgreSQL password found in {path}"
                except (PermissionError, OSError):
                    continue
                checked += 1
    fs = client.s3()
    for bucket in ("data", "runs"):
        for key in fs.find(bucket):
            data = fs.cat(key)
            assert needle not in data and password not in data, f"a secret in s3://{key}"
            checked += 1
    for output in (searched["result"].stdout, searched["result"].stderr, result.stdout):
        assert secret not in output
    assert checked > 100  # logs, caches, Ray's session files, dataset, trials, checkpoints

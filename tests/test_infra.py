"""The cloud launch files, dashboards and docs: Ray's own cluster-config validator accepts the
launcher YAML, the KubeRay manifests carry what a GPU search needs, token authentication is on
everywhere, and no secret is in any file the project ships."""

from __future__ import annotations

import json
import os
import re
import shlex

import pytest
import yaml

from tests.conftest import REPO, stack_module
from tuner._presets import resolve_space
from tuner.cli import build_parser

INFRA = REPO / "infra"


def test_the_aws_launcher_config_passes_rays_validator():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((INFRA / "aws" / "cluster.yaml").read_text())
    validate_config(prepare_config(config))  # Ray's JSON schema, as `ray up` applies it

    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert "GPU" not in head["resources"]
    gpu = [t for t in types.values() if t["resources"].get("GPU", 0) >= 1]
    assert gpu and gpu[0]["min_workers"] == 0 and gpu[0]["max_workers"] >= 1  # autoscaling
    for node_type in types.values():  # bucket access from an instance role, not keys
        assert "instance-profile/" in node_type["node_config"]["IamInstanceProfile"]["Arn"]
    assert config["docker"]["image"]
    commands = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    starts = [c for c in commands if "ray start" in c]
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token" in c for c in starts), starts
    assert "--dashboard-host=127.0.0.1" in " ".join(config["head_start_ray_commands"])


def test_a_broken_launcher_config_is_refused_by_the_same_validator():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((INFRA / "aws" / "cluster.yaml").read_text())
    del config["available_node_types"]["gpu_worker"]["resources"]
    with pytest.raises(Exception, match="resources"):
        validate_config(prepare_config(config))


def _kuberay(name: str) -> dict:
    return yaml.safe_load((INFRA / "kuberay" / name).read_text())


def _check_cluster_spec(spec: dict) -> None:
    assert spec["authOptions"]["mode"] == "token"
    assert tuple(map(int, spec["rayVersion"].split("."))) >= (2, 52)
    assert spec["headGroupSpec"]["serviceType"] == "ClusterIP"
    (group,) = spec["workerGroupSpecs"]
    assert group["minReplicas"] == 0 and group["maxReplicas"] >= 1
    pod = group["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] >= 1
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    assert container["image"] == spec["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]


def test_the_kuberay_raycluster_has_a_gpu_group_and_token_auth():
    cluster = _kuberay("raycluster.yaml")
    assert cluster["apiVersion"] == "ray.io/v1" and cluster["kind"] == "RayCluster"
    _check_cluster_spec(cluster["spec"])


def test_the_kuberay_rayjob_runs_a_valid_search():
    job = _kuberay("rayjob.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    _check_cluster_spec(job["spec"]["rayClusterSpec"])
    command = shlex.split(job["spec"]["entrypoint"])
    assert command[:2] == ["mammotune", "search"]
    args = build_parser().parse_args(command[1:])  # what the job's driver will parse
    assert resolve_space(args.space).is_file()
    assert args.data.startswith("s3://") and args.storage.startswith("s3://")


def test_the_image_is_cuda_based_and_installs_the_project():
    dockerfile = (INFRA / "docker" / "Dockerfile").read_text()
    assert re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:\S+", dockerfile, re.M)
    assert "FROM ${CUDA_IMAGE}" in dockerfile
    # A regular install, not editable: the presets ship inside the wheel (tests/test_wheel.py).
    assert re.search(r"^RUN pip install [^\n]* \.\s", dockerfile, re.M)
    assert not re.search(r"pip install [^\n]*\s-e\s", dockerfile)
    assert "RAY_AUTH_MODE=token" in dockerfile


def test_prometheus_scrapes_through_rays_service_discovery_file():
    config = yaml.safe_load((REPO / "dashboards" / "prometheus" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    files = job["file_sd_configs"][0]["files"]
    assert files == ["/tmp/ray/prom_metrics_service_discovery.json"]


def test_the_grafana_dashboard_parses_and_shows_ray_beside_mammotune():
    dashboard = json.loads((REPO / "dashboards" / "grafana" / "mammotune.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert any("ray_mammotune_" in e for e in exprs)
    assert any("ray_node_gpus_utilization" in e for e in exprs)
    assert any("ray_node_cpu_utilization" in e for e in exprs)


SHIPPED = [
    *INFRA.rglob("*"),
    *(REPO / "dashboards").rglob("*"),
    REPO / "README.md",
    *(REPO / "search_spaces").glob("*.yaml"),
]
SECRETS = [
    re.compile(r"AKIA[0-9A-Z]{16}"),  # an AWS access key id
    re.compile(r"aws_secret_access_key\s*[:=]\s*[\"']?[A-Za-z0-9/+=]{40}", re.I),  # its value
    re.compile(r"RAY_AUTH_TOKEN\s*[:=]\s*[\"']?[0-9a-f]{16,}", re.I),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
]


@pytest.mark.parametrize("path", [p for p in SHIPPED if p.is_file()], ids=lambda p: p.name)
def test_no_secret_and_no_advice_to_turn_authentication_off(path):
    text = path.read_text(errors="replace")
    for pattern in SECRETS:
        assert not pattern.search(text), f"{path}: {pattern.pattern}"
    assert not re.search(r"RAY_AUTH_MODE\s*[=:]\s*[\"']?disabled", text), path
    assert "authOptions" not in text or re.search(r"mode:\s*token", text), path


def test_the_local_stack_command_reports_a_stack_that_is_not_running(tmp_path):
    import subprocess
    import sys

    stack = [sys.executable, str(INFRA / "local" / "stack.py")]
    for action in ("status", "down"):
        result = subprocess.run(
            [*stack, action, "--dir", str(tmp_path / "none")], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        assert "not running" in result.stdout
    assert not (tmp_path / "none").exists()  # nothing made by asking


def test_the_local_stack_takes_its_ports_below_the_ephemeral_range(monkeypatch):
    """Outgoing connections take source ports from the ephemeral range: a port picked there
    before the head starts can be taken by the time the worker's raylet binds it."""
    import socket

    stack = stack_module
    low = stack._ephemeral_low()
    ports = stack.allocate_ports()
    singles = [ports[n] for n in stack.STACK_PORTS]
    singles += [ports[node][name] for node in ("head", "worker") for name in stack.NODE_PORTS]
    ranges = [range(lo, hi + 1) for lo, hi in (ports[n]["workers"] for n in ("head", "worker"))]
    every = singles + [port for r in ranges for port in r]
    assert len(set(every)) == len(every) == len(singles) + 400
    assert 10000 <= min(every) and max(every) < low - stack.SINGLES  # apart from free_port's
    assert low - stack.SINGLES <= stack.free_port() < low

    # A block with a port already listened on is passed over.
    monkeypatch.setattr(stack.random, "shuffle", lambda bases: bases.sort())
    first = stack.allocate_ports()["gcs"]
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", first))
        listener.listen()
        # The next free block: usually the one after, but Ray workers of other processes on
        # this machine listen in 10002-19999 (Ray's default worker ports) and may hold it.
        second = stack.allocate_ports()["gcs"]
        assert second > first and (second - first) % stack.BLOCK == 0


MONITORING = ("RAY_PROMETHEUS_HOST", "RAY_GRAFANA_HOST", "RAY_GRAFANA_IFRAME_HOST")


def test_every_head_tells_its_dashboard_where_prometheus_and_grafana_are():
    """Without these, every chart of the Ray dashboard says "Set up Prometheus and Grafana"."""
    config = yaml.safe_load((INFRA / "aws" / "cluster.yaml").read_text())
    commands = config["head_start_ray_commands"]
    (start,) = [c for c in commands if "ray start --head" in c]
    monitoring = commands[-1]
    # The launcher's autoscaler records no node types in the GCS: the head does, after start.
    assert any("publish_node_types('~/ray_bootstrap_config.yaml'" in c for c in commands)
    for name in MONITORING:
        assert re.search(rf"\b{name}=http://127\.0\.0\.1:\d+", start), name
    assert "ray start --head" in start
    script = REPO / monitoring.replace("/opt/mammotune/", "")
    assert script.is_file() and os.access(script, os.X_OK), script
    dockerfile = (INFRA / "docker" / "Dockerfile").read_text()
    assert "COPY dashboards ./dashboards" in dockerfile and "prometheus" in dockerfile
    for name in ("raycluster.yaml", "rayjob.yaml"):
        spec = _kuberay(name)["spec"]
        spec = spec.get("rayClusterSpec", spec)
        env = {e["name"]: e["value"] for e in _head_container(spec)["env"]}
        assert all(env.get(n, "").startswith("http://") for n in MONITORING), (name, env)


def _head_container(spec: dict) -> dict:
    return spec["headGroupSpec"]["template"]["spec"]["containers"][0]


def test_the_kuberay_gpu_group_matches_the_aws_node_type():
    """The autoscaling test runs the AWS file's node types; KubeRay's must be the same facts:
    from zero, the same maximum, the same GPUs and CPUs per worker, the same idle timeout
    (a RayJob's one-search cluster may let idle GPU workers go sooner)."""
    aws = yaml.safe_load((INFRA / "aws" / "cluster.yaml").read_text())
    (gpu,) = [t for t in aws["available_node_types"].values() if "GPU" in t["resources"]]
    for name in ("raycluster.yaml", "rayjob.yaml"):
        spec = _kuberay(name)["spec"]
        spec = spec.get("rayClusterSpec", spec)
        (group,) = spec["workerGroupSpecs"]
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert group["minReplicas"] == gpu["min_workers"] == 0, name
        assert group["maxReplicas"] == gpu["max_workers"], name
        assert int(limits["nvidia.com/gpu"]) == gpu["resources"]["GPU"], name
        assert int(limits["cpu"]) == gpu["resources"]["CPU"], name
        idle = spec.get("autoscalerOptions", {}).get("idleTimeoutSeconds")
        if name == "raycluster.yaml":
            assert idle == aws["idle_timeout_minutes"] * 60, (name, idle)
        else:
            assert 0 < idle <= aws["idle_timeout_minutes"] * 60, (name, idle)

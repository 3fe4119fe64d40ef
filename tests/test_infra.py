"""The cloud launch files, dashboards and docs: Ray's own cluster-config validator accepts the
launcher YAML, the KubeRay manifests carry what a GPU search needs, token authentication is on
everywhere, and no secret is in any file the project ships. Their network defaults: the local
stack's servers on loopback, an AWS security group with SSH from one network (Ray's own AWS
bootstrap run against moto's EC2), IMDSv2, internal IPs, non-root KubeRay pods behind a
NetworkPolicy, Prometheus and Grafana on loopback, Grafana with a generated password."""

from __future__ import annotations

import configparser
import importlib.util
import ipaddress
import json
import os
import pathlib
import re
import shlex
import stat
import subprocess
import time

import psutil
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


KINDS = {"raycluster.yaml": "RayCluster", "rayjob.yaml": "RayJob"}


def _kuberay_docs(name: str) -> list[dict]:
    return list(yaml.safe_load_all((INFRA / "kuberay" / name).read_text()))


def _kuberay(name: str) -> dict:
    """The file's RayCluster or RayJob (its NetworkPolicy follows it in the same file)."""
    (doc,) = [d for d in _kuberay_docs(name) if d["kind"] == KINDS[name]]
    return doc


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


# -- network defaults ----------------------------------------------------------------------


def _wait(condition, what: str, timeout: float = 60, poll: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"not within {timeout:.0f}s: {what}")


def _loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    if address.version == 6 and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_loopback


def _listening(stack) -> dict[int, set[str]]:
    """{port: addresses} the stack's processes (every node's tree, S3, Prometheus) listen on."""
    found: dict[int, set[str]] = {}
    for pid in stack.pids():
        for process in stack_module._tree(pid):
            try:
                connections = process.net_connections(kind="inet")
            except psutil.Error:
                continue
            for c in connections:
                if c.status == psutil.CONN_LISTEN:
                    found.setdefault(c.laddr.port, set()).add(c.laddr.ip)
    return found


@pytest.fixture(scope="module")
def loopback_stack(tmp_path_factory):
    """A real local stack (two Ray nodes, S3, Prometheus when installed) in a folder whose
    name needs shell quoting (its token path is in env.sh)."""
    folder = tmp_path_factory.mktemp("infra") / "it's a $tack `x`"
    stack = stack_module.LocalStack(folder)
    stack.up(scrape_interval="2s")
    yield stack
    stack.down()


def test_the_local_stack_listens_on_loopback_only(loopback_stack):
    """Every server of both nodes (GCS, raylet, object manager, core workers, dashboard and
    its agents, runtime-env agent, metrics exporter, client server), S3 and Prometheus: none
    on 0.0.0.0, ::, or the machine's network address."""
    stack = loopback_stack
    ports = stack.state["ports"]
    expected = {ports[n] for n in ("gcs", "dashboard", "client", "s3")}
    expected |= {ports[node][n] for node in ("head", "worker") for n in stack_module.NODE_PORTS}
    if stack.prometheus:
        expected.add(ports["prometheus"])

    # Ray's agents start after the node registers: wait for every named port to listen.
    def all_listening():
        found = _listening(stack)
        return found if expected <= set(found) else None

    found = _wait(all_listening, f"every one of the stack's ports listening: {sorted(expected)}")
    exposed = {port: ips for port, ips in found.items() if not all(map(_loopback, ips))}
    assert not exposed, f"listening beyond loopback: {exposed}"

    # What Prometheus scrapes: every node's metrics exporter, at 127.0.0.1.
    def both_nodes():
        try:
            targets = stack.metrics_targets()
        except (OSError, ValueError):  # not written yet, or being written
            return None
        return targets if len(targets) >= 2 else None

    targets = _wait(both_nodes, "both nodes in Ray's service-discovery file")
    assert all(t.startswith("127.0.0.1:") for t in targets), targets
    metrics = {ports[node]["metrics-export-port"] for node in ("head", "worker")}
    assert metrics <= {int(t.rsplit(":", 1)[1]) for t in targets}


def test_the_local_stack_token_is_private_and_env_sh_is_quoted(loopback_stack):
    stack = loopback_stack
    token = stack.directory / "auth_token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert re.fullmatch(r"[0-9a-f]{64}", token.read_text())
    # Sourced by bash, env.sh gives back exactly the client's environment, the token path
    # (a quote, a space, a $ and backticks in it) included, and runs nothing.
    sourced = subprocess.run(
        ["bash", "-c", 'set -eu; source "$1"; env -0', "bash", stack.directory / "env.sh"],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"]},
        check=True,
    )
    env = dict(line.split("=", 1) for line in sourced.stdout.split("\0") if "=" in line)
    client = stack.client_env()
    assert {k: env.get(k) for k in client} == client
    assert "$tack `x`" in client["RAY_AUTH_TOKEN_PATH"]


def test_env_sh_quotes_any_value(tmp_path, monkeypatch):
    stack = stack_module.LocalStack(tmp_path / "s")
    marker = tmp_path / "ran"
    values = {
        "A": "two words",
        "B": 'it\'s "quoted" \\ here',
        "C": f"$(touch {marker}) `touch {marker}` $HOME ${{X:-y}}",
        "D": "line\nbreak; echo ran",
        "E": "",
    }
    monkeypatch.setattr(stack, "client_env", lambda: values)
    script = tmp_path / "env.sh"
    script.write_text(stack.env_sh())
    for name, value in values.items():
        result = subprocess.run(
            ["bash", "-c", f'set -eu; source "$1"; printf %s "${name}"', "bash", script],
            capture_output=True,
            text=True,
            check=True,
        )
        assert result.stdout == value, name
    assert not marker.exists()


def test_the_stack_token_is_created_private_never_made_so_after(tmp_path, monkeypatch):
    """0600 from the moment the file exists: created with that mode, not written then
    chmod-ed (chmod is not even called), whatever the umask."""
    old = os.umask(0)
    try:

        def refuse(*args, **kwargs):
            raise AssertionError("chmod on a new token file")

        with monkeypatch.context() as patched:
            for owner, name in ((os, "chmod"), (os, "fchmod"), (pathlib.Path, "chmod")):
                patched.setattr(owner, name, refuse)
            stack_module.write_token(tmp_path / "auth_token")
    finally:
        os.umask(old)
    token = tmp_path / "auth_token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    first = token.read_text()
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    stack_module.write_token(token)  # kept
    assert token.read_text() == first
    token.chmod(0o644)  # a token from before: kept, made private
    stack_module.write_token(token)
    assert token.read_text() == first and stat.S_IMODE(token.stat().st_mode) == 0o600


# AWS: the security group, Ray's bootstrap against moto's EC2


def _security_group_module():
    spec = importlib.util.spec_from_file_location(
        "security_group", INFRA / "aws" / "security_group.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


security_group = _security_group_module()
PLACEHOLDER = "sg-YOUR-GROUP-ID"


@pytest.fixture
def ec2(monkeypatch, tmp_path):
    """moto's EC2 (in process): a VPC with a public and a private subnet."""
    from moto import mock_aws

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)  # the tests' S3 server's
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("HOME", str(tmp_path))  # Ray writes the key pair's .pem under ~/.ssh
    import boto3

    with mock_aws():
        client = boto3.client("ec2", region_name="us-east-1")
        vpc = client.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        public = client.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]
        client.modify_subnet_attribute(
            SubnetId=public["SubnetId"], MapPublicIpOnLaunch={"Value": True}
        )
        private = client.create_subnet(VpcId=vpc, CidrBlock="10.0.2.0/24")["Subnet"]
        yield client, vpc, public["SubnetId"], private["SubnetId"]


def _ingress(client, vpc: str) -> dict[str, set[tuple]]:
    groups = client.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc]}])
    return {
        g["GroupName"]: security_group._flatten(g["IpPermissions"])
        for g in groups["SecurityGroups"]
    }


ANYWHERE = {"0.0.0.0/0", "::/0"}


def test_the_security_group_lets_ssh_in_from_one_network_only(ec2):
    client, vpc, _, _ = ec2
    group = security_group.ensure_group(client, "198.51.100.7/32", vpc_id=vpc)
    rules = _ingress(client, vpc)[security_group.DEFAULT_NAME]
    assert rules == {
        ("-1", None, None, "GroupId", group),  # the cluster's nodes to each other
        ("tcp", 22, 22, "CidrIp", "198.51.100.7/32"),
    }
    # Again: the same group. Your address changed: SSH from the new one only. A rule added
    # by hand (SSH from anywhere) is taken out.
    assert security_group.ensure_group(client, "198.51.100.7", vpc_id=vpc) == group
    client.authorize_security_group_ingress(
        GroupId=group,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 22,
                "ToPort": 22,
                "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
            }
        ],
    )
    assert security_group.ensure_group(client, "203.0.113.0/24", vpc_id=vpc) == group
    assert _ingress(client, vpc)[security_group.DEFAULT_NAME] == {
        ("-1", None, None, "GroupId", group),
        ("tcp", 22, 22, "CidrIp", "203.0.113.0/24"),
    }


@pytest.mark.parametrize(
    "cidr", ["0.0.0.0/0", "::/0", "10.0.0.0/8", "2001:db8::/32", "198.51.100.7/24", "me"]
)
def test_the_security_group_refuses_ssh_from_anywhere(cidr):
    with pytest.raises(ValueError, match="ssh-cidr"):
        security_group.ssh_cidr(cidr)
    assert security_group.main(["--region", "us-east-1", "--ssh-cidr", cidr]) == 2


def _cluster_yaml() -> dict:
    return yaml.safe_load((INFRA / "aws" / "cluster.yaml").read_text())


def test_the_launcher_names_the_group_uses_internal_ips_and_requires_imdsv2():
    config = _cluster_yaml()
    text = (INFRA / "aws" / "cluster.yaml").read_text()
    assert "infra/aws/security_group.py" in text and "--ssh-cidr" in text  # how to set it
    provider = config["provider"]
    assert provider["use_internal_ips"] is True  # workers: private addresses
    assert provider["use_external_head_ip"] is True  # the launcher: the head's public one
    assert "security_group" not in provider  # Ray's own group: SSH from 0.0.0.0/0
    for name, node_type in config["available_node_types"].items():
        node = node_type["node_config"]
        assert node["SecurityGroupIds"] == [PLACEHOLDER], name
        assert node["MetadataOptions"]["HttpTokens"] == "required", name
        assert node["MetadataOptions"]["HttpEndpoint"] == "enabled", name
        assert node["MetadataOptions"].get("HttpPutResponseHopLimit", 1) == 1, name


def test_ray_bootstraps_every_node_into_that_group_and_opens_nothing_else(ec2):
    """`ray up`'s AWS bootstrap (Ray's own code, against moto's EC2) with the group made by
    security_group.py in place of the placeholder and workers in a private subnet: Ray makes
    no group of its own, nothing in the VPC lets anyone in from anywhere, and every node
    type keeps IMDSv2."""
    from ray.autoscaler._private.aws.config import bootstrap_aws
    from ray.autoscaler._private.util import prepare_config, validate_config

    client, vpc, public, private = ec2
    group = security_group.ensure_group(client, "198.51.100.7/32", vpc_id=vpc)
    config = _cluster_yaml()
    for name, node_type in config["available_node_types"].items():
        node = node_type["node_config"]
        node["SecurityGroupIds"] = [
            group if g == PLACEHOLDER else g for g in node["SecurityGroupIds"]
        ]
        node["SubnetIds"] = [public if name == config["head_node_type"] else private]
    config = prepare_config(config)
    validate_config(config)
    booted = bootstrap_aws(config)  # a private subnet is refused without use_internal_ips

    for name, node_type in booted["available_node_types"].items():
        assert node_type["node_config"]["SecurityGroupIds"] == [group], name
        assert node_type["node_config"]["MetadataOptions"]["HttpTokens"] == "required", name
    ingress = _ingress(client, vpc)
    assert set(ingress) == {"default", security_group.DEFAULT_NAME}, ingress  # none of Ray's
    opened = [(g, r) for g, rules in ingress.items() for r in rules if r[4] in ANYWHERE]
    assert not opened, opened


# Grafana and Prometheus on a head: infra/monitoring/start-on-head.sh with stand-ins that
# record how they were started

STAND_IN = """#!/usr/bin/env bash
out="$STAND_IN_OUT/$(basename "$0").$$"
{ printf '%s\\n' "$@"; } > "$out.args.tmp"
env > "$out.env.tmp"
if [[ " $* " == *" --password-from-stdin "* ]]; then cat > "$out.stdin.tmp"; fi
for f in "$out".*.tmp; do mv "$f" "${f%.tmp}"; done
"""


def _grafana_ini_of_ray() -> str:
    from ray.dashboard.modules.metrics.templates import GRAFANA_INI_TEMPLATE

    return GRAFANA_INI_TEMPLATE.format(grafana_provisioning_folder="/x")


def _start_on_head(tmp_path, records: int):
    """Run the script; wait for ``records`` stand-in starts in all; return their records and
    the script's output."""
    out = tmp_path / "stand-ins"
    out.mkdir(exist_ok=True)
    bin_dir = tmp_path / "bin"
    if not bin_dir.exists():
        bin_dir.mkdir()
        for name in ("grafana", "prometheus"):
            (bin_dir / name).write_text(STAND_IN)
            (bin_dir / name).chmod(0o755)
    grafana = tmp_path / "ray" / "session_latest" / "metrics" / "grafana"
    (grafana / "dashboards").mkdir(parents=True, exist_ok=True)
    (grafana / "grafana.ini").write_text(_grafana_ini_of_ray())
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "MAMMOTUNE_HOME": str(REPO),
        "RAY_TMP": str(tmp_path / "ray"),
        "MONITORING_DIR": str(tmp_path / "monitoring"),
        "STAND_IN_OUT": str(out),
    }
    script = INFRA / "monitoring" / "start-on-head.sh"
    result = subprocess.run([script], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    args = _wait(
        lambda: (lambda a: a if len(a) >= records else None)(sorted(out.glob("*.args"))),
        f"{records} stand-in starts",
        timeout=30,
    )
    starts = []
    for path in args:
        stem = str(path)[: -len(".args")]
        env_lines = pathlib.Path(stem + ".env").read_text().splitlines()
        stdin = pathlib.Path(stem + ".stdin")
        starts.append(
            {
                "name": path.name.split(".")[0],
                "args": path.read_text().splitlines(),
                "env": dict(x.split("=", 1) for x in env_lines if "=" in x),
                "stdin": stdin.read_text() if stdin.exists() else None,
            }
        )
        for suffix in (".args", ".env", ".stdin"):
            pathlib.Path(stem + suffix).unlink(missing_ok=True)
    return starts, result.stdout + result.stderr


def _effective(ini: str, env: dict, section: str, key: str) -> str | None:
    """A Grafana setting as Grafana reads it: GF_<SECTION>_<KEY> over the ini file."""
    name = f"GF_{section.upper().replace('.', '_')}_{key.upper()}"
    if name in env:
        return env[name]
    parser = configparser.ConfigParser()
    parser.read_string(ini)
    return parser.get(section, key, fallback=None)


def test_grafana_on_the_head_has_a_generated_password_and_no_anonymous_access(tmp_path):
    starts, output = _start_on_head(tmp_path, records=2)
    (grafana,) = [s for s in starts if s["name"] == "grafana"]
    (prometheus,) = [s for s in starts if s["name"] == "prometheus"]
    state = tmp_path / "monitoring"
    password_file = state / "grafana-admin-password"
    password = password_file.read_text()
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert len(password) >= 24 and password.strip() == password
    ini = _grafana_ini_of_ray()
    assert _effective(ini, {}, "auth.anonymous", "enabled") == "true"  # Ray's default
    env = grafana["env"]
    assert _effective(ini, env, "auth.anonymous", "enabled") == "false"
    assert _effective(ini, env, "users", "allow_sign_up") == "false"
    assert env["GF_SECURITY_ADMIN_PASSWORD__FILE"] == str(password_file)
    assert "GF_SECURITY_ADMIN_PASSWORD" not in env  # read from the file, not the environment
    assert env["GF_SERVER_HTTP_ADDR"] == "127.0.0.1"
    assert "--web.listen-address=127.0.0.1:9090" in prometheus["args"]
    assert all(password not in " ".join(s["args"]) for s in starts)
    assert str(password_file) in output and password not in output  # where, never what

    # A restart keeps the password; another head gets another one.
    starts, _ = _start_on_head(tmp_path, records=2)
    assert password_file.read_text() == password
    other = tmp_path / "other"
    other.mkdir()
    _start_on_head(other, records=2)
    assert (other / "monitoring" / "grafana-admin-password").read_text() != password

    # The file lost, Grafana's database kept: the new password is set through Grafana's CLI,
    # on its stdin.
    (state / "grafana").mkdir(exist_ok=True)
    (state / "grafana" / "grafana.db").write_text("")
    password_file.unlink()
    starts, _ = _start_on_head(tmp_path, records=3)
    (reset,) = [s for s in starts if "reset-admin-password" in s["args"]]
    assert reset["stdin"] == password_file.read_text() != password
    assert password_file.read_text() not in " ".join(reset["args"])


def _commands(text: str) -> list[str]:
    """Shell commands of a script or of a YAML comment, continuation lines joined."""
    return re.sub(r"\\\n\s*#?\s*", " ", text).splitlines()


def test_prometheus_is_started_on_loopback_everywhere():
    """Prometheus's default is every interface, and its API has no authentication."""
    config = (REPO / "dashboards" / "prometheus" / "prometheus.yml").read_text()
    assert "0.0.0.0" not in config
    started = 0
    for path in [
        INFRA / "monitoring" / "start-on-head.sh",
        REPO / "dashboards" / "prometheus" / "prometheus.yml",
    ]:
        for line in _commands(path.read_text()):
            if re.search(r"\bprometheus\s+--config\.file", line):
                assert re.search(r"--web\.listen-address=127\.0\.0\.1:\d+", line), (path, line)
                started += 1
    assert started == 2
    stack = (INFRA / "local" / "stack.py").read_text()
    assert '"--web.listen-address=127.0.0.1:' in stack  # and run: the loopback stack test


# KubeRay: non-root pods, the NetworkPolicy


def _pod_templates(name: str) -> list[dict]:
    spec = _kuberay(name)["spec"]
    spec = spec.get("rayClusterSpec", spec)
    return [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]


def _image_user() -> int:
    dockerfile = (INFRA / "docker" / "Dockerfile").read_text()
    (*_, user) = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0, user  # numeric: runAsNonRoot can check it
    assert re.search(rf"useradd [^\n]*--uid {uid}\b", dockerfile)
    assert re.search(rf"groupadd [^\n]*--gid {gid or uid}\b", dockerfile)
    # Ubuntu 24.04 images have `ubuntu` as uid 1000 already: useradd would fail on it.
    assert "userdel --remove ubuntu" in dockerfile
    return int(uid)


@pytest.mark.parametrize("name", sorted(KINDS))
def test_kuberay_pods_run_as_the_images_non_root_user(name):
    uid = _image_user()
    spec = _kuberay(name)["spec"]
    spec = spec.get("rayClusterSpec", spec)
    for template in _pod_templates(name):
        pod = template["spec"]["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] == uid, pod
        assert pod["seccompProfile"]["type"] == "RuntimeDefault"
        for container in template["spec"]["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, container["name"]
            assert context["capabilities"]["drop"] == ["ALL"], container["name"]
            assert not context.get("privileged") and context.get("runAsUser", uid) == uid
            assert context.get("runAsNonRoot", True) is True
    sidecar = spec["autoscalerOptions"]["securityContext"]
    assert sidecar["allowPrivilegeEscalation"] is False and sidecar["capabilities"]["drop"] == [
        "ALL"
    ]


def _selects(selector: dict, labels: dict) -> bool:
    assert set(selector) <= {"matchLabels"}, selector  # no matchExpressions to evaluate
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _admits(policy: dict, *, labels: dict, namespace: dict | None, port: int) -> bool:
    """Whether the policy lets a TCP connection in to ``port`` from a pod with ``labels`` in
    the policy's namespace (``namespace`` None) or in a namespace with those labels."""
    for rule in policy["spec"].get("ingress", []):
        ports = rule.get("ports")
        for p in ports or []:
            assert "endPort" not in p and isinstance(p["port"], int), p
        if ports and not any(
            p["port"] == port and p.get("protocol", "TCP") == "TCP" for p in ports
        ):
            continue
        if not rule.get("from"):
            return True  # from every source
        for peer in rule["from"]:
            assert "ipBlock" not in peer, peer
            if "namespaceSelector" in peer:  # this namespace's labels: none we rely on
                in_namespace = _selects(peer["namespaceSelector"], namespace or {})
            else:
                in_namespace = namespace is None
            if in_namespace and _selects(peer.get("podSelector", {}), labels):
                return True
    return False


def _policy(name: str) -> dict:
    (policy,) = [d for d in _kuberay_docs(name) if d["kind"] == "NetworkPolicy"]
    assert policy["apiVersion"] == "networking.k8s.io/v1"
    return policy


@pytest.mark.parametrize("name", sorted(KINDS))
def test_kuberay_network_policy_admits_the_cluster_the_namespace_and_the_operator_only(name):
    policy = _policy(name)
    assert "Ingress" in policy["spec"]["policyTypes"]
    head, *workers = [t["metadata"]["labels"] for t in _pod_templates(name)]
    for labels in (head, *workers):  # it applies to every pod of the cluster
        assert _selects(policy["spec"]["podSelector"], labels), labels
    (other,) = [n for n in KINDS if n != name]
    other_cluster = _pod_templates(other)[0]["metadata"]["labels"]
    stranger = {"app": "web"}
    operator = {"app.kubernetes.io/name": "kuberay-operator"}
    cases = [
        # (from pod, from namespace (None: this one), port, admitted)
        (head, None, 6379, True),  # GCS
        (workers[0], None, 6379, True),
        (workers[0], None, 23456, True),  # a worker process's port
        (head, None, 8080, True),
        (stranger, None, 8265, True),  # dashboard / Jobs API: this namespace
        (stranger, None, 10001, True),  # Ray client
        (stranger, None, 6379, False),
        (stranger, None, 8080, False),
        (stranger, None, 52365, False),  # dashboard agent
        (stranger, None, 23456, False),
        (other_cluster, None, 6379, False),  # the other mammotune cluster
        (stranger, {"kubernetes.io/metadata.name": "web"}, 8265, False),
        (stranger, {"kubernetes.io/metadata.name": "web"}, 10001, False),
        (stranger, {"kubernetes.io/metadata.name": "web"}, 6379, False),
        (head, {"kubernetes.io/metadata.name": "web"}, 6379, False),  # labels alone: no
        (operator, {"kubernetes.io/metadata.name": "ray-system"}, 8265, True),
        (operator, {"kubernetes.io/metadata.name": "ray-system"}, 6379, False),
        (stranger, {"kubernetes.io/metadata.name": "prometheus-system"}, 8080, True),
        (stranger, {"kubernetes.io/metadata.name": "prometheus-system"}, 8265, False),
        (stranger, {"kubernetes.io/metadata.name": "prometheus-system"}, 6379, False),
    ]
    wrong = [
        (labels, namespace, port, admitted)
        for labels, namespace, port, admitted in cases
        if _admits(policy, labels=labels, namespace=namespace, port=port) != admitted
    ]
    assert not wrong, wrong

#!/usr/bin/env python3
"""A real multi-node Ray cluster and an S3-protocol server on one machine, for development
and tests: a Ray head and a Ray worker node (separate ``ray start`` processes, each with its
own ports, CPUs and shard cache) and moto's standalone S3 server, every one of them (Ray's
GCS, raylets, object managers, agents, metrics exporters, dashboard, client server) listening
on 127.0.0.1 only, with Ray's token authentication on.

    python infra/local/stack.py up            # prints what to source
    source .mammotune-stack/env.sh            # RAY_ADDRESS, RAY_AUTH_MODE=token, token, S3
    mammotune prepare ... s3://data/cbis --address "$RAY_ADDRESS"
    mammotune search --address "$RAY_ADDRESS" --data s3://data/cbis --storage s3://runs/exp1
    python infra/local/stack.py status
    python infra/local/stack.py down          # stops exactly what `up` started
    python infra/local/stack.py up --autoscaling   # head only; Ray's autoscaler adds workers

With Debian's ``prometheus`` on PATH it also starts Prometheus with the project's
``dashboards/prometheus/prometheus.yml`` and points the Ray dashboard at it. With
``--autoscaling`` the worker node is not started: Ray's autoscaler launches worker nodes of
the node types of ``infra/aws/cluster.yaml`` on this machine (Ray's fake multi-node provider)
as trials queue for them, and removes them when idle.

Ray binds its servers to a node's IP address only when that address is 127.0.0.1, and on
Linux it turns 127.0.0.1 (``--node-ip-address``, ``--address``) into the machine's network
address unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` ("this machine alone": loopback). The
stack sets it for every node and client (``env.sh``); only the worker node's ``ray start``,
which refuses to join a cluster in that mode, runs through :data:`LOOPBACK_WORKER`.

The token file is made 0600 when it is created; ``env.sh`` quotes every value for the shell.

It needs the test extras (``pip install -e ".[test]"``: moto's server). ``down`` stops the
processes this stack started (and their children) by PID, never every Ray
process on the machine by name, so another Ray cluster on the same machine is left alone.
Tests import :class:`LocalStack` from this file.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

BIN = Path(sys.executable).parent
STATE = "stack.json"
# Ray's own per-node ports: each node needs its own when two share a machine.
NODE_PORTS = (
    "metrics-export-port",
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "runtime-env-agent-port",
    "node-manager-port",
    "object-manager-port",
)
# Ray's switch for a machine that is a cluster of its own: node and bootstrap addresses stay
# 127.0.0.1 (ray._private.services.get_node_ip_address), and so Ray's GCS, raylet, object
# manager, core workers, dashboard agent, runtime-env agent and metrics exporter bind
# 127.0.0.1 instead of every interface.
LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
# `ray start --address` for the worker node: in loopback mode the CLI refuses to join a
# cluster ("Multi-node Ray clusters are not supported on Windows and OSX"), and with the mode
# off it would resolve 127.0.0.1 to the machine's address, which the head does not listen on.
# This runs Ray's own CLI with the refusal lifted and the node's address left at 127.0.0.1,
# in this one process: the node's processes inherit the loopback mode from the environment.
LOOPBACK_WORKER = (
    "import sys; import ray._private.ray_constants as c; import ray._private.services as s; "
    "c.ENABLE_RAY_CLUSTER = True; s.get_node_ip_address = lambda address=None: '127.0.0.1'; "
    "from ray.scripts.scripts import main; sys.argv[0] = 'ray'; sys.exit(main())"
)


class StackError(RuntimeError):
    pass


STACK_PORTS = ("gcs", "dashboard", "client", "s3", "prometheus")
REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_CONFIG = REPO / "dashboards" / "prometheus" / "prometheus.yml"
BLOCK = 500  # ports a stack reserves: its own, then each node's own and its worker range
SINGLES = 2000  # just below the ephemeral range: single ports (free_port), never a stack's


def _ephemeral_low() -> int:
    """The lowest port the kernel hands out to outgoing connections."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def allocate_ports() -> dict:
    """Every port of a stack, from one block below the kernel's ephemeral range.

    Ports picked by binding to port 0 come from the ephemeral range, from which the kernel
    also takes the source ports of outgoing connections: the head's processes open hundreds
    of those before the worker node starts, and one of them may take a port meant for the
    worker's raylet, which then dies ("Failed to start the grpc server", and ``ray start``
    times out 30 s later). Below that range only listeners take ports.
    """
    top = _ephemeral_low() - SINGLES - BLOCK
    bases = list(range(10000, top, BLOCK))
    random.shuffle(bases)
    for base in bases:
        singles = iter(range(base, base + 100))
        ports: dict = {name: next(singles) for name in STACK_PORTS}
        for i, node in enumerate(("head", "worker")):
            ports[node] = {name: next(singles) for name in NODE_PORTS}
            ports[node]["workers"] = (base + 100 + 200 * i, base + 299 + 200 * i)
        chosen = [*(ports[n] for n in STACK_PORTS)]
        chosen += [ports[node][name] for node in ("head", "worker") for name in NODE_PORTS]
        if all(map(_bindable, chosen)):
            return ports
    raise StackError(f"no free block of {BLOCK} ports between 10000 and {top + BLOCK}")


def free_port() -> int:
    """One port nothing listens on, for a server started outside a stack (tests' S3 servers):
    below the ephemeral range, as :func:`allocate_ports`, and apart from stacks' blocks."""
    low = _ephemeral_low()
    for port in random.sample(range(low - SINGLES, low), 100):
        if _bindable(port):
            return port
    raise StackError(f"no free port between {low - SINGLES} and {low}")


def fake_autoscaling_config(
    cluster: dict, *, head_cpus: int = 1, idle_timeout_minutes: float | None = None
) -> dict:
    """An autoscaler config for Ray's fake multi-node provider (worker nodes are processes on
    this machine, advertising the resources of their node type, GPUs included) with the
    worker node types, min/max workers and upscaling of a Ray cluster launcher file
    (``infra/aws/cluster.yaml``). Ray's own ``example.yaml`` for this provider is not in the
    wheel: this is its shape.

    Args:
        idle_timeout_minutes: instead of the file's (minutes on a cloud; seconds in a test).
    """
    head_type = cluster["head_node_type"]
    types = {
        name: {
            "resources": dict(spec["resources"]),
            "node_config": {},
            "min_workers": int(spec.get("min_workers", 0)),
            "max_workers": int(spec.get("max_workers", cluster["max_workers"])),
        }
        for name, spec in cluster["available_node_types"].items()
        if name != head_type
    }
    types["ray.head.default"] = {
        "resources": {"CPU": head_cpus},
        "node_config": {},
        "max_workers": 0,
    }
    idle = cluster.get("idle_timeout_minutes", 5)
    return {
        "cluster_name": cluster.get("cluster_name", "mammotune") + "-local",
        "max_workers": int(cluster["max_workers"]),
        "upscaling_speed": float(cluster.get("upscaling_speed", 1.0)),
        "idle_timeout_minutes": idle if idle_timeout_minutes is None else idle_timeout_minutes,
        "provider": {
            "type": "fake_multinode",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },
        "available_node_types": types,
        "head_node_type": "ray.head.default",
        "auth": {},
        "docker": {},
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


def write_token(path: Path) -> None:
    """A new random token in ``path``, the file created 0600 (never readable by others, not
    even for a moment); an existing token is kept, and made 0600 if it was not."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
        return
    with os.fdopen(fd, "w") as file:
        file.write(secrets.token_hex(32))


def _tree(pid: int) -> list[psutil.Process]:
    try:
        process = psutil.Process(pid)
        return [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _stop(processes: list[psutil.Process], *, sig=signal.SIGTERM, grace: float = 10) -> None:
    for process in processes:
        try:
            process.send_signal(sig)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(processes, timeout=grace)
    for process in alive:  # `ray start --block` can hang on SIGTERM; its children do not
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=10)


class LocalStack:
    """The stack whose state lives in ``directory`` (created by :meth:`up`)."""

    def __init__(self, directory: str | os.PathLike = ".mammotune-stack"):
        self.directory = Path(directory).resolve()
        self.state: dict = {}
        if (self.directory / STATE).exists():
            self.state = json.loads((self.directory / STATE).read_text())

    # -- what clients need -------------------------------------------------------------
    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.state['ports']['gcs']}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.state['ports']['dashboard']}"

    @property
    def s3_endpoint(self) -> str:
        return self.state.get("s3_endpoint") or f"http://127.0.0.1:{self.state['ports']['s3']}"

    @property
    def temp_dir(self) -> Path:
        return Path(self.state["temp_dir"])

    @property
    def prometheus(self) -> str | None:
        """Prometheus's URL, if the stack started one."""
        if "prometheus" not in self.state.get("pids", {}):
            return None
        return f"http://127.0.0.1:{self.state['ports']['prometheus']}"

    @property
    def service_discovery(self) -> Path:
        """The file where Ray's head lists every node's metrics endpoint."""
        return self.temp_dir / "head" / "prom_metrics_service_discovery.json"

    def metrics_targets(self) -> list[str]:
        """Prometheus targets from Ray's service-discovery file (what prometheus.yml reads)."""
        sd = self.service_discovery
        return [t for group in json.loads(sd.read_text()) for t in group["targets"]]

    def client_env(self) -> dict[str, str]:
        """Environment for a driver or `mammotune` command that uses this stack."""
        env = {
            "RAY_ADDRESS": self.address,
            "RAY_API_SERVER_ADDRESS": self.dashboard,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(self.directory / "auth_token"),
            "AWS_ENDPOINT_URL": self.s3_endpoint,
            "RAY_USAGE_STATS_ENABLED": "0",
            **LOOPBACK,  # or a driver's ray.init turns 127.0.0.1 into the machine's address
        }
        return env

    def env_sh(self) -> str:
        """:meth:`client_env` as shell ``export`` lines, every value quoted."""
        return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in self.client_env().items())

    def node_env(self, node: str) -> dict[str, str]:
        """A node's environment: the client's, its own shard cache, quicker metric reports."""
        return {
            **self.client_env(),
            "MAMMOTUNE_CACHE_DIR": str(self.directory / f"cache-{node}"),
            "RAY_metrics_report_interval_ms": "2000",
            "NO_ALBUMENTATIONS_UPDATE": "1",
            # Jobs run `python -m tuner` on the head: this environment's Python, as a
            # container image's would be on a real cluster.
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    # -- lifecycle ---------------------------------------------------------------------
    def up(
        self,
        *,
        head_cpus: int = 1,
        worker_cpus: int = 1,
        object_store_mb: int = 512,
        env: dict[str, str] | None = None,
        buckets: tuple[str, ...] = ("data", "runs"),
        s3_endpoint: str | None = None,
        prometheus: bool | None = None,
        scrape_interval: str = "10s",
        autoscaling: dict | None = None,
        timeout: float = 90,
    ) -> LocalStack:
        """Start the S3 server, the head and the worker node; return once both nodes are up.

        Args:
            env: the environment the servers and nodes start with (default: this process's);
                credentials for the S3 server come from it, as on a real cluster.
            buckets: made empty on the S3 server (s3://data, s3://runs).
            s3_endpoint: use this S3 server (it outlives the cluster, as a cloud bucket
                does) instead of starting one; ``buckets`` are then left as they are.
            prometheus: start Prometheus (Debian's ``prometheus``) with the project's
                ``dashboards/prometheus/prometheus.yml``, scraping every node every
                ``scrape_interval``, and tell the Ray dashboard where it is
                (``RAY_PROMETHEUS_HOST``); None: if the binary is on PATH.
            autoscaling: an autoscaling cluster instead of the fixed worker node: the head
                alone, with Ray's autoscaler launching and removing worker nodes of these
                node types on this machine (:func:`fake_autoscaling_config`).
        """
        if prometheus is None:
            prometheus = shutil.which("prometheus") is not None
        if self.state and any(_tree(p) for p in self.pids()):
            raise StackError(f"a stack is already running from {self.directory}; run `down`")
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        base_env = dict(os.environ if env is None else env)
        base_env.setdefault("AWS_ACCESS_KEY_ID", "mammotune-local")
        base_env.setdefault("AWS_SECRET_ACCESS_KEY", "mammotune-local")
        base_env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        self._env = base_env  # kept in memory only: it may hold credentials
        write_token(self.directory / "auth_token")
        # Ray's socket paths must stay under ~107 characters: a short folder of its own.
        temp_dir = tempfile.mkdtemp(prefix="mt-ray-", dir="/tmp")
        ports = allocate_ports()
        self.state = {"temp_dir": temp_dir, "ports": ports, "pids": {}}
        if s3_endpoint:
            self.state["s3_endpoint"] = s3_endpoint
        logs = self.directory / "logs"
        logs.mkdir(exist_ok=True)
        try:
            if not s3_endpoint:
                self._start_s3(buckets, base_env, timeout)
            head_env = dict(base_env)
            if prometheus:  # started below, once the head has written its discovery file
                head_env["RAY_PROMETHEUS_HOST"] = f"http://127.0.0.1:{ports['prometheus']}"
            head = self._ray_start("head", head_cpus, object_store_mb)
            if autoscaling:
                head += [f"--autoscaling-config={self._autoscaling(autoscaling, head_env)}"]
            self._start("head", head, head_env)
            self._wait_nodes(1, timeout, base_env)
            if autoscaling:
                self._publish_node_types(autoscaling, base_env)
            if not autoscaling:
                worker = self._ray_start("worker", worker_cpus, object_store_mb)
                self._start("worker", worker, base_env)
                self._wait_nodes(2, timeout, base_env)
            if prometheus:
                self._start_prometheus(scrape_interval, base_env, timeout)
        except BaseException:
            self.down()
            raise
        (self.directory / "env.sh").write_text(self.env_sh())
        return self

    def _start_s3(self, buckets, env: dict, timeout: float) -> None:
        port = str(self.state["ports"]["s3"])
        self._start(
            "s3", [str(BIN / "python"), "-m", "moto.server", "-H", "127.0.0.1", "-p", port], env
        )
        self._wait_http(f"{self.s3_endpoint}/moto-api/", timeout)
        self._make_buckets(buckets, env)

    def _autoscaling(self, config: dict, head_env: dict) -> Path:
        """Write the autoscaler's config; set up the head's environment for Ray's fake
        multi-node provider, which starts worker nodes from the autoscaler's process."""
        config = {**config, "provider": {**config["provider"], "gcs_address": self.address}}
        path = self.directory / "autoscaling.yaml"
        path.write_text(json.dumps(config, indent=2))
        # Autoscaled nodes pick random ports (Ray's own choice) and take their temp dir from
        # RAY_TMPDIR: this stack's, never /tmp/ray, where other Ray sessions live.
        autoscaled = self.temp_dir / "autoscaled"
        autoscaled.mkdir()
        # Ray's default update interval (5 s), as on a cloud: Ray's own tests use 1 s, and
        # then a node that registers after the next update is launched twice.
        head_env.update({"RAY_FAKE_CLUSTER": "1", "RAY_TMPDIR": str(autoscaled)})
        self.state["autoscaling"] = True
        return path

    def _publish_node_types(self, config: dict, env: dict) -> None:
        """What a launcher head does after `ray start` (infra/aws/cluster.yaml): record the
        autoscaler's node types where Ray and mammotune read them."""
        code = (
            "import json, sys; from tuner.cluster import publish_node_types; "
            "publish_node_types(json.load(open(sys.argv[1])), sys.argv[2])"
        )
        path = self.directory / "autoscaling.yaml"
        result = subprocess.run(
            [str(BIN / "python"), "-c", code, str(path), self.address],
            env={**env, **self.client_env()},
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise StackError(f"publishing the node types failed:\n{result.stderr[-2000:]}")

    def _start_prometheus(self, interval: str, env: dict, timeout: float) -> None:
        """Prometheus with the project's config, its service-discovery file pointed at this
        stack's head (Prometheus watches the file: it may appear after the start)."""
        import yaml

        spec = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
        spec["global"]["scrape_interval"] = spec["global"]["evaluation_interval"] = interval
        for job in spec["scrape_configs"]:
            for sd in job.get("file_sd_configs", []):
                sd["files"] = [str(self.service_discovery)]
        config = self.directory / "prometheus.yml"
        config.write_text(yaml.safe_dump(spec, sort_keys=False))
        port = self.state["ports"]["prometheus"]
        command = [shutil.which("prometheus") or "prometheus", f"--config.file={config}"]
        command += [f"--storage.tsdb.path={self.directory / 'prometheus-data'}"]
        command += [f"--web.listen-address=127.0.0.1:{port}"]
        self._start("prometheus", command, env)
        self._wait_http(f"http://127.0.0.1:{port}/-/ready", timeout)

    def _make_buckets(self, buckets, env: dict) -> None:
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_DEFAULT_REGION"],
        )
        for bucket in buckets:
            client.create_bucket(Bucket=bucket)

    def _ray_start(self, node: str, cpus: int, object_store_mb: int) -> list[str]:
        ports = self.state["ports"]
        own = ports[node]
        if node == "head":
            command = [str(BIN / "ray")]
        else:
            command = [str(BIN / "python"), "-c", LOOPBACK_WORKER]
        command += ["start", "--block", f"--num-cpus={cpus}", "--num-gpus=0"]
        command += ["--node-ip-address=127.0.0.1"]
        # Each node its own temp dir, as on separate machines: nodes on one machine sharing
        # one would share (and delete each other's) runtime-env files such as a job's
        # working directory.
        command += [f"--temp-dir={self.temp_dir / node}"]
        command += [f"--object-store-memory={object_store_mb << 20}"]
        command += [f"--{name}={own[name]}" for name in NODE_PORTS]
        command += [
            f"--min-worker-port={own['workers'][0]}",
            f"--max-worker-port={own['workers'][1]}",
        ]
        if node == "head":
            command += [
                "--head",
                f"--port={ports['gcs']}",
                # The dashboard and its Jobs API on loopback only: reach them through an SSH
                # tunnel or a port-forward (README, "Run on a cluster").
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={ports['dashboard']}",
                f"--ray-client-server-port={ports['client']}",
            ]
        else:
            command += [f"--address={self.address}"]
        return command

    def _start(self, name: str, command: list[str], base_env: dict) -> None:
        env = {**base_env, **(self.node_env(name) if name in ("head", "worker") else {})}
        log = (self.directory / "logs" / f"{name}.log").open("w")
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        self.state["pids"][name] = process.pid
        self._save()

    def _save(self) -> None:
        (self.directory / STATE).write_text(json.dumps(self.state, indent=2))

    def _wait_http(self, url: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(url, timeout=2)
                return
            except OSError:
                time.sleep(0.3)
        raise StackError(f"{url} did not answer within {timeout:.0f}s; see {self.directory}/logs")

    def node_ids(self, env: dict | None = None) -> dict[str, str]:
        """{"head": node id, "worker": node id} of the alive nodes, as the GCS sees them
        (asked from a separate driver process)."""
        # The probe's own line is marked: a driver also prints the cluster's events (the
        # autoscaler's "Resized to 1 CPUs.") to its stdout, before or after it.
        probe = (
            "import json, ray; ray.init(logging_level='ERROR', log_to_driver=False);"
            "print('NODES', json.dumps({n['NodeManagerPort']: n['NodeID'] for n in ray.nodes() "
            "if n['Alive']}))"
        )
        result = subprocess.run(
            [str(BIN / "python"), "-c", probe],
            env={**(env or os.environ), **self.client_env()},
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            return {}
        lines = [x for x in result.stdout.splitlines() if x.startswith("NODES ")]
        if not lines:
            return {}
        by_port = json.loads(lines[-1].removeprefix("NODES "))
        ports = self.state["ports"]
        names = {str(ports[node]["node-manager-port"]): node for node in ("head", "worker")}
        return {names[port]: node_id for port, node_id in by_port.items() if port in names}

    def alive_nodes(self, env: dict | None = None) -> int:
        return len(self.node_ids(env))

    def restart_worker(self, *, cpus: int = 1, object_store_mb: int = 512, timeout=90) -> None:
        """Start the worker node again (after :meth:`kill_node`), with the same ports."""
        env = getattr(self, "_env", None) or dict(os.environ)
        self._start("worker", self._ray_start("worker", cpus, object_store_mb), env)
        self._wait_nodes(2, timeout, env)

    def _wait_nodes(self, count: int, timeout: float, env: dict) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, pid in self.state["pids"].items():
                fatal = self._raylet_fatal(name) if name in ("head", "worker") else ""
                if fatal or not _tree(pid):
                    log = (self.directory / "logs" / f"{name}.log").read_text()[-3000:]
                    raise StackError(f"{name} exited during start:\n{log}{fatal}")
            if self.alive_nodes(env) >= count:
                return
            time.sleep(1)
        raise StackError(f"{count} Ray node(s) not up within {timeout:.0f}s; see the logs")

    def _raylet_fatal(self, node: str) -> str:
        """The raylet's fatal log lines, if it died: ``ray start`` itself only notices 30 s
        later, and then says nothing of why."""
        logs = self.temp_dir / node / "session_latest" / "logs" / "raylet.out"
        try:
            lines = logs.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        fatal = [line for line in lines if re.match(r"\[[^\]]* C \d+ \d+\]", line)]
        return "".join(f"\nraylet: {line[:1000]}" for line in fatal[-3:])

    def pids(self) -> list[int]:
        return list(self.state.get("pids", {}).values())

    def kill_node(self, node: str = "worker") -> None:
        """SIGKILL a node's whole process tree (raylet, agents, trial workers): a lost machine."""
        _stop(_tree(self.state["pids"][node]), sig=signal.SIGKILL, grace=10)

    def pause_s3(self) -> None:
        """Freeze the S3 server (SIGSTOP): it accepts connections but answers nothing."""
        os.kill(self.state["pids"]["s3"], signal.SIGSTOP)

    def resume_s3(self) -> None:
        os.kill(self.state["pids"]["s3"], signal.SIGCONT)

    def down(self) -> None:
        """Stop what :meth:`up` started (worker, head, S3 server), nothing else."""
        pids = self.state.get("pids", {})
        if "s3" in pids:
            try:
                os.kill(pids["s3"], signal.SIGCONT)  # a paused server cannot act on SIGTERM
            except ProcessLookupError:
                pass
        for name in ("worker", "head", "prometheus", "s3"):
            if name in pids:
                _stop(_tree(pids[name]))
        if self.state.get("temp_dir"):
            # Ray's logs (both nodes) are kept with the stack's own logs for post-mortems.
            target = self.directory / "ray"
            if Path(self.state["temp_dir"]).exists():
                shutil.rmtree(target, ignore_errors=True)  # the previous run's
                shutil.move(self.state["temp_dir"], target)
        self.state["pids"] = {}
        if self.directory.exists():
            self._save()

    def describe(self) -> str:
        running = {name: bool(_tree(pid)) for name, pid in self.state.get("pids", {}).items()}
        lines = [f"stack at {self.directory}"]
        if not running:
            return lines[0] + ": not running"
        lines += [f"  {name}: {'running' if up else 'stopped'}" for name, up in running.items()]
        lines += [
            f"  Ray address:    {self.address}",
            f"  dashboard/Jobs: {self.dashboard}",
            f"  S3 endpoint:    {self.s3_endpoint}",
            f"  metrics:        {', '.join(self.metrics_targets())}",
            f"  Prometheus:     {self.prometheus or 'not started (no prometheus on PATH)'}",
            f"  source {shlex.quote(str(self.directory / 'env.sh'))}",
        ]
        return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--dir", default=".mammotune-stack", help="state, token, logs, caches")
    parser.add_argument("--head-cpus", type=int, default=1)
    parser.add_argument("--worker-cpus", type=int, default=1)
    parser.add_argument(
        "--autoscaling",
        action="store_true",
        help="the head alone, Ray's autoscaler adding and removing worker nodes of the node "
        "types of infra/aws/cluster.yaml (GPU workers advertise GPUs; CPU processes)",
    )
    parser.add_argument("--idle-minutes", type=float, default=0.5, help="with --autoscaling")
    args = parser.parse_args(argv)
    stack = LocalStack(args.dir)
    try:
        if args.action == "up":
            autoscaling = None
            if args.autoscaling:
                import yaml

                cluster = yaml.safe_load((REPO / "infra" / "aws" / "cluster.yaml").read_text())
                autoscaling = fake_autoscaling_config(
                    cluster, head_cpus=args.head_cpus, idle_timeout_minutes=args.idle_minutes
                )
            stack.up(
                head_cpus=args.head_cpus, worker_cpus=args.worker_cpus, autoscaling=autoscaling
            )
        elif args.action == "down":
            stack.down()
    except StackError as exc:
        print(f"stack {args.action}: error: {exc}", file=sys.stderr)
        return 2
    print(stack.describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())

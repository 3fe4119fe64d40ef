"""Connecting to Ray: an in-process local cluster by default, a running cluster with
``--address`` or ``RAY_ADDRESS``.

Ray's token authentication stays on: a local cluster makes and uses its own token; for a
cluster started with ``RAY_AUTH_MODE=token`` the client needs ``RAY_AUTH_MODE=token`` too,
and reads the token as Ray documents it (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or
``~/.ray/auth_token``)."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Callable

from tuner.errors import UserError
from tuner.redaction import mask_url_secrets

__all__ = ["connect", "use_given_token", "check_reachable", "check_gpus", "publish_node_types"]

_TOKEN_HINT = (
    "set RAY_AUTH_MODE=token and the cluster's token in RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH "
    "or ~/.ray/auth_token (on the head: `ray get-auth-token`)"
)


def use_given_token() -> None:
    """A token in RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH is meant to be used: turn on token
    mode for this process when RAY_AUTH_MODE is unset. Ray reads the mode when it is first
    imported, so this runs before anything imports ray (``import tuner`` calls it)."""
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        os.environ.setdefault("RAY_AUTH_MODE", "token")


def check_reachable(address: str, *, timeout: float = 5.0) -> None:
    """Fail in seconds, not after Ray's retries, when nothing listens at ``host:port``.

    Raises:
        UserError: naming the address and the fix.
    """
    if "://" in address or ":" not in address:
        return  # "auto", ray://, http:// are checked by the library that uses them
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except ValueError:
        raise UserError(f"{address!r} is not a Ray address; give HOST:PORT (port 6379)") from None
    except OSError as exc:
        raise UserError(
            f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); check --address "
            "or RAY_ADDRESS and that the head node is up (`ray status` on the head)"
        ) from None


def connect(address: str | None = None) -> str:
    """Start or join Ray once per process; returns the dashboard URL (or "")."""
    import ray

    if ray.is_initialized():
        return ""
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address and address != "local":
        check_reachable(address)
    try:
        # "local" starts a new in-process cluster even when `ray start` left one (or a stale
        # record of one) on this machine: a cluster is joined only when asked for.
        with _masked_entrypoint():
            context = ray.init(address=address or "local", logging_level=logging.WARNING)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
        if _refused_token(exc):
            raise UserError(
                f"the Ray cluster at {address} refused this client's token (missing or wrong); "
                + _TOKEN_HINT
            ) from None
        raise UserError(
            f"cannot connect to the Ray cluster at {address}: {str(exc).splitlines()[0]} "
            f"(check the address; for a cluster with token authentication {_TOKEN_HINT})"
        ) from None
    url = getattr(context, "dashboard_url", "") or ""
    return f"http://{url}" if url and not url.startswith("http") else url


@contextlib.contextmanager
def _masked_entrypoint():
    """Ray records the driver's command line as its job's entrypoint, which the dashboard
    and the Jobs API show to anyone with access: with URL passwords masked (``--study
    postgresql://user:pw@...``). Ray reads it through this one function when it connects."""
    import ray._private.utils as ray_utils

    original = getattr(ray_utils, "get_entrypoint_name", None)
    if original is None:  # a Ray without it: tests/cluster/test_secrets.py would say so
        yield
        return
    ray_utils.get_entrypoint_name = lambda: mask_url_secrets(original())
    try:
        yield
    finally:
        ray_utils.get_entrypoint_name = original


def _refused_token(exc: BaseException) -> bool:
    seen = 0
    while exc is not None and seen < 10:
        text = f"{type(exc).__name__} {exc}"
        if "InvalidAuthToken" in text or "AuthenticationError" in text:
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def check_gpus(
    gpus_per_trial: float,
    address: str | None,
    max_concurrent: int = 0,
    *,
    warn: Callable[[str], None] | None = None,
) -> None:
    """Refuse a search whose trials no node can hold; warn when the cluster cannot run
    ``max_concurrent`` of them at once.

    A trial's GPUs are on one node: what counts is each node's GPUs (the alive nodes, and
    the node types the autoscaler may launch, up to their max workers). A cluster whose
    autoscaler can launch GPU nodes passes with none alive: trials wait for them.

    Raises:
        UserError: no GPU now and none in the autoscaler's node types, or more GPUs per
            trial than any node (type) has.
    """
    import math

    import ray

    if gpus_per_trial <= 0:
        return
    alive = [
        float(node["Resources"].get("GPU", 0))
        for node in ray.nodes()
        if node.get("Alive") and node["Resources"].get("GPU", 0) > 0
    ]
    groups = _autoscaler_gpu_groups()  # (node type, GPUs per node, max workers)
    where = f"the Ray cluster at {address}" if address else "this machine's local Ray"
    if not alive and not groups:
        raise UserError(
            f"the search asks for {gpus_per_trial:g} GPU per trial but {where} has no GPUs "
            "(and no autoscaling GPU node type); pass --gpus-per-trial 0 to train on CPUs, or "
            "use a cluster with GPU workers (infra/aws/cluster.yaml, infra/kuberay/)"
        )
    largest = max([*alive, *(gpus for _, gpus, _ in groups)])
    if gpus_per_trial > largest:
        raise UserError(
            f"the search asks for {gpus_per_trial:g} GPUs per trial but the largest node of "
            f"{where} (alive or autoscaled) has {largest:g}; a trial's GPUs are on one node: "
            f"pass --gpus-per-trial {largest:g} or less, or add a larger node type"
        )
    if max_concurrent <= 0:
        return
    per_node = [math.floor(g / gpus_per_trial + 1e-9) for g in alive]
    per_node += [math.floor(g / gpus_per_trial + 1e-9) * n for _, g, n in groups]
    if sum(per_node) < max_concurrent:
        nodes = [f"{len(alive)} alive GPU node(s)"] if alive else []
        nodes += [f"{name}: up to {n} worker(s) of {g:g} GPU" for name, g, n in groups]
        (warn or logging.getLogger(__name__).warning)(
            f"{where} can run at most {sum(per_node)} trial(s) at once at {gpus_per_trial:g} "
            f"GPU per trial ({'; '.join(nodes)}), but max_concurrent is {max_concurrent}: "
            "the other trials wait"
        )


def _autoscaler_gpu_groups() -> list[tuple[str, float, int]]:
    """The GPU node types the cluster's autoscaler may launch: (name, GPUs per node, max
    workers); empty when it has none or there is no autoscaler.

    Read the way Ray Train and Ray Data read it (the autoscaler's cluster config in the GCS).
    """
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
        if config is None:
            return []
        return [
            (group.name, float(group.resources.get("GPU", 0)), int(group.max_count))
            for group in config.node_group_configs
            if group.resources.get("GPU", 0) > 0 and group.max_count != 0
        ]
    except Exception:  # no such record (an older Ray): treated as no GPU node type
        return []


def publish_node_types(config: dict | str | os.PathLike, address: str | None = None) -> int:
    """Record a Ray cluster launcher config's node types in the cluster's GCS; returns how
    many worker node types it recorded.

    Ray reads the autoscaler's node types from the GCS (``state.get_cluster_config``: Ray
    Train, Ray Data, :func:`check_gpus`), but its cluster-launcher autoscaler does not
    record them there. Without them a search for GPUs on a cluster that has no GPU worker
    yet, only GPU node types to launch, looks like a search on a cluster without GPUs.
    Run on the head after ``ray start`` (``infra/aws/cluster.yaml`` does).

    Args:
        config: the launcher's YAML (a path, or the loaded dict), ``~/ray_bootstrap_config.yaml``
            on the head.
        address: the cluster (default: ``RAY_ADDRESS`` or this process's connection).
    """
    import ray
    import yaml
    from ray._raylet import GCS_AUTOSCALER_CLUSTER_CONFIG_KEY, GCS_AUTOSCALER_STATE_NAMESPACE
    from ray.core.generated import autoscaler_pb2
    from ray.experimental.internal_kv import _internal_kv_put

    if not isinstance(config, dict):
        path = os.path.expanduser(os.fspath(config))
        with open(path) as f:
            config = yaml.safe_load(f)
    head = config.get("head_node_type")
    cluster = autoscaler_pb2.ClusterConfig()
    workers = 0
    for name, spec in config.get("available_node_types", {}).items():
        group = cluster.node_group_configs.add()
        group.name = name
        for key, value in (spec.get("resources") or {}).items():
            group.resources[key] = int(value)  # the GCS keeps whole units, as Ray does
        if name == head:
            group.min_count, group.max_count = 1, 1
            continue
        group.min_count = int(spec.get("min_workers", 0))
        group.max_count = int(spec.get("max_workers", config.get("max_workers", 0)))
        workers += 1
    if not ray.is_initialized():
        with _masked_entrypoint():
            ray.init(
                address=address or os.environ.get("RAY_ADDRESS") or "auto", logging_level="ERROR"
            )
    _internal_kv_put(
        GCS_AUTOSCALER_CLUSTER_CONFIG_KEY,
        cluster.SerializeToString(),
        overwrite=True,
        namespace=GCS_AUTOSCALER_STATE_NAMESPACE,
    )
    return workers

"""Connecting to Ray: an in-process local cluster by default, a running cluster with
``--address`` or ``RAY_ADDRESS``.

Ray's token authentication stays on: a local cluster makes and uses its own token; for a
cluster started with ``RAY_AUTH_MODE=token`` the client needs ``RAY_AUTH_MODE=token`` too,
and reads the token as Ray documents it (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or
``~/.ray/auth_token``)."""

from __future__ import annotations

import logging
import os
import socket

from tuner.errors import UserError

__all__ = ["connect", "use_given_token", "check_reachable", "check_gpus"]

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


def _refused_token(exc: BaseException) -> bool:
    seen = 0
    while exc is not None and seen < 10:
        text = f"{type(exc).__name__} {exc}"
        if "InvalidAuthToken" in text or "AuthenticationError" in text:
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def check_gpus(gpus_per_trial: float, address: str | None) -> None:
    """Refuse a search that asks for GPUs on a cluster that has none and cannot add any.

    A cluster whose autoscaler can launch GPU nodes passes: trials wait for them.

    Raises:
        UserError: no GPU now, and none in the autoscaler's node types.
    """
    import ray

    if gpus_per_trial <= 0 or ray.cluster_resources().get("GPU", 0) > 0:
        return
    if _autoscaler_gpus() > 0:
        return
    where = f"the Ray cluster at {address}" if address else "this machine's local Ray"
    raise UserError(
        f"the search asks for {gpus_per_trial:g} GPU per trial but {where} has no GPUs "
        "(and no autoscaling GPU node type); pass --gpus-per-trial 0 to train on CPUs, or "
        "use a cluster with GPU workers (infra/aws/cluster.yaml, infra/kuberay/)"
    )


def _autoscaler_gpus() -> float:
    """GPUs the cluster's autoscaler may add (its node types' maximum); 0 when it has none.

    Read the way Ray Train and Ray Data read it (the autoscaler's cluster config in the GCS).
    """
    try:
        from ray._private.state import state

        return float((state.get_max_resources_from_cluster_config() or {}).get("GPU", 0))
    except Exception:  # no such record (an older Ray): treated as no GPU node type
        return 0.0

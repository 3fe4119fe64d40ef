"""Connecting to Ray: an in-process local cluster by default, a running cluster with
``--address`` or ``RAY_ADDRESS``.

Ray's token authentication stays on: a local cluster makes and uses its own token; for a
cluster started with ``RAY_AUTH_MODE=token`` the client needs ``RAY_AUTH_MODE=token`` too,
and reads the token as Ray documents it (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or
``~/.ray/auth_token``)."""

from __future__ import annotations

import logging
import os

from tuner.errors import UserError

__all__ = ["connect"]


def connect(address: str | None = None) -> str:
    """Start or join Ray once per process; returns the dashboard URL (or "")."""
    import ray

    if ray.is_initialized():
        return ""
    address = address or os.environ.get("RAY_ADDRESS") or None
    try:
        # "local" starts a new in-process cluster even when `ray start` left one (or a stale
        # record of one) on this machine: a cluster is joined only when asked for.
        context = ray.init(address=address or "local", logging_level=logging.WARNING)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
        raise UserError(
            f"cannot connect to the Ray cluster at {address}: {str(exc).splitlines()[0]} "
            "(check the address; for a cluster with token authentication set "
            "RAY_AUTH_MODE=token and its token in RAY_AUTH_TOKEN or ~/.ray/auth_token)"
        ) from None
    url = getattr(context, "dashboard_url", "") or ""
    return f"http://{url}" if url and not url.startswith("http") else url

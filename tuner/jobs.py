"""Submitting mammotune commands to a running cluster through Ray's Jobs API.

The working directory goes with the job as its runtime environment (Ray skips what
``.gitignore`` and ``.rayignore`` list), so space files and a checked-out copy of mammotune
reach the cluster. The job runs ``python -m tuner ...`` on the head node, where that shipped
copy comes first on the path. Ray's token authentication is on: the token comes from
``RAY_AUTH_TOKEN`` (or ``RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``), never from the
command line. Credentials for storage are the cluster's own (instance role, or its nodes'
environment) and are never shipped with a job.
"""

from __future__ import annotations

import os
import re
import shlex
import time
from collections.abc import Callable

from tuner.errors import UserError
from tuner.redaction import has_url_secret

__all__ = ["submit", "follow", "check_env", "check_command"]

# Environment variables a job must not carry: secrets belong to the cluster, not to jobs
# (job specs are readable by anyone with dashboard access).
SECRET = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|PRIVATE|_KEY$", re.I)
FINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def check_command(command: list[str]) -> None:
    """Refuse a job command that carries a password: a job's entrypoint is shown on the Ray
    dashboard and kept by its Jobs API for anyone with access to read.

    Raises:
        UserError: naming the argument's position, not its value.
    """
    for i, arg in enumerate(command):
        if has_url_secret(arg):
            # Named by its flag or position, never by its text: that holds the password.
            if arg.startswith("-") and "=" in arg:
                where = arg.split("=", 1)[0]
            elif i and command[i - 1].startswith("-"):
                where = command[i - 1]
            else:
                where = f"argument {i + 1}"
            raise UserError(
                f"the job's command carries a password in a URL ({where}): jobs' commands "
                "are shown on the Ray dashboard; give the URL without it and the password to "
                "the cluster's nodes (PGPASSWORD or ~/.pgpass)"
            )


def check_env(pairs: list[str]) -> dict[str, str]:
    """``KEY=VALUE`` pairs for the job's environment, refusing secrets.

    Raises:
        UserError: a malformed pair or a secret-looking name.
    """
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--env {pair!r} is not KEY=VALUE")
        if SECRET.search(key) or has_url_secret(value):
            raise UserError(
                f"--env {key}: secrets are not shipped with jobs; give the cluster's nodes their "
                "credentials (instance role, Kubernetes secret, or their environment)"
            )
        env[key] = value
    return env


def _client(address: str):
    from ray.job_submission import JobSubmissionClient

    # Ray's SDK lets RAY_API_SERVER_ADDRESS win over the address it is given; the address
    # the user gave on the command line is the one meant.
    os.environ["RAY_API_SERVER_ADDRESS"] = address
    try:
        return JobSubmissionClient(address)
    except Exception as exc:  # ConnectionError, requests' errors, RuntimeError on 401
        text = str(exc)
        if "401" in text or "403" in text or "uthenticat" in text or "token" in text.lower():
            raise UserError(
                f"the Ray Jobs API at {address} refused this client's token; set RAY_AUTH_TOKEN "
                "to the cluster's token (on the head: `ray get-auth-token`)"
            ) from None
        raise UserError(
            f"cannot reach the Ray Jobs API at {address} ({text.splitlines()[0][:200]}); check "
            "--address (http://HEAD:8265, through an SSH tunnel or port-forward) and that the "
            "cluster is up"
        ) from None


def submit(
    address: str,
    command: list[str],
    *,
    working_dir: str = ".",
    env: dict[str, str] | None = None,
    submission_id: str | None = None,
) -> tuple[object, str]:
    """Submit ``mammotune <command>`` as a Ray job; returns (client, submission id).

    Raises:
        UserError: no command, an unreachable Jobs API, a refused token, a missing
            working directory.
    """
    if not command:
        raise UserError("nothing to submit; give the command after --, e.g. -- search --space ...")
    if command[0] in ("submit", "mammotune"):
        raise UserError("give the mammotune command without `mammotune`, e.g. -- search ...")
    check_command(command)
    if not os.path.isdir(working_dir):
        raise UserError(f"--working-dir {working_dir} is not a folder")
    client = _client(address)
    runtime_env = {"working_dir": os.path.abspath(working_dir)}
    if env:
        runtime_env["env_vars"] = env
    entrypoint = shlex.join(["python", "-m", "tuner", *command])
    try:
        job_id = client.submit_job(
            entrypoint=entrypoint,
            runtime_env=runtime_env,
            submission_id=submission_id,
            metadata={"tool": "mammotune", "command": command[0]},
        )
    except Exception as exc:
        raise UserError(
            f"the cluster at {address} did not accept the job: {str(exc).splitlines()[0][:300]}"
        ) from None
    return client, job_id


def follow(client, job_id: str, emit: Callable[[str], None], *, poll_s: float = 2.0) -> str:
    """Print the job's log as it grows until the job ends; returns its final status."""
    printed = 0
    while True:
        status = str(client.get_job_status(job_id)).rsplit(".", 1)[-1]
        logs = client.get_job_logs(job_id)
        if len(logs) > printed:
            emit(logs[printed:].rstrip("\n"))
            printed = len(logs)
        if status in FINAL:
            return status
        time.sleep(poll_s)

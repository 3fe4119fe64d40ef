"""The local two-node cluster of infra/local/stack.py (a Ray head and a Ray worker node, each
its own `ray start`, plus an S3-protocol server), shared by the tests of this folder, and
a dataset prepared onto it by `mammotune prepare` running on that cluster.

Everything runs as a user would run it: `mammotune` commands in their own processes, with
the stack's address, token and S3 endpoint in their environment."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import pytest

from tests.conftest import REPO, stack_module

# Small enough for CPU trials of a few seconds an epoch, large enough that both classes are
# learnt: small_vgg_bn on 48 px lesion-vs-tissue tiles.
SPACE = """
name: {name}
task: lesion_vs_tissue
metric: val_roc_auc
trials: {trials}
max_concurrent: 2
seed: {seed}
tpe: {{n_startup_trials: 2}}
asha: {{grace_period: {epochs}}}
fixed: {{epochs: {epochs}, batch_size: 16, input_size: 48, backbone: small_vgg_bn}}
space:
  dropout: {{type: float, low: 0.0, high: 0.3}}
  lr: {{type: log-float, low: 3.0e-4, high: 1.0e-3}}
"""


def write_space(folder, name: str, *, trials: int = 3, epochs: int = 3, seed: int = 0):
    path = folder / f"{name}.yaml"
    path.write_text(SPACE.format(name=name, trials=trials, epochs=epochs, seed=seed))
    return path


@pytest.fixture(scope="session")
def secret() -> str:
    """The secret access key the cluster and its clients use: it must leak nowhere."""
    return "mt-secret-" + secrets.token_hex(16)


@pytest.fixture(scope="session")
def stack(tmp_path_factory, secret):
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "mammotune-cluster", "AWS_SECRET_ACCESS_KEY": secret}
    local = stack_module.LocalStack(tmp_path_factory.mktemp("stack"))
    local.up(env=env, scrape_interval="2s")  # with Prometheus, when installed (CI installs it)
    yield local
    local.down()


class Client:
    """Runs `mammotune` commands against the stack, as a user's shell would: the stack's
    environment, and the PostgreSQL study's password as PGPASSWORD (README)."""

    def __init__(self, stack, secret: str, postgres):
        self.stack = stack
        self.postgres = postgres
        self.env = {
            **os.environ,
            **stack.client_env(),
            "AWS_ACCESS_KEY_ID": "mammotune-cluster",
            "AWS_SECRET_ACCESS_KEY": secret,
            "PGPASSWORD": postgres.password,
        }

    def command(self, *args) -> list[str]:
        return [sys.executable, "-m", "tuner", *map(str, args)]

    def run(self, *args, timeout: float = 600, env: dict | None = None):
        """A command to its end; ``env`` adds to the client's environment (None: removes)."""
        merged = {**self.env, **(env or {})}
        return subprocess.run(
            self.command(*args),
            capture_output=True,
            text=True,
            timeout=timeout,
            env={k: v for k, v in merged.items() if v is not None},
            cwd=REPO,
        )

    def start(self, *args, log, env: dict | None = None):
        """A command in the background, its output to ``log``; ``env`` adds to the client's."""
        return subprocess.Popen(
            self.command(*args),
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            env={**self.env, **(env or {})},
            cwd=REPO,
            start_new_session=True,
        )

    def search_args(
        self, folder, name: str, data: str, *extra, address=None, study=True, **space
    ) -> list:
        """`search` with a space written into ``folder`` (see :func:`write_space`), its
        experiment at s3://runs/<name>, its study on the PostgreSQL server (``study=False``:
        the default, copied into the bucket), on the stack (or ``address``)."""
        return [
            "search", "--space", write_space(folder, name, **space), "--data", data,
            "--storage", f"s3://runs/{name}", *(["--study", self.postgres.url] if study else []),
            "--address", address or self.stack.address, *extra,
        ]  # fmt: skip

    def s3(self):
        import s3fs

        return s3fs.S3FileSystem(
            endpoint_url=self.stack.s3_endpoint,
            key=self.env["AWS_ACCESS_KEY_ID"],
            secret=self.env["AWS_SECRET_ACCESS_KEY"],
            skip_instance_cache=True,
            use_listings_cache=False,  # the tests watch experiments as they change
        )


@pytest.fixture(scope="session")
def client(stack, secret, postgres) -> Client:
    return Client(stack, secret, postgres)


@pytest.fixture(scope="session")
def cluster_data(client, synthetic_source) -> str:
    """The synthetic CBIS-DDSM source prepared onto the S3 server by Ray on the cluster."""
    url = "s3://data/cbis"
    result = client.run(
        "prepare",
        synthetic_source,
        url,
        "--views",
        "roi",
        "--sizes",
        "48",
        "--context-px",
        "150",
        "--train-variants",
        "2",
        "--val-fraction",
        "0.25",
        "--address",
        client.stack.address,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return url


def token_env(client, token: str | None = None) -> dict:
    """A submitter's environment changes: the token itself in RAY_AUTH_TOKEN (the stack's
    unless given), no RAY_AUTH_MODE, no token file."""
    token = token or (client.stack.directory / "auth_token").read_text().strip()
    return {"RAY_AUTH_MODE": None, "RAY_AUTH_TOKEN_PATH": None, "RAY_AUTH_TOKEN": token}


SUBMITTED_JOB = "mammotune-submitted-search"


@pytest.fixture(scope="session")
def submitted(client, cluster_data, tmp_path_factory):
    """`mammotune submit -- search ...` through the Jobs API, followed to its end."""
    space = write_space(tmp_path_factory.mktemp("submitted"), "submitted", trials=1, epochs=1)
    (REPO / ".pytest-submit").mkdir(exist_ok=True)  # space files travel in the working dir
    shipped = REPO / ".pytest-submit" / "submitted.yaml"
    shipped.write_text(space.read_text())
    try:
        return client.run(
            "submit", "--address", client.stack.dashboard, "--job-id", SUBMITTED_JOB, "--",
            "search", "--space", ".pytest-submit/submitted.yaml", "--data", cluster_data,
            "--storage", "s3://runs/submitted",  # no --study: it goes into the bucket
            env=token_env(client),
        )  # fmt: skip
    finally:
        shipped.unlink()
        (REPO / ".pytest-submit").rmdir()

"""`mammotune submit` through Ray's Jobs API with the token from RAY_AUTH_TOKEN, and the bad
input a cluster user meets: an unreachable address, a wrong token, a cluster without GPUs,
a bucket without write permission. Each is one clear line and exit code 2, before any trial."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.cluster.conftest import SUBMITTED_JOB, token_env, write_space
from tests.conftest import REPO, free_port, start_moto


def _one_clear_line(result, *needles):
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("mammotune ")]
    assert len(lines) == 1, result.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_submit_runs_a_search_as_a_ray_job(client, submitted):
    result = submitted
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"submitted job {SUBMITTED_JOB}" in result.stdout
    assert "SUCCEEDED" in result.stdout and "best trial" in result.stdout
    status = json.loads(client.run("status", "s3://runs/submitted", "--json").stdout)
    assert status["finished"] == 1
    # The job's cluster may go (a RayJob's does): its study went to the bucket with the rest.
    meta = json.loads(client.s3().cat("runs/submitted/search.json"))
    assert meta["study"]["snapshot"] == "optuna.db"
    assert client.s3().exists("runs/submitted/optuna.db")


def test_submit_refuses_secrets_in_the_job_environment(client):
    result = client.run(
        "submit",
        "--address",
        client.stack.dashboard,
        "--env",
        "AWS_SECRET_ACCESS_KEY=x",
        "--",
        "status",
        "s3://runs/x",
    )
    _one_clear_line(result, "secrets are not shipped with jobs")


def test_submit_with_a_wrong_token(client):
    result = client.run(
        "submit",
        "--address",
        client.stack.dashboard,
        "--",
        "status",
        "s3://runs/x",
        env=token_env(client, "0" * 64),
    )
    _one_clear_line(result, "refused this client's token")


def test_submit_to_an_unreachable_address(client):
    result = client.run(
        "submit", "--address", f"http://127.0.0.1:{free_port()}", "--", "status", "x"
    )
    _one_clear_line(result, "cannot reach the Ray Jobs API")


def test_search_at_an_unreachable_address(client, cluster_data, tmp_path):
    address = f"127.0.0.1:{free_port()}"
    result = client.run(*client.search_args(tmp_path, "unreach", cluster_data, address=address))
    _one_clear_line(result, "cannot reach the Ray cluster")


def test_search_with_a_wrong_token(client, cluster_data, tmp_path):
    result = client.run(
        *client.search_args(tmp_path, "wrong-token", cluster_data),
        env=token_env(client, "0" * 64),
    )
    _one_clear_line(result, "refused this client's token")
    assert not client.s3().exists("runs/wrong-token")


def test_a_gpu_search_on_a_cluster_without_gpus(client, cluster_data, tmp_path):
    result = client.run(
        *client.search_args(tmp_path, "gpus", cluster_data, "--gpus-per-trial", "1")
    )
    _one_clear_line(result, "has no GPUs", "--gpus-per-trial 0")
    assert not client.s3().exists("runs/gpus")  # nothing written before the refusal


@pytest.fixture
def read_only_bucket(tmp_path):
    """An S3 server that checks permissions (moto with IAM on), a bucket, and a user allowed
    to read it but not write: the endpoint and that user's credentials."""
    import boto3

    port = free_port()
    # The first four requests (the setup below) go through unchecked.
    server = start_moto(port, tmp_path / "iam.log", {"INITIAL_NO_AUTH_ACTION_COUNT": "4"})
    endpoint = f"http://127.0.0.1:{port}"
    admin = dict(endpoint_url=endpoint, region_name="us-east-1")
    boto3.client("s3", **admin).create_bucket(Bucket="readonly")
    iam = boto3.client("iam", **admin)
    iam.create_user(UserName="reader")
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["s3:Get*", "s3:List*"], "Resource": "*"}],
    }
    iam.put_user_policy(UserName="reader", PolicyName="read", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="reader")["AccessKey"]
    yield {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
    }
    server.terminate()
    server.wait(timeout=30)


def test_a_bucket_without_write_permission(prepared, read_only_bucket, tmp_path):
    space = write_space(tmp_path, "read-only")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tuner",
            "search",
            "--space",
            str(space),
            "--data",
            str(prepared),
            "--storage",
            "s3://readonly/exp",
            "--study",
            f"sqlite:///{tmp_path}/study.db",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
        env={**os.environ, **read_only_bucket},
    )
    _one_clear_line(result, "cannot write to s3://readonly")
    assert read_only_bucket["AWS_SECRET_ACCESS_KEY"] not in result.stderr + result.stdout

"""tuner/storage.py: paths read from files stay inside their folder, digests that name files
are hex, and a refused request (S3's 403) is one line on every command that touches storage."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO, free_port, start_moto
from tuner import storage
from tuner.errors import UserError

INSIDE = [
    ("a.parquet", "a.parquet"),
    ("roi-48/train/ab.parquet", "roi-48/train/ab.parquet"),
    ("./fold-0/seed-1", "fold-0/seed-1"),
    ("a/../b", "b"),
    ("a\\b", "a/b"),
]
OUTSIDE = [
    "",
    ".",
    "..",
    "../evil",
    "a/../../evil",
    "/etc/passwd",
    "/dev/zero",
    "//host/share",
    "\\\\host\\share",
    "C:\\Windows\\x",
    "c:x",
    "s3://other-bucket/x",
    "file:///etc/passwd",
    "memory://x",
    "a\x00b",
]


@pytest.mark.parametrize("part,expected", INSIDE)
def test_join_under_keeps_relative_parts_inside(tmp_path, part, expected):
    assert storage.join_under(str(tmp_path), part) == f"{tmp_path}/{expected}"
    assert storage.join_under("s3://bucket/data", part) == f"s3://bucket/data/{expected}"


@pytest.mark.parametrize("part", OUTSIDE)
def test_join_under_refuses_what_would_leave_the_folder(tmp_path, part):
    with pytest.raises(UserError, match="not a relative path inside") as error:
        storage.join_under(str(tmp_path), part, what="member")
    assert len(str(error.value).splitlines()) == 1


@pytest.mark.parametrize(
    "value", ["", "ab" * 31, "AB" * 32, "../" + "a" * 61, "g" * 64, None, 12, "a" * 64 + "\n"]
)
def test_only_hex_sha256_digests_name_files(value):
    with pytest.raises(UserError, match="not a SHA-256 hex digest"):
        storage.check_sha256(value)
    assert storage.check_sha256("0f" * 32) == "0f" * 32


@pytest.fixture
def sealed_bucket(tmp_path):
    """An S3 server checking permissions (moto, IAM on): bucket ``sealed`` with one object,
    a user with no permission at all, and one who may only read. Yields their environments."""
    import boto3

    port = free_port()
    # The first requests (the setup below) go through unchecked.
    server = start_moto(port, tmp_path / "iam.log", {"INITIAL_NO_AUTH_ACTION_COUNT": "7"})
    endpoint = f"http://127.0.0.1:{port}"
    admin = dict(endpoint_url=endpoint, region_name="us-east-1")
    s3 = boto3.client("s3", **admin)
    s3.create_bucket(Bucket="sealed")
    s3.put_object(Bucket="sealed", Key="exp/search.json", Body=b"{}")
    iam = boto3.client("iam", **admin)
    users = {}
    for name, actions in (("stranger", []), ("reader", ["s3:Get*", "s3:List*"])):
        iam.create_user(UserName=name)
        if actions:
            allow = {"Effect": "Allow", "Action": actions, "Resource": "*"}
            policy = {"Version": "2012-10-17", "Statement": [allow]}
            iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        users[name] = {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
        }
    yield users
    server.terminate()
    server.wait(timeout=30)


# Each command in one process (imports once), its exit code and what it printed on stderr.
_RUN = """
import contextlib, io, json, sys
from tuner.cli import main
out = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
    except BaseException as exc:  # a traceback would have reached the user
        code = f"raised {type(exc).__name__}: {exc}"
    out.append([argv, code, err.getvalue()])
print(json.dumps(out))
"""


def _commands(env: dict, commands: list[list[str]]) -> list:
    import os

    result = subprocess.run(
        [sys.executable, "-c", _RUN, json.dumps(commands)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env={**os.environ, **env, "RAY_ADDRESS": ""},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_refused_bucket_is_one_line_on_every_command(sealed_bucket, synthetic_source, tmp_path):
    image = tmp_path / "image.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n")
    source = synthetic_source
    stranger = [
        ["status", "s3://sealed/exp"],
        ["best", "s3://sealed/exp"],
        ["best", "s3://sealed/exp", "--download", str(tmp_path / "dl")],
        ["report", "s3://sealed/exp", "--out", str(tmp_path / "r" / "report.html")],
        ["evaluate", "s3://sealed/exp", "--data", "s3://sealed/data"],
        ["export", "s3://sealed/exp", str(tmp_path / "bundle")],
        ["predict", "s3://sealed/bundle", str(image)],
        ["search", "--resume", "s3://sealed/exp"],
        ["promote", "s3://sealed/exp"],
        ["search", "--space", "quick", "--data", "s3://sealed/data", "--storage", "s3://sealed/x"],
        ["prepare", str(source), "s3://sealed/data"],
        ["synth", "s3://sealed/synthetic", "--patients", "10"],
    ]
    reader = [["synth", "s3://sealed/synthetic", "--patients", "10"]]
    runs = _commands(sealed_bucket["stranger"], stranger)
    runs += _commands(sealed_bucket["reader"], reader)
    for argv, code, err in runs:
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1, (argv, code, err[-2000:])
        assert "Traceback" not in err, err
        assert "s3://sealed" in lines[0] or "denied" in lines[0], lines
    for user in sealed_bucket.values():  # no key is ever printed
        assert not any(user["AWS_SECRET_ACCESS_KEY"] in err for _, _, err in runs)
    assert not (tmp_path / "dl").exists() and not (tmp_path / "bundle").exists()

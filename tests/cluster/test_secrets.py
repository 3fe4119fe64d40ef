"""No secret in any file, object, job or log line: a cluster search whose study URL carries
its PostgreSQL password, then promote, report, export and submit, as a user would run them.

Every object on the S3 server (data, experiment, bundle), every file the commands wrote on
this machine, every line they printed, and every job the Jobs API keeps (entrypoint,
runtime environment, metadata, logs) is scanned for the database password, the Ray token
and the AWS keys: none may be found."""

from __future__ import annotations

import json
import urllib.request

from tests.cluster.conftest import token_env
from tests.cluster.test_jobs_and_bad_input import _one_clear_line


def _jobs_api(stack, token: str, path: str):
    request = urllib.request.Request(
        f"{stack.dashboard}{path}", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        return reply.read()


def test_no_secret_is_written_anywhere(client, cluster_data, submitted, secret, tmp_path):
    stack, postgres = client.stack, client.postgres
    token = (stack.directory / "auth_token").read_text().strip()
    url = postgres.url.replace("mammotune@", f"mammotune:{postgres.password}@")
    secrets = {
        "database password": postgres.password,
        "Ray token": token,
        "AWS secret key": secret,
        "AWS access key id": client.env["AWS_ACCESS_KEY_ID"],
    }
    no_pgpass = {"PGPASSWORD": None}  # the password comes only in the URL
    printed = []

    def run(*args, env=None, code=0):
        result = client.run(*args, env=env)
        printed.append(result.stdout + result.stderr)
        assert result.returncode == code, result.stdout[-3000:] + result.stderr[-3000:]
        return result

    search = client.search_args(tmp_path, "secrets", cluster_data, study=False, trials=2, epochs=1)
    run(*search, "--study", url, env=no_pgpass)
    meta = json.loads(client.s3().cat("runs/secrets/search.json"))
    assert meta["study"]["storage"] == postgres.url  # recorded, without its password
    run(
        "promote", "s3://runs/secrets", "--top", "1", "--folds", "2", "--seeds", "1",
        "--set", "epochs=1", "--address", stack.address, env=no_pgpass,
    )  # fmt: skip
    report = tmp_path / "report" / "report.html"
    run("report", "s3://runs/secrets", "--out", report, "--study", url, env=no_pgpass)
    assert "Hyperparameter importance" in report.read_text()
    run("export", "s3://runs/secrets", "s3://runs/secrets-bundle")
    run("export", "s3://runs/secrets", tmp_path / "bundle", "--format", "torchscript")
    refused = client.run(
        "submit", "--address", stack.dashboard, "--", *search[:-2], "--study", url,
        env=token_env(client),
    )  # fmt: skip
    _one_clear_line(refused, "carries a password", "PGPASSWORD")
    printed.append(refused.stdout + refused.stderr)

    # What the Jobs API keeps of every job, as anyone with dashboard access reads it.
    jobs = json.loads(_jobs_api(stack, token, "/api/jobs/"))
    assert any(job.get("submission_id") == "mammotune-submitted-search" for job in jobs)
    kept = [json.dumps(jobs)]
    for job in jobs:
        if job.get("submission_id"):
            kept.append(_jobs_api(stack, token, f"/api/jobs/{job['submission_id']}/logs").decode())

    s3 = client.s3()
    objects = [path for bucket in s3.ls("") for path in s3.find(bucket)]
    assert "runs/secrets-bundle/bundle.json" in objects
    blobs = {f"s3://{path}": s3.cat(path) for path in objects}
    blobs |= {str(p): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    blobs |= {f"printed #{i}": text.encode() for i, text in enumerate(printed)}
    blobs |= {f"jobs API #{i}": text.encode() for i, text in enumerate(kept)}
    hits = [
        f"{what} in {where}"
        for where, data in blobs.items()
        for what, value in secrets.items()
        if value.encode() in data
    ]
    assert len(blobs) > 50 and not hits, hits

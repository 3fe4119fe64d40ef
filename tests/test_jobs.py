"""tuner/jobs.py without a cluster: what a job may carry (its command and environment are
shown on the Ray dashboard to anyone with access)."""

from __future__ import annotations

import pytest

from tuner.errors import UserError
from tuner.jobs import check_command, check_env

CARRY_A_PASSWORD = [
    ["search", "--study", "postgresql://mammotune:hunter2@db:5432/optuna"],
    ["search", "--study=postgresql+psycopg://u:p%40ss@db/optuna"],
    ["search", "--study", "postgresql://u@db/optuna?password=hunter2"],
    ["search", "--study", "postgresql://u@db/optuna?sslmode=require&sslpassword=x"],
    ["report", "s3://b/exp", "--study", "mysql://root:pw@db/optuna"],
    ["report", "postgresql://u:hunter2@db/optuna"],  # positional: named by its position
    ["search", "-s", "postgresql://u@db/optuna?token=hunter2"],
]


@pytest.mark.parametrize("command", CARRY_A_PASSWORD)
def test_a_job_command_with_a_password_is_refused_without_printing_it(command):
    with pytest.raises(UserError, match="PGPASSWORD") as error:
        check_command(command)
    message = str(error.value)
    assert len(message.splitlines()) == 1
    assert not any(secret in message for secret in ("hunter2", "p%40ss", "pw@", "=x"))


def test_a_job_command_without_a_password_passes():
    check_command(["search", "--study", "postgresql://mammotune@db:5432/optuna"])
    check_command(["search", "--data", "s3://bucket/data", "--storage", "s3://bucket/exp"])
    check_command(["status", "gs://bucket/exp", "--json"])


def test_job_environment_values_with_a_password_are_refused():
    assert check_env(["AWS_ENDPOINT_URL=http://s3:9000"]) == {"AWS_ENDPOINT_URL": "http://s3:9000"}
    for pair in ("DATABASE=postgresql://u:pw@db/x", "AWS_SECRET_ACCESS_KEY=x", "MY_TOKEN=y"):
        with pytest.raises(UserError, match="secrets are not shipped"):
            check_env([pair])


def test_a_drivers_command_line_is_masked_before_ray_records_it():
    """Ray keeps a driver's command line as its job's entrypoint, shown on the dashboard."""
    import ray._private.utils as ray_utils

    from tuner.cluster import _masked_entrypoint

    original = ray_utils.get_entrypoint_name
    line = "python -m tuner search --study postgresql://u:hunter2@db/x?sslpassword=hunter3"
    ray_utils.get_entrypoint_name = lambda: line
    try:
        with _masked_entrypoint():
            masked = ray_utils.get_entrypoint_name()
    finally:
        ray_utils.get_entrypoint_name = original
    assert masked == "python -m tuner search --study postgresql://u:***@db/x?sslpassword=***"

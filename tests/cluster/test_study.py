"""The Optuna study of a cluster search on a real PostgreSQL server (Debian's, started by
the `postgres` fixture with a generated password): the bad input a user meets there is one
line, exit code 2, before any trial, and never prints the password."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.cluster.conftest import write_space
from tests.cluster.test_jobs_and_bad_input import _one_clear_line
from tests.conftest import REPO, free_port


def _search(space, data, experiment, study: str, env: dict) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "tuner", "search", "--space", str(space)]
    command += ["--data", str(data), "--storage", str(experiment), "--study", study]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
        env={**os.environ, **env},
    )


def test_a_postgres_study_with_a_wrong_password(postgres, prepared, tmp_path):
    space = write_space(tmp_path, "pg-wrong")
    wrong = "not-" + postgres.password
    result = _search(space, prepared, tmp_path / "exp", postgres.url, {"PGPASSWORD": wrong})
    _one_clear_line(result, "password authentication failed", "mammotune@127.0.0.1")
    # Given in the URL, it is masked
    url = postgres.url.replace("mammotune@", f"mammotune:{wrong}@")
    result = _search(space, prepared, tmp_path / "exp", url, {"PGPASSWORD": ""})
    _one_clear_line(result, "password authentication failed", "mammotune:***@")
    for output in (result.stdout, result.stderr):
        assert wrong not in output and postgres.password not in output
    assert not (tmp_path / "exp").exists()  # nothing was written


def test_an_unreachable_postgres_study(postgres, prepared, tmp_path):
    space = write_space(tmp_path, "pg-unreachable")
    url = postgres.url.replace(f":{postgres.port}/", f":{free_port()}/")
    result = _search(space, prepared, tmp_path / "exp", url, {"PGPASSWORD": postgres.password})
    _one_clear_line(result, "cannot open the Optuna study storage", "--study")
    assert postgres.password not in result.stdout + result.stderr


def test_a_postgres_study_name_already_taken(postgres, prepared, tmp_path):
    """Ray's OptunaSearch would load the other search's study and carry on its trials."""
    import optuna

    os.environ["PGPASSWORD"] = postgres.password
    optuna.create_study(study_name="pg-taken", storage=postgres.url)
    space = write_space(tmp_path, "pg-taken")
    result = _search(space, prepared, tmp_path / "pg-taken", postgres.url, {})
    _one_clear_line(result, "already holds a study named 'pg-taken'")

"""tuner/search/study.py: a study URL's password (user-info or query) never reaches a file,
a pickle or a message. SQLAlchemy 2.1's ``URL.set(password=None)`` keeps the password, which
once left it in search.json and Tune's snapshots."""

from __future__ import annotations

import pickle

import pytest

from tuner.search.study import StudyStorage, redact, secrets_in, without_password

URLS = [
    ("postgresql://mammotune:hunter2@db:5432/optuna", "postgresql://mammotune@db:5432/optuna"),
    ("postgresql+psycopg://u:hunter2@db/optuna", "postgresql+psycopg://u@db/optuna"),
    (
        "postgresql://u@db/optuna?password=hunter2&sslmode=require",
        "postgresql://u@db/optuna?sslmode=require",
    ),
    ("postgresql://u:hunter2@db/optuna?sslpassword=hunter2", "postgresql://u@db/optuna"),
    ("mysql+pymysql://root:hunter2@db/optuna?PWD=hunter2", "mysql+pymysql://root@db/optuna"),
    ("sqlite:////tmp/study.db", "sqlite:////tmp/study.db"),
]


@pytest.mark.parametrize("url,clean", URLS)
def test_passwords_are_stripped_and_masked(url, clean):
    assert without_password(url) == clean
    assert "hunter2" not in redact(url)
    if "hunter2" in url:
        assert secrets_in(url) and "***" in redact(url)
    else:
        assert redact(url) == url and not secrets_in(url)


def test_an_unparsable_url_shows_only_its_scheme():
    assert redact("postgresql://u:hunter2@db:notaport/x") == "postgresql://..."


def test_the_pickled_study_storage_holds_no_password(tmp_path):
    storage = StudyStorage(f"sqlite:///{tmp_path}/study.db", str(tmp_path / "exp"))
    storage.url = "postgresql://mammotune:hunter2@db:5432/optuna?password=hunter2"
    assert storage.__getstate__()["url"] == "postgresql://mammotune@db:5432/optuna"
    pickled = pickle.dumps(storage)  # what Tune writes into every snapshot
    assert b"hunter2" not in pickled and b"mammotune@db:5432" in pickled

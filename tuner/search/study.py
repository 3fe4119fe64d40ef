"""Where a search's Optuna study lives, and how it outlives the machine that ran it.

- ``--study URL``: any SQLAlchemy URL (PostgreSQL on a cluster), opened and checked before
  the search starts; its password is never printed.
- A local experiment: SQLite beside it (``EXP/optuna.db``).
- A bucket experiment without ``--study``: SQLite needs a local disk, so the driver works
  on a copy in its own cache, and every snapshot of Tune's (every 2 s) writes a consistent
  copy of it (SQLite's backup API) into the experiment's state folder, which Tune uploads
  to the bucket with its trial states and the searcher (``EXP/optuna.db``). Losing the whole
  cluster, the head's disk included, loses no finished trial of the study: ``--resume``
  on a new cluster fetches that copy into its own cache and rebinds the searcher to it.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import sqlite3
from contextlib import closing

import optuna

from tuner import storage
from tuner.errors import UserError
from tuner.redaction import SECRET_QUERY_KEYS

__all__ = [
    "SNAPSHOT_FILE",
    "StudyStorage",
    "bind",
    "check_new_study",
    "default_study",
    "prepare_resume",
    "has_password",
    "redact",
    "secrets_in",
    "snapshot_study",
    "upload_snapshot",
    "without_password",
    "working_copy",
]

SNAPSHOT_FILE = "optuna.db"


# Query parameters that carry a secret: stripped with the user-info password.
_SECRET_QUERY = SECRET_QUERY_KEYS


def _parts(url: str):
    """(SQLAlchemy URL, the secrets in it) or (None, []) when it is no URL it parses."""
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
    except Exception:
        return None, []
    secrets = [parsed.password] if parsed.password else []
    for key, value in parsed.query.items():
        if key.lower() in _SECRET_QUERY:
            secrets += [value] if isinstance(value, str) else list(value)
    return parsed, [str(s) for s in secrets if s]


def _rebuild(url: str, mask: str | None) -> str:
    parsed, _ = _parts(url)
    if parsed is None:  # not a URL SQLAlchemy can parse: print none of it but the scheme
        return url.split("://", 1)[0] + "://..." if "://" in url else "(unparsable URL)"
    from sqlalchemy.engine import URL

    query = {
        k: (mask if k.lower() in _SECRET_QUERY else v)
        for k, v in parsed.query.items()
        if mask is not None or k.lower() not in _SECRET_QUERY
    }
    # URL.create, not parsed.set(password=None): SQLAlchemy 2.1's set() ignores a None,
    # which once left the password in search.json and Tune's snapshots.
    clean = URL.create(
        parsed.drivername,
        username=parsed.username,
        password=mask if parsed.password and mask is not None else None,
        host=parsed.host,
        port=parsed.port,
        database=parsed.database,
        query=query,
    )
    return clean.render_as_string(hide_password=False).replace("%2A%2A%2A", "***")


def redact(url: str) -> str:
    """The URL with its passwords (user-info and query) shown as ``***``, for messages."""
    return _rebuild(url, "***")


def without_password(url: str) -> str:
    """The URL with no password in it, neither in the user-info nor in the query: what
    ``search.json`` and Tune's snapshots record (libpq takes the password from PGPASSWORD
    or ~/.pgpass)."""
    return _rebuild(url, None)


def secrets_in(url: str) -> list[str]:
    """The passwords a URL carries (user-info and query), to keep them out of messages."""
    return _parts(url)[1]


def has_password(url: str) -> bool:
    """Whether a database URL carries a password (user-info or query)."""
    return bool(secrets_in(url))


def working_copy(experiment: str) -> str:
    """The path, on this machine, of the driver's SQLite copy of a bucket experiment's study."""
    digest = hashlib.sha256(experiment.encode()).hexdigest()[:12]
    folder = os.path.join(os.path.expanduser("~"), ".cache", "mammotune", "studies")
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, f"{posixpath.basename(experiment)}-{digest}.db")


def default_study(experiment: str) -> tuple[str, bool]:
    """(storage URL, snapshot into the experiment?) when no ``--study`` is given."""
    if storage.is_local(experiment):
        return f"sqlite:///{storage.join(experiment, SNAPSHOT_FILE)}", False
    return f"sqlite:///{working_copy(experiment)}", True


def _open(url: str) -> optuna.storages.RDBStorage:
    """The storage, or a one-line UserError that names it (password masked) and why not."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.storages.RDBStorage(url)
    except Exception as exc:  # sqlalchemy's OperationalError, a missing driver, a bad URL
        reason = getattr(exc, "orig", None) or exc
        first = str(reason).strip().splitlines()[0] if str(reason).strip() else type(exc).__name__
        for secret in secrets_in(url):
            first = first.replace(secret, "***")
        raise UserError(
            f"cannot open the Optuna study storage {redact(url)}: {first[:200]}; check "
            "the server and user of --study, and the password (PGPASSWORD or ~/.pgpass)"
        ) from None


def check_new_study(url: str, name: str, *, stale_copy: bool) -> None:
    """Before a search starts: the storage opens, and holds no study of this name (Ray's
    OptunaSearch would silently carry on that study's trials).

    Args:
        stale_copy: ``url`` is this driver's working copy for a bucket experiment whose
            location was just checked to be empty: a copy left there by an earlier
            experiment of the same URL is a stale cache, and is removed.
    """
    if stale_copy:
        path = url.removeprefix("sqlite:///")
        if os.path.exists(path):
            os.remove(path)
    rdb = _open(url)
    try:
        rdb.get_study_id_from_name(name)
    except KeyError:
        return
    finally:
        rdb.remove_session()
        rdb.engine.dispose()
    raise UserError(
        f"the Optuna storage {redact(url)} already holds a study named {name!r}; give the "
        "experiment another name (--storage) or use another database (--study)"
    )


# experiment URL -> the storage URL a resume in this process uses (see StudyStorage)
_BOUND: dict[str, str] = {}


def bind(experiment: str, url: str) -> None:
    """Make searchers of ``experiment`` unpickled in this process open ``url``."""
    _BOUND[experiment] = url


class StudyStorage(optuna.storages.RDBStorage):
    """The searcher's study storage, as Tune pickles it into every snapshot.

    Pickled, it keeps no password (Tune's snapshots go to the bucket). Unpickled (a resume
    restores the searcher), it opens the storage the resume was given (:func:`bind`): for
    a bucket experiment's default study, this machine's working copy, which a new cluster
    (another HOME, another disk) has at another path.
    """

    def __init__(self, url: str, experiment: str, *, snapshot: bool = False):
        self.experiment = experiment
        self.snapshot = snapshot
        super().__init__(url)

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["url"] = without_password(state["url"])
        return state

    def __setstate__(self, state: dict) -> None:
        url = _BOUND.get(state.get("experiment", ""), state["url"])
        super().__setstate__({**state, "url": url})


def snapshot_study(rdb: optuna.storages.RDBStorage, folder: str) -> None:
    """Write a consistent copy of a SQLite study into ``folder`` (Tune's state folder),
    atomically: SQLite's online backup, then a rename."""
    source = rdb.url.removeprefix("sqlite:///")
    target = os.path.join(folder, SNAPSHOT_FILE)
    partial = target + ".partial"
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(partial)) as dst:
        src.backup(dst)
    os.replace(partial, target)


def upload_snapshot(url: str, experiment: str) -> None:
    """Put a copy of the working copy at ``url`` into the experiment (after the search's
    own last snapshot: the study closed its orphans)."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        snapshot_study(optuna.storages.RDBStorage(url), folder)
        fs, path = storage.filesystem(storage.join(experiment, SNAPSHOT_FILE))
        fs.put(os.path.join(folder, SNAPSHOT_FILE), path)


def prepare_resume(meta: dict, experiment: str, study_url: str | None = None) -> str:
    """The storage URL a resumed search uses, after checking that its study is there.

    A bucket experiment's snapshot (``EXP/optuna.db``) is fetched into this machine's working
    copy: it is the study as of Tune's last snapshot, which is what the resume continues.

    Args:
        study_url: the storage to use instead of the one ``search.json`` records (which
            holds no password): the search's ``--study`` again.

    Raises:
        UserError: no study where the experiment says (one line naming where).
    """
    study = meta.get("study") or {}
    name = study.get("name") or posixpath.basename(experiment)
    if study_url:
        url = study_url
    elif study.get("snapshot"):
        remote = storage.join(experiment, SNAPSHOT_FILE)  # the one name snapshots are given
        if not storage.exists(remote):
            raise UserError(
                f"the Optuna study of {experiment} was not found: {remote} is missing "
                "(the search's first snapshot never reached the bucket); start a new search"
            )
        local = working_copy(experiment)
        fs, path = storage.filesystem(remote)
        fs.get(path, local + ".partial")
        os.replace(local + ".partial", local)
        url = f"sqlite:///{local}"
    else:
        url = study.get("storage") or ""
        if url.startswith("sqlite:///") and not os.path.exists(url.removeprefix("sqlite:///")):
            raise UserError(
                f"the Optuna study of {experiment} was not found: {url.removeprefix('sqlite:///')}"
                " is not on this machine; resume where that file is, or copy it there"
            )
    rdb = _open(url)
    try:
        rdb.get_study_id_from_name(name)
    except KeyError:
        raise UserError(
            f"the Optuna study {name!r} of {experiment} was not found in {redact(url)}; "
            "resume with the database the search used"
        ) from None
    finally:
        rdb.remove_session()
        rdb.engine.dispose()
    return url

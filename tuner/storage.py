"""URLs to filesystems: local paths, ``file://``, ``s3://``, ``gs://``, ``memory://``.

Every stage reads and writes through these helpers, so a dataset or an experiment can live
on a laptop disk or in a bucket without the stage knowing which.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import uuid
from contextlib import contextmanager
from typing import Any

import fsspec
from fsspec.core import url_to_fs

__all__ = [
    "normalize",
    "filesystem",
    "join",
    "join_under",
    "check_sha256",
    "denied",
    "is_local",
    "is_process_local",
    "check_location",
    "Folder",
    "exists",
    "read_bytes",
    "write_bytes",
    "read_json",
    "write_json",
    "pyarrow_filesystem",
]


def normalize(url: str) -> str:
    """A canonical form of ``url``: local paths become absolute, ``file://`` is dropped."""
    url = str(url)
    if url.startswith("file://"):
        url = url[len("file://") :]
    if "://" not in url:
        return os.path.abspath(os.path.expanduser(url))
    return url.rstrip("/")


def is_local(url: str) -> bool:
    """Whether ``url`` names the local filesystem."""
    return "://" not in normalize(url)


def is_process_local(url: str) -> bool:
    """Whether ``url`` lives in this process only (``memory://``): Ray workers cannot see it."""
    return normalize(url).startswith("memory://")


def filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem behind ``url`` and the path inside it.

    S3-compatible stores other than AWS are reached through ``AWS_ENDPOINT_URL`` (read by
    botocore, so Ray workers that inherit the environment use the same endpoint);
    credentials come from the environment or an instance role, never from a URL.
    """
    url = normalize(url)
    if url.startswith(("s3://", "s3a://")):
        # Experiments change while they are read (trials, snapshots, pruned checkpoints), and
        # fsspec shares one instance per process: s3fs would serve stale listings forever.
        return url_to_fs(url, config_kwargs=S3_CONFIG, use_listings_cache=False)
    return url_to_fs(url)


# botocore's standard retry mode (exponential backoff with jitter, on throttling, 5xx and
# connection errors), with room for an endpoint that is unreachable for a minute or so; a
# request to a server that has stopped answering waits up to read_timeout, then retries.
S3_CONFIG = {
    "retries": {"mode": "standard", "max_attempts": 10},
    "connect_timeout": 20,
    "read_timeout": 60,
}


_CREDENTIALS = (
    "check the credentials in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
    "AWS_PROFILE) or the instance role"
)


def check_location(url: str, *, must_exist: bool = False) -> None:
    """Fail early, with one clear line, when ``url`` cannot be used: its bucket does not
    exist, access is denied, or (``must_exist``) nothing is there.

    Raises:
        UserError: naming the URL and the fix.
    """
    from tuner.errors import UserError

    fs, path = filesystem(url)
    try:
        if not is_local(url) and not is_process_local(url):
            bucket = path.split("/", 1)[0]
            try:
                fs.ls(bucket)  # unlike exists(), tells a missing bucket from a denied one
            except FileNotFoundError:
                raise UserError(
                    f"bucket {bucket!r} of {normalize(url)} does not exist; create it first "
                    "or check the URL"
                ) from None
        if must_exist and not fs.exists(path):
            raise UserError(f"{normalize(url)} does not exist")
    except UserError:
        raise
    except PermissionError as exc:
        raise UserError(
            f"access denied to {normalize(url)} ({str(exc).splitlines()[0]}); {_CREDENTIALS}"
        ) from None
    except Exception as exc:  # botocore's NoCredentialsError, EndpointConnectionError, ...
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        hint = (
            _CREDENTIALS
            if "credential" in reason.lower()
            else "check the URL and the endpoint (AWS_ENDPOINT_URL or --endpoint-url)"
        )
        raise UserError(f"cannot use {normalize(url)} ({reason}); {hint}") from None


def check_writable(url: str) -> None:
    """:func:`check_location`, then write and delete a small probe under ``url``.

    Raises:
        UserError: the location cannot be written (read-only folder, no write permission).
    """
    from tuner.errors import UserError

    check_location(url)
    probe = join(url, f".mammotune-probe-{uuid.uuid4().hex}")
    fs, path = filesystem(probe)
    try:
        with denied(url, "write to"):
            if is_local(url):
                os.makedirs(posixpath.dirname(path), exist_ok=True)
            fs.pipe_file(path, b"")
            fs.rm(path)
    except OSError as exc:
        raise UserError(f"cannot write to {normalize(url)} ({exc})") from None


def join(url: str, *parts: str) -> str:
    """Join path parts onto a URL with ``/`` (also for local paths).

    For parts the program chose. A part read from a file (a bundle's file list, a final
    model's members, a manifest's shard paths, a CSV's image paths) goes through
    :func:`join_under`, which keeps it inside ``url``.
    """
    return posixpath.join(normalize(url), *parts)


def join_under(base: str, part: str, *, what: str = "path") -> str:
    """``part``, a relative path read from a file's content, joined under ``base``.

    The part is normalised first (``a/./b`` is ``a/b``; backslashes are separators) and
    refused when it is empty, absolute (``/etc/passwd``, ``C:\\x``, ``\\\\host\\x``), has a
    scheme (``s3://``, ``file:``) or climbs out (``..``): whoever wrote the file must not
    choose what outside ``base`` is read or written.

    Raises:
        UserError: naming ``what`` and the part.
    """
    from tuner.errors import UserError

    text = str(part)
    cleaned = posixpath.normpath(text.replace("\\", "/")) if text else ""
    if (
        not text
        or "\x00" in text
        or cleaned in ("", ".")
        or cleaned.startswith(("/", "../"))
        or cleaned == ".."
        or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", text)  # a scheme or a drive letter
    ):
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise UserError(
            f"{what} {shown!r} in a file under {normalize(base)} is not a relative path inside "
            "it; the file was edited or damaged: make it again (nothing was read or written)"
        )
    return join(base, cleaned)


_HEX64 = re.compile(r"[0-9a-f]{64}")


def check_sha256(value: object, *, what: str = "SHA-256") -> str:
    """``value`` if it is a SHA-256 hex digest (64 lowercase hex digits), for digests read
    from a file that then name a file (a cache entry).

    Raises:
        UserError: anything else.
    """
    from tuner.errors import UserError

    if isinstance(value, str) and _HEX64.fullmatch(value):
        return value
    shown = repr(value)[:80]
    fix = (
        "give the 64 hex digits export printed"
        if what.startswith("--")
        else "the file was edited or damaged"
    )
    raise UserError(f"{what} {shown} is not a SHA-256 hex digest; {fix}")


class Folder:
    """A folder (or bucket prefix) listed once: its filesystem, path, files and their URLs."""

    def __init__(self, root: str, files: list[str] | None = None):
        self.root = normalize(root)
        self.fs, self.path = filesystem(self.root)
        if files is None:
            check_location(self.root, must_exist=True)
            with denied(self.root, "list"):
                files = self.fs.find(self.path)
        self.files = sorted(files)

    def url(self, path: str) -> str:
        """The URL of a listed file (a plain path on the local disk)."""
        return path if is_local(self.root) else self.fs.unstrip_protocol(path)

    def read(self, path: str) -> bytes:
        with denied(self.url(path)), self.fs.open(path, "rb") as f:
            return f.read()


@contextmanager
def denied(url: str, doing: str = "read"):  # or "write to", "list"
    """Turn a refused request for ``url`` (an object store's 403, a folder's mode) into one
    line that names it and the fix, instead of a traceback.

    S3 answers 403, not 404, to a HEAD on a missing key for a user without ``s3:ListBucket``,
    so even asking whether something exists can be refused.
    """
    from tuner.errors import UserError

    try:
        yield
    except PermissionError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else "permission denied"
        fix = "choose a location you can write to" if doing == "write to" else _CREDENTIALS
        raise UserError(f"cannot {doing} {normalize(url)} ({reason}); {fix}") from None


def exists(url: str) -> bool:
    fs, path = filesystem(url)
    with denied(url):
        return fs.exists(path)


def read_bytes(url: str) -> bytes:
    fs, path = filesystem(url)
    with denied(url):
        return fs.cat_file(path)


def write_bytes(url: str, data: bytes) -> None:
    """Write ``data`` so that readers never see a partial file.

    Object stores make a single PUT visible atomically; on a local disk the bytes go to a
    temporary name in the same folder and are renamed into place.
    """
    fs, path = filesystem(url)
    parent = posixpath.dirname(path)
    with denied(url, "write to"):
        if is_local(url):
            os.makedirs(parent, exist_ok=True)
            tmp = f"{path}.tmp-{uuid.uuid4().hex}"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        else:
            fs.pipe_file(path, data)


def read_json(url: str) -> Any:
    return json.loads(read_bytes(url))


def write_json(url: str, obj: Any) -> None:
    write_bytes(url, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def pyarrow_filesystem(url: str):
    """A (pyarrow filesystem, path) pair for libraries that speak pyarrow (Ray Tune).

    Local paths use pyarrow's own local filesystem; anything else is wrapped from fsspec so
    that the same credentials and endpoint settings apply everywhere.
    """
    import pyarrow.fs as pafs

    if is_local(url):
        return pafs.LocalFileSystem(), normalize(url)
    fs, path = filesystem(url)
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path

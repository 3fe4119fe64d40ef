"""A node-local disk cache for immutable shards.

Shards are named by the SHA-256 of their bytes and never change, so a copy on the node's
disk is as good as the original: concurrent trials on one node fetch each shard from object
storage once (a file lock per shard), later epochs and later trials read the local copy.
Downloads go to a temporary name, are checked against the manifest's hash and renamed into
place; a copy that turns out corrupt is deleted and fetched again with a warning
(MONAI's PersistentDataset habit).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path

from filelock import FileLock

from tuner import storage

__all__ = ["default_cache_dir", "ShardCache"]


def default_cache_dir() -> Path:
    """``MAMMOTUNE_CACHE_DIR``, or the user's cache folder (~/.cache/mammotune/shards)."""
    configured = os.environ.get("MAMMOTUNE_CACHE_DIR")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mammotune" / "shards"


class ShardCache:
    """Local copies of remote shards, keyed by their SHA-256."""

    def __init__(self, directory: str | os.PathLike | None = None):
        self.directory = Path(directory) if directory else default_cache_dir()
        self.directory.mkdir(parents=True, exist_ok=True)

    def path(self, url: str, sha256: str) -> str:
        """A local file holding the shard at ``url`` (downloaded once per node)."""
        if storage.is_local(url) or storage.is_process_local(url):
            return url  # already local (or only visible in this process): read in place
        target = self.directory / f"{storage.check_sha256(sha256)}.parquet"
        if target.exists():
            return str(target)
        with FileLock(str(target) + ".lock"):
            if not target.exists():  # another trial may have fetched it while we waited
                self._fetch(url, sha256, target)
        return str(target)

    def _fetch(self, url: str, sha256: str, target: Path) -> None:
        data = storage.read_bytes(url)
        if hashlib.sha256(data).hexdigest() != sha256:
            raise OSError(f"{url}: content does not match the manifest's SHA-256")
        with tempfile.NamedTemporaryFile(dir=self.directory, delete=False, suffix=".part") as f:
            f.write(data)
        os.replace(f.name, target)

    def evict(self, url: str, sha256: str, reason: str) -> None:
        """Drop a bad local copy (it is fetched again on the next read)."""
        target = self.directory / f"{storage.check_sha256(sha256)}.parquet"
        if target.exists():
            warnings.warn(
                f"cached shard {target} is corrupt ({reason}); fetching it again", stacklevel=2
            )
            target.unlink(missing_ok=True)

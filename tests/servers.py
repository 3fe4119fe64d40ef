"""PostgreSQL for the tests, for real, from Debian's package, on loopback: the Optuna study
of a cluster search. Started and stopped by its fixture, by process id; `.ci/run` installs
the package. (Prometheus is started by infra/local/stack.py, with the stack.)"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path


def server_binary(name: str, package: str) -> str:
    """A server's binary from PATH, or Debian's versioned folder (PostgreSQL keeps its
    server binaries off PATH, in /usr/lib/postgresql/<version>/bin)."""
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if not found:
        raise RuntimeError(f"{name} not found: install Debian's {package} (.ci/run does)")
    return found


class PostgresServer:
    """A throwaway PostgreSQL cluster: own data folder and port, a generated password
    (scram-sha-256 over TCP), a database ``optuna`` owned by user ``mammotune``."""

    user = "mammotune"
    database = "optuna"

    def __init__(self, port: int):
        self.port = port
        self.password = secrets.token_urlsafe(18)
        self.folder = Path(tempfile.mkdtemp(prefix="mt-pg-", dir="/tmp"))
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """The study URL, without the password (given as PGPASSWORD), as the README says."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def _as_owner(self) -> list[str]:
        # PostgreSQL refuses to run as root (CI runs as root): run it as Debian's postgres user.
        return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def start(self, timeout: float = 60) -> PostgresServer:
        import psycopg

        pwfile = self.folder / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres")
            shutil.chown(pwfile, "postgres")
        data = self.folder / "data"
        subprocess.run(
            [*self._as_owner(), server_binary("initdb", "postgresql"), "-D", str(data)]
            + ["-U", self.user, f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8"],
            check=True,
            capture_output=True,
        )
        pwfile.unlink()
        log = (self.folder / "server.log").open("w")
        self.process = subprocess.Popen(
            [*self._as_owner(), server_binary("postgres", "postgresql"), "-D", str(data)]
            + ["-h", "127.0.0.1", "-p", str(self.port), "-k", str(self.folder)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                connection = psycopg.connect(
                    host="127.0.0.1",
                    port=self.port,
                    user=self.user,
                    password=self.password,
                    dbname="postgres",
                    connect_timeout=2,
                    autocommit=True,
                )
                break
            except psycopg.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"PostgreSQL did not start: {self.log()[-2000:]}") from None
                time.sleep(0.3)
        with connection:
            connection.execute(f"CREATE DATABASE {self.database}")
        return self

    def log(self) -> str:
        try:
            return (self.folder / "server.log").read_text()
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM to the postmaster this fixture started (its pid file names it), then wait."""
        pidfile = self.folder / "data" / "postmaster.pid"
        if self.process is not None and self.process.poll() is None:
            try:
                os.kill(int(pidfile.read_text().split()[0]), signal.SIGTERM)
            except (OSError, ValueError, IndexError):
                self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.folder, ignore_errors=True)

"""A real PostgreSQL for the tests: one cluster per test session, one database per test.

``initdb`` and ``pg_ctl`` from Debian's ``postgresql`` package (any version under
/usr/lib/postgresql) in a temporary directory, listening on a free loopback
port, ``fsync=off``; run as the ``postgres`` user when the tests run as root
(initdb refuses root). shared/recipes.md has the recipe.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["PostgresCluster", "postgres_bin"]

USER = "hb"


def postgres_bin() -> Path | None:
    """The newest PostgreSQL server binaries on this machine, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name) if
                   Path(p).parent.parent.name.isdigit() else 0)
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PostgresCluster:
    """One PostgreSQL server in a temporary directory."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.directory = Path(tempfile.mkdtemp(prefix="hb-pg-"))
        self.data = self.directory / "data"
        self.port = 0
        self._numbers = itertools.count(1)
        self._as_root = os.geteuid() == 0

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = list(argv)
        if self._as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, check=check, capture_output=True, text=True, timeout=120)

    def start(self) -> PostgresCluster:
        if self._as_root:
            shutil.chown(self.directory, "postgres")
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", USER,
                  "-N", "-E", "UTF8", "--locale=C")
        for _ in range(5):
            self.port = _free_port()
            if self._pg_ctl("start").returncode == 0:
                return self
        raise RuntimeError(f"PostgreSQL did not start: {self.log()}")

    def _pg_ctl(self, action: str, *extra: str) -> subprocess.CompletedProcess[str]:
        options = (f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1"
                   " -c fsync=off -c full_page_writes=off")
        return self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l",
                         str(self.directory / "log"), "-w", "-t", "60", "-o", options, action,
                         *extra, check=False)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``immediate``: as if it crashed); its files stay."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop",
                  check=False)

    def restart(self) -> None:
        """Start it again on the same port after :meth:`stop`."""
        done = self._pg_ctl("start")
        if done.returncode != 0:
            raise RuntimeError(f"PostgreSQL did not start again: {done.stderr} {self.log()}")

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.directory, ignore_errors=True)

    def log(self) -> str:
        try:
            return (self.directory / "log").read_text()[-4000:]
        except OSError:
            return ""

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def new_database(self) -> str:
        """A new empty database; its URL."""
        name = f"t_{os.getpid()}_{next(self._numbers)}"
        self.admin(f"CREATE DATABASE {name} STRATEGY FILE_COPY")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        deadline = time.monotonic() + 10
        while True:
            try:
                self.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

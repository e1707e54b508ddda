"""A throwaway PostgreSQL server for tests: initdb and pg_ctl into a temporary directory.

Rules:
- The server is Debian's (``postgresql``, installed by ``make test``); its binaries are
  found on PATH or in ``/usr/lib/postgresql/VERSION/bin``. ``find_binaries`` is None only
  when they are truly absent; callers skip then, saying so.
- PostgreSQL refuses to run as root: as root the server runs as the ``postgres`` OS user
  (``runuser``), in a directory it owns. It listens on a Unix socket in that directory
  only (no TCP port to collide with), trusts local connections, and trades durability for
  speed (``fsync=off``): it lives for one test session.
- Each test gets its own database (``new_database``); ``stop`` ends the server (immediate
  shutdown) and removes the directory.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg

SERVER_USER = "postgres"
START_TIMEOUT_S = 30
SERVER_OPTIONS = ("-c listen_addresses='' -c fsync=off -c synchronous_commit=off "
                  "-c full_page_writes=off -c max_connections=200")


def find_binaries() -> Path | None:
    """The directory of ``initdb`` and ``pg_ctl``, newest version first; None if absent."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
                      key=lambda path: int(path.parent.parent.name)
                      if path.parent.parent.name.isdigit() else 0)
    return versions[-1].parent if versions else None


class PostgresServer:
    def __init__(self, binaries: Path) -> None:
        self.binaries = binaries
        self.directory = Path(tempfile.mkdtemp(prefix="seawall-pg-"))
        self.data_dir = self.directory / "data"
        self.socket_dir = self.directory  # short: a socket path has at most 107 bytes
        self._as_server_user: list[str] = []
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam(SERVER_USER)
            except KeyError:
                raise RuntimeError(f"PostgreSQL's binaries are in {binaries} but there is no "
                                   f"{SERVER_USER!r} user to run them as (reinstall the Debian "
                                   "package postgresql)") from None
            os.chown(self.directory, account.pw_uid, account.pw_gid)
            self._as_server_user = ["runuser", "-u", SERVER_USER, "--"]
        self.started = False

    def start(self) -> PostgresServer:
        self._run("initdb", "-D", str(self.data_dir), "-U", SERVER_USER, "-A", "trust",
                  "-E", "UTF8", "--no-sync", "--no-instructions")
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.directory / "server.log"),
                  "-o", f"{SERVER_OPTIONS} -k {self.socket_dir}", "-w",
                  "-t", str(START_TIMEOUT_S), "start")
        self.started = True
        return self

    def stop(self) -> None:
        if self.started:
            with contextlib.suppress(subprocess.CalledProcessError):
                self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
            self.started = False
        shutil.rmtree(self.directory, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL of ``database`` on this server (psycopg 3, over the socket)."""
        return f"postgresql+psycopg://{SERVER_USER}@/{database}?host={self.socket_dir}"

    def new_database(self) -> str:
        """A new, empty database; its SQLAlchemy URL."""
        name = f"test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(host=str(self.socket_dir), user=SERVER_USER, dbname="postgres",
                             autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def log_tail(self, lines: int = 20) -> str:
        path = self.directory / "server.log"
        return "\n".join(path.read_text().splitlines()[-lines:]) if path.exists() else ""

    def _run(self, program: str, *args: str) -> None:
        command = [*self._as_server_user, str(self.binaries / program), *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60,
                                cwd=self.directory)
        if result.returncode != 0:
            raise subprocess.CalledProcessError(
                result.returncode, command,
                output=result.stdout, stderr=f"{result.stderr}\n{self.log_tail()}")

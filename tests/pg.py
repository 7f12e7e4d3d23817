"""A throwaway PostgreSQL server for the tests: started once per test session, on a Unix socket
in a temporary folder, and stopped (``pg_ctl stop -m fast``) and removed at the end.

- The server programs are found on ``PATH`` (``initdb``, ``pg_ctl``), then in Debian's
  ``/usr/lib/postgresql/<version>/bin`` (highest version first). CI installs Debian's
  ``postgresql`` package when they are missing (``.ci/run``).
- ``initdb`` and ``pg_ctl`` refuse to run as root: as root they run as the ``postgres`` user
  (``runuser -u postgres --``), in a folder given to that user; the tests, still root, reach the
  socket anyway.
- The server listens on no TCP address at all (``listen_addresses=''``), only on its socket,
  with ``trust`` authentication for the superuser ``postgres``. It runs with ``fsync=off``:
  the tests kill nodes, never this server, so its own crash safety buys nothing here.
- Each test gets a store of its own in a few milliseconds: a fresh schema in the shared
  database :data:`DATABASE`, named in the store's URL by ``options=-csearch_path=…`` (the
  startup option libpq and asyncpg both pass to the server), dropped after the test.
  :meth:`PostgresServer.create_database` makes a whole database where a test needs one
  (a few hundred milliseconds).

When the server cannot be started, :class:`PostgresUnavailable` says why and what to install;
the fixture turns that into a failure of every test that needs it (never a skip).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import asyncpg

from tests.util import timeout

__all__ = ["PostgresServer", "PostgresUnavailable", "find_server_programs"]

#: The server's superuser (initdb ``-U``), whoever runs the tests.
SUPERUSER = "postgres"
#: The database the tests' stores live in, one schema each.
DATABASE = "kintsugi"
#: Units ``initdb``, ``pg_ctl start`` and ``pg_ctl stop`` may each take.
SERVER_UNITS = 60
#: Where Debian's ``postgresql`` package puts the server programs, one folder per version.
DEBIAN_PREFIX = Path("/usr/lib/postgresql")
#: Server settings for a test server: fast, small, and reachable only through its socket.
SERVER_SETTINGS = {
    "listen_addresses": "''",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "32MB",
    "max_wal_size": "256MB",
}


class PostgresUnavailable(RuntimeError):
    """The test server could not be started (the message says why and what to do)."""


def find_server_programs() -> Path:
    """The folder holding ``initdb`` and ``pg_ctl``; raises :class:`PostgresUnavailable`."""
    initdb = shutil.which("initdb")
    if initdb is not None and shutil.which("pg_ctl") is not None:
        return Path(initdb).resolve().parent
    versions = sorted(
        (p for p in DEBIAN_PREFIX.glob("*/bin") if (p / "initdb").exists() and (p / "pg_ctl").exists()),
        key=lambda p: [int(x) if x.isdigit() else 0 for x in p.parent.name.split(".")],
        reverse=True,
    )
    if versions:
        return versions[0]
    raise PostgresUnavailable(
        "PostgreSQL's initdb and pg_ctl were not found (on PATH or in /usr/lib/postgresql/<version>/bin): "
        "install them (Debian: apt-get install -y postgresql) to run the PostgreSQL store tests"
    )


class PostgresServer:
    """One throwaway server: :meth:`start`, :meth:`create_database`, :meth:`stop`."""

    def __init__(self) -> None:
        self.bin = find_server_programs()
        self.root = Path(tempfile.mkdtemp(prefix="kintsugi-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "run"
        self.log = self.root / "server.log"
        self._names = itertools.count(1)
        self._as_postgres: list[str] = []
        self.started = False

    # -- running the server programs ------------------------------------------------------

    def _prepare_user(self) -> None:
        """As root, hand the folder to the ``postgres`` user and run the programs as it."""
        if os.geteuid() != 0:
            return
        try:
            import pwd

            user = pwd.getpwnam(SUPERUSER)
        except KeyError:
            raise PostgresUnavailable(
                "running as root, but there is no 'postgres' user to run initdb and pg_ctl as "
                "(Debian's postgresql package creates it)"
            ) from None
        runuser = shutil.which("runuser")
        if runuser is None:
            raise PostgresUnavailable("running as root, and runuser (util-linux) is missing to run pg_ctl as postgres")
        os.chown(self.root, user.pw_uid, user.pw_gid)
        self._as_postgres = [runuser, "-u", SUPERUSER, "--"]

    def _run(self, program: str, args: Sequence[str]) -> None:
        command = [*self._as_postgres, str(self.bin / program), *args]
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=timeout(SERVER_UNITS),
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PostgresUnavailable(f"{program} failed: {exc}") from exc
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise PostgresUnavailable(
                f"{' '.join(command)} exited {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}\n{log}"
            )

    def start(self) -> None:
        """initdb, then start the server on its socket; raises :class:`PostgresUnavailable`."""
        try:
            self._prepare_user()
            self._mkdir_as_server(self.socket_dir)
            self._run(
                "initdb",
                ["-D", str(self.data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--no-sync", "--no-instructions"],
            )
            options = " ".join(f"-c {name}={value}" for name, value in SERVER_SETTINGS.items())
            options += f" -c unix_socket_directories={self.socket_dir}"
            self._run("pg_ctl", ["-D", str(self.data), "-l", str(self.log), "-w", "-o", options, "start"])
            self.started = True
            self._admin(f"CREATE DATABASE {DATABASE}")
        except BaseException:
            self.stop()
            raise

    def _mkdir_as_server(self, path: Path) -> None:
        path.mkdir(mode=0o700)
        if self._as_postgres:
            os.chown(path, self.root.stat().st_uid, self.root.stat().st_gid)

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its folder; harmless twice."""
        if self.started:
            self.started = False
            with contextlib.suppress(PostgresUnavailable):
                self._run("pg_ctl", ["-D", str(self.data), "-m", "fast", "-w", "stop"])
        shutil.rmtree(self.root, ignore_errors=True)

    # -- databases ---------------------------------------------------------------------------

    def url(self, database: str = DATABASE, schema: str | None = None) -> str:
        """The ``postgresql://`` location of ``database`` on this server (through its socket),
        with ``schema`` first on the search path when given."""
        url = f"postgresql://{SUPERUSER}@/{database}?host={self.socket_dir}"
        return url if schema is None else f"{url}&options=-csearch_path%3D{schema}"

    def _admin(self, statement: str, database: str = "postgres") -> None:
        async def run() -> None:
            conn = await asyncpg.connect(self.url(database), timeout=timeout(SERVER_UNITS))
            try:
                await conn.execute(statement)
            finally:
                await conn.close()

        try:
            asyncio.run(run())
        except (OSError, asyncpg.PostgresError) as exc:
            raise PostgresUnavailable(f"{statement}: {exc}") from exc

    def _name(self, prefix: str) -> str:
        return f"{prefix}_{os.getpid()}_{next(self._names)}"

    def create_schema(self) -> str:
        """A new empty schema in :data:`DATABASE`; returns its name."""
        name = self._name("s")
        self._admin(f"CREATE SCHEMA {name}", DATABASE)
        return name

    def drop_schema(self, name: str) -> None:
        """Drop ``name`` and everything in it (waiting at most a few seconds for locks)."""
        with contextlib.suppress(PostgresUnavailable):  # left behind in a throwaway server
            self._admin(f"SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS {name} CASCADE", DATABASE)

    def create_database(self) -> str:
        """A new empty database; returns its name."""
        name = self._name("d")
        self._admin(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return name

    def drop_database(self, name: str) -> None:
        """Drop ``name``, closing whatever connections are still open to it."""
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

"""A throwaway PostgreSQL server, for the tests and the ``cluster`` benchmark: started on a Unix
socket in a temporary folder, and stopped (``pg_ctl stop -m fast``) and removed at the end.

- The server programs are found on ``PATH`` (``initdb``, ``pg_ctl``), then in Debian's
  ``/usr/lib/postgresql/<version>/bin`` (highest version first). CI installs Debian's
  ``postgresql`` package when they are missing (``.ci/run``).
- ``initdb`` and ``pg_ctl`` refuse to run as root: as root they run as the ``postgres`` user
  (``runuser -u postgres --``), in a folder given to that user; the caller, still root, reaches
  the socket anyway.
- The server listens on no TCP address at all (``listen_addresses=''``), only on its socket,
  with ``trust`` authentication for the superuser ``postgres``. It runs with ``fsync=off``:
  the tests and the benchmark kill nodes, never this server, so its own crash safety buys
  nothing here (a benchmark on it measures the nodes, not a disk).
- :meth:`PostgresServer.create_schema` makes a store of its own in the shared database
  :data:`DATABASE` (named in the store's URL by ``options=-csearch_path=…``, the startup
  option libpq and asyncpg both pass to the server); :meth:`PostgresServer.create_database`
  makes a whole database where one is needed.
- Statements of its own (``CREATE DATABASE``, ``CREATE SCHEMA``, ``DROP …``) go through the
  server's own ``psql``, so that nothing outside ``engine/storage`` imports a database driver;
  the test suite's subclass (tests/pg.py) sends them through asyncpg, which is faster.

When the server cannot be started, :class:`PostgresUnavailable` says why and what to install.
This module starts servers; the engine never does.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "DATABASE",
    "DEBIAN_PREFIX",
    "SERVER_SETTINGS",
    "STEP_TIMEOUT",
    "SUPERUSER",
    "PostgresServer",
    "PostgresUnavailable",
    "find_server_programs",
]

#: The server's superuser (initdb ``-U``), whoever runs the server.
SUPERUSER = "postgres"
#: The database the stores live in, one schema each.
DATABASE = "kintsugi"
#: Seconds ``initdb``, ``pg_ctl start``, ``pg_ctl stop`` and each statement may each take
#: (the default; tests/pg.py scales it with the test unit).
STEP_TIMEOUT = 60.0
#: Where Debian's ``postgresql`` package puts the server programs, one folder per version.
DEBIAN_PREFIX = Path("/usr/lib/postgresql")
#: Server settings for a throwaway server: fast, small, and reachable only through its socket.
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
    """The server could not be started (the message says why and what to do)."""


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
    """One throwaway server: :meth:`start`, :meth:`create_database`, :meth:`stop`.

    ``step_timeout``: seconds each server program and each statement may take."""

    def __init__(self, *, step_timeout: float = STEP_TIMEOUT) -> None:
        self.bin = find_server_programs()
        self.step_timeout = step_timeout
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

    def _run(self, program: str, args: Sequence[str], *, as_server: bool = True) -> None:
        command = [*(self._as_postgres if as_server else []), str(self.bin / program), *args]
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=self.step_timeout,
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

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- databases ---------------------------------------------------------------------------

    def url(self, database: str = DATABASE, schema: str | None = None) -> str:
        """The ``postgresql://`` location of ``database`` on this server (through its socket),
        with ``schema`` first on the search path when given."""
        url = f"postgresql://{SUPERUSER}@/{database}?host={self.socket_dir}"
        return url if schema is None else f"{url}&options=-csearch_path%3D{schema}"

    def _admin(self, statement: str, database: str = "postgres") -> None:
        """Run ``statement`` in ``database`` as the superuser; raises
        :class:`PostgresUnavailable` when it fails."""
        args = ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(self.socket_dir), "-U", SUPERUSER, "-d", database]
        self._run("psql", [*args, "-c", statement], as_server=False)

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

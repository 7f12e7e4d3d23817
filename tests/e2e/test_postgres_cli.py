"""Every ``kintsugi`` command that takes a store, on a PostgreSQL store behind a password, and
never showing that password.

The store lives in the throwaway server (tests/pg.py) in a schema owned by a role of its own
that must log in with a password (``scram-sha-256`` for that role only). The commands run as
real subprocesses: ``verify``, ``inspect``, ``anomalies``, ``bundle export`` (recording the
export in the store's audit log), ``compare`` (against a SQLite copy), ``recover plan`` and
``recover apply`` (from a real node process), ``audit verify`` and ``audit show``. Each is
given the password once in the URL and once through ``PGPASSWORD``; nothing any of them
prints or logs (``-v``), no audit record and no bundle holds the password. A wrong password
and a malformed URL fail with a typed error that does not repeat the URL's secret.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from engine.crypto import AccountKey
from engine.ids import CoValueID
from engine.node.facade import LocalNode
from engine.storage import open_store
from tests.e2e.conftest import Processes
from tests.engine._fork import copy_covalue, write_keys
from tests.pg import DATABASE, PostgresServer
from tests.util import REPO, timeout

#: Units one CLI run may take.
CLI_UNITS = 60


@dataclass
class PasswordStore:
    """A store in a schema owned by a role that logs in with ``password``."""

    role: str
    password: str
    schema: str
    socket_dir: Path

    def url(self, *, with_password: bool) -> str:
        auth = f"{self.role}:{self.password}" if with_password else self.role
        return f"postgresql://{auth}@/{DATABASE}?host={self.socket_dir}&options=-csearch_path%3D{self.schema}"


def _admin(server: PostgresServer, *statements: str, database: str = DATABASE) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(server.url(database), timeout=timeout(30))
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


@pytest.fixture
def password_store(postgres: PostgresServer) -> Iterator[PasswordStore]:
    """A role with a password (the server asks it for one: a ``pg_hba.conf`` line for that
    role alone, before the ``trust`` lines) and a schema it owns."""
    suffix = secrets.token_hex(4)
    role, password = f"kin_pw_{suffix}", f"Pw{secrets.token_hex(12)}"
    schema = f"pw_{suffix}"
    hba = postgres.data / "pg_hba.conf"
    original = hba.read_text()
    hba.write_text(f"local all {role} scram-sha-256\n{original}")
    _admin(
        postgres,
        "SET password_encryption = 'scram-sha-256'",
        f"CREATE ROLE {role} LOGIN PASSWORD '{password}'",
        f"GRANT CONNECT, CREATE ON DATABASE {DATABASE} TO {role}",
        f"CREATE SCHEMA {schema} AUTHORIZATION {role}",
        "SELECT pg_reload_conf()",
    )
    try:
        yield PasswordStore(role, password, schema, postgres.socket_dir)
    finally:
        _admin(postgres, f"DROP SCHEMA IF EXISTS {schema} CASCADE", f"DROP OWNED BY {role}")
        _admin(postgres, f"DROP ROLE IF EXISTS {role}", "SELECT pg_reload_conf()", database="postgres")
        hba.write_text(original)
        _admin(postgres, "SELECT pg_reload_conf()", database="postgres")


def kintsugi(*args: str, password: str | None = None) -> tuple[int, str, str]:
    """``python -m engine.cli ARGS`` in a subprocess, ``PGPASSWORD`` set only when given."""
    env = {k: v for k, v in os.environ.items() if k not in ("PGPASSWORD", "PGPASSFILE")}
    env.update(PYTHONPATH=str(REPO), PGPASSFILE=os.devnull)
    if password is not None:
        env["PGPASSWORD"] = password
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout(CLI_UNITS),
        check=False,
    )
    return done.returncode, done.stdout, done.stderr


def make_doc(store: str | Path, key: AccountKey) -> CoValueID:
    """A group and a map with a few keys in the store at ``store``; the map's id."""
    with LocalNode.open(store, key) as node:
        group = node.create_group()
        doc = node.create_map(group.id)
        write_keys(node, doc.id, "k", 40)
        return doc.id


def test_every_store_command_takes_a_postgres_url_and_never_shows_its_password(
    password_store: PasswordStore, processes: Processes, tmp_path: Path
) -> None:
    pw = password_store.password
    secret_url, public_url = password_store.url(with_password=True), password_store.url(with_password=False)
    admin = processes.account("admin")
    key = AccountKey.load(admin.key)
    # the node recovered from holds the same doc as the PostgreSQL store
    served = processes.workdir / "node1"
    doc = make_doc(served, key)
    with LocalNode.open(served, key) as src, LocalNode.open(secret_url, key) as dst:
        copy_covalue(src, dst, doc)
    node = processes.node("node1")
    sqlite_copy = tmp_path / "copy"
    with LocalNode.open(served, key) as src, LocalNode.open(sqlite_copy, key) as dst:
        copy_covalue(src, dst, doc)

    bundle = tmp_path / "pg.zip"
    wait = ["--timeout", str(timeout(CLI_UNITS))]
    commands: list[tuple[str, ...]] = [
        ("verify", "{url}"),
        ("inspect", "{url}"),
        ("anomalies", "{url}"),
        ("bundle", "export", "{url}", "--out", str(bundle), "--key", str(admin.key)),
        ("compare", "{url}", str(sqlite_copy)),
        ("compare", "{url}", "{url}", "--covalue", doc),
        ("recover", "plan", "{url}", "--from", node.url, "--key", str(admin.key), "--covalue", doc, *wait),
        ("recover", "apply", "{url}", "--from", node.url, "--key", str(admin.key), "--covalue", doc, "--yes", *wait),
        ("audit", "verify", "{url}"),
        ("audit", "show", "{url}"),
    ]
    reports: dict[str, Any] = {}
    for url, env_password in ((secret_url, None), (public_url, pw)):
        for command in commands:
            args = ["-v", "--json", *(word.replace("{url}", url) for word in command)]
            code, stdout, stderr = kintsugi(*args, password=env_password)
            where = (
                f"kintsugi {' '.join(command)} (password {'in the URL' if env_password is None else 'in PGPASSWORD'})"
            )
            assert code == 0, f"{where} exited {code}:\n{stdout}\n{stderr}"
            assert pw not in stdout and pw not in stderr, f"{where} showed the password"
            assert "Traceback" not in stderr, stderr
            reports[" ".join(command[:2])] = json.loads(stdout)  # the last run of each kept
            if command[0] == "bundle":
                assert pw.encode() not in bundle.read_bytes(), "the bundle holds the password"
                with zipfile.ZipFile(bundle) as zf:
                    assert all(pw.encode() not in zf.read(name) for name in zf.namelist())
                bundle.unlink()

    assert reports["verify {url}"]["ok"] is True
    assert doc in {cv["id"] for cv in reports["inspect {url}"]["covalues"]}
    assert reports["compare {url}"]["identical"] is True
    shown = reports["audit show"]
    assert shown["verify"]["ok"] is True
    actions = [r["action"] for r in shown["records"]]
    assert actions.count("export") == 2 and actions.count("recover") == 2, actions
    # every record names the store by its public location
    assert {r["target"] for r in shown["records"]} == {public_url}, shown["records"]
    assert pw not in json.dumps(shown)
    # and what the store itself holds, read without the CLI
    store = open_store(secret_url, readonly=True)
    try:
        assert store.location == public_url
        assert all(pw.encode() not in record.body for record in store.audit_log())
    finally:
        store.close()


def test_a_wrong_password_and_a_bad_url_fail_with_typed_errors_that_show_no_secret(
    password_store: PasswordStore,
) -> None:
    # the server does ask this role for its password
    code, stdout, _ = kintsugi("--json", "verify", password_store.url(with_password=False))
    assert code == 1 and json.loads(stdout)["error"]["code"] == "storage_environment", stdout
    wrong = password_store.url(with_password=False).replace("@/", ":Wr0ngSecret@/", 1)
    code, stdout, stderr = kintsugi("--json", "verify", wrong)
    assert code == 1, stderr
    error = json.loads(stdout)["error"]
    assert error["code"] == "storage_environment" and "authentication failed" in error["detail"], error
    assert "Wr0ngSecret" not in stdout + stderr

    bad = f"postgresql://{password_store.role}:Wr0ngSecret@localhost:notaport/{DATABASE}"
    for args in (("--json", "verify", bad), ("--json", "bundle", "export", bad, "--out", "x.zip")):
        code, stdout, stderr = kintsugi(*args)
        assert code == 2, stderr
        error = json.loads(stdout)["error"]
        assert error["code"] == "usage" and "not a valid PostgreSQL URL" in error["detail"], error
        assert "notaport" in error["detail"] and "Wr0ngSecret" not in stdout + stderr

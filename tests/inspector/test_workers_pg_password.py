"""The inspector's worker processes on a PostgreSQL store opened with a password in its URL.

The store is in the throwaway server (tests/pg.py), in a schema owned by a role that must log
in with a password (``scram-sha-256`` for that role alone: the ``password_store`` fixture of
tests/e2e/test_postgres_cli.py). The inspector opens it from the URL with the password; the
worker processes that verify and compute content (spawned, so they know nothing of this
process's memory) read it with the password from their environment, which never is on their
command line (``/proc/<pid>/cmdline``), and nothing of it shows in what the inspector
displays, saves or logs.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import shiboken6
from PySide6.QtCore import QSettings
from pytestqt.qtbot import QtBot

from engine.crypto import AccountKey
from engine.diagnostics import analysis
from engine.errors import StorageEnvironmentError, UsageError
from engine.storage.postgres.location import remember
from inspector.app import main
from inspector.controller import Inspector
from inspector.lag import LoopLagMonitor
from inspector.recent import RecentTargets
from inspector.targets import TargetSpec
from inspector.workers import WorkerPool
from tests.e2e.test_postgres_cli import (
    PasswordStore,
    make_doc,
    password_store,  # noqa: F401 - the fixture
)
from tests.engine._fork import expected_keys
from tests.inspector.conftest import run


@pytest.fixture
def own_inspector(
    loop: asyncio.AbstractEventLoop,
    qtbot: QtBot,
    settings: QSettings,
    monitor: LoopLagMonitor,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Inspector]:
    """An inspector with worker processes of its own, closed with it (before the role the
    store's password belongs to is dropped), started where no ``PGPASSWORD`` or ``.pgpass``
    could give a worker the password some other way."""
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", os.devnull)
    controller = Inspector(recent=RecentTargets(settings), monitor=monitor)
    controller.start()
    yield controller
    run(qtbot, controller.close())
    shiboken6.delete(controller)


def cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def test_a_worker_reads_a_password_store_with_the_password_in_its_environment_only(
    password_store: PasswordStore,  # noqa: F811 - the fixture imported above
    own_inspector: Inspector,
    qtbot: QtBot,
    settings: QSettings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pw = password_store.password
    secret_url, public_url = password_store.url(with_password=True), password_store.url(with_password=False)
    doc = make_doc(secret_url, AccountKey.generate())
    pool = own_inspector.pool

    # The server does ask for the password: a worker without it cannot read the store.
    with pytest.raises(StorageEnvironmentError, match="authentication failed"):
        run(qtbot, pool.run(analysis.analyse, public_url, doc), units=30)

    spec = TargetSpec.parse(secret_url)
    assert spec.kind == "store" and spec.location == public_url and spec.label == public_url
    assert run(qtbot, own_inspector.open(spec), units=60)
    target = own_inspector.target
    assert target is not None and doc in target.ids()
    summary = target.summary(doc)
    assert summary is not None and summary.analysed, "the worker did not read the store"
    snapshot = run(qtbot, target.content(doc), units=30)
    assert snapshot is not None
    assert {key: entry.value for key, entry in snapshot.entries.items()} == expected_keys("k", 40)

    shared = run(qtbot, pool.run(analysis.ping))
    worker = run(qtbot, pool.run(analysis.ping, location=public_url))
    assert worker not in (shared, os.getpid()), "the store's jobs must run in a process of their own"
    # the password is in that worker's environment, and only in that worker's
    assert run(qtbot, pool.run(os.getenv, "PGPASSWORD", location=public_url)) == pw
    assert run(qtbot, pool.run(os.getenv, "PGPASSWORD")) is None
    assert run(qtbot, pool.run(os.getenv, "PGPASSWORD", location=str(Path.cwd()))) is None
    assert "PGPASSWORD" not in os.environ, "the inspector's own environment got the password"
    # never on a command line
    for pid in (shared, worker):
        argv = cmdline(pid)
        assert b"multiprocessing" in argv, argv  # it is the worker, still running
        assert pw.encode() not in argv, f"the password is on worker {pid}'s command line"

    # nothing of the password in what the inspector shows, saves or logs
    assert own_inspector.recent is not None
    assert [s.location for s in own_inspector.recent.list()] == [public_url]
    settings.sync()
    saved = Path(settings.fileName())
    assert saved.exists() and pw not in saved.read_text()
    assert pw not in caplog.text


def test_each_password_gets_a_process_of_its_own_and_idle_ones_make_room(
    qtbot: QtBot, loop: asyncio.AbstractEventLoop
) -> None:
    """A PostgreSQL store whose URL holds no password (the user's own ``PGPASSWORD`` or
    ``.pgpass`` decide) runs in the shared process, like a SQLite store; each password has a
    process of its own; past ``max_processes`` the least recently used idle one is stopped."""
    passwords = ("Sec0nd" + os.urandom(4).hex(), "Th1rd" + os.urandom(4).hex())
    first, second = (remember(f"postgresql://someone:{s}@/kintsugi?host=/nowhere/{n}") for n, s in enumerate(passwords))
    pool = WorkerPool(max_processes=2)

    def ping(location: str | None = None) -> int:
        return run(qtbot, pool.run(analysis.ping, location=location))

    try:
        shared = ping()
        assert ping("postgresql://someone@/kintsugi?host=/nowhere") == shared
        assert ping(str(Path.cwd())) == shared
        one = ping(first)
        assert one != shared
        assert run(qtbot, pool.run(os.getenv, "PGPASSWORD", location=first)) == passwords[0]
        two = ping(second)  # stops the shared process, used least recently
        assert two not in (shared, one)
        assert run(qtbot, pool.run(os.getenv, "PGPASSWORD", location=second)) == passwords[1]
        assert ping(first) == one
        assert ping() not in (shared, one, two)  # a new shared process, in place of ``two``
        assert ping(first) == one
        assert ping(second) not in (shared, one, two)
    finally:
        run(qtbot, pool.close())


def test_a_malformed_url_is_refused_without_showing_its_password(capsys: pytest.CaptureFixture[str]) -> None:
    bad = "postgresql://someone:Wr0ngSecret@localhost:notaport/kintsugi"
    with pytest.raises(UsageError) as refused:
        TargetSpec.parse(bad)
    assert "notaport" in str(refused.value) and "Wr0ngSecret" not in str(refused.value)
    assert TargetSpec.from_json(f'{{"kind": "store", "location": "{bad}"}}') is None
    with pytest.raises(SystemExit) as exited:
        main([bad])
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert "not a valid PostgreSQL URL" in err and "Wr0ngSecret" not in out + err

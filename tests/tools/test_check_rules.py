"""tools/check_rules.py against small trees planted in tmp_path, and against the repository.

Each test plants a clean tree (every engine layer, importing only what the table allows,
with relative, function-level and ``TYPE_CHECKING`` imports among them), adds one wrong
file, and expects the checker to name that file, its line, the rule and the fix. The last
test, marked ``walls``, runs the checker on the real repository and expects no problem.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

from tests.util import REPO, timeout


def _load_checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_rules", REPO / "tools" / "check_rules.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


rules = _load_checker()

#: A tree that keeps every rule: one or two modules per layer, arrows only where allowed.
CLEAN: dict[str, str] = {
    "engine/__init__.py": '"""The engine."""\n',
    "engine/errors.py": "class KintsugiError(Exception):\n    pass\n",
    "engine/ids.py": "from engine.errors import KintsugiError\n",
    "engine/crypto.py": "from engine import ids\nfrom .errors import KintsugiError\n",
    "engine/codec.py": "import engine.errors\n",
    "engine/model/__init__.py": "",
    "engine/model/header.py": "from engine.ids import KintsugiError\nfrom . import session_log\n",
    "engine/model/session_log.py": "from engine import crypto\n",
    "engine/protocol/__init__.py": "",
    "engine/protocol/messages.py": "from engine.model.header import session_log\n",
    "engine/content/__init__.py": "",
    "engine/content/comap.py": "from ..model import header\n",
    "engine/covalue.py": "from engine.content.comap import header\n",
    "engine/kv/__init__.py": "from engine.kv.store import MemoryKV\n",
    "engine/kv/store.py": "from engine import codec\n\nMemoryKV = dict\n",
    "engine/recovery/__init__.py": "",
    "engine/recovery/plan.py": "from engine.covalue import header\nfrom engine.protocol import messages\n",
    "engine/sync/__init__.py": "",
    "engine/sync/manager.py": textwrap.dedent(
        """\
        from typing import TYPE_CHECKING

        from engine.kv import MemoryKV
        from engine.recovery.plan import header
        from engine.sync.events import Ring

        if TYPE_CHECKING:
            from engine.covalue import header as _header


        def later() -> None:
            from engine.protocol.messages import session_log
        """
    ),
    "engine/sync/events.py": "from .. import ids\n\nRing = list\n",
    "engine/storage/__init__.py": "",
    "engine/storage/sqlite/__init__.py": "",
    "engine/storage/sqlite/store.py": "import sqlite3\n\nfrom engine.kv.store import MemoryKV\n"
    "from engine.model import header\n",
    "engine/storage/postgres.py": "def connect() -> None:\n    import asyncpg\n",
    "engine/node/__init__.py": "from engine.node.facade import LocalNode\n",
    "engine/node/facade.py": "from engine.storage.sqlite.store import MemoryKV\nfrom engine.recovery import plan\n"
    "\nLocalNode = object\n",
    "engine/net/__init__.py": "",
    "engine/net/shell.py": "import asyncio\n\nfrom engine.node import LocalNode\n"
    "from engine.sync.manager import later\n",
    "engine/diagnostics/__init__.py": "",
    "engine/diagnostics/report.py": "from engine.node import LocalNode\nfrom engine.storage.sqlite import store\n",
    "engine/demo/__init__.py": "",
    "engine/demo/live.py": "from engine.net import shell\nfrom engine.diagnostics.report import LocalNode\n",
    "engine/cli/__init__.py": "",
    "engine/cli/main.py": "from engine.demo import live\n",
    "engine/__main__.py": "def main() -> None:\n    from engine.cli.main import live\n"
    "    from engine.demo import live\n",
    "inspector/__init__.py": "",
    "inspector/loop.py": "import qasync\nfrom PySide6 import QtCore\n",
    "inspector/app.py": "from inspector.loop import qasync\nfrom engine.node import LocalNode\n",
    "tests/test_damage.py": "import sqlite3\n\n\ndef test_damage() -> None:\n    print('tests may print')\n",
    "tools/helper.py": "print('tools may print')\n",
}


def plant(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def planted(root: Path, files: dict[str, str]) -> list[str]:
    """The problems, as printed, in the clean tree with ``files`` added (or replaced)."""
    plant(root, CLEAN)
    plant(root, files)
    return [str(p) for p in rules.check(root)]


def run_checker(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "tools" / "check_rules.py"), "--root", str(root)],
        capture_output=True,
        text=True,
        timeout=timeout(30),
        check=False,
    )


# -- a clean tree ---------------------------------------------------------------------------


def test_a_clean_tree_passes(tmp_path: Path) -> None:
    plant(tmp_path, CLEAN)
    assert rules.check(tmp_path) == []
    result = run_checker(tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "project rules: 0 problem(s)\n", "")


def test_every_import_form_is_read(tmp_path: Path) -> None:
    """Absolute, dotted, ``from`` (a module or a name in it), relative, star, in a function,
    in a class, under ``TYPE_CHECKING``, in ``try``/``with`` blocks: each is an arrow."""
    plant(tmp_path, CLEAN)
    source_text = textwrap.dedent(
        """\
        import engine.model.header, os
        from engine.protocol import messages
        from engine.covalue import header
        from . import plan
        from ..kv.store import *
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from engine.content import comap
        class K:
            import engine.ids as ids
        def f():
            try:
                from engine import codec
            except ImportError:
                with open("x") as handle:
                    import engine.errors
        """
    )
    plant(tmp_path, {"engine/recovery/forms.py": source_text})
    sources, problems = rules.read_tree(tmp_path)
    assert problems == []
    (forms,) = [s for s in sources if s.path == "engine/recovery/forms.py"]
    assert forms.module == "engine.recovery.forms"
    assert forms.imports == [
        (1, "engine.model.header"),
        (1, "os"),
        (2, "engine.protocol.messages"),
        (3, "engine.covalue"),
        (4, "engine.recovery.plan"),
        (5, "engine.kv.store"),
        (6, "typing"),
        (8, "engine.content.comap"),
        (10, "engine.ids"),
        (13, "engine.codec"),
        (16, "engine.errors"),
    ]


# -- the import table -----------------------------------------------------------------------


def test_storage_importing_node_breaks_the_table_and_makes_a_circle(tmp_path: Path) -> None:
    """storage → node is a wrong-way arrow; with node → storage it is also a circle, reported
    once with both imports that tie it."""
    found = planted(tmp_path, {"engine/storage/x.py": '"""Rows."""\n\nfrom engine.node.facade import LocalNode\n'})
    assert found == [
        "engine/node/facade.py:1: circle between engine packages engine.node ↔ engine.storage, tied by: "
        "engine/node/facade.py:1 imports engine.storage.sqlite.store; "
        "engine/storage/x.py:3 imports engine.node.facade — fix: " + rules.PACKAGE_CIRCLE_FIX,
        "engine/storage/x.py:3: engine.storage may not import engine.node (imports engine.node.facade); "
        "it may import only engine.errors, engine.ids/crypto/codec, engine.model, engine.kv — fix: "
        "storage returns rows and chunks; engine/node builds CoValues from them",
    ]


def test_sync_importing_diagnostics_inside_a_function_is_caught(tmp_path: Path) -> None:
    text = 'def report() -> None:\n    """Late."""\n    from engine.diagnostics import report\n'
    found = planted(tmp_path, {"engine/sync/x.py": text})
    assert len(found) == 1
    assert found[0].startswith(
        "engine/sync/x.py:3: engine.sync may not import engine.diagnostics (imports engine.diagnostics.report)"
    )
    assert found[0].endswith("— fix: " + rules.LAYER_BY_NAME["sync"].fix)
    assert "let engine/net or engine/node do the I/O" in found[0]


def test_a_type_only_import_from_net_in_diagnostics_is_an_arrow(tmp_path: Path) -> None:
    text = "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from engine.net.shell import asyncio\n"
    found = planted(tmp_path, {"engine/diagnostics/x.py": text})
    assert found == [
        "engine/diagnostics/x.py:4: engine.diagnostics may not import engine.net (imports engine.net.shell); it "
        "may import only engine.errors, engine.ids/crypto/codec, engine.model, engine.protocol, engine.content, "
        "engine.covalue, engine.kv, engine.recovery, engine.sync, engine.storage, engine.node — fix: diagnostics "
        "reads node and storage: take data from net, demo or cli as arguments instead of importing them"
    ]


@pytest.mark.parametrize(
    ("path", "text", "rule"),
    [
        ("engine/errors.py", "from engine import ids\n", "engine.errors may not import engine.ids/crypto/codec"),
        ("engine/ids.py", "from engine.model import header\n", "engine.ids/crypto/codec may not import engine.model"),
        ("engine/__init__.py", "from engine.node import LocalNode\n", "engine.ids/crypto/codec may not import "),
        ("engine/model/x.py", "from ..sync import manager\n", "engine.model may not import engine.sync"),
        ("engine/protocol/x.py", "import engine.covalue\n", "engine.protocol may not import engine.covalue"),
        ("engine/content/x.py", "from engine import covalue\n", "engine.content may not import engine.covalue"),
        ("engine/covalue.py", "from engine.recovery import plan\n", "engine.covalue may not import engine.recovery"),
        ("engine/kv/x.py", "from engine import node\n", "engine.kv may not import engine.node"),
        ("engine/kv/y.py", "from engine.model import header\n", "engine.kv may not import engine.model"),
        ("engine/recovery/x.py", "from engine.sync import manager\n", "engine.recovery may not import engine.sync"),
        ("engine/sync/x.py", "from engine.storage.sqlite import store\n", "engine.sync may not import engine.storage"),
        ("engine/sync/y.py", "import engine.net.shell\n", "engine.sync may not import engine.net"),
        ("engine/sync/z.py", "from engine.node import LocalNode\n", "engine.sync may not import engine.node"),
        ("engine/storage/x.py", "from engine.covalue import header\n", "engine.storage may not import engine.covalue"),
        ("engine/storage/y.py", "from engine.sync import events\n", "engine.storage may not import engine.sync"),
        ("engine/node/x.py", "from engine.net import shell\n", "engine.node may not import engine.net"),
        ("engine/node/y.py", "from engine.sync.events import Ring\n", "engine.node may not import engine.sync"),
        ("engine/node/z.py", "from engine.demo import live\n", "engine.node may not import engine.demo"),
        ("engine/net/x.py", "from engine.cli.main import live\n", "engine.net may not import engine.cli"),
        ("engine/diagnostics/x.py", "from engine.demo import live\n", "engine.diagnostics may not import engine.demo"),
        ("engine/demo/x.py", "from engine.cli import main\n", "engine.demo may not import engine.cli"),
        ("engine/demo/y.py", "from engine.__main__ import main\n", "engine.demo may not import engine.cli"),
    ],
)
def test_each_wrong_way_arrow_names_its_rule_and_fix(tmp_path: Path, path: str, text: str, rule: str) -> None:
    found = [p for p in planted(tmp_path, {path: text}) if "circle" not in p]
    assert len(found) == 1, found
    layer = rules.LAYER_BY_NAME[rules.layer_of(rules.module_name(path)[0])]
    assert found[0].startswith(f"{path}:1: {rule}")
    assert found[0].endswith(f" — fix: {layer.fix}")


def test_an_engine_module_in_no_layer_is_reported(tmp_path: Path) -> None:
    found = planted(tmp_path, {"engine/misc.py": "from engine import ids\n"})
    assert found == [
        "engine/misc.py:1: engine.misc is in no layer of the import table — fix: move the module into one of "
        "the packages of DESIGN §2, or give its package a layer in LAYERS (tools/check_rules.py) and in DESIGN §2"
    ]


# -- sqlite3 and asyncpg ----------------------------------------------------------------------


def test_sqlite3_from_node_is_refused_but_tests_may_use_it(tmp_path: Path) -> None:
    found = planted(
        tmp_path,
        {
            "engine/node/x.py": "def peek() -> None:\n    import sqlite3.dbapi2\n",
            "inspector/db.py": "import asyncpg\n",
            "bench/x.py": "from sqlite3 import connect\n",
            "tests/engine/test_more.py": "import sqlite3\n",
        },
    )
    fix = rules.IMPORT_RULES[3].fix
    assert found == [
        f"bench/x.py:1: only engine/storage imports sqlite3 or asyncpg (imports sqlite3) — fix: {fix}",
        f"engine/node/x.py:2: only engine/storage imports sqlite3 or asyncpg (imports sqlite3.dbapi2) — fix: {fix}",
        f"inspector/db.py:1: only engine/storage imports sqlite3 or asyncpg (imports asyncpg) — fix: {fix}",
    ]
    assert "engine/storage" in fix


# -- circles --------------------------------------------------------------------------------


def test_a_circle_between_two_packages_is_reported_once_with_its_ties(tmp_path: Path) -> None:
    found = planted(
        tmp_path,
        {
            "engine/model/x.py": "from engine.protocol import messages\n",
            "engine/model/y.py": "from engine.protocol.messages import session_log\n",
        },
    )
    circles = [p for p in found if "circle" in p]
    assert circles == [
        "engine/model/x.py:1: circle between engine packages engine.model ↔ engine.protocol, tied by: "
        "engine/model/x.py:1 imports engine.protocol.messages; engine/model/y.py:1 imports "
        "engine.protocol.messages; engine/protocol/messages.py:1 imports engine.model.header — fix: "
        + rules.PACKAGE_CIRCLE_FIX
    ]
    assert len(found) == 3  # and each wrong-way arrow on its own


def test_a_circle_between_modules_of_one_package_is_reported(tmp_path: Path) -> None:
    found = planted(
        tmp_path,
        {
            "engine/sync/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\nA = 1\n",
            "engine/sync/b.py": "from engine.sync import a\nB = 2\n",
        },
    )
    assert found == [
        "engine/sync/a.py:3: circle between modules engine.sync.a ↔ engine.sync.b, tied by: "
        "engine/sync/a.py:3 imports engine.sync.b; engine/sync/b.py:1 imports engine.sync.a — fix: "
        + rules.MODULE_CIRCLE_FIX
    ]


def test_a_package_importing_its_own_init_can_close_a_circle(tmp_path: Path) -> None:
    """engine/kv/__init__ imports kv.store; kv.store taking a name from ``engine.kv`` (the
    package) closes a circle at import time."""
    found = planted(tmp_path, {"engine/kv/store.py": "from engine.kv import Present\n\nMemoryKV = dict\n"})
    assert found == [
        "engine/kv/__init__.py:1: circle between modules engine.kv ↔ engine.kv.store, tied by: "
        "engine/kv/__init__.py:1 imports engine.kv.store; engine/kv/store.py:1 imports engine.kv — fix: "
        + rules.MODULE_CIRCLE_FIX
    ]


def test_strongly_connected_components() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": {"e"}, "e": {"d"}, "f": {"a"}, "g": {"g"}}
    assert rules.strongly_connected(graph) == [["a", "b", "c"], ["d", "e"]]
    assert rules.strongly_connected({}) == []


# -- the line and import rules that came before the table -----------------------------------


@pytest.mark.parametrize(
    ("path", "text", "line", "rule"),
    [
        ("engine/node/x.py", 'def f() -> None:\n    print("hi")\n', 2, "no print() in engine/"),
        ("tests/test_x.py", "try:\n    pass\nexcept:\n    pass\n", 3, "no bare except"),
        ("inspector/x.py", "try:\n    pass\nexcept :\n    pass\n", 3, "no bare except"),
        ("engine/node/y.py", "def f():\n    from PySide6 import QtCore\n", 2,
         "the engine never imports Qt, qasync or the inspector (imports PySide6)"),
        ("engine/diagnostics/x.py", "import os, qasync\n", 1,
         "the engine never imports Qt, qasync or the inspector (imports qasync)"),
        ("engine/net/x.py", "from inspector.models import table\n", 1,
         "the engine never imports Qt, qasync or the inspector (imports inspector.models)"),
        ("engine/protocol/x.py", "import asyncio\n", 1, "engine/protocol is sans-I/O (imports asyncio)"),
        ("engine/protocol/y.py", "from websockets.frames import Frame\n", 1,
         "engine/protocol is sans-I/O (imports websockets.frames)"),
        ("engine/sync/x.py", "def f():\n    import socket\n", 2, "engine/sync is sans-I/O (imports socket)"),
        ("inspector/x.py", "import qasync\n", 1, "only inspector/loop.py imports qasync (imports qasync)"),
    ],
)
def test_each_older_rule_still_fires(tmp_path: Path, path: str, text: str, line: int, rule: str) -> None:
    found = planted(tmp_path, {path: text})
    assert len(found) == 1, found
    assert found[0].startswith(f"{path}:{line}: {rule} — fix: ")


def test_a_file_that_does_not_parse_is_reported(tmp_path: Path) -> None:
    found = planted(tmp_path, {"engine/sync/x.py": "def broken(:\n"})
    assert found == ["engine/sync/x.py:1: does not parse: invalid syntax — fix: fix the syntax"]


def test_output_lists_each_problem_then_the_count_and_exits_1(tmp_path: Path) -> None:
    plant(tmp_path, CLEAN)
    plant(tmp_path, {"engine/kv/x.py": "from engine.model import header\n", "engine/sync/y.py": "import asyncio\n"})
    result = run_checker(tmp_path)
    lines = result.stdout.splitlines()
    assert result.returncode == 1 and result.stderr == ""
    assert [line.split(": ")[0] for line in lines[:-1]] == ["engine/kv/x.py:1", "engine/sync/y.py:1"]
    assert all(" — fix: " in line for line in lines[:-1])
    assert lines[-1] == "project rules: 2 problem(s)"


def test_dot_directories_and_build_output_are_not_walked(tmp_path: Path) -> None:
    found = planted(
        tmp_path,
        {".venv/lib/engine/x.py": "except:\n", "build/engine/x.py": "print(1)\n", "engine/.cache/x.py": "except:\n"},
    )
    assert found == []


# -- the real repository --------------------------------------------------------------------


@pytest.mark.walls
def test_walls_hold_in_the_real_repository() -> None:
    """THE WALLS HOLD: the repository keeps the import table and every project rule.

    Fails, listing each problem, while code still sits on the wrong side of a wall."""
    result = run_checker(REPO)
    assert result.returncode == 0, result.stdout
    assert result.stdout == "project rules: 0 problem(s)\n"

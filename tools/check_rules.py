"""Project rules that ruff and mypy do not know, each with the fix to make (DESIGN §2, STYLE).

``python tools/check_rules.py [--root DIR]`` checks the tree at DIR (default: this
repository), prints every violation as ``path:line: rule — fix: …`` sorted by place, then the
count, and exits 1 if there is any. Standard library only; one read and one parse per file.

The rules:

1. Line rules (:data:`LINE_RULES`, a regex per line): no ``print(`` in engine/, no bare
   ``except:``.
2. Import rules, read from the real imports: every file is parsed with :mod:`ast`, and
   ``import x.y``, ``from x.y import z``, relative imports, imports inside functions and
   under ``if TYPE_CHECKING:`` all count alike — a type-only import is still an arrow.

   - :data:`IMPORT_RULES`: the engine never imports Qt, qasync or the inspector;
     engine/protocol and engine/sync are sans-I/O; only engine/storage imports sqlite3 or
     asyncpg (tests may, to damage files on purpose); only inspector/loop.py imports qasync.
   - The import table (:data:`LAYERS`): which engine package may import which. Every module
     of engine/ belongs to one layer (a file in none is reported); an arrow to a layer the
     table does not allow is reported with that layer's fix.
   - No circles: the strongly connected components of the package graph (each reported once,
     with every import that ties it) and of the module graph inside one package (a circle
     that crosses packages is already reported as a package circle).

A file that does not parse is reported and otherwise skipped.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Directories never walked into (besides every directory whose name starts with a dot).
SKIP_DIRS = frozenset({"build", "dist", "__pycache__", "node_modules"})


@dataclass(frozen=True, order=True)
class Problem:
    """One violation: where (a path relative to the root, in ``/`` form, and a 1-based line),
    which rule, and the fix to make."""

    path: str
    line: int
    rule: str
    fix: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.rule} — fix: {self.fix}"


# -- line rules -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LineRule:
    """A regex that must not match any line of the files under ``prefix`` ("" is all)."""

    prefix: str
    regex: re.Pattern[str]
    rule: str
    fix: str


LINE_RULES: tuple[LineRule, ...] = (
    LineRule(
        "engine/",
        re.compile(r"(?<![\w.])print\("),
        "no print() in engine/",
        "log with logging.getLogger(__name__), or return the text to the CLI",
    ),
    LineRule(
        "",
        re.compile(r"^\s*except\s*:"),
        "no bare except",
        "catch the exception types you mean (KintsugiError, OSError, ...)",
    ),
)


# -- import rules -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportRule:
    """Files matched by ``applies`` (relative ``/`` path) may not import any of ``modules``
    (top-level names: ``sqlite3`` also forbids ``sqlite3.dbapi2``)."""

    applies: Callable[[str], bool]
    modules: frozenset[str]
    rule: str
    fix: str

    @property
    def mentioned(self) -> re.Pattern[str]:
        """Matches a text that names one of ``modules`` (a cheap test before parsing)."""
        return re.compile(r"\b(?:" + "|".join(sorted(self.modules)) + r")\b")


_SANS_IO_FORBIDDEN = frozenset({"asyncio", "socket", "websockets", "sqlite3"})

IMPORT_RULES: tuple[ImportRule, ...] = (
    ImportRule(
        lambda path: path.startswith("engine/"),
        frozenset({"PySide6", "shiboken6", "qasync", "inspector"}),
        "the engine never imports Qt, qasync or the inspector",
        "move the code to inspector/, or pass what the engine needs in as plain data",
    ),
    ImportRule(
        lambda path: path.startswith("engine/protocol/"),
        _SANS_IO_FORBIDDEN,
        "engine/protocol is sans-I/O",
        "do the I/O in engine/net and feed decoded data in",
    ),
    ImportRule(
        lambda path: path.startswith("engine/sync/"),
        _SANS_IO_FORBIDDEN,
        "engine/sync is sans-I/O",
        "return effects from the state machine and let engine/net perform them",
    ),
    ImportRule(
        lambda path: not path.startswith(("engine/storage/", "tests/")),
        frozenset({"sqlite3", "asyncpg"}),
        "only engine/storage imports sqlite3 or asyncpg",
        "go through the Store interface of engine/storage, or move the SQL into engine/storage/sqlite "
        "(or engine/storage/postgres)",
    ),
    ImportRule(
        lambda path: path.startswith("inspector/") and path != "inspector/loop.py",
        frozenset({"qasync"}),
        "only inspector/loop.py imports qasync",
        "take the loop and what you need of qasync from inspector/loop.py",
    ),
)


# -- the import table (DESIGN §2) ---------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """One engine package (or the base modules) of the import table: what it may import
    besides itself, and how to fix an arrow it may not have."""

    name: str
    #: how messages name it (the base layer also holds ``engine/__init__``)
    title: str
    may_import: frozenset[str]
    fix: str


_BASE = frozenset({"base", "errors"})
_CORE = _BASE | {"model", "protocol", "content", "covalue", "kv"}
_BELOW_DIAGNOSTICS = _CORE | {"sync", "recovery", "storage", "node"}

#: The layers, lowest first. A layer always may import itself.
LAYERS: tuple[Layer, ...] = (
    Layer(
        "errors",
        "engine.errors",
        frozenset(),
        "engine/errors.py is the root of the engine and imports nothing of it: keep only "
        "exception types there and let the modules that raise them carry the logic",
    ),
    Layer(
        "base",
        "engine.ids/crypto/codec",
        frozenset({"errors"}),
        "ids, crypto, codec and errors import only each other: move the code that needs more "
        "up into the layer that uses it",
    ),
    Layer(
        "model",
        "engine.model",
        _BASE,
        "model is pure data and rules over ids, crypto, codec and errors: move the code that "
        "needs more up into its user, or pass the value in",
    ),
    Layer(
        "protocol",
        "engine.protocol",
        _BASE | {"model"},
        "protocol knows frames and messages over model types only: decode to model types and "
        "let engine/sync act on them",
    ),
    Layer(
        "content",
        "engine.content",
        _BASE | {"model"},
        "content views are computed from model data: take what they need as arguments",
    ),
    Layer(
        "covalue",
        "engine.covalue",
        _BASE | {"model", "content"},
        "covalue builds on model and content only; recovery, sync, storage and node sit above "
        "it and call into it, so move the code up or pass what it needs in",
    ),
    Layer(
        "kv",
        "engine.kv",
        _BASE,
        "kv holds plain CAS-slot logic over ids, crypto, codec and errors: storage implements "
        "its interfaces, never the other way round",
    ),
    Layer(
        "recovery",
        "engine.recovery",
        _CORE,
        "recovery verifies and plans over the core; sync, node and net call it: take what it "
        "needs as arguments instead of importing them",
    ),
    Layer(
        "sync",
        "engine.sync",
        _CORE | {"recovery"},
        "sync is the sans-I/O state machine: take what it needs through a Protocol (like "
        "SyncHost) and let engine/net or engine/node do the I/O, persistence and reporting",
    ),
    Layer(
        "storage",
        "engine.storage",
        _BASE | {"model", "kv"},
        "storage returns rows and chunks; engine/node builds CoValues from them",
    ),
    Layer(
        "node",
        "engine.node",
        _BASE | {"model", "covalue", "content", "kv", "recovery", "storage"},
        "node wires the core and storage; net, sync, diagnostics, demo and cli sit above or "
        "beside it: hand the node a callback, or let engine/net wire them together",
    ),
    Layer(
        "net",
        "engine.net",
        _BELOW_DIAGNOSTICS,
        "net is the asyncio shell over the core: diagnostics, demo and cli read it, never the "
        "other way round; move what both need down",
    ),
    Layer(
        "diagnostics",
        "engine.diagnostics",
        _BELOW_DIAGNOSTICS,
        "diagnostics reads node and storage: take data from net, demo or cli as arguments "
        "instead of importing them",
    ),
    Layer(
        "demo",
        "engine.demo",
        _BELOW_DIAGNOSTICS | {"net", "diagnostics"},
        "demo sits below cli: move what both need into a lower package",
    ),
    Layer(
        "cli",
        "engine.cli",
        _BELOW_DIAGNOSTICS | {"net", "diagnostics", "demo"},
        "cli is the top of the engine",
    ),
)
LAYER_BY_NAME: dict[str, Layer] = {layer.name: layer for layer in LAYERS}

#: The layer of each top-level name under ``engine.`` (``engine`` itself is base).
TOP_LEVEL: dict[str, str] = {
    "ids": "base",
    "crypto": "base",
    "codec": "base",
    "errors": "errors",
    # ``python -m engine`` is a command entry (kintsugi, the demo's clients): on top, with cli
    "__main__": "cli",
    **{name: name for name in LAYER_BY_NAME if name not in ("base", "errors")},
}

PACKAGE_CIRCLE_FIX = (
    "break the circle at an arrow the import table forbids (each is also reported on its own): "
    "move the code both sides need down, or pass it in"
)
MODULE_CIRCLE_FIX = "move what the modules share into a module that both import, or pass it in"


def layer_of(module: str) -> str | None:
    """The layer name of an engine module (``engine.sync.manager`` → ``sync``); None for a
    module outside ``engine`` or in no layer of the table."""
    parts = module.split(".")
    if parts[0] != "engine":
        return None
    if len(parts) == 1:
        return "base"
    return TOP_LEVEL.get(parts[1])


# -- reading the tree -----------------------------------------------------------------------


@dataclass
class SourceFile:
    """One ``.py`` file: its ``/`` path, module name, text and the imports it makes."""

    path: str
    module: str
    is_package: bool
    text: str
    tree: ast.Module | None = None
    #: ``(line, module)`` for every module it imports, in source order, deduplicated
    imports: list[tuple[int, str]] = field(default_factory=list)


def walk(root: Path) -> Iterator[str]:
    """Every ``.py`` file under ``root`` as a ``/`` path relative to it, sorted; skips dot
    directories (``.venv``, ``.git``) and :data:`SKIP_DIRS`."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in SKIP_DIRS]
        rel = Path(dirpath).relative_to(root)
        for name in filenames:
            if name.endswith(".py"):
                found.append((rel / name).as_posix())
    return iter(sorted(found))


def module_name(path: str) -> tuple[str, bool]:
    """``engine/sync/manager.py`` → ``("engine.sync.manager", False)``;
    ``engine/node/__init__.py`` → ``("engine.node", True)``."""
    parts = path[: -len(".py")].split("/")
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def _from_base(source: SourceFile, node: ast.ImportFrom) -> str | None:
    """The absolute module a ``from … import`` names (relative ones resolved against the
    file's package); None when it climbs above the top."""
    if not node.level:
        return node.module
    package = source.module if source.is_package else source.module.rpartition(".")[0]
    parts = package.split(".") if package else []
    keep = len(parts) - (node.level - 1)
    if keep <= 0:
        return None
    base = ".".join(parts[:keep])
    return f"{base}.{node.module}" if node.module else base


#: Fields of a statement that hold more statements (imports are statements, never
#: expressions, so nothing else needs visiting).
_STATEMENT_LISTS = ("body", "orelse", "finalbody", "handlers", "cases")


def _import_statements(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement in ``body`` and the statements nested in it (functions,
    classes, ``if``/``try``/``with``/``for``/``while``/``match`` blocks)."""
    stack: list[ast.AST] = list(body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
            continue
        for name in _STATEMENT_LISTS:
            stack.extend(getattr(node, name, ()))


def find_imports(source: SourceFile, modules: frozenset[str]) -> list[tuple[int, str]]:
    """Every module ``source`` imports, anywhere in the file. ``from x import y`` counts as
    importing ``x.y`` when that is a module of the tree (``modules``) or a top-level engine
    package, otherwise as importing ``x``."""
    assert source.tree is not None
    found: list[tuple[int, str]] = []
    for node in _import_statements(source.tree.body):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        else:
            base = _from_base(source, node)
            if base is None:
                continue
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                named_module = candidate in modules or (base == "engine" and alias.name in TOP_LEVEL)
                found.append((node.lineno, candidate if alias.name != "*" and named_module else base))
    return sorted(set(found))


def _needs_parsing(path: str, text: str) -> bool:
    """Whether any import rule can concern this file: every engine file (the table), and
    another file only when some rule covers it and its text names a module that rule
    forbids. Parsing the rest (the tests, mostly) would only cost time."""
    if path.startswith("engine/"):
        return True
    return any(rule.applies(path) and rule.mentioned.search(text) for rule in IMPORT_RULES)


def read_tree(root: Path) -> tuple[list[SourceFile], list[Problem]]:
    """Every source file under ``root`` with its text, and, where an import rule can concern
    it (:func:`_needs_parsing`), its syntax tree and imports; the files that do not read or
    parse are returned as problems."""
    sources: list[SourceFile] = []
    problems: list[Problem] = []
    for path in walk(root):
        module, is_package = module_name(path)
        try:
            text = (root / path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(path, 1, f"cannot read the file: {exc}", "store it as UTF-8 text"))
            continue
        source = SourceFile(path, module, is_package, text)
        sources.append(source)
        if not _needs_parsing(path, text):
            continue
        try:
            source.tree = ast.parse(text, filename=path)
        except SyntaxError as exc:
            problems.append(Problem(path, exc.lineno or 1, f"does not parse: {exc.msg}", "fix the syntax"))
    modules = frozenset(s.module for s in sources)
    for source in sources:
        if source.tree is not None:
            source.imports = find_imports(source, modules)
    return sources, problems


# -- the checks -----------------------------------------------------------------------------


def check_lines(sources: Iterable[SourceFile]) -> Iterator[Problem]:
    """Each line of each file under a :class:`LineRule`'s prefix against its regex."""
    for rule in LINE_RULES:
        for source in sources:
            if not source.path.startswith(rule.prefix):
                continue
            for number, line in enumerate(source.text.splitlines(), 1):
                if rule.regex.search(line):
                    yield Problem(source.path, number, rule.rule, rule.fix)


def check_import_rules(sources: Iterable[SourceFile]) -> Iterator[Problem]:
    """Each import of each file against the :data:`IMPORT_RULES` that cover the file."""
    for source in sources:
        for rule in IMPORT_RULES:
            if not rule.applies(source.path):
                continue
            for line, target in source.imports:
                if target.split(".")[0] in rule.modules:
                    yield Problem(source.path, line, f"{rule.rule} (imports {target})", rule.fix)


def _allowed_text(layer: Layer) -> str:
    names = [other.title for other in LAYERS if other.name in layer.may_import]
    return ", ".join(names) if names else "nothing else of the engine"


def check_table(sources: Iterable[SourceFile]) -> Iterator[Problem]:
    """Every engine file is in a layer; every arrow between layers is one the table allows."""
    for source in sources:
        if layer_of(source.module) is None and source.module.split(".")[0] == "engine":
            yield Problem(
                source.path,
                1,
                f"{source.module} is in no layer of the import table",
                "move the module into one of the packages of DESIGN §2, or give its package a "
                "layer in LAYERS (tools/check_rules.py) and in DESIGN §2",
            )
    for source in sources:
        src = layer_of(source.module)
        if src is None:
            continue
        layer = LAYER_BY_NAME[src]
        for line, target in source.imports:
            dst = layer_of(target)
            if dst is None or dst == src or dst in layer.may_import:
                continue
            yield Problem(
                source.path,
                line,
                f"{layer.title} may not import {LAYER_BY_NAME[dst].title} "
                f"(imports {target}); it may import only {_allowed_text(layer)}",
                layer.fix,
            )


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the strongly connected components of ``graph`` with
    more than one node, each sorted, in sorted order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def enter(node: str) -> tuple[str, Iterator[str]]:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        return node, iter(sorted(graph.get(node, ())))

    for start in sorted(graph):
        if start in index:
            continue
        work = [enter(start)]
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    at = stack.index(node)
                    component, stack[at:] = stack[at:], []
                    on_stack.difference_update(component)
                    if len(component) > 1:
                        components.append(sorted(component))
            elif child not in index:
                work.append(enter(child))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return sorted(components)


Ties = dict[tuple[str, str], list[tuple[str, int, str]]]


def _circles(ties: Ties, rule: Callable[[list[str]], str], fix: str) -> Iterator[Problem]:
    """One problem per circle of the graph that ``ties`` ((from, to) → the imports making
    that arrow) describes, placed at its first tying import and listing all of them."""
    graph: dict[str, set[str]] = defaultdict(set)
    for src, dst in ties:
        graph[src].add(dst)
    for component in strongly_connected(graph):
        members = set(component)
        sites = sorted(
            site for (src, dst), found in ties.items() if src in members and dst in members for site in found
        )
        tied_by = "; ".join(f"{path}:{line} imports {target}" for path, line, target in sites)
        path, line, _target = sites[0]
        yield Problem(path, line, f"{rule(component)}, tied by: {tied_by}", fix)


def check_circles(sources: Sequence[SourceFile]) -> Iterator[Problem]:
    """Circles between engine packages, and between modules of one engine package."""
    engine = {s.module: s for s in sources if layer_of(s.module) is not None}
    layer_ties: Ties = defaultdict(list)
    module_ties: Ties = defaultdict(list)
    for source in engine.values():
        src = layer_of(source.module)
        assert src is not None
        for line, target in source.imports:
            dst = layer_of(target)
            if dst is None:
                continue
            if dst != src:
                layer_ties[(src, dst)].append((source.path, line, target))
                continue
            # the nearest module of the tree that the import names (an attribute of a
            # package counts as importing the package)
            module = target
            while module not in engine and "." in module:
                module = module.rpartition(".")[0]
            if module in engine and module != source.module:
                module_ties[(source.module, module)].append((source.path, line, target))
    yield from _circles(
        layer_ties,
        lambda names: "circle between engine packages " + " ↔ ".join(LAYER_BY_NAME[n].title for n in names),
        PACKAGE_CIRCLE_FIX,
    )
    yield from _circles(module_ties, lambda names: "circle between modules " + " ↔ ".join(names), MODULE_CIRCLE_FIX)


def check(root: Path = ROOT) -> list[Problem]:
    """Every violation of the project rules in the tree at ``root``, sorted by place."""
    sources, problems = read_tree(root)
    parsed = [s for s in sources if s.tree is not None]
    problems.extend(check_lines(sources))
    problems.extend(check_import_rules(parsed))
    problems.extend(check_table(parsed))
    problems.extend(check_circles(parsed))
    return sorted(set(problems))


def main(argv: Sequence[str] | None = None) -> int:
    """Print every violation and the count; 1 if there is any, else 0."""
    parser = argparse.ArgumentParser(description="Check the project rules (import table, sans-I/O, ...).")
    parser.add_argument("--root", type=Path, default=ROOT, help="the tree to check (default: this repository)")
    args = parser.parse_args(argv)
    root: Path = args.root.resolve()
    if not root.is_dir():
        parser.error(f"{root} is not a directory")
    problems = check(root)
    for problem in problems:
        print(problem)
    print(f"project rules: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

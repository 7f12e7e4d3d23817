"""``kintsugi compare A B``: two targets side by side (DESIGN §10, §11: compare).

Targets are a store (directory or database file, opened read-only; ``demo`` is the store
``kintsugi demo --headless`` writes), a node's ``ws://`` URL (with ``--key``: connected as
an ``inspector`` peer through :class:`~engine.net.remote.RemoteSession`, exactly as
``kintsugi inspect`` does), or a diagnostic bundle ``FILE.zip``
(:class:`~engine.diagnostics.compare_bundle.BundleSide`). The same store may be given twice.
A bundle exported without content holds each session's hash at every checkpoint but no
rows: its sessions are compared at those hashes and the fork is located to within one
write batch (JSON ``"basis": "checkpoints"``, ``fork: {after, before}``). A redacted
bundle's content is in tokens, so its content is compared only with another bundle's.

Scopes:

- ``compare A B``: every CoValue of either side, classified (only on one side, forked,
  behind, the same);
- ``--covalue ID``: that CoValue's sessions paired by id, and its content key by key
  (``--no-content`` skips the content, which decodes every transaction);
- ``--covalue ID --session S``: session S on both sides, aligned by index;
  ``--session L --session R``: session L of A with session R of B (a session and one of its
  conflict sessions are aligned at the conflict session's fork point).

Text output for two sessions is an aligned two-column view with the common prefix folded;
``--json`` prints one document (for two sessions: ``identical``, ``fork``,
``common_prefix``, ``only_left``, ``only_right``, ``different`` and more, see
:meth:`~engine.diagnostics.compare.SessionComparison.to_json`). Exit codes: 0 identical,
1 they differ, 2 an error (a target that cannot be opened, bad arguments).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from engine.cli.output import EXIT_FAILED, EXIT_OK, EXIT_USAGE, AddCommand, Output, default_demo_store
from engine.cli.stores import open_readonly, store_location
from engine.cli.urls import resolve_node
from engine.crypto import AccountKey
from engine.diagnostics.bundle_read import Bundle, is_bundle_path
from engine.diagnostics.chain_verify import ChainVerifier, RowState
from engine.diagnostics.compare import DEFAULT_LISTED_ROWS, CompareRow, RowKind, SessionComparison, compare_sessions
from engine.diagnostics.compare_bundle import BundleSide, compare_by_checkpoints, known_points
from engine.diagnostics.compare_scopes import (
    CoValueComparison,
    CoValueStatus,
    PairStatus,
    TargetComparison,
    compare_covalue,
    compare_targets,
)
from engine.diagnostics.compare_sides import CompareSide, NodeSide, StoreSide
from engine.diagnostics.session_rows import SessionSource, StoreSessionSource
from engine.errors import KintsugiError, ProtocolError, UsageError
from engine.ids import CoValueID, SessionID, SessionKind, parse_covalue_id, parse_session_id
from engine.model.header import OwnedByGroup
from engine.storage import open_store

__all__ = ["cmd_compare", "open_side", "register"]

#: Seconds to wait for a node (connect, list, load) unless ``--timeout`` says otherwise.
DEFAULT_TIMEOUT = 60.0
#: Rows one verification step reads and re-derives at once (a few MB of rows in memory).
VERIFY_STEP_ROWS = 20_000
#: Right-side sessions shorter than this are verified in this process only (a child
#: process costs more than it saves on small sessions).
PARALLEL_MIN_ROWS = 200_000
#: Characters of a change summary in the two-column text view.
CHANGE_WIDTH = 44
#: Verification marks of the text view.
STATE_MARKS = {
    RowState.VERIFIED: "✓",
    RowState.PENDING: "…",
    RowState.UNSIGNED: "○",
    RowState.BROKEN: "✗",
    RowState.UNVERIFIABLE: "–",
}
KIND_MARKS = {RowKind.DIFFERENT: "≠", RowKind.ONLY_LEFT: "<", RowKind.ONLY_RIGHT: ">", RowKind.COMMON: " "}


def _is_url(target: str) -> bool:
    return target.startswith(("ws://", "wss://"))


@contextlib.asynccontextmanager
async def open_side(
    target: str, key: Path | None, timeout: float, covalue: CoValueID | None
) -> AsyncIterator[CompareSide]:
    """The comparison side of ``target``, open for the ``with`` block (closed after).

    A node is loaded into an in-memory replica: only ``covalue`` (and its owner group) when
    given, else every CoValue the account may list. Raises :class:`UsageError` for a node
    without a key or a bundle, and what opening a store or connecting raises.
    """
    if _is_url(target):
        if key is None:
            raise UsageError(f"comparing with the node {target} needs --key FILE (the account to connect as)")
        from engine.net.remote import RemoteSession

        account = AccountKey.load(key)
        await resolve_node(target, timeout)
        session = RemoteSession(target, account)
        await session.open(timeout)
        try:
            await _load(session, covalue, timeout)
            yield NodeSide(session.node, target)
        finally:
            await session.close()
            with contextlib.suppress(KintsugiError):
                session.node.close()
        return
    if is_bundle_path(target):
        bundle = Bundle(target)
        try:
            yield BundleSide(bundle, target)
        finally:
            bundle.close()
        return
    path = default_demo_store() if target == "demo" else store_location(target)
    store = open_readonly(str(path))
    try:
        yield StoreSide(store, target)
    finally:
        store.close()


def _same_words(left: CompareSide, right: CompareSide) -> bool:
    """False when one side's content is in redaction tokens and the other's is not (their
    keys and values could never match)."""
    tokens = [isinstance(side, BundleSide) and side.bundle.redacted for side in (left, right)]
    return tokens[0] == tokens[1]


async def _load(session: Any, covalue: CoValueID | None, timeout: float) -> None:
    from engine.errors import AdminRefused

    if covalue is None:
        try:
            listing = await session.admin("list", None, timeout)
        except (AdminRefused, ProtocolError) as exc:
            raise ProtocolError(f"the node refused to list CoValues ({exc})", code="admin_refused") from None
        await session.load_all([CoValueID(c) for c in listing.get("covalues", [])], timeout)
        return
    await session.load_all([covalue], timeout)
    core = session.node.get_or_none(covalue)
    if core is not None and isinstance(core.header.ruleset, OwnedByGroup):
        await session.load_all([core.header.ruleset.group], timeout)  # content needs the roles


def _verifiers(
    comparison: SessionComparison,
    sides: tuple[CompareSide, CompareSide],
    apart: Callable[[], dict[str, Any] | None] | None = None,
) -> None:
    """Verify both sides to the end, in windows of :data:`VERIFY_STEP_ROWS` (each on a
    reader of its own), as thoroughly as ``kintsugi verify``: every hash re-derived, every
    checkpoint signature checked, the stored head matched.

    When both sides are stores and a session is big (:data:`PARALLEL_MIN_ROWS`), the right
    one is verified in a child process (``apart``, from :func:`_verify_right_apart`, started
    by the caller as early as it likes) while this one verifies the left: the two chains
    share no work, and a machine has two cores. Otherwise two
    copies of one session are verified in step, so their common prefix is hashed once, not
    twice: the left chain is re-derived in full and the right's prefix links by byte
    equality with the rows the left has just verified (:meth:`ChainVerifier.step_as_copy`);
    the right's own rows after it are re-derived as usual."""
    verifiers: list[ChainVerifier | None] = []
    for side, source in ((sides[0], comparison.left), (sides[1], comparison.right)):
        checker = side.open_session(source.covalue, source.session)
        verifiers.append(ChainVerifier(checker) if checker is not None else None)
    left, right = verifiers
    comparison.left_verifier, comparison.right_verifier = left, right
    if apart is None and right is not None:
        apart = _verify_right_apart(sides, right.source)
    if apart is None or left is None or right is None:
        if apart is not None:
            apart()  # not needed after all: reap the child
        copies = comparison.left.session == comparison.right.session
        _in_step(left, right, comparison.alignment.common_prefix if copies else 0)
        return
    left.run(VERIFY_STEP_ROWS)
    state = apart()
    if state is not None:
        right.restore(state)
    else:
        right.run(VERIFY_STEP_ROWS)


def _in_step(left: ChainVerifier | None, right: ChainVerifier | None, common: int) -> None:
    if left is not None and right is not None:
        while left.linked < common and left.failure is None and right.failure is None:
            left.step(min(VERIFY_STEP_ROWS, common - left.linked))
            while right.linked < left.linked and right.failure is None:
                right.step_as_copy(left, VERIFY_STEP_ROWS)
    for verifier in (left, right):
        if verifier is not None:
            verifier.run(VERIFY_STEP_ROWS)


def _verify_right_apart(
    sides: tuple[CompareSide, CompareSide], source: SessionSource
) -> Callable[[], dict[str, Any] | None] | None:
    """Start verifying the right session (``source``, of the right side) in a forked child
    when both sides are stores and it holds :data:`PARALLEL_MIN_ROWS` rows or more; returns
    a function that waits for the child's verifier state (None: the child failed, verify
    here), or None when no child runs."""
    import multiprocessing

    left_side, right_side = sides
    if not (isinstance(left_side, StoreSide) and isinstance(right_side, StoreSide)):
        return None
    if source.count < PARALLEL_MIN_ROWS or "fork" not in multiprocessing.get_all_start_methods():
        return None
    job = (right_side.store.location, source.covalue, source.session)
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_right_child, args=(sender, job), daemon=True)
    try:
        child.start()
    except OSError:
        return None
    sender.close()

    def wait() -> dict[str, Any] | None:
        try:
            state: dict[str, Any] | None = receiver.recv()
        except (EOFError, OSError):
            state = None
        finally:
            receiver.close()
            child.join()
        return state

    return wait


def _right_child(sender: Any, job: tuple[str, CoValueID, SessionID]) -> None:
    """In the child: verify one stored session to the end, send the verifier's state."""
    location, covalue, session = job
    state = None
    try:
        store = open_store(location, readonly=True)
        try:
            verifier = ChainVerifier(StoreSessionSource(store, covalue, session))
            verifier.run(VERIFY_STEP_ROWS)
            state = verifier.snapshot()
        finally:
            store.close()
    except Exception:  # the parent verifies in-process instead
        state = None
    sender.send(state)
    sender.close()


async def _run(args: argparse.Namespace, out: Output) -> tuple[dict[str, Any], str, bool]:
    covalue = parse_covalue_id(args.covalue) if args.covalue else None
    sessions = [SessionID(s) for s in args.session or []]
    for sid in sessions:
        parse_session_id(sid)
    if sessions and covalue is None:
        raise UsageError("--session needs --covalue (the CoValue the sessions belong to)")
    if len(sessions) > 2:
        raise UsageError("give --session once (the same session on both) or twice (left, then right)")
    out.progress(f"opening {args.a} and {args.b}")
    async with (
        open_side(args.a, args.key, args.timeout, covalue) as left,
        open_side(args.b, args.key, args.timeout, covalue) as right,
    ):
        if covalue is not None and sessions:
            report, text, identical = _sessions(args, out, (left, right), covalue, sessions)
        elif covalue is not None:
            out.progress(f"comparing {covalue}")
            cv = compare_covalue(left, right, covalue, content=not args.no_content and _same_words(left, right))
            report, text, identical = cv.to_json(), covalue_text(cv), cv.identical
        else:
            result = compare_targets(left, right, progress=out.counter("comparing CoValues"))
            report, text, identical = result.to_json(), targets_text(result), result.identical
    return report, text, identical


def _sessions(
    args: argparse.Namespace,
    out: Output,
    sides: tuple[CompareSide, CompareSide],
    covalue: CoValueID,
    sessions: list[SessionID],
) -> tuple[dict[str, Any], str, bool]:
    left, right = sides
    left_sid, right_sid = sessions[0], sessions[-1]
    a, b = left.open_session(covalue, left_sid), right.open_session(covalue, right_sid)
    if a is None or b is None:
        missing = [
            f"{sid} on {side.label}" for sid, side, src in ((left_sid, left, a), (right_sid, right, b)) if not src
        ]
        raise UsageError(f"{covalue}: no session {' and no session '.join(missing)}")
    # A conflict session's fork record is kept beside the store of the replica that split it.
    record = None
    for sid in (left_sid, right_sid):
        if parse_session_id(sid).kind is SessionKind.CONFLICT:
            record = left.conflict_fork_record(covalue, sid) or right.conflict_fork_record(covalue, sid)
    if known_points(a) is not None or known_points(b) is not None:
        if left_sid != right_sid:
            raise UsageError("a bundle without raw rows compares copies of one session only (give --session once)")
        sparse = compare_by_checkpoints(a, b, left_label=left.label, right_label=right.label)
        return sparse.to_json(), sparse.text(), sparse.identical
    # the right side's verification starts in a child before the alignment (it needs none)
    apart = None if args.no_verify else _verify_right_apart(sides, b)
    comparison = compare_sessions(a, b, left_label=left.label, right_label=right.label, conflict_record=record)
    if not args.no_verify:
        out.progress("verifying both sides")
        _verifiers(comparison, (left, right), apart)
    report = {"scope": "session", **comparison.to_json(args.rows)}
    return report, sessions_text(comparison, args.rows), comparison.identical


def cmd_compare(args: argparse.Namespace, out: Output) -> int:
    try:
        report, text, identical = asyncio.run(_run(args, out))
    except KintsugiError as exc:
        out.error(exc)
        return EXIT_USAGE
    except OSError as exc:
        out.error(UsageError(f"{exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}"))
        return EXIT_USAGE
    out.result(report, text)
    return EXIT_OK if identical else EXIT_FAILED


# -- text ------------------------------------------------------------------------------------------


def _cell(row: CompareRow, side: str) -> str:
    tx = row.left if side == "left" else row.right
    state = row.left_state if side == "left" else row.right_state
    if tx is None:
        return " " * (CHANGE_WIDTH + 16)
    made = _clock(tx.made_at)
    summary = tx.summary if len(tx.summary) <= CHANGE_WIDTH else tx.summary[: CHANGE_WIDTH - 1] + "…"
    return f"{made:<12} {summary:<{CHANGE_WIDTH}} {STATE_MARKS.get(state, ' ') if state else ' '}"


def _clock(ms: int | None) -> str:
    if ms is None:
        return "?"
    seconds, millis = divmod(ms, 1000)
    minutes, second = divmod(seconds, 60)
    hours, minute = divmod(minutes, 60)
    return f"{hours % 24:02d}:{minute:02d}:{second:02d}.{millis:03d}"


def sessions_text(comparison: SessionComparison, listed: int = DEFAULT_LISTED_ROWS) -> str:
    """The two-column view: a header per side, the summary, the folded common prefix, then
    up to ``listed`` aligned rows from the fork (or the first difference) on."""
    a = comparison.alignment
    summary = comparison.summary()
    lines = []
    for name in ("left", "right"):
        side = summary[name]
        verification = side.get("verification", {})
        state = verification.get("state", "not verified")
        if state == "broken":
            state = f"broken at #{verification['index']}: {verification['reason']}"
        lines.append(f"{name:<5}: {side['target']}  {side['session']}  ({side['count']:,} transactions, {state})")
    if a.identical:
        lines.append(f"identical: {a.common_prefix:,} transactions")
        return "\n".join(lines)
    where = a.fork.describe() if a.fork is not None else "no fork: one side is ahead"
    if a.conflict is not None:
        where = f"conflict session: {a.conflict.fork.describe()} ({a.conflict.basis})"
    lines.append(
        f"{where} · common prefix {a.common_prefix:,} · different {summary['different']:,} · "
        f"only left {summary['only_left']:,} · only right {summary['only_right']:,}"
    )
    lines.append(f"  {'#':>9}  {'left':<{CHANGE_WIDTH + 16}} │ right")
    if a.common_prefix:
        lines.append(f"  [{a.common_prefix:,} common rows 0–{a.common_prefix - 1:,} folded]")
    shown = comparison.rows(a.common_prefix, listed)
    for row in shown:
        mark = "▶" if row.index == a.common_prefix else KIND_MARKS[row.kind]
        lines.append(f"{mark} {row.index:>9}  {_cell(row, 'left')} │ {_cell(row, 'right')}".rstrip())
    rest = a.total - a.common_prefix - len(shown)
    if rest > 0:
        lines.append(f"  … {rest:,} more rows (--rows N lists more)")
    return "\n".join(lines)


def covalue_text(result: CoValueComparison) -> str:
    """Sessions paired by id (with fork points) and the keys whose winner differs."""
    lines = [f"{result.covalue}: {result.status} ({result.left_label} vs {result.right_label})"]
    for pair in result.pairs:
        counts = f"{pair.left_count if pair.left_count is not None else '-':>9} {pair.right_count or '-':>9}"
        fork = f"  {pair.fork.describe()}" if pair.fork is not None else ""
        lines.append(f"  {pair.status!s:<12} {counts}  {pair.session}{fork}")
    if result.keys is None:
        lines.append("content not compared")
    elif not result.keys:
        lines.append("content: the same on both sides")
    else:
        lines.append(f"content: {len(result.keys)} key(s) differ")
        for diff in result.keys:
            lines.append(f"  {diff.key}: {_winner(diff.left)} │ {_winner(diff.right)}")
    return "\n".join(lines)


def _winner(entry: Any) -> str:
    if entry is None:
        return "(none)"
    value = "deleted" if entry.deleted else repr(entry.value)
    return f"{value} by {entry.session[-12:]}#{entry.index} at {_clock(entry.made_at)}"


def targets_text(result: TargetComparison) -> str:
    """The counts per status and every CoValue that is not the same, with its sessions."""
    counts = result.counts()
    listed = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    lines = [f"{result.left_label} vs {result.right_label}: {len(result.rows)} CoValues: {listed or 'none'}"]
    for row in result.rows:
        if row.status is CoValueStatus.SAME:
            continue
        lines.append(f"  {row.covalue}  {row.status}")
        for pair in row.sessions:
            fork = f" ({pair.fork.describe()})" if pair.status is PairStatus.FORKED and pair.fork else ""
            lines.append(f"      {pair.status!s:<12} {pair.session}{fork}")
    return "\n".join(lines)


def register(command: AddCommand) -> None:
    p = command(
        "compare",
        cmd_compare,
        "Compare two targets (stores, 'demo', ws:// nodes or bundles FILE.zip): whole targets, one CoValue "
        "(--covalue), or "
        "sessions aligned by index (--covalue with --session). Exit 0 identical, 1 different, 2 error.",
    )
    p.add_argument(
        "a",
        metavar="A",
        help="left target: store directory or file, a postgresql:// store, 'demo', a node's ws:// URL or a bundle .zip",
    )
    p.add_argument("b", metavar="B", help="right target (may be the same store again)")
    p.add_argument("--covalue", metavar="ID", help="compare this CoValue only")
    p.add_argument(
        "--session",
        metavar="SID",
        action="append",
        help="with --covalue: this session on both sides; given twice, the first of A with the second of B",
    )
    p.add_argument("--key", type=Path, help="account key file to connect to ws:// targets with")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds to wait for a node (default 60)")
    p.add_argument("--rows", type=int, default=DEFAULT_LISTED_ROWS, help="rows listed per kind (default 50)")
    p.add_argument("--no-verify", action="store_true", help="do not verify the two sessions' chains")
    p.add_argument("--no-content", action="store_true", help="with --covalue alone: do not compare content")

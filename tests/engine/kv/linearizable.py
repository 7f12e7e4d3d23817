"""A linearizability checker for histories of CAS registers (DESIGN §8, §12).

A history is what concurrent clients saw: each :class:`Op` has the time it was invoked, the
time its result came back (None: it never did — a timeout, a lost connection), and the
result. It is *linearizable* if every op can be given one instant between its invocation
and its completion such that, in the order of those instants, the results are those of one
register taking the ops one at a time (:func:`step`).

The register is a CAS slot: state ``(generation, value)``, ``(0, None)`` never written.

- ``get`` returns the state.
- ``cas(expect, value)`` at generation ``expect`` stores ``value`` at ``expect + 1`` and
  returns ``("stored", expect + 1)``; at any other generation it changes nothing and returns
  ``("conflict", generation, value)``.

Values are compared as :func:`normal` makes them (a tombstone is the same tombstone whoever
stamped it when).

The search is Wing & Gong's, with Lowe's memoization (as in Knossos and Porcupine): walk the
history's events in time order; at a call, try to linearize that op now (the model accepts
its result), remembering ``(set of ops linearized, state)`` configurations already explored;
at a return whose op is not linearized yet, backtrack. An op that never completed may take
effect at any point after its call, or never: its return is placed after every other event
and any result is accepted. Keys are independent registers, so a history of several keys is
linearizable when each key's sub-history is (linearizability is compositional); checking them
apart keeps the search small.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Op", "Verdict", "check", "check_key", "normal", "step"]

#: A register state: (generation, normalized value).
State = tuple[int, Hashable]


def normal(value: Any) -> Hashable:
    """A hashable, comparable form of a slot value (lists and maps made into tuples)."""
    if isinstance(value, list | tuple):
        return ("list", tuple(normal(v) for v in value))
    if isinstance(value, dict):
        return ("map", tuple(sorted((repr(k), normal(v)) for k, v in value.items())))
    return value


@dataclass(frozen=True)
class Op:
    """One operation of one client on one key.

    ``kind`` is ``"get"`` or ``"cas"``; a cas has ``expect`` and ``value``. ``result`` is
    ``(gen, value)`` for a get, ``("stored", gen)`` or ``("conflict", gen, value)`` for a
    cas, None when unknown (``end`` None: it never completed). Values are normalized.
    """

    client: int
    key: str
    kind: str
    start: float
    end: float | None
    result: tuple[Any, ...] | None
    expect: int = 0
    value: Hashable = None


@dataclass
class Verdict:
    """The outcome: ``ok``, and for a key that is not linearizable, its name and the ops of
    the longest prefix found linearizable before the search failed (to read the failure)."""

    ok: bool
    key: str | None = None
    ops: int = 0
    explored: int = 0
    bad: list[Op] = field(default_factory=list)


def step(state: State, op: Op) -> tuple[bool, State]:
    """Can the register in ``state`` give ``op`` its result now, and the state after."""
    generation, value = state
    if op.kind == "get":
        return (op.result is None or op.result == (generation, value)), state
    if generation == op.expect:
        after = (generation + 1, op.value)
        return (op.result is None or op.result == ("stored", generation + 1)), after
    return (op.result is None or op.result == ("conflict", generation, value)), state


@dataclass(eq=False)
class _Entry:
    """An event of the history in a doubly linked list: a call (``match`` is its return)
    or a return."""

    op_id: int
    call: bool
    time: float
    match: _Entry | None = None
    prev: _Entry | None = None
    next: _Entry | None = None


def _events(ops: list[Op]) -> _Entry:
    """The history as a linked list (a head sentinel first): events by time; at equal times
    calls before returns, so ops touching at an instant count as concurrent."""
    events: list[tuple[float, int, int, _Entry]] = []
    for i, op in enumerate(ops):
        call = _Entry(i, True, op.start)
        ret = _Entry(i, False, math.inf if op.end is None else op.end)
        call.match = ret
        events.append((call.time, 0, i, call))
        events.append((ret.time, 1, i, ret))
    events.sort(key=lambda e: (e[0], e[1], e[2]))
    head = _Entry(-1, False, -math.inf)
    last = head
    for *_, entry in events:
        last.next, entry.prev = entry, last
        last = entry
    return head


def _lift(entry: _Entry) -> None:
    """Take a call and its return out of the list."""
    for e in (entry, entry.match):
        assert e is not None and e.prev is not None
        e.prev.next = e.next
        if e.next is not None:
            e.next.prev = e.prev


def _unlift(entry: _Entry) -> None:
    """Put them back (the reverse of :func:`_lift`, return first)."""
    for e in (entry.match, entry):
        assert e is not None and e.prev is not None
        e.prev.next = e
        if e.next is not None:
            e.next.prev = e


def check_key(ops: list[Op], key: str = "", initial: State = (0, None)) -> Verdict:
    """Whether one register's history is linearizable (see the module docstring)."""
    head = _events(ops)
    state = initial
    linearized = 0
    seen: set[tuple[int, State]] = set()
    stack: list[tuple[_Entry, State]] = []
    best: list[int] = []
    entry = head.next
    explored = 0
    while head.next is not None:
        assert entry is not None
        if entry.call:
            explored += 1
            ok, after = step(state, ops[entry.op_id])
            if ok:
                config = (linearized | 1 << entry.op_id, after)
                if config not in seen:
                    seen.add(config)
                    stack.append((entry, state))
                    state, linearized = after, config[0]
                    if len(stack) > len(best):
                        best = [e.op_id for e, _ in stack]
                    _lift(entry)
                    entry = head.next
                    continue
            entry = entry.next
        else:
            if not stack:
                return Verdict(False, key, len(ops), explored, [ops[i] for i in best])
            entry, state = stack.pop()
            linearized &= ~(1 << entry.op_id)
            _unlift(entry)
            entry = entry.next
    return Verdict(True, key, len(ops), explored)


def check(ops: Iterable[Op]) -> Verdict:
    """Whether a history of any number of keys is linearizable: each key on its own."""
    by_key: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        by_key[op.key].append(op)
    explored = 0
    for key, key_ops in sorted(by_key.items()):
        verdict = check_key(key_ops, key)
        explored += verdict.explored
        if not verdict.ok:
            verdict.explored = explored
            return verdict
    return Verdict(True, None, sum(map(len, by_key.values())), explored)

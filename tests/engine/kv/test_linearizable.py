"""The linearizability checker of tests/engine/kv/linearizable.py: it accepts histories that
have a linearization and rejects those that have none — including some a per-op check
(each result plausible on its own) would pass. A seeded random test compares it with brute
force over every order on small histories."""

from __future__ import annotations

import dataclasses
import itertools
import os
import random

import pytest

from tests.engine.kv.linearizable import Op, check, check_key, step


def get(client: int, start: float, end: float | None, gen: int, value: object, key: str = "k") -> Op:  # noqa: PLR0917
    """A get of ``key`` that saw ``(gen, value)`` (nothing, when ``end`` is None)."""
    return Op(client, key, "get", start, end, None if end is None else (gen, value))


def cas(  # noqa: PLR0917 - positional, so that a history reads as a table
    client: int,
    start: float,
    end: float | None,
    expect: int,
    value: object,
    result: tuple[object, ...] | None,
    key: str = "k",
) -> Op:
    return Op(client, key, "cas", start, end, result, expect, value)


def stored(gen: int) -> tuple[object, ...]:
    return ("stored", gen)


def conflict(gen: int, value: object) -> tuple[object, ...]:
    return ("conflict", gen, value)


def test_a_sequential_history_is_linearizable() -> None:
    ops = [
        get(1, 0, 1, 0, None),
        cas(1, 2, 3, 0, "a", stored(1)),
        cas(2, 4, 5, 0, "b", conflict(1, "a")),
        get(2, 6, 7, 1, "a"),
        cas(2, 8, 9, 1, "b", stored(2)),
        get(1, 10, 11, 2, "b"),
    ]
    assert check(ops).ok


def test_concurrent_ops_may_take_effect_in_another_order_than_invoked() -> None:
    """Client 2 invoked its cas later but it took effect first: fine, they overlap."""
    ops = [
        cas(1, 0, 10, 0, "a", conflict(1, "b")),
        cas(2, 1, 5, 0, "b", stored(1)),
        get(3, 6, 7, 1, "b"),
    ]
    assert check(ops).ok


def test_a_read_concurrent_with_a_write_may_see_either_value() -> None:
    for seen in ((0, None), (1, "a")):
        ops = [cas(1, 0, 10, 0, "a", stored(1)), get(2, 1, 2, *seen)]
        assert check(ops).ok, seen


def test_two_winners_of_one_generation_are_rejected() -> None:
    """Both CASes from generation 0 say they stored generation 1: no order gives that."""
    ops = [cas(1, 0, 10, 0, "a", stored(1)), cas(2, 0, 10, 0, "b", stored(1))]
    verdict = check(ops)
    assert not verdict.ok and verdict.key == "k"


def test_a_stale_read_after_a_completed_write_is_rejected() -> None:
    """The write completed (t=3) before the read began (t=4): the read must see it."""
    ops = [cas(1, 0, 3, 0, "a", stored(1)), get(2, 4, 5, 0, None)]
    assert not check(ops).ok


def test_a_lost_update_is_rejected() -> None:
    """Each result is plausible alone, yet together they need the register to go back:
    a read sees "b" at generation 2, a later read sees "a" at generation 1."""
    ops = [
        cas(1, 0, 1, 0, "a", stored(1)),
        cas(2, 2, 3, 1, "b", stored(2)),
        get(3, 4, 5, 2, "b"),
        get(3, 6, 7, 1, "a"),
    ]
    assert not check(ops).ok


def test_a_conflict_must_report_the_value_that_won() -> None:
    ops = [cas(1, 0, 1, 0, "a", stored(1)), cas(2, 2, 3, 0, "x", conflict(1, "not a"))]
    assert not check(ops).ok


def test_an_op_that_never_completed_may_or_may_not_have_taken_effect() -> None:
    """A cas whose reply never came: later reads may see it, or not."""
    for seen in ((0, None), (1, "a")):
        ops = [cas(1, 0, None, 0, "a", None), get(2, 5, 6, *seen)]
        assert check(ops).ok, seen
    # ... but not both, in that order: once seen, a value cannot disappear.
    ops = [cas(1, 0, None, 0, "a", None), get(2, 5, 6, 1, "a"), get(2, 7, 8, 0, None)]
    assert not check(ops).ok


def test_keys_are_checked_apart() -> None:
    good = [cas(1, 0, 1, 0, "a", stored(1), key="x"), get(2, 2, 3, 1, "a", key="x")]
    bad = [cas(1, 0, 1, 0, "a", stored(1), key="y"), get(2, 2, 3, 0, None, key="y")]
    assert check(good).ok
    verdict = check(good + bad)
    assert not verdict.ok and verdict.key == "y"


def _brute_force(ops: list[Op]) -> bool:
    """Some order of ``ops`` respecting real time is accepted by the register (every op
    here completed)."""
    for order in itertools.permutations(range(len(ops))):
        pos = {op_id: i for i, op_id in enumerate(order)}
        if any(
            ops[a].end is not None and ops[a].end < ops[b].start and pos[a] > pos[b]
            for a in range(len(ops))
            for b in range(len(ops))
        ):
            continue
        state: tuple[int, object] = (0, None)
        for op_id in order:
            ok, state = step(state, ops[op_id])
            if not ok:
                break
        else:
            return True
    return False


def _random_op(rng: random.Random, client: int) -> Op:
    """An op with a random interval and a random (probably impossible) result."""
    start = rng.randint(0, 8)
    end = start + rng.randint(0, 4)
    if rng.random() < 0.4:
        return get(client, start, end, rng.randint(0, 2), rng.choice([None, "a", "b"]))
    result = rng.choice([stored(rng.randint(1, 3)), conflict(rng.randint(0, 2), rng.choice([None, "a"]))])
    return cas(client, start, end, rng.randint(0, 2), rng.choice(["a", "b"]), result)


def _executed_history(rng: random.Random) -> list[Op]:
    """Ops run on a real register, each taking effect at a random moment inside its
    interval: linearizable by construction."""
    planned = [_random_op(rng, i) for i in range(rng.randint(1, 5))]
    moments = sorted(((rng.uniform(op.start, op.end or op.start), i) for i, op in enumerate(planned)))
    gen, value = 0, None
    results: dict[int, tuple[object, ...]] = {}
    for _, i in moments:
        op = planned[i]
        if op.kind == "get":
            results[i] = (gen, value)
        elif op.expect == gen:
            gen, value = gen + 1, op.value
            results[i] = stored(gen)
        else:
            results[i] = conflict(gen, value)
    return [dataclasses.replace(op, result=results[i]) for i, op in enumerate(planned)]


@pytest.mark.parametrize("round_", range(3))
def test_agrees_with_brute_force_on_small_random_histories(round_: int) -> None:
    """Half the histories are random (nearly all impossible), half were executed on a real
    register (all possible), some of those with one result changed afterwards."""
    seed = int.from_bytes(os.urandom(4), "little")
    print(f"seed {seed} (round {round_})")
    rng = random.Random(seed)
    agreed = {True: 0, False: 0}
    for n in range(150):
        if n % 2:
            ops = [_random_op(rng, i) for i in range(rng.randint(1, 5))]
        else:
            ops = _executed_history(rng)
            if rng.random() < 0.3:
                i = rng.randrange(len(ops))
                ops[i] = dataclasses.replace(
                    ops[i], result=_random_op(rng, i).result if ops[i].kind == "cas" else (rng.randint(0, 2), "b")
                )
        expected = _brute_force(ops)
        assert check_key(ops).ok == expected, (seed, ops)
        agreed[expected] += 1
    assert agreed[True] and agreed[False], f"seed {seed}: the random histories were all one kind {agreed}"

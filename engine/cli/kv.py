"""``kintsugi kv``: CAS slots of a node over the network (DESIGN §8; docs/protocol.md "CAS slots").

- ``kv get URL KEY --key KEYFILE``: a slot's generation, state and value.
- ``kv cas URL KEY --expect GEN --value JSON --key KEYFILE``: store the JSON value at
  ``GEN + 1`` if the slot is at ``GEN`` (0: never written); ``--delete`` instead of
  ``--value`` writes a tombstone.
- ``kv watch URL PREFIX --key KEYFILE``: one line per change stored under ``PREFIX`` from
  now on, until Ctrl+C or SIGTERM (then exit 0). A line "watching …" on stderr says the
  watch is running.

``URL`` may name several nodes of one cluster (they share CAS slots), comma-separated:
``ws://a:4100,ws://b:4100``. Each command connects to the first that answers. ``watch`` then
follows over: when its node goes away it moves to another one of them (within ``--timeout``
seconds, else it ends with ``connection_lost``, exit 1), says so on stderr, first prints each
slot that changed there meanwhile (its generation grew past the last one printed or listed,
or it is new), then goes on watching. With one URL a lost node ends the watch (exit 1).

The account is the key file's; its own namespace is the default, and ``--namespace ACCOUNT``
reads another one (get, watch), which a node allows its admin accounts only. ``--json``
prints the result as one JSON document (``watch``: one JSON object per line), values as
JSON (bytes as ``{"bytes": hex}``). A key or value the node would refuse (too long, NUL, a
value over 64 KiB) is refused before connecting, with the node's code. These commands log
errors only unless ``-v``: the client's reconnect warnings would only repeat the one error
a failed command prints.

Exit codes: 0 done (``get`` of a key never written included: state ``absent``); 1 failed —
the node refused (``kv_access_denied``, ``kv_bad_key``, ``kv_value_too_large``, …), could not
be reached, lost the connection (``connection_lost``), or the key file is unreadable
(``key_file``); 2 usage — a URL that is not a node's ``ws://``, a ``--value`` that is not
JSON, a negative ``--expect``; :data:`EXIT_CONFLICT` (3) — ``cas`` lost: the slot is not at
``--expect`` (its current generation and value are printed), so a script can retry.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.cli.node import account_id
from engine.cli.output import EXIT_OK, Output, add_json_flag
from engine.cli.urls import node_urls, resolve_nodes
from engine.crypto import AccountKey
from engine.errors import ProtocolError, UsageError
from engine.kv.envelope import Present, Slot, Tombstone

if TYPE_CHECKING:
    from engine.net.kv_client import RemoteKV, RemoteWatch

__all__ = ["EXIT_CONFLICT", "KV_CLI_TIMEOUT", "register", "slot_json"]

#: Exit code of a ``kv cas`` that lost: the slot was not at the expected generation.
EXIT_CONFLICT = 3
#: Seconds to connect, and for each request's reply, unless ``--timeout`` says otherwise.
KV_CLI_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class SlotName:
    """A key or prefix as typed. Wrapped, not a ``str``, because every text argument
    written like a URL is checked as a node URL before a command runs, and a key may well
    hold ``://``."""

    text: str


def expected_generation(text: str) -> int:
    """A generation to expect, 0 or more (an argparse ``type``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a generation (0 or more)") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is not a generation (0 or more; 0: never written)")
    return value


def slot_json(namespace: str, key: str, generation: int, slot: Slot | None) -> dict[str, Any]:
    """A slot as ``--json`` prints it: ``{namespace, key, generation, state, value?,
    deleted_at?, deleted_by?}``, ``state`` one of ``present``, ``tombstone``, ``absent``."""
    from engine.diagnostics.compare import json_safe

    out: dict[str, Any] = {"namespace": namespace, "key": key, "generation": generation}
    if slot is None:
        out["state"] = "absent"
    elif isinstance(slot, Tombstone):
        out.update(state="tombstone", deleted_at=slot.at, deleted_by=slot.by)
    else:
        out.update(state="present", value=json_safe(slot.value))
    return out


def slot_text(row: dict[str, Any]) -> str:
    """One line for a slot (``slot_json``'s form)."""
    head = f"{row['key']}  gen {row['generation']}  {row['state']}"
    if row["state"] == "present":
        return f"{head}  {json.dumps(row['value'], sort_keys=True)}"
    if row["state"] == "tombstone":
        return f"{head}  (deleted at {row['deleted_at']} by {row['deleted_by']})"
    return head


async def _open(args: argparse.Namespace, out: Output, key: AccountKey) -> RemoteKV:
    from engine.net.kv_client import RemoteKV

    await resolve_nodes(args.url, args.timeout)
    out.progress(f"connecting to {', '.join(args.url)}")
    return await RemoteKV.open(args.url, key, timeout=args.timeout)


def _checked(args: argparse.Namespace, key: AccountKey) -> str:
    """The namespace the command reads, once it and the key or prefix are known to be an
    address a node takes (refused here, before connecting, as the node would)."""
    from engine.sync.kv_service import check_key

    namespace: str = args.namespace or key.account_id
    check_key(namespace, args.slot.text)
    return namespace


def cmd_get(args: argparse.Namespace, out: Output) -> int:
    key = AccountKey.load(args.key)
    namespace = _checked(args, key)

    async def run() -> int:
        kv = await _open(args, out, key)
        try:
            generation, slot = await kv.get(args.slot.text, namespace=namespace)
        finally:
            await kv.close()
        row = slot_json(namespace, args.slot.text, generation, slot)
        out.result(row, slot_text(row))
        return EXIT_OK

    return asyncio.run(run())


def _requested(args: argparse.Namespace, key: AccountKey) -> Slot:
    if args.delete:
        return Tombstone(0, key.account_id)  # stamped by the node: its clock, this account
    try:
        return Present(json.loads(args.value))
    except json.JSONDecodeError as exc:
        raise UsageError(f"--value is not JSON ({exc.msg} at character {exc.pos}): {args.value[:80]!r}") from None


def cmd_cas(args: argparse.Namespace, out: Output) -> int:
    from engine.kv.store import Stored
    from engine.sync.kv_service import cas_slot_to_wire, check_value

    key = AccountKey.load(args.key)
    args.namespace = None  # a write goes to the account's own namespace
    _checked(args, key)
    slot = _requested(args, key)
    check_value(cas_slot_to_wire(slot))

    async def run() -> int:
        kv = await _open(args, out, key)
        try:
            result, stored = await kv.cas_stored(args.slot.text, args.expect, slot)
        finally:
            await kv.close()
        if isinstance(result, Stored):
            row = slot_json(kv.account, args.slot.text, result.generation, stored) | {"status": "stored"}
            out.result(row, f"stored: {slot_text(row)}")
            return EXIT_OK
        row = slot_json(kv.account, args.slot.text, result.generation, result.slot) | {
            "status": "conflict",
            "expected": args.expect,
        }
        out.result(row, f"conflict: expected gen {args.expect}, the slot is at {slot_text(row)}")
        return EXIT_CONFLICT

    return asyncio.run(run())


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _print_change(out: Output, namespace: str, key: str, generation: int, slot: Slot | None) -> None:
    row = slot_json(namespace, key, generation, slot)
    sys.stdout.write((json.dumps(row, sort_keys=True) if out.as_json else slot_text(row)) + "\n")
    sys.stdout.flush()


async def _generations(kv: RemoteKV, watch: RemoteWatch, namespace: str) -> dict[str, int]:
    """The generation of every slot under the watch's prefix when it started (the first page,
    and the rest listed when that page was cut)."""
    items = watch.initial if not watch.initial_more else await kv.list(watch.prefix, namespace=namespace)
    return {str(item["key"]): int(item["generation"]) for item in items}


async def _follow(
    args: argparse.Namespace,
    out: Output,
    kv: RemoteKV,
    *,
    namespace: str,
    seen: dict[str, int],
    lost: tuple[str, ProtocolError],
) -> RemoteWatch:
    """The watch again, on the node the client moved to once its node (``lost``: its URL and
    the error that ended the watch) went away, waiting up to ``--timeout`` seconds for one,
    after printing each slot that changed there since it was last seen. Raises the error
    when no node took the client in time."""
    client = kv.session.client
    _say(f"lost {lost[0]}; waiting up to {args.timeout:g} s for another of {', '.join(args.url)}")
    deadline = asyncio.get_running_loop().time() + args.timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        try:
            await asyncio.wait_for(client.connected.wait(), max(left, 0.0))
            watch = await kv.watch(args.slot.text, namespace=namespace)
            current = await _generations(kv, watch, namespace)
            for key in sorted(k for k, gen in current.items() if gen > seen.get(k, 0)):
                generation, slot = await kv.get(key, namespace=namespace)
                if generation > seen.get(key, 0):
                    seen[key] = generation
                    _print_change(out, namespace, key, generation, slot)
        except TimeoutError:
            raise lost[1] from None
        except ProtocolError as exc:
            if exc.code not in ("connection_lost", "not_connected"):
                raise
            continue  # that node went away too: wait for the next one
        _say(f"watching {args.slot.text!r} in {namespace} on {client.url} again")
        return watch


def cmd_watch(args: argparse.Namespace, out: Output) -> int:
    key = AccountKey.load(args.key)
    namespace = _checked(args, key)

    async def run() -> int:
        kv = await _open(args, out, key)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        stopping = asyncio.ensure_future(stop.wait())
        try:
            watch = await kv.watch(args.slot.text, namespace=namespace)
            watching = kv.session.url
            seen = await _generations(kv, watch, namespace)
            _say(
                f"watching {args.slot.text!r} in {namespace} on {kv.session.url} "
                f"({len(watch.initial)}{'+' if watch.initial_more else ''} keys now); Ctrl+C stops"
            )
            while not stop.is_set():
                change = asyncio.ensure_future(watch.next())
                await asyncio.wait({change, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not change.done():
                    change.cancel()
                    break
                try:
                    item = change.result()
                except ProtocolError as exc:
                    if exc.code != "connection_lost" or len(args.url) < 2:
                        raise
                    following = asyncio.ensure_future(
                        _follow(args, out, kv, namespace=namespace, seen=seen, lost=(watching, exc))
                    )
                    await asyncio.wait({following, stopping}, return_when=asyncio.FIRST_COMPLETED)
                    if not following.done():
                        following.cancel()
                        break
                    watch, watching = following.result(), kv.session.url
                    continue
                if item.generation > seen.get(item.key, 0):  # not printed on catching up already
                    seen[item.key] = item.generation
                    _print_change(out, item.namespace, item.key, item.generation, item.slot)
        finally:
            stopping.cancel()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await kv.close()
        return EXIT_OK

    return asyncio.run(run())


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    kv = sub.add_parser(
        "kv",
        help="read, CAS and watch a node's CAS slots",
        description="CAS slots of a node (per-account key-value slots with generations). A client reaches "
        "its own account's slots; the node's admins may read others'. Exit codes: 0 ok, 1 failed, 2 usage, "
        f"{EXIT_CONFLICT} cas conflict.",
    )
    actions = kv.add_subparsers(dest="kv_command", metavar="ACTION", required=True)
    commands = (
        ("get", cmd_get, "KEY", "print a slot's generation, state and value"),
        ("cas", cmd_cas, "KEY", f"store a value if the slot is at --expect GEN (exit {EXIT_CONFLICT} if not)"),
        ("watch", cmd_watch, "PREFIX", "print every change under PREFIX until Ctrl+C or SIGTERM"),
    )
    for name, func, what, help_text in commands:
        p = actions.add_parser(name, help=help_text, description=help_text)
        # The client's reconnect warnings are noise for a one-shot command: its failure is
        # the one error it prints (-v shows the engine's activity).
        p.set_defaults(func=func, default_log_level="ERROR")
        p.add_argument(
            "url",
            type=node_urls,
            metavar="URL",
            help="the node, ws://HOST:PORT; or several nodes of one cluster, comma-separated "
            "(ws://A:PORT,ws://B:PORT): the first that answers"
            + (", and another one when it goes away" if name == "watch" else ""),
        )
        p.add_argument("slot", type=SlotName, metavar=what, help="the slot's key" if what == "KEY" else "a key prefix")
        p.add_argument("--key", required=True, type=Path, metavar="KEYFILE", help="the account's key file")
        if name == "cas":
            p.add_argument("--expect", required=True, type=expected_generation, metavar="GEN", help="0: never written")
            value = p.add_mutually_exclusive_group(required=True)
            value.add_argument("--value", metavar="JSON", help="the value to store, as JSON")
            value.add_argument("--delete", action="store_true", help="write a tombstone instead of a value")
        else:
            p.add_argument(
                "--namespace", type=account_id, metavar="ACCOUNT", help="another account's slots (node admins only)"
            )
        p.add_argument("--timeout", type=float, default=KV_CLI_TIMEOUT, help="seconds to connect and per request")
        add_json_flag(p)

"""``kintsugi account``: create an account key file, or show the AccountID of one."""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.cli.output import EXIT_OK, Output, add_json_flag
from engine.crypto import AccountKey


def cmd_account_new(args: argparse.Namespace, out: Output) -> int:
    key = AccountKey.generate()
    key.save(args.out)
    out.result(
        {"account": key.account_id, "key_file": str(args.out)},
        f"created account {key.account_id}\nkey written to {args.out} (mode 0600; keep it secret)",
    )
    return EXIT_OK


def cmd_account_show(args: argparse.Namespace, out: Output) -> int:
    key = AccountKey.load(args.key)
    out.result({"account": key.account_id}, key.account_id)
    return EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    account = sub.add_parser("account", help="create or show account keys", description="Account keys (Ed25519).")
    account_sub = account.add_subparsers(dest="account_command", metavar="ACTION", required=True)
    p = account_sub.add_parser("new", help="create a new account key file (mode 0600)")
    p.set_defaults(func=cmd_account_new)
    p.add_argument("--out", required=True, type=Path, help="key file to create; an existing file is never overwritten")
    add_json_flag(p)
    p = account_sub.add_parser("show", help="print the AccountID of a key file")
    p.set_defaults(func=cmd_account_show)
    p.add_argument("--key", required=True, type=Path, help="key file")
    add_json_flag(p)

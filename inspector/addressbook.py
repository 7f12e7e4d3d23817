"""The operator's address book: readable names for accounts.

The engine carries no profile for an account (an :data:`~engine.ids.AccountID` is a public
key; only CoValues have names, in their header's meta), so the inspector keeps a local one:
a JSON file beside the inspector's settings (``address-book.json`` in its config folder),
which the operator edits in File → Address book… (:mod:`inspector.views.addressbook`) or by
hand::

    {"version": 1, "accounts": {"acc_z…": "Alice (laptop)", ...}}

Views show ``name (acc_z63vu…)`` where a name is known (:meth:`AddressBook.label`). A file
that cannot be read or is not an address book raises :class:`AddressBookError` (code
``invalid_address_book``) with what is wrong; the inspector then starts with an empty book
and says so, and never overwrites the file unless the operator saves.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from engine.errors import InvalidInput

__all__ = ["FILE_NAME", "MAX_NAME_LENGTH", "VERSION", "AddressBook", "AddressBookError"]

#: The address book's file name, in the inspector's config folder.
FILE_NAME = "address-book.json"
#: The file format's version; a file of another version is refused, not guessed at.
VERSION = 1
#: Longest name kept, in characters (longer ones are refused: a name is a label, not a note).
MAX_NAME_LENGTH = 80
#: What an account id starts with (the full form is checked by the engine when it matters).
ACCOUNT_PREFIX = "acc_z"


class AddressBookError(InvalidInput):
    code = "invalid_address_book"


def check_entry(account: str, name: str) -> tuple[str, str]:
    """``(account, name)`` stripped; raises :class:`AddressBookError` for an account that is
    not an account id, an empty name or one longer than :data:`MAX_NAME_LENGTH`."""
    account, name = account.strip(), " ".join(name.split())
    if not account.startswith(ACCOUNT_PREFIX) or len(account) < len(ACCOUNT_PREFIX) + 8:
        raise AddressBookError(f"{account!r} is not an account id (acc_z…)")
    if not name:
        raise AddressBookError(f"the name of {account} is empty")
    if len(name) > MAX_NAME_LENGTH:
        raise AddressBookError(f"the name of {account} is longer than {MAX_NAME_LENGTH} characters")
    return account, name


class AddressBook:
    """Names by account id. ``path``: where it is saved (None: kept in memory only).
    ``on_change`` callables run after every change (the views redraw their labels)."""

    def __init__(self, path: Path | None = None, names: dict[str, str] | None = None) -> None:
        self.path = path
        self._names: dict[str, str] = dict(names or {})
        self.on_change: list[Callable[[], None]] = []

    @classmethod
    def load(cls, path: Path) -> AddressBook:
        """The book saved at ``path`` (empty when there is no file). Raises
        :class:`AddressBookError` when the file is unreadable or not an address book."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls(path)
        except (OSError, UnicodeDecodeError) as exc:
            raise AddressBookError(f"{path} cannot be read: {exc}") from None
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise AddressBookError(f"{path} is not JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("version") != VERSION or not isinstance(data.get("accounts"), dict):
            raise AddressBookError(f"{path} is not a version {VERSION} address book")
        names = {}
        for account, name in data["accounts"].items():
            if not isinstance(name, str):
                raise AddressBookError(f"{path}: the name of {account} is not text")
            key, text = check_entry(str(account), name)
            names[key] = text
        return cls(path, names)

    def save(self) -> None:
        """Write the book to its file atomically (nothing for a book in memory). Raises
        :class:`OSError` when the folder cannot be written."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        data = {"version": VERSION, "accounts": dict(sorted(self._names.items()))}
        temporary.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(temporary, self.path)

    def names(self) -> dict[str, str]:
        return dict(self._names)

    def name(self, account: str) -> str | None:
        """The operator's name for ``account`` (None: not in the book)."""
        return self._names.get(account)

    def label(self, account: str) -> str:
        """``Alice (acc_z63vu…)`` for a known account, the shortened id otherwise."""
        short = f"{account[:10]}…" if len(account) > 14 else account
        name = self._names.get(account)
        return f"{name} ({short})" if name else short

    def replace(self, names: dict[str, str]) -> None:
        """Make ``names`` the whole book (checked as :func:`check_entry`) and tell the
        listeners; raises :class:`AddressBookError` and changes nothing on a bad entry."""
        checked = dict(check_entry(account, name) for account, name in names.items())
        self._names = checked
        for callback in list(self.on_change):
            callback()

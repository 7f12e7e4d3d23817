"""Custom item data roles shared by models, delegates, proxies and tests."""

from __future__ import annotations

from enum import IntEnum

from PySide6.QtCore import Qt

_BASE = int(Qt.ItemDataRole.UserRole)


class Role(IntEnum):
    #: CoValueID of a navigator row; SessionID of a lane
    ID = _BASE + 1
    #: frozenset of :class:`engine.diagnostics.covalue_summary.Badge`
    BADGES = _BASE + 2
    #: the display name searched by the navigator filter
    NAME = _BASE + 3
    #: :class:`engine.ids.SessionKind` of a lane
    KIND = _BASE + 4
    #: :class:`engine.diagnostics.chain_verify.RowState` of a chain row
    STATE = _BASE + 5
    #: True on a chain row that ends a checkpoint
    CHECKPOINT = _BASE + 6
    #: the raw value behind a display string (madeAt ms, generation, ...)
    RAW = _BASE + 7
    #: KV namespace / key of a slot row or tree item
    NAMESPACE = _BASE + 8
    KEY = _BASE + 9
    #: verification summary text of a lane
    VERIFICATION = _BASE + 10
    #: first broken link (row index) of a lane, or None
    BREAK = _BASE + 11
    #: transactions of a lane
    COUNT = _BASE + 12

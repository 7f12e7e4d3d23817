"""Helpers for batched model updates: one begin/end pair per run of rows, not per row."""

from __future__ import annotations

from collections.abc import Iterable

from PySide6.QtCore import QModelIndex, QPersistentModelIndex

__all__ = ["Index", "runs"]

#: What Qt passes as a model index.
Index = QModelIndex | QPersistentModelIndex


def runs(rows: Iterable[int]) -> list[tuple[int, int]]:
    """Rows as sorted, inclusive ``(first, last)`` runs of consecutive numbers."""
    out: list[tuple[int, int]] = []
    for row in sorted(set(rows)):
        if out and row == out[-1][1] + 1:
            out[-1] = (out[-1][0], row)
        else:
            out.append((row, row))
    return out

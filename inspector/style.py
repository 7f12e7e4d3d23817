"""Colours, glyphs, icons and text formats shared by models and views.

One place decides how a conflict session or a broken link looks, so every view agrees.
The colours below are for a light palette; on a dark one (a dark desktop theme) views take
them through :func:`on_palette` (row backgrounds), :func:`foreground` (coloured text and
marks) and :func:`banner_style`, which keep the WCAG contrast of 4.5 between text and what
is behind it; :func:`adapt_views` gives a window's plain item views a
:class:`PaletteDelegate` that does it for the colours the models return.
Icons are drawn in code (no resource files) and kept in Qt's own :class:`QPixmapCache`,
which Qt owns and frees with the application: no Qt object outlives it in a module global.
"""

from __future__ import annotations

import json
import time
from typing import Any

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QFont, QIcon, QPainter, QPalette, QPixmap, QPixmapCache
from PySide6.QtWidgets import QAbstractItemView, QStyledItemDelegate, QStyleOptionViewItem, QWidget

from engine.diagnostics.covalue_summary import Badge
from engine.errors import KintsugiError
from engine.ids import SessionKind, parse_session_id

__all__ = [
    "BADGE_COLORS",
    "BADGE_LABELS",
    "KIND_COLORS",
    "KIND_GLYPHS",
    "KIND_LABELS",
    "badge_icon",
    "PaletteDelegate",
    "adapt_views",
    "banner_style",
    "blend",
    "chip_text",
    "contrast_ratio",
    "foreground",
    "is_dark",
    "on_palette",
    "format_ms",
    "format_ms_short",
    "format_value",
    "glyph_icon",
    "kind_icon",
    "short_id",
]

KIND_COLORS = {
    SessionKind.ACTIVE: "#2f6fb3",
    SessionKind.CONFLICT: "#d9822b",
    SessionKind.DELETE: "#a93226",
}
KIND_GLYPHS = {SessionKind.ACTIVE: "●", SessionKind.CONFLICT: "!", SessionKind.DELETE: "$"}
KIND_LABELS = {SessionKind.ACTIVE: "active", SessionKind.CONFLICT: "conflict", SessionKind.DELETE: "delete"}

BADGE_COLORS = {
    Badge.DELETED: "#7b7d7d",
    Badge.CONFLICT_SESSION: "#d9822b",
    Badge.CORRUPT: "#c0392b",
    Badge.INVALID_TRANSACTIONS: "#8e44ad",
    Badge.FORKED: "#e67e22",
}
BADGE_LABELS = {
    Badge.DELETED: "deleted",
    Badge.CONFLICT_SESSION: "conflict",
    Badge.CORRUPT: "corrupt",
    Badge.INVALID_TRANSACTIONS: "invalid tx",
    Badge.FORKED: "forked",
}
BADGE_HELP = {
    Badge.DELETED: "deleted: a valid delete marker tombstoned it",
    Badge.CONFLICT_SESSION: "conflict session: divergent edits kept aside by a recovery",
    Badge.CORRUPT: "corrupt: a stored chain does not verify",
    Badge.INVALID_TRANSACTIONS: "invalid transactions: signed but not allowed by the rules, left out of content",
    Badge.FORKED: "forked: a fork was detected and is not repaired yet (reported by a peer)",
}
#: Order badges are drawn in (most severe first).
BADGE_ORDER = (Badge.CORRUPT, Badge.FORKED, Badge.CONFLICT_SESSION, Badge.INVALID_TRANSACTIONS, Badge.DELETED)

BROKEN_BACKGROUND = "#f9d0cc"
UNVERIFIABLE_BACKGROUND = "#eeeeee"
INVALID_BACKGROUND = "#f6e7fb"
LOST_BACKGROUND = "#fdebd3"
LAGGED_BACKGROUND = "#f9d0cc"
FORK_BACKGROUND = "#fde3c8"
#: Compare view rows: light tints of the Okabe–Ito blue, orange and reddish purple, which stay
#: apart for the common colour-blindnesses (and the rows also carry a kind mark and tooltip).
ONLY_LEFT_BACKGROUND = "#d5e8f6"
ONLY_RIGHT_BACKGROUND = "#fce6c6"
DIFFERENT_BACKGROUND = "#f3dcea"
COMPARE_FOLD_BACKGROUND = "#eeeeee"
#: Marks the fork point in the chain and compare views (U+22D4 PITCHFORK: in DejaVu Sans,
#: unlike U+2442, which most Linux desktops cannot draw).
FORK_MARK = "⋔"
#: Row kinds of the compare view (keys: :class:`engine.diagnostics.compare.RowKind` values).
COMPARE_COLORS = {
    "only_left": ONLY_LEFT_BACKGROUND,
    "only_right": ONLY_RIGHT_BACKGROUND,
    "different": DIFFERENT_BACKGROUND,
}
COMPARE_LABELS = {
    "common": "common: the same transaction on both sides",
    "different": "different: both sides hold a transaction here, and their chains differ",
    "only_left": "only left: the right side has no transaction here",
    "only_right": "only right: the left side has no transaction here",
}
MUTED = "#8a8a8a"
OK_GREEN = "#1e8449"


def glyph_icon(glyph: str, color: str, size: int = 16, *, outline: bool = False) -> QIcon:
    """A filled (or outlined) rounded square with a white glyph, cached by Qt."""
    key = f"kintsugi:{glyph}:{color}:{size}:{outline}"
    pixmap = QPixmap()
    if not QPixmapCache.find(key, pixmap):
        pixmap = QPixmap(size, size)
        pixmap.fill(Qt.GlobalColor.transparent)
        painter = QPainter(pixmap)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect = QRectF(0.5, 0.5, size - 1, size - 1)
        painter.setPen(QColor(color))
        painter.setBrush(Qt.BrushStyle.NoBrush if outline else QColor(color))
        painter.drawRoundedRect(rect, 3, 3)
        font = QFont()
        font.setBold(True)
        font.setPixelSize(int(size * 0.7))
        painter.setFont(font)
        painter.setPen(QColor(color) if outline else QColor("white"))
        painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, glyph)
        painter.end()
        QPixmapCache.insert(key, pixmap)
    return QIcon(pixmap)


def kind_icon(kind: SessionKind, *, corrupt: bool = False) -> QIcon:
    if corrupt:
        return glyph_icon("✗", BADGE_COLORS[Badge.CORRUPT])
    return glyph_icon(KIND_GLYPHS[kind], KIND_COLORS[kind])


def badge_icon(badge: Badge) -> QIcon:
    glyphs = {
        Badge.DELETED: "$",
        Badge.CONFLICT_SESSION: "!",
        Badge.CORRUPT: "✗",
        Badge.INVALID_TRANSACTIONS: "⊘",
        Badge.FORKED: "⑂",
    }
    return glyph_icon(glyphs[badge], BADGE_COLORS[badge])


def type_icon(kind: str) -> QIcon:
    """``G`` for groups, ``M`` for CoMaps."""
    return glyph_icon("G", "#5d6d7e") if kind == "group" else glyph_icon("M", "#117a65")


def format_ms(ms: int | None) -> str:
    """``2026-11-03 14:02:11.123`` in local time ('' for None)."""
    if ms is None:
        return ""
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds)) + f".{millis:03d}"


def format_ms_short(ms: int | None) -> str:
    """``14:02:11.123`` in local time ('' for None)."""
    if ms is None:
        return ""
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%H:%M:%S", time.localtime(seconds)) + f".{millis:03d}"


def format_value(value: Any, limit: int = 200) -> str:
    """A value as compact JSON (bytes as their size), cut at ``limit`` characters."""
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=repr)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def short_id(text: str, head: int = 10, tail: int = 4) -> str:
    """``co_z4TtHSH…Q5Q``: long ids cut in the middle (the full id goes in tooltips)."""
    if len(text) <= head + tail + 1:
        return text
    return f"{text[:head]}…{text[-tail:]}"


def short_session(session: str) -> str:
    """``acc_z63vu…/z2xXM3…!``: account and session parts shortened, kind suffix kept."""
    try:
        parsed = parse_session_id(session)
    except KintsugiError:
        return short_id(session)
    account, _sep, rest = parsed.base.partition("_session_")
    if parsed.kind is SessionKind.DELETE:
        rest = session.partition("_session_")[2]
        return f"{account[:9]}…/{rest[:6]}…$"
    return f"{account[:9]}…/{rest[:6]}…{session[len(parsed.base) :]}"


# -- colours that follow the palette (a dark theme stays readable) ---------------------------

#: Accents of the banners: warning (a stale view, version skew), error, info (a snapshot).
BANNER_ACCENTS = {"warning": "#d9822b", "error": "#c0392b", "info": "#2f6fb3"}
#: How much of a tint's hue goes into the palette's base colour for a row background.
TINT_AMOUNT = 0.28


def blend(base: QColor, accent: QColor, amount: float) -> QColor:
    """``base`` moved ``amount`` (0–1) of the way towards ``accent``."""
    return QColor.fromRgbF(
        base.redF() + (accent.redF() - base.redF()) * amount,
        base.greenF() + (accent.greenF() - base.greenF()) * amount,
        base.blueF() + (accent.blueF() - base.blueF()) * amount,
    )


def _luminance(color: QColor) -> float:
    def channel(c: float) -> float:
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    return 0.2126 * channel(color.redF()) + 0.7152 * channel(color.greenF()) + 0.0722 * channel(color.blueF())


def contrast_ratio(a: QColor, b: QColor) -> float:
    """The WCAG contrast ratio of two colours (1 to 21; 4.5 is readable body text)."""
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def on_palette(tint: str, palette: QPalette | None = None) -> QColor:
    """A row background for ``tint`` (one of the light ``*_BACKGROUND`` colours above) that
    keeps the palette's text readable: the tint itself on a light palette, and the palette's
    base moved :data:`TINT_AMOUNT` towards the tint's hue on a dark one."""
    palette = palette or QPalette()
    base = palette.color(QPalette.ColorRole.Base)
    if base.lightness() >= 128:
        return QColor(tint)
    hue = QColor(tint)
    saturated = QColor.fromHsv(hue.hsvHue() if hue.hsvHue() >= 0 else 0, 200 if hue.hsvSaturation() > 0 else 0, 230)
    return blend(base, saturated, TINT_AMOUNT)


def foreground(color: str, palette: QPalette | None = None, behind: QColor | None = None) -> QColor:
    """A coloured text or mark (``KIND_COLORS``, ``BADGE_COLORS``, ``MUTED``) that stays
    readable on ``behind`` (default: the palette's base): moved towards white on a dark
    background, towards black on a light one, until the contrast is 4.5."""
    palette = palette or QPalette()
    base = behind if behind is not None else palette.color(QPalette.ColorRole.Base)
    out = QColor(color)
    white = QColor("white")
    for step in range(11):
        candidate = blend(QColor(color), white if base.lightness() < 128 else QColor("black"), step / 10)
        out = candidate
        if contrast_ratio(candidate, base) >= 4.5:
            break
    return out


def banner_style(palette: QPalette, kind: str) -> tuple[QColor, QColor]:
    """Background and border of a banner of ``kind`` (``BANNER_ACCENTS``): the palette's
    window colour tinted towards the accent, so the palette's text stays readable on it."""
    accent = QColor(BANNER_ACCENTS[kind])
    window = palette.color(QPalette.ColorRole.Window)
    return blend(window, accent, 0.22 if window.lightness() >= 128 else 0.3), accent


def is_dark(palette: QPalette | None = None) -> bool:
    """True for a palette whose base (behind item text) is dark."""
    return (palette or QPalette()).color(QPalette.ColorRole.Base).lightness() < 128


def chip_text(fill: QColor) -> QColor:
    """White or black, whichever reads better on ``fill`` (a badge chip's text)."""
    white, black = QColor("white"), QColor("black")
    return white if contrast_ratio(white, fill) >= contrast_ratio(black, fill) else black


class PaletteDelegate(QStyledItemDelegate):
    """A plain delegate that passes the models' light-palette colours through
    :func:`on_palette` and :func:`foreground`, for a view on a dark palette."""

    def initStyleOption(self, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex) -> None:
        super().initStyleOption(option, index)
        palette = QPalette(option.palette)
        background = index.data(Qt.ItemDataRole.BackgroundRole)
        behind: QColor | None = None
        if isinstance(background, QColor | QBrush):
            color = background.color() if isinstance(background, QBrush) else background
            behind = on_palette(color.name(), palette)
            option.backgroundBrush = QBrush(behind)
        text = index.data(Qt.ItemDataRole.ForegroundRole)
        if isinstance(text, QColor | QBrush):
            color = text.color() if isinstance(text, QBrush) else text
            palette.setColor(QPalette.ColorRole.Text, foreground(color.name(), palette, behind))
            option.palette = palette


def adapt_views(root: QWidget) -> int:
    """On a dark palette, give every item view under ``root`` that has Qt's plain delegate a
    :class:`PaletteDelegate` (views with their own delegates draw with these functions
    themselves). Nothing on a light palette: the colours are made for it, and a Python
    delegate costs paint time. Returns how many views it changed."""
    if not is_dark(root.palette()):
        return 0
    changed = 0
    for view in root.findChildren(QAbstractItemView):
        if type(view.itemDelegate()) is QStyledItemDelegate:
            view.setItemDelegate(PaletteDelegate(view))
            changed += 1
    return changed

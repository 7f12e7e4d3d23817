"""The navigator: CoValues with badges (filter by badge, search by id or name) and the KV
namespaces with their keys.

Emits ``covalueSelected(str)`` when the current CoValue row changes,
``slotSelected(str, str)`` (namespace, key) when a key is chosen in the KV tree, and
``recoverRequested(str)`` (CoValue id) from a CoValue's context menu (Recover…).

CoValues that share a name are told apart by a short suffix of their id (:class:`NameDelegate`).
"""

from __future__ import annotations

from collections import Counter

from PySide6.QtCore import QModelIndex, QObject, QPersistentModelIndex, QPoint, QRect, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFontMetrics, QPainter
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMenu,
    QSplitter,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTreeView,
    QVBoxLayout,
    QWidget,
)

from engine.diagnostics.covalue_summary import Badge
from inspector.models.batch import Index
from inspector.models.covalues import CoValueFilterModel, CoValueListModel
from inspector.models.kv import KvTreeModel
from inspector.models.roles import Role
from inspector.style import BADGE_COLORS, BADGE_LABELS, BADGE_ORDER, PaletteDelegate, chip_text

__all__ = ["BadgeDelegate", "NavigatorView"]

FILTERS: tuple[tuple[str, Badge | None], ...] = (
    ("All CoValues", None),
    ("Conflict sessions", Badge.CONFLICT_SESSION),
    ("Deleted", Badge.DELETED),
    ("Corrupt", Badge.CORRUPT),
    ("Invalid transactions", Badge.INVALID_TRANSACTIONS),
    ("Forked", Badge.FORKED),
)


class BadgeDelegate(QStyledItemDelegate):
    """Paints a row's badges (``Role.BADGES``) as coloured chips."""

    PAD = 4
    GAP = 3

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: Index) -> None:
        opt = QStyleOptionViewItem(option)
        self.initStyleOption(opt, index)
        opt.text = ""  # the chips replace the text
        widget = opt.widget
        style = widget.style() if widget is not None else None
        if style is not None:
            style.drawControl(QStyle.ControlElement.CE_ItemViewItem, opt, painter, widget)
        badges = index.data(Role.BADGES) or frozenset()
        metrics = QFontMetrics(opt.font)
        x = opt.rect.x() + self.PAD
        height = metrics.height() + 2
        y = opt.rect.y() + (opt.rect.height() - height) // 2
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        for badge in BADGE_ORDER:
            if badge not in badges:
                continue
            label = BADGE_LABELS[badge]
            width = metrics.horizontalAdvance(label) + 2 * self.PAD
            chip = QRect(x, y, width, height)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(QColor(BADGE_COLORS[badge]))
            painter.drawRoundedRect(chip, 4, 4)
            painter.setPen(chip_text(QColor(BADGE_COLORS[badge])))
            painter.drawText(chip, Qt.AlignmentFlag.AlignCenter, label)
            x += width + self.GAP
        painter.restore()

    def sizeHint(self, option: QStyleOptionViewItem, index: Index) -> QSize:
        badges = index.data(Role.BADGES) or frozenset()
        metrics = QFontMetrics(option.font)
        width = sum(metrics.horizontalAdvance(BADGE_LABELS[b]) + 2 * self.PAD + self.GAP for b in badges)
        return QSize(max(width + self.PAD, 40), metrics.height() + 6)


class NameDelegate(PaletteDelegate):
    """The name column: a name that several CoValues share gets a short suffix of the id
    (``notes · …x4Q5Q``), so same-named CoValues are told apart. The shared names are
    counted once per change of the list, on the next paint."""

    SUFFIX = 5

    def __init__(self, covalues: CoValueFilterModel, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.covalues = covalues
        self._shared: set[str] | None = None
        source = covalues.sourceModel()
        for signal in (source.modelReset, source.rowsInserted, source.rowsRemoved, source.dataChanged):
            signal.connect(self._forget)

    def _forget(self, *_args: object) -> None:
        self._shared = None

    def shared(self) -> set[str]:
        if self._shared is None:
            source = self.covalues.sourceModel()
            counts = Counter(
                source.index(row, CoValueListModel.NAME).data(Role.NAME) or "" for row in range(source.rowCount())
            )
            self._shared = {name for name, n in counts.items() if n > 1 and name}
        return self._shared

    def initStyleOption(self, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex) -> None:
        super().initStyleOption(option, index)
        name = index.data(Role.NAME)
        if name and name in self.shared():
            option.text = f"{option.text} · …{str(index.data(Role.ID))[-self.SUFFIX :]}"


class NavigatorView(QWidget):
    covalueSelected = Signal(str)
    slotSelected = Signal(str, str)
    recoverRequested = Signal(str)

    def __init__(self, covalues: CoValueFilterModel, kv: KvTreeModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.covalues = covalues
        self.kv = kv

        self.badge_filter = QComboBox()
        self.badge_filter.setObjectName("badgeFilter")
        for label, badge in FILTERS:
            self.badge_filter.addItem(label, badge)
        self.badge_filter.currentIndexChanged.connect(self._badge_chosen)
        self.search = QLineEdit()
        self.search.setObjectName("search")
        self.search.setPlaceholderText("Search id or name")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(covalues.set_search)

        self.list = QTreeView()
        self.list.setObjectName("covalues")
        self.list.setModel(covalues)
        self.list.setRootIsDecorated(False)
        self.list.setUniformRowHeights(True)
        self.list.setAlternatingRowColors(True)
        self.list.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.list.setItemDelegateForColumn(CoValueListModel.BADGES, BadgeDelegate(self.list))
        self.names = NameDelegate(covalues, self.list)
        self.list.setItemDelegateForColumn(CoValueListModel.NAME, self.names)
        header = self.list.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(CoValueListModel.NAME, QHeaderView.ResizeMode.Stretch)
        widths = {CoValueListModel.TYPE: 58, CoValueListModel.BADGES: 150, CoValueListModel.TRANSACTIONS: 74}
        for column, width in widths.items():
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.Interactive)
            header.resizeSection(column, width)
        header.setSectionHidden(CoValueListModel.ID, True)
        self.list.selectionModel().currentRowChanged.connect(self._current_changed)
        self.list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.list.customContextMenuRequested.connect(self._show_menu)
        self.count = QLabel()
        self.count.setObjectName("covalueCount")
        for signal in (covalues.rowsInserted, covalues.rowsRemoved, covalues.modelReset, covalues.layoutChanged):
            signal.connect(self._update_count)

        self.tree = QTreeView()
        self.tree.setObjectName("kvTree")
        self.tree.setModel(kv)
        self.tree.setUniformRowHeights(True)
        self.tree.selectionModel().currentChanged.connect(self._slot_changed)
        kv.modelReset.connect(self.tree.expandAll)

        top = QWidget()
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        filters = QHBoxLayout()
        filters.addWidget(self.badge_filter)
        filters.addWidget(self.search, 1)
        top_layout.addLayout(filters)
        top_layout.addWidget(self.list, 1)
        top_layout.addWidget(self.count)
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.setObjectName("navigatorSplitter")  # its sizes are saved with the window's layout
        splitter.addWidget(top)
        splitter.addWidget(self.tree)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(splitter)
        self._update_count()

    def _badge_chosen(self, _row: int) -> None:
        data = self.badge_filter.currentData()  # comes back from Qt as plain text
        self.covalues.set_badge(Badge(data) if data else None)

    def set_badge_filter(self, badge: Badge | None) -> None:
        self.badge_filter.setCurrentIndex(next(i for i, (_l, b) in enumerate(FILTERS) if b == badge))

    def _update_count(self) -> None:
        shown = self.covalues.rowCount()
        total = self.covalues.sourceModel().rowCount()
        self.count.setText(f"{shown} of {total} CoValues" if shown != total else f"{total} CoValues")

    def _current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        if current.isValid():
            self.covalueSelected.emit(str(current.data(Role.ID)))

    def context_menu(self, covalue: str) -> QMenu:
        """The context menu of ``covalue``'s row: Recover… (emits ``recoverRequested``)."""
        menu = QMenu(self.list)
        menu.setObjectName("covalueMenu")
        action = menu.addAction("Recover…")
        action.setObjectName("recoverCovalue")
        action.setToolTip("Replace this CoValue (or its group) with a chosen peer's copy, after a plan")
        action.triggered.connect(lambda: self.recoverRequested.emit(covalue))
        return menu

    def _show_menu(self, where: QPoint) -> None:
        index = self.list.indexAt(where)
        if not index.isValid():
            return
        menu = self.context_menu(str(index.data(Role.ID)))
        menu.aboutToHide.connect(menu.deleteLater)
        menu.popup(self.list.viewport().mapToGlobal(where))

    def _slot_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        key = current.data(Role.KEY) if current.isValid() else None
        if key is not None:
            self.slotSelected.emit(str(current.data(Role.NAMESPACE)), str(key))

    def select_covalue(self, covalue: str) -> bool:
        """Make ``covalue`` the current row (if the filter shows it); True if it is."""
        for row in range(self.covalues.rowCount()):
            index = self.covalues.index(row, 0)
            if index.data(Role.ID) == covalue:
                self.list.setCurrentIndex(index)
                self.list.scrollTo(index)
                return True
        return False

"""File → Address book…: the operator names accounts (see :mod:`inspector.addressbook`).

A table of account id and name, with Add (an empty row, or the accounts of the selected
CoValue's sessions not named yet) and Remove; Save checks every row, replaces the book and
writes its file, and a row that is not an account id or has no name is named in the dialog
(nothing is saved then). Emits ``saved()`` after a save.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from inspector.addressbook import AddressBook, AddressBookError

__all__ = ["AddressBookDialog"]

ACCOUNT, NAME = range(2)


class AddressBookDialog(QDialog):
    saved = Signal()

    def __init__(self, book: AddressBook, suggested: list[str] | None = None, parent: QWidget | None = None) -> None:
        """``suggested``: accounts the operator is looking at, offered by "Add shown accounts"."""
        super().__init__(parent)
        self.book = book
        self.suggested = list(suggested or [])
        self.setObjectName("addressBookDialog")
        self.setWindowTitle("Address book")
        intro = QLabel(
            "Names for accounts, shown next to their ids in the session lanes. They stay on this "
            f"computer{f' in {book.path}' if book.path is not None else ''}."
        )
        intro.setWordWrap(True)
        self.table = QTableWidget(0, 2)
        self.table.setObjectName("addressBookTable")
        self.table.setHorizontalHeaderLabels(["Account", "Name"])
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.horizontalHeader().setSectionResizeMode(ACCOUNT, QHeaderView.ResizeMode.Stretch)
        self.table.horizontalHeader().setSectionResizeMode(NAME, QHeaderView.ResizeMode.Stretch)
        for account, name in sorted(book.names().items(), key=lambda item: item[1].lower()):
            self.add_row(account, name)
        self.error = QLabel()
        self.error.setObjectName("addressBookError")
        self.error.setWordWrap(True)
        self.error.hide()
        add = QPushButton("Add")
        add.setObjectName("addressBookAdd")
        add.clicked.connect(self._add_empty)
        self.add_shown = QPushButton("Add shown accounts")
        self.add_shown.setObjectName("addressBookAddShown")
        self.add_shown.setToolTip("The owners of the selected CoValue's sessions that have no name yet")
        self.add_shown.clicked.connect(self._add_suggested)
        self.add_shown.setEnabled(bool(self._unnamed_suggestions()))
        remove = QPushButton("Remove")
        remove.setObjectName("addressBookRemove")
        remove.clicked.connect(self._remove_selected)
        buttons = QHBoxLayout()
        for button in (add, self.add_shown, remove):
            buttons.addWidget(button)
        buttons.addStretch(1)
        box = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        box.accepted.connect(self.save)
        box.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(self.table, 1)
        layout.addLayout(buttons)
        layout.addWidget(self.error)
        layout.addWidget(box)
        self.resize(640, 360)

    def add_row(self, account: str = "", name: str = "") -> int:
        row = self.table.rowCount()
        self.table.insertRow(row)
        self.table.setItem(row, ACCOUNT, QTableWidgetItem(account))
        self.table.setItem(row, NAME, QTableWidgetItem(name))
        return row

    def _add_empty(self) -> None:
        self.table.setCurrentCell(self.add_row(), ACCOUNT)

    def _accounts(self) -> set[str]:
        return {self._text(row, ACCOUNT) for row in range(self.table.rowCount())}

    def _unnamed_suggestions(self) -> list[str]:
        listed = self._accounts()
        return [a for a in dict.fromkeys(self.suggested) if a not in listed]

    def _add_suggested(self) -> None:
        for account in self._unnamed_suggestions():
            self.add_row(account)
        self.add_shown.setEnabled(False)

    def _remove_selected(self) -> None:
        for row in sorted({i.row() for i in self.table.selectedIndexes()}, reverse=True):
            self.table.removeRow(row)

    def _text(self, row: int, column: int) -> str:
        item = self.table.item(row, column)
        return item.text().strip() if item is not None else ""

    def save(self) -> bool:
        """Check the rows, replace the book, write it; True when saved (the dialog closes).
        Empty rows are dropped; a bad row or a file that cannot be written is shown."""
        names: dict[str, str] = {}
        for row in range(self.table.rowCount()):
            account, name = self._text(row, ACCOUNT), self._text(row, NAME)
            if account or name:
                names[account] = name
        try:
            self.book.replace(names)
            self.book.save()
        except AddressBookError as exc:
            return self._fail(f"Not saved ({exc.code}): {exc.detail}")
        except OSError as exc:
            return self._fail(f"Not saved: {exc.strerror or exc} ({self.book.path})")
        self.saved.emit()
        self.accept()
        return True

    def _fail(self, message: str) -> bool:
        self.error.setText(message)
        self.error.show()
        return False

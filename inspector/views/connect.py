"""The connect dialog: the embedded demo, a store file or directory, a diagnostic bundle
(a path ending in ``.zip`` is opened as a bundle, as ``kintsugi-inspector FILE.zip`` does), or
a node URL with a key file; recently opened targets one click away.

The dialog only checks that the fields are filled in sensibly; opening is the controller's
job, and its failures (no store there, schema too new, unreadable key file, connection
refused, account not accepted, another protocol version, no answer in time) are shown in the
main window. Emits ``chosen(TargetSpec)`` when accepted.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from engine.errors import UsageError
from engine.storage.opener import is_postgres_location
from inspector.recent import RecentTargets
from inspector.targets.base import TargetSpec

__all__ = ["ConnectDialog"]

#: Where a recent item keeps its spec (as JSON).
SPEC_ROLE = int(Qt.ItemDataRole.UserRole) + 50


class ConnectDialog(QDialog):
    chosen = Signal(object)

    def __init__(self, recent: RecentTargets | None, current: TargetSpec | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Connect — Kintsugi inspector")
        self.setObjectName("connectDialog")
        self.recent = recent

        self.demo = QRadioButton("Embedded demo (a live in-process node with the demo's clients)")
        self.store = QRadioButton("Store file or directory, or a diagnostic bundle .zip (opened read-only)")
        self.node = QRadioButton("Node URL with your account key (admins see everything)")
        self.kinds = QButtonGroup(self)
        for button in (self.demo, self.store, self.node):
            self.kinds.addButton(button)
            button.toggled.connect(self._update_enabled)

        self.store_path = QLineEdit()
        self.store_path.setObjectName("storePath")
        self.store_path.setPlaceholderText("~/.local/share/kintsugi/demo")
        browse_file = QPushButton("File…")
        browse_file.clicked.connect(self._browse_file)
        browse_dir = QPushButton("Directory…")
        browse_dir.clicked.connect(self._browse_dir)
        self.url = QLineEdit()
        self.url.setObjectName("nodeUrl")
        self.url.setPlaceholderText("ws://localhost:4242")
        self.key_file = QLineEdit()
        self.key_file.setObjectName("keyFile")
        self.key_file.setPlaceholderText("me.key (kintsugi account new --out me.key)")
        browse_key = QPushButton("Key file…")
        browse_key.clicked.connect(self._browse_key)
        self.error = QLabel()
        self.error.setObjectName("connectError")
        self.error.setStyleSheet("color: #c0392b;")
        self.error.setWordWrap(True)
        self.recent_list = QListWidget()
        self.recent_list.setObjectName("recentTargets")
        self.recent_list.itemClicked.connect(self._recent_clicked)
        self.recent_list.itemDoubleClicked.connect(self._recent_activated)
        for spec in recent.list() if recent is not None else []:
            item = QListWidgetItem(f"{spec.kind}: {spec.label}")
            item.setData(SPEC_ROLE, spec.to_json())
            self.recent_list.addItem(item)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Open | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)

        store_row = QHBoxLayout()
        store_row.addWidget(self.store_path, 1)
        store_row.addWidget(browse_file)
        store_row.addWidget(browse_dir)
        key_row = QHBoxLayout()
        key_row.addWidget(self.key_file, 1)
        key_row.addWidget(browse_key)
        form = QFormLayout()
        form.addRow(self.demo)
        form.addRow(self.store)
        form.addRow("Path", store_row)
        form.addRow(self.node)
        form.addRow("URL", self.url)
        form.addRow("Key file", key_row)
        recent_box = QGroupBox("Recent")
        recent_layout = QVBoxLayout(recent_box)
        recent_layout.addWidget(self.recent_list)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(recent_box, 1)
        layout.addWidget(self.error)
        layout.addWidget(self.buttons)
        self.resize(640, 460)
        self.set_spec(current or TargetSpec("demo"))

    def set_spec(self, spec: TargetSpec) -> None:
        {"demo": self.demo, "store": self.store, "bundle": self.store, "node": self.node}[spec.kind].setChecked(True)
        if spec.kind in ("store", "bundle"):
            self.store_path.setText(spec.location)
        elif spec.kind == "node":
            self.url.setText(spec.location)
            self.key_file.setText(spec.key_file)
        self._update_enabled()

    def _update_enabled(self) -> None:
        self.store_path.setEnabled(self.store.isChecked())
        self.url.setEnabled(self.node.isChecked())
        self.key_file.setEnabled(self.node.isChecked())

    def spec(self) -> TargetSpec | None:
        """The chosen target, or None (``error`` then says what is missing)."""
        if self.demo.isChecked():
            return TargetSpec("demo")
        if self.store.isChecked():
            path = self.store_path.text().strip()
            if not path:
                self.error.setText("Give the path of a store file or directory, or of a bundle.")
                return None
            # as on the command line (TargetSpec.parse): a PostgreSQL URL is a store, a .zip a
            # bundle, any other path a store
            if is_postgres_location(path):
                try:
                    return TargetSpec("store", path)
                except UsageError as exc:  # names no part of the URL
                    self.error.setText(str(exc))
                    return None
            location = str(Path(path).expanduser())
            return TargetSpec("bundle" if location.lower().endswith(".zip") else "store", location)
        url = self.url.text().strip()
        if not url.startswith(("ws://", "wss://")):
            self.error.setText("A node URL starts with ws:// or wss://.")
            return None
        key = self.key_file.text().strip()
        if not key:
            self.error.setText("Connecting to a node needs your account key file.")
            return None
        return TargetSpec("node", url, str(Path(key).expanduser()))

    def accept(self) -> None:
        spec = self.spec()
        if spec is None:
            return
        self.error.clear()
        super().accept()
        self.chosen.emit(spec)

    def _recent_clicked(self, item: QListWidgetItem) -> None:
        spec = TargetSpec.from_json(str(item.data(SPEC_ROLE)))
        if spec is not None:
            self.set_spec(spec)

    def _recent_activated(self, item: QListWidgetItem) -> None:
        self._recent_clicked(item)
        self.accept()

    def _browse_file(self) -> None:
        path, _filter = QFileDialog.getOpenFileName(
            self, "Store or bundle", "", "Kintsugi stores (*.db);;Diagnostic bundles (*.zip);;All files (*)"
        )
        if path:
            self.store_path.setText(path)

    def _browse_dir(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Store directory")
        if path:
            self.store_path.setText(path)

    def _browse_key(self) -> None:
        path, _filter = QFileDialog.getOpenFileName(self, "Account key file", "", "Key files (*.key);;All files (*)")
        if path:
            self.key_file.setText(path)

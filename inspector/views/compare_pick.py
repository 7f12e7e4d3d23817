"""Entry points of the compare view (DESIGN §11): picking two targets, and the launcher.

:class:`ComparePickDialog` picks two targets (the open one, the recent ones, the embedded
demo, or any other through the connect dialog: a store, a ``ws://`` node or a bundle).
:class:`CompareLauncher` wires the main window's entry points to
:class:`~inspector.views.compare.CompareWindow`: the chain view's lane menu ("Compare with…"
another lane or the same session on another target, "Compare with origin" on a conflict lane)
and Actions → Compare… (two targets). It keeps the windows it opened and releases their
targets when they close.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from engine.ids import CoValueID, SessionID
from inspector.style import short_session
from inspector.targets import Target, TargetSpec
from inspector.views.compare import CompareWindow
from inspector.views.connect import ConnectDialog

if TYPE_CHECKING:
    from inspector.controller import Inspector
    from inspector.views.main_window import MainWindow

__all__ = ["CompareLauncher", "ComparePickDialog"]


class ComparePickDialog(QDialog):
    """Pick two targets: each from the open target, the recent ones and the embedded demo,
    or another one through the connect dialog. Emits ``chosen(left, right)``."""

    chosen = Signal(object, object)

    def __init__(self, inspector: Inspector, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("comparePickDialog")
        self.setWindowTitle("Compare two targets — Kintsugi inspector")
        self.inspector = inspector
        specs: list[TargetSpec] = []
        if inspector.target is not None:
            specs.append(inspector.target.spec)
        for spec in [*(inspector.recent.list() if inspector.recent is not None else []), TargetSpec("demo")]:
            if spec not in specs:
                specs.append(spec)
        self.left = QComboBox()
        self.left.setObjectName("compareLeftTarget")
        self.right = QComboBox()
        self.right.setObjectName("compareRightTarget")
        form = QFormLayout()
        for label, combo in (("Left", self.left), ("Right", self.right)):
            for spec in specs:
                combo.addItem(f"{spec.kind}: {spec.label}", spec)
            other = QPushButton("Other…")
            other.clicked.connect(lambda _checked=False, c=combo: self._other(c))
            row = QHBoxLayout()
            row.addWidget(combo, 1)
            row.addWidget(other)
            form.addRow(label, row)
        if len(specs) > 1:
            self.right.setCurrentIndex(1)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(buttons)

    def _other(self, combo: QComboBox) -> None:
        dialog = ConnectDialog(self.inspector.recent, None, self)
        dialog.chosen.connect(lambda spec: self._add(combo, spec))
        dialog.finished.connect(dialog.deleteLater)
        dialog.open()

    @staticmethod
    def _add(combo: QComboBox, spec: TargetSpec) -> None:
        combo.addItem(f"{spec.kind}: {spec.label}", spec)
        combo.setCurrentIndex(combo.count() - 1)

    def specs(self) -> tuple[TargetSpec, TargetSpec] | None:
        left, right = self.left.currentData(), self.right.currentData()
        return (left, right) if isinstance(left, TargetSpec) and isinstance(right, TargetSpec) else None

    def accept(self) -> None:
        specs = self.specs()
        super().accept()
        if specs is not None:
            self.chosen.emit(*specs)


class CompareLauncher(QObject):
    """Opens compare windows for the main window's entry points and releases them when
    they close."""

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.window = window
        self.inspector = window.inspector
        self.windows: list[CompareWindow] = []
        self.dialog: QDialog | None = None
        window.compare_action.triggered.connect(self.pick_targets)
        window.chain.compareRequested.connect(self.compare_lanes)
        window.closing.connect(self._close_windows)

    def _close_windows(self) -> None:
        for compare in list(self.windows):
            compare.close()

    def new_window(self) -> CompareWindow:
        compare = CompareWindow(self.inspector, self.window)
        compare.closed.connect(lambda: self._closed(compare))
        self.windows.append(compare)
        compare.show()
        return compare

    def _closed(self, compare: CompareWindow) -> None:
        if compare in self.windows:
            self.windows.remove(compare)
        self.inspector.spawn(compare.release(), "compare-release")

    def pick_targets(self) -> ComparePickDialog:
        dialog = ComparePickDialog(self.inspector, self.window)
        dialog.chosen.connect(self.compare_targets)
        dialog.finished.connect(dialog.deleteLater)
        self.dialog = dialog
        dialog.open()
        return dialog

    def compare_targets(self, left: TargetSpec, right: TargetSpec) -> CompareWindow:
        compare = self.new_window()
        self.inspector.spawn(compare.compare_targets(left, right), "compare-targets")
        return compare

    def compare_lanes(self, covalue: str, left: str, right: str) -> CompareWindow | ConnectDialog | None:
        """Two sessions of the main window's target (``right`` empty: ``left`` on another
        target, chosen in the connect dialog)."""
        target = self.inspector.target
        if target is None:
            return None
        if right:
            compare = self.new_window()
            task = compare.compare_sessions(target, target, CoValueID(covalue), SessionID(left), SessionID(right))
            self.inspector.spawn(task, "compare-sessions")
            return compare
        dialog = ConnectDialog(self.inspector.recent, None, self.window)
        dialog.setWindowTitle(f"Compare {short_session(left)} with the same session on…")
        dialog.chosen.connect(lambda spec: self._across(target, spec, CoValueID(covalue), SessionID(left)))
        dialog.finished.connect(dialog.deleteLater)
        self.dialog = dialog
        dialog.open()
        return dialog

    def _across(self, target: Target, spec: TargetSpec, covalue: CoValueID, session: SessionID) -> None:
        compare = self.new_window()
        self.inspector.spawn(compare.compare_sessions(target, spec, covalue, session, session), "compare-sessions")

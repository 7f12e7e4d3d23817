"""The File menu's dialogs of the main window: Open store, Open bundle and Export bundle (a
mixin of :class:`~inspector.views.main_window.MainWindow`, which holds the actions and the
:class:`~inspector.controller.Inspector`). Every dialog is window-modal and returns at once;
what the operator chooses arrives through its signals.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, cast

from PySide6.QtGui import QAction
from PySide6.QtWidgets import QFileDialog, QMainWindow

from inspector.targets import TargetSpec
from inspector.views.export import ExportDialog, ExportJob, bundle_inputs

if TYPE_CHECKING:
    from inspector.controller import Inspector

__all__ = ["BUNDLE_FILTER", "EXPORT_BUNDLE_TIP", "EXPORT_NO_TARGET_TIP", "STORE_FILTER", "FileActions"]

#: What the Open store dialog offers (a store directory holds its kintsugi.db file).
STORE_FILTER = "Kintsugi stores (*.db);;All files (*)"
#: What the Open bundle and Export bundle dialogs offer.
BUNDLE_FILTER = "Kintsugi bundles (*.zip)"
#: Export bundle's tooltip when it cannot export.
EXPORT_NO_TARGET_TIP = "Open a store, a node or the demo first"
EXPORT_BUNDLE_TIP = "A bundle is exported already: compare or inspect it"


class FileActions:
    """Open store, Open bundle and Export bundle, for the main window (a QMainWindow that
    has ``inspector``, ``export_bundle_action`` and ``show_warning``)."""

    inspector: Inspector
    export_bundle_action: QAction
    store_dialog: QFileDialog | None
    bundle_dialog: QFileDialog | None
    export_file_dialog: QFileDialog | None
    export_dialog: ExportDialog | None

    def show_warning(self, code: str, message: str) -> None:
        raise NotImplementedError  # the window's own

    def window_widget(self) -> QMainWindow:
        """This window, as the QMainWindow it is."""
        return cast(QMainWindow, self)

    def choose_store(self) -> QFileDialog:
        """Show the Open store file dialog (window-modal, returns at once); the chosen file
        goes to :meth:`open_store`."""
        target = self.inspector.target
        start = ""
        if target is not None and target.spec.kind == "store":
            start = str(Path(target.spec.location).parent)
        dialog = QFileDialog(self.window_widget(), "Open store", start, STORE_FILTER)
        dialog.setObjectName("openStoreDialog")
        dialog.setFileMode(QFileDialog.FileMode.ExistingFile)
        dialog.setAcceptMode(QFileDialog.AcceptMode.AcceptOpen)
        dialog.fileSelected.connect(self.open_store)
        dialog.finished.connect(dialog.deleteLater)
        self.store_dialog = dialog
        dialog.open()
        return dialog

    def open_store(self, path: str) -> None:
        """Open the store file or directory at ``path`` as the command line does."""
        if path:
            self.inspector.open_later(TargetSpec.parse(path))

    def choose_bundle(self) -> QFileDialog:
        """Show the Open bundle file dialog (window-modal, returns at once); the chosen file
        opens as ``kintsugi-inspector FILE.zip`` would."""
        dialog = QFileDialog(self.window_widget(), "Open bundle", "", BUNDLE_FILTER)
        dialog.setObjectName("openBundleDialog")
        dialog.setFileMode(QFileDialog.FileMode.ExistingFile)
        dialog.setAcceptMode(QFileDialog.AcceptMode.AcceptOpen)
        dialog.fileSelected.connect(self.open_store)
        dialog.finished.connect(dialog.deleteLater)
        self.bundle_dialog = dialog
        dialog.open()
        return dialog

    def _update_export(self) -> None:
        target = self.inspector.target
        can = target is not None and bundle_inputs(target) is not None
        self.export_bundle_action.setEnabled(can)
        if can:
            self.export_bundle_action.setToolTip("Export a diagnostic bundle of the open target")
        elif target is not None and target.spec.kind == "bundle":
            self.export_bundle_action.setToolTip(EXPORT_BUNDLE_TIP)
        else:
            self.export_bundle_action.setToolTip(EXPORT_NO_TARGET_TIP)

    def choose_export(self) -> QFileDialog:
        """Show the Export bundle file dialog (window-modal, returns at once); the chosen
        file goes to :meth:`export_bundle`."""
        dialog = QFileDialog(self.window_widget(), "Export bundle", "kintsugi-bundle.zip", BUNDLE_FILTER)
        dialog.setObjectName("exportBundleDialog")
        dialog.setAcceptMode(QFileDialog.AcceptMode.AcceptSave)
        dialog.setDefaultSuffix("zip")
        dialog.fileSelected.connect(lambda path: self.export_bundle(path) if path else None)
        dialog.finished.connect(dialog.deleteLater)
        self.export_file_dialog = dialog
        dialog.open()
        return dialog

    def export_bundle(self, path: str, *, include_content: bool = False) -> ExportJob | None:
        """Export the open target to ``path`` with a progress dialog that can cancel; None
        when the target cannot be exported. The job reports in the status bar when done."""
        target = self.inspector.target
        inputs = bundle_inputs(target) if target is not None else None
        if inputs is None:
            return None
        window = self.window_widget()
        job = ExportJob(inputs, Path(path).expanduser(), include_content=include_content, parent=window)
        dialog = ExportDialog(job, window)
        status = window.statusBar()
        job.finished.connect(lambda out: status.showMessage(f"bundle written to {out}", 10_000))
        job.cancelled.connect(lambda: status.showMessage("export cancelled: nothing was written", 10_000))
        job.failed.connect(lambda code, message: self.show_warning(code, f"export failed: {message}"))
        self.export_dialog = dialog
        dialog.show()
        self.inspector.spawn(job.run(), "export")
        return job

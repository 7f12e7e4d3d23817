"""Recently opened targets, remembered across runs in :class:`QSettings`.

The application uses ``QSettings("Kintsugi", "inspector")``; tests hand in a
:class:`QSettings` on a temporary ini file instead. The list is stored as one JSON string so
it reads back the same from every settings format.
"""

from __future__ import annotations

import json

from PySide6.QtCore import QSettings

from inspector.targets.base import TargetSpec

__all__ = ["MAX_RECENT", "RecentTargets", "default_settings"]

#: Targets remembered.
MAX_RECENT = 10
KEY = "recent/targets"


def default_settings() -> QSettings:
    return QSettings("Kintsugi", "inspector")


class RecentTargets:
    def __init__(self, settings: QSettings) -> None:
        self.settings = settings

    def list(self) -> list[TargetSpec]:
        """Most recent first; entries that no longer parse are skipped."""
        raw = self.settings.value(KEY, "[]")
        try:
            items = json.loads(str(raw))
        except ValueError:
            return []
        if not isinstance(items, list):
            return []
        specs = [TargetSpec.from_json(item) for item in items if isinstance(item, str)]
        return [s for s in specs if s is not None]

    def add(self, spec: TargetSpec) -> None:
        specs = [spec, *(s for s in self.list() if s != spec)][:MAX_RECENT]
        self.settings.setValue(KEY, json.dumps([s.to_json() for s in specs]))
        self.settings.sync()

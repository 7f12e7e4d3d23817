"""Render the app icon's PNG sizes from its SVG with QtSvg.

``python packaging/render_icons.py [--check]`` writes
``resources/icons/hicolor/NxN/apps/org.kintsugi.inspector.png`` for every size in
:data:`ICON_SIZES` from ``resources/icons/hicolor/scalable/apps/org.kintsugi.inspector.svg``
(a freedesktop icon-theme tree, so an installer copies ``resources/icons/hicolor`` as it
is). The PNGs are committed: a wheel ships them as package data and a desktop that cannot
scale SVG icons uses them. With ``--check`` nothing is written; the exit code is 1 when a
committed PNG is missing or no longer matches the SVG (see :func:`differs`), 0 otherwise.

Runs without a display: it sets ``QT_QPA_PLATFORM=offscreen`` unless a platform is set.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QGuiApplication, QImage, QPainter
from PySide6.QtSvg import QSvgRenderer

#: The app id: the icon's file name, the .desktop file's and the AppStream component's.
APP_ID = "org.kintsugi.inspector"
#: The pixel sizes a desktop looks up in the hicolor theme.
ICON_SIZES = (16, 32, 48, 64, 128, 256)
RESOURCES = Path(__file__).resolve().parent.parent / "resources"
ICONS = RESOURCES / "icons" / "hicolor"
SVG = ICONS / "scalable" / "apps" / f"{APP_ID}.svg"
#: Largest difference of one colour channel (0–255) between a committed PNG and a fresh
#: render that still counts as the same picture: antialiasing may change a little between
#: Qt versions, a changed drawing changes far more.
CHANNEL_TOLERANCE = 24


def png_path(size: int) -> Path:
    """Where the PNG of ``size`` pixels lives in the icon tree."""
    return ICONS / f"{size}x{size}" / "apps" / f"{APP_ID}.png"


def render(size: int, svg: Path = SVG) -> QImage:
    """The SVG drawn on a transparent ``size`` × ``size`` image. Raises ValueError when the
    SVG does not parse."""
    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise ValueError(f"{svg} is not an SVG image QtSvg can draw")
    image = QImage(size, size, QImage.Format.Format_ARGB32)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
    renderer.render(painter, QRectF(0, 0, size, size))
    painter.end()
    return image


def differs(committed: QImage, fresh: QImage) -> str | None:
    """Why ``committed`` is not (within :data:`CHANNEL_TOLERANCE`) the picture ``fresh``
    is, or None when it is."""
    if committed.size() != fresh.size():
        return f"size {committed.width()}x{committed.height()}, expected {fresh.width()}x{fresh.height()}"
    a = committed.convertToFormat(QImage.Format.Format_ARGB32)
    b = fresh.convertToFormat(QImage.Format.Format_ARGB32)
    worst = 0
    for y in range(a.height()):
        for x in range(a.width()):
            pa, pb = a.pixel(x, y), b.pixel(x, y)
            worst = max(worst, *(abs(((pa >> s) & 0xFF) - ((pb >> s) & 0xFF)) for s in (0, 8, 16, 24)))
    return None if worst <= CHANNEL_TOLERANCE else f"a channel differs by {worst}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="only check that the committed PNGs are current")
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # read when the application starts
    _app = QGuiApplication.instance() or QGuiApplication([sys.argv[0]])
    stale = []
    for size in ICON_SIZES:
        path = png_path(size)
        fresh = render(size)
        if args.check:
            reason = differs(QImage(str(path)), fresh) if path.exists() else "missing"
            if reason is not None:
                stale.append(f"{path.relative_to(RESOURCES.parent)}: {reason}")
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if not fresh.save(str(path), "PNG"):
            sys.stderr.write(f"could not write {path}\n")
            return 1
    for line in stale:
        sys.stderr.write(f"stale icon: {line} (run python packaging/render_icons.py)\n")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())

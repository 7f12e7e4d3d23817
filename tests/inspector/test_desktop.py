"""Desktop integration: the icon theme tree, the .desktop file and the AppStream metainfo in
resources/, checked by the freedesktop validators, and the identity the application gives
itself (names, version, desktop file name, window icon).

The validators are Debian's ``desktop-file-validate`` (package desktop-file-utils) and
``appstreamcli`` (package appstream). A missing validator fails its test: it never skips.
"""

from __future__ import annotations

import configparser
import importlib.util
import logging
import shutil
import subprocess
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from PySide6.QtCore import QSize
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QApplication

from engine import __version__
from inspector import app as inspector_app
from tests.util import REPO, timeout

RESOURCES = REPO / "resources"
DESKTOP_FILE = RESOURCES / f"{inspector_app.APP_ID}.desktop"
METAINFO = RESOURCES / f"{inspector_app.APP_ID}.metainfo.xml"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: install the Debian package {package} (apt-get install -y {package})"
    return path


def validate(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout(30), check=False)


@pytest.fixture(scope="module")
def render_icons() -> ModuleType:
    """packaging/render_icons.py (``packaging`` is not importable by name: the PyPA library
    of that name is)."""
    spec = importlib.util.spec_from_file_location("render_icons", REPO / "packaging" / "render_icons.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_desktop_file_validates_and_starts_the_inspector() -> None:
    result = validate(tool("desktop-file-validate", "desktop-file-utils"), str(DESKTOP_FILE))
    assert result.returncode == 0 and result.stdout == "" and result.stderr == "", result.stdout + result.stderr
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read(DESKTOP_FILE)
    entry = parser["Desktop Entry"]
    assert entry["Version"] == "1.4" and entry["Type"] == "Application"
    assert entry["Icon"] == inspector_app.APP_ID
    command = entry["Exec"].split()[0]
    assert command == entry["TryExec"] and command in PYPROJECT["project"]["scripts"]


def test_the_metainfo_validates_and_describes_this_release() -> None:
    result = validate(tool("appstreamcli", "appstream"), "validate", "--no-net", str(METAINFO))
    assert result.returncode == 0, result.stdout + result.stderr
    root = ET.parse(METAINFO).getroot()
    assert root.get("type") == "desktop-application"
    component_id = root.findtext("id")
    assert component_id == inspector_app.APP_ID == component_id.lower()
    launchable = root.findtext("launchable")
    assert launchable == DESKTOP_FILE.name
    releases = [r.get("version") for r in root.iter("release")]
    assert releases[0] == __version__ == PYPROJECT["project"]["version"] == "0.1.0"
    assert root.findtext("developer_name")


def test_screenshots_are_this_projects_own() -> None:
    """Every screenshot URL is the homepage followed by a path of this repository's
    docs/screenshots/, where the file exists."""
    root = ET.parse(METAINFO).getroot()
    homepage = root.findtext("url[@type='homepage']")
    assert homepage and homepage.endswith("/")
    shots = root.findall("screenshots/screenshot")
    assert shots and [s.get("type") for s in shots].count("default") == 1
    for shot in shots:
        image = shot.findtext("image")
        assert image and image.startswith(homepage), image
        path = image.removeprefix(homepage)
        assert path.startswith("docs/screenshots/") and ".." not in path
        assert (REPO / path).is_file(), f"{path} is not in the repository"
        assert shot.findtext("caption")


def test_the_icons_are_the_svg_rendered_at_every_size(qapp: QApplication, render_icons: ModuleType) -> None:
    assert render_icons.APP_ID == inspector_app.APP_ID
    assert render_icons.SVG.is_file()
    icons = RESOURCES / "icons" / "hicolor"
    sizes = sorted(int(p.parent.parent.name.split("x")[0]) for p in icons.glob("*x*/apps/*.png"))
    assert sizes == sorted(render_icons.ICON_SIZES) == [16, 32, 48, 64, 128, 256]
    for size in render_icons.ICON_SIZES:
        committed = QImage(str(render_icons.png_path(size)))
        assert committed.size() == QSize(size, size)
        reason = render_icons.differs(committed, render_icons.render(size))
        assert reason is None, f"{size}px icon: {reason} (run python packaging/render_icons.py)"


def test_the_render_script_checks_without_writing(render_icons: ModuleType) -> None:
    before = {p: p.stat().st_mtime_ns for p in (RESOURCES / "icons").rglob("*.png")}
    assert render_icons.main(["--check"]) == 0
    assert before == {p: p.stat().st_mtime_ns for p in (RESOURCES / "icons").rglob("*.png")}


@pytest.fixture
def restore_identity(qapp: QApplication) -> Iterator[None]:
    """The session's application gets its names and icon back after the test."""
    saved = (
        qapp.organizationName(),
        qapp.applicationName(),
        qapp.applicationDisplayName(),
        qapp.applicationVersion(),
        QApplication.desktopFileName(),
        qapp.windowIcon(),
    )
    yield
    organization, name, display, version, desktop, icon = saved
    qapp.setOrganizationName(organization)
    qapp.setApplicationName(name)
    qapp.setApplicationDisplayName(display)
    qapp.setApplicationVersion(version)
    QApplication.setDesktopFileName(desktop)
    qapp.setWindowIcon(icon)


def test_the_application_identity(qapp: QApplication, restore_identity: None) -> None:
    inspector_app.set_identity(qapp)
    assert QApplication.desktopFileName() == inspector_app.APP_ID
    assert (qapp.organizationName(), qapp.applicationName()) == ("Kintsugi", "inspector")  # the settings' place
    assert qapp.applicationDisplayName() == "Kintsugi inspector"
    assert qapp.applicationVersion() == __version__
    sizes = {s.width() for s in qapp.windowIcon().availableSizes()}
    assert sizes == {16, 32, 48, 64, 128, 256}
    assert inspector_app.RESOURCES == RESOURCES


def test_a_missing_icon_is_logged_not_fatal(
    qapp: QApplication, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="inspector.app"):
        icon = inspector_app.app_icon(tmp_path)
    assert icon.isNull()
    assert "no application icon" in caplog.text


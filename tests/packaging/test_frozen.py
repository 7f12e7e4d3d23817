"""The frozen app: packaging/build.sh builds the one-folder app with PyInstaller from an
installed copy of the project, and packaging/smoke.sh starts the built binary offscreen on
a store and on the embedded demo (whose worker and demo-client processes are the app
itself) and requires clean exits. Needs the package registry once, for the build backend of
the staging install; takes about a minute on two cores."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from inspector.app import APP_ID
from tests.util import REPO, timeout

#: Test units the build and the smoke test may take (smoke.sh limits each run of the app to
#: 60 units itself); their sum stays under the test's own timeout.
BUILD_UNITS, SMOKE_UNITS = 130, 150


def run_script(name: str, *args: str, units: float) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    result = subprocess.run(
        ["bash", str(REPO / "packaging" / name), *args],
        env={**os.environ, "PYTHON": sys.executable},  # the Python running these tests builds
        capture_output=True,
        text=True,
        timeout=timeout(units),
        check=False,
    )
    assert result.returncode == 0, f"{name} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result, time.monotonic() - start


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


@pytest.mark.slow
@pytest.mark.timeout(timeout(BUILD_UNITS + SMOKE_UNITS + 30))
def test_the_frozen_app_builds_and_runs_cleanly(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    app = dist / "kintsugi-inspector"
    try:
        _build, build_seconds = run_script("build.sh", str(dist), units=BUILD_UNITS)
        assert (app / "kintsugi-inspector").is_file()
        # the desktop resources came with the installed package (its package data)
        resources = app / "_internal" / "resources"
        assert (resources / f"{APP_ID}.desktop").is_file() and (resources / f"{APP_ID}.metainfo.xml").is_file()
        assert len(list((resources / "icons" / "hicolor").glob(f"*/apps/{APP_ID}.*"))) == 7
        size = folder_size(app)
        smoke, smoke_seconds = run_script("smoke.sh", str(app), units=SMOKE_UNITS)
        assert smoke.stdout.rstrip().endswith("smoke: all ok")
        assert "smoke: store ok" in smoke.stdout and "smoke: embedded-demo ok" in smoke.stdout
        print(
            f"\nfrozen app: built in {build_seconds:.0f} s, {size / 2**20:.0f} MiB; "
            f"smoke test in {smoke_seconds:.0f} s\n{smoke.stdout}"
        )
    finally:
        shutil.rmtree(dist, ignore_errors=True)  # ~170 MB

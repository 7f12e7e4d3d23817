"""A demo store built once for the diagnostics tests (read-only use only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.demo.scenario import DemoResult, build_demo


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoResult:
    return build_demo(Path(tmp_path_factory.mktemp("diag-demo")) / "store", edits=600)

"""The dependency floors CI installs (constraints/floors.txt) are the floors pyproject.toml
admits: one list cannot drift from the other."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _floors_in_pyproject() -> dict[str, str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    out = {}
    for dep in deps:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9][^,]*)(,.*)?", dep)
        if m:
            out[m.group(1).lower()] = m.group(2)
    return out


def _pins() -> dict[str, str]:
    out = {}
    for raw in (ROOT / "constraints" / "floors.txt").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            out[name.lower()] = version
    return out


def _same(floor: str, pin: str) -> bool:
    parts = [int(p) for p in floor.split(".")]
    pinned = [int(p) for p in pin.split(".")]
    return pinned[: len(parts)] == parts and all(p == 0 for p in pinned[len(parts) :])


def test_each_floor_is_pinned_exactly_for_the_floor_run() -> None:
    floors, pins = _floors_in_pyproject(), _pins()
    engine_deps = {"pynacl", "cbor2", "websockets", "platformdirs", "base58", "asyncpg"}
    assert engine_deps <= set(floors)
    assert set(pins) == engine_deps
    for name in engine_deps:
        floor, pin = floors[name], pins[name]
        assert _same(floor, pin), f"{name}: pyproject says >={floor}, the floor run pins {pin}"

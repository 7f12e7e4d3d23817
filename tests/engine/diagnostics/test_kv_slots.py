"""CAS slots for viewing (engine.diagnostics.kv_slots)."""

from __future__ import annotations

from engine.demo.scenario import DemoResult
from engine.diagnostics.kv_slots import Redactor, kv_namespaces, timeline_summary
from engine.kv.detail import slot_rows
from engine.storage.sqlite.store import SQLiteStore


def test_demo_slots_namespaces_states_and_lost_races(demo: DemoResult) -> None:
    store = SQLiteStore(demo.store, readonly=True)
    (namespace,) = kv_namespaces(store)
    assert namespace == demo.accounts["alice"]
    rows = {r.key: r for r in slot_rows(namespace, store.kv.list(namespace))}
    assert rows["draft/old"].state == "tombstone" and rows["draft/old"].deleted_by == namespace
    assert rows["prefs/recent"].present and isinstance(rows["prefs/recent"].value, list)
    counts = timeline_summary(store.kv.history(namespace, "prefs/recent"))
    assert counts["lost"] == demo.kv_conflicts > 0
    assert counts["attempts"] == counts["stored"] + counts["lost"]
    store.close()


def test_redaction_hides_values_but_keeps_equal_ones_equal() -> None:
    redact = Redactor(b"salt" * 4)
    assert redact({"a": 1}) == redact({"a": 1}) != redact({"a": 2})
    assert "a" not in redact({"a": 1}).split("#")[0] and "B" in redact("secret")
    assert Redactor()(object()).startswith("‹hidden")

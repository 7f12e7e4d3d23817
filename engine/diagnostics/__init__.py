"""Diagnostics, Qt-free: what the CLI reports and the inspector shows.

- ``report``: ``kintsugi verify`` / ``kintsugi inspect`` over a store.
- ``session_rows``: windowed, decoded reads of a session (a million rows without loading them).
- ``chain_verify``: incremental chain and signature verification in small steps.
- ``covalue_summary``: badges, lane order, tombstones, content with provenance.
- ``kv_slots``: CAS slot listings and value redaction.
- ``peers``: connected peers with acknowledged lag and queue depth.
- ``analysis``: the heavy work the inspector runs in a worker process.

Bundles, the audit log and anomaly rules come later.
"""

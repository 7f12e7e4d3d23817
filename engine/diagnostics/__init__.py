"""Diagnostics, Qt-free: what the CLI reports and the inspector shows.

- ``report``: ``kintsugi verify`` / ``kintsugi inspect`` over a store.
- ``session_rows``: windowed, decoded reads of a session (a million rows without loading them).
- ``chain_verify``: incremental chain and signature verification in small steps.
- ``covalue_summary``: badges, lane order, tombstones, content with provenance.
- ``kv_slots``: CAS namespaces, value redaction, slot timelines.
- ``analysis``: the heavy work the inspector runs in a worker process.

Rules kept here: diagnostics read node and storage — stores only through the
:class:`~engine.storage.interface.Store` interface, opened with
:func:`engine.storage.open_store` (no SQL, no :mod:`sqlite3`; storage failures arrive as
:class:`~engine.errors.StorageError`), CoValues built by :mod:`engine.node.loading` — and
never net or demo; they change nothing but a store's own corrupt records; CAS values are
shown redacted unless asked for. (Connected peers are reported by
:mod:`engine.sync.peers`.) Bundles, the audit log and anomaly rules come later.
"""

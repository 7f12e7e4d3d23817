"""Diagnostics, Qt-free: what the CLI reports and the inspector shows.

Reading a target:

- ``report``: ``kintsugi verify`` / ``kintsugi inspect`` over a store.
- ``session_rows``: windowed, decoded reads of a session (a million rows without loading them).
- ``chain_verify``: incremental chain and signature verification, a window at a time (and a
  copy of a session checked by equality with the rows another verifier re-derived).
- ``covalue_summary``: badges, lane order, tombstones, content with provenance.
- ``kv_slots``: CAS namespaces, value redaction, slot timelines.
- ``analysis``: the heavy work the inspector runs in a worker process.
- ``matrix``: the peers × sessions matrix (who acknowledged how much of each session).
- ``anomalies``: the ranked "expert info" rules (signature failure, fork, lag, skew, …).

Comparing two targets:

- ``compare``: two sessions aligned by index around their fork point (or a conflict session
  at its recorded fork point), rows by window, a summary.
- ``compare_scopes``: one CoValue on two targets (sessions paired by id, content by key) and
  two whole targets.
- ``compare_sides``: the comparison side of a store or a live node.
- ``compare_bundle``: a bundle as a side; sessions without rows compared at their checkpoint
  hashes (a fork located within one batch).

Diagnostic bundles:

- ``bundle``: the export (streaming, with progress; cancelling leaves nothing), and
  ``bundle_format``, ``bundle_gather``, ``bundle_json``, ``bundle_logs`` its members.
- ``redact``: salted tokens for keys and values, the redaction policy.
- ``bundle_read``: a bundle opened offline as a target; ``bundle_verify``: ``kintsugi verify
  FILE.zip``, ``kintsugi inspect FILE.zip`` and the fork between two bundles.
- ``export_audit``: an export recorded as an operator action in the target's audit log.

Rules kept here: diagnostics read node and storage — stores only through the
:class:`~engine.storage.interface.Store` interface, opened with
:func:`engine.storage.open_store` (no SQL, no :mod:`sqlite3`; storage failures arrive as
:class:`~engine.errors.StorageError`), CoValues built by :mod:`engine.node.loading` — and
never net or demo; they change nothing but a store's own corrupt records and, for a
recorded export, its audit log; CAS values are shown redacted unless asked for. (Connected
peers are reported by :mod:`engine.sync.peers`.)
"""

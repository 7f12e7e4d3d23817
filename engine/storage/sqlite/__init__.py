"""The SQLite store (DESIGN §9): the only code that imports :mod:`sqlite3`.

- :mod:`engine.storage.sqlite.store` — :class:`SQLiteStore`, the
  :class:`~engine.storage.interface.Store` over one connection.
- :mod:`engine.storage.sqlite.connection` — opening a store file: pragmas, schema check,
  write transactions.
- :mod:`engine.storage.sqlite.rows` — writing and reading the rows of CoValues and sessions
  (appends, whole sessions, replacements, tombstones, blocks).
- :mod:`engine.storage.sqlite.reads` — the read queries viewers need (listings, stored
  session bookkeeping, corrupt records, KV namespaces, checkpoints).
- :mod:`engine.storage.sqlite.kv` — CAS slots in the same database (:class:`SQLiteKV`) and
  the sorting of :mod:`sqlite3` errors into "environment" and "bug".
- :mod:`engine.storage.sqlite.schema` — schema versions and migrations.
- :mod:`engine.storage.sqlite.queue` — the ordered writer thread (:class:`AsyncStore`), the
  store's :class:`~engine.storage.interface.StoreWriter`.

Imports: model, kv, ids, crypto, errors and :mod:`engine.storage.interface`; never the
CoValue core, the node or anything above.
"""

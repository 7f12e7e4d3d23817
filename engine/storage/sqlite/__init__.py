"""The SQLite store (DESIGN §9): the only code that imports :mod:`sqlite3`.

- :mod:`engine.storage.sqlite.store` — :class:`SQLiteStore`: sessions, chains, replace and
  tombstone writes, corrupt-chain records.
- :mod:`engine.storage.sqlite.kv` — CAS slots in the same database (:class:`SQLiteKV`).
- :mod:`engine.storage.sqlite.schema` — schema versions and migrations.
- :mod:`engine.storage.sqlite.queue` — the ordered writer thread (:class:`AsyncStore`).
"""

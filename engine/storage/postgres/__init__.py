"""The PostgreSQL store (DESIGN §9): the shared store of a cluster of nodes, and with
:mod:`engine.storage.sqlite` the only code that imports a database driver (asyncpg).

- :mod:`engine.storage.postgres.store` — :class:`PostgresStore`, the
  :class:`~engine.storage.interface.Store` over one connection.
- :mod:`engine.storage.postgres.connection` — the private event loop each connection lives on
  (the Store interface is synchronous, asyncpg is asyncio), connecting, and the sorting of
  driver errors into "environment" and "bug".
- :mod:`engine.storage.postgres.rows` — writing and reading the rows of CoValues and sessions,
  with the row locks that let several nodes write one database.
- :mod:`engine.storage.postgres.reads` — the read queries viewers need.
- :mod:`engine.storage.postgres.audit` — the audit log, receipts and the recovery write.
- :mod:`engine.storage.postgres.kv` — CAS slots: ``UPDATE … WHERE generation = $expected``.
- :mod:`engine.storage.postgres.schema` — schema versions and migrations.
- :mod:`engine.storage.postgres.registry` — the node registry of a cluster (heartbeats).
- :mod:`engine.storage.postgres.feed` — the change log of a cluster: change numbers, the
  ``pg_notify`` wake-ups (ids only), and the feed a node catches up from.
- :mod:`engine.storage.postgres.writer` — the ordered background writer
  (:class:`~engine.storage.interface.StoreWriter`).

Imports: model, kv, ids, crypto, errors, :mod:`engine.storage.interface`, and the block
format of :mod:`engine.storage.sqlite.rows` (one format for both stores).
"""

"""Persistence (DESIGN §9): the Store interface and its implementations.

- :mod:`engine.storage.interface` — :class:`Store` and :class:`StoreWriter` (protocols) and
  the data they exchange; what the node, diagnostics and the inspector use.
- :mod:`engine.storage.opener` — :func:`open_store`: a store by its location.
- :mod:`engine.storage.sqlite` — the SQLite implementation (the default).
- :mod:`engine.storage.postgres` — the PostgreSQL implementation (the shared store of a
  cluster of nodes), the same protocols over asyncpg.

Storage imports only model, kv, ids, crypto, codec and errors: it returns
rows and chunks, and engine/node builds CoValues from them.
"""

from engine.storage.interface import Store, StoreWriter
from engine.storage.opener import make_store_directory, open_store, store_directory

__all__ = ["Store", "StoreWriter", "make_store_directory", "open_store", "store_directory"]

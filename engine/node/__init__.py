"""LocalNode, the facade app code embeds (DESIGN §2), and what it is built from.

- :mod:`engine.node.facade` — :class:`LocalNode`: reading, writing, batching, receiving,
  subscriptions.
- :mod:`engine.node.changes` — :class:`ChangeEvent` and :class:`ChangeKind`: what
  subscribers hear, after the change is committed.
- :mod:`engine.node.commits` — the background-commit pipeline: numbered batches on the
  store's writer thread, ``committed_seq``, retry with backoff, ``durable()``.
- :mod:`engine.node.leases` — the lease of the session the node writes in: acquire, renew,
  and the session switch that a replacement stores atomically.
- :mod:`engine.node.access` — who may read what the node holds; listings for peers.
- :mod:`engine.node.loading` — CoValues built from what a store returns.

The node package imports the core (model, covalue, content, kv, recovery) and storage (the
:class:`~engine.storage.interface.Store` interface, never an implementation); net, demo, cli,
diagnostics and the inspector sit on top of it.
"""

from engine.node.changes import ChangeEvent, ChangeKind
from engine.node.facade import LocalNode, now_ms

__all__ = ["ChangeEvent", "ChangeKind", "LocalNode", "now_ms"]

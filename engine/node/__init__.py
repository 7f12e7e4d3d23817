"""LocalNode, the facade app code embeds (DESIGN §2), and what it is built from.

- :mod:`engine.node.facade` — :class:`LocalNode`: reading, writing, batching, receiving.

The node package imports the core (model, covalue, content, kv, recovery) and storage (the
:class:`~engine.storage.interface.Store` interface); net, demo, cli and the inspector sit on
top of it.
"""

from engine.node.facade import ChangeEvent, ChangeKind, LocalNode, now_ms

__all__ = ["ChangeEvent", "ChangeKind", "LocalNode", "now_ms"]

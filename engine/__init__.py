"""Kintsugi sync engine: signed per-session logs, CoValues, storage and replication.

The engine never imports Qt or the inspector. Start with :class:`engine.node.LocalNode`.
"""

__version__ = "0.1.0"

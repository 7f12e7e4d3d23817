"""Recovery (DESIGN §7): repairing diverged copies of signed history without losing edits.

- :mod:`engine.recovery.correction` — session-conflict recovery, owner side (§7.1): verify a
  ``correction`` (our chain base, the chain to its head, the head's signature under the
  session's key), then compute and apply the replacement (an owner's divergent tail moves
  to a conflict session ``sid!n``; a non-owner simply replaces its copy) and hand what must
  be stored atomically — with the owner's session switch — to the node.
- :mod:`engine.recovery.plan` — the REPLACE plan of §7.2, pure: what recovering a scope from
  one chosen peer would change (sessions replaced, transactions dropped, local-only
  transactions at risk, tombstones).
- :mod:`engine.recovery.exchange` — the ``recover_open``/``recover_page``/``recover_next``
  exchange that fetches a scope from that peer, sans-I/O and all-or-nothing.
- :mod:`engine.recovery.receipt` — the operator-signed receipt of an applied recovery.

Imports: protocol, model, covalue, content, kv (and ids, crypto, codec, errors) — never net,
storage or diagnostics. Recovery never persists by itself: the node passes a callback that
writes through its :class:`~engine.storage.interface.Store`.
"""

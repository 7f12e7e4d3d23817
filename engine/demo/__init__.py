"""The demo: a scenario with something real to inspect and repair.

- :mod:`engine.demo.scenario` — builds the demo into a store (``kintsugi demo --headless``).
- :mod:`engine.demo.live` — the demo's clients against a running node, with a real crash
  after acknowledgement (``kintsugi demo --connect``).
- :mod:`engine.demo.embedded` — an in-process node with the live demo, for the inspector's
  embedded default.
- :mod:`engine.demo.repairs` — something to recover: a corrupt and a stale copy of two
  CoValues, and their good copies for an origin to serve (both the embedded demo and
  ``kintsugi demo --headless`` carry them).
- :mod:`engine.demo.held` — :class:`~engine.demo.held.HeldStore`, a store that holds commits
  back (a disk slower than the network), for the crash-after-acknowledgement story.

The demo sits on top of the engine: it may import any engine package; only the CLI, the
inspector and tests import it.
"""

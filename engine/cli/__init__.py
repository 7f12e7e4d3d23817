"""The ``kintsugi`` command (:func:`main`): everything the inspector does, headless.

One module per command group; :mod:`engine.cli.main` builds the parser and dispatches. The
CLI sits on top of the engine: it may import any engine package, and nothing imports it.
"""

from engine.cli.main import main

__all__ = ["main"]

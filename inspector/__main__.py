"""``python -m inspector`` and the frozen app's entry: the Kintsugi inspector.

Order matters, which is why this is the entry rather than :func:`inspector.app.main`:

1. :func:`multiprocessing.freeze_support` first: in a frozen app the worker processes
   (:mod:`inspector.workers`) and multiprocessing's helpers start the app itself with their
   own arguments, and must run those instead of the inspector's argument parser.
2. :func:`engine.__main__.run_private`: the live demo starts its clients through the app
   too (in a frozen app ``sys.executable`` is the app), with a private first argument that
   runs one demo client and nothing else. Neither step imports Qt.
3. Otherwise the inspector's command line, :func:`inspector.app.main`.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run what the arguments (default: the process's) ask for; returns the exit code."""
    multiprocessing.freeze_support()
    args = list(sys.argv[1:] if argv is None else argv)
    from engine.__main__ import run_private

    code = run_private(args)
    if code is not None:
        return code
    from inspector.app import main as inspector

    return inspector(args)


if __name__ == "__main__":
    sys.exit(main())

"""``python -m engine``: the ``kintsugi`` command, and the entry of the demo's client processes.

:func:`main` first hands the arguments to :func:`run_private`: a first argument of
:data:`~engine.demo.live.DEMO_CHILD_ARG` runs one demo client and nothing else (the live
demo starts its clients that way, so they work the same from a checkout, an installed
package and a frozen app, whose own entry calls :func:`run_private` too). Anything else is
the ``kintsugi`` command (:func:`engine.cli.main`), with its exit codes.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main", "run_private"]


def run_private(argv: Sequence[str]) -> int | None:
    """Run the private entry ``argv[0]`` names and return its exit code; None when ``argv``
    does not start with one (the caller goes on with its own command line)."""
    from engine.demo import live  # only now: a plain command line need not import the demo

    if argv and argv[0] == live.DEMO_CHILD_ARG:
        return live.main(["child", *argv[1:]])
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch a private entry (:func:`run_private`), else run ``kintsugi`` with ``argv``
    (default: the process's arguments); returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    code = run_private(args)
    if code is not None:
        return code
    from engine.cli.main import main as kintsugi

    return kintsugi(args)


if __name__ == "__main__":
    sys.exit(main())

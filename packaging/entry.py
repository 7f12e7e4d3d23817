"""The frozen app's entry script (see kintsugi-inspector.spec): the same as ``python -m
inspector``, whose :func:`~inspector.__main__.main` first lets multiprocessing and the
demo's client processes take their own arguments, then runs the inspector."""

import sys

from inspector.__main__ import main

if __name__ == "__main__":
    sys.exit(main())

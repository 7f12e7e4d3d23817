"""``python -m engine.cli``: the ``kintsugi`` command."""

import sys

from engine.cli.main import main

sys.exit(main())

"""``kintsugi-inspector``: the desktop inspector (arrives with its own issue)."""

from __future__ import annotations

import sys


def main() -> int:
    sys.stderr.write(
        "kintsugi-inspector: the desktop inspector is not built yet.\n"
        "Meanwhile: `kintsugi demo --headless` builds the demo store and "
        "`kintsugi inspect STORE` shows what the inspector will show.\n"
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())

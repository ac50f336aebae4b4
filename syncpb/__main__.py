"""``python -m syncpb``: the same program as the ``syncpb`` command."""

from __future__ import annotations

import sys

from syncpb.cli import main

if __name__ == "__main__":
    sys.exit(main())

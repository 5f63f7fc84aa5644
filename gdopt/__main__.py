"""``python -m gdopt``: the ``gdopt`` command line (see :mod:`gdopt.cli`)."""

from __future__ import annotations

import sys

from gdopt.cli import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m tasktoolkit.commands``: the ``tasktoolkit`` command."""

from __future__ import annotations

import sys

from tasktoolkit.commands import main

if __name__ == "__main__":
    sys.exit(main())

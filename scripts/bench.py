"""Load benchmark: step round trips and concurrent sessions against a real server.

The same as ``openenv-ws bench`` (same flags); the code lives in ``openenv_ws/tools/bench.py``.

    python scripts/bench.py                      # in-process echo, default grid
    python scripts/bench.py --sandbox subprocess --grid 10,100
    python scripts/bench.py --single-steps 2000 --grid ""
"""

from __future__ import annotations

import sys

from openenv_ws.tools.bench import main

if __name__ == "__main__":
    sys.exit(main())

"""The session inspector: a live table of a server's sessions, a JSON snapshot, or one session's frames.

    python scripts/inspect_sessions.py --url http://127.0.0.1:8000             # live table (q quits)
    python scripts/inspect_sessions.py --url http://127.0.0.1:8000 --json      # one snapshot
    python scripts/inspect_sessions.py --url http://127.0.0.1:8000 --follow s-0123456789abcdef

The same as ``openenv-ws sessions``; see ``openenv_ws/tools/inspector.py``.
"""

from __future__ import annotations

import sys

from openenv_ws.tools.inspector import main

if __name__ == "__main__":
    sys.exit(main())

"""OpenEnv's example environments (``echo_env``, ``connect4_env``, from ``$OPENENV_SRC/envs``) as
openenv-ws serves them: ``openenv-ws serve tests.openenv_parity.openenv_examples:Echo``.

What OpenEnv's own ``server/app.py`` of each passes to its ``create_app`` is passed to
``from_openenv`` here.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.modules.setdefault("gradio", None)  # type: ignore[arg-type]  # OpenEnv's optional web UI: slow to import

_envs = Path(os.environ.get("OPENENV_SRC", "/nonexistent")) / "envs"
if _envs.is_dir() and str(_envs) not in sys.path:
    sys.path.insert(0, str(_envs))  # a subprocess sandbox inherits the server's sys.path

from connect4_env.models import Connect4Action, Connect4Observation, Connect4State  # noqa: E402
from connect4_env.server.connect4_environment import Connect4Environment  # noqa: E402
from echo_env.server.echo_environment import EchoEnvironment  # noqa: E402
from openenv.core.env_server.mcp_types import CallToolAction, CallToolObservation  # noqa: E402
from openenv.core.env_server.types import State  # noqa: E402

from openenv_ws.openenv import from_openenv  # noqa: E402

Echo = from_openenv(EchoEnvironment, CallToolAction, CallToolObservation, State, name="echo_env")
Connect4 = from_openenv(Connect4Environment, Connect4Action, Connect4Observation, Connect4State, name="connect4_env")

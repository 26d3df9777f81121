"""OpenEnv's example environments (``echo_env``, ``connect4_env``) as openenv-ws serves them:
``openenv-ws serve tests.openenv_parity.openenv_examples:Echo``. OpenEnv's own from
``$OPENENV_SRC/envs``, or else our stand-ins (see :mod:`tests.openenv_parity.example_envs`).

What OpenEnv's own ``server/app.py`` of each passes to its ``create_app`` is passed to
``from_openenv`` here.
"""

from __future__ import annotations

import sys

from tests.openenv_parity.example_envs import put_example_envs_on_path

sys.modules.setdefault("gradio", None)  # type: ignore[arg-type]  # OpenEnv's optional web UI: slow to import
put_example_envs_on_path()  # in the server, before the imports below; a subprocess sandbox inherits its sys.path

from connect4_env.models import Connect4Action, Connect4Observation, Connect4State  # noqa: E402
from connect4_env.server.connect4_environment import Connect4Environment  # noqa: E402
from echo_env.server.echo_environment import EchoEnvironment  # noqa: E402
from openenv.core.env_server.mcp_types import CallToolAction, CallToolObservation  # noqa: E402
from openenv.core.env_server.types import State  # noqa: E402

from openenv_ws.openenv import from_openenv  # noqa: E402

Echo = from_openenv(EchoEnvironment, CallToolAction, CallToolObservation, State, name="echo_env")
Connect4 = from_openenv(Connect4Environment, Connect4Action, Connect4Observation, Connect4State, name="connect4_env")

"""Stand-in for OpenEnv's example environment ``connect4_env``, written for openenv-ws's tests.

OpenEnv's example environments live in its repository's ``envs/`` folder and are not published on
PyPI, so CI cannot install them. This package reproduces the public API that OpenEnv's
integration tests (tests/openenv_parity/) use, under the same names: the client ``Connect4Env``
(an ``EnvClient``), the models ``Connect4Action``, ``Connect4Observation``, ``Connect4State``
(``connect4_env.models``), and ``connect4_env.server.connect4_environment.Connect4Environment``.
It plays as OpenEnv's does; the code is our own. Setting ``OPENENV_SRC`` to a copy of OpenEnv's
repository runs the tests on OpenEnv's own package instead (tests/openenv_parity/example_envs.py).
"""

from .client import Connect4Env
from .models import Connect4Action, Connect4Observation, Connect4State

__all__ = ["Connect4Action", "Connect4Env", "Connect4Observation", "Connect4State"]

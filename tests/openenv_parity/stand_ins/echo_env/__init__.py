"""Stand-in for OpenEnv's example environment ``echo_env``, written for openenv-ws's tests.

OpenEnv's example environments live in its repository's ``envs/`` folder and are not published on
PyPI, so CI cannot install them. This package reproduces the public API that OpenEnv's
integration tests (tests/openenv_parity/) use, under the same names: the client ``EchoEnv`` (an
``MCPToolClient``), ``echo_env.server.echo_environment.EchoEnvironment`` (an MCP-only
``MCPEnvironment`` with the tools ``echo_message`` and ``echo_with_length``), and the re-exported
``CallToolAction``/``ListToolsAction``. It behaves as OpenEnv's does; the code is our own.
Setting ``OPENENV_SRC`` to a copy of OpenEnv's repository runs the tests on OpenEnv's own package
instead (tests/openenv_parity/example_envs.py).
"""

from openenv.core.env_server.mcp_types import CallToolAction, ListToolsAction

from .client import EchoEnv

__all__ = ["CallToolAction", "EchoEnv", "ListToolsAction"]

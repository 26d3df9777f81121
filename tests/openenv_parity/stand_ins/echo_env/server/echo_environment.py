"""An MCP-only environment that gives back what it is sent (stand-in: see ``echo_env``).

As OpenEnv's echo environment does since it became MCP-only: its action type is MCP's
(``ListToolsAction``, ``CallToolAction``), so a plain ``{"message": ...}`` action is not one it
takes, and any other ``Action`` gets an observation whose ``metadata["error"]`` says so. Every
step, a tool call or not, counts in ``state.step_count``; ``reset`` starts a new episode at zero.
"""

from __future__ import annotations

from typing import Any
from uuid import uuid4

from fastmcp import FastMCP
from openenv.core.env_server.mcp_environment import MCPEnvironment
from openenv.core.env_server.types import Action, Observation, State


def echo_message(message: str) -> str:
    """Return the message unchanged.

    Args:
        message: what to echo
    """
    return message


def echo_with_length(message: str) -> dict:
    """Return the message and how many characters it has.

    Args:
        message: what to echo
    """
    return {"message": message, "length": len(message)}


class EchoEnvironment(MCPEnvironment):
    """Two tools, ``echo_message`` and ``echo_with_length``; no other actions."""

    SUPPORTS_CONCURRENT_SESSIONS = True

    def __init__(self) -> None:
        server = FastMCP("echo_env")
        server.tool(echo_message)
        server.tool(echo_with_length)
        super().__init__(server)
        self._state = State(episode_id=str(uuid4()), step_count=0)
        self._reset_count = 0

    def reset(self, seed: int | None = None, episode_id: str | None = None, **kwargs: Any) -> Observation:
        self._state = State(episode_id=episode_id or str(uuid4()), step_count=0)
        self._reset_count += 1
        return Observation(done=False, reward=0.0, metadata={"status": "ready", "message": "Echo environment ready!"})

    def step(self, action: Action, timeout_s: float | None = None, **kwargs: Any) -> Observation:
        self._state.step_count += 1
        return super().step(action, timeout_s=timeout_s, **kwargs)

    async def step_async(self, action: Action, timeout_s: float | None = None, **kwargs: Any) -> Observation:
        # OpenEnv's WebSocket handler awaits this one, not step(): it must count the step too.
        self._state.step_count += 1
        return await super().step_async(action, timeout_s=timeout_s, **kwargs)

    def _step_impl(self, action: Action, timeout_s: float | None = None, **kwargs: Any) -> Observation:
        """Any action that is not an MCP one."""
        name = type(action).__name__
        error = f"Unknown action type: {name}. Use ListToolsAction or CallToolAction for MCP interactions."
        return Observation(done=False, reward=0.0, metadata={"error": error})

    @property
    def state(self) -> State:
        return self._state

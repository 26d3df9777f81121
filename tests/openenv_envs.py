"""Small environments written against the real OpenEnv package, for the compatibility tests.

``WordEnv`` is served two ways: by OpenEnv's own app factory (``make_app``, under uvicorn) and by
openenv-ws through the adapter (``AdaptedWordEnv``). ``CalcEnv`` is an OpenEnv MCP environment
(FastMCP tools), served by openenv-ws as ``AdaptedCalcEnv``.
"""

from __future__ import annotations

import sys
from typing import Any

# OpenEnv imports its optional Gradio web UI whenever gradio is installed (about 7 s on a
# small machine, per process); these tests do not use the UI, so it is kept out.
sys.modules.setdefault("gradio", None)  # type: ignore[arg-type]

from fastmcp import FastMCP  # noqa: E402
from openenv.core.env_server.interfaces import Environment  # noqa: E402
from openenv.core.env_server.mcp_environment import MCPEnvironment  # noqa: E402
from openenv.core.env_server.mcp_types import CallToolAction, CallToolObservation  # noqa: E402
from openenv.core.env_server.types import Action, Observation, State  # noqa: E402

from openenv_ws.openenv import from_openenv  # noqa: E402

MAX_STEPS = 5


class WordAction(Action):
    word: str


class WordObservation(Observation):
    echoed: str = ""
    length: int = 0


class WordEnv(Environment):
    """Echoes words. reward = word length; "stop" ends the episode; after 5 steps it is cut short."""

    SUPPORTS_CONCURRENT_SESSIONS = True

    def __init__(self) -> None:
        super().__init__()
        self._state = State(episode_id=None, step_count=0)

    def reset(self, seed: int | None = None, episode_id: str | None = None, **kwargs: Any) -> WordObservation:
        self._state = State(episode_id=episode_id or f"seed-{seed}", step_count=0)
        return WordObservation(metadata={"seed": seed})

    def step(self, action: WordAction, timeout_s: float | None = None, **kwargs: Any) -> WordObservation:  # type: ignore[override]
        if action.word == "boom":
            raise RuntimeError("the env failed on purpose")
        self._state.step_count += 1
        stop = action.word == "stop"
        cut = not stop and self._state.step_count >= MAX_STEPS
        metadata: dict[str, Any] = {"step": self._state.step_count}
        if cut:
            metadata["truncated"] = True
        return WordObservation(
            echoed=action.word, length=len(action.word), reward=len(action.word), done=stop or cut, metadata=metadata
        )

    @property
    def state(self) -> State:
        return self._state


def make_app() -> Any:
    """OpenEnv's own server for WordEnv (``uvicorn --factory tests.openenv_envs:make_app``)."""
    from openenv.core.env_server import create_app

    return create_app(WordEnv, WordAction, WordObservation, env_name="words", max_concurrent_envs=8)


AdaptedWordEnv = from_openenv(WordEnv, WordAction, WordObservation, State, name="words")
"""The same environment served by openenv-ws (``openenv-ws serve tests.openenv_envs:AdaptedWordEnv``)."""


def calc_server() -> FastMCP:
    """The MCP server of ``CalcEnv``: one tool of each kind of result."""
    mcp = FastMCP("calc")

    @mcp.tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @mcp.tool
    def describe(word: str, times: int = 1) -> dict:
        """Facts about a word."""
        return {"word": word * times, "length": len(word) * times}

    @mcp.tool
    def fail(reason: str) -> str:
        """Always fails, saying why."""
        raise ValueError(reason)

    return mcp


class CalcEnv(MCPEnvironment):
    """An OpenEnv MCP environment: its actions are tool calls; calls are counted in its state."""

    def __init__(self) -> None:
        super().__init__(calc_server())
        self._state = State(episode_id=None, step_count=0)

    def reset(self, seed: int | None = None, episode_id: str | None = None, **kwargs: Any) -> Observation:
        self._state = State(episode_id=episode_id or f"seed-{seed}", step_count=0)
        return Observation(metadata={"seed": seed})

    def step(self, action: Action, timeout_s: float | None = None, **kwargs: Any) -> Observation:  # type: ignore[override]
        self._state.step_count += 1
        return super().step(action, timeout_s=timeout_s, **kwargs)

    async def step_async(self, action: Action, timeout_s: float | None = None, **kwargs: Any) -> Observation:  # type: ignore[override]
        self._state.step_count += 1
        return await super().step_async(action, timeout_s=timeout_s, **kwargs)

    def _step_impl(self, action: Action, timeout_s: float | None = None, **kwargs: Any) -> Observation:
        return Observation(metadata={"unsupported": type(action).__name__})

    @property
    def state(self) -> State:
        return self._state


AdaptedCalcEnv = from_openenv(CalcEnv, CallToolAction, CallToolObservation, State, name="calc")
"""The OpenEnv MCP environment served by openenv-ws: its tools are ours."""

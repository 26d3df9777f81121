"""openenv-ws: an async WebSocket session runtime for long, multi-turn RL agent episodes."""

from typing import TYPE_CHECKING, Any

from .env import Action, Environment, Observation, State, StepResult, SyncEnvironment
from .errors import (
    AuthError,
    CapacityError,
    EnvError,
    EpisodeStateError,
    ForbiddenError,
    NodeLostError,
    OpenEnvWSError,
    ProtocolError,
    RequestTimeoutError,
    SandboxCrashedError,
    SandboxStartError,
    SessionLostError,
    UnknownEnvError,
    ValidationError,
)
from .toolbox import ToolCall, ToolError, tool
from .tuning import tune_gc
from .version import __version__

# The client (WebSocket stack and all) is imported on first use, not with the package: the
# sandbox worker imports this package too, and every sandbox start would pay for it.
_CLIENT = ("EnvSession", "EpisodeRecord", "Multiplexer", "SyncEnvSession", "connect", "connect_sync", "multiplex")
_CLIENT += ("run_episodes",)


def __getattr__(name: str) -> Any:
    if name in _CLIENT:
        from . import client

        value = getattr(client, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:
    from .client import (
        EnvSession,
        EpisodeRecord,
        Multiplexer,
        SyncEnvSession,
        connect,
        connect_sync,
        multiplex,
        run_episodes,
    )

__all__ = [
    "Action",
    "AuthError",
    "CapacityError",
    "EnvError",
    "EnvSession",
    "Environment",
    "EpisodeRecord",
    "EpisodeStateError",
    "ForbiddenError",
    "Multiplexer",
    "NodeLostError",
    "Observation",
    "OpenEnvWSError",
    "ProtocolError",
    "RequestTimeoutError",
    "SandboxCrashedError",
    "SandboxStartError",
    "SessionLostError",
    "State",
    "StepResult",
    "SyncEnvSession",
    "SyncEnvironment",
    "ToolCall",
    "ToolError",
    "UnknownEnvError",
    "ValidationError",
    "__version__",
    "connect",
    "connect_sync",
    "multiplex",
    "run_episodes",
    "tool",
    "tune_gc",
]

"""openenv-ws: an async WebSocket session runtime for long, multi-turn RL agent episodes."""

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
from .env import Action, Environment, Observation, State, StepResult, SyncEnvironment
from .errors import (
    AuthError,
    CapacityError,
    EnvError,
    EpisodeStateError,
    OpenEnvWSError,
    ProtocolError,
    RequestTimeoutError,
    SandboxCrashedError,
    SandboxStartError,
    SessionLostError,
    UnknownEnvError,
    ValidationError,
)
from .tuning import tune_gc

__version__ = "0.1.0"

__all__ = [
    "Action",
    "AuthError",
    "CapacityError",
    "EnvError",
    "EnvSession",
    "Environment",
    "EpisodeRecord",
    "EpisodeStateError",
    "Multiplexer",
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
    "UnknownEnvError",
    "ValidationError",
    "__version__",
    "connect",
    "connect_sync",
    "multiplex",
    "run_episodes",
    "tune_gc",
]

"""The client: one :class:`EnvSession` per episode, many per process (anyio: asyncio or trio)."""

from .episodes import EpisodeRecord, run_episodes
from .mux import Multiplexer
from .routing import ClusterMultiplexer, connect, multiplex
from .session import EnvSession
from .sync import SyncEnvSession, connect_sync

__all__ = [
    "ClusterMultiplexer",
    "EnvSession",
    "EpisodeRecord",
    "Multiplexer",
    "SyncEnvSession",
    "connect",
    "connect_sync",
    "multiplex",
    "run_episodes",
]

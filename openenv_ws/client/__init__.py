"""The client: one :class:`EnvSession` per episode, many per process (anyio: asyncio or trio)."""

from .episodes import EpisodeRecord, run_episodes
from .mux import Multiplexer, multiplex
from .session import EnvSession, connect
from .sync import SyncEnvSession, connect_sync

__all__ = [
    "EnvSession",
    "EpisodeRecord",
    "Multiplexer",
    "SyncEnvSession",
    "connect",
    "connect_sync",
    "multiplex",
    "run_episodes",
]

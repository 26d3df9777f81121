"""The client: one :class:`EnvSession` per episode, many per process (anyio: asyncio or trio)."""

from .runner import EpisodeRecord, run_episodes
from .session import EnvSession, connect
from .sync import SyncEnvSession, connect_sync

__all__ = ["EnvSession", "EpisodeRecord", "SyncEnvSession", "connect", "connect_sync", "run_episodes"]

"""The client: one :class:`EnvSession` per episode, many per process (anyio: asyncio or trio)."""

from .session import EnvSession, connect
from .sync import SyncEnvSession, connect_sync

__all__ = ["EnvSession", "SyncEnvSession", "connect", "connect_sync"]

"""The session server: a Starlette app holding WebSocket sessions, one sandbox each."""

from .app import create_app
from .config import ServerConfig

__all__ = ["ServerConfig", "create_app"]

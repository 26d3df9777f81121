"""A blocking facade over :class:`EnvSession`, for scripts and notebooks.

It runs an event loop on a background thread (an anyio blocking portal), so it works
where no loop is running and inside a notebook whose loop is already busy.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

from anyio.from_thread import start_blocking_portal

from ..env import StepResult
from .routing import connect
from .session import EnvSession


class SyncEnvSession:
    def __init__(self, url: str, env: str | None = None, **options: Any) -> None:
        self._stack = ExitStack()
        try:
            self._portal = self._stack.enter_context(start_blocking_portal())
            self._session: EnvSession = self._stack.enter_context(
                self._portal.wrap_async_context_manager(connect(url, env, **options))
            )
        except BaseException:
            self._stack.close()
            raise

    @property
    def session_id(self) -> str | None:
        return self._session.session_id

    @property
    def session(self) -> EnvSession:
        return self._session

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None, **kw: Any) -> StepResult:
        return self._portal.call(lambda: self._session.reset(seed, options, **kw))

    def step(self, action: Any, **kw: Any) -> StepResult:
        return self._portal.call(lambda: self._session.step(action, **kw))

    def call_tool(self, name: str, arguments: dict[str, Any] | None = None, **kw: Any) -> StepResult:
        return self._portal.call(lambda: self._session.call_tool(name, arguments, **kw))

    def state(self, **kw: Any) -> Any:
        return self._portal.call(lambda: self._session.state(**kw))

    def close(self) -> None:
        """Close the session and stop the background loop. Idempotent."""
        self._stack.close()

    def __enter__(self) -> SyncEnvSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect_sync(url: str, env: str | None = None, **options: Any) -> SyncEnvSession:
    """Blocking twin of :func:`connect`: use as ``with connect_sync(url, "echo") as env:``."""
    return SyncEnvSession(url, env, **options)

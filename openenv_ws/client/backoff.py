"""The one reconnect policy of the client: bounded attempts, exponential backoff.

Used wherever the client opens a socket again: a session's own connection
(:class:`~openenv_ws.client.session.EnvSession`) and a multiplexed one
(:class:`~openenv_ws.client.mux.MuxLink`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import anyio

from .transport import ConnectionLost

T = TypeVar("T")

RETRIED = (ConnectionLost, OSError, TimeoutError)
"""What a lost or refused connection raises; anything else (a typed error from the server) is final."""


class GaveUp(Exception):
    """Every attempt failed; ``last`` is the last failure."""

    def __init__(self, attempts: int, last: BaseException | None) -> None:
        super().__init__(f"could not reconnect after {attempts} attempts: {last}")
        self.attempts = attempts
        self.last = last


@dataclass(frozen=True, slots=True)
class Backoff:
    attempts: int = 8
    """Tries at most, before giving up."""
    initial: float = 0.05
    """Seconds to wait after the first failure; doubled after each one."""
    maximum: float = 2.0
    """The longest wait between two tries."""

    def delays(self) -> Iterator[float]:
        """The wait after each failed attempt (one per attempt)."""
        delay = self.initial
        for _ in range(self.attempts):
            yield delay
            delay = min(delay * 2, self.maximum)

    async def retry(self, attempt: Callable[[], Awaitable[T]], timeout: float) -> T:
        """``await attempt()`` (each bounded by ``timeout``) until it succeeds; raises :class:`GaveUp`."""
        last: BaseException | None = None
        for delay in self.delays():
            try:
                with anyio.fail_after(timeout):
                    return await attempt()
            except RETRIED as exc:
                last = exc
                await anyio.sleep(delay)
        raise GaveUp(self.attempts, last)

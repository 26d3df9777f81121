"""The warm pool: started sandbox containers waiting for sessions, and the start-storm control.

Every container start of an environment goes through its pool, warm or not. A session that
finds a ready container takes it at once (tens of milliseconds instead of a ~0.5 s cold start).
One that finds none joins a first-come-first-served queue and receives the first container
that becomes ready, so a start that was refilling the pool serves the waiting session first
and the pool refills after. All pools share one semaphore that caps the containers starting
at once (starts are CPU-bound in the engine: past a few, each only gets slower). A container
serves one session and is then discarded, never reused.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc

from ...errors import CapacityError, OpenEnvWSError, SandboxStartError
from .containers import Container

log = logging.getLogger("openenv_ws.sandbox.docker")

RETRY_DELAY = (1.0, 30.0)
"""First and longest pause before refilling again after a failed start (with no session waiting)."""
MAINTAIN_INTERVAL = 1.0


@dataclass(eq=False)
class _Waiter:
    done: anyio.Event
    container: Container | None = None
    error: OpenEnvWSError | None = None


class WarmPool:
    def __init__(
        self,
        name: str,
        launch: Callable[[], Awaitable[Container]],
        discard: Callable[[Container], Awaitable[None]],
        *,
        target: int,
        starts: anyio.Semaphore,
        max_age: float,
        task_group: anyio.abc.TaskGroup,
    ) -> None:
        self.name = name
        self.target = target
        self._launch = launch
        self._discard = discard
        self._starts = starts
        self._max_age = max_age
        self._tg = task_group
        self._ready: deque[Container] = deque()
        self._waiters: deque[_Waiter] = deque()
        self._starting = 0
        self._failures = 0  # consecutive
        self._retry_at = 0.0
        self._closed = False
        self.stats = {"warm": 0, "cold": 0, "started": 0, "failed": 0}
        self.last_error = ""

    # ------------------------------------------------------------ sessions

    async def acquire(self, timeout: float) -> tuple[Container, bool]:
        """A connected container for a new session, and whether it was already warm.

        Waits in order, at most ``timeout`` seconds, then raises :class:`CapacityError`;
        a failed start raises its :class:`SandboxStartError` to the session that waited for it.
        """
        while self._ready:
            container = self._ready.popleft()
            if self._usable(container):
                self.stats["warm"] += 1
                self._fill()
                return container, True
            self._tg.start_soon(self._discard, container)
        waiter = _Waiter(anyio.Event())
        self._waiters.append(waiter)
        self._fill()
        try:
            with anyio.fail_after(timeout):
                await waiter.done.wait()
        except TimeoutError:
            self._withdraw(waiter)
            raise CapacityError(
                f"no sandbox became ready within {timeout}s ({self._starting} starting, "
                f"{len(self._waiters)} more waiting; containers start a few at a time)",
                retry_after=1.0,
                fatal=True,
            ) from None
        except BaseException:
            self._withdraw(waiter)
            raise
        if waiter.error is not None:
            raise waiter.error
        assert waiter.container is not None
        self.stats["cold"] += 1
        return waiter.container, False

    def _withdraw(self, waiter: _Waiter) -> None:
        if waiter in self._waiters:
            self._waiters.remove(waiter)
        if waiter.container is not None:  # handed over just as the wait ended: keep it for the next
            self._give(waiter.container)
        self._fill()

    # ------------------------------------------------------------ filling

    def _usable(self, container: Container) -> bool:
        return not container.exited and time.monotonic() - container.ready_at < self._max_age

    def _next_waiter(self) -> _Waiter | None:
        """The session that has waited longest and still waits."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done.is_set():
                return waiter
        return None

    def _give(self, container: Container) -> None:
        waiter = self._next_waiter()
        if waiter is None:
            self._ready.append(container)
            return
        waiter.container = container
        waiter.done.set()

    def _fill(self) -> None:
        """Start what the waiting sessions and the pool's target need; drop what exceeds it."""
        if self._closed:
            return
        wanted = len(self._waiters) + (self.target if time.monotonic() >= self._retry_at else 0)
        while len(self._ready) + self._starting < wanted:
            self._starting += 1
            self._tg.start_soon(self._start_one)
        while not self._waiters and len(self._ready) > self.target:
            self._tg.start_soon(self._discard, self._ready.pop())

    async def _start_one(self) -> None:
        container: Container | None = None
        error: Exception | None = None
        try:
            async with self._starts:
                if not self._closed:
                    container = await self._launch()
        except Exception as exc:
            error = exc
        finally:
            self._starting -= 1
        if error is not None:
            self._failed(error)
        elif container is not None:
            self.stats["started"] += 1
            self._failures = 0
            if self._closed:
                await self._discard(container)
                return
            self._give(container)
        self._fill()

    def _failed(self, exc: Exception) -> None:
        error = exc if isinstance(exc, OpenEnvWSError) else SandboxStartError(f"{type(exc).__name__}: {exc}")
        error.fatal = True
        self.stats["failed"] += 1
        self._failures += 1
        self.last_error = error.message
        waiter = self._next_waiter()
        if waiter is not None:  # the session that waited longest gets the error
            waiter.error = error
            waiter.done.set()
        else:  # only the pool's own refill failed: back off before the next try
            delay = min(RETRY_DELAY[0] * 2 ** (self._failures - 1), RETRY_DELAY[1])
            self._retry_at = time.monotonic() + delay
            log.warning("%s pool: a sandbox failed to start (retry in %.0fs): %s", self.name, delay, error.message)

    async def maintain(self) -> None:
        """For the pool's lifetime: drop containers that died or aged while waiting; refill."""
        while not self._closed:
            for container in [c for c in self._ready if not self._usable(c)]:
                self._ready.remove(container)
                self._tg.start_soon(self._discard, container)
            self._fill()
            await anyio.sleep(MAINTAIN_INTERVAL)

    def close(self) -> list[Container]:
        """Stop refilling; returns the ready containers for the caller to discard."""
        self._closed = True
        ready, self._ready = list(self._ready), deque()
        return ready

    def describe(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "ready": len(self._ready),
            "starting": self._starting,
            "waiting": len(self._waiters),
            **self.stats,
            **({"last_error": self.last_error} if self.last_error else {}),
        }

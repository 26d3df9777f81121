"""The warm pool: started, paused sandbox containers waiting for sessions, sized by recent demand.

Every container start of an environment goes through its pool, warm or not. A session that
finds a ready container takes it at once (tens of milliseconds instead of a cold start of a
few hundred). One that finds none joins a first-come-first-served queue and receives the first
container that becomes ready, so a start that was refilling the pool serves the waiting session
first and the pool refills after. Starts are shared out by :class:`~.slots.StartSlots`.

The pool's size follows demand: its target is the largest wave of sessions asked for recently
(:class:`~.demand.DemandWindow`), at least its floor (``--pool N``) and at most its ceiling,
and the memory of every pooled container of the server stays within the budget
(:class:`~.memory.MemoryBudget`). So after a wave, the pool refills to the wave's size and the
next wave is served warm; when waves stop, the pool shrinks back to its floor.

Idle pooled containers are paused (the engine's freezer: no CPU at all), except the few kept
running for the quickest hand-out. A pooled container is checked when handed out: a paused one
is unpaused and its worker must answer a ping, a running one must not have exited; a dead one
is discarded and the next one tried, so a container whose process was killed while it waited
is never given to a session. A container
serves one session and is then discarded, never reused.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import anyio.abc

from ...errors import CapacityError, OpenEnvWSError, SandboxStartError
from ..base import StartTimings
from .containers import Container
from .demand import DemandWindow
from .memory import MemoryBudget
from .slots import StartSlots

log = logging.getLogger("openenv_ws.sandbox.docker")

RETRY_DELAY = (1.0, 30.0)
"""First and longest pause before refilling again after a failed start (with no session waiting)."""
MAINTAIN_INTERVAL = 1.0


@dataclass(frozen=True)
class PoolSettings:
    floor: int = 0
    """Containers kept ready whatever the demand (``--pool N``)."""
    ceiling: int = 256
    """Most containers kept ready, whatever the demand."""
    demand: bool = True
    """Size the pool by recent demand (False: always ``floor``)."""
    window: float = 600.0
    """How long a wave of opens is remembered (s)."""
    span: float = 10.0
    """Opens within this many seconds of each other count as one wave (s)."""
    running: int = 2
    """Pooled containers left running (not paused) for the quickest hand-out."""
    health_timeout: float = 2.0
    """How long a pooled worker has to answer the ping at hand-out (s)."""
    max_age: float = 43200.0
    """A pooled container older than this is replaced (half of its lease)."""


class PoolEngine(Protocol):
    """What a pool asks of the backend beyond starting a container."""

    async def discard(self, container: Container) -> None: ...

    async def pause(self, container: Container) -> None: ...

    async def unpause(self, container: Container) -> None: ...

    async def alive(self, container: Container, timeout: float) -> bool: ...

    async def memory(self, container: Container) -> int | None: ...


@dataclass(eq=False)
class _Waiter:
    done: anyio.Event
    since: float
    container: Container | None = None
    error: OpenEnvWSError | None = None


class WarmPool:
    def __init__(
        self,
        name: str,
        launch: Callable[[], Awaitable[Container]],
        engine: PoolEngine,
        settings: PoolSettings,
        *,
        slots: StartSlots,
        budget: MemoryBudget,
        timings: StartTimings,
        task_group: anyio.abc.TaskGroup,
    ) -> None:
        self.name = name
        self.settings = settings
        self._launch = launch
        self._engine = engine
        self._slots = slots
        self._budget = budget
        self._timings = timings
        self._tg = task_group
        self._demand = DemandWindow(settings.window, settings.span) if settings.demand else None
        self._ready: deque[Container] = deque()  # oldest first
        self._waiters: deque[_Waiter] = deque()
        self._starting = 0
        self._moving: set[Container] = set()  # being paused or unpaused in the background
        self._failures = 0  # consecutive
        self._retry_at = 0.0
        self._closed = False
        self.stats = {"warm": 0, "cold": 0, "refills": 0, "discarded": 0, "started": 0, "failed": 0}
        self.last_error = ""
        slots.add(self)

    # ------------------------------------------------------------ sizing

    @property
    def demand(self) -> int:
        return self._demand.peak(time.monotonic()) if self._demand is not None else 0

    @property
    def target(self) -> int:
        """How many containers the pool wants ready now (the budget may allow fewer)."""
        settings = self.settings
        return max(settings.floor, min(self.demand, settings.ceiling))

    # ------------------------------------------------------------ sessions

    def wanted(self) -> None:
        """A session asked for a container (counted on arrival: the server may make it wait for a
        start slot before :meth:`acquire`, which would spread a wave's opens over time)."""
        if self._demand is not None:
            self._demand.record(time.monotonic())

    async def acquire(self, timeout: float) -> tuple[Container, bool]:
        """A connected, running container for a new session, and whether it was already warm.

        Waits in order, at most ``timeout`` seconds, then raises :class:`CapacityError`;
        a failed start raises its :class:`SandboxStartError` to the session that waited for it.
        """
        while self._ready:
            container = self._take()
            if await self._healthy(container):
                self.stats["warm"] += 1
                self._timings.pool_event(self.name, "hit")
                self._kick()
                return container, True
            log.warning(
                "%s pool: %s failed its hand-out check (exited, too old, or no pong within %gs): replaced",
                self.name,
                container.id[:12],
                self.settings.health_timeout,
            )
            self._drop(container)
        waiter = _Waiter(anyio.Event(), time.monotonic())
        self._waiters.append(waiter)
        self._kick()
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
        self._timings.pool_event(self.name, "miss")
        self._timings.stage("pool_wait", time.monotonic() - waiter.since)
        return waiter.container, False

    def _take(self) -> Container:
        """The next pooled container: a running one if any (no unpause needed), else the oldest."""
        chosen = next((c for c in self._ready if not c.paused and c not in self._moving), self._ready[0])
        self._ready.remove(chosen)
        self._budget.release(chosen.id)
        return chosen

    async def _healthy(self, container: Container) -> bool:
        """A paused container is unpaused and must answer a ping; a running one must not have exited.

        While a container is paused its death cannot show (a killed process dies when thawed),
        so only the ping tells. A running container's death is reported by the engine within
        milliseconds (:mod:`.exits`), and a ping would cost the session a round trip.
        """
        if container.exited or not self._usable(container):
            return False
        async with container.lock:  # waits for a pause in progress
            if not container.paused:
                return True
            began = time.perf_counter()
            try:
                await self._engine.unpause(container)
            except Exception as exc:
                log.warning("%s pool: could not unpause %s: %s", self.name, container.id[:12], exc)
                return False
            container.paused = False
            self._timings.stage("unpause", time.perf_counter() - began)
        return await self._engine.alive(container, self.settings.health_timeout)

    def _withdraw(self, waiter: _Waiter) -> None:
        if waiter in self._waiters:
            self._waiters.remove(waiter)
        if waiter.container is not None:  # handed over just as the wait ended: keep it for the next
            self._give(waiter.container)
        self._kick()

    # ------------------------------------------------------------ what the start slots ask

    def urgent_need(self) -> int:
        return 0 if self._closed else len(self._waiters) - self._starting

    def refill_need(self) -> int:
        if self._closed or time.monotonic() < self._retry_at or not self._budget.fits(self.name):
            return 0
        spare = max(0, self._starting - len(self._waiters))  # starts that will land in the pool
        return self.target - len(self._ready) - spare

    def waiting_since(self) -> float:
        return self._waiters[0].since if self._waiters else float("inf")

    def begin_start(self, urgent: bool) -> int:
        self._starting += 1
        return 0 if urgent else self._budget.reserve(self.name)

    async def run_start(self, reserved: int) -> None:
        container: Container | None = None
        error: Exception | None = None
        try:
            container = await self._launch()
        except Exception as exc:
            error = exc
        finally:
            self._starting -= 1
            self._budget.unreserve(reserved)
        if error is not None:
            self._failed(error)
        elif container is not None:
            self.stats["started"] += 1
            self._failures = 0
            for stage, seconds in container.stages.items():
                self._timings.stage(stage, seconds)
            if self._closed:
                await self._engine.discard(container)
                return
            self._give(container)
        self._kick()

    # ------------------------------------------------------------ filling and shrinking

    def _usable(self, container: Container) -> bool:
        return not container.exited and time.monotonic() - container.ready_at < self.settings.max_age

    def _next_waiter(self) -> _Waiter | None:
        """The session that has waited longest and still waits."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done.is_set():
                return waiter
        return None

    def _give(self, container: Container) -> None:
        waiter = self._next_waiter()
        if waiter is not None:
            waiter.container = container
            waiter.done.set()
            return
        self._ready.append(container)
        self._budget.charge(container.id, self.name)
        self.stats["refills"] += 1
        self._timings.pool_event(self.name, "refill")
        self._tg.start_soon(self._measure, container)

    def _drop(self, container: Container) -> None:
        """Remove a pooled container unused."""
        if container in self._ready:
            self._ready.remove(container)
        self._budget.release(container.id)
        self.stats["discarded"] += 1
        self._timings.pool_event(self.name, "discard")
        self._tg.start_soon(self._engine.discard, container)

    def _kick(self) -> None:
        """Shrink to the target and the budget, and start what is needed."""
        if self._closed:
            return
        if not self._waiters:
            while len(self._ready) > self.target:
                self._drop(self._newest_paused())
            while self._budget.excess() and self._ready:
                self._drop(self._newest_paused())
        self._slots.kick()

    def _newest_paused(self) -> Container:
        return next((c for c in reversed(self._ready) if c.paused), self._ready[-1])

    def _balance(self) -> None:
        """Pause or unpause to keep ``running`` awake; once a second, so a burst of hand-outs is not
        slowed by background pauses and unpauses (the engine's CPU is what the starts need)."""
        settled = [c for c in self._ready if c not in self._moving]
        awake = [c for c in settled if not c.paused]
        asleep = [c for c in settled if c.paused]
        keep = self.settings.running
        for container in awake[keep:]:
            self._moving.add(container)
            self._tg.start_soon(self._freeze, container, True)
        for container in asleep[: max(0, keep - len(awake))]:
            self._moving.add(container)
            self._tg.start_soon(self._freeze, container, False)

    async def _freeze(self, container: Container, paused: bool) -> None:
        """Pause (or unpause) a container still waiting in the pool."""
        try:
            async with container.lock:
                if container in self._ready and container.paused != paused:
                    await (self._engine.pause if paused else self._engine.unpause)(container)
                    container.paused = paused
        except Exception as exc:
            log.warning("%s pool: could not (un)pause %s: %s", self.name, container.id[:12], exc)
            if container in self._ready:
                self._drop(container)
        finally:
            self._moving.discard(container)

    async def _measure(self, container: Container) -> None:
        """Charge the budget with what the pooled container really uses (after a pause under way)."""
        async with container.lock:
            pass
        try:
            used = await self._engine.memory(container)
        except Exception as exc:  # it runs in the backend's task group: an error here must not stop the backend
            log.warning("%s pool: could not measure %s: %s", self.name, container.id[:12], exc)
            return
        if used is not None and container in self._ready:
            self._budget.charge(container.id, self.name, used)
            self._kick()

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
        """For the pool's lifetime: drop containers that died or aged while waiting; resize as demand moves."""
        while not self._closed:
            for container in [c for c in self._ready if not self._usable(c)]:
                self._drop(container)
            self._kick()
            self._balance()
            await anyio.sleep(MAINTAIN_INTERVAL)

    def close(self) -> list[Container]:
        """Stop refilling; returns the ready containers for the caller to discard."""
        self._closed = True
        ready, self._ready = list(self._ready), deque()
        for container in ready:
            self._budget.release(container.id)
        return ready

    def describe(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "demand": self.demand,
            "floor": self.settings.floor,
            "ceiling": self.settings.ceiling,
            "ready": len(self._ready),
            "paused": sum(1 for c in self._ready if c.paused),
            "memory_bytes": sum(self._budget.charged.get(c.id, 0) for c in self._ready),
            "starting": self._starting,
            "waiting": len(self._waiters),
            **self.stats,
            **({"last_error": self.last_error} if self.last_error else {}),
        }

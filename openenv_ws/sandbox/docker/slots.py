"""The cap on container starts, shared by every warm pool, with sessions served before refills.

Starting a container is CPU work in the engine (runc, the shim): past a few at once, each only
gets slower. So at most ``limit`` starts run at once, and whenever one ends the next slot goes
first to the pool whose session has waited longest, and only when no session waits to the pool
that lacks the most containers. A refill therefore runs at whatever rate the engine allows, yet
a session that finds its pool empty waits for at most one start to finish.
"""

from __future__ import annotations

from typing import Protocol

import anyio.abc


class Starter(Protocol):
    """A pool, as the slots see it."""

    def urgent_need(self) -> int:
        """Starts wanted now by sessions waiting (beyond those already running)."""

    def refill_need(self) -> int:
        """Starts wanted to bring the pool to its target (0 while it backs off after a failure)."""

    def waiting_since(self) -> float:
        """When its longest-waiting session began to wait."""

    def begin_start(self, urgent: bool) -> int:
        """Account for a start about to run; returns what :meth:`run_start` needs back."""

    async def run_start(self, token: int) -> None:
        """Start one container and hand it to a waiting session or to the pool."""


class StartSlots:
    def __init__(self, limit: int, task_group: anyio.abc.TaskGroup) -> None:
        self.limit = limit
        self.busy = 0
        self._tg = task_group
        self._starters: list[Starter] = []

    def add(self, starter: Starter) -> None:
        self._starters.append(starter)

    def kick(self) -> None:
        """Fill every free slot with the most pressing start (none once the backend is stopping)."""
        while self.busy < self.limit and not self._tg.cancel_scope.cancel_called:
            chosen = self._next()
            if chosen is None:
                return
            starter, urgent = chosen
            self.busy += 1
            self._tg.start_soon(self._run, starter, starter.begin_start(urgent))

    def _next(self) -> tuple[Starter, bool] | None:
        urgent = [s for s in self._starters if s.urgent_need() > 0]
        if urgent:
            return min(urgent, key=lambda s: s.waiting_since()), True
        refill = [(s.refill_need(), i) for i, s in enumerate(self._starters)]
        need, index = max(refill, default=(0, -1))
        return (self._starters[index], False) if need > 0 else None

    async def _run(self, starter: Starter, token: int) -> None:
        try:
            await starter.run_start(token)
        finally:
            self.busy -= 1
            self.kick()

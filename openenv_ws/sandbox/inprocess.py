"""The in-process backend: the environment lives in the server's own process.

The fastest path (no relay, no extra process) and the least isolated: a crash or a
blocking call in the environment affects the server. Use it for trusted environments,
tests and benchmarks.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..errors import SandboxCrashedError
from ..protocol import SandboxReply, SandboxRequest
from ..registry import EnvSpec
from .base import Backend, Sandbox, new_session_id
from .episode import EpisodeRunner, EventSink


class InProcessSandbox(Sandbox):
    def __init__(self, runner: EpisodeRunner) -> None:
        self._runner = runner
        self.id = "inprocess"
        self._running: asyncio.Task[Any] | None = None
        self._stopped = False

    async def request(self, frame: SandboxRequest, sink: EventSink) -> SandboxReply:
        if self._stopped:
            raise SandboxCrashedError("the sandbox was stopped", fatal=True)
        # The task applying the request, so that close() can stop a request that never returns
        # (its deadline passed, or the server drains): a task reference costs nothing per step,
        # a cancel scope would. The server runs on asyncio.
        task = self._running = asyncio.current_task()
        try:
            return await self._runner.handle(frame, sink)
        except asyncio.CancelledError:
            if self._stopped and task is not None and task.uncancel() == 0:
                raise SandboxCrashedError("the sandbox was stopped during the request", fatal=True) from None
            raise
        finally:
            self._running = None

    async def close(self) -> None:
        self._stopped = True
        running = self._running
        if running is not None and running is not asyncio.current_task():
            running.cancel()
        try:
            await self._runner.close()
        except Exception:  # an env that fails to close must not break the server
            pass


class InProcessBackend(Backend):
    name = "inprocess"

    async def open(self, spec: EnvSpec, options: dict[str, Any]) -> Sandbox:
        sandbox = InProcessSandbox(await EpisodeRunner.create(spec.cls, options))
        sandbox.session_id = new_session_id(self.node)
        return sandbox

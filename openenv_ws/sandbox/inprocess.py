"""The in-process backend: the environment lives in the server's own process.

The fastest path (no relay, no extra process) and the least isolated: a crash or a
blocking call in the environment affects the server. Use it for trusted environments,
tests and benchmarks.
"""

from __future__ import annotations

from typing import Any

from ..protocol import Reply, Request
from ..registry import EnvSpec
from .base import Backend, Sandbox, new_session_id
from .episode import EpisodeRunner, EventSink


class InProcessSandbox(Sandbox):
    def __init__(self, runner: EpisodeRunner) -> None:
        self._runner = runner
        self.id = "inprocess"

    async def request(self, frame: Request, sink: EventSink) -> Reply:
        return await self._runner.handle(frame, sink)

    async def close(self) -> None:
        try:
            await self._runner.close()
        except Exception:  # an env that fails to close must not break the server
            pass


class InProcessBackend(Backend):
    name = "inprocess"

    async def open(self, spec: EnvSpec, options: dict[str, Any]) -> Sandbox:
        sandbox = InProcessSandbox(await EpisodeRunner.create(spec.cls, options))
        sandbox.session_id = new_session_id()
        return sandbox

"""The environment side of ``child.py``: the base of environments backed by a helper process.

A client chooses the options, so each one that costs the sandbox or the server something has a
hard ceiling here; a value above it is refused at open with a ``bad_options`` error naming it.
"""

from __future__ import annotations

import uuid
from typing import Any

import anyio

from openenv_ws.confine import Confinement
from openenv_ws.env import Environment

from .child import ChildProcess, Workspace
from .options import bad_option
from .tasks import choose_task, requested_task

OUTPUT_CHARS_CEILING = 1 << 20
"""The most ``max_output_chars`` a client may ask for: characters of each stream an observation keeps."""
TIMEOUT_S_CEILING = 600.0
"""The most ``timeout_s`` and ``max_timeout_s`` a client may ask for: seconds one step may run."""
CHECK_TIMEOUT_S_CEILING = 60.0
"""The most ``check_timeout_s`` a client may ask for: seconds a task's setup, checker or tests may run."""


def _within(name: str, value: float, low: float, ceiling: float) -> None:
    if not low < value <= ceiling:
        raise bad_option(f"{name} must be > {low:g} and <= {ceiling:g} (the server's ceiling), got {value:g}", name)


class ProcessEnvironment(Environment):
    """What the coding and shell environments share: per episode a workspace, a child process and
    maybe a task; per step a timeout (the action's, the default, capped) and streamed output."""

    def __init__(
        self,
        task: str | None = None,
        timeout_s: float = 10.0,
        max_timeout_s: float = 60.0,
        max_output_chars: int = 16384,
        max_steps: int | None = None,
        check_timeout_s: float = 10.0,
    ) -> None:
        _within("timeout_s", timeout_s, 0, TIMEOUT_S_CEILING)
        _within("max_timeout_s", max_timeout_s, 0, TIMEOUT_S_CEILING)
        _within("check_timeout_s", check_timeout_s, 0, CHECK_TIMEOUT_S_CEILING)
        _within("max_output_chars", max_output_chars, 63, OUTPUT_CHARS_CEILING)
        if max_steps is not None and max_steps < 1:
            raise bad_option("max_steps must be >= 1", "max_steps")
        self.confinement = Confinement.from_environ()
        self.task_option = task
        choose_task(self._tasks(), task, None)  # an unknown task fails at open, not at the first reset
        self.timeout_s = timeout_s
        self.max_timeout_s = max_timeout_s
        self.max_output_chars = max_output_chars
        self.max_steps = max_steps
        self.check_timeout_s = check_timeout_s
        self.seed: int | None = None
        self.episode_id = ""
        self.task_name: str | None = None
        self.task: dict[str, Any] | None = None
        self._workspace: Workspace | None = None
        self._child: ChildProcess | None = None

    # ------------------------------------------------------------ what a subclass provides

    def _tasks(self) -> dict[str, dict[str, Any]]:
        return {}

    async def _spawn(self) -> ChildProcess:
        raise NotImplementedError

    async def _prepare(self) -> None:
        """Called with the new workspace before the child starts (e.g. a task's setup)."""

    # ------------------------------------------------------------ shared

    @property
    def workspace(self) -> Workspace:
        assert self._workspace is not None, "reset() first"
        return self._workspace

    @property
    def child(self) -> ChildProcess:
        assert self._child is not None, "reset() first"
        return self._child

    async def _begin(self, seed: int | None, options: dict[str, Any] | None) -> None:
        """Start an episode: end the previous one, choose the task, make the workspace, start the child."""
        task = choose_task(self._tasks(), requested_task(options, self.task_option), seed)
        await self._end()
        self.seed, self.task_name = seed, task
        self.task = self._tasks()[task] if task else None
        self.episode_id = str(uuid.uuid4())
        self._workspace = await Workspace.create(f"openenv-{self.name}-", self.confinement)
        await self._prepare()
        self._child = await self._spawn()

    async def _restart(self) -> None:
        """Replace a dead (or killed) child with a fresh one in the same workspace."""
        await self.child.close()
        self._child = await self._spawn()

    def _timeout(self, requested: float | None) -> float:
        return min(requested or self.timeout_s, self.max_timeout_s)

    async def _stream(self, stream: str, text: str) -> None:
        await self.emit({"stream": stream, "text": text})

    def _truncated(self, step_count: int) -> bool:
        return self.max_steps is not None and step_count >= self.max_steps

    async def _end(self) -> None:
        """End the episode: its child, then its workspace (and with it every process of the agent's uid)."""
        with anyio.CancelScope(shield=True):
            if self._child is not None:
                await self._child.close()
                self._child = None
            if self._workspace is not None:
                await self._workspace.remove()
                self._workspace = None

    async def close(self) -> None:
        await self._end()

"""Environments that misbehave on purpose, for the tests."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from msgspec import Struct

from openenv_ws.env import Action, Environment, Observation, State, StepResult, SyncEnvironment
from openenv_ws.rubrics import AtEnd, Scoring, check
from openenv_ws.toolbox import ToolCall, ToolError, tool


class FlakyAction(Action):
    op: str = "ok"  # ok | raise | crash | sleep | pid | flood | big | print
    seconds: float = 0.0
    count: int = 0  # flood: events to stream; big: bytes of the observation
    size: int = 0  # flood: bytes of each event
    text: str = ""
    """What ``print`` writes to the process's stdout and stderr (``times`` times each)."""
    times: int = 1


class FlakyObservation(Observation):
    op: str = ""
    pid: int = 0
    blob: str = ""


class FlakyEnv(Environment):
    """Does what the action says: answers, raises, kills its own process, or sleeps."""

    name = "flaky"
    action_type = FlakyAction
    observation_type = FlakyObservation

    def __init__(self) -> None:
        self.steps = 0

    async def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> StepResult:
        self.steps = 0
        return StepResult(observation=FlakyObservation(pid=os.getpid()))

    async def step(self, action: FlakyAction) -> StepResult:
        import anyio

        self.steps += 1
        if action.op == "raise":
            raise RuntimeError("the env failed on purpose")
        if action.op == "crash":
            os.kill(os.getpid(), signal.SIGKILL)
        if action.op == "sleep":
            await anyio.sleep(action.seconds)
        if action.op == "flood":
            chunk = "x" * action.size
            for index in range(action.count):
                await self.emit({"index": index, "chunk": chunk})
        if action.op == "print":
            for fd in (1, 2):
                for _ in range(action.times):
                    os.write(fd, action.text.encode())
        blob = "y" * action.count if action.op == "big" else ""
        return StepResult(observation=FlakyObservation(op=action.op, pid=os.getpid(), blob=blob), reward=1.0)

    async def state(self) -> State:
        return State(step_count=self.steps)


class CounterAction(Action):
    add: int


class CounterObservation(Observation):
    total: int


class SyncCounterEnv(SyncEnvironment):
    """A blocking environment: runs on worker threads, streams one event per step."""

    name = "counter"
    action_type = CounterAction
    observation_type = CounterObservation

    def __init__(self, target: int = 10) -> None:
        self.target = target
        self.total = 0
        self.steps = 0

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> StepResult:
        self.total = seed or 0
        self.steps = 0
        return StepResult(observation=CounterObservation(total=self.total))

    def step(self, action: CounterAction) -> StepResult:
        return self._add(action.add)

    @tool
    def add(self, amount: int) -> StepResult[CounterObservation]:
        """Add to the total (a tool of a blocking environment: it runs on a worker thread)."""
        return self._add(amount)

    def _add(self, amount: int) -> StepResult:
        time.sleep(0.001)  # blocking on purpose: must not stall the event loop
        self.emit({"adding": amount})
        self.total += amount
        self.steps += 1
        done = self.total >= self.target
        return StepResult(observation=CounterObservation(total=self.total), reward=float(done), terminated=done)

    def state(self) -> State:
        return State(step_count=self.steps)


class DrawAction(Action):
    pass


class DrawObservation(Observation):
    draw: int
    total: int


class LuckyEnv(Environment):
    """Draws an unseeded random number each step: a replay of its episode cannot match."""

    name = "lucky"
    action_type = DrawAction
    observation_type = DrawObservation

    def __init__(self) -> None:
        self.total = 0
        self.steps = 0

    async def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> StepResult:
        self.total = self.steps = 0
        return StepResult(observation=DrawObservation(draw=0, total=0))

    async def step(self, action: DrawAction) -> StepResult:
        import random

        draw = random.SystemRandom().randrange(1 << 30)
        self.total += draw
        self.steps += 1
        return StepResult(observation=DrawObservation(draw=draw, total=self.total))

    async def state(self) -> State:
        return State(step_count=self.steps)


class LuckySnapshot(Struct, kw_only=True):
    total: int
    steps: int


class SnapshotLuckyEnv(LuckyEnv):
    """The same, but it can hand over its state: copies are exact by snapshot, where replay would fail."""

    name = "snapshot-lucky"
    snapshot_type = LuckySnapshot

    async def snapshot(self) -> LuckySnapshot:
        return LuckySnapshot(total=self.total, steps=self.steps)

    async def restore(self, snapshot: LuckySnapshot) -> None:
        self.total, self.steps = snapshot.total, snapshot.steps


class SealedEnv(LuckyEnv):
    """Declares that its episodes cannot be copied."""

    name = "sealed"
    state_capture = "none"


@check
def answer(turn: Any) -> bool:
    """The note named ``answer`` says 42 when the episode ends."""
    return turn.observation.get("notes", {}).get("answer") == "42"


class NotesEnv(Environment):
    """Tools only: a notebook. ``write`` streams an event (and may wait), ``read`` of a missing note is an
    error the model reads, ``finish`` ends the episode; an end-of-episode rubric checks the answer."""

    name = "notes"
    action_type = ToolCall
    rubric = AtEnd(answer, name="final")

    def __init__(self) -> None:
        self.notes: dict[str, str] = {}
        self.writes = 0
        self.steps = 0
        self.scoring = Scoring(self.rubric)

    async def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> StepResult:
        self.notes, self.steps = {}, 0
        self.scoring.start({"notes": {}})
        return StepResult(observation={"notes": {}})

    @tool
    async def write(self, key: str, text: str, delay_s: float = 0.0) -> StepResult:
        """Store a note.

        Args:
            key: The note's name.
            text: What it says.
            delay_s: Seconds to wait before storing it.
        """
        import anyio

        await self.emit({"writing": key})
        await anyio.sleep(delay_s)
        self.notes[key] = text
        self.writes += 1
        return await self._done({"write": key})

    @tool
    async def read(self, key: str) -> str:
        """The text of a note."""
        self.steps += 1
        if key not in self.notes:
            raise ToolError(f"no note named {key!r}")
        return self.notes[key]

    @tool(name="finish", description="End the episode; the answer note is checked.")
    async def finish_episode(self) -> StepResult:
        return await self._done({"finish": True}, terminated=True)

    async def _done(self, action: Any, terminated: bool = False) -> StepResult:
        self.steps += 1
        result = StepResult(observation={"notes": dict(self.notes)}, reward=0.0, terminated=terminated)
        return await self.scoring.score(action, result)

    async def state(self) -> State:
        return State(step_count=self.steps)

"""Environments that misbehave on purpose, for the tests."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from openenv_ws.env import Action, Environment, Observation, State, StepResult, SyncEnvironment


class FlakyAction(Action):
    op: str = "ok"  # ok | raise | crash | sleep | pid | print
    seconds: float = 0.0
    text: str = ""
    """What ``print`` writes to the process's stdout and stderr (``times`` times each)."""
    times: int = 1


class FlakyObservation(Observation):
    op: str = ""
    pid: int = 0


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
        if action.op == "print":
            for fd in (1, 2):
                for _ in range(action.times):
                    os.write(fd, action.text.encode())
        return StepResult(observation=FlakyObservation(op=action.op, pid=os.getpid()), reward=1.0)

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
        time.sleep(0.001)  # blocking on purpose: must not stall the event loop
        self.emit({"adding": action.add})
        self.total += action.add
        self.steps += 1
        done = self.total >= self.target
        return StepResult(observation=CounterObservation(total=self.total), reward=float(done), terminated=done)

    def state(self) -> State:
        return State(step_count=self.steps)

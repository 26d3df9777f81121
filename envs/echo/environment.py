from __future__ import annotations

import uuid
from typing import Any

import anyio

from openenv_ws.env import Action, Environment, Observation, State, StepResult


class EchoAction(Action):
    message: str
    delay_s: float = 0.0
    """Seconds the step sleeps before answering (benchmarks use it to mimic slow envs)."""
    stream: bool = False
    """Stream each word as an event before the result."""


class EchoObservation(Observation):
    echoed_message: str = ""
    message_length: int = 0


class EchoState(State):
    last_message: str = ""


class EchoEnvironment(Environment):
    """reward = 0.1 x message length; truncated after ``max_steps`` steps when set."""

    name = "echo"
    action_type = EchoAction
    observation_type = EchoObservation
    state_type = EchoState
    nondeterministic_fields = ("state.episode_id",)  # a fresh uuid4 per episode

    def __init__(self, max_steps: int | None = None) -> None:
        self.max_steps = max_steps
        self._state = EchoState()

    async def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> StepResult:
        self._state = EchoState(episode_id=str(uuid.uuid4()), step_count=0)
        return StepResult(observation=EchoObservation())

    async def step(self, action: EchoAction) -> StepResult:
        if action.delay_s > 0:
            await anyio.sleep(action.delay_s)
        if action.stream:
            for word in action.message.split():
                await self.emit({"word": word})
        self._state.step_count += 1
        self._state.last_message = action.message
        truncated = self.max_steps is not None and self._state.step_count >= self.max_steps
        return StepResult(
            observation=EchoObservation(echoed_message=action.message, message_length=len(action.message)),
            reward=round(0.1 * len(action.message), 10),
            truncated=truncated,
        )

    async def state(self) -> EchoState:
        return self._state

    # Its whole state is one small Struct: forks and checkpoints copy it directly (no replay).
    snapshot_type = EchoState

    async def snapshot(self) -> EchoState:
        return self._state

    async def restore(self, snapshot: EchoState) -> None:
        self._state = snapshot

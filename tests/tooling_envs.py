"""Environments for the operator-tooling tests (replay, validate)."""

from __future__ import annotations

import os
import random
from typing import Any

from openenv_ws.env import Action, Environment, Observation, State, StepResult


class CoinAction(Action):
    call: str = "heads"


class CoinObservation(Observation):
    side: str = ""
    nonce: str = ""
    """Random on every answer, and not declared: the same seed gives other observations."""


class CoinEnv(Environment):
    """Flips a seeded coin; each observation also carries a fresh random nonce."""

    name = "coin"
    action_type = CoinAction
    observation_type = CoinObservation

    def __init__(self) -> None:
        self.rng = random.Random()
        self.steps = 0

    async def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> StepResult:
        self.rng.seed(seed)
        self.steps = 0
        return StepResult(observation=CoinObservation(nonce=os.urandom(4).hex()))

    async def step(self, action: CoinAction) -> StepResult:
        self.steps += 1
        side = self.rng.choice(["heads", "tails"])
        return StepResult(
            observation=CoinObservation(side=side, nonce=os.urandom(4).hex()), reward=float(side == action.call)
        )

    async def state(self) -> State:
        return State(step_count=self.steps)

"""Connect Four's client: how its actions, observations and state look on OpenEnv's wire."""

from __future__ import annotations

from typing import Any

from openenv.core.client_types import StepResult
from openenv.core.env_client import EnvClient

from .models import Connect4Action, Connect4Observation, Connect4State, empty_board


class Connect4Env(EnvClient[Connect4Action, Connect4Observation, Connect4State]):
    """A persistent WebSocket session with a Connect Four server (``reset``, ``step``, ``state``)."""

    def _step_payload(self, action: Connect4Action) -> dict[str, Any]:
        return {"column": action.column}

    def _parse_result(self, payload: dict[str, Any]) -> StepResult[Connect4Observation]:
        fields = payload.get("observation", {})
        reward = payload.get("reward", 0.0)
        done = payload.get("done", False)
        observation = Connect4Observation(
            board=fields.get("board", empty_board()),
            legal_actions=fields.get("legal_actions", []),
            done=done,
            reward=reward,
            metadata=fields.get("metadata", {}),
        )
        return StepResult(observation=observation, reward=reward, done=done)

    def _parse_state(self, payload: dict[str, Any]) -> Connect4State:
        return Connect4State(
            episode_id=payload.get("episode_id", ""),
            step_count=payload.get("step_count", 0),
            board=payload.get("board", empty_board()),
            next_player=payload.get("next_player", 1),
        )

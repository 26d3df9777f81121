from __future__ import annotations

import uuid
import warnings
from typing import Any

import gymnasium

from openenv_ws.env import Action, Observation, SandboxSettings, State, StepResult, SyncEnvironment
from openenv_ws.errors import ValidationError
from openenv_ws.protocol import ErrorCode
from openenv_ws.spaces import SpaceSpec, Value, decode, describe, encode


class GymAction(Action):
    action: Value
    """An int for a ``Discrete`` space; an :class:`~openenv_ws.spaces.NDArray` or a (nested) list of numbers
    for ``Box``/``MultiDiscrete``/``MultiBinary``; a list for ``Tuple``; a ``DictValue`` for ``Dict``."""


class GymObservation(Observation):
    observation: Value | None = None
    """The environment's observation in wire form (numpy arrays as ``NDArray``: dtype, shape, raw bytes)."""


class GymState(State):
    env_id: str = ""
    observation_space: SpaceSpec | None = None
    action_space: SpaceSpec | None = None
    seed: int | None = None
    episode_return: float = 0.0


def _bad_options(message: str) -> ValidationError:
    return ValidationError(message, path="$.options", code=ErrorCode.BAD_OPTIONS)


class GymEnvironment(SyncEnvironment):
    """Any installed Gymnasium environment, by id (``env_id``); other options go to ``gymnasium.make``.

    ``terminated`` and ``truncated`` are Gymnasium's own (its ``TimeLimit`` included); ``info`` is
    passed through with numpy values in wire form. The spaces are in the state (``observation_space``,
    ``action_space``), readable before the first reset.
    """

    name = "gym"
    action_type = GymAction
    observation_type = GymObservation
    state_type = GymState
    nondeterministic_fields = ("state.episode_id",)  # replays and `openenv-ws validate` skip it
    sandbox = SandboxSettings(extra_packages=("gymnasium", "numpy"))

    def __init__(self, env_id: str = "CartPole-v1", **make_options: Any) -> None:
        if ":" in env_id:  # "module:Env-v0" would import a module named by the client
            raise _bad_options(f"env_id {env_id!r}: give a registered id, not a module path")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.env = gymnasium.make(env_id, **make_options)
        except gymnasium.error.Error as exc:
            raise _bad_options(f"cannot make {env_id!r}: {exc}") from None
        except TypeError as exc:
            raise _bad_options(f"bad options for {env_id!r}: {exc}") from None
        try:
            spaces = describe(self.env.observation_space), describe(self.env.action_space)
        except ValueError as exc:
            self.env.close()
            raise _bad_options(f"{env_id!r}: {exc}") from None
        self._state = GymState(env_id=env_id, observation_space=spaces[0], action_space=spaces[1])

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> StepResult:
        observation, info = self.env.reset(seed=seed, options=options)
        if seed is not None:
            self.env.action_space.seed(seed)
        state = self._state
        state.episode_id, state.step_count, state.seed, state.episode_return = str(uuid.uuid4()), 0, seed, 0.0
        return StepResult(
            observation=GymObservation(encode(observation, self.env.observation_space)), info=encode(info)
        )

    def step(self, action: GymAction) -> StepResult:
        space = self.env.action_space
        try:
            value = decode(action.action, space)
        except ValueError as exc:
            raise ValidationError(f"invalid action for {space}: {exc}", path="$.action") from None
        if not space.contains(value):
            raise ValidationError(f"action {value!r} is outside {space}", path="$.action")
        observation, reward, terminated, truncated, info = self.env.step(value)
        self._state.step_count += 1
        self._state.episode_return += float(reward)
        return StepResult(
            observation=GymObservation(encode(observation, self.env.observation_space)),
            reward=float(reward),
            terminated=bool(terminated),
            truncated=bool(truncated),
            info=encode(info),
        )

    def state(self) -> GymState:
        return self._state

    def close(self) -> None:
        self.env.close()

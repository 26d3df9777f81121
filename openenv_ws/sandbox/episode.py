"""Runs one environment instance: turns request frames into calls and replies.

The same runner serves the in-process backend (inside the server) and the sandbox
worker (inside a child process or a container), so an episode behaves identically on
every backend: validation of actions against the env's typed model (or, for a tool
call, against the tool's arguments), the episode's phase (no step before reset, none
after it ended), and errors named by code.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio.to_thread
import msgspec

from ..env import Environment, StepResult, SyncEnvironment
from ..errors import EpisodeStateError, OpenEnvWSError, ValidationError
from ..protocol import (
    NIL,
    Close,
    Closed,
    Error,
    ErrorCode,
    Event,
    GetState,
    Reset,
    RestoreSnapshot,
    Result,
    SandboxReply,
    SandboxRequest,
    Snapshotted,
    StateReply,
    Step,
    TakeSnapshot,
    pack,
    split_validation_error,
)
from ..toolbox import ToolCall, toolbox

EventSink = Callable[[Event], Awaitable[None]]


class EpisodeRunner:
    def __init__(self, env: Environment) -> None:
        self.env = env
        self._sync = isinstance(env, SyncEnvironment)
        self._actions = msgspec.msgpack.Decoder(env.action_type)
        self._tools = toolbox(type(env), env) or None  # None: one attribute check per step for envs without
        self._tools_only = env.action_type is ToolCall
        self._phase = "new"  # new -> running -> ended (-> running again on reset)
        self._closed = False

    @classmethod
    async def create(cls, env_cls: type[Environment], options: dict[str, Any]) -> EpisodeRunner:
        try:
            if issubclass(env_cls, SyncEnvironment):
                env = await anyio.to_thread.run_sync(lambda: env_cls(**options))
            else:
                env = env_cls(**options)
        except TypeError as exc:
            raise ValidationError(f"bad options for {env_cls.__name__}: {exc}", code=ErrorCode.BAD_OPTIONS) from None
        return cls(env)

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._sync:
            return await anyio.to_thread.run_sync(fn, *args)
        return await fn(*args)

    async def handle(self, frame: SandboxRequest, sink: EventSink) -> SandboxReply:
        """Apply one request; stream its events to ``sink``; return its final reply."""
        seq = frame.seq
        index = 0

        async def emit(data: Any) -> None:
            nonlocal index
            event = Event(seq=seq, index=index, data=pack(data))
            index += 1
            await sink(event)

        self.env._emitter = emit
        try:
            return await self._apply(frame)
        except OpenEnvWSError as exc:
            return exc.to_frame(seq)
        except Exception as exc:  # the env's own failure: report it, keep the session
            return Error(seq=seq, code=ErrorCode.ENV_ERROR, message=f"{type(exc).__name__}: {exc}")
        finally:
            self.env._emitter = None

    async def _apply(self, frame: SandboxRequest) -> SandboxReply:
        match frame:
            case Step():
                if self._phase == "new" and not self.env.steps_before_reset:
                    raise EpisodeStateError("step before reset: call reset() first", code=ErrorCode.NO_EPISODE)
                if self._phase == "ended":
                    raise EpisodeStateError(
                        "the episode has ended (terminated or truncated): call reset() to start another",
                        code=ErrorCode.EPISODE_ENDED,
                    )
                if self._tools is not None and (self._tools_only or self._tools.is_call(frame.action)):
                    bound, arguments = self._tools.decode(frame.action)
                    return self._result(frame.seq, await self._tools.run(self.env, bound, arguments))
                try:
                    action = self._actions.decode(frame.action)
                except msgspec.ValidationError as exc:
                    message, path = split_validation_error(exc)
                    raise ValidationError(f"invalid action: {message}", path=path) from None
                except msgspec.DecodeError as exc:
                    raise ValidationError(f"undecodable action: {exc}") from None
                return self._result(frame.seq, await self._call(self.env.step, action))
            case Reset():
                return self._result(frame.seq, await self._call(self.env.reset, frame.seed, frame.options))
            case GetState():
                return StateReply(seq=frame.seq, state=pack(await self._call(self.env.state)))
            case Close():
                await self.close()
                return Closed(seq=frame.seq, reason="closed by client")
            case TakeSnapshot():
                value = await self._call(self.env.snapshot)  # bytes or any MessagePack-able value
                return Snapshotted(seq=frame.seq, data=bytes(pack(value)), phase=self._phase)
            case RestoreSnapshot():
                await self._call(self.env.restore, msgspec.msgpack.decode(frame.data, type=self.env.snapshot_type))
                self._phase = frame.phase
                return Result(seq=frame.seq, observation=NIL)
        raise EpisodeStateError(f"unexpected request {type(frame).__name__}", code=ErrorCode.UNEXPECTED_FRAME)

    def _result(self, seq: int, result: StepResult) -> Result:
        if not isinstance(result, StepResult):
            raise TypeError(f"reset()/step() must return a StepResult, got {type(result).__name__}")
        self._phase = "ended" if (result.terminated or result.truncated) else "running"
        return Result(
            seq=seq,
            observation=pack(result.observation),
            reward=result.reward,
            terminated=result.terminated,
            truncated=result.truncated,
            info=pack(result.info) if result.info else NIL,
        )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            await self._call(self.env.close)

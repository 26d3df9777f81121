"""OpenEnv's wire shapes and ours, mapped both ways. Pure: no I/O, no server, no client.

OpenEnv (meta-pytorch/OpenEnv, ``pip install openenv``) answers ``reset`` and ``step`` with
``{"observation": {...}, "reward": r, "done": d, "metadata": {...}}``: one ``done`` flag,
where openenv-ws has Gymnasium's ``terminated`` and ``truncated``. The mapping both ways:

- to OpenEnv: ``done = terminated or truncated``; a truncated episode also says
  ``"truncated": true`` in ``metadata`` (our ``info`` travels as ``metadata``).
- from OpenEnv: ``truncated`` when ``done`` and ``metadata["truncated"] is True``, else
  ``terminated = done``; ``metadata`` becomes ``info``.

Errors travel as ``{"type": "error", "data": {"message", "code"}}`` with OpenEnv's codes
(``VALIDATION_ERROR``, ``EXECUTION_ERROR``...); openenv-ws adds its own code as
``ws_code``, and ``path``, ``fatal`` and ``retry_after`` when they apply. Over HTTP an
error is ``{"detail", "code"}`` with the status of :data:`HTTP_STATUS`.

OpenEnv's requests (``reset``/``step``/``state``/``close`` messages, HTTP bodies) become our
request frames here, and our server frames become OpenEnv's messages, so the endpoints in
:mod:`openenv_ws.openenv.ws` and :mod:`openenv_ws.openenv.http` only move them.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from ..env import StepResult
from ..errors import OpenEnvWSError, from_frame
from ..protocol import (
    Close,
    Closed,
    Error,
    ErrorCode,
    GetState,
    ProtocolViolation,
    Request,
    Reset,
    Result,
    ServerFrame,
    StateReply,
    Step,
    json_value,
    pack,
    unpack,
)

# ---------------------------------------------------------------- results


def result_payload(
    observation: Any, reward: float | None, terminated: bool, truncated: bool, info: dict[str, Any] | None
) -> dict[str, Any]:
    """Our result as OpenEnv's ``observation`` payload (also the body of its HTTP ``/reset`` and ``/step``)."""
    metadata = dict(info or {})
    if truncated:
        metadata["truncated"] = True
    if isinstance(observation, dict) and "metadata" not in observation:
        # OpenEnv's observations carry their metadata inside too (most of its env clients read
        # only ``observation["metadata"]``), as well as beside them.
        observation = {"metadata": dict(metadata), **observation}  # first, where pydantic's dump puts it
    payload: dict[str, Any] = {"observation": observation, "reward": reward, "done": terminated or truncated}
    if metadata:
        payload["metadata"] = metadata
    return payload


def frame_payload(frame: Result) -> dict[str, Any]:
    """A :class:`Result` frame as OpenEnv's ``observation`` payload."""
    observation, info = unpack(frame.observation), unpack(frame.info)
    reward = None if frame.reward is None else float(frame.reward)  # a float on the wire, even if built from an int
    return result_payload(observation, reward, frame.terminated, frame.truncated, info)


def step_result(payload: dict[str, Any], observation_type: Any = Any) -> StepResult:
    """OpenEnv's ``observation`` payload as our :class:`StepResult`."""
    metadata = payload.get("metadata") or {}
    done = bool(payload.get("done", False))
    truncated = done and metadata.get("truncated") is True
    observation = payload.get("observation", {})
    if observation_type is not Any:
        observation = msgspec.convert(observation, observation_type)
    reward = payload.get("reward")
    return StepResult(
        observation=observation,
        reward=None if reward is None else float(reward),
        terminated=done and not truncated,
        truncated=truncated,
        info=metadata,
    )


# ---------------------------------------------------------------- errors

OPENENV_CODES = {
    ErrorCode.MALFORMED_FRAME: "INVALID_JSON",
    ErrorCode.FRAME_TOO_LARGE: "VALIDATION_ERROR",
    ErrorCode.VALIDATION: "VALIDATION_ERROR",
    ErrorCode.UNEXPECTED_FRAME: "UNKNOWN_TYPE",
    ErrorCode.UNSUPPORTED_VERSION: "UNKNOWN_TYPE",
    ErrorCode.CAPACITY: "CAPACITY_REACHED",
    ErrorCode.SHUTTING_DOWN: "CAPACITY_REACHED",
    ErrorCode.QUEUE_FULL: "CAPACITY_REACHED",
    ErrorCode.UNKNOWN_ENV: "FACTORY_ERROR",
    ErrorCode.BAD_OPTIONS: "FACTORY_ERROR",
    ErrorCode.SANDBOX_START_FAILED: "FACTORY_ERROR",
    ErrorCode.SESSION_NOT_FOUND: "SESSION_ERROR",
    ErrorCode.SESSION_CLOSED: "SESSION_ERROR",
    ErrorCode.SANDBOX_CRASHED: "SESSION_ERROR",
    ErrorCode.FORBIDDEN: "SESSION_ERROR",
}
"""Our error codes as OpenEnv's ``WSErrorCode``; the rest (env errors, episode state, timeouts) are EXECUTION_ERROR."""

_FROM_OPENENV = {
    "INVALID_JSON": ErrorCode.MALFORMED_FRAME,
    "UNKNOWN_TYPE": ErrorCode.UNEXPECTED_FRAME,
    "VALIDATION_ERROR": ErrorCode.VALIDATION,
    "EXECUTION_ERROR": ErrorCode.ENV_ERROR,
    "CAPACITY_REACHED": ErrorCode.CAPACITY,
    "FACTORY_ERROR": ErrorCode.SANDBOX_START_FAILED,
    "SESSION_ERROR": ErrorCode.SESSION_CLOSED,
}
_FATAL_OPENENV = {"CAPACITY_REACHED", "FACTORY_ERROR", "SESSION_ERROR"}
"""The codes after which an OpenEnv server closes the socket."""

HTTP_STATUS = {
    ErrorCode.MALFORMED_FRAME: 400,
    ErrorCode.UNEXPECTED_FRAME: 400,
    ErrorCode.FRAME_TOO_LARGE: 413,
    ErrorCode.VALIDATION: 422,
    ErrorCode.BAD_OPTIONS: 422,
    ErrorCode.NO_EPISODE: 409,
    ErrorCode.EPISODE_ENDED: 409,
    ErrorCode.UNKNOWN_ENV: 404,
    ErrorCode.SESSION_NOT_FOUND: 404,
    ErrorCode.SESSION_CLOSED: 410,
    ErrorCode.CAPACITY: 503,
    ErrorCode.SHUTTING_DOWN: 503,
    ErrorCode.QUEUE_FULL: 503,
    ErrorCode.SANDBOX_START_FAILED: 503,
    ErrorCode.TIMEOUT: 504,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
}
"""HTTP status of each error code; the others (env errors, crashed sandboxes) are 500."""


def error_data(frame: Error) -> dict[str, Any]:
    """Our error as the ``data`` of OpenEnv's ``error`` message."""
    data: dict[str, Any] = {
        "message": frame.message,
        "code": OPENENV_CODES.get(frame.code, "EXECUTION_ERROR"),
        "ws_code": frame.code,
        "fatal": frame.fatal,
    }
    if frame.path is not None:
        data["path"] = frame.path
    if frame.retry_after is not None:
        data["retry_after"] = float(frame.retry_after)  # as frame decoding gives it, even if built from an int
    if frame.code in _VALIDATION_CODES:
        data["errors"] = errors_list(frame)
    return data


_VALIDATION_CODES = frozenset({ErrorCode.VALIDATION, ErrorCode.BAD_OPTIONS})


def errors_list(frame: Error) -> list[dict[str, Any]]:
    """A validation error as OpenEnv's ``errors`` (pydantic's list: ``loc``, ``msg``, ``type``)."""
    return [{"type": "value_error", "loc": json_loc(frame.path), "msg": frame.message}]


def json_loc(path: str | None) -> list[str | int]:
    """``$.items[0].x`` as pydantic's location ``["items", 0, "x"]`` (the inverse of :func:`json_path`)."""
    loc: list[str | int] = []
    for part in re.findall(r"\.([^.\[]+)|\[(\d+)\]", (path or "$")[1:]):
        loc.append(part[0] if part[0] else int(part[1]))
    return loc


def error_body(frame: Error) -> dict[str, Any]:
    """Our error as the body of an HTTP error response (its status: :data:`HTTP_STATUS`); a validation
    error also has OpenEnv's ``errors`` list."""
    body: dict[str, Any] = {"detail": frame.message, "code": frame.code}
    if frame.path is not None:
        body["path"] = frame.path
    if frame.code in _VALIDATION_CODES:
        body["errors"] = errors_list(frame)
    return body


def error_from_data(data: dict[str, Any]) -> OpenEnvWSError:
    """The exception our client raises for an OpenEnv ``error`` message (ours or a real OpenEnv server's)."""
    openenv_code = data.get("code")
    code = data.get("ws_code") or _FROM_OPENENV.get(openenv_code, ErrorCode.INTERNAL)
    message = str(data.get("message", "unknown error"))
    if code == ErrorCode.INTERNAL and openenv_code:
        message = f"{message} (OpenEnv code {openenv_code})"
    path = data.get("path")
    errors = data.get("errors")  # OpenEnv's validation errors: pydantic's list
    if path is None and isinstance(errors, list) and errors and isinstance(errors[0], dict):
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        message = f"{message}: {errors[0].get('msg', '')}{more}"
        path = json_path(errors[0].get("loc", ()))
    retry_after = data.get("retry_after")
    return from_frame(
        Error(
            code=str(code),
            message=message,
            path=path,
            fatal=bool(data.get("fatal", openenv_code in _FATAL_OPENENV)),
            retry_after=retry_after if isinstance(retry_after, int | float) else None,
        )
    )


def json_path(loc: Any) -> str | None:
    """A pydantic error location, e.g. ``("items", 0, "x")``, as ``$.items[0].x``."""
    if not isinstance(loc, list | tuple) or not loc:
        return None
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)


# ---------------------------------------------------------------- server frames -> OpenEnv messages


def openenv_message(frame: ServerFrame) -> dict[str, Any] | None:
    """Our server frame as OpenEnv's WebSocket message; None for what OpenEnv has no message for."""
    match frame:
        case Result():
            return {"type": "observation", "data": frame_payload(frame)}
        case StateReply():
            return {"type": "state", "data": unpack(frame.state)}
        case Error():
            return {"type": "error", "data": error_data(frame)}
        case Closed() if frame.seq == 0:  # the server ended the session (idle, shutdown): say so
            message = f"session closed by the server: {frame.reason}"
            ended = Error(code=ErrorCode.SESSION_CLOSED, message=message, fatal=True)
            return {"type": "error", "data": error_data(ended)}
    return None  # opened, pong, streamed events, the reply to ``close`` (OpenEnv answers none)


# ---------------------------------------------------------------- OpenEnv requests -> our frames


class BadMessage(OpenEnvWSError):
    """An OpenEnv message or HTTP body that cannot become a request; answered with an error, the session goes on."""

    code = ErrorCode.VALIDATION


def json_object(data: bytes | str, limit: int, what: str) -> dict[str, Any]:
    """A WebSocket message or an HTTP body: JSON, an object, at most ``limit`` bytes."""
    size = len(data.encode() if isinstance(data, str) else data)
    if size > limit:
        raise BadMessage(f"{what} of {size} bytes exceeds the limit of {limit}", code=ErrorCode.FRAME_TOO_LARGE)
    try:
        value = json_value(data)
    except ProtocolViolation as exc:  # bad UTF-8, nesting too deep, numbers out of range too
        raise BadMessage(f"Invalid JSON: {exc}", code=ErrorCode.MALFORMED_FRAME) from None
    if not isinstance(value, dict):
        raise BadMessage(f"{what} must be a JSON object")
    return value


MAX_SEED = (1 << 64) - 1
"""Seeds travel as MessagePack integers: unsigned, 64 bits."""


def _payload(value: Any, what: str) -> msgspec.Raw:
    """``value`` packed for the wire, or a :class:`BadMessage` naming why it cannot be (an integer past 64 bits)."""
    try:
        return pack(value)
    except Exception as exc:
        raise BadMessage(f"{what} cannot be sent on: {exc}") from None


def takes_metadata(action_schema: dict[str, Any] | None) -> bool:
    """Whether the env's action declares ``metadata`` (every OpenEnv Action does; ours usually not)."""
    if action_schema is None:
        return True
    schema = action_schema
    ref = schema.get("$ref", "")
    if ref.startswith("#/$defs/"):
        schema = schema.get("$defs", {}).get(ref.removeprefix("#/$defs/"), {})
    return "metadata" in schema.get("properties", {})


def reset_frame(data: Any) -> Reset:
    """OpenEnv's reset arguments (``seed``, ``episode_id``, anything else) as our ``reset``."""
    if not isinstance(data, dict):
        raise BadMessage("reset 'data' must be an object")
    options = dict(data)
    seed = options.pop("seed", None)
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED):
        raise BadMessage(f"'seed' must be an integer from 0 to 2**64-1, not {str(seed)[:40]}")
    _payload(options, "the reset options")
    return Reset(seed=seed, options=options or None)


def step_frame(action: Any, metadata: bool) -> Step:
    """OpenEnv's action as our ``step``; an empty ``metadata`` (OpenEnv's Action base field) is
    dropped when the env's action does not declare it (``metadata`` False)."""
    if not isinstance(action, dict):
        raise BadMessage(f"the action must be a JSON object, not {type(action).__name__}")
    if not metadata and "metadata" in action and not action["metadata"]:
        action = {k: v for k, v in action.items() if k != "metadata"}
    return Step(action=_payload(action, "the action"))


def request_frame(message: dict[str, Any], metadata: bool) -> Request:
    """One OpenEnv WebSocket message as our request (not yet numbered)."""
    match message.get("type"):
        case "reset":
            return reset_frame(message.get("data", {}))
        case "step":
            if "data" not in message:
                raise BadMessage("a step message needs 'data' (the action)")
            return step_frame(message["data"], metadata)
        case "state":
            return GetState()
        case "close":
            return Close()
        case other:
            raise BadMessage(f"Unknown message type: {other}", code=ErrorCode.UNEXPECTED_FRAME)

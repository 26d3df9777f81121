"""OpenEnv interop: its JSON wire shapes, its error codes, and an adapter for its environments.

OpenEnv (meta-pytorch/OpenEnv, ``pip install openenv``) answers ``reset`` and ``step`` with
``{"observation": {...}, "reward": r, "done": d, "metadata": {...}}``: one ``done`` flag,
where openenv-ws has Gymnasium's ``terminated`` and ``truncated``. The mapping both ways:

- to OpenEnv: ``done = terminated or truncated``; a truncated episode also says
  ``"truncated": true`` in ``metadata`` (our ``info`` travels as ``metadata``).
- from OpenEnv: ``truncated`` when ``done`` and ``metadata["truncated"] is True``, else
  ``terminated = done``; ``metadata`` becomes ``info``.

Errors travel as ``{"type": "error", "data": {"message", "code"}}`` with OpenEnv's codes
(``VALIDATION_ERROR``, ``EXECUTION_ERROR``...); openenv-ws adds its own code as
``ws_code``, and ``path``, ``fatal`` and ``retry_after`` when they apply.

Nothing here imports OpenEnv: only :func:`from_openenv` needs it (and pydantic), lazily.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any, ClassVar

import anyio.from_thread
import msgspec

from ..env import StepResult, SyncEnvironment
from ..errors import OpenEnvWSError, ValidationError, from_frame
from ..protocol import Error, ErrorCode

# ---------------------------------------------------------------- results


def result_payload(
    observation: Any, reward: float | None, terminated: bool, truncated: bool, info: dict[str, Any] | None
) -> dict[str, Any]:
    """Our result as OpenEnv's ``observation`` payload (also the body of its HTTP ``/reset`` and ``/step``)."""
    metadata = dict(info or {})
    if truncated:
        metadata["truncated"] = True
    payload: dict[str, Any] = {"observation": observation, "reward": reward, "done": terminated or truncated}
    if metadata:
        payload["metadata"] = metadata
    return payload


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
        data["retry_after"] = frame.retry_after
    return data


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
        path = _json_path(errors[0].get("loc", ()))
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


# ---------------------------------------------------------------- serving OpenEnv environments


class OpenEnvAdapter(SyncEnvironment):
    """Runs one instance of an OpenEnv ``Environment`` as an openenv-ws environment.

    Made by :func:`from_openenv`. OpenEnv environments are blocking code, so this is a
    :class:`SyncEnvironment`: construction and every call run on worker threads; an
    environment that overrides ``reset_async``/``step_async`` has those run on the event loop.
    """

    openenv_env: ClassVar[Callable[..., Any]]
    openenv_action: ClassVar[Any]
    openenv_async: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, **options: Any) -> None:
        self.inner = self.openenv_env(**options)

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> StepResult:
        kwargs = dict(options or {})
        if seed is not None:
            kwargs["seed"] = seed
        return _observation_result(self._call("reset", kwargs))

    def step(self, action: dict[str, Any]) -> StepResult:
        import pydantic

        try:
            typed = self.openenv_action.model_validate(action)
        except pydantic.ValidationError as exc:
            raise _validation_error(exc) from None
        return _observation_result(self._call("step", {}, typed))

    def state(self) -> Any:
        state = self.inner.state
        return state.model_dump() if hasattr(state, "model_dump") else dict(state or {})

    def close(self) -> None:
        self.inner.close()

    def _call(self, name: str, kwargs: dict[str, Any], *args: Any) -> Any:
        asynchronous = name in self.openenv_async
        method = getattr(self.inner, f"{name}_async" if asynchronous else name)
        call = functools.partial(method, *args, **_accepted(method, kwargs))
        return anyio.from_thread.run(call) if asynchronous else call()


def _accepted(method: Callable[..., Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments ``method`` takes (all of them if it takes ``**kwargs``), as OpenEnv's server does."""
    parameters = inspect.signature(method).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in parameters}


def _observation_result(observation: Any) -> StepResult:
    data = observation.model_dump()
    payload = {
        "reward": data.pop("reward", None),
        "done": data.pop("done", False),
        "metadata": data.pop("metadata", None),
        "observation": data,
    }
    return step_result(payload)


def _json_path(loc: Any) -> str | None:
    """A pydantic error location, e.g. ``("items", 0, "x")``, as ``$.items[0].x``."""
    if not isinstance(loc, list | tuple) or not loc:
        return None
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)


def _validation_error(exc: Any) -> ValidationError:
    """A pydantic ValidationError as ours, like OpenEnv's server would report it (see :func:`error_from_data`)."""
    data = {"code": "VALIDATION_ERROR", "message": "invalid action", "errors": exc.errors(include_url=False)}
    return error_from_data(data)  # type: ignore[return-value]


def _schema_type(model: Any) -> Any:
    """A dict type whose published JSON Schema is the pydantic model's."""
    if model is None:
        return dict[str, Any]
    return Annotated[dict[str, Any], msgspec.Meta(extra_json_schema=model.model_json_schema())]


def from_openenv(
    env: Callable[..., Any],
    action: type,
    observation: type | None = None,
    state: type | None = None,
    *,
    name: str | None = None,
) -> type[OpenEnvAdapter]:
    """An openenv-ws environment class serving the OpenEnv environment ``env``.

    ``env`` is the OpenEnv ``Environment`` subclass (or a factory), ``action`` its pydantic
    Action model (actions are validated by it, inside the sandbox; a failure names the field),
    ``observation`` and ``state`` its models (used for the published JSON Schemas).
    Define the result at module level and serve it by import path::

        MyEnv = from_openenv(MyOpenEnvEnvironment, MyAction, MyObservation, name="my_env")
        # openenv-ws serve mypackage.server:MyEnv
    """
    from openenv.core.env_server.interfaces import Environment as OpenEnvEnvironment

    asynchronous = frozenset(
        method
        for method in ("reset", "step")
        if inspect.isclass(env)
        and getattr(env, f"{method}_async", None) is not getattr(OpenEnvEnvironment, f"{method}_async")
    )
    attrs = {
        "__doc__": env.__doc__,
        "__module__": getattr(env, "__module__", __name__),
        "name": name or getattr(env, "__name__", "openenv"),
        "action_type": _schema_type(action),
        "observation_type": _schema_type(observation),
        "state_type": _schema_type(state),
        "openenv_env": staticmethod(env),
        "openenv_action": action,
        "openenv_async": asynchronous,
    }
    return type(f"OpenEnv{getattr(env, '__name__', 'Environment')}", (OpenEnvAdapter,), attrs)

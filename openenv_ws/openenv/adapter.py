"""Serving an OpenEnv ``Environment`` class on openenv-ws: :func:`from_openenv`.

The adapter runs inside a sandbox, so it stays at the environment API's level: it imports
no server, client or sandbox code, and OpenEnv itself (and pydantic) only when it is used.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any, ClassVar

import anyio.from_thread
import msgspec

from ..env import StepResult, SyncEnvironment
from ..errors import ValidationError
from .wire import error_from_data, step_result


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

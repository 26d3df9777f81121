"""Serving an OpenEnv ``Environment`` class on openenv-ws: :func:`from_openenv`.

The adapter runs inside a sandbox, so it stays at the environment API's level: it imports
no server, client or sandbox code, and OpenEnv itself (and pydantic) only when it is used.

An OpenEnv MCP environment (an ``MCPEnvironment``: FastMCP tools) keeps its tools: they are
ours too (:mod:`openenv_ws.toolbox`), with the same names, descriptions and JSON Schemas, and a
call ``{"tool": name, "arguments": ...}`` is its ``step(CallToolAction(...))``. The call's
observation is the tool's value (what OpenEnv's ``MCPToolClient.call_tool`` returns), its
failures results the model reads. The tools are listed from an instance made for the purpose
(in the server, once) or from the session's own (in its sandbox).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any, ClassVar

import anyio.from_thread
import anyio.to_thread
import msgspec

from ..env import StepResult, SyncEnvironment
from ..errors import ValidationError
from ..toolbox import Tool, error_result
from .wire import error_from_data, json_path, step_result


class OpenEnvAdapter(SyncEnvironment):
    """Runs one instance of an OpenEnv ``Environment`` as an openenv-ws environment.

    Made by :func:`from_openenv`. OpenEnv environments are blocking code, so this is a
    :class:`SyncEnvironment`: construction and every call run on worker threads; an
    environment that overrides ``reset_async``/``step_async`` has those run on the event loop.
    """

    openenv_env: ClassVar[Callable[..., Any]]
    openenv_action: ClassVar[Any]
    openenv_async: ClassVar[frozenset[str]] = frozenset()
    openenv_mcp: ClassVar[bool] = False
    steps_before_reset: ClassVar[bool] = True  # OpenEnv's server steps an environment as soon as it is built

    def __init__(self, **options: Any) -> None:
        self.inner = self.openenv_env(**options)

    @classmethod
    def provide_tools(cls, instance: OpenEnvAdapter | None = None) -> list[OpenEnvTool]:
        """The tools of an OpenEnv MCP environment (none for others): see :mod:`openenv_ws.toolbox`."""
        if not cls.openenv_mcp:
            return []
        from openenv.core.env_server.mcp_environment import get_server_tools
        from openenv.core.env_server.mcp_types import ListToolsAction

        inner = instance.inner if instance is not None else cls.openenv_env()
        try:
            listed = inner.step(ListToolsAction())
            served = get_server_tools(inner.mcp_server)
        finally:
            if instance is None:
                inner.close()
        if listed.metadata.get("error"):
            raise RuntimeError(f"{cls.__name__}: listing its MCP tools failed: {listed.metadata['error']}")
        tools = []
        for listed_tool in listed.tools:
            output = getattr(served.get(listed_tool.name), "output_schema", None)
            tools.append(
                OpenEnvTool(
                    Tool(
                        name=listed_tool.name,
                        description=listed_tool.description,
                        input_schema=listed_tool.input_schema,
                        output_schema=output or None,
                    )
                )
            )
        return tools

    @classmethod
    def openenv_metadata(cls) -> dict[str, Any]:
        """The environment's own ``get_metadata()`` (OpenEnv's ``EnvironmentMetadata``), from an instance
        made for the purpose, as OpenEnv's ``/metadata`` answers it."""
        inner = cls.openenv_env()
        try:
            metadata = inner.get_metadata()
        finally:
            inner.close()
        return metadata.model_dump() if hasattr(metadata, "model_dump") else dict(metadata)

    def call_mcp_tool(self, name: str, arguments: dict[str, Any]) -> StepResult:
        """One tool call as the OpenEnv environment's ``step(CallToolAction(...))``."""
        from openenv.core.env_server.mcp_types import CallToolAction

        observation = self._call("step", {}, CallToolAction(tool_name=name, arguments=arguments))
        payload = {"reward": observation.reward, "done": observation.done, "metadata": observation.metadata}
        error, result = observation.error, observation.result
        if error is not None:
            failed = error_result(f"{error.error_type.value}: {error.message}")
            return _with(failed, step_result(payload))
        if getattr(result, "is_error", False):
            return _with(error_result(_text(result)), step_result(payload))
        return step_result({**payload, "observation": _tool_value(result)})

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> StepResult:
        kwargs = dict(options or {})
        if seed is not None:
            kwargs["seed"] = seed
        return _observation_result(self._call("reset", kwargs))

    def step(self, action: dict[str, Any]) -> StepResult:
        import pydantic

        try:
            typed = self._action_model(action).model_validate(action)
        except pydantic.ValidationError as exc:
            raise _validation_error(exc) from None
        return _observation_result(self._call("step", {}, typed))

    def _action_model(self, action: dict[str, Any]) -> Any:
        """The model an action validates against: an MCP environment also takes ``list_tools``, as in OpenEnv."""
        if self.openenv_mcp and isinstance(action, dict) and action.get("type") == "list_tools":
            from openenv.core.env_server.mcp_types import ListToolsAction

            return ListToolsAction
        return self.openenv_action

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


class OpenEnvTool:
    """A tool of an OpenEnv MCP environment: its arguments checked against its JSON Schema here, run by its env."""

    def __init__(self, spec: Tool) -> None:
        self.spec = spec
        self._validator: Any = None

    def decode(self, arguments: msgspec.Raw) -> Any:
        try:
            value = msgspec.msgpack.decode(arguments)
        except msgspec.DecodeError as exc:
            raise ValidationError(f"undecodable arguments: {exc}", path="$.arguments") from None
        return self.convert(value)

    def convert(self, arguments: Any) -> dict[str, Any]:
        if not isinstance(arguments, dict):
            raise ValidationError(f"the arguments of tool {self.spec.name!r} must be an object", path="$.arguments")
        if self._validator is None:
            import jsonschema  # comes with OpenEnv's MCP dependencies

            self._validator = jsonschema.validators.validator_for(self.spec.input_schema)(self.spec.input_schema)
        error = next(iter(sorted(self._validator.iter_errors(arguments), key=lambda e: list(e.path))), None)
        if error is not None:
            path = json_path(list(error.path)) or "$"
            where = "$.arguments" + path[1:]
            raise ValidationError(f"invalid arguments for tool {self.spec.name!r}: {error.message}", path=where)
        return arguments

    async def invoke(self, env: Any, arguments: dict[str, Any]) -> StepResult:
        return await anyio.to_thread.run_sync(env.call_mcp_tool, self.spec.name, arguments)


def _tool_value(result: Any) -> Any:
    """What a FastMCP tool returned, as plain values: its ``data``, else its structured content, else its text."""
    data = getattr(result, "data", None)
    if data is not None:
        try:
            return msgspec.to_builtins(data)
        except TypeError:
            pass
    structured = getattr(result, "structured_content", None)
    return structured if structured is not None else _text(result)


def _text(result: Any) -> str:
    return "\n".join(getattr(block, "text", "") for block in getattr(result, "content", None) or [])


def _with(error: StepResult, outcome: StepResult) -> StepResult:
    """A tool error's result, keeping the reward, termination and info the environment gave the step."""
    error.reward, error.terminated, error.truncated = outcome.reward, outcome.terminated, outcome.truncated
    error.info = {**outcome.info, **error.info}
    return error


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
    from openenv.core.env_server.mcp_environment import MCPEnvironment

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
        "openenv_mcp": inspect.isclass(env) and issubclass(env, MCPEnvironment),
    }
    return type(f"OpenEnv{getattr(env, '__name__', 'Environment')}", (OpenEnvAdapter,), attrs)

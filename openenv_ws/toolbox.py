"""Tools: what an environment offers an agent that acts by calling functions (MCP, OpenAI tool calls).

An environment declares a tool by decorating a method with :func:`tool`. The tool's name is
the method's, its description the docstring, and the JSON Schema of its arguments comes from
the signature (``def run(self, command: str, timeout_s: float | None = None)``) or from the one
msgspec Struct the method takes (``def run(self, args: ShellAction)``). A call is an ordinary
step whose action is ``{"tool": name, "arguments": {...}}``: numbered, applied once, recorded
and replayed like any other. The arguments are validated here, in the sandbox, against the
tool's schema, and a failure names the field (``$.arguments.command``). The tool's return value
is the step's observation; a :class:`StepResult` sets reward and termination too.

Errors follow the tool-calling convention: a tool that raises :class:`ToolError` answers with a
result the model can read (observation ``{"error": message}``, ``info["tool_error"]``), and the
episode goes on. Any other exception is the environment's own failure (an ``env_error``).

Pure environment API: no server, client or sandbox imports. The MCP endpoint
(:mod:`openenv_ws.server.mcp`) and OpenEnv's MCP routes render results with :func:`mcp_result`.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, Protocol

import anyio.to_thread
import msgspec

from .env import Action, Environment, StepResult
from .errors import ValidationError
from .protocol import split_validation_error

TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""Names every tool-calling API accepts (OpenAI's rule, a subset of MCP's)."""
RESERVED_NAMES = frozenset({"reset", "step", "state", "close"})
"""The episode's own operations (OpenEnv reserves the same names)."""
TOOL_ERROR = "tool_error"
"""The ``info`` key of a result whose tool failed in a way the model should read."""


class Tool(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A tool as published: in the ``opened`` frame, in ``GET /v1/envs``, and (camelCased) in MCP's ``tools/list``."""

    name: str
    description: str = ""
    input_schema: dict[str, Any]
    """A JSON Schema of ``"type": "object"``: the arguments."""
    output_schema: dict[str, Any] | None = None
    """A JSON Schema of the observation, when the tool declares a typed one."""


class ToolCall(Action):
    """The action of a tool call; an environment whose only actions are tool calls sets ``action_type = ToolCall``."""

    tool: str
    arguments: dict[str, Any] = msgspec.field(default_factory=dict)


class ToolError(Exception):
    """Raised by a tool to answer with an error the model reads (a missing file, a bad query), not an env failure."""


class _WireCall(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    tool: str
    arguments: msgspec.Raw = msgspec.field(default_factory=lambda: msgspec.Raw(b"\x80"))


class _Probe(msgspec.Struct):
    """Just enough of an action to tell a tool call from the environment's own action."""

    tool: str | None = None


# ---------------------------------------------------------------- declaring


class _Mark(msgspec.Struct, frozen=True):
    """What ``@tool`` noted on a method."""

    name: str | None
    description: str | None
    input_schema: dict[str, Any] | None


def tool(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    input_schema: dict[str, Any] | None = None,
) -> Any:
    """Declare an environment method a tool: ``@tool`` or ``@tool(name=..., description=...)``.

    ``input_schema`` (a JSON Schema) replaces the one derived from the signature; the method
    then receives the arguments as one ``dict``, unvalidated, for the callee to check.
    """

    def mark(method: Callable[..., Any]) -> Callable[..., Any]:
        method.__openenv_ws_tool__ = _Mark(name, description, input_schema)  # type: ignore[attr-defined]
        return method

    return mark(fn) if fn is not None else mark


class BoundTool(Protocol):
    """One tool of an environment class: its published form, how its arguments decode, how it runs."""

    spec: Tool

    def decode(self, arguments: msgspec.Raw) -> Any: ...

    def convert(self, arguments: dict[str, Any]) -> Any: ...

    async def invoke(self, env: Environment, arguments: Any) -> Any: ...


def _validation(exc: msgspec.ValidationError, tool_name: str) -> ValidationError:
    message, path = split_validation_error(exc)
    where = "$.arguments" + (path or "$")[1:]
    return ValidationError(f"invalid arguments for tool {tool_name!r}: {message}", path=where)


class MethodTool:
    """A tool written as an environment method, its arguments a msgspec Struct (given or made from the signature)."""

    def __init__(self, spec: Tool, method: str, arguments: type | None, as_struct: bool, coroutine: bool) -> None:
        self.spec = spec
        self.method = method
        self.arguments = arguments
        self.as_struct = as_struct
        self.coroutine = coroutine
        self._decoder = msgspec.msgpack.Decoder(arguments) if arguments is not None else msgspec.msgpack.Decoder()

    def decode(self, arguments: msgspec.Raw) -> Any:
        try:
            value = self._decoder.decode(arguments)
        except msgspec.ValidationError as exc:
            raise _validation(exc, self.spec.name) from None
        return self._checked(value)

    def convert(self, arguments: dict[str, Any]) -> Any:
        if self.arguments is None:
            return self._checked(arguments)
        try:
            return msgspec.convert(arguments, self.arguments)
        except msgspec.ValidationError as exc:
            raise _validation(exc, self.spec.name) from None

    def _checked(self, value: Any) -> Any:
        if not isinstance(value, dict) and self.arguments is None:
            raise ValidationError(f"the arguments of tool {self.spec.name!r} must be an object", path="$.arguments")
        return value

    async def invoke(self, env: Environment, arguments: Any) -> Any:
        method = getattr(env, self.method)
        if self.arguments is None or self.as_struct:
            args, kwargs = (arguments,), {}
        else:
            args, kwargs = (), {f: getattr(arguments, f) for f in arguments.__struct_fields__}
        if self.coroutine:
            return await method(*args, **kwargs)
        return await anyio.to_thread.run_sync(lambda: method(*args, **kwargs))


def object_schema(kind: Any) -> dict[str, Any]:
    """The JSON Schema of a Struct with the object itself at the top (``"type": "object"``), not a ``$ref``."""
    schema = msgspec.json.schema(kind)
    ref = schema.pop("$ref", None)
    if ref is None:
        return schema
    defs = schema.pop("$defs", {})
    name = ref.removeprefix("#/$defs/")
    top = dict(defs[name])
    if ref not in msgspec.json.encode(defs).decode():  # not recursive: its definition is the top itself
        del defs[name]
    if defs:
        top["$defs"] = defs
    return top


_SECTION = re.compile(r"^(Args|Arguments|Parameters):\s*$")
_ITEM = re.compile(r"^(\w+)\s*(?:\([^)]*\))?:\s*(.*)$")


def _split_doc(doc: str) -> tuple[str, dict[str, str]]:
    """A docstring's text, and its ``Args:`` section (Google style: ``name: what it is``) as descriptions."""
    text: list[str] = []
    params: dict[str, str] = {}
    current, indent, in_args = None, 0, False
    for line in inspect.cleandoc(doc).splitlines():
        if _SECTION.match(line):
            current, in_args = None, True
            continue
        if in_args and line[:1].isspace():
            item = _ITEM.match(line.strip())
            depth = len(line) - len(line.lstrip())
            if item and (current is None or depth <= indent):
                current, indent = item.group(1), depth
                params[current] = item.group(2)
            elif current is not None:
                params[current] = f"{params[current]} {line.strip()}".strip()
            continue
        in_args = False  # a blank or unindented line ends the section
        text.append(line)
    return "\n".join(text).strip(), params


def _described(kind: Any, description: str | None) -> Any:
    if not description:
        return kind
    if typing.get_origin(kind) is typing.Annotated:
        metas = kind.__metadata__
        if any(isinstance(m, msgspec.Meta) and m.description for m in metas):
            return kind
    return typing.Annotated[kind, msgspec.Meta(description=description)]


def _returned(hints: dict[str, Any]) -> Any:
    """The observation type a tool declares it returns: a Struct, or ``StepResult[Struct]``."""
    kind = hints.get("return")
    if typing.get_origin(kind) is StepResult:
        kind = typing.get_args(kind)[0]
    elif kind is StepResult:
        return None  # its observation is not declared
    return kind if isinstance(kind, type) and issubclass(kind, msgspec.Struct) else None


def method_tool(env_cls: type, attr: str, fn: Callable[..., Any], mark: _Mark) -> MethodTool:
    """A :class:`MethodTool` from a marked method; raises TypeError for a signature no schema can describe."""
    name = mark.name or fn.__name__
    where = f"{env_cls.__name__}.{attr}"
    if not TOOL_NAME.match(name) or name in RESERVED_NAMES:
        raise TypeError(
            f"tool {where}: {name!r} is not a tool name (1-64 of A-Z a-z 0-9 _ -, none of reset/step/state/close)"
        )
    text, described = _split_doc(fn.__doc__ or "")
    description = mark.description if mark.description is not None else text
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:
        raise TypeError(f"tool {where}: cannot resolve its type hints: {exc}") from None
    params = list(inspect.signature(fn).parameters.values())[1:]  # after self
    output = _returned(hints)
    output_schema = object_schema(output) if output is not None else None
    coroutine = inspect.iscoroutinefunction(fn)
    if mark.input_schema is not None:
        spec = Tool(name=name, description=description, input_schema=mark.input_schema, output_schema=output_schema)
        return MethodTool(spec, attr, None, True, coroutine)
    single = hints.get(params[0].name) if len(params) == 1 else None
    if isinstance(single, type) and issubclass(single, msgspec.Struct):
        spec = Tool(name=name, description=description, input_schema=object_schema(single), output_schema=output_schema)
        return MethodTool(spec, attr, single, True, coroutine)
    fields: list[Any] = []
    for p in params:
        if p.kind not in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
            raise TypeError(f"tool {where}: parameter {p.name!r} must be a plain or keyword-only parameter")
        kind = _described(hints.get(p.name, Any), described.get(p.name))
        fields.append((p.name, kind) if p.default is inspect.Parameter.empty else (p.name, kind, p.default))
    arguments = msgspec.defstruct(f"{name}_arguments", fields, kw_only=True, forbid_unknown_fields=True)
    spec = Tool(name=name, description=description, input_schema=object_schema(arguments), output_schema=output_schema)
    return MethodTool(spec, attr, arguments, False, coroutine)


# ---------------------------------------------------------------- an environment's tools


class Toolbox:
    """The tools of one environment class, in the order they were declared; how a call is decoded and run."""

    provider: ClassVar[str] = "provide_tools"
    """An environment whose tools are known only at run time (OpenEnv's MCP environments) defines a
    classmethod of this name, ``provide_tools(instance=None)``, returning its :class:`BoundTool` objects
    (from ``instance`` when one is given); it replaces the ``@tool`` methods."""

    def __init__(self, tools: list[BoundTool]) -> None:
        self.tools: dict[str, BoundTool] = {}
        for bound in tools:
            if bound.spec.name in self.tools:
                raise TypeError(f"two tools are named {bound.spec.name!r}")
            self.tools[bound.spec.name] = bound
        self._calls = msgspec.msgpack.Decoder(_WireCall)
        self._probe = msgspec.msgpack.Decoder(_Probe)

    def __bool__(self) -> bool:
        return bool(self.tools)

    def __iter__(self) -> Iterator[BoundTool]:
        return iter(self.tools.values())

    @property
    def specs(self) -> list[Tool]:
        return [bound.spec for bound in self.tools.values()]

    def is_call(self, action: msgspec.Raw) -> bool:
        """Whether an action (of an environment that also takes its own actions) is a tool call."""
        try:
            return self._probe.decode(action).tool is not None
        except msgspec.DecodeError:
            return False

    def find(self, name: str) -> BoundTool:
        bound = self.tools.get(name)
        if bound is None:
            known = ", ".join(self.tools) or "none"
            raise ValidationError(f"unknown tool {name!r} (tools: {known})", path="$.tool")
        return bound

    def decode(self, action: msgspec.Raw) -> tuple[BoundTool, Any]:
        """A tool call's tool and its validated arguments; :class:`ValidationError` names the bad field."""
        try:
            call = self._calls.decode(action)
        except msgspec.ValidationError as exc:
            message, path = split_validation_error(exc)
            raise ValidationError(f"invalid tool call: {message}", path=path) from None
        except msgspec.DecodeError as exc:
            raise ValidationError(f"undecodable tool call: {exc}") from None
        bound = self.find(call.tool)
        return bound, bound.decode(call.arguments)

    async def run(self, env: Environment, bound: BoundTool, arguments: Any) -> StepResult:
        """Run one call: the tool's value as a :class:`StepResult`; a :class:`ToolError` as a readable error result."""
        try:
            value = await bound.invoke(env, arguments)
        except ToolError as exc:
            return error_result(str(exc))
        return value if isinstance(value, StepResult) else StepResult(observation=value)


def error_result(message: str, *, truncated: bool = False) -> StepResult:
    """The result of a call whose tool failed in a way the model should read (what :class:`ToolError` gives).

    A tool returns one itself to say more, e.g. ``truncated`` when the failed call used the last step.
    """
    return StepResult(observation={"error": message}, truncated=truncated, info={TOOL_ERROR: message})


_toolboxes: dict[type, Toolbox] = {}


def toolbox(env_cls: type[Environment], instance: Environment | None = None) -> Toolbox:
    """The tools of ``env_cls`` (found once per class): its ``@tool`` methods, or what ``provide_tools`` gives."""
    found = _toolboxes.get(env_cls)
    if found is None:
        provide = getattr(env_cls, Toolbox.provider, None)
        found = Toolbox(list(provide(instance)) if provide is not None else list(_marked(env_cls)))
        if (
            found
            and env_cls.action_type is not ToolCall
            and "tool" in getattr(env_cls.action_type, "__struct_fields__", ())
        ):
            raise TypeError(f"{env_cls.__name__} has tools, so its action cannot have a field named 'tool'")
        _toolboxes[env_cls] = found
    return found


def _marked(env_cls: type) -> Iterator[MethodTool]:
    seen: set[str] = set()
    for klass in reversed(env_cls.__mro__):
        for attr in vars(klass):
            if attr in seen:
                continue
            fn = getattr(env_cls, attr, None)
            mark = getattr(fn, "__openenv_ws_tool__", None)
            if isinstance(mark, _Mark):
                seen.add(attr)
                yield method_tool(env_cls, attr, fn, mark)


def tool_specs(env_cls: type[Environment]) -> list[dict[str, Any]]:
    """The published tools of ``env_cls`` as plain values (JSON-ready)."""
    return msgspec.to_builtins(toolbox(env_cls).specs)


async def call_tool(env: Environment, name: str, arguments: dict[str, Any] | None = None) -> StepResult:
    """Call a tool of ``env`` directly (tests, notebooks): validated as the sandbox would, not recorded."""
    box = toolbox(type(env))
    bound = box.find(name)
    return await box.run(env, bound, bound.convert(arguments or {}))


# ---------------------------------------------------------------- results as tool-calling APIs show them

_json = msgspec.json.Encoder()


def result_text(observation: Any) -> str:
    """A tool result as the text a model reads: a string as it is, anything else as compact JSON."""
    return observation if isinstance(observation, str) else _json.encode(observation).decode()


def mcp_result(
    observation: Any, info: dict[str, Any] | None = None, meta: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A tool call's result as MCP's ``CallToolResult``: text ``content``, ``structuredContent``, ``isError``.

    An object is its own structured content; any other value is wrapped as ``{"result": value}``
    (FastMCP's convention). A :class:`ToolError` result is ``isError`` with its message as the text.
    """
    message = (info or {}).get(TOOL_ERROR)
    if message is not None:
        result: dict[str, Any] = {"content": [{"type": "text", "text": str(message)}], "isError": True}
    else:
        structured = observation if isinstance(observation, dict) else {"result": observation}
        text = result_text(observation)
        result = {"content": [{"type": "text", "text": text}], "structuredContent": structured, "isError": False}
    if meta:
        result["_meta"] = meta
    return result

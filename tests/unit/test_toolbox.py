"""Tools of the environment API without a server: schemas, validation with field paths, results."""

from __future__ import annotations

import threading
from typing import Annotated, Any

import msgspec
import pytest

from openenv_ws.env import Action, Environment, Observation, StepResult, SyncEnvironment
from openenv_ws.errors import ValidationError
from openenv_ws.protocol import pack
from openenv_ws.toolbox import ToolCall, ToolError, call_tool, mcp_result, tool, tool_specs, toolbox


class Move(Action):
    x: int
    y: int = 0


class Board(Observation):
    cells: list[int]


class GridEnv(Environment):
    @tool
    async def place(
        self, x: int, label: Annotated[str, msgspec.Meta(description="said here")] = "o", *, big: bool = False
    ) -> StepResult[Board]:
        """Put a mark on the grid.

        Only inside it.

        Args:
            x: The column,
                counted from 0.
            label: ignored: the annotation says it.
            big: A bigger mark.
        """
        return StepResult(observation=Board(cells=[x, len(label), int(big)]), reward=1.0)

    @tool
    async def jump(self, move: Move) -> StepResult:
        """Jump, given a whole Move."""
        return StepResult(observation={"x": move.x, "y": move.y})

    @tool(name="look-around", description="See everything.", input_schema={"type": "object"})
    async def look(self, arguments: dict) -> str:
        if arguments.get("fail"):
            raise ToolError("too dark")
        return f"saw {sorted(arguments)}"

    def helper(self) -> None:  # not a tool
        pass


def test_schemas_come_from_signatures_structs_and_docstrings():
    tools = {t["name"]: t for t in tool_specs(GridEnv)}
    assert list(tools) == ["place", "jump", "look-around"]  # declaration order
    place = tools["place"]
    assert place["description"] == "Put a mark on the grid.\n\nOnly inside it."
    schema = place["input_schema"]
    assert schema["type"] == "object" and "$ref" not in schema and schema["required"] == ["x"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["x"] == {"description": "The column, counted from 0.", "type": "integer"}
    label = schema["properties"]["label"]
    assert label["description"] == "said here" and label["default"] == "o"
    assert schema["properties"]["big"] == {"description": "A bigger mark.", "type": "boolean", "default": False}
    assert place["output_schema"]["title"] == "Board" and place["output_schema"]["type"] == "object"
    jump = tools["jump"]
    assert jump["input_schema"]["title"] == "Move" and jump["input_schema"]["required"] == ["x"]
    assert "output_schema" not in jump  # no declared observation
    look = {"name": "look-around", "description": "See everything.", "input_schema": {"type": "object"}}
    assert tools["look-around"] == look


@pytest.mark.parametrize(
    ("action", "path", "message"),
    [
        ({"tool": "place", "arguments": {}}, "$.arguments", "missing required field `x`"),
        ({"tool": "place", "arguments": {"x": "one"}}, "$.arguments.x", "Expected `int`, got `str`"),
        ({"tool": "place", "arguments": {"x": 1, "colour": "red"}}, "$.arguments", "unknown field `colour`"),
        ({"tool": "place", "arguments": [1]}, "$.arguments", "Expected `object`, got `array`"),
        ({"tool": "jump", "arguments": {"x": 1, "y": "up"}}, "$.arguments.y", "Expected `int`"),
        ({"tool": "fly", "arguments": {}}, "$.tool", "unknown tool 'fly' (tools: place, jump, look-around)"),
        ({"tool": 3}, "$.tool", "Expected `str`, got `int`"),
        ({"arguments": {}}, None, "missing required field `tool`"),
        ({"tool": "look-around", "arguments": "x"}, "$.arguments", "must be an object"),
    ],
)
def test_a_bad_call_is_refused_naming_the_field(action, path, message):
    with pytest.raises(ValidationError) as caught:
        toolbox(GridEnv).decode(pack(action))
    assert caught.value.path == path and message in str(caught.value)


async def test_calls_run_the_methods_and_their_values_become_observations():
    env = GridEnv()
    placed = await call_tool(env, "place", {"x": 2, "label": "abc", "big": True})
    assert placed.observation == Board(cells=[2, 3, 1]) and placed.reward == 1.0
    jumped = await call_tool(env, "jump", {"x": 1})
    assert jumped.observation == {"x": 1, "y": 0} and jumped.reward is None and not jumped.done
    box = toolbox(GridEnv)
    bound, arguments = box.decode(pack({"tool": "look-around", "arguments": {"b": 1, "a": 2}}))
    assert (await box.run(env, bound, arguments)).observation == "saw ['a', 'b']"


async def test_a_tool_error_is_a_result_the_model_reads():
    failed = await call_tool(GridEnv(), "look-around", {"fail": True})
    assert failed.observation == {"error": "too dark"} and failed.info == {"tool_error": "too dark"}
    assert failed.reward is None and not failed.done
    assert mcp_result(failed.observation, failed.info) == {
        "content": [{"type": "text", "text": "too dark"}],
        "isError": True,
    }


def test_results_render_as_mcp_does():
    assert mcp_result({"a": 1}, {}) == {
        "content": [{"type": "text", "text": '{"a":1}'}],
        "structuredContent": {"a": 1},
        "isError": False,
    }
    wrapped = mcp_result(5, None, {"seq": 3})
    assert wrapped["structuredContent"] == {"result": 5} and wrapped["content"][0]["text"] == "5"
    assert wrapped["_meta"] == {"seq": 3}
    assert mcp_result("plain text")["content"][0]["text"] == "plain text"


class SyncTools(SyncEnvironment):
    @tool
    def where(self) -> str:
        """Which thread runs it."""
        return threading.current_thread().name

    @tool
    async def loop(self) -> str:
        return threading.current_thread().name


async def test_plain_functions_run_on_worker_threads_coroutines_on_the_loop():
    env = SyncTools()
    here = threading.current_thread().name
    assert (await call_tool(env, "where")).observation != here
    assert (await call_tool(env, "loop")).observation == here


def test_bad_declarations_fail_when_the_tools_are_first_listed():
    class Reserved(Environment):
        @tool
        async def reset(self, seed: int | None = None, options: Any = None) -> StepResult:
            raise NotImplementedError

    class BadName(Environment):
        @tool(name="has space")
        async def x(self) -> str:
            return ""

    class Variadic(Environment):
        @tool
        async def many(self, *values: int) -> int:
            return sum(values)

    class Twice(Environment):
        @tool(name="same")
        async def a(self) -> str:
            return ""

        @tool(name="same")
        async def b(self) -> str:
            return ""

    class ToolField(Action):
        tool: str

    class Clash(Environment):
        action_type = ToolField

        @tool
        async def a(self) -> str:
            return ""

    for env_cls, message in [
        (Reserved, "not a tool name"),
        (BadName, "not a tool name"),
        (Variadic, "must be a plain or keyword-only parameter"),
        (Twice, "two tools are named 'same'"),
        (Clash, "cannot have a field named 'tool'"),
    ]:
        with pytest.raises(TypeError, match=message):
            toolbox(env_cls)


def test_an_environment_without_tools_has_an_empty_toolbox_and_tools_only_ones_take_tool_calls():
    assert not toolbox(Environment) and tool_specs(Environment) == []
    assert msgspec.json.schema(ToolCall)["$defs"]["ToolCall"]["required"] == ["tool"]
    box = toolbox(GridEnv)
    assert box.is_call(pack({"tool": "place"})) and not box.is_call(pack({"x": 1})) and not box.is_call(pack([1]))

"""An OpenEnv MCP environment served through ``from_openenv``: its tools are ours, with the same names,
schemas and results as OpenEnv's own (checked against the environment and its FastMCP server directly)."""

from __future__ import annotations

import sys

sys.modules.setdefault("gradio", None)  # type: ignore[arg-type]  # see tests/openenv_envs.py

import httpx  # noqa: E402
import pytest  # noqa: E402
from fastmcp import Client as FastMCPClient  # noqa: E402
from openenv.core.env_server.mcp_types import CallToolAction, ListToolsAction  # noqa: E402

from openenv_ws import ValidationError, connect  # noqa: E402

from .openenv_envs import CalcEnv, calc_server  # noqa: E402
from .test_mcp import mcp_client  # noqa: E402

CALC = "tests.openenv_envs:AdaptedCalcEnv"


async def test_the_tools_and_results_are_openenvs(start_server):
    server = start_server(CALC, "--sandbox", "subprocess")
    async with FastMCPClient(calc_server()) as direct:
        fastmcp_tools = {t.name: t for t in await direct.list_tools()}
        direct_add = await direct.call_tool("add", {"a": 2, "b": 3})
        direct_describe = await direct.call_tool("describe", {"word": "ab", "times": 2})
    openenv = CalcEnv()
    openenv_tools = openenv.step(ListToolsAction()).tools
    openenv_add = openenv.step(CallToolAction(tool_name="add", arguments={"a": 2, "b": 3}))
    openenv_fail = openenv.step(CallToolAction(tool_name="fail", arguments={"reason": "on purpose"}))

    async with httpx.AsyncClient() as http:
        listed = (await http.get(server.http + "/v1/envs", timeout=10)).json()["envs"][0]["tools"]
    assert [(t["name"], t["description"], t["input_schema"]) for t in listed] == [
        (t.name, t.description, t.input_schema) for t in openenv_tools
    ]
    assert {t["name"]: t.get("output_schema") for t in listed} == {
        name: tool.outputSchema for name, tool in fastmcp_tools.items()
    }

    async with connect(server.url, "calc") as env:
        assert env.tools == listed
        await env.reset(seed=1)
        added = await env.call_tool("add", {"a": 2, "b": 3})
        assert added.observation == openenv_add.result.data == 5 and not added.done
        described = await env.call_tool("describe", {"word": "ab", "times": 2})
        assert described.observation == direct_describe.data == {"word": "abab", "length": 4}
        failed = await env.call_tool("fail", {"reason": "on purpose"})
        expected = f"execution_error: {openenv_fail.error.message}"
        assert failed.observation == {"error": expected} and failed.info["tool_error"] == expected
        with pytest.raises(ValidationError) as bad:
            await env.call_tool("add", {"a": 2, "b": "three"})  # checked against the tool's own schema
        assert bad.value.path == "$.arguments.b"
        with pytest.raises(ValidationError) as unknown:
            await env.call_tool("subtract", {"a": 1, "b": 1})
        assert unknown.value.path == "$.tool"
        # OpenEnv's own action still works, beside the tool calls.
        plain = await env.step({"type": "call_tool", "tool_name": "add", "arguments": {"a": 1, "b": 1}})
        assert plain.observation["tool_name"] == "add" and plain.observation["result"]["data"] == 2
        assert (await env.state())["step_count"] == 4  # the environment's own count: the refused calls never ran

        async with mcp_client(env.mcp_url, env.mcp_headers) as mcp:
            over_mcp = await mcp.call_tool("add", {"a": 2, "b": 3})
            assert over_mcp.structuredContent == direct_add.structured_content == {"result": 5}
            assert over_mcp.content[0].text == direct_add.content[0].text == "5"
            described = await mcp.call_tool("describe", {"word": "ab", "times": 2})
            assert described.structuredContent == direct_describe.structured_content
            failed = await mcp.call_tool("fail", {"reason": "on purpose"})
            assert failed.isError and "on purpose" in failed.content[0].text

"""The web env's actions as tools, through a real server and a real headless Chromium (subprocess
backend): published in ``GET /v1/envs`` and the ``opened`` frame, MiniWoB++ tasks and a shop task
solved by tool calls (the scripted policies of ``web_policies.py``, each action sent as the tool of
the same name), what the agent could not do answered as a tool error it reads, and the tools over
the session's MCP endpoint with the official ``mcp`` client.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

from openenv_ws import EnvError, ValidationError, connect

from .conftest import ServerProcess
from .test_mcp import mcp_client
from .web_policies import MINIWOB, ByTools, find, solve_cheapest_mug

TOOLS = ["click", "type", "press", "select", "scroll", "goto", "back", "noop"]


@pytest.fixture(scope="module")
def web_server() -> Iterator[ServerProcess]:
    server = ServerProcess("web", "--sandbox", "subprocess")
    yield server
    server.stop()


async def test_the_actions_are_published_as_tools(web_server):
    async with httpx.AsyncClient() as http:
        envs = (await http.get(web_server.http + "/v1/envs", timeout=10)).json()["envs"]
    (listed,) = [e["tools"] for e in envs if e["name"] == "web"]
    assert [t["name"] for t in listed] == TOOLS
    tools = {t["name"]: t for t in listed}
    typing = tools["type"]["input_schema"]
    assert typing["required"] == ["id", "text"] and typing["additionalProperties"] is False
    assert typing["properties"]["text"]["maxLength"] == 2000 and typing["properties"]["clear"]["default"] is True
    assert typing["properties"]["id"]["minimum"] == 1 and "page listing" in typing["properties"]["id"]["description"]
    assert tools["scroll"]["input_schema"]["properties"]["direction"]["enum"] == ["down", "left", "right", "up"]
    assert tools["goto"]["input_schema"]["required"] == ["path"] and tools["back"]["input_schema"]["required"] == []
    assert all("screenshot" in t["input_schema"]["properties"] for t in listed)
    assert all(t["output_schema"]["properties"]["page"]["type"] == "string" for t in listed)
    assert "Click an element" in tools["click"]["description"]
    async with connect(web_server.url, "web") as env:
        assert env.tools == listed  # the opened frame carries the same list


async def test_miniwob_tasks_are_solved_by_tool_calls(web_server):
    async with connect(web_server.url, "web") as env:
        for task in ("click-button", "enter-text", "login-user", "choose-list"):
            first = await env.reset(seed=3, options={"task": task})
            agent = ByTools(env)
            last = await MINIWOB[task](agent, first)
            assert last.terminated and last.reward > 0, (task, last.observation, last.info)
            assert set(agent.called) <= set(TOOLS) and agent.called, agent.called
        assert "select" in agent.called  # choose-list picks from its list with the select tool


async def test_a_shop_task_is_solved_by_tool_calls(web_server):
    async with connect(web_server.url, "web", options={"task": "shop-cheapest-mug"}) as env:
        first = await env.reset(seed=1)
        agent = ByTools(env)
        last = await solve_cheapest_mug(agent, first)
        assert last.terminated and last.reward == 1.0 and last.info == {"order": 1, "wrong": []}, last
        assert {"type", "click", "select", "press", "goto"} <= set(agent.called)
        assert last.observation["title"] == "Order #1 - Corner Shop"
        state = await env.state()
    assert state["orders"][0]["items"] == {"mug-red-small": 1}
    assert state["step_count"] == len(agent.called)  # one step per tool call


async def test_tool_errors_are_results_plain_actions_still_work(web_server):
    options = {"test_pages": True, "step_timeout_s": 2, "max_steps": 9}
    async with connect(web_server.url, "web", options=options) as env:
        home = (await env.reset(seed=1)).observation
        missing = await env.call_tool("click", {"id": 999})
        said = "there is no element with id 999 on this page (use an id from the latest observation)"
        assert missing.observation == {"error": said} and not missing.done
        assert missing.info["tool_error"] == missing.observation["error"]
        nowhere = await env.call_tool("back")
        assert "no earlier page" in nowhere.observation["error"] and nowhere.reward is None
        with pytest.raises(EnvError, match="no element with id 999"):  # the same mistake as a plain action
            await env.step({"action": "click", "id": 999})
        for arguments, path, said in (
            ({"key": "Ctrl+c"}, "$.arguments.key", "Expected `str` matching regex"),
            ({"key": "Enter", "action": "press"}, "$.arguments", "unknown field `action`"),
        ):
            with pytest.raises(ValidationError, match=said) as bad:
                await env.call_tool("press", arguments)
            assert bad.value.path == path
        with pytest.raises(ValidationError) as bad:
            await env.call_tool("type", {"id": "search", "text": "x"})
        assert bad.value.path == "$.arguments.id"
        with pytest.raises(ValidationError) as bad:
            await env.call_tool("goto", {"path": "https://example.com/"})
        assert bad.value.path == "$.arguments.path"
        box = find(home, "textbox", "Search products")
        typed = await env.call_tool("type", {"id": box, "text": "mug"})
        assert typed.observation["focused"] == box and 'value="mug"' in typed.observation["page"]
        found = await env.step({"action": "press", "key": "Enter"})  # a plain action between tool calls
        assert found.observation["url"] == "/search?q=mug"
        scrolled = await env.call_tool("scroll", {"direction": "down"})
        assert scrolled.observation["last_action"] == "scrolled down"
        back = await env.call_tool("back", {"screenshot": True})
        assert back.observation["url"] == "/" and back.observation["last_action"] == "went back"
        image = Image.open(io.BytesIO(back.observation["screenshot"]["png"]))
        assert image.format == "PNG" and image.size == (1280, 720)
        page = (await env.call_tool("goto", {"path": "/_test/hang-script"})).observation
        hung = await env.call_tool("click", {"id": find(page, "button", "Loop forever")})
        assert "passed its deadline (2 s)" in hung.observation["last_action_error"] and not hung.done
        last = await env.call_tool("noop", {"wait_s": 0.1})
        assert last.truncated and last.observation["last_action"] == "waited 0.1 s"  # the ninth step
        state = await env.state()
    assert state["step_count"] == 9  # the two tool errors counted, the refused calls and the env error not


async def test_web_tools_over_mcp(web_server):
    async with connect(web_server.url, "web", options={"task": "click-button"}) as env:
        first = await env.reset(seed=5)
        (label,) = first.observation["instruction"].split('"')[1:2]
        async with mcp_client(env.mcp_url, env.mcp_headers) as mcp:
            listed = (await mcp.list_tools()).tools
            assert [t.name for t in listed] == TOOLS
            assert [(t.inputSchema, t.outputSchema) for t in listed] == [
                (t["input_schema"], t["output_schema"]) for t in env.tools
            ]
            missing = await mcp.call_tool("click", {"id": 999})
            assert missing.isError and "no element with id 999" in missing.content[0].text
            invalid = await mcp.call_tool("scroll", {"direction": "sideways"})
            assert invalid.isError and "$.arguments.direction" in invalid.content[0].text
            # A screenshot travels base64-encoded in JSON; the client checks the result against the outputSchema.
            looked = await mcp.call_tool("noop", {"screenshot": True})
            assert not looked.isError and looked.structuredContent["url"].startswith("/")
            png = base64.b64decode(looked.structuredContent["screenshot"]["png"])
            assert Image.open(io.BytesIO(png)).size == (1280, 720)
            clicked = await mcp.call_tool("click", {"id": find(first.observation, "button", label)})
            assert not clicked.isError and clicked.structuredContent["last_action"].startswith("clicked [")
            meta = clicked.meta["openenv_ws"]
            assert meta["terminated"] and meta["reward"] > 0, meta
        state = await env.state()
    assert state["step_count"] == 3 and state["done"]  # the error result, the noop and the click

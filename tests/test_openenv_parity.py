"""OpenEnv parity beyond OpenEnv's own tests (tests/openenv_parity/): its ``MCPToolClient`` on our
tool environments and on an OpenEnv MCP environment served through ``from_openenv``, the shapes of
``/schema``, ``/metadata`` and errors, stateless HTTP calls that hold no sandbox, and idle sessions."""

from __future__ import annotations

import json
import sys

sys.modules.setdefault("gradio", None)  # type: ignore[arg-type]  # see tests/openenv_envs.py

import anyio  # noqa: E402
import httpx  # noqa: E402
import pytest  # noqa: E402
from openenv.core import GenericEnvClient  # noqa: E402
from openenv.core.env_server.types import EnvironmentMetadata, SchemaResponse  # noqa: E402
from openenv.core.mcp_client import MCPToolClient  # noqa: E402
from websockets.sync.client import connect as ws_connect  # noqa: E402

from .conftest import ServerProcess, wait_for  # noqa: E402

CALC = "tests.openenv_envs:AdaptedCalcEnv"
WORDS = "tests.openenv_envs:AdaptedWordEnv"
NOTES = "tests.helper_envs:NotesEnv"


@pytest.fixture(scope="module", params=["inprocess", "subprocess"])
def both(request):
    server = ServerProcess(CALC, NOTES, WORDS, "echo", "--sandbox", request.param, "--max-sessions", "8")
    yield server
    server.stop()


async def test_mcp_tool_client_drives_an_adapted_openenv_mcp_env(both):
    async with MCPToolClient(base_url=both.http + "/envs/calc") as env:
        assert env.use_production_mode  # openenv 0.10.0: POST /mcp with openenv/session/create
        await env.reset()
        assert sorted(t.name for t in await env.list_tools()) == ["add", "describe", "fail"]
        assert await env.call_tool("add", a=2, b=3) == 5
        assert await env.call_tool("describe", word="ab", times=2) == {"word": "abab", "length": 4}
        assert (await env.state()).step_count >= 0  # the same session as the calls (/ws?session_id=)
        assert len(both.sessions()) == 1
    assert wait_for(lambda: both.sessions() == [])  # openenv/session/close ended it


async def test_mcp_tool_client_drives_our_own_tool_env(both):
    async with MCPToolClient(base_url=both.http + "/envs/notes") as env:
        tools = {t.name: t for t in await env.list_tools()}
        assert set(tools) == {"write", "read", "finish"} and "key" in tools["write"].input_schema["properties"]
        await env.call_tool("write", key="a", text="hello")  # before any reset: the session is reset first
        assert await env.call_tool("read", key="a") == "hello"
        state = await env.state()
        assert state.step_count == 2  # the tool calls were steps of the session that state() reads
    assert wait_for(lambda: both.sessions() == [])


def test_mcp_json_rpc_by_hand(both):
    with httpx.Client(base_url=both.http + "/envs/notes", timeout=30) as http:

        def rpc(method: str, **params) -> dict:
            return http.post("/mcp", json={"jsonrpc": "2.0", "method": method, "params": params, "id": 1}).json()

        assert [t["name"] for t in rpc("tools/list")["result"]["tools"]] == ["write", "read", "finish"]
        assert both.sessions() == []  # listing needs no sandbox
        sid = rpc("openenv/session/create")["result"]["session_id"]
        written = rpc("tools/call", name="write", arguments={"key": "k", "text": "v"}, session_id=sid)["result"]
        assert written["isError"] is False and written["data"] == {"notes": {"k": "v"}}
        failed = rpc("tools/call", name="read", arguments={"key": "nope"}, session_id=sid)["result"]
        assert failed["isError"] is True and "no note named" in failed["content"][0]["text"]
        assert rpc("tools/call", arguments={})["error"]["code"] == -32602
        assert rpc("tools/call", name="read", arguments={"key": "k"}, session_id="s-nope")["error"]["code"] == -32602
        assert rpc("nope/nope")["error"] == {"code": -32601, "message": "Method not found: nope/nope"}
        stateless = rpc("tools/call", name="write", arguments={"key": "x", "text": "y"})[
            "result"
        ]  # a session of its own
        assert stateless["data"] == {"notes": {"x": "y"}}
        assert rpc("openenv/session/close", session_id=sid)["result"] == {"session_id": sid, "closed": True}
        assert rpc("openenv/session/close", session_id=sid)["error"]["code"] == -32602
    assert wait_for(lambda: both.sessions() == [])

    with ws_connect(both.url + "/envs/calc/mcp", open_timeout=30) as ws:  # WS /mcp: the same messages
        params = {"name": "add", "arguments": {"a": 1, "b": 1}}
        ws.send(json.dumps({"jsonrpc": "2.0", "method": "tools/call", "params": params, "id": 7}))
        answer = json.loads(ws.recv(timeout=30))
        assert answer["id"] == 7 and answer["result"]["data"] == 2


def test_shapes_match_openenvs(both):
    with httpx.Client(base_url=both.http, timeout=30) as http:
        schema = SchemaResponse.model_validate(http.get("/envs/words/schema").json())
        assert schema.reset_observation == schema.observation
        metadata = EnvironmentMetadata.model_validate(http.get("/envs/words/metadata").json())
        assert (metadata.name, metadata.version) == ("WordEnv", "1.0.0")  # the env's own get_metadata()
        ours = http.get("/envs/echo/metadata").json()
        assert ours["name"] == "echo" and ours["version"] == "1.0.0"
        reset = http.post("/envs/words/reset", json={"seed": 7})
        assert reset.json()["observation"]["metadata"] == {"seed": 7} == reset.json()["metadata"]
        sid = {"X-Session-Id": reset.headers["X-Session-Id"]}
        bad = http.post("/envs/words/step", json={"action": {"word": 3}}, headers=sid).json()
        assert bad["errors"][0]["loc"] == ["word"] and bad["path"] == "$.word"
        http.post("/envs/words/close", headers=sid)


def test_stateless_http_holds_no_sandbox_it_does_not_need(start_server):
    server = start_server("echo", "--sandbox", "inprocess", "--max-sessions", "2")
    with httpx.Client(base_url=server.http, timeout=30) as http:
        for i in range(6):  # OpenEnv's stateless loop: never a 503, at most max-sessions held
            assert http.post("/reset", json={"seed": i}).status_code == 200
            assert len(server.sessions()) <= 2
            assert http.post("/step", json={"action": {"message": "hi"}}).status_code == 200
            assert http.get("/state").status_code == 200
        claimed = {"X-Session-Id": http.post("/reset").headers["X-Session-Id"]}
        assert http.post("/step", json={"action": {"message": "mine"}}, headers=claimed).status_code == 200
        for _ in range(3):  # unclaimed ones make room; the claimed one stays
            assert http.post("/reset").status_code == 200
        assert http.get("/state", headers=claimed).json()["step_count"] == 1


async def test_idle_compat_setting_keeps_ws_sessions_as_openenv_does(start_server):
    server = start_server("echo", "--sandbox", "inprocess", "--idle-timeout", "1", "--openenv-ws-idle-timeout", "0")
    async with GenericEnvClient(base_url=server.http) as env:
        await env.reset()
        await env.step({"message": "one"})
        await anyio.sleep(2.5)  # past --idle-timeout: the /ws session is kept, as in OpenEnv
        assert (await env.step({"message": "two"})).observation["echoed_message"] == "two"
        assert (await env.state())["step_count"] == 2


async def test_twenty_adapted_sessions_start_at_once_on_the_subprocess_backend(start_server):
    """OpenEnv's package is heavy to import; each sandbox worker imports it (without its web UI)."""
    from openenv_ws import connect

    server = start_server(WORDS, "--sandbox", "subprocess")
    started: list[float] = []

    async def one() -> None:
        t = anyio.current_time()
        async with connect(server.url, "words", request_timeout=120) as env:
            await env.reset(seed=1)
        started.append(anyio.current_time() - t)

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(one)
    assert len(started) == 20

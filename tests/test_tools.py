"""Tool calls over our protocol, against real servers: published tools, steps, events, resume, recording, replay."""

from __future__ import annotations

import anyio
import httpx
import msgspec
import pytest
from websockets.asyncio.client import connect as raw_connect

from openenv_ws import EpisodeStateError, ValidationError, connect
from openenv_ws import protocol as p
from openenv_ws.record import read_episodes

from .conftest import wait_for
from .proxy import CuttableProxy
from .test_recording import openenv_ws

NOTES = "tests.helper_envs:NotesEnv"


@pytest.fixture(scope="module", params=["inprocess", "subprocess"])
def notes_server(request):
    from .conftest import ServerProcess

    server = ServerProcess(NOTES, "tests.helper_envs:SyncCounterEnv", "echo", "--sandbox", request.param)
    yield server
    server.stop()


async def test_tools_are_published_in_the_opened_frame_and_the_env_listing(start_server):
    server = start_server("coding", "shell", "textgames", "echo", NOTES, "--sandbox", "inprocess")
    async with httpx.AsyncClient() as http:
        envs = (await http.get(server.http + "/v1/envs", timeout=5)).json()["envs"]
    listed = {e["name"]: e["tools"] for e in envs}
    assert [t["name"] for t in listed["coding"]] == ["run_python", "submit"]
    assert [t["name"] for t in listed["shell"]] == ["run", "read_file", "write_file"]
    assert [t["name"] for t in listed["textgames"]] == ["play"] and listed["echo"] == []
    assert [t["name"] for t in listed["notes"]] == ["write", "read", "finish"]
    run = listed["shell"][0]
    assert run["input_schema"]["required"] == ["command"] and "persistent bash" in run["description"]
    async with connect(server.url, "coding") as env:
        assert env.tools == listed["coding"]
    # An environment without tools opens with the same bytes as before tools existed: no `tools` key.
    async with raw_connect(server.url + "/v1/sessions") as ws:
        await ws.send(p.encode(p.Open(env="echo")))
        opened = msgspec.msgpack.decode(await ws.recv())
    assert opened["t"] == "opened" and "tools" not in opened


async def test_a_tool_call_is_a_step(notes_server):
    events: list = []
    async with connect(notes_server.url, "notes") as env:
        with pytest.raises(EpisodeStateError):
            await env.call_tool("read", {"key": "x"})  # before reset, as for any step
        await env.reset()
        r = await env.call_tool("write", {"key": "answer", "text": "41"}, on_event=events.append)
        assert r.observation == {"notes": {"answer": "41"}} and r.reward == 0.0 and not r.done
        assert events == [{"writing": "answer"}]
        missing = await env.call_tool("read", {"key": "nope"})
        assert missing.observation == {"error": "no note named 'nope'"}
        assert missing.info == {"tool_error": "no note named 'nope'"} and missing.reward is None
        assert (await env.call_tool("read", {"key": "answer"})).observation == "41"
        with pytest.raises(ValidationError) as bad:
            await env.call_tool("write", {"key": "answer", "text": 42})
        assert bad.value.path == "$.arguments.text"
        with pytest.raises(ValidationError) as unknown:
            await env.call_tool("erase", {})
        assert unknown.value.path == "$.tool"
        with pytest.raises(ValidationError, match="invalid tool call: Object contains unknown field `message`"):
            await env.step({"message": "a tools-only environment takes tool calls only"})
        await env.step({"tool": "write", "arguments": {"key": "answer", "text": "42"}})  # the same, as a step
        done = await env.call_tool("finish")
        assert done.terminated and done.reward == 1.0 and done.info == {"scores": {"answer": 1.0}}
        with pytest.raises(EpisodeStateError):
            await env.call_tool("read", {"key": "answer"})
        assert (await env.state())["step_count"] == 5  # the refused calls were not applied


async def test_an_environment_takes_its_actions_and_its_tools(notes_server):
    """A blocking environment: its tool runs on a worker thread and streams from there."""
    events: list = []
    async with connect(notes_server.url, "counter") as env:
        await env.reset(seed=1)
        assert (await env.step({"add": 2})).observation == {"total": 3}
        r = await env.call_tool("add", {"amount": 4}, on_event=events.append)
        assert r.observation == {"total": 7} and events == [{"adding": 4}]
        with pytest.raises(ValidationError) as bad:
            await env.step({"add": "two"})
        assert bad.value.path == "$.add"
        with pytest.raises(ValidationError) as bad_call:
            await env.call_tool("add", {"amount": "two"})
        assert bad_call.value.path == "$.arguments.amount"


async def test_a_tool_call_cut_mid_flight_completes_once(notes_server):
    proxy = CuttableProxy(notes_server.port)
    async with anyio.create_task_group() as tg:
        port = await tg.start(proxy.run)
        async with connect(f"ws://127.0.0.1:{port}", "notes") as env:
            await env.reset()
            for i in range(3):
                async with anyio.create_task_group() as cutter:
                    cutter.start_soon(_cut_after, proxy, 0.15)
                    r = await env.call_tool("write", {"key": f"k{i}", "text": "x", "delay_s": 0.4})
                assert list(r.observation["notes"]) == [f"k{j}" for j in range(i + 1)]
            state = await env.state()
            assert env.reconnects >= 3
        tg.cancel_scope.cancel()
    assert state["step_count"] == 3


async def _cut_after(proxy: CuttableProxy, delay: float) -> None:
    await anyio.sleep(delay)
    assert proxy.cut() >= 1


async def test_tool_calls_are_recorded_and_replay(start_server, tmp_path):
    server = start_server(NOTES, "--sandbox", "inprocess", "--record", str(tmp_path))
    async with connect(server.url, "notes") as env:
        await env.reset(seed=3)
        await env.call_tool("write", {"key": "answer", "text": "42"})
        await env.call_tool("read", {"key": "gone"})
        with pytest.raises(ValidationError):
            await env.call_tool("write", {})
        await env.call_tool("finish")
    assert wait_for(lambda: len(list(tmp_path.glob("*.jsonl"))) == 1)  # files open on the writer thread
    files = sorted(tmp_path.glob("*.jsonl"))
    assert wait_for(lambda: read_episodes(files[0])[0].end is not None)
    frames = read_episodes(files[0])[0].frames
    steps = [r.frame["action"] for r in frames if r.tag == "step"]
    assert steps == [
        {"tool": "write", "arguments": {"key": "answer", "text": "42"}},
        {"tool": "read", "arguments": {"key": "gone"}},
        {"tool": "write", "arguments": {}},
        {"tool": "finish", "arguments": {}},
    ]
    assert [r.frame["data"] for r in frames if r.tag == "event"] == [{"writing": "answer"}]
    replayed = openenv_ws("replay", str(files[0]))
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "5 requests matched" in replayed.stdout  # the reset and the four calls, the refused one included

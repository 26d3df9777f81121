"""A session's tools over MCP, driven by the official ``mcp`` client (streamable HTTP) against live servers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import McpError
from websockets.asyncio.client import connect as raw_connect

from openenv_ws import connect
from openenv_ws import protocol as p
from openenv_ws.record import read_episodes

from .conftest import wait_for
from .test_recording import openenv_ws

NOTES = "tests.helper_envs:NotesEnv"


@asynccontextmanager
async def mcp_client(url: str, headers: dict[str, str]) -> AsyncIterator[ClientSession]:
    async with (
        httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(30, read=60)) as http,
        streamable_http_client(url, http_client=http) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]


@pytest.fixture(scope="module")
def server():
    from .conftest import ServerProcess

    server = ServerProcess(NOTES, "coding", "--sandbox", "subprocess")
    yield server
    server.stop()


async def steps_counted(server) -> float:
    async with httpx.AsyncClient() as http:
        text = (await http.get(server.http + "/metrics", timeout=10)).text
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith("openenv_ws_steps_total "))


async def test_an_mcp_client_lists_and_calls_the_tools_of_a_session_as_its_steps(server):
    async with connect(server.url, "notes") as env:
        await env.reset()
        counted = await steps_counted(server)
        async with mcp_client(env.mcp_url, env.mcp_headers) as mcp:
            listed = (await mcp.list_tools()).tools
            assert [(t.name, t.description, t.inputSchema) for t in listed] == [
                (t["name"], t["description"], t["input_schema"]) for t in env.tools
            ]
            progress: list = []

            async def on_progress(done: float, total: float | None, message: str | None) -> None:
                progress.append((done, message))

            wrote = await mcp.call_tool("write", {"key": "answer", "text": "42"}, progress_callback=on_progress)
            assert not wrote.isError and wrote.structuredContent == {"notes": {"answer": "42"}}
            assert wrote.content[0].text == '{"notes":{"answer":"42"}}'
            assert progress == [(1.0, '{"writing":"answer"}')]  # the step's streamed event
            meta = wrote.meta["openenv_ws"]
            assert meta["reward"] == 0.0 and not meta["terminated"] and meta["seq"] == 2  # after the reset (1)

            read = await mcp.call_tool("read", {"key": "answer"})
            assert read.structuredContent == {"result": "42"} and read.content[0].text == "42"
            missing = await mcp.call_tool("read", {"key": "nope"})
            assert missing.isError and missing.content[0].text == "no note named 'nope'"
            invalid = await mcp.call_tool("write", {"key": "answer"})
            assert invalid.isError and "$.arguments" in invalid.content[0].text and "text" in invalid.content[0].text
            unknown = await mcp.call_tool("erase", {})
            assert unknown.isError and "unknown tool 'erase'" in unknown.content[0].text
        assert await steps_counted(server) == counted + 3  # the server's metrics count them as steps

        # The session's own client goes on: its numbering continues after the MCP calls.
        r = await env.call_tool("write", {"key": "more", "text": "x"})
        assert r.observation["notes"] == {"answer": "42", "more": "x"}
        async with mcp_client(env.mcp_url, env.mcp_headers) as mcp:
            finished = await mcp.call_tool("finish", {})
            assert finished.meta["openenv_ws"]["terminated"] and finished.meta["openenv_ws"]["reward"] == 1.0
            assert finished.meta["openenv_ws"]["info"] == {"scores": {"answer": 1.0}}
            ended = await mcp.call_tool("read", {"key": "answer"})
            assert ended.isError and ended.content[0].text.startswith("episode_ended:")
        state = await env.state()
    assert state["step_count"] == 5  # write, read, read (error result), write, finish: refusals are not steps


async def test_a_built_in_environment_over_mcp(server):
    async with connect(server.url, "coding", options={"task": "fizzbuzz"}) as env:
        await env.reset(seed=1)
        async with mcp_client(env.mcp_url, env.mcp_headers) as mcp:
            assert [t.name for t in (await mcp.list_tools()).tools] == ["run_python", "submit"]
            code = "def fizzbuzz(n):\n    return [str(i) for i in range(1, n + 1)]\nprint('defined')"
            ran = await mcp.call_tool("run_python", {"code": code})  # validated against its outputSchema too
            assert ran.structuredContent["stdout"] == "defined\n" and ran.structuredContent["tests_passed"] == 2
            assert ran.meta["openenv_ws"]["reward"] == pytest.approx(0.4)
            submitted = await mcp.call_tool("submit", {})
            assert submitted.meta["openenv_ws"]["terminated"] and submitted.meta["openenv_ws"]["reward"] == 0.4


async def test_the_endpoint_wants_the_sessions_own_credential(server):
    async with connect(server.url, "notes") as env, httpx.AsyncClient(timeout=10) as http:
        await env.reset()
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        token = env.mcp_headers[p.RESUME_TOKEN_HEADER]
        assert (await http.post(env.mcp_url, json=body)).status_code == 401
        wrong = await http.post(env.mcp_url, json=body, headers={p.RESUME_TOKEN_HEADER: "not-it"})
        assert wrong.status_code == 404
        other = env.mcp_url.replace(env.session_id, "s-0000")
        assert (await http.post(other, json=body, headers={p.RESUME_TOKEN_HEADER: token})).status_code == 404
        as_bearer = await http.post(env.mcp_url, json=body, headers={"Authorization": f"Bearer {token}"})
        assert as_bearer.status_code == 200 and len(as_bearer.json()["result"]["tools"]) == 3
        assert (await http.get(env.mcp_url, headers={p.RESUME_TOKEN_HEADER: token})).status_code == 405
        huge = await http.post(env.mcp_url, content=b" " * (1 << 20) + b"{}", headers={p.RESUME_TOKEN_HEADER: token})
        # The server's body limit (every HTTP route) answers before the endpoint reads a byte of it.
        assert huge.status_code == 413 and "exceeds the limit of 1048576 bytes" in huge.json()["detail"]

        async def chunks():  # no Content-Length: the body is read up to the limit, no further
            for _ in range(3):
                yield b" " * 600_000

        chunked = await http.post(env.mcp_url, content=chunks(), headers={p.RESUME_TOKEN_HEADER: token})
        assert chunked.status_code == 413
        batch = await http.post(env.mcp_url, json=[body], headers={p.RESUME_TOKEN_HEADER: token})
        assert batch.status_code == 400 and batch.json()["error"]["code"] == -32600
        unknown = await http.post(
            env.mcp_url, json={**body, "method": "resources/list"}, headers={p.RESUME_TOKEN_HEADER: token}
        )
        assert unknown.json()["error"]["code"] == -32601
        failed: tuple = ()
        try:
            async with mcp_client(env.mcp_url, {p.RESUME_TOKEN_HEADER: "not-it"}) as mcp:
                await mcp.list_tools()
        except* McpError as group:  # the SDK's task groups wrap it
            failed = tuple(leaves(group))
        assert [str(e) for e in failed] == ["Session terminated"]  # how the SDK reads a 404


async def test_with_a_server_token_both_credentials_are_needed(start_server):
    server = start_server(NOTES, "--sandbox", "inprocess", "--token", "server-secret")
    async with connect(server.url, "notes", token="server-secret") as env, httpx.AsyncClient(timeout=10) as http:
        await env.reset()
        session_only = {p.RESUME_TOKEN_HEADER: env.mcp_headers[p.RESUME_TOKEN_HEADER]}
        body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        assert (await http.post(env.mcp_url, json=body, headers=session_only)).status_code == 401
        assert env.mcp_headers["Authorization"] == "Bearer server-secret"
        async with mcp_client(env.mcp_url, env.mcp_headers) as mcp:
            assert (await mcp.call_tool("write", {"key": "k", "text": "v"})).structuredContent == {"notes": {"k": "v"}}


async def test_with_scoped_tokens_the_sessions_credential_is_what_counts(start_server, tmp_path):
    """As everywhere (server/access.py): the resume token lets any valid caller act on its session."""
    tokens = tmp_path / "tokens"
    tokens.write_text("alice-Secret-1 trainer alice\nbob-Secret-2 trainer bob\n")
    server = start_server(NOTES, "--sandbox", "inprocess", "--token-file", str(tokens))
    async with connect(server.url, "notes", token="alice-Secret-1") as env, httpx.AsyncClient(timeout=10) as http:
        await env.reset()
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        bob = {"Authorization": "Bearer bob-Secret-2"}
        assert (await http.post(env.mcp_url, json=body, headers=bob)).status_code == 401  # a server token, no session's
        handed = {**bob, p.RESUME_TOKEN_HEADER: env.mcp_headers[p.RESUME_TOKEN_HEADER]}
        async with mcp_client(env.mcp_url, handed) as mcp:
            wrote = await mcp.call_tool("write", {"key": "from", "text": "bob"})
        assert wrote.structuredContent == {"notes": {"from": "bob"}}


async def test_a_session_whose_client_is_gone_can_still_be_driven_and_is_recorded(start_server, tmp_path):
    server = start_server(NOTES, "--sandbox", "inprocess", "--record", str(tmp_path))
    async with raw_connect(server.url + "/v1/sessions") as ws:
        await ws.send(p.encode(p.Open(env="notes")))
        opened = p.decode_server(await ws.recv())
        await ws.send(p.encode(p.Reset(seq=1)))
        assert isinstance(p.decode_server(await ws.recv()), p.Result)
    assert wait_for(lambda: server.sessions()[0]["state"] == "detached")
    url = server.http + p.MCP_PATH.format(session_id=opened.session_id)
    async with mcp_client(url, {p.RESUME_TOKEN_HEADER: opened.resume_token}) as mcp:
        await mcp.call_tool("write", {"key": "answer", "text": "42"})
        assert (await mcp.call_tool("finish", {})).meta["openenv_ws"]["reward"] == 1.0
    assert server.sessions()[0]["state"] == "detached"  # still waiting for its client to resume
    async with raw_connect(server.url + "/v1/sessions") as ws:  # it does, and sees what was applied
        await ws.send(p.encode(p.Open(session_id=opened.session_id, resume_token=opened.resume_token, last_seen=1)))
        resumed = p.decode_server(await ws.recv())
        assert resumed.resumed and resumed.last_applied == 3
        await ws.send(p.encode(p.Close(seq=4)))
        assert isinstance(p.decode_server(await ws.recv()), p.Closed)
    assert wait_for(lambda: len(list(tmp_path.glob("*.jsonl"))) == 1)  # files open on the writer thread
    files = sorted(tmp_path.glob("*.jsonl"))
    assert wait_for(lambda: read_episodes(files[0])[0].end is not None)
    actions = [r.frame["action"] for r in read_episodes(files[0])[0].frames if r.tag == "step"]
    assert actions == [
        {"tool": "write", "arguments": {"key": "answer", "text": "42"}},
        {"tool": "finish", "arguments": {}},
    ]
    replayed = openenv_ws("replay", str(files[0]))
    assert replayed.returncode == 0 and "3 requests matched" in replayed.stdout, replayed.stdout


async def test_a_closed_session_answers_404_with_the_requests_id(server):
    async with connect(server.url, "notes") as env:
        await env.reset()
        await env.close()
        async with httpx.AsyncClient(timeout=10) as http:
            body = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "read", "arguments": {}}}
            gone = await http.post(env.mcp_url, json=body, headers={p.RESUME_TOKEN_HEADER: env._core.resume_token})
    assert gone.status_code == 404 and gone.json()["id"] == 7


async def test_mcp_errors_surface_as_mcp_errors(server):
    async with connect(server.url, "notes") as env:
        await env.reset()
        async with mcp_client(env.mcp_url, env.mcp_headers) as mcp:
            with pytest.raises(McpError, match="method not found"):
                await mcp.list_resources()

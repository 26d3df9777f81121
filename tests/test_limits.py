"""The limits a client meets: HTTP bodies, sessions per client, watchers per session, recording disk.

Each against a real server: the answer is typed (413, ``capacity`` with ``retry_after``), the
bound holds while the client keeps pushing, and the sessions around it go on.
"""

from __future__ import annotations

import json
import socket
import time

import anyio
import httpx
import pytest
from websockets.asyncio.client import connect as raw_connect

from openenv_ws import CapacityError, connect
from openenv_ws import protocol as p

from .conftest import wait_for

BODY_LIMIT = 64 << 10
PUSH_AT_MOST = 64 << 20
"""What a test client tries to send past the body limit: far more than socket buffers hold."""


def metric(server, name: str) -> float:
    for line in httpx.get(server.http + "/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


def push_body(port: int, path: str, header: str, chunked: bool, deadline: float = 10.0) -> tuple[bytes, int, bool]:
    """Send a request whose body never ends; returns (what the server answered, bytes sent, closed by the server)."""
    sock = socket.create_connection(("127.0.0.1", port))
    try:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n{header}\r\n".encode())
        sock.setblocking(False)
        chunk = b"[" * 65536
        piece = b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk
        answer, sent, ends, pending = b"", 0, time.monotonic() + deadline, b""
        while sent < PUSH_AT_MOST and time.monotonic() < ends:
            pending = pending or piece  # what a partial send left goes first: the chunks stay well-formed
            try:
                written = sock.send(pending)
                sent, pending = sent + written, pending[written:]
            except BlockingIOError:
                time.sleep(0.001)
            except OSError:  # reset or broken pipe: the server has closed
                return answer, sent, True
            try:
                data = sock.recv(65536)
                if not data:
                    return answer, sent, True
                answer += data
            except BlockingIOError:
                pass
            except OSError:
                return answer, sent, True
        return answer, sent, False
    finally:
        sock.close()


def test_a_body_past_the_limit_gets_413_at_once_and_the_connection_is_closed(start_server):
    server = start_server("echo", "--sandbox", "inprocess", "--max-body-bytes", "64K")
    for path in ("/mcp", "/reset", "/envs/echo/step", "/v1/sessions", "/no-such-route"):
        for header, chunked in ((f"Content-Length: {300 << 20}\r\n", False), ("Transfer-Encoding: chunked\r\n", True)):
            answer, sent, closed = push_body(server.port, path, header, chunked)
            assert answer.startswith(b"HTTP/1.1 413 "), (path, chunked, answer[:200])
            head, _, body = answer.partition(b"\r\n\r\n")
            assert b"connection: close" in head.lower()
            error = json.loads(body)
            assert error["code"] == "frame_too_large" and f"limit of {BODY_LIMIT} bytes" in error["detail"]
            assert closed and sent < PUSH_AT_MOST, (path, chunked, sent)  # cut off, not read on and on
    assert httpx.post(server.http + "/mcp", json={"jsonrpc": "2.0", "method": "tools/list", "id": 1}).status_code == 200
    within = httpx.post(server.http + "/reset", json={"note": "x" * (BODY_LIMIT - 100)}, timeout=10)
    assert within.status_code == 200, within.text


async def test_sessions_per_client_are_capped_by_ip_address_without_tokens(start_server):
    server = start_server("echo", "--sandbox", "inprocess", "--max-sessions-per-client", "2")
    async with connect(server.url, "echo") as first, connect(server.url, "echo"):
        with pytest.raises(CapacityError) as info:
            async with connect(server.url, "echo"):
                pass
        assert info.value.retry_after == 1.0 and "max_sessions_per_client" in info.value.message
        assert "'127.0.0.1'" in info.value.message
        async with httpx.AsyncClient() as http:
            refused = await http.post(server.http + "/reset", json={}, timeout=10)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        # Another address is another client.
        async with raw_connect(server.url + "/v1/sessions", local_addr=("127.0.0.2", 0)) as other:
            await other.send(p.encode(p.Open(env="echo")))
            assert isinstance(p.decode_server(await other.recv()), p.Opened)
        await first.reset()  # the clients at their cap go on
        await first.step({"message": "fine"})
    async with connect(server.url, "echo") as again:  # ended sessions count no more
        await again.reset()


async def test_the_forks_a_client_holds_count_against_its_cap(start_server):
    server = start_server("echo", "--sandbox", "inprocess", "--max-sessions-per-client", "2")
    async with connect(server.url, "echo") as parent:
        await parent.reset()
        child = await parent.fork()
        with pytest.raises(CapacityError):  # the parent and its child: two
            async with connect(server.url, "echo"):
                pass
        await child.close()
        async with connect(server.url, "echo") as again:
            await again.reset()


async def test_sessions_per_client_are_capped_by_token_name(start_server, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("alice-1 trainer alice\nalice-2 trainer alice\nbob-1 trainer bob\n")
    server = start_server(
        "echo", "--sandbox", "inprocess", "--token-file", str(tokens), "--max-sessions-per-client", "1"
    )
    sessions_url = server.url + "/v1/sessions"
    async with raw_connect(sessions_url, additional_headers={"Authorization": "Bearer alice-1"}) as first:
        await first.send(p.encode(p.Open(env="echo", open_key="once")))
        opened = p.decode_server(await first.recv())
        assert isinstance(opened, p.Opened)
        with pytest.raises(CapacityError):  # a second session of the same identity, under its other token
            async with connect(server.url, "echo", token="alice-2"):
                pass
        async with connect(server.url, "echo", token="bob-1") as bob:  # another identity: another client
            await bob.reset()
        # The same open again (as after a connection dropped before "opened"): no second session, so not refused.
        async with raw_connect(sessions_url, additional_headers={"Authorization": "Bearer alice-2"}) as again:
            await again.send(p.encode(p.Open(env="echo", open_key="once")))
            repeated = p.decode_server(await again.recv())
        assert isinstance(repeated, p.Opened) and repeated.session_id == opened.session_id


async def test_watchers_per_session_are_capped(start_server):
    server = start_server("echo", "--sandbox", "inprocess", "--max-watchers", "1")
    async with connect(server.url, "echo") as env:
        address = f"{server.url}/v1/sessions/{env.session_id}/watch"
        async with raw_connect(address) as first:
            assert json.loads(await first.recv())["kind"] == "session"
            async with raw_connect(address) as second:
                refused = json.loads(await second.recv())
                await second.wait_closed()
            assert refused["kind"] == "error" and refused["code"] == "capacity" and refused["retry_after"] == 1.0
            assert "max_watchers" in refused["message"] and second.close_code == 1013
            await env.reset()  # the admitted watcher still sees the session
            assert json.loads(await first.recv())["frame"]["t"] == "reset"
        await wait_until_no_watchers(server)
        async with raw_connect(address) as later:  # a place freed: admitted again
            assert json.loads(await later.recv())["kind"] == "session"


async def wait_until_no_watchers(server) -> None:
    with anyio.fail_after(10):
        while any(s["watchers"] for s in server.sessions()):
            await anyio.sleep(0.02)


async def test_recording_stops_at_its_disk_budget_and_the_sessions_go_on(start_server, tmp_path):
    budget = 16 << 10
    (tmp_path / "earlier.jsonl").write_bytes(b"x" * (4 << 10))  # files already there count
    server = start_server("echo", "--sandbox", "inprocess", "--record", str(tmp_path), "--record-max-bytes", "16K")
    steps = 0
    for _ in range(3):
        async with connect(server.url, "echo") as env:
            await env.reset()
            for _ in range(10):
                result = await env.step({"message": "m" * 1000})
                assert result.observation["message_length"] == 1000
                steps += 1
    assert steps == 30  # ~60 KB to record: the budget ran out on the way, no step failed
    assert wait_for(lambda: metric(server, "openenv_ws_recordings_cut_total") >= 1)
    used = sum(path.stat().st_size for path in tmp_path.iterdir())
    assert used <= budget
    assert metric(server, "openenv_ws_recorded_bytes_total") <= budget - (4 << 10)
    assert server.output().count("reached their disk budget of 16384 bytes") == 1  # logged once
    assert server.health()["status"] == "ok"

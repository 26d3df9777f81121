"""The session inspector: GET /v1/sessions, WS /v1/sessions/{id}/watch, and ``openenv-ws sessions``."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time

import anyio
import anyio.abc
import httpx
import pytest

from openenv_ws import connect, connect_sync
from openenv_ws.client.transport import WebSocket
from openenv_ws.server import ServerConfig
from openenv_ws.server.local import local_server

from .conftest import ROOT


def sessions_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "openenv_ws", "sessions", *args]


async def finish(process: anyio.abc.Process, timeout: float = 15.0) -> tuple[int, str]:
    """Its exit status and everything it printed (stdout, then stderr)."""
    with anyio.fail_after(timeout):
        async with process:
            out = b"".join([chunk async for chunk in process.stdout])
            err = b"".join([chunk async for chunk in process.stderr])
            return await process.wait(), (out + err).decode()


async def wait_until(predicate, timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.02)


async def test_sessions_are_described(start_server):
    server = start_server("echo", "--sandbox", "subprocess")
    async with connect(server.url, "echo") as env:
        await env.reset()
        await env.step({"message": "hi"})
        (session,) = server.sessions()
        assert session["id"] == env.session_id and session["env"] == "echo"
        assert session["backend"] == "subprocess" and session["sandbox"].startswith("pid:")
        assert session["state"] == "active" and session["steps"] == 1 and session["requests"] == 2
        assert session["client"].startswith("127.0.0.1:")
        assert session["age_s"] >= session["idle_s"] >= 0
        assert abs(session["created_at"] - time.time()) < 60 and session["last_activity_at"] >= session["created_at"]
        assert session["watchers"] == 0 and session["recording"] is None


async def test_json_snapshot(start_server):
    server = start_server("echo", "--sandbox", "inprocess")
    async with connect(server.url, "echo") as env:
        await env.reset()
        result = await anyio.run_process(sessions_command("--url", server.http, "--json"), check=False)
    assert result.returncode == 0, result.stderr.decode()
    snapshot = json.loads(result.stdout)
    assert snapshot["server"] == server.http and snapshot["health"]["status"] == "ok"
    assert [s["id"] for s in snapshot["sessions"]] == [env.session_id]
    # The same through the script, against a ws:// URL.
    cmd = [sys.executable, "scripts/inspect_sessions.py", "--url", server.url, "--json"]
    result = await anyio.run_process(cmd, cwd=ROOT, check=False)
    assert result.returncode == 0 and json.loads(result.stdout)["sessions"] == []


async def test_follow_tails_one_session_until_it_ends(start_server):
    server = start_server("echo", "--sandbox", "inprocess")
    async with connect(server.url, "echo") as env, connect(server.url, "echo") as other:
        follower = await anyio.open_process(sessions_command("--url", server.url, "--follow", env.session_id))
        await wait_until(lambda: any(s["watchers"] for s in server.sessions()))
        await env.reset(seed=3)
        await env.step({"message": "a b", "stream": True})
        await other.reset()  # another session: not shown
        await other.step({"message": "unseen"})
        await env.state()
    status, out = await finish(follower)
    assert status == 0, out
    lines = out.splitlines()
    assert lines[0].startswith("-- session: ") and env.session_id in lines[0]
    body = "\n".join(lines[1:])
    expected = ["-> reset  seq=1    seed=3", "<- result seq=1", '-> step   seq=2    action={"message":"a b"']
    expected += ['<- event  seq=2    #1 {"word":"b"}', "-> state  seq=3", "<- closed seq=4    closed by client"]
    assert all(text in body for text in expected) and "unseen" not in body, body
    assert lines[-1] == '-- closed: {"reason":"closed by client"}'


async def test_follow_json_and_unknown_sessions(start_server):
    server = start_server("echo", "--sandbox", "inprocess")
    status, out = await finish(await anyio.open_process(sessions_command("--url", server.url, "--follow", "s-nope")))
    assert status == 1 and "no session 's-nope'" in out
    async with connect(server.url, "echo") as env:
        follower = await anyio.open_process(sessions_command("--url", server.url, "--follow", env.session_id, "--json"))
        await wait_until(lambda: any(s["watchers"] for s in server.sessions()))
        await env.reset()
    status, out = await finish(follower)
    assert status == 0, out
    messages = [json.loads(line) for line in out.splitlines()]
    assert [m["kind"] for m in messages] == ["session", "frame", "frame", "frame", "frame", "closed"]
    assert [m["frame"]["t"] for m in messages if m["kind"] == "frame"] == ["reset", "result", "close", "closed"]
    assert all(m["dir"] in ("c2s", "s2c") and m["ts"] >= 0 for m in messages if m["kind"] == "frame")


async def test_a_slow_watcher_loses_frames_not_the_session():
    """A watcher that does not read fills its bounded queue; frames are dropped and counted, steps go on."""
    config = ServerConfig(watch_buffer=4)
    async with local_server(["echo"], config=config) as url, connect(url, "echo") as env:
        watcher = await WebSocket.connect(f"{url}/v1/sessions/{env.session_id}/watch")
        try:
            first = json.loads(await watcher.receive())
            assert first["kind"] == "session"
            await env.reset()
            big = "x" * 200_000  # big frames fill the socket buffers, then the watcher's queue
            for _ in range(60):
                result = await env.step({"message": big})
            assert result.observation["message_length"] == 200_000  # the session never waited
            kinds: list[str] = []
            dropped = 0
            with anyio.fail_after(20):
                while len(kinds) < 200:
                    message = json.loads(await watcher.receive())
                    kinds.append(message["kind"])
                    if message["kind"] == "dropped":
                        dropped = message["total"]
                    if sum(k == "frame" for k in kinds) >= 4 and dropped:
                        break
            assert dropped > 0
        finally:
            await watcher.aclose()
        async with httpx.AsyncClient() as http:
            body = (await http.get(url.replace("ws://", "http://") + "/metrics")).text
        line = next(line for line in body.splitlines() if line.startswith("openenv_ws_watch_dropped_total "))
        assert int(line.split()[1]) >= dropped


def test_live_table_renders(start_server):
    """Piped (no terminal): each refresh printed after the last, as plain text."""
    server = start_server("echo", "--sandbox", "inprocess")

    async def hold_and_render() -> tuple[str, str]:
        async with connect(server.url, "echo") as env:
            await env.reset()
            cmd = sessions_command("--url", server.url, "--count", "2", "--interval", "0.1")
            result = await anyio.run_process(cmd, check=False)
            assert result.returncode == 0
            return result.stdout.decode(), env.session_id

    out, session_id = anyio.run(hold_and_render)
    assert "\x1b" not in out  # no escape codes in a pipe
    screens = [chunk for chunk in out.split(f"{server.http}  ok") if chunk.strip()]
    assert len(screens) == 2
    header = next(line for line in screens[-1].splitlines() if line.lstrip().startswith("ID"))
    assert header.split() == ["ID", "ENV", "BACKEND", "SANDBOX", "STATE", "AGE", "STEPS", "IDLE", "CLIENT"]
    row = next(line for line in screens[-1].splitlines() if session_id in line)
    assert row.split()[1:5] == ["echo", "inprocess", "inprocess", "active"] and row.split()[6] == "0"
    assert "sessions 1/1024" in screens[-1] and "every 0.1s; Ctrl-C: quit" in screens[-1]


def test_live_table_redraws_in_place_on_a_terminal(start_server):
    """On a terminal (a pseudo-terminal here) rich redraws the table in place; q quits."""
    server = start_server("echo", "--sandbox", "inprocess")
    with connect_sync(server.url, "echo") as env:
        env.reset()
        leader, follower = pty.openpty()
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 160, 0, 0))
        cmd = sessions_command("--url", server.url, "--interval", "0.2")
        sized = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}  # the terminal's size rules
        process = subprocess.Popen(cmd, stdin=follower, stdout=follower, stderr=follower, env=sized)
        os.close(follower)
        screen = bytearray()
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and screen.count(b"sessions 1/1024") < 3:
                ready, _, _ = select.select([leader], [], [], 0.5)
                if ready:
                    screen.extend(os.read(leader, 65536))
            os.write(leader, b"q")
            assert process.wait(10) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(5)
            os.close(leader)
    text = screen.decode(errors="replace")
    assert text.count("sessions 1/1024") >= 3, text
    assert "\x1b[" in text and env.session_id in text and "q: quit" in text
    assert "\x1b[2J" not in text  # redrawn in place, not by clearing the screen


@pytest.mark.parametrize("url", ["http://127.0.0.1:9", "ws://127.0.0.1:9/x"])
def test_unreachable_server_is_reported(url):
    result = subprocess.run(sessions_command("--url", url, "--json"), capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "cannot reach http://127.0.0.1:9" in result.stderr


async def test_follow_connection_failure():
    from openenv_ws.tools.inspector import follow

    lines: list[str] = []
    assert await follow("ws://127.0.0.1:9", "s-x", out=lines.append) == 2
    assert "cannot follow s-x" in lines[0]

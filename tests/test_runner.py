"""run_episodes(): many episodes, retries under the stated policy, clean cancellation, scale."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import struct
import termios
import threading

import anyio
import httpx

from openenv_ws import run_episodes


async def test_runs_every_episode_and_returns_one_record_each(inprocess_server):
    out = io.StringIO()

    async def policy(observation):
        return {"message": "abc"}

    records = await run_episodes(
        inprocess_server.url, "echo", policy, episodes=40, concurrency=8, options={"max_steps": 5}, progress=out
    )
    assert [r.index for r in records] == list(range(40))
    assert all(r.ok and r.length == 5 and r.ended == "truncated" and r.attempts == 1 for r in records)
    assert all(abs(r.episode_return - 1.5) < 1e-9 for r in records)
    assert len({r.session_id for r in records}) == 40
    assert "episodes 40/40" in out.getvalue() and "finished 40" in out.getvalue()
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()  # not a terminal: plain lines


async def test_a_terminal_gets_a_progress_bar_with_rate_and_eta(inprocess_server):
    """On a real terminal (a pseudo-terminal here), rich draws the bar in place."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))  # 24 rows, 80 columns
    screen = bytearray()

    def drain() -> None:  # a terminal's reader: without one the writer would block on a full buffer
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                return
            if not chunk:
                return
            screen.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    with os.fdopen(follower, "w") as terminal:
        assert terminal.isatty()
        records = await run_episodes(
            inprocess_server.url,
            "echo",
            lambda obs: {"message": "abc", "delay_s": 0.01},
            episodes=30,
            concurrency=6,
            options={"max_steps": 5},
            progress=terminal,
        )
    os.close(leader)
    reader.join(5)
    assert all(r.ok for r in records)
    text = screen.decode(errors="replace")
    assert "\x1b[" in text  # drawn in place with escape codes
    assert "\x1b[1A" in text  # redrawn in place: the cursor goes back up over the two lines
    final = text.rsplit("episodes ", 1)[1]
    assert "30/30" in final and "100%" in final and "ep/s" in final and "eta" in final
    assert "running 0 · failed 0 · retried 0 · 150 steps" in final


async def test_max_steps_ends_an_endless_episode(inprocess_server):
    records = await run_episodes(inprocess_server.url, "echo", lambda obs: {"message": "x"}, episodes=3, max_steps=4)
    assert [(r.length, r.ended) for r in records] == [(4, "max_steps")] * 3


async def test_infrastructure_failures_are_retried_policy_failures_are_not(subprocess_server):
    crashed = []

    def crash_once(observation):
        if not crashed:
            crashed.append(True)
            return {"op": "crash"}  # the sandbox process dies: retried in a new session
        return {"op": "ok"}

    records = await run_episodes(
        subprocess_server.url, "flaky", crash_once, episodes=1, max_steps=3, retries=2, backoff=0.01
    )
    assert records[0].ok and records[0].attempts == 2 and records[0].length == 3

    bad = await run_episodes(subprocess_server.url, "flaky", lambda obs: {"op": 5}, episodes=2, retries=3)
    assert all(not r.ok and r.attempts == 1 and "ValidationError" in r.error for r in bad)


async def test_cancelling_leaves_no_session_open_on_the_server(inprocess_server):
    with anyio.move_on_after(1.0) as scope:
        await run_episodes(
            inprocess_server.url, "echo", lambda obs: {"message": "slow", "delay_s": 0.3}, episodes=50, concurrency=20
        )
    assert scope.cancelled_caught
    async with httpx.AsyncClient() as http:
        sessions = (await http.get(inprocess_server.http + "/v1/sessions")).json()["sessions"]
    assert sessions == []


async def test_2000_concurrent_sessions_complete(start_server):
    srv = start_server("echo", "--sandbox", "inprocess", "--max-sessions", "4000")
    with anyio.fail_after(240):
        records = await run_episodes(
            srv.url, "echo", lambda obs: {"message": "hi"}, episodes=2000, concurrency=2000, max_steps=3
        )
    failures = [r.error for r in records if not r.ok]
    assert failures == []
    assert sum(r.length for r in records) == 6000

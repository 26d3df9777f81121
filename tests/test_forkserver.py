"""The subprocess backend's fork-server: a forked worker is confined like a spawned one, and a
fork-server that dies is noticed, its sessions told, and it is started again.

Real servers (``openenv-ws serve``) and real processes; the checks read ``/proc``.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import anyio
import pytest

from openenv_ws import SandboxCrashedError, connect

from .conftest import wait_for


def forkserver_of(server) -> dict:
    (described,) = server.health()["backend"]["forkservers"].values()
    return described


def sandbox_pid(server, session_id: str) -> int:
    (listed,) = [s for s in server.sessions() if s["id"] == session_id]
    return int(listed["sandbox"].removeprefix("pid:"))


def environ(pid: int) -> bytes:
    return Path(f"/proc/{pid}/environ").read_bytes()


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


async def test_a_forked_worker_is_its_own_process_group_with_its_parent_environment(start_server):
    srv = start_server("echo", "--sandbox", "subprocess")
    async with connect(srv.url, env="echo") as env:
        await env.reset()
        pid = sandbox_pid(srv, env.session_id)
        parent = forkserver_of(srv)["pid"]
        assert parent_of(pid) == parent  # forked, not spawned
        assert os.getpgid(pid) == pid and os.getsid(pid) == pid  # its own session and group
        assert environ(pid) == environ(parent)
        r = await env.step({"message": "forked"})
        assert r.observation["echoed_message"] == "forked"
    assert wait_for(lambda: not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text())
    assert forkserver_of(srv)["forked"] >= 1


async def test_a_killed_forkserver_is_restarted_and_its_sessions_are_told(start_server):
    srv = start_server("echo", "--sandbox", "subprocess")
    first = forkserver_of(srv)["pid"]
    async with connect(srv.url, env="echo", reconnect_attempts=1) as victim:
        await victim.reset()
        os.kill(first, signal.SIGKILL)
        with anyio.fail_after(10):  # its worker dies with it, and the client is told
            while victim.failed is None:
                await anyio.sleep(0.02)
        assert "SIGTERM" in str(victim.failed)  # its death signal: it went with its fork-server
        with pytest.raises(SandboxCrashedError):
            await victim.step({"message": "gone"})
    assert wait_for(lambda: forkserver_of(srv)["running"] and forkserver_of(srv)["pid"] != first, timeout=15)
    assert forkserver_of(srv)["restarts"] == 1
    async with connect(srv.url, env="echo") as env:
        await env.reset()
        assert parent_of(sandbox_pid(srv, env.session_id)) == forkserver_of(srv)["pid"]


async def test_without_the_forkserver_each_worker_is_spawned(start_server):
    srv = start_server("echo", "--sandbox", "subprocess", "-B", "forkserver=0")
    assert "forkservers" not in srv.health()["backend"]
    async with connect(srv.url, env="echo") as env:
        await env.reset()
        assert parent_of(sandbox_pid(srv, env.session_id)) == srv.proc.pid

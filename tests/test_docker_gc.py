"""No orphans: who judges a container's server gone, ``openenv-ws gc``, and the periodic reaper.

Containers here are made by the test with the labels a server would give them, so each case is
exact. The judgement itself is checked on labels alone; the cases against the engine use only
containers that no other server may remove (a live server's, or one on another host with its lease
running), so the tests hold even while other test runs share the engine.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import anyio
import pytest

from openenv_ws.sandbox.docker.reaper import Owner, process_start, write_owner

from .conftest import ROOT

pytest_plugins = ["tests.docker_fixtures"]

TEST_LABEL = "openenv-ws.test-gc"


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _labels(owner: Owner, **changes: str) -> dict[str, str]:
    labels = {**owner.labels(), "openenv-ws.lease-expires": str(int(time.time() + 3600))}
    labels.update({f"openenv-ws.{k.replace('_', '-')}": v for k, v in changes.items()})
    return labels


def test_a_server_is_judged_gone_only_on_evidence():
    me = Owner.current("srv-me")
    other = Owner.current("srv-other")  # same host, this (live) process
    assert me.judge(_labels(me, pid=str(_dead_pid()))) is None  # its own: never judged here
    assert me.judge(_labels(other)) is None  # alive
    assert "is gone" in me.judge(_labels(other, pid=str(_dead_pid())))
    assert "is gone" in me.judge(_labels(other, pid_start="1"))  # the pid was reused by another process
    assert "rebooted" in me.judge(_labels(other, boot="another-boot"))
    elsewhere = {"host": "elsewhere"}
    assert me.judge(_labels(other, **elsewhere)) is None  # cannot check: trusted while its lease runs
    assert "lease expired" in me.judge(_labels(other, **elsewhere, lease_expires=str(int(time.time() - 1))))
    compose = _labels(other, **elsewhere, server_container="c" * 64)
    assert "no longer runs" in me.judge(compose, running=frozenset({"d" * 64}))
    assert me.judge(compose, running=frozenset({"c" * 64})) is None
    # A directory shared by the engines of several nodes (a swarm's /tmp): another engine's server
    # container is not in this engine's list, which then proves nothing; its lease decides.
    here, there = replace(me, engine="engine-here"), _labels(other, **elsewhere, server_container="c" * 64)
    assert "no longer runs" in here.judge({**there, "openenv-ws.engine": "engine-here"}, running=frozenset())
    assert here.judge({**there, "openenv-ws.engine": "engine-there"}, running=frozenset()) is None


def test_the_containers_of_a_server_with_a_state_directory_wait_for_its_successor(tmp_path):
    """Such containers name their instance's directory; its owner file says who holds it, and until when
    a successor may take it over after its holder died (serve --state-dir, docs/operations.md#restarts)."""
    me = Owner.current("srv-me")
    directory = tmp_path / "srv-adoptable"
    holder = replace(Owner.current("srv-adoptable"), adopt_dir=str(directory))
    labels = {**holder.labels(), "openenv-ws.lease-expires": str(int(time.time() + 3600))}
    assert "openenv-ws.pid" not in labels  # servers that do not know these labels fall back to the lease
    assert "directory is gone" in me.judge(labels)
    write_owner(directory, holder, adopt_grace=60)
    assert me.judge(labels) is None  # its holder runs
    dead = replace(holder, pid=_dead_pid())
    write_owner(directory, dead, adopt_grace=60)
    assert me.judge(labels) is None  # its holder is gone: a successor may still take it over
    owner_labels = json.loads((directory / "owner.json").read_text())
    assert me.judge(owner_labels) is None  # the directory itself is judged the same way
    write_owner(directory, dead, adopt_grace=-1)
    assert "no successor took it over" in me.judge(labels)
    assert "rebooted" in me.judge({**labels, "openenv-ws.boot": "another-boot"})


@pytest.fixture
def labelled(engine, sandbox_image) -> Iterator[Callable[[dict[str, str]], str]]:
    """Make an exited container carrying the given server labels; all are removed at the end."""

    def make(labels: dict[str, str]) -> str:
        labels = {**labels, "openenv-ws.session": "s-" + secrets.token_hex(8), TEST_LABEL: "1"}
        container = engine.client.containers.run(
            sandbox_image, entrypoint=["python", "-c", "pass"], labels=labels, network_mode="none", detach=True
        )
        container.wait(timeout=30)
        return container.id

    yield make
    engine.remove(engine.client.containers.list(all=True, filters={"label": f"{TEST_LABEL}=1"}))


def gc(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "openenv_ws", "gc", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_gc_removes_what_it_is_asked_to_and_says_so(engine, labelled):
    remote = Owner("srv-test-" + secrets.token_hex(4), "elsewhere", "", 1, "")
    dead = Owner.current("srv-test-" + secrets.token_hex(4))
    kept = labelled(_labels(remote))  # another host, lease running: alive as far as anyone can tell
    labelled(_labels(dead, pid=str(_dead_pid())))

    out = gc("--dead")
    assert f"server={remote.instance}" not in out
    assert engine.managed(server=dead.instance) == []  # removed (by this gc, or by any server's sweep)
    assert [c.id for c in engine.managed(server=remote.instance)] == [kept]

    out = gc("--server", remote.instance)  # on demand, alive or not
    assert f"{kept[:12]}" in out and f"server={remote.instance}" in out and "removed by openenv-ws gc" in out
    assert "1 sandbox containers removed" in out
    assert engine.managed(server=remote.instance) == []


async def test_a_running_server_reaps_what_it_left_behind(engine, labelled, docker_serve):
    srv = docker_serve("echo", "-B", "reap_interval=0.5")
    pid = srv.process.proc.pid
    server = replace(Owner.current(srv.instance), pid=pid, pid_start=process_start(pid) or "")
    labelled(_labels(server))  # exited, and not one the server holds: only its owner may judge it
    with anyio.fail_after(10):
        while await anyio.to_thread.run_sync(lambda: engine.managed(server=srv.instance)):
            await anyio.sleep(0.1)
    assert srv.backend()["orphans_removed"] == 1

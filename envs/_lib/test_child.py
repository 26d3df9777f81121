"""The helper-process machinery the coding and shell environments share (``child.py``)."""

from __future__ import annotations

import sys

import anyio
import pytest

from openenv_ws_envs._lib.child import Capture, ChildProcess, MarkerSplitter, base_environ, group_members

# A child speaking the protocol (stdout and stderr merged): it runs each request line ("NONCE COMMAND")
# with `sh -c` and answers the exit status. Like the real children, it ignores SIGINT between requests.
ECHO_CHILD = r"""
import os, signal, subprocess, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
for line in os.fdopen(int(os.environ["OPENENV_REQUEST_FD"]), "rb"):
    nonce, _, command = line.partition(b" ")
    code = subprocess.call(command.decode(), shell=True, env=dict(os.environ, NONCE=nonce.decode()))
    sys.stdout.flush()
    os.write(1, b"\0" + nonce + b" " + str(code).encode() + b"\0")
"""


def test_splitter_finds_markers_split_across_chunks():
    splitter = MarkerSplitter("abc")
    out = []
    payload = None
    for chunk in [b"hel", b"lo\0a", b"b", b"c 4", b"2\0after"]:
        text, found = splitter.feed(chunk)
        out.append(text)
        payload = payload or found
    assert b"".join(out) == b"hello" and payload == b"42"
    assert splitter.feed(b"") == (b"after", None)  # output after the marker belongs to the next request


def test_splitter_knows_only_the_current_requests_marker():
    splitter = MarkerSplitter("old")
    assert splitter.feed(b"a\0old 1\0b") == (b"a", b"1")
    splitter.expect("new")
    assert splitter.feed(b"\0old 2\0c\0new 3\0") == (b"b\0old 2\0c", b"3")  # an earlier nonce is only output


def test_splitter_passes_lookalikes_through():
    splitter = MarkerSplitter("abc")
    assert splitter.feed(b"x\0ab") == (b"x", None)  # held back: might start a marker
    assert splitter.feed(b"d") == (b"\0abd", None)


def test_capture_keeps_head_and_tail():
    capture = Capture(limit=10)
    for piece in ["0123", "4567", "89ab", "cdef"]:
        capture.add(piece)
    assert capture.truncated and capture.dropped == 6
    assert capture.text() == "01234\n... [6 characters dropped] ...\nbcdef"
    small = Capture(limit=10)
    small.add("abc")
    assert small.text() == "abc" and not small.truncated


@pytest.fixture
async def child(tmp_path):
    process = await ChildProcess.start(
        [sys.executable, "-c", ECHO_CHILD], cwd=str(tmp_path), env=base_environ(str(tmp_path)), merge_stderr=True
    )
    yield process
    await process.close()


async def test_request_streams_output_then_returns_the_payload(child):
    seen = []

    async def sink(stream, text):
        seen.append((stream, text))

    reply = await child.request(b"echo one; echo two >&2\n", timeout=10, on_output=sink)
    assert reply.payload == b"0" and not reply.interrupted
    assert reply.outputs["output"].text() == "one\ntwo\n"
    assert "".join(text for _, text in seen) == "one\ntwo\n" and {s for s, _ in seen} == {"output"}


async def test_a_late_request_is_interrupted_and_its_processes_killed(child, monkeypatch):
    monkeypatch.setattr(ChildProcess, "grace_s", 0.2)
    with anyio.fail_after(10):
        reply = await child.request(b"trap '' INT; sleep 30\n", timeout=1)
    # The command ignores SIGINT, so the second step kills it; the child survives.
    assert reply.interrupted and reply.payload == b"-9" and child.alive
    with anyio.fail_after(5):  # a killed process takes a moment to go
        while group_members(child.process.pid) != [child.process.pid]:
            await anyio.sleep(0.02)


async def test_close_kills_the_whole_group(tmp_path):
    process = await ChildProcess.start(
        [sys.executable, "-c", ECHO_CHILD], cwd=str(tmp_path), env=base_environ(str(tmp_path)), merge_stderr=True
    )
    await process.request(b"sleep 30 &\n", timeout=10)
    pgid = process.process.pid
    assert len(group_members(pgid)) == 2
    await process.close()
    with anyio.fail_after(5):
        while group_members(pgid):
            await anyio.sleep(0.02)


def test_children_get_a_small_explicit_environment(monkeypatch):
    monkeypatch.setenv("SERVER_SECRET", "x")
    env = base_environ("/tmp/w", EXTRA="1")
    assert "SERVER_SECRET" not in env and env["HOME"] == "/tmp/w" and env["EXTRA"] == "1"


async def test_a_cancelled_request_kills_the_child_so_no_late_answer_is_misread(child):
    with anyio.move_on_after(0.3):
        await child.request(b"sleep 30; echo late\n", timeout=10)
    reply = await child.request(b"echo next\n", timeout=10)
    assert reply.payload is None and reply.returncode == -9 and not child.alive


async def test_every_request_has_a_fresh_nonce_in_no_environment_and_old_markers_end_nothing(child):
    reply = await child.request(b"env | grep -c OPENENV_NONCE; printf 'x'\n", timeout=10)
    assert reply.outputs["output"].text() == "0\nx" and reply.payload == b"0"  # grep -c counted none
    # The command learns its own nonce (as code in the child can) and prints a marker with it early:
    # that cuts only its own output; the real marker that follows is plain output of the next request.
    forged = await child.request(b"printf 'a\\0%s 7\\0b' $NONCE\n", timeout=10)
    assert forged.payload == b"7" and forged.outputs["output"].text() == "a"
    after = await child.request(b"echo next\n", timeout=10)
    assert after.payload == b"0" and after.outputs["output"].text().endswith("next\n")
    assert after.outputs["output"].text().startswith("b\0")  # the stale marker: output, not an answer

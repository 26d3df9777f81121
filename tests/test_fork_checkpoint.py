"""Episodes that branch and survive: forks (by snapshot and by replay) and checkpoints, against real
servers on loopback ports, on the in-process and subprocess backends and through multiplexing."""

from __future__ import annotations

import httpx
import pytest

from openenv_ws import connect, multiplex
from openenv_ws.client.transport import WebSocket
from openenv_ws.errors import CheckpointError, NotCopyableError, ReplayDivergedError, ValidationError
from openenv_ws.fields import FieldFilter, compare
from openenv_ws.protocol import Fork, Forked, Open, Opened, Reset, Step, decode_server, encode, pack
from openenv_ws.registry import resolve

HELPERS = ("tests.helper_envs:LuckyEnv", "tests.helper_envs:SnapshotLuckyEnv", "tests.helper_envs:SealedEnv")


def _metric(http: str, name: str) -> float:
    for line in httpx.get(http + "/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric {name}")


@pytest.mark.parametrize("sandbox", ["inprocess", "subprocess"])
async def test_a_fork_starts_from_the_same_state_and_the_branches_then_go_their_own_ways(start_server, sandbox):
    srv = start_server("echo", "--sandbox", sandbox)
    async with connect(srv.url, "echo") as parent:
        await parent.reset(seed=3)
        for word in ("a", "bb", "ccc"):
            await parent.step({"message": word})
        child = await parent.fork()
        assert child.session_id != parent.session_id
        assert await child.state() == {**await parent.state(), "episode_id": (await child.state())["episode_id"]}
        assert (await child.state())["step_count"] == 3 and (await child.state())["last_message"] == "ccc"
        await parent.step({"message": "parent"})
        await child.step({"message": "child"})
        await child.step({"message": "child again"})
        assert (await parent.state())["step_count"] == 4 and (await parent.state())["last_message"] == "parent"
        assert (await child.state())["step_count"] == 5 and (await child.state())["last_message"] == "child again"
        earlier = await parent.fork(at_step=1)  # as it was after its first step, by replay
        assert (await earlier.state())["step_count"] == 1 and (await earlier.state())["last_message"] == "a"
        many = await parent.fork(n=3)
        assert len({c.session_id for c in many}) == 3
        for c in many:
            assert (await c.state())["step_count"] == 4
    assert srv.health()["sessions"] == 0  # the forks closed with their parent


async def test_forks_through_a_multiplexed_connection(start_server):
    srv = start_server("echo", "--sandbox", "subprocess")
    async with multiplex(srv.url, connections=1) as mux, mux.connect("echo") as parent:
        await parent.reset()
        await parent.step({"message": "shared prefix"})
        children = await parent.fork(n=2)
        results = [(await c.step({"message": f"branch {i}"})).observation for i, c in enumerate(children)]
        assert [r["echoed_message"] for r in results] == ["branch 0", "branch 1"]
        assert [(await c.state())["step_count"] for c in children] == [2, 2]
        assert (await parent.state())["step_count"] == 1


async def test_a_replayed_fork_of_a_nondeterministic_env_is_refused_with_the_step_and_field(start_server):
    srv = start_server(*HELPERS, "--sandbox", "subprocess")
    async with connect(srv.url, "lucky") as parent:
        await parent.reset()
        await parent.step({})
        await parent.step({})
        with pytest.raises(ReplayDivergedError) as info:
            await parent.fork()
        assert "step 1" in str(info.value) and info.value.path == "observation.draw"
        assert not info.value.fatal
        assert (await parent.step({})).observation["total"] > 0  # the parent goes on
    assert srv.health()["sessions"] == 0  # no half-made child is left


async def test_an_env_with_a_snapshot_is_forked_exactly_where_a_replay_could_not(start_server):
    srv = start_server(*HELPERS, "--sandbox", "subprocess")
    async with connect(srv.url, "snapshot-lucky") as parent:
        await parent.reset()
        total = (await parent.step({})).observation["total"]
        child = await parent.fork()
        assert (await child.state())["step_count"] == 1
        after = (await child.step({})).observation
        assert after["total"] == total + after["draw"]  # the child continued from the parent's total
        await parent.step({})
        with pytest.raises(ReplayDivergedError):  # an earlier step has no snapshot: replay, which cannot match
            await parent.fork(at_step=1)


async def test_copies_are_refused_clearly_where_they_cannot_be_made(start_server):
    srv = start_server(*HELPERS, "--sandbox", "inprocess", "--max-forks", "2")
    async with connect(srv.url, "sealed") as sealed:
        with pytest.raises(NotCopyableError, match="reset the episode first"):
            await sealed.fork()
        await sealed.reset()
        with pytest.raises(NotCopyableError, match="cannot be copied"):
            await sealed.fork()
        with pytest.raises(NotCopyableError, match="checkpoints are off"):
            await sealed.checkpoint()
        await sealed.step({})
    async with connect(srv.url, "lucky") as env:
        await env.reset()
        with pytest.raises(ValidationError) as info:
            await env.fork(n=3)
        assert info.value.path == "$.count"
        with pytest.raises(ValidationError) as info:
            await env.fork(at_step=5)
        assert info.value.path == "$.at_step"


async def test_a_repeated_fork_request_makes_no_second_set_of_children(start_server):
    srv = start_server("echo", "--sandbox", "subprocess")
    ws = await WebSocket.connect(srv.url + "/v1/sessions")
    await ws.send(encode(Open(env="echo")))
    assert isinstance(decode_server(await ws.receive()), Opened)
    await ws.send(encode(Reset(seq=1)))
    await ws.receive()
    await ws.send(encode(Step(seq=2, action=pack({"message": "x"}))))
    await ws.receive()
    starts = _metric(srv.http, "openenv_ws_sandbox_starts_total")
    await ws.send(encode(Fork(seq=3, count=2)))
    first = decode_server(await ws.receive())
    await ws.send(encode(Fork(seq=3, count=2)))  # the same request again (as after a resume)
    again = decode_server(await ws.receive())
    assert isinstance(first, Forked) and first == again
    assert _metric(srv.http, "openenv_ws_sandbox_starts_total") == starts + 2
    await ws.aclose()


async def test_a_checkpoint_opens_again_on_another_server_that_reads_its_directory(start_server, tmp_path):
    one = start_server("echo", "--sandbox", "subprocess", "--checkpoint-dir", str(tmp_path))
    async with connect(one.url, "echo") as env:
        await env.reset(seed=11)
        for word in ("x", "yy"):
            await env.step({"message": word})
        saved = await env.state()
        checkpoint = await env.checkpoint()
    one.stop()
    assert list(tmp_path.glob(f"{checkpoint}.ckpt"))
    two = start_server("echo", "--sandbox", "inprocess", "--checkpoint-dir", str(tmp_path))
    async with connect(two.url, checkpoint=checkpoint) as restored:
        state = await restored.state()
        assert state["step_count"] == saved["step_count"] == 2 and state["last_message"] == "yy"
        assert (await restored.step({"message": "on"})).observation["echoed_message"] == "on"
        assert (await restored.state())["step_count"] == 3
    with pytest.raises(CheckpointError):
        async with connect(two.url, checkpoint="c-" + "0" * 32):
            pass
    with pytest.raises(CheckpointError, match="not a checkpoint id"):
        async with connect(two.url, checkpoint="../../etc/passwd"):
            pass


@pytest.mark.parametrize(
    ("env", "options", "action"),
    [
        ("textgames", {"game": "wordle"}, {"move": "crane"}),
        ("coding", {}, {"code": "x = 41\nx += 1\nprint(x)"}),
        ("shell", {}, {"command": "echo hello > f.txt; cat f.txt"}),
    ],
)
async def test_the_built_in_envs_fork_by_replay(start_server, env, options, action):
    srv = start_server(env, "--sandbox", "subprocess")
    async with connect(srv.url, env, options=options) as parent:
        await parent.reset(seed=5)
        first = (await parent.step(action)).observation
        child = await parent.fork()
        again = (await child.step(action)).observation
        twice = (await parent.step(action)).observation
        ignore = FieldFilter(resolve(env).cls.nondeterministic_fields)  # durations, workspace paths
        assert compare({"observation": again}, {"observation": twice}, ignore) == []
        assert first is not None and (await child.state())["step_count"] == (await parent.state())["step_count"]

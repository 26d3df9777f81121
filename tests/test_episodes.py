"""Whole episodes through a real server and the real client, on both backends."""

from __future__ import annotations

import anyio
import httpx
import pytest

from openenv_ws import EpisodeStateError, ValidationError, connect, connect_sync
from openenv_ws_envs.echo import EchoObservation


@pytest.mark.parametrize("encoding", ["msgpack", "json"])
async def test_whole_echo_episode(server, encoding):
    async with connect(server.url, env="echo", encoding=encoding, options={"max_steps": 3}) as env:
        assert env.session_id and env.session_id.startswith("s-")
        assert env.action_schema["$defs"]["EchoAction"]["required"] == ["message"]
        first = await env.reset(seed=1)
        assert first.observation == {"echoed_message": "", "message_length": 0}
        r = await env.step({"message": "hello"})
        assert r.observation["echoed_message"] == "hello" and r.reward == 0.5
        assert not r.terminated and not r.truncated
        await env.step({"message": "again"})
        last = await env.step({"message": "end"})
        assert last.truncated and not last.terminated  # max_steps=3 truncates, Gymnasium style
        state = await env.state()
        assert state["step_count"] == 3 and state["last_message"] == "end" and state["episode_id"]
        with pytest.raises(EpisodeStateError) as info:
            await env.step({"message": "one too many"})
        assert info.value.code == "episode_ended"
        again = await env.reset()  # a new episode in the same session
        assert again.observation["message_length"] == 0
        assert (await env.state())["step_count"] == 0


async def test_streamed_events_arrive_before_the_result(server):
    events = []
    async with connect(server.url, env="echo") as env:
        await env.reset()
        result = await env.step({"message": "one two three", "stream": True}, on_event=events.append)
    assert events == [{"word": "one"}, {"word": "two"}, {"word": "three"}]
    assert result.observation["echoed_message"] == "one two three"


async def test_typed_observations_on_request(server):
    async with connect(server.url, env="echo", observation_type=EchoObservation) as env:
        await env.reset()
        r = await env.step({"message": "typed"})
    assert r.observation == EchoObservation(echoed_message="typed", message_length=5)


async def test_sync_environment_runs_off_the_loop_and_streams(start_server):
    srv = start_server("tests.helper_envs:SyncCounterEnv", "--sandbox", "inprocess")
    async with connect(srv.url, options={"target": 5}) as env:
        await env.reset(seed=1)
        events = []
        r = None
        for _ in range(4):
            r = await env.step({"add": 1}, on_event=events.append)
        assert r.terminated and r.reward == 1.0 and r.observation == {"total": 5}
        assert events == [{"adding": 1}] * 4


def test_sync_facade(server):
    with connect_sync(server.url, "echo") as env:
        env.reset()
        r = env.step({"message": "sync"})
        assert r.observation["echoed_message"] == "sync"
        assert env.state()["step_count"] == 1
        with pytest.raises(ValidationError):
            env.step({"message": 5})


def test_client_runs_under_trio(inprocess_server):
    async def main():
        async with connect(inprocess_server.url, env="echo") as env:
            await env.reset()
            return await env.step({"message": "trio"})

    result = anyio.run(main, backend="trio")
    assert result.observation["echoed_message"] == "trio"


async def test_200_concurrent_sessions(inprocess_server):
    results: list[int] = []

    async def episode(i: int) -> None:
        async with connect(inprocess_server.url, env="echo") as env:
            await env.reset(seed=i)
            for k in range(5):
                r = await env.step({"message": f"{i}-{k}"})
                assert r.observation["echoed_message"] == f"{i}-{k}"
            results.append((await env.state())["step_count"])

    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            for i in range(200):
                tg.start_soon(episode, i)
    assert results == [5] * 200


def test_http_endpoints_describe_the_server(inprocess_server):
    health = httpx.get(inprocess_server.http + "/healthz").json()
    assert health["status"] == "ok" and health["backend"]["name"] == "inprocess"
    assert health["max_sessions"] == 4096 and "echo" in health["envs"]
    envs = httpx.get(inprocess_server.http + "/v1/envs").json()["envs"]
    echo = next(e for e in envs if e["name"] == "echo")
    assert echo["schemas"]["observation"]["$defs"]["EchoObservation"]["properties"]["echoed_message"]

"""The echo environment on its own, without a server."""

from __future__ import annotations

from openenv_ws_envs.echo import EchoAction, EchoEnvironment


async def test_echo_rewards_length_and_counts_steps():
    env = EchoEnvironment(max_steps=2)
    first = await env.reset(seed=3)
    assert first.observation.message_length == 0
    r = await env.step(EchoAction(message="hello"))
    assert r.observation.echoed_message == "hello" and r.reward == 0.5 and not r.done
    r = await env.step(EchoAction(message="hi"))
    assert r.truncated and not r.terminated and r.reward == 0.2
    state = await env.state()
    assert state.step_count == 2 and state.last_message == "hi" and state.episode_id


async def test_echo_streams_words_as_events():
    env = EchoEnvironment()
    seen = []

    async def sink(data):
        seen.append(data)

    env._emitter = sink
    await env.reset()
    await env.step(EchoAction(message="a b", stream=True))
    assert seen == [{"word": "a"}, {"word": "b"}]

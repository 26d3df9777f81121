"""Whole episodes of the environment library (coding, shell, textgames, gym) through real servers.

Each test runs on the subprocess backend (one sandbox process per session) and, where the
environment is cheap, on the in-process one too. The Gymnasium facade (``openenv_ws.client.gym.make``)
is driven the way existing Gymnasium code drives ``gymnasium.make``. The episodes are functions of
the server's URL, so the Docker tests (``test_docker_env_library.py``) run the same ones.
"""

from __future__ import annotations

import ast
import os
import random
import shutil
import signal
import warnings
from collections.abc import Iterator

import anyio
import httpx
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from openenv_ws import EpisodeStateError, SandboxCrashedError, ValidationError, connect
from openenv_ws.client.gym import make
from openenv_ws_envs._lib.child import running
from openenv_ws_envs.shell import ShellObservation
from openenv_ws_envs.textgames.games import Wordle, words

from .conftest import ServerProcess

LIBRARY = ("coding", "shell", "textgames", "gym")


class _Servers(dict):
    """One real server per backend, started when a test first asks for it."""

    def __missing__(self, backend: str) -> ServerProcess:
        self[backend] = server = ServerProcess(*LIBRARY, "--sandbox", backend)
        return server


@pytest.fixture(scope="module")
def library_servers() -> Iterator[_Servers]:
    servers = _Servers()
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture(params=["subprocess", "inprocess"])
def library(request, library_servers) -> ServerProcess:
    return library_servers[request.param]


@pytest.fixture
def subprocess_library(library_servers) -> ServerProcess:
    return library_servers["subprocess"]


# ---------------------------------------------------------------- episodes (the Docker tests run them too)


async def coding_task_episode(url: str) -> None:
    """Solve a shipped task in two cells; output streams before each result."""
    solution = (
        "def two_sum(nums, target):\n"
        "    seen = {}\n"
        "    for i, x in enumerate(nums):\n"
        "        if target - x in seen:\n"
        "            return [seen[target - x], i]\n"
        "        seen[x] = i\n"
        "print('defined two_sum')"
    )
    async with connect(url, "coding", options={"task": "two_sum"}) as env:
        first = await env.reset(seed=1)
        assert first.observation["task"] == "two_sum" and first.observation["tests_total"] == 5
        events = []
        r = await env.step({"code": "def two_sum(nums, target):\n    return [0, 1]"})
        assert 0 < r.reward < 1 and not r.terminated
        r = await env.step({"code": solution}, on_event=events.append)
        assert events == [{"stream": "stdout", "text": "defined two_sum\n"}]
        assert r.reward == 1.0 and r.terminated and r.observation["stdout"] == "defined two_sum\n"
        with pytest.raises(EpisodeStateError):
            await env.step({"code": "1"})


async def coding_timeout_episode(url: str) -> None:
    async with connect(url, "coding") as env:
        await env.reset()
        await env.step({"code": "state = [1, 2]"})
        r = await env.step({"code": "while True:\n    pass", "timeout_s": 0.3})
        assert r.observation["status"] == "timeout" and not r.observation["interpreter_restarted"]
        r = await env.step({"code": "state + [3]"})
        assert r.observation["value"] == "[1, 2, 3]"
        with pytest.raises(ValidationError) as bad:
            await env.step({"code": "1", "timeout_s": -1})
        assert bad.value.path == "$.timeout_s"


async def shell_task_episode(url: str) -> None:
    options = {"task": "csv_total", "timeout_s": 5}
    async with connect(url, "shell", options=options, observation_type=ShellObservation) as env:
        first = await env.reset(seed=3)
        assert "sales.csv" in first.observation.prompt
        events = []
        r = await env.step({"command": "head -n 2 sales.csv; cd /tmp; cd -"}, on_event=events.append)
        assert r.observation.output.startswith("id,region,amount\n") and r.observation.exit_code == 0
        assert "".join(e["text"] for e in events) == r.observation.output and r.reward == 0.0
        r = await env.step({"command": "sleep 30", "timeout_s": 0.3})
        assert r.observation.timed_out and r.observation.exit_code == 130 and not r.observation.shell_restarted
        r = await env.step({"command": "awk -F, '$2 == \"north\" {s += $3} END {print s}' sales.csv > answer.txt"})
        assert r.observation.solved and r.reward == 1.0 and r.terminated
        state = await env.state()
        assert state["step_count"] == 3 and state["solved"]


async def shell_script_episode(url: str) -> None:
    """A task whose checker needs the agent's program run: it runs as the agent, the checker reads its output."""
    async with connect(url, "shell", options={"task": "hello_script"}) as env:
        await env.reset(seed=1)
        r = await env.step({"command": "printf '#!/bin/sh\\necho \"Hello, world!\"\\n' > hello.sh"})
        assert not r.observation["solved"] and r.reward == 0.0  # not executable yet
        r = await env.step({"command": "chmod +x hello.sh && ./hello.sh"})
        assert r.observation["output"] == "Hello, world!\n" and r.observation["solved"] and r.reward == 1.0


async def wordle_episode(url: str, encoding: str = "msgpack") -> None:
    answer = Wordle(random.Random(2024)).answer
    guess = next(w for w in words() if w != answer)
    async with connect(url, "textgames", encoding=encoding) as env:
        await env.reset(seed=2024)
        r = await env.step({"move": "qqqqq"})
        assert not r.observation["valid"] and r.reward == pytest.approx(-0.1)
        r = await env.step({"move": guess})
        assert r.observation["valid"] and r.observation["moves_left"] == 5 and not r.done
        r = await env.step({"move": answer})
        assert r.terminated and r.reward == 1.0 and r.observation["outcome"] == "win"


async def games_episode(url: str) -> None:
    async with connect(url, "textgames") as env:
        await env.reset(seed=5, options={"game": "tictactoe"})
        for move in ("1", "2", "4"):  # a naive line: the opponent blocks, then wins
            r = await env.step({"move": move})
        assert r.terminated and r.reward == -1.0 and r.observation["outcome"] == "loss"
        await env.reset(seed=5, options={"game": "number", "high": 10})
        for guess in range(1, 11):
            r = await env.step({"move": str(guess)})
            if r.done:
                break
        assert r.observation["outcome"] in ("win", "loss") and r.observation["game"] == "number"


def run_gym_episode(env, seed: int, max_steps: int = 600) -> tuple[list, float, bool, bool]:
    """What a Gymnasium user writes: reset, step with sampled actions until the episode ends."""
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    seen, total, terminated, truncated = [obs], 0.0, False, False
    for _ in range(max_steps):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs), obs
        seen.append(obs)
        total += reward
        if terminated or truncated:
            break
    return seen, total, terminated, truncated


def gym_episodes(url: str, env_id: str) -> None:
    """Gymnasium's env checker, then two episodes with one seed: the same observations, rewards and ends."""
    env = make(url, "gym", env_id=env_id)
    try:
        with warnings.catch_warnings():  # its advice on env design (CartPole's infinite bounds) is not ours
            warnings.filterwarnings("ignore", message=".*Box observation space m", category=UserWarning)
            check_env(env, skip_render_check=True)  # Gymnasium's own checker: spaces, seeding, API
        first, total, terminated, truncated = run_gym_episode(env, seed=7)
        assert terminated or truncated
        again, total_again, *_ = run_gym_episode(env, seed=7)
    finally:
        env.close()
    assert len(first) == len(again) and total == total_again
    for a, b in zip(first, again, strict=True):
        assert np.array_equal(np.asarray(a, dtype=object), np.asarray(b, dtype=object))
    if env_id == "CartPole-v1":
        assert isinstance(first[0], np.ndarray) and first[0].dtype == np.float32 and first[0].shape == (4,)
    if env_id == "Blackjack-v1":
        assert isinstance(first[0], tuple) and len(first[0]) == 3
    if env_id == "MountainCar-v0":
        assert truncated and not terminated and len(first) == 201  # TimeLimit(200) passed through


# ---------------------------------------------------------------- tests


def test_the_library_is_registered_and_its_schemas_published(subprocess_library):
    envs = {e["name"]: e["schemas"] for e in httpx.get(subprocess_library.http + "/v1/envs").json()["envs"]}
    assert set(LIBRARY) <= set(envs)
    assert envs["coding"]["action"]["$defs"]["CodeAction"]["required"] == ["code"]
    assert envs["shell"]["observation"]["$defs"]["ShellObservation"]["properties"]["exit_code"]
    assert envs["textgames"]["action"]["$defs"]["TextGameAction"]["required"] == ["move"]
    ndarray = envs["gym"]["observation"]["$defs"]["NDArray"]
    assert ndarray["properties"]["data"]["contentEncoding"] == "base64"  # raw bytes; base64 only in JSON
    assert "SpaceSpec" in envs["gym"]["state"]["$defs"]


async def test_coding_episode_solves_a_task_with_streamed_output(library):
    await coding_task_episode(library.url)


async def test_coding_timeout_is_reported_and_the_episode_goes_on(library):
    await coding_timeout_episode(library.url)


async def test_a_killed_sandbox_takes_its_interpreter_along(subprocess_library):
    async with connect(subprocess_library.url, "coding") as env:
        await env.reset()
        r = await env.step({"code": "import os\n(os.getpid(), os.getppid(), os.getcwd())"})
        interpreter, worker, workspace = ast.literal_eval(r.observation["value"])
        os.kill(worker, signal.SIGKILL)
        with pytest.raises(SandboxCrashedError):
            await env.step({"code": "1"})
    with anyio.fail_after(10):  # PR_SET_PDEATHSIG: the interpreter dies with the worker
        while running(interpreter):
            await anyio.sleep(0.05)
    shutil.rmtree(workspace)  # what a killed worker leaves (in Docker, its tmpfs goes with the container)


async def test_shell_episode_with_a_task_streaming_and_a_timeout(library):
    await shell_task_episode(library.url)


async def test_shell_task_whose_checker_needs_the_agents_program(library):
    await shell_script_episode(library.url)


@pytest.mark.parametrize("encoding", ["msgpack", "json"])
async def test_wordle_is_reproduced_by_its_seed_and_won(library, encoding):
    await wordle_episode(library.url, encoding)


async def test_tictactoe_and_number_games_through_reset_options(library):
    await games_episode(library.url)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "FrozenLake-v1", "Blackjack-v1", "MountainCar-v0"])
def test_gymnasium_code_runs_unchanged_against_a_remote_env(subprocess_library, env_id):
    gym_episodes(subprocess_library.url, env_id)


def test_gym_facade_over_json(library):
    env = make(library.url, "gym", env_id="CartPole-v1", connect_options={"encoding": "json"})
    try:
        obs, _ = env.reset(seed=0)
        assert obs.dtype == np.float32
        obs, reward, terminated, truncated, info = env.step(np.int64(1))
        assert reward == 1.0 and env.observation_space.contains(obs) and not (terminated or truncated) and info == {}
    finally:
        env.close()


async def test_gym_bad_actions_and_options_get_typed_errors(subprocess_library):
    async with connect(subprocess_library.url, "gym", options={"env_id": "CartPole-v1"}) as env:
        await env.reset(seed=0)
        with pytest.raises(ValidationError) as bad:
            await env.step({"action": 7})
        assert bad.value.path == "$.action"
        r = await env.step({"action": 0})  # the session goes on
        assert r.reward == 1.0 and r.observation["observation"]["type"] == "ndarray"
    with pytest.raises(ValidationError) as bad_options:
        async with connect(subprocess_library.url, "gym", options={"env_id": "NoSuchEnv-v0"}):
            pass
    assert bad_options.value.code == "bad_options"

"""The environment library on the Docker backend: the episodes of ``test_env_library.py``, each
session in its own container (read-only root, no network, the env's own limits).

Never skipped: CI runs ``scripts/setup_docker.sh`` first. One image holds the whole library: the gym
env's (``openenv-ws build gym``, which adds gymnasium and numpy), served with ``--image``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

import anyio
import pytest

from openenv_ws import connect

from .conftest import ROOT
from .test_env_library import (
    LIBRARY,
    coding_task_episode,
    coding_timeout_episode,
    games_episode,
    gym_episodes,
    shell_task_episode,
    wordle_episode,
)

if TYPE_CHECKING:
    from .docker_fixtures import DockerServer, Engine

pytest_plugins = ["tests.docker_fixtures"]

LIBRARY_IMAGE = "openenv-ws-test/library:dev"


@pytest.fixture(scope="module")
def docker_library(engine: Engine) -> Iterator[DockerServer]:
    from .docker_fixtures import BASE_IMAGE, DockerServer  # a plugin of this module: imported once pytest has

    cmd = [sys.executable, "-m", "openenv_ws", "build", "gym", "--tag", LIBRARY_IMAGE, "--base-image", BASE_IMAGE]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"openenv-ws build failed:\n{result.stdout}\n{result.stderr}"
    server = DockerServer(*LIBRARY, image=LIBRARY_IMAGE)
    yield server
    server.stop(engine)


async def test_coding_episodes_run_in_a_confined_container(docker_library, engine):
    await coding_task_episode(docker_library.url)
    await coding_timeout_episode(docker_library.url)
    async with connect(docker_library.url, "coding") as env:
        await env.reset()
        (container,) = await anyio.to_thread.run_sync(lambda: engine.managed(session=env.session_id))
        host = container.attrs["HostConfig"]
        assert host["PidsLimit"] == 256 and host["Memory"] == 512 << 20  # the env's SandboxSettings
        assert host["ReadonlyRootfs"] and host["NetworkMode"] == "none"
        r = await env.step({"code": "import os\nopen('scratch.txt', 'w').write('ok')\n(os.getuid(), os.getcwd())"})
        uid, cwd = ast.literal_eval(r.observation["value"])
        assert uid == 65534 and cwd.startswith("/tmp/")  # the workspace lives on the scratch tmpfs
        r = await env.step({"code": "open('/opt/evil', 'w')"})
        assert r.observation["exception"] == "OSError: [Errno 30] Read-only file system: '/opt/evil'"


async def test_shell_episode_runs_in_docker(docker_library):
    await shell_task_episode(docker_library.url)


async def test_text_games_run_in_docker(docker_library):
    await wordle_episode(docker_library.url)
    await games_episode(docker_library.url)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Blackjack-v1"])
def test_gym_episodes_run_in_docker(docker_library, env_id):
    gym_episodes(docker_library.url, env_id)

"""The environment library on the Docker backend: the episodes of ``test_env_library.py``, each
session in its own container (read-only root, no network, the env's own limits). The coding and
shell episodes run under each OCI runtime (runc, and gVisor's runsc).

Never skipped: CI runs ``scripts/setup_docker.sh`` first. One image holds the whole library: the gym
env's (``openenv-ws build gym``, which adds gymnasium and numpy), served with ``--image``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from typing import TYPE_CHECKING

import anyio
import pytest

from openenv_ws import connect

from .docker_envs import RUNTIMES
from .test_env_library import (
    LIBRARY,
    coding_task_episode,
    coding_timeout_episode,
    games_episode,
    gym_episodes,
    shell_script_episode,
    shell_task_episode,
    wordle_episode,
)

if TYPE_CHECKING:
    from .docker_fixtures import DockerServer, Engine

pytest_plugins = ["tests.docker_fixtures"]


@pytest.fixture(scope="module", params=RUNTIMES)
def docker_library(request, library_image: str, engine: Engine) -> Iterator[DockerServer]:
    """A server of the whole library per runtime; the tests that take it run under each."""
    from .docker_fixtures import DockerServer  # a plugin of this module: imported once pytest has

    server = DockerServer(*LIBRARY, "-B", f"runtime={request.param}", image=library_image)
    server.runtime = request.param
    yield server
    server.stop(engine)


@pytest.fixture(scope="module")
def docker_library_runc(library_image: str, engine: Engine) -> Iterator[DockerServer]:
    """The same on the engine's default runtime only, for the envs that start no process of their own."""
    from .docker_fixtures import DockerServer

    server = DockerServer(*LIBRARY, image=library_image)
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
        assert host["ReadonlyRootfs"] and host["NetworkMode"] == "none" and host["Runtime"] == docker_library.runtime
        r = await env.step({"code": "import os\nopen('scratch.txt', 'w').write('ok')\n(os.getuid(), os.getcwd())"})
        uid, cwd = ast.literal_eval(r.observation["value"])
        assert uid == 65534 and cwd.startswith("/tmp/")  # the workspace lives on the scratch tmpfs
        r = await env.step({"code": "open('/opt/evil', 'w')"})
        refused = {"runc": "OSError: [Errno 30] Read-only file system", "runsc": "PermissionError: [Errno 13]"}
        assert r.observation["exception"].startswith(refused[docker_library.runtime])  # gVisor checks the uid first


async def test_shell_episode_runs_in_docker(docker_library):
    await shell_task_episode(docker_library.url)
    await shell_script_episode(docker_library.url)


async def test_text_games_run_in_docker(docker_library_runc):
    await wordle_episode(docker_library_runc.url)
    await games_episode(docker_library_runc.url)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Blackjack-v1"])
def test_gym_episodes_run_in_docker(docker_library_runc, env_id):
    gym_episodes(docker_library_runc.url, env_id)

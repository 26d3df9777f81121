"""The web environment on the Docker backend: its image (``openenv-ws build web``: Chromium from
Debian packages, installed with no network in the build) and whole episodes through a real server,
each session in its own confined container.

Never skipped: CI runs ``scripts/setup_docker.sh`` first. One image build for the module; a handful
of sessions.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

import anyio
import pytest

from openenv_ws import connect

from .conftest import ROOT
from .test_web_env import bad_input_hang_and_screenshot_episode, miniwob_episodes, shop_episode

if TYPE_CHECKING:
    from .docker_fixtures import DockerServer, Engine

pytest_plugins = ["tests.docker_fixtures"]

WEB_IMAGE = "openenv-ws-test/web:dev"
MINIWOB_TASKS = ["click-button", "enter-text", "login-user", "click-checkboxes", "book-flight"]


@pytest.fixture(scope="module")
def docker_web(engine: Engine) -> Iterator[DockerServer]:
    from .docker_fixtures import BASE_IMAGE, DockerServer  # a plugin of this module: imported once pytest has

    cmd = [sys.executable, "-m", "openenv_ws", "build", "web", "--tag", WEB_IMAGE, "--base-image", BASE_IMAGE]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, f"openenv-ws build web failed:\n{result.stdout}\n{result.stderr}"
    server = DockerServer("web", image=WEB_IMAGE)
    yield server
    server.stop(engine)


async def test_a_scripted_policy_solves_five_miniwob_tasks_in_docker(docker_web):
    rewards = await miniwob_episodes(docker_web.url, MINIWOB_TASKS)
    assert all(reward > 0 for reward in rewards.values()), rewards


async def test_a_multi_turn_shop_task_in_docker(docker_web):
    state = await shop_episode(docker_web.url, seed=2)
    assert len(state["orders"]) == 1 and state["cart"] == {}


async def test_bad_input_a_hanging_page_and_a_screenshot_in_docker(docker_web):
    await bad_input_hang_and_screenshot_episode(docker_web.url)


async def test_the_browser_runs_confined_and_goes_with_the_session(docker_web, engine):
    async with connect(docker_web.url, "web") as env:
        await env.reset(seed=1)
        (container,) = await anyio.to_thread.run_sync(lambda: engine.managed(session=env.session_id))
        host = container.attrs["HostConfig"]
        assert host["PidsLimit"] == 512 and host["Memory"] == 1 << 30  # the env's SandboxSettings
        assert host["ReadonlyRootfs"] and host["NetworkMode"] == "none" and host["CapDrop"] == ["ALL"]
        top = await anyio.to_thread.run_sync(lambda: container.top(ps_args="-eo pid,user,args"))
        browsers = [p for p in top["Processes"] if "chromium-headless-shell" in p[-1]]
        assert browsers and all(p[1] in ("65534", "nobody") for p in browsers), top
        state = await env.state()
        assert state["url"] == "/" and state["browser_pid"]
    with anyio.fail_after(10):  # the session is closed: its container, and so its browser, go
        while await anyio.to_thread.run_sync(lambda: engine.managed(session=env.session_id)):
            await anyio.sleep(0.1)

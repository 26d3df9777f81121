"""Whole episodes of the web environment through a real server, on the subprocess backend (one sandbox
process per session, the host's Chromium): a scripted policy that reads the page listing solves
MiniWoB++ tasks and a shop task; bad input, a hanging page and a screenshot; ``openenv-ws validate``.

The episodes are functions of the server's URL, so the Docker tests (``test_docker_web.py``) run
the same ones, each session in its own container.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
from PIL import Image

from openenv_ws import EnvError, ValidationError, connect

from .conftest import ROOT, ServerProcess
from .web_policies import MINIWOB, find, solve_cheapest_mug, solve_shop

# ---------------------------------------------------------------- episodes (the Docker tests run them too)


async def miniwob_episodes(url: str, tasks: list[str], seed: int = 1) -> dict[str, float]:
    """One session; each task in an episode of its own (the reset's ``task`` option), solved by its policy."""
    rewards = {}
    async with connect(url, "web") as env:
        for task in tasks:
            first = await env.reset(seed=seed, options={"task": task})
            assert first.observation["task"] == task and first.observation["instruction"], first.observation
            last = await MINIWOB[task](env, first)
            assert last.terminated, (task, last.observation)
            rewards[task] = last.reward
    return rewards


async def shop_episode(url: str, seed: int = 1) -> dict:
    """The cheapest-mug task, found by searching and sorting; the order is checked on the shop's own state."""
    async with connect(url, "web", options={"task": "shop-cheapest-mug"}) as env:
        first = await env.reset(seed=seed)
        last = await solve_cheapest_mug(env, first)
        assert last.terminated and last.reward == 1.0 and last.info == {"order": 1, "wrong": []}, last
        assert last.observation["title"] == "Order #1 - Corner Shop"
        return await env.state()


async def fix_cart_episode(url: str, seed: int = 2) -> None:
    """The cart starts full: remove what is not wanted, set the quantity, check out."""
    async with connect(url, "web", options={"task": "shop-fix-cart"}) as env:
        first = await env.reset(seed=seed)
        assert (await env.state())["cart"], "the task starts with a filled cart"
        m = re.search(r"Buy only the (.*), exactly (\d) of it", first.observation["instruction"])
        last = await solve_shop(env, first, {m[1]: int(m[2])}, {m[1]: m[1]})
        assert last.reward == 1.0 and last.terminated, last.info
        state = await env.state()
        assert state["cart"] == {} and len(state["orders"]) == 1


async def bad_input_hang_and_screenshot_episode(url: str) -> None:
    """An unknown element id and invalid actions are refused and the session goes on; a page whose
    script never returns is stopped at the step deadline; a screenshot is a PNG of the viewport."""
    options = {"test_pages": True, "step_timeout_s": 2, "viewport_width": 800, "viewport_height": 600}
    async with connect(url, "web", options=options) as env:
        await env.reset(seed=1)
        with pytest.raises(EnvError, match="no element with id 999"):
            await env.step({"action": "click", "id": 999})
        with pytest.raises(ValidationError) as bad:
            await env.step({"action": "press", "key": "Ctrl+c"})
        assert bad.value.path == "$.key"
        with pytest.raises(ValidationError) as bad:
            await env.step({"action": "type", "id": "search", "text": "x"})
        assert bad.value.path == "$.id"
        with pytest.raises(ValidationError) as bad:
            await env.step({"action": "goto", "path": "https://example.com/"})
        assert bad.value.path == "$.path"
        page = (await env.step({"action": "goto", "path": "/_test/hang-script"})).observation
        hung = await env.step({"action": "click", "id": find(page, "button", "Loop forever"), "screenshot": True})
        assert "passed its deadline (2 s)" in hung.observation["last_action_error"] and not hung.done
        shot = hung.observation["screenshot"]
        image = Image.open(io.BytesIO(shot["png"]))
        image.load()
        assert image.format == "PNG" and image.size == (shot["width"], shot["height"]) == (800, 600)
        counted = await env.step({"action": "click", "id": find(hung.observation, "button", "Count")})
        assert 'text "1"' in counted.observation["page"]  # the page answers again


# ---------------------------------------------------------------- on the subprocess backend


@pytest.fixture(scope="module")
def web_server() -> Iterator[ServerProcess]:
    server = ServerProcess("web", "--sandbox", "subprocess")
    yield server
    server.stop()


async def test_a_scripted_policy_solves_miniwob_tasks(web_server):
    rewards = await miniwob_episodes(web_server.url, ["click-button", "login-user", "choose-list"])
    assert all(reward > 0 for reward in rewards.values()), rewards


async def test_shop_tasks_are_solved_and_graded_on_the_shops_state(web_server):
    state = await shop_episode(web_server.url)
    assert state["orders"][0]["items"] == {"mug-red-small": 1}
    await fix_cart_episode(web_server.url)


async def test_bad_input_a_hanging_page_and_a_screenshot(web_server):
    await bad_input_hang_and_screenshot_episode(web_server.url)


async def test_a_forked_episode_goes_its_own_way(web_server):
    async with connect(web_server.url, "web", options={"task": "login-user"}) as env:
        first = await env.reset(seed=1)
        user, password = re.findall(r'"([^"]*)"', first.observation["instruction"])
        await env.step({"action": "type", "id": find(first.observation, "textbox", "Username"), "text": user})
        child = await env.fork()  # a new browser, the episode replayed into it
        typed = await child.step(
            {"action": "type", "id": find(first.observation, "textbox", "Password"), "text": password}
        )
        assert f'value="{user}"' in typed.observation["page"]
        won = await child.step({"action": "click", "id": find(first.observation, "button", "Login")})
        lost = await env.step({"action": "click", "id": find(first.observation, "button", "Login")})  # no password
        assert (won.reward, lost.reward) == (1.0, -1.0) and won.terminated and lost.terminated


def test_validate_passes():
    cmd = [sys.executable, "-m", "openenv_ws", "validate", "web"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS  tools                  click, type, press, select, scroll, goto, back, noop;" in result.stdout
    assert result.stdout.splitlines()[-1] == "all 8 checks passed"  # the eighth: its tools

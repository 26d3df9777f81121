"""The web environment on its own, without a server: a real headless Chromium on this machine
(scripts/setup_chromium.sh installs it), the shipped shop, the test pages and MiniWoB++ pages."""

from __future__ import annotations

import io
import os
import re
import signal

import anyio
import msgspec
import pytest
from PIL import Image

from openenv_ws.errors import EnvError, ValidationError
from openenv_ws_envs._lib.child import running
from openenv_ws_envs.web import AnyWebAction, WebEnvironment
from openenv_ws_envs.web.browser import Browser
from openenv_ws_envs.web.cdp import TargetCrashed


def act(**action) -> AnyWebAction:
    return msgspec.convert(action, AnyWebAction)


def element(observation, role: str, name: str) -> int:
    """The id of the listed element with that role and name."""
    m = re.search(rf"\[(\d+)\] {role} {re.escape(msgspec.json.encode(name).decode())}", observation.page)
    assert m, f"no {role} {name!r} in:\n{observation.page}"
    return int(m[1])


@pytest.fixture
async def shop(start_env):
    return await start_env(WebEnvironment(test_pages=True, step_timeout_s=2), seed=1)


async def test_the_listing_gives_stable_ids_and_an_unknown_id_is_an_env_error(shop):
    first = (await shop.step(act(action="noop"))).observation
    assert first.url == "/" and first.title == "Home - Corner Shop" and first.instruction == ""
    again = (await shop.step(act(action="noop"))).observation
    assert again.page == first.page  # nothing changed: the same ids
    with pytest.raises(EnvError, match="no element with id 9999"):
        await shop.step(act(action="click", id=9999))
    search = element(first, "textbox", "Search products")
    await shop.step(act(action="goto", path="/cart"))
    with pytest.raises(EnvError, match=f"element {search} is no longer on the page"):
        await shop.step(act(action="type", id=search, text="mug"))
    with pytest.raises(EnvError, match="takes no text"):
        await shop.step(
            act(
                action="type",
                id=element((await shop.step(act(action="noop"))).observation, "link", "Cart (0)"),
                text="x",
            )
        )
    assert (await shop.step(act(action="noop"))).observation.url == "/cart"  # the episode goes on


async def test_type_press_select_and_back_drive_real_pages(shop):
    home = (await shop.step(act(action="noop"))).observation
    typed = (
        await shop.step(act(action="type", id=element(home, "textbox", "Search products"), text="red"))
    ).observation
    assert 'value="red" focused' in typed.page
    typed = (
        await shop.step(act(action="type", id=element(home, "textbox", "Search products"), text=" mug", clear=False))
    ).observation
    assert 'value="red mug"' in typed.page and typed.focused == element(home, "textbox", "Search products")
    results = (await shop.step(act(action="press", key="Enter"))).observation
    assert results.url == "/search?q=red+mug" and "3 products" in results.page
    sorted_ = (
        await shop.step(act(action="select", id=element(results, "combobox", "Sort by"), option="price-desc"))
    ).observation
    assert 'value="Price: high to low"' in sorted_.page and sorted_.last_action.startswith('chose "Price: high to low"')
    with pytest.raises(EnvError, match="has no option 'cheapest'"):
        await shop.step(act(action="select", id=element(results, "combobox", "Sort by"), option="cheapest"))
    with pytest.raises(EnvError, match="not a select"):
        await shop.step(act(action="select", id=element(results, "button", "Apply"), option="x"))
    applied = (await shop.step(act(action="click", id=element(sorted_, "button", "Apply")))).observation
    assert applied.url == "/search?q=red+mug&sort=price-desc"
    prices = re.findall(r'text "\$(\d+\.\d\d)"', applied.page)
    assert prices == ["11.00", "8.25", "6.50"]
    assert (await shop.step(act(action="back"))).observation.url == "/search?q=red+mug"
    assert (await shop.step(act(action="back"))).observation.url == "/"
    with pytest.raises(EnvError, match="no earlier page"):
        await shop.step(act(action="back"))


async def test_control_keys_and_scrolling(shop):
    home = (await shop.step(act(action="noop"))).observation
    box = element(home, "textbox", "Search products")
    await shop.step(act(action="type", id=box, text="lamp"))
    await shop.step(act(action="press", key="Control+a"))
    cleared = (await shop.step(act(action="press", key="Backspace"))).observation
    assert 'textbox "Search products" value="" focused' in cleared.page
    await shop.step(act(action="goto", path="/_test/long"))
    assert await shop.page.evaluate("scrollY") == 0
    await shop.step(act(action="scroll", direction="down"))
    down = await shop.page.evaluate("scrollY")
    assert down > 500  # most of a 720 px screen
    await shop.step(act(action="scroll", direction="up"))
    assert await shop.page.evaluate("scrollY") < down


async def test_a_dialog_is_accepted(shop):
    page = (await shop.step(act(action="goto", path="/_test/dialog"))).observation
    assert (await shop.step(act(action="click", id=element(page, "button", "Ask")))).observation.title == "confirmed"


async def test_the_screenshot_is_a_png_of_the_viewport(start_env):
    env = await start_env(WebEnvironment(viewport_width=640, viewport_height=400))
    plain = (await env.step(act(action="noop"))).observation
    assert plain.screenshot is None
    shot = (await env.step(act(action="noop", screenshot=True))).observation.screenshot
    assert (shot.width, shot.height) == (640, 400)
    image = Image.open(io.BytesIO(shot.png))
    image.load()  # decodes every pixel
    assert image.format == "PNG" and image.size == (640, 400)
    assert len(image.getcolors(1 << 16) or ()) > 2  # a page was drawn, not a blank


async def test_every_part_of_the_observation_is_bounded(start_env):
    env = await start_env(WebEnvironment(test_pages=True, max_page_chars=300, max_screenshot_bytes=1024))
    obs = (await env.step(act(action="goto", path="/_test/long", screenshot=True))).observation
    assert obs.page_truncated and len(obs.page) <= 300 and obs.page.startswith("[") and "Paragraph 1" in obs.page
    assert obs.screenshot is None and "exceeds max_screenshot_bytes (1024)" in obs.last_action_error


@pytest.mark.parametrize("path", ["/_test/hang-script", "/_test/hang-load"])
async def test_a_page_that_hangs_is_stopped_at_the_step_deadline(shop, path):
    if path == "/_test/hang-script":
        page = (await shop.step(act(action="goto", path=path))).observation
        action = act(action="click", id=element(page, "button", "Loop forever"))
    else:
        action = act(action="goto", path=path)
    with anyio.fail_after(10):
        r = await shop.step(action)
    assert "passed its deadline (2 s)" in r.observation.last_action_error
    assert not r.truncated and "stopped at the step deadline" in r.observation.last_action
    after = (await shop.step(act(action="goto", path="/_test/hang-script"))).observation  # the tab still works
    counted = await shop.step(act(action="click", id=element(after, "button", "Count")))
    assert 'text "1"' in counted.observation.page


async def test_a_killed_browser_ends_the_episode_and_the_next_reset_starts_another(shop):
    old = (await shop.state()).browser_pid
    os.kill(old, signal.SIGKILL)
    r = await shop.step(act(action="noop"))
    assert r.truncated and r.reward == 0.0 and "the browser was killed by SIGKILL" in r.info["error"]
    with pytest.raises(EnvError, match="call reset"):
        await shop.step(act(action="noop"))
    again = await shop.reset(seed=1)
    state = await shop.state()
    assert again.observation.title == "Home - Corner Shop" and state.browser_restarts == 1 and state.browser_pid != old


async def test_a_crashed_page_ends_the_episode_with_the_reason(shop):
    with anyio.fail_after(10), pytest.raises(TargetCrashed):
        await shop.page.call("Page.crash")  # the renderer dies; the command is never answered
    r = await shop.step(act(action="noop"))
    assert r.truncated and "the page crashed (its renderer process died)" in r.observation.last_action_error
    assert (await shop.reset(seed=2)).observation.title == "Home - Corner Shop"


async def test_close_kills_the_browser_and_everything_it_started(start_env):
    env = await start_env(WebEnvironment())
    browser: Browser = env._browser
    group = browser.pid
    members = [int(p) for p in os.listdir("/proc") if p.isdigit() and _pgid(p) == group]
    assert len(members) >= 3  # the browser, its zygotes, a renderer...
    await env.close()
    assert not any(running(pid) for pid in members)


def _pgid(pid: str) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[2])
    except (OSError, IndexError, ValueError):
        return None


async def test_miniwob_episodes_are_seeded(start_env):
    def seen(r):
        return r.observation.instruction, r.observation.page

    one = seen(await (await start_env(WebEnvironment(task="click-checkboxes"))).reset(seed=7))
    two = seen(await (await start_env(WebEnvironment(task="click-checkboxes"))).reset(seed=7))
    other = seen(await (await start_env(WebEnvironment(task="click-checkboxes"))).reset(seed=8))
    assert one == two and one != other and one[0].startswith("Select ")


async def test_a_wrong_order_ends_the_shop_task_with_no_reward(start_env):
    env = await start_env(WebEnvironment(task="shop-recycled-notebook"), seed=3)
    product = (await env.step(act(action="goto", path="/product/notebook-blue-a5"))).observation
    cart = (await env.step(act(action="click", id=element(product, "button", "Add to cart")))).observation
    checkout = (await env.step(act(action="click", id=element(cart, "link", "Proceed to checkout")))).observation
    for label, text in (("Full name", "X"), ("Street address", "1 Road"), ("City", "Paris"), ("Postal code", "1")):
        await env.step(act(action="type", id=element(checkout, "textbox", label), text=text))
    await env.step(act(action="select", id=element(checkout, "combobox", "Country"), option="France"))
    r = await env.step(act(action="click", id=element(checkout, "button", "Place order")))
    assert r.terminated and r.reward == 0.0 and r.observation.url == "/orders/1"
    assert any(w.startswith("items: 1 x notebook-blue-a5") for w in r.info["wrong"])
    assert (await env.state()).orders[0].items == {"notebook-blue-a5": 1}


async def test_bad_options_fail_at_open():
    with pytest.raises(ValidationError, match="unknown task"):
        WebEnvironment(task="nope")
    with pytest.raises(ValidationError, match="viewport_width"):
        WebEnvironment(viewport_width=50)
    with pytest.raises(ValidationError, match="not found"):
        WebEnvironment(browser="/nonexistent/chromium")
    env = WebEnvironment()
    with pytest.raises(ValidationError, match="unknown reset options"):
        await env.reset(options={"tsak": "click-button"})
    await env.close()

"""The web console at /ui, in a real browser (headless Chromium), against real servers and real clients.

Screenshots of every page land in tests/artifacts/ (see tests/browser.py).
"""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest
from playwright.sync_api import Page, expect

from openenv_ws import connect_sync

from .browser import chromium, fresh_page, screenshot  # noqa: F401  # fixtures: browser, page
from .conftest import ROOT, ServerProcess

TOKEN = "console-T0ken/with+odd=chars"  # base64url in the subprotocol makes any token fit


@pytest.fixture(scope="module")
def server():
    started = ServerProcess("echo", "tests.console_envs:PaintEnv", "--sandbox", "subprocess")
    yield started
    started.stop()


@pytest.fixture(scope="module")
def guarded():
    started = ServerProcess("echo", "--sandbox", "inprocess", "--token", TOKEN, log_level="debug")
    yield started
    started.stop()


def row(page: Page, session_id: str):
    return page.locator(f'tr[data-session="{session_id}"]')


def test_the_live_table_shows_a_client_session_and_follows_its_steps(server, page: Page):
    page.goto(server.http + "/ui/")
    expect(page.locator("#sessions-table")).to_contain_text("No sessions")
    page.evaluate("window.loadedOnce = true")  # gone if the page reloads
    with connect_sync(server.url, "echo") as env:
        env.reset(seed=1)
        cells = row(page, env.session_id)
        expect(cells).to_be_visible(timeout=5000)
        expect(cells.locator('[data-col="env"]')).to_have_text("echo")
        expect(cells.locator('[data-col="state"]')).to_contain_text("active")
        expect(cells.locator('[data-col="steps"]')).to_have_text("0")
        expect(cells.locator('[data-col="backend"]')).to_have_text("subprocess")
        expect(cells.locator('[data-col="sandbox"]')).to_have_text(re.compile(r"^pid:\d+$"))
        expect(cells.locator('[data-col="client"]')).to_have_text(re.compile(r"^127\.0\.0\.1:\d+$"))
        for _ in range(3):
            env.step({"message": "tick"})
        expect(cells.locator('[data-col="steps"]')).to_have_text("3", timeout=5000)
        # The chart of steps/s: keep stepping (bounded) until a scrape of /metrics sees a rate.
        steps_now = page.locator('[data-chart="steps/s"] .chart-now')
        deadline = time.monotonic() + 15
        not_yet = ("0.0", "\u2013")  # a zero rate, or no rate yet (an en dash)
        while time.monotonic() < deadline and steps_now.inner_text().startswith(not_yet):
            for _ in range(20):
                env.step({"message": "tick"})
        assert float(steps_now.inner_text().split()[0].replace(",", "")) > 0
        expect(page.locator('[data-chart="sessions"] .chart-now')).to_have_text("1 held", timeout=5000)
        screenshot(page, "console-sessions")
    expect(row(page, env.session_id)).to_have_count(0, timeout=5000)  # closed: the row goes
    assert page.evaluate("window.loadedOnce") is True  # all of it without a reload


def test_a_session_page_tails_its_frames_live_with_large_payloads_folded(server, page: Page):
    with connect_sync(server.url, "echo") as env:
        page.goto(server.http + f"/ui/#/session/{env.session_id}")
        expect(page.locator("#watch-status")).to_contain_text("live", timeout=5000)
        env.reset(seed=4)
        env.step({"message": "two words", "stream": True})
        big = "y" * 5000
        env.step({"message": big})
        frames = page.locator("#frames .frame")
        expect(frames).to_have_count(8, timeout=5000)
        kinds = [frames.nth(i).get_attribute("data-type") for i in range(8)]
        assert kinds == ["reset", "result", "step", "event", "event", "result", "step", "result"]
        expect(frames.nth(3)).to_contain_text("two")
        expect(frames.nth(4)).to_contain_text("words")
        folded = frames.nth(6).locator("details.fold")
        expect(folded).to_have_count(1)
        assert folded.get_attribute("open") is None  # folded until clicked
        expect(folded.locator("summary")).to_contain_text("5,000 chars")
        expect(page.locator(".facts")).to_contain_text("subprocess")
        screenshot(page, "console-session")
    expect(page.locator("#watch-status")).to_contain_text("session ended: closed by client", timeout=5000)


def test_playing_echo_through_the_form(server, page: Page):
    page.goto(server.http + "/ui/#/env/echo")
    page.locator('[data-field="message"] input').fill("hello from the browser")
    page.locator('[data-field="stream"] input').check()
    page.locator("#seed").fill("7")
    page.locator("#reset").click()
    expect(page.locator("#play-status")).to_contain_text("on the subprocess backend")
    session_id = page.locator("#session-link").inner_text()
    listed = {s["id"]: s for s in server.sessions()}
    assert listed[session_id]["env"] == "echo"  # a real session on the server, like any client's
    page.locator("#step").click()
    expect(page.locator("#observation")).to_contain_text("hello from the browser")
    expect(page.locator("#observation")).to_contain_text("22")  # message_length
    expect(page.locator("#reward")).to_have_text("2.200")
    expect(page.locator("#events li")).to_have_count(4)  # one event per word, streamed before the result
    screenshot(page, "console-play-echo")

    # A bad action through the JSON editor: the server's validation error names the field.
    page.get_by_label("edit as JSON").check()
    page.get_by_label("action as JSON").fill(json.dumps({"message": 5}))
    page.locator("#step").click()
    expect(page.locator("#play-status")).to_contain_text("validation at $.message")
    page.locator("#state").click()
    expect(page.locator("body")).to_contain_text("step_count")
    page.locator("#close").click()
    expect(page.locator("#play-status")).to_contain_text("The session ended")
    assert session_id not in {s["id"] for s in server.sessions()}


def test_images_in_observations_are_shown_as_images(server, page: Page):
    page.goto(server.http + "/ui/#/env/paint")
    page.locator("#reset").click()
    image = page.locator("#observation img")
    expect(image).to_have_count(1)
    page.locator('[data-field="shade"] input').fill("220")
    page.locator("#step").click()
    expect(page.locator("#observation")).to_contain_text("shade 220")
    size = image.evaluate("img => [img.complete, img.naturalWidth, img.naturalHeight]")
    assert size == [True, 64, 48]  # decoded by the browser: a real PNG, shown as one
    screenshot(page, "console-play-image")


def test_tools_are_listed_and_called_as_tool_steps(server, page: Page):
    """Where /v1/envs lists tools, each gets a form, and calling one sends {"tool", "arguments"} as a step.

    This server's environments declare no tools yet, so the listing is given one on its way to the
    page; the call still goes to the real server, whose echo env refuses the unknown field.
    """

    def add_tool(route):
        listing = route.fetch().json()
        for env in listing["envs"]:
            if env["name"] == "echo":
                schema = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
                env["tools"] = [{"name": "shout", "description": "Say it louder.", "input_schema": schema}]
        route.fulfill(json=listing)

    page.route("**/v1/envs", add_tool)
    page.goto(server.http + "/ui/#/env/echo")
    tool = page.locator('details.tool[data-tool="shout"]')
    expect(tool).to_contain_text("Say it louder.")
    page.locator("#reset").click()
    expect(page.locator("#play-status")).to_contain_text("on the subprocess backend")
    tool.locator("summary").click()
    tool.locator('[data-field="text"] textarea, [data-field="text"] input').fill("hey")
    tool.get_by_role("button", name="Call shout").click()
    step = page.locator('#log .frame[data-type="step"]').first
    expect(step).to_contain_text("shout")
    expect(step).to_contain_text("hey")
    expect(page.locator("#play-status")).to_contain_text("validation")


def test_the_console_refuses_requests_without_the_token(guarded, page: Page):
    page.goto(guarded.http + "/ui/")  # the page's own files need no token: they hold no data
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#login-message")).to_contain_text("missing bearer token")
    expect(page.locator("#view")).to_be_hidden()
    screenshot(page, "console-token-form")
    refused = page.evaluate(
        """async () => {
            const fetched = await fetch('/v1/sessions');
            const socket = await new Promise((resolve) => {
                const ws = new WebSocket(`ws://${location.host}/v1/sessions`);
                ws.onopen = () => resolve('open');
                ws.onclose = (event) => resolve(`closed ${event.code}`);
            });
            return [fetched.status, socket];
        }"""
    )
    assert refused == [401, "closed 1006"]  # a refused handshake: the browser sees no socket at all

    page.locator("#token-input").fill("not-the-token")
    page.locator("#login-form button[type=submit]").click()
    expect(page.locator("#login-message")).to_contain_text("The server refused this token: unauthorized: wrong")

    page.locator("#token-input").fill(TOKEN)
    page.locator("#login-form button[type=submit]").click()
    expect(page.locator("#sessions-table")).to_be_visible()
    page.goto(guarded.http + "/ui/#/env/echo")
    page.locator('[data-field="message"] input').fill("with a token")
    page.locator("#reset").click()
    page.locator("#step").click()  # over WS /v1/sessions, the token as a subprotocol
    expect(page.locator("#observation")).to_contain_text("with a token")
    page.locator("#session-link").click()  # the watch socket too; the played session stays open
    expect(page.locator("#watch-status")).to_contain_text("live")
    expect(page.locator(".facts")).to_contain_text("active")
    page.go_back()
    expect(page.locator("#play-status")).to_contain_text("continues")
    page.locator('[data-field="message"] input').fill("again")
    page.locator("#step").click()
    expect(page.locator("#observation")).to_contain_text("again")
    expect(page.locator("#reward")).to_have_text("0.500")
    assert TOKEN not in guarded.output()


def test_the_console_tells_a_trainer_token_it_is_for_operators(tmp_path, page: Page):
    path = tmp_path / "tokens"
    path.write_text("console-operator operator ops\nconsole-trainer trainer alice\n")
    scoped = ServerProcess("echo", "--sandbox", "inprocess", "--token-file", str(path))
    try:
        page.goto(scoped.http + "/ui/")
        page.locator("#token-input").fill("console-trainer")
        page.locator("#login-form button[type=submit]").click()
        expect(page.locator("#login-message")).to_contain_text("the console is for operators")
        expect(page.locator("#login-message")).to_contain_text("trainer scope")
        expect(page.locator("#view")).to_be_hidden()
        screenshot(page, "console-trainer-refused")
        page.locator("#token-input").fill("console-operator")
        page.locator("#login-form button[type=submit]").click()
        expect(page.locator("#sessions-table")).to_be_visible()
        page.goto(scoped.http + "/ui/#/env/echo")
        page.locator('[data-field="message"] input').fill("an operator plays")
        page.locator("#reset").click()
        page.locator("#step").click()
        expect(page.locator("#observation")).to_contain_text("an operator plays")
    finally:
        scoped.stop()


def test_console_files_and_headers():
    server = ServerProcess("echo", "--sandbox", "inprocess", "--token", TOKEN)
    try:
        redirect = httpx.get(server.http + "/ui", timeout=5)
        assert redirect.status_code == 308 and redirect.headers["location"].endswith("/ui/")
        index = httpx.get(server.http + "/ui/", timeout=5)
        assert index.status_code == 200 and "<title>openenv-ws console</title>" in index.text
        policy = index.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "connect-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert "http" not in policy  # no other origin: every asset comes from the package
        for name in re.findall(r'(?:src|href)="([^"#]+)"', index.text):
            asset = httpx.get(server.http + "/ui/" + name, timeout=5)
            assert asset.status_code == 200, name
        script = httpx.get(server.http + "/ui/app.js", timeout=5)
        assert script.headers["content-type"].startswith(("text/javascript", "application/javascript"))
        assert httpx.get(server.http + "/v1/sessions", timeout=5).status_code == 401  # data still wants the token
    finally:
        server.stop()


def test_every_console_file_is_package_data():
    """An installed package (not only this checkout) serves the console: pyproject.toml ships each of its files."""
    import tomllib
    from fnmatch import fnmatch

    from openenv_ws.server.console import FILES

    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    shipped = patterns["openenv_ws.server"]
    files = [path.relative_to(FILES.parent).as_posix() for path in FILES.iterdir()]
    assert files and all(any(fnmatch(name, pattern) for pattern in shipped) for name in files), files

"""The web environment: a real headless Chromium per session, MiniWoB++ tasks and a local shop.

An episode is one task in a fresh browser context: the agent reads the page (a compact listing in
which every element it can act on has an id) and acts on it by id or by key, for many turns. The
browser, the local web server and the pages all run inside the session's sandbox; the browser
reaches nothing but that server on 127.0.0.1.
"""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
import uuid
from typing import Any

import anyio
import msgspec

from openenv_ws.env import Environment, Observation, SandboxSettings, State, StepResult
from openenv_ws.errors import EnvError
from openenv_ws.toolbox import error_result, tool

from .._lib.child import ended
from .._lib.options import bad_option
from .._lib.tasks import choose_task, requested_task
from . import dom, shop_tasks, wob
from .actions import (
    AnyWebAction,
    BackAction,
    ClickAction,
    Direction,
    ElementId,
    GotoAction,
    Key,
    LocalPath,
    NoopAction,
    OptionText,
    PressAction,
    ScrollAction,
    SelectAction,
    TypeAction,
    TypedText,
    WaitSeconds,
)
from .browser import Browser, BrowserStartError, find_browser
from .cdp import BrowserGone, CDPError, TargetCrashed
from .keys import key_event, text_events
from .page import NavigationError, Page, PageScriptError
from .server import SiteServer
from .shop import Order, Shop, ShopState

MAX_INSTRUCTION_CHARS = 2000
MAX_TITLE_CHARS = 300
MAX_URL_CHARS = 2048
MAX_NOTE_CHARS = 500
"""Of ``last_action`` and ``last_action_error``."""
RECOVERY_S = 5.0
"""How long stopping a page that missed its step deadline may take before the browser counts as hung."""
SCROLL_FRACTION = 0.8
"""Of the viewport (or of the element) that one scroll moves."""
NO_PAGE = "the browser was lost with the last episode: call reset()"


class Screenshot(msgspec.Struct, frozen=True):
    png: bytes
    width: int
    height: int


class WebObservation(Observation):
    instruction: str = ""
    """What the task asks (MiniWoB's utterance, or the shop task's request); empty without a task."""
    task: str | None = None
    url: str = ""
    """The page's address on the local site: path and query (``/search?q=mug``); the origin, a loopback
    port that differs per session, is left out. Other pages (``about:blank``) show their full URL."""
    title: str = ""
    page: str = ""
    """The page as lines ``[id] role "name" state...``, indented by nesting; ``text`` lines hold text."""
    page_truncated: bool = False
    """The listing reached ``max_page_chars``; elements past it are left out."""
    focused: int | None = None
    """The id of the element with keyboard focus."""
    screenshot: Screenshot | None = None
    last_action: str = ""
    """What the step did, in words (``clicked [12] button "Submit"``)."""
    last_action_error: str = ""
    """What went wrong that the agent could not have known (a deadline, a failed load); empty if nothing."""


class WebState(State):
    task: str | None = None
    seed: int | None = None
    url: str = ""
    title: str = ""
    done: bool = False
    browser_pid: int | None = None
    browser_restarts: int = 0
    cart: dict[str, int] = {}
    """The shop's cart (``sku: quantity``)."""
    orders: list[Order] = []
    """The orders placed on the shop in this episode."""


class _Broken(Exception):
    """The browser or the page cannot go on: the episode ends and the browser is replaced."""


class WebEnvironment(Environment):
    """One headless Chromium per session; one task (MiniWoB++ or the shop) per episode."""

    name = "web"
    action_type = AnyWebAction  # type: ignore[assignment]  # a union of Structs, tagged by "action"
    observation_type = WebObservation
    state_type = WebState
    nondeterministic_fields = (
        "state.episode_id",
        "state.browser_pid",
        "info.time_scaled_reward",
        "observation.screenshot.png",
    )
    # A browser is a dozen processes with many threads each; /dev/shm is not used (--disable-dev-shm-usage):
    # shared memory, the profile and the cache live on the scratch tmpfs, which counts against the memory.
    sandbox = SandboxSettings(
        memory="1g",
        pids=512,
        tmpfs_size="512m",
        extra_packages=("miniwob>=1.1",),
        system_packages=("chromium-headless-shell", "fonts-dejavu-core"),
    )

    def __init__(
        self,
        task: str | None = None,
        screenshot: bool = False,
        viewport_width: int = 1280,
        viewport_height: int = 720,
        step_timeout_s: float = 10.0,
        start_timeout_s: float = 30.0,
        max_page_chars: int = 8000,
        max_screenshot_bytes: int = 2_000_000,
        max_steps: int | None = None,
        miniwob_time_limit_s: float = 600.0,
        browser: str | None = None,
        test_pages: bool = False,
    ) -> None:
        for key, value in (
            ("step_timeout_s", step_timeout_s),
            ("start_timeout_s", start_timeout_s),
            ("miniwob_time_limit_s", miniwob_time_limit_s),
        ):
            if not value > 0:
                raise bad_option(f"{key} must be > 0", key)
        for key, value in (("viewport_width", viewport_width), ("viewport_height", viewport_height)):
            if not 100 <= value <= 1920:
                raise bad_option(f"{key} must be from 100 to 1920", key)
        if max_page_chars < 200:
            raise bad_option("max_page_chars must be >= 200", "max_page_chars")
        if max_screenshot_bytes < 1024:
            raise bad_option("max_screenshot_bytes must be >= 1024", "max_screenshot_bytes")
        if max_steps is not None and max_steps < 1:
            raise bad_option("max_steps must be >= 1", "max_steps")
        choose_task(self._tasks(), task, None)  # an unknown task fails at open, not at the first reset
        try:
            self.executable = find_browser(browser)
        except BrowserStartError as exc:
            raise bad_option(str(exc), "browser") from None
        self.task_option = task
        self.screenshot = screenshot
        self.size = (viewport_width, viewport_height)
        self.step_timeout_s = step_timeout_s
        self.start_timeout_s = start_timeout_s
        self.max_page_chars = max_page_chars
        self.max_screenshot_bytes = max_screenshot_bytes
        self.max_steps = max_steps
        self.miniwob_time_limit_s = miniwob_time_limit_s
        self.test_pages = test_pages
        self._profile: str | None = None
        """The browser's profile and scratch directory (the browser's own, not an agent's workspace)."""
        self._browser: Browser | None = None
        self._site: SiteServer | None = None
        self._page: Page | None = None
        self._shop = Shop()
        self._goal: shop_tasks.Goal | None = None
        self._hide: str | None = None
        self._next_id = 1
        self._instruction = ""
        self._launches = 0
        self._state = WebState()

    @staticmethod
    def _tasks() -> dict[str, str]:
        return {**dict.fromkeys(wob.tasks(), "miniwob"), **dict.fromkeys(shop_tasks.TASKS, "shop")}

    # ------------------------------------------------------------ episodes

    async def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> StepResult:
        task = choose_task(self._tasks(), requested_task(options, self.task_option), seed)
        await self._end_page()
        seed = secrets.randbelow(2**31) if seed is None else seed
        self._state = WebState(episode_id=str(uuid.uuid4()), task=task, seed=seed)
        self._next_id, self._instruction, self._goal, self._hide = 1, "", None, None
        try:
            with anyio.fail_after(self.start_timeout_s):
                page = await self._new_page(task, seed)
                if task is not None and self._tasks()[task] == "miniwob":
                    self._hide = wob.HIDE
                    self._instruction = await wob.start(page, self.site.origin, task, seed, self.miniwob_time_limit_s)
                else:
                    await page.navigate(self.site.origin + "/")
                await page.call("Page.resetNavigationHistory")  # no going back to about:blank
                observation = await self._observe(self.screenshot)
        except (TimeoutError, BrowserGone, TargetCrashed, CDPError, PageScriptError, NavigationError) as exc:
            reason = await self._why(exc, "starting the episode", self.start_timeout_s)
            await self._discard_browser()
            raise EnvError(f"the episode could not start: {reason}") from None
        return StepResult(observation=observation, info={"task": task} if task else {})

    async def _new_page(self, task: str | None, seed: int) -> Page:
        if self._profile is None:
            self._profile = tempfile.mkdtemp(prefix="openenv-web-")
        if self._site is None:
            self._site = SiteServer(self._shop, test_pages=self.test_pages)
        if self._browser is None or not self._browser.alive:
            await self._discard_browser()
            try:
                self._browser = await Browser.launch(self.executable, self._profile, self.size, self.start_timeout_s)
            except BrowserStartError as exc:
                raise EnvError(f"the browser could not start: {exc}") from None
            self._launches += 1
        if task is not None and self._tasks()[task] == "shop":
            self._goal = shop_tasks.goal(task, seed)
            self._instruction = self._goal.instruction
        self._shop = Shop(cart=self._goal.start_cart if self._goal else None)
        self.site.shop = self._shop
        self._state.browser_pid = self._browser.pid
        self._state.browser_restarts = max(0, self._launches - 1)
        self._page = await self._browser.new_page(self.size)
        return self._page

    @property
    def site(self) -> SiteServer:
        assert self._site is not None, "reset() first"
        return self._site

    @property
    def page(self) -> Page:
        if self._page is None:
            raise EnvError(NO_PAGE)
        return self._page

    async def step(self, action: AnyWebAction) -> StepResult:
        page = self.page
        error = ""
        kind = action.__struct_config__.tag
        if isinstance(action, NoopAction) and action.wait_s:
            await anyio.sleep(action.wait_s)  # waiting is the action: the step's deadline starts after it
        try:
            mark = page.mark()
            with anyio.move_on_after(self.step_timeout_s) as deadline:
                try:
                    done = await self._act(page, action)
                    await page.settle(mark)
                except (PageScriptError, CDPError) as exc:  # the page's trouble, not the browser's
                    done, error = f"{kind} (failed)", str(exc)
            if deadline.cancelled_caught:
                done = f"{kind} (stopped at the step deadline)"
                error = await self._recover(page)
            self._state.step_count += 1
            with anyio.fail_after(self.step_timeout_s):
                observation = await self._observe(self.screenshot or action.screenshot)
                reward, terminated, info = await self._grade(page)
        except _Broken as exc:
            return await self._broken_episode(str(exc))
        except (TimeoutError, BrowserGone, TargetCrashed, CDPError, PageScriptError) as exc:
            return await self._broken_episode(await self._why(exc, "running the step", self.step_timeout_s))
        observation.last_action = done[:MAX_NOTE_CHARS]
        notes = [note for note in (error, observation.last_action_error) if note]
        observation.last_action_error = " ".join(notes)[:MAX_NOTE_CHARS]
        truncated = self.max_steps is not None and self._state.step_count >= self.max_steps
        self._state.done = terminated
        return StepResult(
            observation=observation,
            reward=reward,
            terminated=terminated,
            truncated=truncated and not terminated,
            info=info,
        )

    async def state(self) -> WebState:
        snapshot = self._shop.snapshot()
        self._state.cart = snapshot.cart
        self._state.orders = list(snapshot.orders)
        return self._state

    # ------------------------------------------------------------ the actions as tools

    @tool
    async def click(self, id: ElementId, screenshot: bool = False) -> StepResult[WebObservation]:
        """Click an element of the page (scrolled into view first), as a mouse does; clicking an option chooses it.

        Args:
            screenshot: Add a PNG screenshot of the viewport to the result.
        """
        return await self._tool(ClickAction(id=id, screenshot=screenshot))

    @tool(name="type")
    async def type_text(
        self, id: ElementId, text: TypedText, clear: bool = True, screenshot: bool = False
    ) -> StepResult[WebObservation]:
        """Focus a text field and type into it key by key.

        Args:
            text: What to type.
            clear: Replace the field's old text (true) or add to it (false).
            screenshot: Add a PNG screenshot of the viewport to the result.
        """
        return await self._tool(TypeAction(id=id, text=text, clear=clear, screenshot=screenshot))

    @tool
    async def press(self, key: Key, screenshot: bool = False) -> StepResult[WebObservation]:
        """Press a key (or a combination) in the focused element.

        Args:
            key: Enter, Tab, Escape, Backspace, ArrowDown, PageDown, Control+a, or one printable character.
            screenshot: Add a PNG screenshot of the viewport to the result.
        """
        return await self._tool(PressAction(key=key, screenshot=screenshot))

    @tool
    async def select(self, id: ElementId, option: OptionText, screenshot: bool = False) -> StepResult[WebObservation]:
        """Choose an option of a drop-down list (a combobox in the page listing).

        Args:
            option: The option's text or value.
            screenshot: Add a PNG screenshot of the viewport to the result.
        """
        return await self._tool(SelectAction(id=id, option=option, screenshot=screenshot))

    @tool
    async def scroll(
        self, direction: Direction, id: ElementId | None = None, screenshot: bool = False
    ) -> StepResult[WebObservation]:
        """Scroll the page, or one scrollable element, by most of a screen.

        Args:
            direction: Which way to scroll.
            id: The element to scroll (default: the page).
            screenshot: Add a PNG screenshot of the viewport to the result.
        """
        return await self._tool(ScrollAction(direction=direction, id=id, screenshot=screenshot))

    @tool
    async def goto(self, path: LocalPath, screenshot: bool = False) -> StepResult[WebObservation]:
        """Open a page of the local site by its path; no other host is reachable.

        Args:
            path: The path and query, e.g. /, /search?q=mug or /cart.
            screenshot: Add a PNG screenshot of the viewport to the result.
        """
        return await self._tool(GotoAction(path=path, screenshot=screenshot))

    @tool
    async def back(self, screenshot: bool = False) -> StepResult[WebObservation]:
        """Go back one page in the tab's history.

        Args:
            screenshot: Add a PNG screenshot of the viewport to the result.
        """
        return await self._tool(BackAction(screenshot=screenshot))

    @tool
    async def noop(self, wait_s: WaitSeconds = 0.0, screenshot: bool = False) -> StepResult[WebObservation]:
        """Do nothing but read the page again, after waiting if asked (for a page that changes by itself).

        Args:
            wait_s: Seconds to wait first.
            screenshot: Add a PNG screenshot of the viewport to the result.
        """
        return await self._tool(NoopAction(wait_s=wait_s, screenshot=screenshot))

    async def _tool(self, action: AnyWebAction) -> StepResult:
        """A tool call is the step of its action; what the agent could not do (an unknown id, no earlier
        page) is an error result it reads, and it counts towards ``max_steps``, where a plain action
        gets an ``env_error``. A lost browser (no page until the next reset) stays the env's error."""
        if self._page is None:  # the browser was lost: the env's error stands (the trainer resets, not the model)
            raise EnvError(NO_PAGE)
        try:
            return await self.step(action)
        except EnvError as exc:
            self._state.step_count += 1
            truncated = self.max_steps is not None and self._state.step_count >= self.max_steps
            return error_result(exc.message, truncated=truncated)

    # ------------------------------------------------------------ acting

    async def _act(self, page: Page, action: AnyWebAction) -> str:
        """Do ``action``; what was done, in words. An impossible action raises :class:`EnvError`."""
        match action:
            case ClickAction(id=element):
                target = await dom.locate(page, element)
                if target.select is not None and target.option is not None:  # an option: choose it in its select
                    chosen = await dom.select(page, target.select, target.option)
                    return f"chose {json.dumps(chosen)} in [{target.select}]"
                await page.click(target.x, target.y)
                said = f"clicked [{element}] {target.role} {json.dumps(target.name)}"
                if target.covered_by:
                    said += f"; {target.covered_by} covers its centre, so the click landed there"
                return said
            case TypeAction(id=element, text=text, clear=clear):
                target = await dom.locate(page, element)
                if not target.editable:
                    raise EnvError(f"element {element} is a {target.role}, which takes no text: click or select it")
                had_text = await dom.focus(page, element, clear=clear)
                if clear and had_text and not text:
                    await page.key(key_event("Backspace"))  # the old text is selected: delete it
                for event in text_events(text):
                    await page.key(event)
                return f"typed {json.dumps(text)} into [{element}] {target.role} {json.dumps(target.name)}"
            case PressAction(key=key):
                await page.key(key_event(key))
                return f"pressed {key}"
            case SelectAction(id=element, option=option):
                chosen = await dom.select(page, element, option)
                return f"chose {json.dumps(chosen)} in [{element}]"
            case ScrollAction(direction=direction, id=element):
                width, height = self.size
                x, y, span_x, span_y = width / 2, height / 2, width, height
                if element is not None:
                    target = await dom.locate(page, element)
                    x, y = target.x, target.y
                sign = -1 if direction in ("up", "left") else 1
                dx = sign * span_x * SCROLL_FRACTION if direction in ("left", "right") else 0
                dy = sign * span_y * SCROLL_FRACTION if direction in ("up", "down") else 0
                await page.wheel(x, y, dx, dy)
                await page.next_frame()
                return f"scrolled {direction}" + (f" in [{element}]" if element is not None else "")
            case GotoAction(path=path):
                try:
                    await page.navigate(self.site.origin + path)
                except NavigationError as exc:
                    raise EnvError(f"could not open {path}: {exc}") from None
                return f"opened {path}"
            case BackAction():
                if not await page.back():
                    raise EnvError("there is no earlier page in this tab to go back to")
                return "went back"
            case NoopAction(wait_s=wait_s):
                return f"waited {wait_s:g} s" if wait_s else "did nothing"
        raise EnvError(f"unsupported action {type(action).__name__}")

    async def _recover(self, page: Page) -> str:
        """Stop what kept the page past its deadline; :class:`_Broken` if the page does not come back."""
        try:
            with anyio.fail_after(RECOVERY_S):
                await page.interrupt()
                await page.evaluate("0")
        except (TimeoutError, CDPError, PageScriptError) as exc:
            raise _Broken(f"the page stopped answering after the step deadline ({self.step_timeout_s:g} s)") from exc
        return (
            f"the step passed its deadline ({self.step_timeout_s:g} s): the page's running script and any load "
            "in flight were stopped"
        )

    # ------------------------------------------------------------ reading

    async def _observe(self, screenshot: bool) -> WebObservation:
        page = self.page
        snap = await dom.snapshot(page, hide=self._hide, first_id=self._next_id, max_chars=self.max_page_chars)
        self._next_id = max(self._next_id, snap.next)
        url = snap.url.removeprefix(self.site.origin) if snap.url.startswith(self.site.origin + "/") else snap.url
        self._state.url, self._state.title = url[:MAX_URL_CHARS], snap.title[:MAX_TITLE_CHARS]
        observation = WebObservation(
            instruction=self._instruction[:MAX_INSTRUCTION_CHARS],
            task=self._state.task,
            url=self._state.url,
            title=self._state.title,
            page=snap.text,
            page_truncated=snap.omitted > 0,
            focused=snap.focused,
        )
        if screenshot:
            png = await page.screenshot()
            if len(png) <= self.max_screenshot_bytes:
                observation.screenshot = Screenshot(png=png, width=self.size[0], height=self.size[1])
            else:
                observation.last_action_error = (
                    f"the screenshot ({len(png)} bytes) exceeds max_screenshot_bytes ({self.max_screenshot_bytes})"
                )
        return observation

    async def _grade(self, page: Page) -> tuple[float, bool, dict[str, Any]]:
        """The step's reward, whether the task is over, and what the info says about it."""
        task = self._state.task
        if task is None:
            return 0.0, False, {}
        if self._goal is None:
            outcome = await wob.outcome(page)
            if not outcome.done:
                return 0.0, False, {}
            info = {"raw_reward": outcome.raw_reward, "time_scaled_reward": outcome.reward}
            if outcome.reason:
                info["reason"] = outcome.reason
            return outcome.raw_reward, True, info
        shop: ShopState = self._shop.snapshot()
        if not shop.orders:
            return 0.0, False, {}
        wrong = shop_tasks.grade(self._goal, shop.orders[0])
        return (0.0 if wrong else 1.0), True, {"order": shop.orders[0].number, "wrong": wrong}

    # ------------------------------------------------------------ failures and the end

    async def _why(self, exc: BaseException, doing: str, limit: float) -> str:
        if isinstance(exc, TimeoutError):
            return f"the browser did not answer within {limit:g} s while {doing}"
        if isinstance(exc, BrowserGone) and self._browser is not None:
            with anyio.move_on_after(1):  # its pipe closed as it died: let the exit status arrive
                await self._browser.process.wait()
            code = self._browser.process.returncode
            return f"the browser {ended(code)}" if code is not None else f"the browser is gone ({exc})"
        if isinstance(exc, TargetCrashed):
            return "the page crashed (its renderer process died)"
        return f"{type(exc).__name__}: {exc}"

    async def _broken_episode(self, reason: str) -> StepResult:
        """End the episode with ``reason``: the browser is killed now and a fresh one starts at the next reset."""
        await self._discard_browser()
        message = f"{reason}; the episode is over and the next reset starts a new browser"
        observation = WebObservation(
            instruction=self._instruction[:MAX_INSTRUCTION_CHARS],
            task=self._state.task,
            url=self._state.url,
            title=self._state.title,
            last_action_error=message[:MAX_NOTE_CHARS],
        )
        return StepResult(observation=observation, reward=0.0, truncated=True, info={"error": message})

    async def _end_page(self) -> None:
        if self._page is not None:
            page, self._page = self._page, None
            if self._browser is not None and self._browser.alive:
                await page.close()
                with anyio.move_on_after(RECOVERY_S):
                    try:
                        await self._browser.dispose_context()
                    except (CDPError, BrowserGone):
                        pass

    async def _discard_browser(self) -> None:
        self._page = None
        if self._browser is not None:
            browser, self._browser = self._browser, None
            await browser.close()

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):
            await self._discard_browser()
            if self._site is not None:
                await anyio.to_thread.run_sync(self._site.close)
                self._site = None
            if self._profile is not None:
                shutil.rmtree(self._profile, ignore_errors=True)
                self._profile = None

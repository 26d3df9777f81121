"""One browser tab, as the environment drives it: load, evaluate, real input, screenshots.

Input goes through ``Input.dispatch*``: the page sees trusted mouse and key events, exactly as from
a person, so handlers, focus, form submission and default actions behave as they do for users.
Every method can be cancelled by the caller's deadline; what a page does past a deadline (a script
in an endless loop, a response that never comes) is stopped with :meth:`Page.interrupt`.
"""

from __future__ import annotations

import base64
from typing import Any

import anyio

from .cdp import CDPConnection, CDPError

NAVIGATION_START_S = 2.0
"""How long a load the page asked for (a link, a form) may take to begin before settling stops waiting."""


class PageScriptError(RuntimeError):
    """A script the environment ran in the page raised."""


class NavigationError(RuntimeError):
    """The browser could not load a page (e.g. ``net::ERR_CONNECTION_REFUSED``)."""


class Page:
    def __init__(self, cdp: CDPConnection, target_id: str, session: str, size: tuple[int, int]) -> None:
        self.cdp = cdp
        self.target_id = target_id
        self.session = session
        self.size = size
        # Loads of the top frame: requested by the page, started, stopped (events, counted as they are read).
        self.requested = self.started = self.stopped = 0
        self.crashed = False

    @property
    def loading(self) -> bool:
        return self.started > self.stopped

    def mark(self) -> tuple[int, int]:
        """Where the loads stand now: give it to :meth:`settle` after an input."""
        return self.requested, self.started

    @classmethod
    async def attach(cls, cdp: CDPConnection, target_id: str, size: tuple[int, int]) -> Page:
        attached = await cdp.call("Target.attachToTarget", {"targetId": target_id, "flatten": True})
        page = cls(cdp, target_id, attached["sessionId"], size)
        page._listen()
        for method in ("Page.enable", "Inspector.enable"):
            await page.call(method)
        width, height = size
        await page.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        return page

    def _listen(self) -> None:
        session, main = self.session, self.target_id  # the top frame's id is its target's

        def started(params: dict[str, Any]) -> None:
            if params.get("frameId") == main:
                self.started += 1

        def stopped(params: dict[str, Any]) -> None:
            if params.get("frameId") == main:
                self.stopped = self.started

        def requested(params: dict[str, Any]) -> None:
            if params.get("frameId") == main:
                self.requested += 1

        def crashed(params: dict[str, Any]) -> None:
            self.crashed = True
            self.cdp.mark_crashed(session)

        def dialog(params: dict[str, Any]) -> None:
            # alert/confirm/prompt would block the page until answered: accept, as a hurried user would.
            self.cdp.post("Page.handleJavaScriptDialog", {"accept": True}, session)

        self.cdp.on("Page.frameStartedLoading", started, session)
        self.cdp.on("Page.frameStoppedLoading", stopped, session)
        self.cdp.on("Page.frameRequestedNavigation", requested, session)
        self.cdp.on("Inspector.targetCrashed", crashed, session)
        self.cdp.on("Page.javascriptDialogOpening", dialog, session)

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return await self.cdp.call(method, params, self.session)

    # ------------------------------------------------------------ loading

    async def navigate(self, url: str) -> None:
        """Load ``url`` and wait until the top frame stops loading."""
        before = self.started
        result = await self.call("Page.navigate", {"url": url})
        if result.get("errorText") and result["errorText"] != "net::ERR_ABORTED":
            raise NavigationError(f"{url}: {result['errorText']}")
        if result.get("loaderId"):  # none: a same-document navigation (a #fragment), nothing to wait for
            await self.cdp.wait_until(lambda: self.started != before and not self.loading, self.session)

    async def back(self) -> bool:
        """Go one entry back in this tab's history; False when there is none."""
        history = await self.call("Page.getNavigationHistory")
        index = history["currentIndex"]
        if index <= 0:
            return False
        mark = self.mark()
        await self.call("Page.navigateToHistoryEntry", {"entryId": history["entries"][index - 1]["id"]})
        await self.settle(mark)
        return True

    async def settle(self, mark: tuple[int, int]) -> None:
        """Wait until what an input caused is done: the page's own reaction, and any load it started."""
        try:
            await self.evaluate("0")  # answered after the tasks the input queued in the page
        except PageScriptError:
            pass  # the document went away under it: a load began, waited for below
        started = mark[1]
        if (self.requested, self.started) == mark:
            return
        if self.started == started:  # asked for, not begun: a load that never begins is no load
            with anyio.move_on_after(NAVIGATION_START_S):
                await self.cdp.wait_until(lambda: self.started != started, self.session)
        await self.cdp.wait_until(lambda: not self.loading, self.session)

    async def interrupt(self) -> None:
        """Stop a script stuck in a loop and any load in flight (after a missed deadline)."""
        await self.call("Runtime.terminateExecution")
        await self.call("Page.stopLoading")
        self.stopped = self.started

    # ------------------------------------------------------------ scripts

    async def evaluate(self, expression: str, await_promise: bool = False) -> Any:
        """The JSON value of ``expression`` in the page; :class:`PageScriptError` if it throws."""
        try:
            result = await self.call(
                "Runtime.evaluate",
                {"expression": expression, "returnByValue": True, "awaitPromise": await_promise},
            )
        except CDPError as exc:  # e.g. the context went away under a navigation
            raise PageScriptError(str(exc)) from None
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text", "error")
            raise PageScriptError(text.splitlines()[0])
        return result["result"].get("value")

    # ------------------------------------------------------------ input

    async def click(self, x: float, y: float) -> None:
        # No mouseMoved first: the press alone brings pointerover/mouseover/mouseenter, and a move waits
        # for the next frame (16 ms, most of a click's cost).
        base = {"x": x, "y": y, "button": "left", "clickCount": 1}
        await self.call("Input.dispatchMouseEvent", {"type": "mousePressed", **base})
        await self.call("Input.dispatchMouseEvent", {"type": "mouseReleased", **base})

    async def wheel(self, x: float, y: float, dx: float, dy: float) -> None:
        await self.call("Input.dispatchMouseEvent", {"type": "mouseWheel", "x": x, "y": y, "deltaX": dx, "deltaY": dy})

    async def key(self, event: dict[str, Any]) -> None:
        """One key press: ``event`` holds key, code, windowsVirtualKeyCode, modifiers and maybe text."""
        await self.call("Input.dispatchKeyEvent", {"type": "keyDown" if event.get("text") else "rawKeyDown", **event})
        up = {k: v for k, v in event.items() if k != "text"}
        await self.call("Input.dispatchKeyEvent", {"type": "keyUp", **up})

    async def next_frame(self) -> None:
        """Wait for the page to render once (a scroll or an animation frame applied)."""
        await self.evaluate("new Promise(r => requestAnimationFrame(() => r(0)))", await_promise=True)

    # ------------------------------------------------------------ pictures

    async def screenshot(self) -> bytes:
        result = await self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": False})
        return base64.b64decode(result["data"])

    async def close(self) -> None:
        """Close the tab (its context is disposed of by the browser). Never raises."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(2):
            try:
                await self.cdp.call("Target.closeTarget", {"targetId": self.target_id})
            except Exception:
                pass
        self.cdp.forget(self.session)

"""One headless Chromium, started and owned by the environment, driven over its DevTools pipe.

Chromium runs in a process group of its own, behind the library's shim (``die_with_parent``): it
gets its DevTools pipe at descriptors 3 and 4 (our stdin and stdout pipes, moved there) and, on
Linux, is killed when the environment's process dies, so a killed sandbox worker leaves no browser
behind. Closing kills the whole group (the zygote, renderers and utility processes with it).

Each episode runs in a fresh browser context (no cookies, storage or history from the one before);
the browser itself lives as long as the session, so only the first reset pays for starting it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Sequence

import anyio
import anyio.abc

from .._lib.child import base_environ, die_with_parent, ended
from .cdp import BrowserGone, CDPConnection
from .page import Page

BROWSER_VAR = "OPENENV_WEB_BROWSER"
"""Environment variable naming the Chromium binary (otherwise the first of ``CANDIDATES`` on PATH)."""
CANDIDATES = (
    "/usr/lib/chromium/chromium-headless-shell",
    "/usr/lib/chromium/chromium",
    "chromium-headless-shell",
    "chromium",
    "chromium-browser",
    "google-chrome",
)
"""Tried in this order. The headless shell starts in a third of the time of the full browser. Debian's
``/usr/bin`` names are shell scripts that run the binary as their child; the binaries themselves come
first, so that the process the environment starts (and that dies with it) is the browser itself."""

FLAGS = (
    "--headless",
    "--remote-debugging-pipe",
    # Chromium's own sandbox needs user namespaces or a setuid helper; the container is the sandbox
    # (no network, no capabilities, read-only root, its own pid and memory limits).
    "--no-sandbox",
    "--disable-gpu",
    # /dev/shm is 64 MB in a container: shared memory goes to the scratch tmpfs instead ($TMPDIR).
    "--disable-dev-shm-usage",
    # No calls home: without these the browser keeps trying (and failing) to reach Google's services.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-breakpad",
    "--no-first-run",
    "--no-default-browser-check",
    "--no-pings",
    "--metrics-recording-only",
    "--mute-audio",
    "--hide-scrollbars",
    "--password-store=basic",
    "--use-mock-keychain",
    # A page that goes back is loaded again (the shop's cart is the server's), and the timers of a
    # page in the background run as in the foreground (MiniWoB's countdown).
    "--disable-features=BackForwardCache,Translate,MediaRouter,OptimizationHints",
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
    # Nothing is resolved by name: the sites are on 127.0.0.1.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
)


class BrowserStartError(RuntimeError):
    pass


def find_browser(explicit: str | None = None) -> str:
    """The Chromium binary to run: ``explicit``, ``$OPENENV_WEB_BROWSER``, or the first candidate on PATH."""
    for name in (explicit, os.environ.get(BROWSER_VAR)):
        if name:
            path = shutil.which(name)
            if path is None:
                raise BrowserStartError(f"browser {name!r} not found (not an executable path, nor on PATH)")
            return path
    for name in CANDIDATES:
        if path := shutil.which(name):
            return path
    raise BrowserStartError(
        f"no Chromium found (tried {', '.join(CANDIDATES)} on PATH): install Debian's chromium-headless-shell "
        f"or chromium (scripts/setup_chromium.sh), or name one with the browser option or ${BROWSER_VAR}"
    )


class Browser:
    """A started Chromium and its DevTools connection."""

    def __init__(self, process: anyio.abc.Process, cdp: CDPConnection, profile: str) -> None:
        self.process = process
        self.cdp = cdp
        self.profile = profile
        self.context_id: str | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.returncode is None and not self.cdp.gone

    @classmethod
    async def launch(cls, executable: str, profile: str, size: tuple[int, int], timeout: float) -> Browser:
        """Start Chromium with its profile (and scratch) in ``profile``; ready once it answers."""
        width, height = size
        argv: Sequence[str] = [executable, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"]
        # stdin and stdout become the DevTools pipe (3: commands in, 4: answers out); 0 and 1 then /dev/null.
        argv = die_with_parent(argv, moves=[(0, 3), (1, 4), (2, 0), (2, 1)])
        process = await anyio.open_process(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=profile,
            env=base_environ(profile),
            start_new_session=True,
        )
        assert process.stdin is not None and process.stdout is not None
        browser = cls(process, CDPConnection(process.stdin, process.stdout), profile)
        try:
            with anyio.fail_after(timeout):
                await browser.cdp.call("Browser.getVersion")
        except (TimeoutError, BrowserGone):
            await browser.close()
            how = ended(process.returncode) if process.returncode is not None else f"did not answer in {timeout:g} s"
            raise BrowserStartError(f"{executable} {how}") from None
        return browser

    async def new_page(self, size: tuple[int, int]) -> Page:
        """A blank page in a fresh browser context; the previous episode's context is disposed of."""
        await self.dispose_context()
        created = await self.cdp.call("Target.createBrowserContext", {"disposeOnDetach": True})
        self.context_id = created["browserContextId"]
        target = await self.cdp.call("Target.createTarget", {"url": "about:blank", "browserContextId": self.context_id})
        return await Page.attach(self.cdp, target["targetId"], size)

    async def dispose_context(self) -> None:
        if self.context_id is not None and not self.cdp.gone:
            context, self.context_id = self.context_id, None
            await self.cdp.call("Target.disposeBrowserContext", {"browserContextId": context})

    async def close(self) -> None:
        """Kill the browser's whole process group and release the pipe. Never raises."""
        with anyio.CancelScope(shield=True):
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            await self.cdp.aclose()
            with anyio.move_on_after(5):
                await self.process.aclose()  # waits for it, and releases its transport

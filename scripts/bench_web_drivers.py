"""Which driver for the web env: the DevTools pipe it uses, Playwright, or Selenium (chromedriver).

Each driver starts the same Chromium binary headless, opens the same local page (served by the
env's own site server), and times: the start (launch to a loaded page), reading the page (the
env's listing script, dom.js, evaluated in the page), and a step (a click at the centre of a
button, then the listing again); then counts the processes the driver added and the PSS of the
whole tree. Playwright and Selenium are not dependencies of the project:

    pip install playwright selenium          # Playwright's own browser download is not needed
    python scripts/bench_web_drivers.py --samples 50

Prints one JSON object per driver. Needs Debian's chromium-headless-shell and chromium-driver
(scripts/setup_chromium.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

from openenv_ws_envs.web import dom
from openenv_ws_envs.web.browser import FLAGS, Browser, find_browser
from openenv_ws_envs.web.server import SiteServer
from openenv_ws_envs.web.shop import Shop

PAGE = "/_test/hang-script"  # a heading, two buttons and a counter; "Count" changes the page without a load
LISTING = "({source})({{op: 'snapshot', hide: null, firstId: 1, maxChars: 8000}}).text"
CLICK_TARGET = "(() => {{ const r = [...document.querySelectorAll('button')][1].getBoundingClientRect(); "
CLICK_TARGET += "return [r.left + r.width / 2, r.top + r.height / 2]; }})()"
SIZE = (1280, 720)


def summary(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "median_ms": round(statistics.median(ordered) * 1e3, 2),
        "p90_ms": round(ordered[int(0.9 * len(ordered))] * 1e3, 2),
    }


def figures(start: float, reads: list[float], steps: list[float]) -> dict:
    """The figures of one driver; the process tree is this one's, measured while the driver runs."""
    processes, pss = tree_pss_mib(os.getpid())
    return {"start_s": round(start, 3), "read": summary(reads), "step": summary(steps)} | {
        "processes": processes,
        "pss_mib": pss,
    }


def tree_pss_mib(root: int) -> tuple[int, float]:
    """How many processes descend from ``root`` (itself included), and their PSS in MiB."""
    children: dict[int, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            ppid = int(Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    todo, found, pss = [root], 0, 0
    while todo:
        pid = todo.pop()
        found += 1
        try:
            pss += int(re.search(rb"^Pss:\s+(\d+)", Path(f"/proc/{pid}/smaps_rollup").read_bytes(), re.M)[1])
        except (OSError, TypeError):
            pass
        todo.extend(children.get(pid, []))
    return found - 1, round(pss / 1024, 1)


async def timed(samples: int, fn: Callable[[], Awaitable[Any]]) -> list[float]:
    out = []
    for _ in range(samples):
        started = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - started)
    return out


async def devtools_pipe(url: str, listing: str, samples: int) -> dict:
    started = time.perf_counter()
    profile = tempfile.mkdtemp(prefix="bench-cdp-")
    browser = await Browser.launch(find_browser(), profile, SIZE, 30)
    page = await browser.new_page(SIZE)
    await page.navigate(url)
    start = time.perf_counter() - started
    try:
        x, y = await page.evaluate(CLICK_TARGET.format())

        async def step() -> None:
            mark = page.mark()
            await page.click(x, y)
            await page.settle(mark)
            await page.evaluate(listing)

        reads = await timed(samples, lambda: page.evaluate(listing))
        steps = await timed(samples, step)
        result = figures(start, reads, steps)
    finally:
        await browser.close()
        shutil.rmtree(profile, ignore_errors=True)
    return result


async def playwright(url: str, listing: str, samples: int) -> dict:
    from playwright.async_api import async_playwright

    started = time.perf_counter()
    driver = await async_playwright().start()
    args = [flag for flag in FLAGS if flag not in ("--headless", "--remote-debugging-pipe")]
    browser = await driver.chromium.launch(executable_path=find_browser(), args=args, headless=True)
    page = await browser.new_page(viewport={"width": SIZE[0], "height": SIZE[1]})
    await page.goto(url)
    start = time.perf_counter() - started
    try:
        x, y = await page.evaluate(CLICK_TARGET.format())

        async def step() -> None:
            await page.mouse.click(x, y)
            await page.evaluate(listing)

        reads = await timed(samples, lambda: page.evaluate(listing))
        steps = await timed(samples, step)
        result = figures(start, reads, steps)
    finally:
        await browser.close()
        await driver.stop()
    return result


async def selenium(url: str, listing: str, samples: int) -> dict:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    def run() -> dict:
        started = time.perf_counter()
        options = webdriver.ChromeOptions()
        options.binary_location = find_browser()
        for flag in FLAGS:
            if flag != "--remote-debugging-pipe":
                options.add_argument(flag)
        options.add_argument(f"--window-size={SIZE[0]},{SIZE[1]}")
        driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
        driver.get(url)
        start = time.perf_counter() - started
        try:
            button = driver.find_elements(By.TAG_NAME, "button")[1]
            reads, steps = [], []
            for _ in range(samples):
                t = time.perf_counter()
                driver.execute_script("return " + listing)
                reads.append(time.perf_counter() - t)
            for _ in range(samples):
                t = time.perf_counter()
                ActionChains(driver, duration=0).move_to_element(button).click().perform()
                driver.execute_script("return " + listing)
                steps.append(time.perf_counter() - t)
            result = figures(start, reads, steps)
        finally:
            driver.quit()
        return result

    return await anyio.to_thread.run_sync(run)


DRIVERS = {"devtools-pipe": devtools_pipe, "playwright": playwright, "selenium": selenium}


async def main(args: argparse.Namespace) -> None:
    site = SiteServer(Shop(), test_pages=True)
    listing = LISTING.format(source=Path(dom.__file__).with_name("dom.js").read_text())
    try:
        for name in args.drivers:
            try:
                figures = await DRIVERS[name](site.origin + PAGE, listing, args.samples)
            except ImportError as exc:
                figures = {"error": f"{exc} (pip install playwright selenium)"}
            print(json.dumps({"driver": name, **figures}))
    finally:
        site.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--drivers", nargs="+", default=list(DRIVERS), choices=list(DRIVERS))
    anyio.run(main, parser.parse_args())

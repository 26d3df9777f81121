"""MiniWoB++ tasks, as the ``miniwob`` package ships them: one HTML page per task whose script makes
a problem from a seed, states it (the utterance) and rewards the answer.

The page is loaded from the local server, seeded (``Math.seedrandom``), and started without its
sync cover; after each step the page's own globals say whether the episode is done and with what
reward. The reward is the page's raw reward (-1 to 1; 1 for a correct answer), not the one scaled
by the seconds spent: an agent that thinks longer is not paid less, and the same actions earn the
same reward in a replay. The scaled one is in the step's info.
"""

from __future__ import annotations

from functools import cache

import anyio
import msgspec

from .page import Page
from .server import miniwob_root

PATH = "/wob/miniwob/{task}.html"
HIDE = "#reward-display, #sync-task-cover"
"""Left out of the listing: MiniWoB's reward display and timer, and the cover it shows between episodes."""
READY_S = 5.0
"""How long a task page may take to say it is ready (``WOB_TASK_READY``)."""


class Outcome(msgspec.Struct, frozen=True):
    done: bool
    raw_reward: float
    reward: float
    reason: str | None = None


@cache
def tasks() -> tuple[str, ...]:
    """The names of the MiniWoB++ tasks installed (their pages), empty without the package."""
    root = miniwob_root()
    return tuple(sorted(p.stem for p in (root / "miniwob").glob("*.html"))) if root else ()


async def start(page: Page, origin: str, task: str, seed: int, time_limit_s: float) -> str:
    """Load and start ``task`` with ``seed``; its instruction."""
    await page.navigate(origin + PATH.format(task=task))
    limit_ms = int(time_limit_s * 1000)
    await page.evaluate(f"core.EPISODE_MAX_TIME = {limit_ms}; Math.seedrandom({seed}); core.startEpisodeReal(); 0")
    with anyio.fail_after(READY_S):
        while not await page.evaluate("typeof WOB_TASK_READY === 'undefined' || WOB_TASK_READY"):
            await anyio.sleep(0.02)
    return await page.evaluate("core.getUtterance()") or ""


async def outcome(page: Page) -> Outcome:
    answer = await page.evaluate(
        "({done: WOB_DONE_GLOBAL, raw_reward: WOB_RAW_REWARD_GLOBAL, reward: WOB_REWARD_GLOBAL,"
        " reason: WOB_REWARD_REASON == null ? null : String(WOB_REWARD_REASON)})"
    )
    return msgspec.convert(answer, Outcome)

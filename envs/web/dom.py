"""The page as an agent reads it (a compact listing with stable element ids) and the lookups that
turn an id back into a place to click or a field to type in. The work is done in the page by
``dom.js``; this module runs it and gives its answers types."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

from openenv_ws.errors import EnvError

from .page import Page

_SOURCE = Path(__file__).with_name("dom.js").read_text()


class Snapshot(msgspec.Struct, frozen=True):
    text: str
    omitted: int
    """Elements left out of ``text`` because it reached its size limit."""
    url: str
    title: str
    focused: int | None
    next: int
    """The next id the page would give: the next page of the episode starts there."""


class Target(msgspec.Struct, frozen=True):
    """Where an element is (its centre, scrolled into view) and what it is."""

    x: float
    y: float
    tag: str
    role: str
    name: str
    covered_by: str | None = msgspec.field(default=None, name="coveredBy")
    """What the centre shows instead of the element (another element on top), if anything."""
    select: int | None = None
    """For an option: the id of its select."""
    option: str | None = None
    editable: bool = False


async def _run(page: Page, command: dict[str, Any]) -> Any:
    return await page.evaluate(f"({_SOURCE})({json.dumps(command)})")


async def snapshot(page: Page, *, hide: str | None, first_id: int, max_chars: int) -> Snapshot:
    """The listing of the page, leaving out the elements (and their insides) that match the selector ``hide``."""
    answer = await _run(page, {"op": "snapshot", "hide": hide, "firstId": first_id, "maxChars": max_chars})
    return msgspec.convert(answer, Snapshot)


def _missing(element: int, answer: dict[str, Any]) -> EnvError:
    reasons = {
        "unknown": "there is no element with id {id} on this page (use an id from the latest observation)",
        "gone": "element {id} is no longer on the page (it was removed or the page changed)",
        "hidden": "element {id} is not visible",
        "unfocusable": "element {id} cannot take keyboard focus",
    }
    return EnvError(reasons.get(answer["error"], "element {id}: " + answer["error"]).format(id=element))


async def locate(page: Page, element: int) -> Target:
    answer = await _run(page, {"op": "locate", "id": element})
    if "error" in answer:
        raise _missing(element, answer)
    return msgspec.convert(answer, Target)


async def focus(page: Page, element: int, *, clear: bool) -> bool:
    """Focus ``element`` for typing (its text selected when ``clear``); True when it held text."""
    answer = await _run(page, {"op": "focus", "id": element, "clear": clear})
    if "error" in answer:
        raise _missing(element, answer)
    return bool(answer["hadText"])


async def select(page: Page, element: int, option: str) -> str:
    """Choose ``option`` (its text or value) in a ``<select>``; the chosen option's text."""
    answer = await _run(page, {"op": "select", "id": element, "option": option})
    error = answer.get("error")
    if error == "notselect":
        raise EnvError(f"element {element} is a {answer['role']}, not a select (combobox): click or type instead")
    if error == "nooption":
        raise EnvError(f"element {element} has no option {option!r} (options: {', '.join(answer['options'])})")
    if error == "disabled":
        raise EnvError(f"option {option!r} of element {element} is disabled")
    if error:
        raise _missing(element, answer)
    return answer["chosen"]

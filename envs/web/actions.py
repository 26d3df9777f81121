"""What an agent can do on a page: one tagged union, validated by msgspec in the sandbox.

``{"action": "click", "id": 12}`` -- the ``action`` field picks the kind; every other field is
checked against that kind, and a mistake is a validation error naming its field (``$.id``,
``$.key``, ``$.path``). Element ids come from the latest observation's ``page`` listing.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from openenv_ws.env import Action

from .keys import KEY_PATTERN

MAX_TYPE_CHARS = 2000
"""Characters one ``type`` action may type."""
MAX_WAIT_S = 10.0
"""The longest a ``noop`` may wait."""

ElementId = Annotated[int, msgspec.Meta(ge=1, le=2**31, description="an element id from the page listing")]
TypedText = Annotated[str, msgspec.Meta(max_length=MAX_TYPE_CHARS)]
Key = Annotated[str, msgspec.Meta(pattern=KEY_PATTERN)]
OptionText = Annotated[str, msgspec.Meta(max_length=1000)]
Direction = Literal["up", "down", "left", "right"]
LocalPath = Annotated[str, msgspec.Meta(pattern=r"^/(?![/\\])\S*$", max_length=2048)]
WaitSeconds = Annotated[float, msgspec.Meta(ge=0, le=MAX_WAIT_S)]
"""The types of the actions' fields, shared with the environment's tools (one argument of each per field)."""


class WebAction(Action, tag_field="action"):
    screenshot: bool = False
    """Add a PNG screenshot to this step's observation (the ``screenshot`` option adds one to every step)."""


class NoopAction(WebAction, tag="noop", kw_only=True):
    """Do nothing, maybe wait first (for a page that changes by itself)."""

    wait_s: WaitSeconds = 0.0


class ClickAction(WebAction, tag="click", kw_only=True):
    """Click the centre of an element (scrolled into view first), as a mouse does."""

    id: ElementId


class TypeAction(WebAction, tag="type", kw_only=True):
    """Focus an element and type ``text`` key by key; with ``clear``, its old text goes first."""

    id: ElementId
    text: TypedText
    clear: bool = True


class PressAction(WebAction, tag="press", kw_only=True):
    """Press a key in the focused element: ``Enter``, ``Tab``, ``ArrowDown``, ``Control+a``, ``x``."""

    key: Key


class SelectAction(WebAction, tag="select", kw_only=True):
    """Choose an option of a select (combobox) by its text or value."""

    id: ElementId
    option: OptionText


class ScrollAction(WebAction, tag="scroll", kw_only=True):
    """Scroll the page (or the element ``id``) by most of a screen."""

    direction: Direction
    id: ElementId | None = None


class GotoAction(WebAction, tag="goto", kw_only=True):
    """Open a path of the local site (``/``, ``/search?q=mug``, ``/cart``); no other host is reachable."""

    path: LocalPath


class BackAction(WebAction, tag="back", kw_only=True):
    """Go back one page in the tab's history."""


AnyWebAction = (
    NoopAction | ClickAction | TypeAction | PressAction | SelectAction | ScrollAction | GotoAction | BackAction
)
"""Every action, ``noop`` first (the smallest valid action a schema-driven tool builds)."""

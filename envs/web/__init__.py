"""Web: a real headless Chromium per session, MiniWoB++ tasks and a local shop, acted on by element id and key."""

from .actions import (
    AnyWebAction,
    BackAction,
    ClickAction,
    GotoAction,
    NoopAction,
    PressAction,
    ScrollAction,
    SelectAction,
    TypeAction,
)
from .environment import Screenshot, WebEnvironment, WebObservation, WebState

__all__ = [
    "AnyWebAction",
    "BackAction",
    "ClickAction",
    "GotoAction",
    "NoopAction",
    "PressAction",
    "Screenshot",
    "ScrollAction",
    "SelectAction",
    "TypeAction",
    "WebEnvironment",
    "WebObservation",
    "WebState",
]

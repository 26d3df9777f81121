"""Key names an agent may press (``Enter``, ``Control+a``, ``Shift+Tab``) and the DevTools key events
each one is. The grammar is a pattern on the action's field, so a bad key is a validation error
that names ``$.key``, raised before anything reaches the page."""

from __future__ import annotations

from typing import Any

NAMED: dict[str, tuple[int, str]] = {
    # key: (Windows virtual key code, the text it types)
    "Enter": (13, "\r"),
    "Tab": (9, ""),
    "Backspace": (8, ""),
    "Delete": (46, ""),
    "Escape": (27, ""),
    "ArrowUp": (38, ""),
    "ArrowDown": (40, ""),
    "ArrowLeft": (37, ""),
    "ArrowRight": (39, ""),
    "Home": (36, ""),
    "End": (35, ""),
    "PageUp": (33, ""),
    "PageDown": (34, ""),
    "Space": (32, " "),
    **{f"F{n}": (111 + n, "") for n in range(1, 13)},
}
MODIFIERS = {"Alt": 1, "Control": 2, "Meta": 4, "Shift": 8}
"""DevTools modifier bits."""

_NAMES = "|".join(sorted(NAMED, key=len, reverse=True))
KEY_PATTERN = rf"^(({'|'.join(MODIFIERS)})\+)*({_NAMES}|[!-~])$"
"""A key: optional modifiers joined by ``+``, then a named key or one printable ASCII character."""

_SHIFTED = dict(zip('~!@#$%^&*()_+{}|:"<>?', "`1234567890-=[]\\;',./", strict=True))
_CODES = {
    "`": ("Backquote", 192), "-": ("Minus", 189), "=": ("Equal", 187), "[": ("BracketLeft", 219),
    "]": ("BracketRight", 221), "\\": ("Backslash", 220), ";": ("Semicolon", 186), "'": ("Quote", 222),
    ",": ("Comma", 188), ".": ("Period", 190), "/": ("Slash", 191),
}  # fmt: skip


def _char(char: str) -> dict[str, Any]:
    """The key event of one character as a US keyboard types it."""
    base = _SHIFTED.get(char, char.lower())
    if base.isalpha() and base.isascii():
        code, vk = f"Key{base.upper()}", ord(base.upper())
    elif base.isdigit():
        code, vk = f"Digit{base}", ord(base)
    elif base in _CODES:
        code, vk = _CODES[base]
    elif char == " ":
        code, vk = "Space", 32
    else:  # anything else (accents, emoji, CJK) arrives as text, as from an input method
        code, vk = "", 0
    shifted = char in _SHIFTED or (char.isascii() and char.isupper())
    return {"key": char, "code": code, "windowsVirtualKeyCode": vk, "text": char, "modifiers": 8 if shifted else 0}


def key_event(combo: str) -> dict[str, Any]:
    """The event of a key name that matches :data:`KEY_PATTERN`."""
    if combo == "+" or combo.endswith("++"):
        mods, key = combo[:-1], "+"
    else:
        mods, _, key = combo.rpartition("+")
    modifiers = 0
    for mod in filter(None, mods.split("+")):
        modifiers |= MODIFIERS[mod]
    if key in NAMED:
        vk, text = NAMED[key]
        event: dict[str, Any] = {"key": " " if key == "Space" else key, "code": key, "windowsVirtualKeyCode": vk}
        if text:
            event["text"] = text
    else:
        event = _char(key)
    if modifiers & (MODIFIERS["Control"] | MODIFIERS["Alt"] | MODIFIERS["Meta"]):
        event.pop("text", None)  # a shortcut types nothing
    event["modifiers"] = modifiers | event.get("modifiers", 0)
    return event


def text_events(text: str) -> list[dict[str, Any]]:
    """The key events that type ``text`` (a newline is Enter)."""
    return [key_event("Enter") if char == "\n" else _char(char) for char in text.replace("\r\n", "\n")]

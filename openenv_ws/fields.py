"""Field-level comparison of two decoded answers, and the paths an environment says may differ.

Shared by ``openenv-ws replay`` (a recorded episode against a fresh session) and by forks and
checkpoints restored by replay (a re-observed result against the recorded one): both report a
divergence as the fields that differ, and both skip the environment's ``nondeterministic_fields``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec


def _segments(path: str) -> list[str]:
    """``observation.items[2].id`` -> ``["observation", "items", "2", "id"]``."""
    return [part for part in path.replace("[", ".").replace("]", "").split(".") if part]


def format_path(segments: Sequence[str | int]) -> str:
    text = ""
    for segment in segments:
        text += f"[{segment}]" if isinstance(segment, int) else (f".{segment}" if text else str(segment))
    return text


class FieldFilter:
    """Paths not compared: a pattern matches its path and everything below; ``*`` matches one step."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = [_segments(p) for p in dict.fromkeys(patterns) if p]

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def ignores(self, segments: Sequence[str | int]) -> bool:
        return any(
            len(pattern) <= len(segments)
            and all(p == "*" or p == str(s) for p, s in zip(pattern, segments, strict=False))
            for pattern in self.patterns
        )


@dataclass
class Difference:
    path: str
    recorded: Any
    replayed: Any

    def __str__(self) -> str:
        return f"{self.path}: recorded {_show(self.recorded)}, replayed {_show(self.replayed)}"


_MISSING = object()


def _show(value: Any, limit: int = 160) -> str:
    if value is _MISSING:
        return "(absent)"
    text = msgspec.json.encode(value).decode()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def compare(recorded: Any, replayed: Any, ignore: FieldFilter | None = None) -> list[Difference]:
    """Every leaf where the two differ (dicts by key, lists by index), except ignored paths."""
    found: list[Difference] = []
    ignore = ignore or FieldFilter(())

    def walk(a: Any, b: Any, at: list[str | int]) -> None:
        if ignore and ignore.ignores(at):
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for key in list(a) + [k for k in b if k not in a]:
                walk(a.get(key, _MISSING), b.get(key, _MISSING), [*at, key])
        elif isinstance(a, list) and isinstance(b, list):
            for index in range(max(len(a), len(b))):
                walk(a[index] if index < len(a) else _MISSING, b[index] if index < len(b) else _MISSING, [*at, index])
        elif a != b or (type(a) is not type(b) and not _same_number(a, b)):
            found.append(Difference(format_path(at), a, b))

    walk(recorded, replayed, [])
    return found


def _same_number(a: Any, b: Any) -> bool:
    return isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool) and a == b


def plain(value: Any) -> Any:
    """What a value looks like once recorded: JSON types only (Structs as dicts, bytes as base64)."""
    return msgspec.json.decode(msgspec.json.encode(value))

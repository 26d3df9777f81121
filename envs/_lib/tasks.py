"""Shipped task catalogs (``tasks.json`` beside an environment's module), chosen by name or by seed."""

from __future__ import annotations

import json
import random
from functools import cache
from pathlib import Path
from typing import Any

from openenv_ws.errors import ValidationError
from openenv_ws.protocol import ErrorCode


@cache
def load_tasks(module_file: str) -> dict[str, dict[str, Any]]:
    return json.loads(Path(module_file).with_name("tasks.json").read_text())


def choose_task(tasks: dict[str, dict[str, Any]], name: str | None, seed: int | None) -> str | None:
    """``None``: no task; a task's name; or ``"random"``: one picked by ``seed``."""
    if not name:
        return None
    if name == "random":
        return random.Random(seed).choice(sorted(tasks))
    if name not in tasks:
        known = ", ".join(sorted(tasks))
        raise ValidationError(
            f"unknown task {name!r} (known: {known}, random)", path="$.task", code=ErrorCode.BAD_OPTIONS
        )
    return name


def requested_task(options: dict[str, Any] | None, default: str | None) -> str | None:
    """The task a reset asks for (its ``task`` option, else ``default``); any other reset option is refused."""
    options = dict(options or {})
    task = options.pop("task", default)
    if options:
        raise ValidationError(f"unknown reset options: {', '.join(sorted(options))} (known: task)", path="$.options")
    return task

"""Sandbox backends: where a session's environment runs."""

from __future__ import annotations

import importlib
from typing import Any

from .base import Backend, Sandbox

BACKENDS = {
    "inprocess": "openenv_ws.sandbox.inprocess:InProcessBackend",
    "subprocess": "openenv_ws.sandbox.subprocess:SubprocessBackend",
    "docker": "openenv_ws.sandbox.docker.backend:DockerBackend",
}


def create_backend(name: str, **options: Any) -> Backend:
    """Instantiate a backend by name (imported lazily: each may have its own dependencies)."""
    try:
        module_name, _, attr = BACKENDS[name].partition(":")
    except KeyError:
        raise ValueError(f"unknown sandbox backend {name!r} (choose from {', '.join(BACKENDS)})") from None
    return getattr(importlib.import_module(module_name), attr)(**options)


__all__ = ["BACKENDS", "Backend", "Sandbox", "create_backend"]

"""Finding environments by name (entry points) or by ``module:Class`` path."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from .env import Environment, schemas
from .errors import UnknownEnvError
from .toolbox import tool_specs

ENTRY_POINT_GROUP = "openenv_ws.envs"


@dataclass(frozen=True)
class EnvSpec:
    """A resolved environment: the name clients use and the import path sandboxes load."""

    name: str
    target: str
    cls: type[Environment] = field(repr=False)

    @cached_property
    def schemas(self) -> dict[str, Any]:
        return schemas(self.cls)

    @cached_property
    def tools(self) -> list[dict[str, Any]]:
        """The environment's tools as published (empty when it has none)."""
        return tool_specs(self.cls)


def builtin_envs() -> dict[str, str]:
    """Registered environment names and their ``module:Class`` targets."""
    # Imported here: importlib.metadata (email, zipfile...) is ~20 ms a sandbox worker never needs.
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_target(target: str) -> type[Environment]:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise UnknownEnvError(f"{target!r} is not a registered env name nor a 'module:Class' path")
    try:
        module = importlib.import_module(module_name)
        cls = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise UnknownEnvError(f"cannot load environment {target!r}: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, Environment)):
        raise UnknownEnvError(f"{target!r} is not an openenv_ws.Environment subclass")
    return cls


def resolve(name_or_target: str) -> EnvSpec:
    """Resolve ``echo`` (a registered name) or ``pkg.module:MyEnv`` (an import path)."""
    registered = builtin_envs()
    if name_or_target in registered:
        target = registered[name_or_target]
        cls = load_target(target)
        return EnvSpec(name=name_or_target, target=target, cls=cls)
    if ":" not in name_or_target:
        known = ", ".join(sorted(registered)) or "none"
        raise UnknownEnvError(f"unknown environment {name_or_target!r} (registered: {known})")
    cls = load_target(name_or_target)
    return EnvSpec(name=cls.name or cls.__name__, target=name_or_target, cls=cls)

"""The library installs as ``openenv_ws_envs``, and only under that name (see setup.py, conftest.py)."""

from __future__ import annotations

import importlib
import sys

from openenv_ws.registry import builtin_envs, load_target


def test_no_module_is_loaded_as_envs():
    # Run after the whole suite is collected: neither a test nor the code it imports used `envs`.
    assert __name__ == "openenv_ws_envs.test_install_name"
    assert sorted(name for name in sys.modules if name == "envs" or name.startswith("envs.")) == []


def test_entry_points_load_the_installed_classes():
    targets = builtin_envs()
    assert {"echo", "coding", "shell", "textgames", "gym", "web"} <= set(targets)
    for name in ("echo", "coding", "shell", "textgames", "gym", "web"):
        module, _, attr = targets[name].partition(":")
        assert module == f"openenv_ws_envs.{name}"
        assert load_target(targets[name]) is getattr(importlib.import_module(module), attr)

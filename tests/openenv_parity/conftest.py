"""The adapted OpenEnv tests: see :mod:`tests.openenv_parity.serving` for what is changed in them."""

import sys

import pytest

sys.modules.setdefault("gradio", None)  # type: ignore[arg-type]  # see tests/openenv_envs.py


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: OpenEnv's mark for tests that start a server")

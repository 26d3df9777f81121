"""The adapted OpenEnv tests: see :mod:`tests.openenv_parity.serving` for what is changed in them."""

import sys

import pytest

sys.modules.setdefault("gradio", None)  # type: ignore[arg-type]  # see tests/openenv_envs.py


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: OpenEnv's mark for tests that start a server")


OPENENV_FAILS_TOO = {
    "test_generic_client.py": "fails against OpenEnv 0.10.0's own server too: it steps OpenEnv's echo env (or our"
    " stand-in, which does as it does) with {'message': ...}, an action that env no longer takes since it became"
    " MCP-only (VALIDATION_ERROR)",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark (not change) the adapted tests that fail against OpenEnv's own server as well."""
    for item in items:
        reason = OPENENV_FAILS_TOO.get(item.path.name)
        if reason is not None and item.path.parent.name == "openenv_parity":
            item.add_marker(pytest.mark.xfail(reason=reason, strict=False))

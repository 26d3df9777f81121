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


OUR_SERVER_IS_CONFIGURED = (
    # OpenEnv's server holds at most max_concurrent_envs WebSocket sessions (1 unless configured), so
    # OpenEnv skips its two session-isolation tests; our_server() allows 64 sessions, each with its
    # own environment: the configuration they ask for is the one they get.
    "Concurrency requires server configuration",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark (not change) the adapted tests that fail against OpenEnv's own server as well, and run
    those that OpenEnv skips for want of a server configuration ours has."""
    for item in items:
        if item.path.parent.name != "openenv_parity":
            continue
        reason = OPENENV_FAILS_TOO.get(item.path.name)
        if reason is not None:
            item.add_marker(pytest.mark.xfail(reason=reason, strict=False))
        item.own_markers[:] = [
            mark
            for mark in item.own_markers
            if not (mark.name == "skip" and mark.kwargs.get("reason", "").startswith(OUR_SERVER_IS_CONFIGURED))
        ]

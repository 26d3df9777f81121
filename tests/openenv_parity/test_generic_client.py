# Adapted from OpenEnv (meta-pytorch/OpenEnv, BSD-style licence, copyright Meta Platforms, Inc.
# and affiliates): tests/test_core/test_generic_client.py, commit 685de411: its integration tests
# (the class TestGenericEnvClientIntegration), the ones that use a server; the rest of that file
# tests OpenEnv's client classes alone (mocks, imports) and is left out.
# What is changed, and only that: how the server starts. ``local_echo_server`` starts a real
# ``openenv-ws serve`` on 127.0.0.1 serving OpenEnv's echo env through ``from_openenv`` (in-process
# and subprocess backends) instead of expecting OpenEnv's uvicorn on localhost:8000 (and skipping
# without it). ``echo_env`` is OpenEnv's from $OPENENV_SRC/envs, or else our stand-in
# (stand_ins/echo_env: MCP-only like OpenEnv's, so these tests fail the same way; see conftest.py).
# The test bodies are OpenEnv's. See tests/openenv_parity/serving.py.
# Copyright (c) Meta Platforms, Inc. and affiliates.
# All rights reserved.
#
# This source code is licensed under the BSD-style license found in the
# LICENSE file in the root directory of this source tree.

"""
Unit tests for GenericEnvClient and GenericAction
===================================================

Tests cover:
1. GenericEnvClient instantiation and basic operations
2. Dictionary-based action/observation handling
3. from_docker_image() inheritance
4. from_env() inheritance (HuggingFace registry)
5. AutoEnv integration with skip_install parameter
6. Comparison with typed clients
7. GenericAction class
8. AutoAction with skip_install parameter
"""

import pytest
from openenv.core.generic_client import GenericEnvClient

from .serving import BACKENDS, need_openenv_envs, our_server


@pytest.mark.integration
class TestGenericEnvClientIntegration:
    """
    Integration tests that require a running server.

    These tests require a server to be running on localhost.

    Start a server first:
        cd envs/echo_env/server && uvicorn app:app --host 0.0.0.0 --port 8000

    Run these tests with:
        pytest -m integration tests/test_core/test_generic_client.py -v
    """

    @pytest.fixture(scope="class", params=BACKENDS)
    def local_echo_server(self, request):
        """Our server for OpenEnv's echo env (OpenEnv's: one already running on localhost:8000)."""
        need_openenv_envs()
        with our_server("tests.openenv_parity.openenv_examples:Echo", request.param) as server:
            yield server.http

    def test_generic_client_with_local_server(self, local_echo_server):
        """Test GenericEnvClient with a real local server using sync wrapper."""
        with GenericEnvClient(base_url=local_echo_server).sync() as client:
            # Reset
            result = client.reset()
            assert result is not None
            assert isinstance(result.observation, dict)

            # Step with dict action
            action = {"message": "Hello from GenericEnvClient!"}
            step_result = client.step(action)

            assert step_result is not None
            assert isinstance(step_result.observation, dict)
            assert "Hello from GenericEnvClient!" in step_result.observation.get("echoed_message", "")

    def test_generic_client_multiple_steps(self, local_echo_server):
        """Test multiple steps with GenericEnvClient using sync wrapper."""
        with GenericEnvClient(base_url=local_echo_server).sync() as client:
            client.reset()

            messages = ["First", "Second", "Third"]
            for msg in messages:
                result = client.step({"message": msg})
                assert msg in result.observation.get("echoed_message", "")

    def test_generic_client_state(self, local_echo_server):
        """Test getting state with GenericEnvClient using sync wrapper."""
        with GenericEnvClient(base_url=local_echo_server).sync() as client:
            client.reset()

            # Execute some steps
            client.step({"message": "step 1"})
            client.step({"message": "step 2"})

            # Get state
            state = client.state()

            assert isinstance(state, dict)
            # State should have step_count
            assert "step_count" in state or len(state) > 0

    @pytest.mark.asyncio
    async def test_generic_client_async_with_local_server(self, local_echo_server):
        """Test GenericEnvClient with async API."""
        async with GenericEnvClient(base_url=local_echo_server) as client:
            # Reset
            result = await client.reset()
            assert result is not None
            assert isinstance(result.observation, dict)

            # Step with dict action
            action = {"message": "Hello from async GenericEnvClient!"}
            step_result = await client.step(action)

            assert step_result is not None
            assert isinstance(step_result.observation, dict)
            assert "Hello from async GenericEnvClient!" in step_result.observation.get("echoed_message", "")

"""An open that fails for a reason the server did not foresee: the client is told what failed.

The app runs in a real uvicorn server on a loopback port (``local_server``), with a backend whose
``open`` raises what no backend should (an ``OSError``): the session fails with an ``internal``
error that names the exception, on its own connection and on a multiplexed one, and the server
goes on serving.
"""

from __future__ import annotations

import anyio
import pytest

from openenv_ws import OpenEnvWSError, connect, multiplex
from openenv_ws.sandbox.inprocess import InProcessBackend
from openenv_ws.server.local import local_server


class OpensFailing(InProcessBackend):
    """The in-process backend, except that its first ``failures`` opens raise ``FileExistsError``."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def open(self, spec, options):
        if self.failures > 0:
            self.failures -= 1
            raise FileExistsError(17, "File exists")
        return await super().open(spec, options)


async def test_an_unforeseen_open_failure_names_its_exception_and_the_server_goes_on():
    async with local_server(["echo"], backend=OpensFailing(failures=2)) as url:
        with anyio.fail_after(30):
            with pytest.raises(OpenEnvWSError) as own:
                async with connect(url, "echo", reconnect_attempts=0):
                    pass
            with pytest.raises(OpenEnvWSError) as muxed:
                async with multiplex(url, connections=1) as mux, mux.connect("echo"):
                    pass
            async with connect(url, "echo") as env:  # the next open works: nothing was left broken
                await env.reset()
                assert (await env.step({"message": "after"})).observation["echoed_message"] == "after"
    for raised in (own.value, muxed.value):
        assert raised.code == "internal"
        assert "opening the session failed: FileExistsError: [Errno 17] File exists" in str(raised), str(raised)

"""What a pooled container's memory reads as when the engine gives no usable answer.

The Docker engine of a swarm node that is busy with another node's comings and goings was seen
answering a container's stats with an empty body; the docker SDK raised requests' JSONDecodeError,
which ended the backend's task group and with it the server (tests/test_swarm.py found it). The
engine cannot be made to answer so on demand, so its client is stood in for here.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import docker.errors
import pytest
import requests.exceptions

from openenv_ws.sandbox.docker.memory import container_memory


class EngineAnswering:
    """The two things container_memory uses of DockerOps: ``api.stats`` and ``call``."""

    def __init__(self, answer: Any) -> None:
        def stats(container_id: str, **options: Any) -> Any:
            if isinstance(answer, Exception):
                raise answer
            return answer

        self.api = SimpleNamespace(stats=stats)

    async def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)


@pytest.mark.parametrize(
    "answer",
    [
        requests.exceptions.JSONDecodeError("Expecting value", "", 0),  # an empty body
        requests.exceptions.ConnectionError("engine went away"),
        docker.errors.NotFound("no such container"),
        "not a stats object",
    ],
    ids=["empty-body", "connection", "not-found", "not-a-dict"],
)
async def test_an_unusable_engine_answer_reads_as_unknown(answer):
    assert await container_memory(EngineAnswering(answer), "0" * 64) is None


async def test_a_stats_answer_reads_as_usage_less_inactive_file():
    stats = {"memory_stats": {"usage": 20 << 20, "stats": {"inactive_file": 4 << 20}}}
    assert await container_memory(EngineAnswering(stats), "0" * 64) == 16 << 20

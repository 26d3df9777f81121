"""What the cluster tests (loopback and swarm lab) share: a policy that takes its time, and where episodes ran."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import anyio

from openenv_ws.client.episodes import EpisodeRecord
from openenv_ws.ids import node_of


def nodes_seen(records: Iterable[EpisodeRecord]) -> Counter:
    """How many episodes ended on each node (by the node their last session's id names)."""
    return Counter(node_of(r.session_id or "") for r in records)


def slow_policy(seconds: float) -> Callable[[Any], Awaitable[dict[str, str]]]:
    """An echo policy that thinks for ``seconds`` before each step (episodes last long enough to be cut)."""

    async def policy(observation: Any) -> dict[str, str]:
        await anyio.sleep(seconds)
        return {"message": "hi"}

    return policy

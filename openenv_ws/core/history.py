"""What made an episode what it is: its last reset and every step since, with their answers.

A copy of an episode (a fork, a checkpoint) made by replay resets a fresh sandbox the same way
and applies the same actions again, checking each answer against the one kept here. The
history is bounded in bytes: past the bound it is dropped, and the episode can then be copied
only by snapshot (or not at all) until its next reset.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..protocol import Reset, Result, ServerFrame, Step


@dataclass(slots=True)
class Entry:
    request: Reset | Step
    reply: ServerFrame


class EpisodeHistory:
    """The last reset and the steps since, bounded in bytes."""

    __slots__ = ("_log", "dropped", "max_bytes", "size", "started", "steps")

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._log: list[tuple[Reset | Step, ServerFrame]] = []
        """(request, reply) pairs: a tuple per step is the cheapest record on the step path."""
        self.size = 0
        self.steps = 0
        """Steps of the episode that returned a result."""
        self.dropped = False
        """The episode outgrew ``max_bytes``: it cannot be replayed until its next reset."""
        self.started = False
        """A reset has been applied."""

    @property
    def entries(self) -> list[Entry]:
        return [Entry(request, reply) for request, reply in self._log]

    def record(self, request: Reset | Step, reply: ServerFrame, size: int) -> None:
        """A reset or step was answered (``size``: bytes of the request and its reply)."""
        if type(request) is Reset:
            if type(reply) is not Result:
                return  # a failed reset changes nothing to replay
            self._log, self.size, self.steps, self.dropped, self.started = [], 0, 0, False, True
        elif type(reply) is Result:
            self.steps += 1
        if self.dropped:
            return
        self._log.append((request, reply))
        self.size += size
        if self.size > self.max_bytes:
            self._log, self.size, self.dropped = [], 0, True

    def prefix(self, step: int) -> list[Entry]:
        """The entries that lead to the episode as it was after step ``step`` (0: just reset)."""
        return [Entry(request, reply) for request, reply in self._prefix(step)]

    def _prefix(self, step: int) -> list[tuple[Reset | Step, ServerFrame]]:
        taken = []
        results = 0
        for request, reply in self._log:
            if type(request) is Step:
                if results == step:
                    break
                results += type(reply) is Result
            taken.append((request, reply))
        return taken

    def copy(self, step: int) -> EpisodeHistory:
        """The history of a copy made after step ``step``."""
        copy = EpisodeHistory(self.max_bytes)
        copy._log, copy.size, copy.steps = self._prefix(step), self.size, step
        copy.dropped, copy.started = self.dropped, self.started
        return copy

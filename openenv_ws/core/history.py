"""What made an episode what it is: its last reset and every step since, with their answers.

A copy of an episode (a fork, a checkpoint) made by replay resets a fresh sandbox the same way
and applies the same actions again, checking each answer against the one kept here. The
history is bounded in bytes: past the bound it is dropped, and the episode can then be copied
only by snapshot (or not at all) until its next reset.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..protocol import Reset, Result, ServerFrame, Step


@dataclass(slots=True)
class Entry:
    request: Reset | Step
    reply: ServerFrame


@dataclass(slots=True)
class EpisodeHistory:
    max_bytes: int
    entries: list[Entry] = field(default_factory=list)
    size: int = 0
    steps: int = 0
    """Steps of the episode that returned a result."""
    dropped: bool = False
    """The episode outgrew ``max_bytes``: it cannot be replayed until its next reset."""
    started: bool = False
    """A reset has been applied."""

    def record(self, request: Reset | Step, reply: ServerFrame, size: int) -> None:
        """A reset or step was answered (``size``: bytes of the request and its reply)."""
        if isinstance(request, Reset):
            if not isinstance(reply, Result):
                return  # a failed reset changes nothing to replay
            self.entries, self.size, self.steps, self.dropped, self.started = [], 0, 0, False, True
        elif isinstance(reply, Result):
            self.steps += 1
        if self.dropped:
            return
        self.entries.append(Entry(request, reply))
        self.size += size
        if self.size > self.max_bytes:
            self.entries, self.size, self.dropped = [], 0, True

    def prefix(self, step: int) -> list[Entry]:
        """The entries that lead to the episode as it was after step ``step`` (0: just reset)."""
        taken: list[Entry] = []
        results = 0
        for entry in self.entries:
            if isinstance(entry.request, Step):
                if results == step:
                    break
                results += isinstance(entry.reply, Result)
            taken.append(entry)
        return taken

    def copy(self, step: int) -> EpisodeHistory:
        """The history of a copy made after step ``step``."""
        entries = self.prefix(step)
        return EpisodeHistory(self.max_bytes, list(entries), self.size, step, self.dropped, self.started)

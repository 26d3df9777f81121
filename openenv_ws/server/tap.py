"""What a session shows outside its client: its recording and its live watchers.

A :class:`Session` holds a :class:`SessionTap` only while something listens (``--record`` or a
``/v1/sessions/{id}/watch`` socket); otherwise ``session.tap`` is None and the step path pays
one attribute check. Watchers get frames through bounded queues: a watcher that cannot keep up
loses frames (counted, and told), never slows the session.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import anyio

from ..protocol import Request, encode
from ..record import C2S, S2C, WRITER, EpisodeRecorder
from ..version import __version__

WATCH_BUFFER = 1024
"""Frames queued for one watcher; beyond it they are dropped and counted."""


class Watcher:
    """One live reader of a session's frames, read-only: a bounded queue the session fills."""

    def __init__(self, buffer: int = WATCH_BUFFER) -> None:
        self.items: deque[tuple[float, str, bytes]] = deque()
        self.buffer = buffer
        self.dropped = 0
        self.ended: str | None = None
        self._wake = anyio.Event()

    def put(self, item: tuple[float, str, bytes]) -> None:
        if len(self.items) >= self.buffer:
            self.dropped += 1
            return
        self.items.append(item)
        self._wake.set()

    def end(self, reason: str) -> None:
        """The session ended; the reader drains what is queued, then learns why."""
        self.ended = reason
        self._wake.set()

    async def wait(self) -> None:
        """Until something was put (or the session ended) since the last wait."""
        await self._wake.wait()
        self._wake = anyio.Event()


class SessionTap:
    __slots__ = ("recorder", "t0", "watchers")

    def __init__(self, t0: float, recorder: EpisodeRecorder | None = None) -> None:
        self.t0 = t0
        self.recorder = recorder
        self.watchers: list[Watcher] = []

    @property
    def empty(self) -> bool:
        return self.recorder is None and not self.watchers

    def request(self, frame: Request) -> None:
        data = None
        if self.watchers:
            data = encode(frame)
            item = (time.monotonic() - self.t0, C2S, data)
            for watcher in self.watchers:
                watcher.put(item)
        if self.recorder is not None:
            self.recorder.request(frame, data)

    def reply(self, data: bytes) -> None:
        if self.watchers:
            item = (time.monotonic() - self.t0, S2C, data)
            for watcher in self.watchers:
                watcher.put(item)
        if self.recorder is not None:
            self.recorder.reply(data)

    def close(self, reason: str) -> None:
        if self.recorder is not None:
            self.recorder.close(reason)
        for watcher in self.watchers:
            watcher.end(reason)
        self.watchers = []


def recording_tap(header: dict[str, Any], t0: float, record_dir: str) -> SessionTap:
    """A tap that records every episode of a session into ``record_dir`` (``serve --record``).

    ``header`` describes the session (env, target, backend, sandbox, session id, options...);
    the recorder adds what it knows itself. The directory's disk budget, if the server set one
    (``record_max_bytes``), bounds what it writes.
    """
    header = {**header, "recorder": "server", "server_version": __version__}
    return SessionTap(t0, EpisodeRecorder(record_dir + "/", header, budget=WRITER.budget_of(record_dir)))

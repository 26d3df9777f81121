"""The Chrome DevTools Protocol over the browser's own pipe (``--remote-debugging-pipe``).

No port is opened, so nothing on the page (or anywhere else) can connect to the browser's
debugger: the browser reads commands on its descriptor 3 and writes answers and events on 4,
each message JSON ending in NUL.

There is no reader task. Whoever waits (for an answer, or for an event) reads the pipe and
routes what arrives: answers by id, events to their listeners. The environment does one thing
at a time, so no message waits long unread, and no task outlives a call: a caller cancelled
at its deadline leaves nothing running, and the late answer to its command is dropped when it
arrives.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc

Listener = Callable[[dict[str, Any]], None]
"""Called with an event's ``params`` as it is read."""

MAX_MESSAGE_BYTES = 64 << 20
"""A larger message means the pipe is out of step (a screenshot within the env's limits is far smaller)."""


class CDPError(Exception):
    """The browser answered a command with an error."""

    def __init__(self, method: str, error: dict[str, Any]) -> None:
        super().__init__(f"{method}: {error.get('message', error)}")
        self.method = method
        self.error = error


class BrowserGone(Exception):
    """The pipe ended (the browser exited or was killed) or stopped making sense."""


class TargetCrashed(Exception):
    """The page's renderer process died; its commands will never be answered."""


class CDPConnection:
    """Commands, answers and events of one browser, over its pipe."""

    def __init__(self, send: anyio.abc.ByteSendStream, receive: anyio.abc.ByteReceiveStream) -> None:
        self._send_stream = send
        self._receive_stream = receive
        self._buffer = bytearray()
        self._next_id = 0
        self._answers: dict[int, dict[str, Any]] = {}
        self._waiting: set[int] = set()
        self._listeners: dict[tuple[str, str | None], list[Listener]] = {}
        self._crashed: set[str] = set()
        self._outbox: list[bytes] = []
        self._read_lock = anyio.Lock()
        self._write_lock = anyio.Lock()
        self.gone = False

    # ------------------------------------------------------------ events

    def on(self, method: str, listener: Listener, session: str | None = None) -> None:
        """Call ``listener`` for every ``method`` event of ``session`` (None: the browser's own)."""
        self._listeners.setdefault((method, session), []).append(listener)

    def forget(self, session: str) -> None:
        """Drop the listeners of a session that ended."""
        for key in [k for k in self._listeners if k[1] == session]:
            del self._listeners[key]
        self._crashed.discard(session)

    def mark_crashed(self, session: str) -> None:
        """Called by the owner when a session's target crashed: its waiting callers give up."""
        self._crashed.add(session)

    async def wait_until(self, condition: Callable[[], bool], session: str | None = None) -> None:
        """Read the pipe (routing events to listeners) until ``condition()`` holds; bound it with a deadline."""
        while not condition():
            self._check(session)
            await self._pump()

    # ------------------------------------------------------------ commands

    def post(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> None:
        """Send a command whose answer nobody waits for, from a listener: written by the next read."""
        self._outbox.append(self._encode(self._new_id(), method, params, session))

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    @staticmethod
    def _encode(ident: int, method: str, params: dict[str, Any] | None, session: str | None) -> bytes:
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        return json.dumps(message).encode() + b"\0"

    async def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> Any:
        """Send a command and read until its answer; its ``result``, or :class:`CDPError`."""
        self._check(session)
        ident = self._new_id()
        self._waiting.add(ident)
        try:
            await self._write(self._encode(ident, method, params, session))
            while ident not in self._answers:
                self._check(session)
                await self._pump()
            answer = self._answers.pop(ident)
        finally:
            self._waiting.discard(ident)
            self._answers.pop(ident, None)
        if "error" in answer:
            raise CDPError(method, answer["error"])
        return answer.get("result", {})

    def _check(self, session: str | None) -> None:
        if self.gone:
            raise BrowserGone("the browser is gone")
        if session is not None and session in self._crashed:
            raise TargetCrashed("the page crashed")

    async def _write(self, data: bytes) -> None:
        async with self._write_lock:
            try:
                await self._send_stream.send(data)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
                self.gone = True
                raise BrowserGone(f"the browser is gone ({type(exc).__name__})") from None

    async def _pump(self) -> None:
        """Read what the pipe has and route every complete message in it."""
        async with self._read_lock:
            try:
                chunk = await self._receive_stream.receive(1 << 20)
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                self.gone = True
                raise BrowserGone("the browser closed its pipe (it exited or was killed)") from None
            self._buffer += chunk
            while (end := self._buffer.find(b"\0")) >= 0:
                raw = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                self._route(raw)
            if len(self._buffer) > MAX_MESSAGE_BYTES:
                self.gone = True
                raise BrowserGone(f"a message from the browser exceeds {MAX_MESSAGE_BYTES} bytes")
        while self._outbox:
            await self._write(self._outbox.pop(0))

    def _route(self, raw: bytes) -> None:
        try:
            message = json.loads(raw)
        except ValueError:
            return  # not ours to understand; the protocol has no other framing to lose
        ident = message.get("id")
        if ident is not None:
            if ident in self._waiting:
                self._answers[ident] = message
            return  # an answer nobody waits for any more (its caller hit a deadline)
        key = (message.get("method", ""), message.get("sessionId"))
        for listener in list(self._listeners.get(key, ())):
            listener(message.get("params", {}))

    async def aclose(self) -> None:
        self.gone = True
        for stream in (self._send_stream, self._receive_stream):
            try:
                await stream.aclose()
            except Exception:
                pass

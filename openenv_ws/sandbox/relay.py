"""What every sandbox that runs the worker elsewhere shares: relaying frames over a channel.

The subprocess and Docker backends differ only in how the worker is started, how its death
is observed and how it is killed. Opening (the ``Open`` handshake), applying a request
(events streamed to a sink, then the reply), and closing (a graceful ``Close`` with a short
grace period, then a kill) are the same, and live here once.
"""

from __future__ import annotations

import signal
from abc import abstractmethod
from typing import Any

import anyio

from ..errors import OpenEnvWSError, SandboxCrashedError, SandboxStartError
from ..protocol import Close, Error, Event, Open, Opened, SandboxReply, SandboxRequest, decode_from_sandbox
from .base import Sandbox
from .channel import FrameChannel, FrameTooLarge
from .episode import EventSink

#: What a read or write on a channel raises when the worker on the other end is gone.
CHANNEL_GONE = (
    anyio.EndOfStream,
    anyio.IncompleteRead,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    OSError,
)

CLOSE_GRACE = 2.0
"""Seconds an idle worker gets to close its environment before it is killed."""


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def exit_reason(returncode: int | None) -> str:
    """The reason a worker process ended, from its return code (negative: killed by a signal)."""
    if returncode is None:
        return "the sandbox stopped answering"
    if returncode < 0:
        return f"sandbox process killed by signal {signal_name(-returncode)}"
    return f"sandbox process exited with code {returncode}"


class RelaySandbox(Sandbox):
    """A sandbox whose environment runs in a worker at the other end of a :class:`FrameChannel`."""

    isolated = True

    def __init__(self, channel: FrameChannel) -> None:
        self._channel = channel
        self._closing = False
        # True from sending a request until its reply: a request cut off by a timeout leaves the
        # channel mid-frame, so close() then kills at once instead of asking the worker nicely.
        self._in_flight = False

    # ------------------------------------------------------------ what a backend provides

    @abstractmethod
    async def _reason(self) -> str:
        """Why the worker is gone (waits, bounded, for its exit status)."""

    @abstractmethod
    def _exited(self) -> bool:
        """True once the worker is known to have ended."""

    async def _wait_exited(self) -> None:
        """After a graceful close: wait for the worker to end (the caller bounds the wait)."""

    @abstractmethod
    async def _stop(self) -> None:
        """Kill the worker if it still runs and release what it held. Never raises."""

    # ------------------------------------------------------------ the shared protocol

    async def handshake(self, target: str, options: dict[str, Any], timeout: float) -> None:
        """Send ``Open`` and wait for ``Opened``; on any failure close the sandbox and raise typed."""
        try:
            with anyio.fail_after(timeout):
                await self._channel.send(Open(env=target, options=options))
                reply = decode_from_sandbox(await self._channel.receive())
        except TimeoutError:
            await self.close()
            raise SandboxStartError(f"sandbox did not start within {timeout}s", fatal=True) from None
        except CHANNEL_GONE:
            reason = await self._reason()
            await self.close()
            raise SandboxStartError(reason, fatal=True) from None
        except BaseException:
            await self.close()
            raise
        if isinstance(reply, Error):
            await self.close()
            raise OpenEnvWSError(reply.message, code=reply.code, path=reply.path, fatal=True)
        if not isinstance(reply, Opened):
            await self.close()
            raise SandboxStartError(f"sandbox answered {type(reply).__name__} to open", fatal=True)

    async def request(self, frame: SandboxRequest, sink: EventSink) -> SandboxReply:
        self._in_flight = True
        try:
            await self._channel.send(frame)
            while True:
                reply = decode_from_sandbox(await self._channel.receive())
                if isinstance(reply, Event):
                    await sink(reply)
                    continue
                self._in_flight = False
                return reply  # type: ignore[return-value]
        except CHANNEL_GONE as exc:
            self._in_flight = False
            reason = str(exc) if isinstance(exc, FrameTooLarge) else await self._reason()
            raise SandboxCrashedError(reason, fatal=True) from None

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        with anyio.CancelScope(shield=True):
            if not self._exited() and not self._in_flight:
                # Let the env close itself; past a short grace period, kill.
                with anyio.move_on_after(CLOSE_GRACE):
                    try:
                        await self._channel.send(Close())
                        while True:
                            await self._channel.receive()
                    except CHANNEL_GONE:
                        pass
                    await self._wait_exited()
            await self._stop()
            await self._channel.aclose()

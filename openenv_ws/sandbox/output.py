"""A sandbox worker's stdout and stderr, in the server's log: framed, escaped and bounded.

Whatever a worker (or anything it starts) writes never reaches the server's own stderr raw: each
line becomes one record of the logger ``openenv_ws.sandbox.output`` that names the session, with
control characters escaped (a newline, a carriage return or an escape sequence cannot start a
line that looks like the server's), cut at ``line_chars``; past ``max_bytes`` per session the rest
is counted and dropped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import anyio
import anyio.abc

log = logging.getLogger("openenv_ws.sandbox.output")

# C0 and C1 controls, DEL, and the Unicode line and paragraph separators: nothing that can end a line.
_CONTROLS = [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029]
_ESCAPES = {c: f"\\u{c:04x}" if c > 0xFF else f"\\x{c:02x}" for c in _CONTROLS} | {ord("\\"): "\\\\"}


@dataclass(frozen=True)
class OutputLimits:
    line_chars: int = 2000
    """Characters of one line of a worker's output kept in the log (the rest is cut)."""
    max_bytes: int = 1 << 20
    """Bytes of a worker's output logged per session; the rest is dropped (and counted)."""


def printable(line: bytes, limit: int) -> str:
    """One line of output as a log message: decoded, control characters escaped, cut at ``limit``."""
    text = line.decode(errors="replace").translate(_ESCAPES)
    return text if len(text) <= limit else f"{text[:limit]}... [{len(text) - limit} more characters]"


async def relay_output(stream: anyio.abc.ByteReceiveStream, session_id: str, limits: OutputLimits) -> None:
    """Log ``stream`` line by line until it ends."""
    buffer, logged, dropped = b"", 0, 0
    # A line longer than this is logged in pieces: the buffer never grows past it.
    chunk_bytes = limits.line_chars * 4

    def emit(line: bytes) -> None:
        nonlocal logged, dropped
        if logged >= limits.max_bytes:
            dropped += len(line) + 1
            return
        logged += len(line) + 1
        log.info("sandbox %s: %s", session_id, printable(line, limits.line_chars))

    try:
        async for data in stream:
            buffer += data
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                emit(line)
            while len(buffer) > chunk_bytes:
                emit(buffer[:chunk_bytes])
                buffer = buffer[chunk_bytes:]
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        pass
    finally:
        if buffer:
            emit(buffer)
        if dropped:
            log.warning("sandbox %s: %d bytes of output dropped (past %d bytes)", session_id, dropped, limits.max_bytes)

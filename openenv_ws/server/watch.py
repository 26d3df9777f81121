"""``WS /v1/sessions/{session_id}/watch``: one session's frames, live and read-only.

What the inspector's ``--follow`` reads. Text messages, one JSON object each:

- ``{"kind": "session", ...}``: the session as ``GET /v1/sessions`` describes it, first;
- ``{"kind": "frame", "ts": ..., "dir": "c2s"|"s2c", "frame": {...}}``: a frame, as in a
  recording (``ts``: seconds since the session opened);
- ``{"kind": "dropped", "count": n, "total": m}``: this watcher was too slow, ``n`` frames
  were skipped before the next one;
- ``{"kind": "closed", "reason": ...}``: the session ended; the socket then closes (1000).

A refusal is ``{"kind": "error", "code", "message"}``, then the socket closes: an unknown
session (``session_not_found``, close code 4404); a session the caller may not watch
(``forbidden``, 4403: on a server with tokens, a trainer watches its own sessions, or one whose
``X-Resume-Token`` it sends; see :mod:`openenv_ws.server.access`); a session that already has
``max_watchers`` watchers (``capacity`` with ``retry_after``, 1013). Anything the watcher sends
is ignored: it can never act on the session.
"""

from __future__ import annotations

import anyio
import msgspec
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..protocol import ErrorCode
from ..record import frame_record, to_json_line
from .access import described, may_watch
from .connection import CLOSE_TRY_AGAIN_LATER
from .sessions import Session, SessionManager
from .tap import SessionTap, Watcher

CLOSE_NOT_FOUND = 4404
CLOSE_FORBIDDEN = 4403

_json = msgspec.json.Encoder()


async def _send(websocket: WebSocket, message: dict) -> None:
    await websocket.send_text(_json.encode(message).decode())


def _attach(session: Session, watcher: Watcher) -> None:
    if session.tap is None:
        session.tap = SessionTap(session.created)
    session.tap.watchers.append(watcher)


def _detach(session: Session, watcher: Watcher) -> None:
    tap = session.tap
    if tap is None:
        return
    if watcher in tap.watchers:
        tap.watchers.remove(watcher)
    if tap.empty:
        session.tap = None


async def _stream(websocket: WebSocket, watcher: Watcher) -> None:
    reported = 0
    while True:
        while watcher.items:
            if watcher.dropped > reported:
                count, reported = watcher.dropped - reported, watcher.dropped
                await _send(websocket, {"kind": "dropped", "count": count, "total": reported})
            ts, direction, data = watcher.items.popleft()
            await websocket.send_text(to_json_line(frame_record(ts, direction, data))[:-1].decode())
        if watcher.ended is not None:
            await _send(websocket, {"kind": "closed", "reason": watcher.ended})
            return
        await watcher.wait()


async def _drain_input(websocket: WebSocket, scope: anyio.CancelScope) -> None:
    """Read (and ignore) what the watcher sends, to notice when it goes away."""
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
    finally:
        scope.cancel()


async def _refuse(websocket: WebSocket, close_code: int, code: str, message: str, **more: float) -> None:
    await _send(websocket, {"kind": "error", "code": code, "message": message, **more})
    await websocket.close(close_code, code)


async def _admit(websocket: WebSocket, manager: SessionManager, session_id: str) -> Session | None:
    """The session to watch, or None once the watcher has been told why not."""
    session: Session | None = manager.get(session_id)
    if session is None:
        message = f"no session {session_id!r}: it ended or never existed"
        await _refuse(websocket, CLOSE_NOT_FOUND, ErrorCode.SESSION_NOT_FOUND, message)
        return None
    if not may_watch(websocket, session):
        manager.metrics.access_denied()
        message = f"session {session_id!r} belongs to another client: its owner, an operator or observer, or its"
        message += " X-Resume-Token may watch it"
        await _refuse(websocket, CLOSE_FORBIDDEN, ErrorCode.FORBIDDEN, message)
        return None
    watching = len(session.tap.watchers) if session.tap is not None else 0
    if watching >= manager.config.max_watchers:
        message = f"session {session_id!r} has {watching} watchers, the most it may have (max_watchers)"
        retry_after = manager.config.retry_after
        await _refuse(websocket, CLOSE_TRY_AGAIN_LATER, ErrorCode.CAPACITY, message, retry_after=retry_after)
        return None
    return session


async def watch_socket(websocket: WebSocket) -> None:
    manager: SessionManager = websocket.app.state.manager
    await websocket.accept()
    session = await _admit(websocket, manager, websocket.path_params["session_id"])
    if session is None:
        return
    watcher = Watcher(manager.config.watch_buffer)
    _attach(session, watcher)
    try:
        await _send(websocket, {"kind": "session", **described(session)})
        async with anyio.create_task_group() as tg:
            tg.start_soon(_drain_input, websocket, tg.cancel_scope)
            await _stream(websocket, watcher)
            tg.cancel_scope.cancel()
        await websocket.close(1000)
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass  # the watcher went away
    finally:
        _detach(session, watcher)
        manager.metrics.watcher_gone(watcher.dropped)

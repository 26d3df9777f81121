"""``WS /v1/sessions/{session_id}/watch``: one session's frames, live and read-only.

What the inspector's ``--follow`` reads. Text messages, one JSON object each:

- ``{"kind": "session", ...}``: the session as ``GET /v1/sessions`` describes it, first;
- ``{"kind": "frame", "ts": ..., "dir": "c2s"|"s2c", "frame": {...}}``: a frame, as in a
  recording (``ts``: seconds since the session opened);
- ``{"kind": "dropped", "count": n, "total": m}``: this watcher was too slow, ``n`` frames
  were skipped before the next one;
- ``{"kind": "closed", "reason": ...}``: the session ended; the socket then closes (1000).

An unknown session gets ``{"kind": "error", ...}`` and close code 4404. Anything the watcher
sends is ignored: it can never act on the session.
"""

from __future__ import annotations

import anyio
import msgspec
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..record import frame_record, to_json_line
from .sessions import Session
from .tap import SessionTap, Watcher

CLOSE_NOT_FOUND = 4404

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


async def watch_socket(websocket: WebSocket) -> None:
    manager = websocket.app.state.manager
    session_id = websocket.path_params["session_id"]
    await websocket.accept()
    session: Session | None = manager.get(session_id)
    if session is None:
        await _send(websocket, {"kind": "error", "message": f"no session {session_id!r}: it ended or never existed"})
        await websocket.close(CLOSE_NOT_FOUND, "session not found")
        return
    watcher = Watcher(manager.config.watch_buffer)
    _attach(session, watcher)
    try:
        await _send(websocket, {"kind": "session", **session.describe()})
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

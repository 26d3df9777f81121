"""Every HTTP error the server answers is JSON: ``{"detail": <what went wrong>, "code": <error code>}``.

The middlewares (token check, body limit) answer before any route runs, in raw ASGI; the
routes' own failures (no such route, wrong method, an unexpected exception) go through
Starlette's exception handlers here. A client therefore always gets a body it can read,
never Starlette's plain-text ``Not Found`` or ``Internal Server Error``.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, WebSocketRoute

from ..protocol import ErrorCode

_CODES = {404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED, 413: ErrorCode.FRAME_TOO_LARGE}


def error_body(detail: str, code: str) -> bytes:
    return msgspec.json.encode({"detail": detail, "code": code})


def error_headers(body: bytes, extra: Sequence[tuple[bytes, bytes]] = ()) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]


def json_error(status: int, detail: str, code: str, headers: dict[str, str] | None = None) -> Response:
    return Response(error_body(detail, code), status, headers, media_type="application/json")


def _websocket_route(request: Request) -> bool:
    """Whether the path is a WebSocket route (asked for over plain HTTP)."""
    scope = {**request.scope, "type": "websocket"}
    routes = request.app.router.routes
    return any(isinstance(r, WebSocketRoute) and r.matches(scope)[0] is Match.FULL for r in routes)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = exc.detail
    if exc.status_code == 404:
        detail = f"no HTTP route {request.url.path}"
        if _websocket_route(request):
            detail += ": it is a WebSocket route (connect with a WebSocket handshake)"
    elif exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}; allowed: {(exc.headers or {}).get('Allow')}"
    code = _CODES.get(exc.status_code, ErrorCode.MALFORMED_FRAME if exc.status_code < 500 else ErrorCode.INTERNAL)
    return json_error(exc.status_code, detail, code, exc.headers)


async def _unexpected(request: Request, exc: Exception) -> Response:
    # Starlette raises the exception again after this answer: uvicorn logs it with its traceback.
    return json_error(500, f"internal error: {type(exc).__name__}", ErrorCode.INTERNAL)


EXCEPTION_HANDLERS = {HTTPException: _http_exception, Exception: _unexpected}
"""Starlette's ``exception_handlers``: JSON for unknown routes, wrong methods and anything unforeseen."""
